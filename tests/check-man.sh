#!/bin/sh
# The manual pages under man/: mandoc -Tlint finds nothing above style level
# in any page; every link page is a single .so to an existing page; every
# kaio_* function the built library exports, and every one the header
# declares, has a page (man/man3/<name>.3) naming it in its NAME section;
# every man3 page has the sections a function page needs; and the C example
# of kaio(7) (between the `.\" example-begin` and `.\" example-end` lines)
# renders as the same text it compiles from, compiles warning-free as C99
# against the built library, and runs on a file on disk, reading one block
# through a callback and one as a polled event, with both ways of reaping
# (the completion ring, and KAIO_RING=0).  Prints TAP.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
. "$(dirname "$0")/tap.sh"
CC=${CC:-cc}
mandir=$top_srcdir/man
lib=$top_builddir/.libs/libkaio.so

if ! command -v mandoc >/dev/null 2>&1; then
	echo "1..0 # SKIP mandoc is not installed (apt-get install mandoc)"
	exit 77
fi
if [ ! -f "$lib" ]; then
	echo "1..0 # SKIP $lib not built (static-only build?)"
	exit 77
fi
if [ ! -d "$mandir/man3" ] || [ ! -f "$mandir/man7/kaio.7" ]; then
	echo "1..1"
	echo "not ok 1 - $mandir holds the manual pages"
	exit 1
fi

work=$(mktemp -d "${KAIO_TEST_DIR:-$top_builddir}/man.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT

# Pages: a link page is one line, ".so manN/page.N"; every other is a page.
pages= links=
for f in "$mandir"/man1/*.1 "$mandir"/man3/*.3 "$mandir"/man7/*.7; do
	[ -f "$f" ] || continue
	rel=${f#"$mandir"/}
	if grep -q '^\.so ' "$f"; then
		links="$links $rel"
	else
		pages="$pages $rel"
	fi
done

nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwi]$/ {print $3}' | sed 's/@.*//' |
	grep '^kaio_' | sort -u >"$work/exported"
grep -oE '\bkaio_[a-z_]+[[:space:]]*\(' "$top_srcdir/include/kaio.h" | tr -d ' \t(' |
	grep -vE '^kaio_(cb|release_fn)$' | sort -u >"$work/declared"

npages=$(echo $pages | wc -w)
tap_plan $((npages + 8))

# 1. mandoc -Tlint, warnings and above, page by page.  (A .so link page
# always draws mandoc's "fragile .so" warning: link pages are checked below
# instead, and the page each one names is linted here.)
for p in $pages; do
	if (cd "$mandir" && mandoc -Tlint -Wwarning "$p") >"$work/lint" 2>&1 && [ ! -s "$work/lint" ]; then
		tap_pass "mandoc -Tlint -Wwarning is silent on $p"
	else
		tap_fail_file "mandoc -Tlint -Wwarning is silent on $p" "$work/lint"
	fi
done

# 2. Link pages: exactly one line, ".so man3/page.3", naming a real page.
: >"$work/badlinks"
for l in $links; do
	target=$(sed -n 's/^\.so \(man[0-9]\/[A-Za-z0-9_.-]*\)$/\1/p' "$mandir/$l")
	if [ "$(wc -l <"$mandir/$l")" -ne 1 ] || [ -z "$target" ]; then
		echo "$l: not a single '.so manN/page.N' line" >>"$work/badlinks"
	elif [ ! -f "$mandir/$target" ] || grep -q '^\.so ' "$mandir/$target"; then
		echo "$l: $target is not a page" >>"$work/badlinks"
	fi
done
if [ ! -s "$work/badlinks" ]; then
	tap_pass "each of the $(echo $links | wc -w) link pages is one .so line naming a page"
else
	tap_fail_file "each link page is one .so line naming a page" "$work/badlinks"
fi

# 3. Every exported and every declared function has a man3 page that names
# it in NAME, before the "\-" (so man, apropos and whatis find it).
page_of() { # symbol -> the real page file, or nothing
	f=$mandir/man3/$1.3
	[ -f "$f" ] || return 0
	t=$(sed -n 's/^\.so \(man3\/.*\)$/\1/p' "$f")
	if [ -n "$t" ]; then f=$mandir/$t; fi
	[ -f "$f" ] && echo "$f"
}
check_symbols() { # list file, description
	: >"$work/missing"
	while read -r sym; do
		f=$(page_of "$sym")
		if [ -z "$f" ]; then
			echo "$sym: no man3/$sym.3" >>"$work/missing"
		elif ! awk '/^\.SH/ {in_name = ($2 == "NAME"); next} in_name' "$f" |
			tr '\n' ' ' | sed 's/\\-.*//' | tr ',' ' ' | tr -s ' ' '\n' |
			grep -qx "$sym"; then
			echo "$sym: $f does not name it in NAME" >>"$work/missing"
		fi
	done <"$1"
	if [ ! -s "$work/missing" ]; then
		tap_pass "$2 ($(wc -l <"$1") functions)"
	else
		tap_fail_file "$2" "$work/missing"
	fi
}
if [ -s "$work/exported" ]; then
	check_symbols "$work/exported" "every kaio_* function exported by libkaio.so has a page naming it"
else
	echo "no kaio_* symbol found in $lib" >"$work/none"
	tap_fail_file "every kaio_* function exported by libkaio.so has a page naming it" "$work/none"
fi
check_symbols "$work/declared" "every function declared in include/kaio.h has a page naming it"

# 4. The sections a function page needs, in every man3 page.
: >"$work/sections"
for p in $pages; do
	case $p in man3/*) ;; *) continue ;; esac
	for s in NAME SYNOPSIS DESCRIPTION "RETURN VALUE" ERRORS "SEE ALSO"; do
		grep -qE "^\.SH \"?$s\"?\$" "$mandir/$p" || echo "$p: no $s section" >>"$work/sections"
	done
done
if [ ! -s "$work/sections" ]; then
	tap_pass "every man3 page has NAME, SYNOPSIS, DESCRIPTION, RETURN VALUE, ERRORS, SEE ALSO"
else
	tap_fail_file "every man3 page has the function-page sections" "$work/sections"
fi

# 5. The example of kaio(7): roff escapes undone, it must be the text a
# reader sees (mandoc's rendering of the same lines) ...
awk '/^\.\\" example-end/ {f = 0} f; /^\.\\" example-begin/ {f = 1}' \
	"$mandir/man7/kaio.7" >"$work/example.roff"
sed -e 's/\\(aq/'"'"'/g' -e 's/\\-/-/g' -e 's/\\&//g' -e 's/\\e/\\/g' \
	"$work/example.roff" >"$work/example.c"
{
	printf '.TH X 7 2026-01-01\n.SH EXAMPLE\n.EX\n@@begin@@\n'
	cat "$work/example.roff"
	printf '@@end@@\n.EE\n'
} >"$work/render.7"
mandoc -Tascii -Owidth=300 "$work/render.7" 2>/dev/null |
	awk '/@@end@@/ {f = 0} f; /@@begin@@/ {f = 1}' | sed 's/^       //' >"$work/rendered.c"
if [ "$(wc -l <"$work/example.c")" -lt 20 ]; then
	echo "only $(wc -l <"$work/example.c") lines between the example markers" >"$work/diff"
	tap_fail_file "kaio(7) has a C example between its example-begin/end markers" "$work/diff"
elif diff -u "$work/example.c" "$work/rendered.c" >"$work/diff" 2>&1; then
	tap_pass "the C example of kaio(7) renders exactly as the source that is compiled"
else
	tap_fail_file "the C example of kaio(7) renders exactly as the source that is compiled" "$work/diff"
fi

# ... compile warning-free as C99 ...
if $CC -std=c99 -Wall -Wextra -Werror -I"$top_srcdir/include" "$work/example.c" \
	-L"$top_builddir/.libs" -lkaio -Wl,-rpath,"$(cd "$top_builddir/.libs" && pwd)" \
	-o "$work/example" >"$work/cc.log" 2>&1; then
	tap_pass "the C example of kaio(7) compiles as C99 with -Wall -Wextra -Werror"
else
	tap_fail_file "the C example of kaio(7) compiles" "$work/cc.log"
	tap_fail "the C example of kaio(7) runs" "nothing to run"
	tap_fail "the C example of kaio(7) runs with KAIO_RING=0" "nothing to run"
	tap_finish
fi

# ... and run on a file on disk: 64 KiB of 'A', then 64 KiB of 'B'.
{
	head -c 65536 /dev/zero | tr '\0' A
	head -c 65536 /dev/zero | tr '\0' B
} >"$work/ab.bin"
expect_cb="callback: 65536 bytes at offset 0, first byte 0x41"
expect_ev="event 1: 65536 bytes at offset 65536, first byte 0x42"
if ! dd if="$work/ab.bin" of=/dev/null bs=65536 iflag=direct >/dev/null 2>&1; then
	for r in 1 2; do
		tap_skip "the C example of kaio(7) runs" "$work refuses O_DIRECT; set KAIO_TEST_DIR to a disk filesystem"
	done
else
	for ring in default 0; do
		if [ $ring = default ]; then
			desc="the C example of kaio(7) reads one block by callback, one as an event"
			(cd "$work" && ./example ab.bin) >"$work/out" 2>&1
		else
			desc="the C example of kaio(7) runs as well with KAIO_RING=0 (io_getevents)"
			(cd "$work" && KAIO_RING=0 ./example ab.bin) >"$work/out" 2>&1
		fi
		rc=$?
		if [ $rc -eq 0 ] && grep -qxF "$expect_cb" "$work/out" && grep -qxF "$expect_ev" "$work/out" &&
			[ "$(wc -l <"$work/out")" -eq 2 ]; then
			tap_pass "$desc"
		else
			{ echo "exit status $rc; output:"; cat "$work/out"; } >"$work/why"
			tap_fail_file "$desc" "$work/why"
		fi
	done
fi
tap_finish
