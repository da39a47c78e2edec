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
if [ -n "${KAIO_TOP_BUILDDIR:-}" ]; then
	deflib=$KAIO_TOP_BUILDDIR/.libs
else
	deflib=$top/.libs
fi
libdir=${2:-${KAIO_BUILD_LIB:-$deflib}}
incdir=${3:-${KAIO_INCLUDE:-${KAIO_TOP_SRCDIR:-$top}/include}}
[ -e "$libdir/libkaio.so" ] || { echo "$0: no libkaio.so in '$libdir'" >&2; exit 1; }
[ -e "$incdir/kaio.h" ] || { echo "$0: no kaio.h in '$incdir'" >&2; exit 1; }
libdir=$(cd "$libdir" && pwd)
incdir=$(cd "$incdir" && pwd)
case $output in
/*) ;;
*) output=$(pwd)/$output ;;
esac

tmp=
if [ -n "${KAIO_GO_WORKDIR:-}" ]; then
	work=$KAIO_GO_WORKDIR
elif [ "$(basename "$libdir")" = .libs ] && [ -w "$(dirname "$libdir")" ]; then
	work=$(dirname "$libdir")/go-work
else
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/kaio-go.XXXXXX") || exit 1
	work=$tmp
fi
trap '[ -n "$tmp" ] && rm -rf "$tmp"' EXIT
mkdir -p "$work/cache" "$work/gopath" "$work/tmp" "$(dirname "$output")" || exit 1
export GOCACHE="$work/cache" GOPATH="$work/gopath" GOTMPDIR="$work/tmp" \
	GOMODCACHE="$work/gopath/pkg/mod" GOENV=off GOFLAGS= GO111MODULE=on \
	GOPROXY=off GOSUMDB=off GOWORK=off CGO_ENABLED=1 \
	CGO_CFLAGS="-O2 -g -I$incdir" \
	CGO_LDFLAGS="-L$libdir -Wl,-rpath,$libdir"
cd "$here" && "$GO" build -buildvcs=false -o "$output" ./cmd/kaio-gobench
