#!/bin/sh
# build-bench.sh - build the Go binding's benchmark (cmd/kaio-gobench).
#
#   bindings/go/build-bench.sh OUTPUT [LIBDIR [INCLUDEDIR]]
#
# LIBDIR and INCLUDEDIR default as in run-tests.sh ($KAIO_BUILD_LIB,
# $KAIO_TOP_BUILDDIR/.libs, .libs at the top; $KAIO_INCLUDE,
# $KAIO_TOP_SRCDIR/include, include/ at the top).  The binary gets an
# rpath to LIBDIR.  No network (GOPROXY=off); the build cache goes to
# $KAIO_GO_WORKDIR, default go-work/ beside LIBDIR when that is a libtool
# .libs, else a temporary directory.  bench/compare runs OUTPUT when it is
# BUILDDIR/bench/go-bench:
#
#   bindings/go/build-bench.sh build/bench/go-bench build/.libs
#   OUTPUT --file /var/tmp/big.dat --depth 32 --time 10 --json
#
# KAIO_GO_TAGS are build tags: KAIO_GO_TAGS=kaiostages gives a benchmark
# whose --stages shows where an I/O's time goes (see stages.go).
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
GO=${GO:-go}
if [ $# -lt 1 ]; then
	echo "usage: $0 OUTPUT [LIBDIR [INCLUDEDIR]]" >&2
	exit 2
fi
output=$1
if ! command -v "$GO" >/dev/null 2>&1; then
	echo "$0: no Go toolchain ('$GO' not found; apt-get install golang-go)" >&2
	exit 77
fi
. "$here/go-env.sh"
go_env "${2:-}" "${3:-}" || { echo "$0: $go_env_error" >&2; exit 1; }
trap '[ -n "$go_tmp" ] && rm -rf "$go_tmp"' EXIT
case $output in
/*) ;;
*) output=$(pwd)/$output ;;
esac

mkdir -p "$(dirname "$output")" || exit 1
cd "$here" && "$GO" build -buildvcs=false ${KAIO_GO_TAGS:+-tags "$KAIO_GO_TAGS"} -o "$output" ./cmd/kaio-gobench
