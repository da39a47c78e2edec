#!/bin/sh
# The C example in README.md compiles warning-free against the built
# library (as C99) and does what the README says.  Prints TAP.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
CC=${CC:-cc}
work=$(mktemp -d "${KAIO_TEST_DIR:-.}/readme.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
echo "1..2"
awk '/^```c$/ {f = 1; next} /^```$/ {f = 0} f' "$top_srcdir/README.md" >"$work/example.c"
if $CC -std=c99 -Wall -Wextra -Werror -I"$top_srcdir/include" "$work/example.c" \
	-L"$top_builddir/.libs" -lkaio -Wl,-rpath,"$(cd "$top_builddir/.libs" && pwd)" \
	-o "$work/example" >"$work/cc.log" 2>&1; then
	echo "ok 1 - the README example compiles as C99 with -Wall -Wextra -Werror"
else
	echo "not ok 1 - the README example compiles"
	sed 's/^/# /' "$work/cc.log"
	echo "not ok 2 - the README example runs # nothing to run"
	exit 1
fi
head -c 1048576 /dev/urandom >"$work/data.bin"
if (cd "$work" && ./example >out.txt 2>&1) && [ "$(grep -c '^read 262144 bytes at ' "$work/out.txt")" -eq 4 ]; then
	echo "ok 2 - the README example reads 4 blocks through callbacks"
else
	echo "not ok 2 - the README example runs"
	sed 's/^/# /' "$work/out.txt"
	exit 1
fi
