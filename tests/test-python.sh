#!/bin/sh
# make check's run of the Python binding's unittest suite (ctypes +
# asyncio) against the library just built: bindings/python/run-tests.sh
# prints TAP; exits 77 when python3 is missing.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
exec ${SHELL:-/bin/sh} "$top_srcdir/bindings/python/run-tests.sh"
