#!/bin/sh
# The Python binding installs offline with pip and Debian's setuptools:
# `pip install --no-build-isolation --no-index bindings/python` into a
# throw-away venv (--system-site-packages, so it sees setuptools and wheel),
# then `import kaio` finds and uses the library just built.  A copy of the
# package is installed, so a read-only source tree works.  Prints TAP;
# skips without /usr/bin/python3, its venv module or setuptools/wheel.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
top_builddir=${KAIO_TOP_BUILDDIR:-.}
py=/usr/bin/python3
skip() { echo "1..0 # SKIP $*"; exit 77; }
[ -x "$py" ] || skip "no /usr/bin/python3"
grep -q '^SANITIZER_FLAGS *= *-fsanitize' "$top_builddir/Makefile" 2>/dev/null &&
	skip "a sanitizer build (test-python.sh covers the binding there)"
"$py" -c 'import venv, setuptools, wheel' 2>/dev/null ||
	skip "Debian's python3 lacks venv, setuptools or wheel (apt-get install python3-venv python3-setuptools python3-wheel python3-pip)"
work=$(mktemp -d "${TMPDIR:-/tmp}/kaio-pip.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
cp -r "$top_srcdir/bindings/python" "$work/src" && chmod -R u+w "$work/src"
echo "1..2"
if out=$("$py" -m venv --system-site-packages "$work/venv" 2>&1 &&
	"$work/venv/bin/pip" install -q --no-build-isolation --no-index "$work/src" 2>&1); then
	echo "ok 1 - pip install --no-build-isolation --no-index bindings/python (offline)"
else
	echo "not ok 1 - offline pip install failed"
	echo "$out" | sed 's/^/# /'
	exit 1
fi
lib=$(cd "$top_builddir" && pwd)/.libs/libkaio.so.1
if out=$(cd "$work" && KAIO_LIBRARY=$lib "$work/venv/bin/python" -c '
import kaio, os
assert os.path.dirname(kaio.__file__).startswith(os.path.realpath(os.getcwd())), kaio.__file__
print(kaio.version())' 2>&1); then
	echo "ok 2 - the installed package imports and loads libkaio $out"
else
	echo "not ok 2 - the installed package does not import"
	echo "$out" | sed 's/^/# /'
	exit 1
fi
