#!/bin/sh
# The shared library exports exactly the functions of src/libkaio.map, all
# named kaio_*, all declared in include/kaio.h, and nothing else (no C++
# symbol, no helper).  Prints TAP.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
lib=$top_builddir/.libs/libkaio.so
if [ ! -f "$lib" ]; then
	echo "1..0 # SKIP $lib not built (static-only build?)"
	exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TtWwDdBbRrVvi]$/ {print $3}' | sed 's/@.*//' |
	grep -v '^LIBKAIO_' | sort -u >"$tmp/exported"
grep -E '^[[:space:]]+kaio_[a-z_]+;' "$top_srcdir/src/libkaio.map" | tr -d ' \t;' | sort -u >"$tmp/map"
grep -oE '\bkaio_[a-z_]+[[:space:]]*\(' "$top_srcdir/include/kaio.h" | tr -d ' \t(' |
	grep -vE '^kaio_(cb|release_fn)$' | sort -u >"$tmp/header"

n=0 failed=0
check() { # description, command...
	n=$((n + 1))
	desc=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		sed 's/^/# /' "$tmp/out"
		failed=1
	fi
}
echo "1..4"
check "every exported symbol is named kaio_*" sh -c "! grep -v '^kaio_' '$tmp/exported'"
check "exported set equals src/libkaio.map" diff "$tmp/map" "$tmp/exported"
check "exported set equals the functions of include/kaio.h" diff "$tmp/header" "$tmp/exported"
check "every symbol carries the version node LIBKAIO_1.0" sh -c \
	"nm -D --defined-only '$lib' | grep ' kaio_' | grep -v '@@LIBKAIO_1\.0\$' | grep . && exit 1 || exit 0"
exit $failed
