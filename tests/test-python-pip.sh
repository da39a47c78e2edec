#!/bin/sh
# The Python binding installs offline with plain pip: `pip install --no-index
# bindings/python` into a throw-away venv (pip's default build isolation:
# the package's own backend, bindings/python/_build/kaio_build.py, needs
# nothing from an index), then `import kaio` finds and uses the library just
# built.  With each interpreter there is (python3 on PATH, /usr/bin/python3).
# Also: the wheel's RECORD is right, the sdist holds what it needs and
# installs too, an editable install points at the source, and the backend
# reads pyproject.toml as tomllib does.  A copy of the package is used, so a
# read-only source tree works.  Prints TAP; skips without a python3 that has
# venv and ensurepip.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
top_builddir=${KAIO_TOP_BUILDDIR:-.}

. "$(dirname "$0")/tap.sh"

grep -q '^SANITIZER_FLAGS *= *-fsanitize' "$top_builddir/Makefile" 2>/dev/null &&
	tap_skip_all "a sanitizer build (test-python.sh covers the binding there)"

# The interpreters: python3 on PATH (resolved through a pyenv shim) and
# Debian's, each once, those with venv and ensurepip.
pys=
for p in python3 /usr/bin/python3; do
	command -v "$p" >/dev/null 2>&1 || continue
	real=$("$p" -c 'import sys, venv, ensurepip; print(sys.executable)' 2>/dev/null) || continue
	case " $pys " in *" $real "*) ;; *) pys="$pys $real" ;; esac
done
[ -n "$pys" ] || tap_skip_all "no python3 with venv and ensurepip (apt-get install python3-venv)"

work=$(mktemp -d "${TMPDIR:-/tmp}/kaio-pip.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
cp -r "$top_srcdir/bindings/python" "$work/src" && chmod -R u+w "$work/src"
rm -rf "$work/src/build" "$work/src"/*.egg-info
lib=$(cd "$top_builddir" && pwd)/.libs/libkaio.so.1
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=1 PIP_CACHE_DIR="$work/pip-cache"
export PYTHONDONTWRITEBYTECODE=1

set -- $pys
tap_plan $((2 * $# + 4))

# Runs "$@" in $work; on failure, tap_fail NAME with its output.
run() {
	name=$1
	shift
	if out=$(cd "$work" && "$@" 2>&1); then
		tap_pass "$name"
		return 0
	fi
	tap_fail "$name" "$(echo "$out" | tail -15)"
	return 1
}

# import kaio from venv $1: the copy installed there ($2: "site" or "src"),
# loading the library just built.
check_import() {
	KAIO_LIBRARY=$lib "$1/bin/python" -c '
import kaio, os, sys
where = os.path.realpath(kaio.__file__)
want = os.path.realpath(sys.argv[2] if sys.argv[1] == "src" else sys.prefix)
assert where.startswith(want), (where, want)
kaio.version()' "$2" "$work/src"
}

n=0
for py in $pys; do
	n=$((n + 1))
	v=$work/venv$n
	if run "pip install --no-index bindings/python with $py (offline, build isolation on)" \
		sh -c "'$py' -m venv '$v' && '$v/bin/pip' install -q '$work/src'"; then
		run "with $py, the installed package imports and loads the library just built" \
			check_import "$v" site
	else
		tap_fail "with $py, the installed package imports" "(not installed)"
	fi
done

# The backend's own products, checked with the first interpreter.
set -- $pys
py=$1
mkdir "$work/dist"
run "the backend builds a wheel whose RECORD hashes every file, and an sdist" "$py" - "$work/src" "$work/dist" <<'EOF'
import base64, hashlib, os, sys, tarfile, zipfile
sys.path.insert(0, os.path.join(sys.argv[1], "_build"))
import kaio_build as b
out = sys.argv[2]
whl = os.path.join(out, b.build_wheel(out))
with zipfile.ZipFile(whl) as z:
    names = set(z.namelist())
    want = {"kaio/__init__.py", "kaio/_lib.py", "kaio-1.0.0.dist-info/METADATA",
            "kaio-1.0.0.dist-info/WHEEL", "kaio-1.0.0.dist-info/RECORD"}
    assert want <= names, want - names
    rows = [r.split(",") for r in z.read("kaio-1.0.0.dist-info/RECORD").decode().splitlines()]
    assert {r[0] for r in rows} == names, names ^ {r[0] for r in rows}
    for path, digest, size in rows:
        if path.endswith("/RECORD"):
            assert digest == size == "", (path, digest, size)
            continue
        data = z.read(path)
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == "sha256=" + h and int(size) == len(data), path
    meta = z.read("kaio-1.0.0.dist-info/METADATA").decode()
    for line in ("Name: kaio", "Version: 1.0.0", "Requires-Python: >=3.8"):
        assert line + "\n" in meta, line
    assert "# kaio for Python" in meta  # the README is the description
sd = os.path.join(out, b.build_sdist(out))
with tarfile.open(sd) as t:
    got = set(t.getnames())
for f in ("PKG-INFO", "pyproject.toml", "_build/kaio_build.py", "README.md", "kaio/_context.py"):
    assert "kaio-1.0.0/" + f in got, f
EOF
run "the sdist installs offline too" \
	sh -c "'$py' -m venv '$work/vsd' && '$work/vsd/bin/pip' install -q '$work/dist/kaio-1.0.0.tar.gz' &&
		KAIO_LIBRARY='$lib' '$work/vsd/bin/python' -c 'import kaio; kaio.version()'"
edit() {
	"$py" -m venv "$work/ved" && "$work/ved/bin/pip" install -q -e "$work/src" &&
		check_import "$work/ved" src
}
run "an editable install (pip install -e) imports the source tree" edit
# tomllib (Python 3.11+) as the reference for the backend's small parser.
tp=
for p in $pys; do "$p" -c 'import tomllib' 2>/dev/null && { tp=$p; break; }; done
if [ -n "$tp" ]; then
	run "the backend reads pyproject.toml's [project] as tomllib does" "$tp" -c '
import os, sys, tomllib
sys.path.insert(0, os.path.join(sys.argv[1], "_build"))
import kaio_build
with open(os.path.join(sys.argv[1], "pyproject.toml"), "rb") as f:
    ref = tomllib.load(f)["project"]
assert kaio_build.project() == ref, (kaio_build.project(), ref)' "$work/src"
else
	tap_skip "the backend reads pyproject.toml's [project] as tomllib does" "no Python 3.11+ (tomllib)"
fi
tap_finish
