#!/bin/sh
# Runs the Python binding's tests against one built libkaio, as TAP.
#
#   bindings/python/run-tests.sh [PATH/libkaio.so.1 [-v] [PATTERN...]]
#
# The library: the first argument, else $KAIO_LIBRARY, else
# $KAIO_TOP_BUILDDIR/.libs/libkaio.so.1 (the libtool build tree that
# `make check` exports).  The interpreter: $PYTHON, else python3.  Files
# under test go to a temporary directory under $KAIO_TEST_DIR if set (it
# must accept O_DIRECT), else under the current directory or /var/tmp.
#
# Prints "1..N" and one "ok N - name" / "not ok N - name" /
# "ok N - name # SKIP reason" line per test case; "1..0 # SKIP reason" when
# nothing can run (no python3, library not loadable, no O_DIRECT).
# Exit status: 0 passed, 1 a failure, 77 everything skipped.  Arguments
# after the library go to tests/tap.py: -v (timings), PATTERNs (test ids
# containing one of them).
here=$(cd "$(dirname "$0")" && pwd)

lib=${KAIO_LIBRARY:-}
if [ $# -gt 0 ]; then
	[ -n "$1" ] && lib=$1
	shift
fi
if [ -z "$lib" ] && [ -n "${KAIO_TOP_BUILDDIR:-}" ]; then
	lib=$KAIO_TOP_BUILDDIR/.libs/libkaio.so.1
fi
if [ -n "$lib" ]; then
	if [ ! -e "$lib" ]; then
		echo "1..0 # SKIP libkaio not found at $lib (build the library first)"
		exit 77
	fi
	case $lib in
	/*) ;;
	*) lib=$(pwd)/$lib ;;
	esac
	KAIO_LIBRARY=$lib
	export KAIO_LIBRARY
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
	echo "1..0 # SKIP $python not found: the Python binding is not tested"
	exit 77
fi

# The interpreter itself, not a wrapper script (a pyenv shim is a bash
# script, and bash does not survive a preloaded ThreadSanitizer runtime).
real=$("$python" -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -n "$real" ] && [ -x "$real" ] && python=$real

# A library built with --enable-sanitizers takes the sanitizer runtime from
# the executable: preload it into Python (leak checking off: the
# interpreter's own allocations are not leaks).
preload=
if [ -n "${KAIO_LIBRARY:-}" ] && [ -f "$KAIO_LIBRARY" ] && command -v nm >/dev/null 2>&1; then
	undef=$(nm -D --undefined-only "$KAIO_LIBRARY" 2>/dev/null)
	for rt in asan tsan ubsan; do
		case $undef in
		*__${rt}_*)
			f=$(${CC:-gcc} -print-file-name=lib$rt.so 2>/dev/null)
			case $f in
			/*) preload="$preload $f" ;;
			*)
				echo "1..0 # SKIP $KAIO_LIBRARY needs the $rt runtime (lib$rt.so), which ${CC:-gcc} does not know"
				exit 77 ;;
			esac ;;
		esac
	done
fi

# -B / PYTHONDONTWRITEBYTECODE: no __pycache__ in the source tree.
PYTHONDONTWRITEBYTECODE=1
export PYTHONDONTWRITEBYTECODE
if [ -n "$preload" ]; then
	echo "# sanitizer build: LD_PRELOAD=${preload# }"
	# the interpreter itself "leaks" by design: leak checking off (last wins)
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
	export ASAN_OPTIONS
	LD_PRELOAD="${preload# }${LD_PRELOAD:+ $LD_PRELOAD}" exec "$python" -B "$here/tests/tap.py" "$@"
fi
exec "$python" -B "$here/tests/tap.py" "$@"
