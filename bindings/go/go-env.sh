# bindings/go/go-env.sh - sourced by run-tests.sh and build-bench.sh: finds
# the library and header to build against, and sets up an offline Go
# environment.  Needs $here (this directory) and $top (the source tree).
#
#   go_env LIBDIR INCLUDEDIR   (either may be empty: the defaults below)
#
# LIBDIR: $KAIO_BUILD_LIB, else $KAIO_TOP_BUILDDIR/.libs, else .libs at the
# top; INCLUDEDIR: $KAIO_INCLUDE, else $KAIO_TOP_SRCDIR/include, else
# include/ at the top.  On success sets $libdir and $incdir (absolute),
# $work (the build cache: $KAIO_GO_WORKDIR, else go-work/ beside LIBDIR
# when that is a libtool .libs, else a temporary directory, also in
# $go_tmp, for the caller to remove) and exports the Go and cgo variables
# (GOPROXY=off: no network).  On failure returns 1 with the reason in
# $go_env_error.

go_env() {
	go_tmp=
	if [ -n "${KAIO_TOP_BUILDDIR:-}" ]; then
		libdir=$KAIO_TOP_BUILDDIR/.libs
	else
		libdir=$top/.libs
	fi
	libdir=${1:-${KAIO_BUILD_LIB:-$libdir}}
	incdir=${2:-${KAIO_INCLUDE:-${KAIO_TOP_SRCDIR:-$top}/include}}
	if [ ! -e "$libdir/libkaio.so" ]; then
		go_env_error="no libkaio.so in '$libdir' (give the library's build directory as LIBDIR, or KAIO_BUILD_LIB)"
		return 1
	fi
	if [ ! -e "$incdir/kaio.h" ]; then
		go_env_error="no kaio.h in '$incdir' (give it as INCLUDEDIR, or KAIO_INCLUDE)"
		return 1
	fi
	libdir=$(cd "$libdir" && pwd)
	incdir=$(cd "$incdir" && pwd)

	if [ -n "${KAIO_GO_WORKDIR:-}" ]; then
		work=$KAIO_GO_WORKDIR
	elif [ "$(basename "$libdir")" = .libs ] && [ -w "$(dirname "$libdir")" ]; then
		work=$(dirname "$libdir")/go-work
	else
		go_tmp=$(mktemp -d "${TMPDIR:-/tmp}/kaio-go.XXXXXX") || {
			go_env_error="cannot create a temporary directory"
			return 1
		}
		work=$go_tmp
	fi
	mkdir -p "$work/cache" "$work/gopath" "$work/tmp" || {
		go_env_error="cannot create the Go build cache under '$work'"
		return 1
	}
	export GOCACHE="$work/cache" GOPATH="$work/gopath" GOTMPDIR="$work/tmp" \
		GOMODCACHE="$work/gopath/pkg/mod" GOENV=off GOFLAGS= GO111MODULE=on \
		GOPROXY=off GOSUMDB=off GONOSUMDB= GOWORK=off CGO_ENABLED=1 \
		CGO_CFLAGS="-O2 -g -I$incdir" \
		CGO_LDFLAGS="-L$libdir -Wl,-rpath,$libdir"
}
