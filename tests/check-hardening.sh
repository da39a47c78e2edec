#!/bin/sh
# The library and the tools carry Debian's hardening (hardening-check from
# devscripts): stack protector, fortified functions, full RELRO, immediate
# binding, PIE for programs.  Prints TAP.
#
# Control-flow integrity is checked by hand rather than by hardening-check:
# the code is built with -fcf-protection (endbr64 everywhere), but
# bookworm's crti.o carries no CET property note, so no binary linked on
# Debian 12 (not even /usr/bin/ls) can show the ELF marker it looks for.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
lib=$top_builddir/.libs/libkaio.so
tool=$top_builddir/tools/.libs/kaio-cp
[ -x "$tool" ] || tool=$top_builddir/tools/kaio-cp
if ! command -v hardening-check >/dev/null 2>&1; then
	echo "1..0 # SKIP hardening-check is not installed (apt-get install devscripts)"
	exit 77
fi
if grep -q '^HARDENING_CFLAGS *= *$' "$top_builddir/Makefile" 2>/dev/null ||
	grep -q '^SANITIZER_FLAGS *= *-fsanitize' "$top_builddir/Makefile" 2>/dev/null; then
	echo "1..0 # SKIP a sanitizer or --disable-hardening build"
	exit 77
fi
echo "1..3"
failed=0
n=0
for f in "$lib" "$tool"; do
	n=$((n + 1))
	if out=$(hardening-check --nocfprotection "$f" 2>&1); then
		echo "ok $n - hardening-check $(basename "$f")"
	else
		echo "not ok $n - hardening-check $(basename "$f")"
		echo "$out" | sed 's/^/# /'
		failed=1
	fi
done
if [ "$(objdump -d "$lib" | grep -c endbr64)" -gt 0 ]; then
	echo "ok 3 - libkaio.so is built with -fcf-protection (endbr64 present)"
else
	echo "not ok 3 - libkaio.so has no endbr64: -fcf-protection missing"
	failed=1
fi
exit $failed
