#!/bin/sh
# make check's run of the Go binding's tests (go vet, go test, go test
# -race) against the library just built: bindings/go/run-tests.sh prints
# TAP; exits 77 when Go is missing.  A sanitizer build of the library
# cannot be linked into a Go program (cgo does not bring the sanitizer
# runtime; Go's own -race run is the thread check): skipped there.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
top_builddir=${KAIO_TOP_BUILDDIR:-.}
if grep -q '^SANITIZER_FLAGS *= *-fsanitize' "$top_builddir/Makefile" 2>/dev/null; then
	echo "1..0 # SKIP a sanitizer build of libkaio cannot be linked by cgo"
	exit 77
fi
exec ${SHELL:-/bin/sh} "$top_srcdir/bindings/go/run-tests.sh"
