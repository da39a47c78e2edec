#!/bin/sh
# The built libkaio.so.1 against the ABI baseline of release 1.0
# (abi/libkaio.so.1.abi, an abidw dump restricted to the types of
# include/kaio.h): abidiff must find no removed or changed function or
# variable and no changed public type.  Added functions are allowed (they
# go in a new version node of src/libkaio.map).  Prints TAP; skips when
# abigail-tools is not installed or for a sanitizer build.
#   make abi-baseline   regenerates the baseline (only at a release!)
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
lib=$top_builddir/.libs/libkaio.so.1
baseline=$top_srcdir/abi/libkaio.so.1.abi
if ! command -v abidiff >/dev/null 2>&1; then
	echo "1..0 # SKIP abidiff is not installed (apt-get install abigail-tools)"
	exit 77
fi
if grep -q '^SANITIZER_FLAGS *= *-fsanitize' "$top_builddir/Makefile" 2>/dev/null; then
	echo "1..0 # SKIP a sanitizer build"
	exit 77
fi
echo "1..1"
out=$(abidiff --headers-dir2 "$top_srcdir/include" "$baseline" "$lib" 2>&1)
rc=$?
# abidiff: bit 0 error, bit 1 usage error, bit 2 ABI change, bit 3
# incompatible change.  Additions alone also set bit 2: look at the summary.
removed_or_changed=$(echo "$out" | sed -n \
	's/^\(Functions\|Variables\) changes summary: \([0-9]*\) Removed[^,]*, \([0-9]*\) Changed.*/\2 \3/p' |
	awk '{ n += $1 + $2 } END { print n + 0 }')
if [ $((rc & 3)) -ne 0 ]; then
	echo "not ok 1 - abidiff could not compare (exit $rc)"
	echo "$out" | sed 's/^/# /'
	exit 1
fi
if [ $((rc & 8)) -ne 0 ] || [ "$removed_or_changed" -ne 0 ]; then
	echo "not ok 1 - the ABI changed incompatibly against release 1.0"
	echo "$out" | sed 's/^/# /'
	exit 1
fi
echo "ok 1 - ABI compatible with release 1.0 (abidiff exit $rc)"
[ -n "$out" ] && echo "$out" | sed 's/^/# /'
exit 0
