#!/bin/sh
# Runs every test (builds first if needed).  Ends with "N passed, N failed,
# N skipped" and exits non-zero if any failed.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
[ -x configure ] || ./autogen.sh >/dev/null 2>&1
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q
make -j"$(nproc)" >/dev/null
exec make -s check
