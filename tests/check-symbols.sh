#!/bin/sh
# The ABI bookkeeping agrees with itself: debian/libkaio1.symbols lists
# exactly the symbols of src/libkaio.map, each with the version node the
# map gives it (plus one NODE@NODE entry per node), none with a minimum
# version newer than this release; and the soname major that libtool's
# -version-info (KAIO_LT_VERSION in configure.ac: CURRENT-AGE) produces is
# the one the symbols file, debian/control's library package and, when it
# is built, the library itself use.  Prints TAP; exits 77 when there is no
# debian/ (a tarball without the packaging).
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
. "$(dirname "$0")/tap.sh"
map=$top_srcdir/src/libkaio.map
control=$top_srcdir/debian/control
configure_ac=$top_srcdir/configure.ac

symfile=
for f in "$top_srcdir"/debian/libkaio*.symbols; do
	[ -f "$f" ] && symfile=$f && break
done
if [ ! -f "$control" ] || [ -z "$symfile" ]; then
	echo "1..0 # SKIP no debian/control or debian/libkaio*.symbols under $top_srcdir"
	exit 77
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# check DESCRIPTION COMMAND...: ok when the command succeeds; its output
# becomes the diagnostics otherwise.
check() {
	desc=$1
	shift
	if "$@" >"$tmp/out" 2>&1; then tap_pass "$desc"; else tap_fail_file "$desc" "$tmp/out"; fi
}

# The map, as "symbol@NODE" lines (comments stripped; local: sections and
# wildcards ignored), and the node names.
sed -e 's,/\*.*\*/,,g' -e '/\/\*/,/\*\//d' "$map" >"$tmp/map.nocomments"
awk '
	/^[[:space:]]*[A-Za-z_][A-Za-z0-9_.]*[[:space:]]*\{/ { node = $1; sub(/\{.*/, "", node); scope = "global"; next }
	/^[[:space:]]*\}/ { node = ""; next }
	/global:/ { scope = "global"; sub(/.*global:/, "") }
	/local:/ { scope = "local"; sub(/.*local:/, "") }
	node != "" && scope == "global" {
		gsub(/[[:space:]]/, "")
		nsym = split($0, syms, ";")
		for (i = 1; i <= nsym; i++)
			if (syms[i] != "" && syms[i] !~ /[*?]/) print syms[i] "@" node
	}' "$tmp/map.nocomments" | sort -u >"$tmp/map"
sed -n 's/^[[:space:]]*\([A-Za-z_][A-Za-z0-9_.]*\)[[:space:]]*{.*/\1/p' "$tmp/map.nocomments" | sort -u >"$tmp/nodes"
sed 's/.*/&@&/' "$tmp/nodes" >"$tmp/node-entries"
sort -u "$tmp/map" "$tmp/node-entries" >"$tmp/expected"

# The symbols file: its first line "SONAME PACKAGE #MINVER#", then
# " symbol@NODE MINVER" lines (and "* Field: value" metadata).
read -r sym_soname sym_package sym_minver <"$symfile"
grep -E '^ ' "$symfile" | awk '{print $1}' | sort >"$tmp/listed"
grep -E '^ ' "$symfile" | awk '{print $2}' | sort -u >"$tmp/minvers"

# The versions and names.
lt_version=$(sed -n 's/^AC_SUBST(\[KAIO_LT_VERSION\], *\[\([0-9:]*\)\]).*/\1/p' "$configure_ac" | head -n 1)
pkg_version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$configure_ac" | head -n 1)
lt_major=
case $lt_version in
*:*:*)
	current=${lt_version%%:*}
	age=${lt_version##*:}
	lt_major=$((current - age)) ;;
esac
control_libpkg=$(sed -n 's/^Package: *\(libkaio[0-9][0-9a-z.+-]*\) *$/\1/p' "$control" | grep -v -- '-dev$' | head -n 1)

tap_plan 9

# 1. The symbols file's header line.
if [ "$sym_minver" = "#MINVER#" ] && [ -n "$sym_soname" ] && [ -n "$sym_package" ]; then
	tap_pass "$(basename "$symfile") starts with 'SONAME PACKAGE #MINVER#' ($sym_soname $sym_package)"
else
	echo "first line: $(head -n 1 "$symfile")" >"$tmp/why"
	tap_fail_file "$(basename "$symfile") starts with 'SONAME PACKAGE #MINVER#'" "$tmp/why"
fi

# 2. Exactly the map's symbols, each with its node, and one entry per node.
if [ ! -s "$tmp/map" ]; then
	echo "no global symbol found in $map" >"$tmp/why"
	tap_fail_file "the symbols file lists exactly src/libkaio.map's symbols with their version nodes" "$tmp/why"
else
	check "the symbols file lists exactly src/libkaio.map's $(wc -l <"$tmp/map") symbols with their version nodes ($(tr '\n' ' ' <"$tmp/nodes" | sed 's/ $//'))" \
		diff -u "$tmp/expected" "$tmp/listed"
fi

# 3. No symbol listed twice.
check "no symbol is listed twice in the symbols file" sh -c "! uniq -d '$tmp/listed' | grep ."

# 4. Every minimum version is a release at or before this one.
: >"$tmp/why"
while read -r v; do
	if command -v dpkg >/dev/null 2>&1; then
		dpkg --compare-versions "$v" le "$pkg_version" || echo "$v is newer than $pkg_version (AC_INIT)" >>"$tmp/why"
	elif [ "$(printf '%s\n%s\n' "$v" "$pkg_version" | sort -V | tail -n 1)" != "$pkg_version" ]; then
		echo "$v is newer than $pkg_version (AC_INIT)" >>"$tmp/why"
	fi
done <"$tmp/minvers"
[ -s "$tmp/minvers" ] || echo "no minimum version found" >"$tmp/why"
if [ ! -s "$tmp/why" ]; then
	tap_pass "every minimum version ($(tr '\n' ' ' <"$tmp/minvers" | sed 's/ $//')) is at or before release $pkg_version"
else
	tap_fail_file "every minimum version is at or before release $pkg_version" "$tmp/why"
fi

# 5. The symbols file names the -dev package for Build-Depends.
check "the symbols file declares '* Build-Depends-Package: libkaio-dev'" \
	grep -qx '\* Build-Depends-Package: libkaio-dev' "$symfile"

# 6. libtool's version-info gives the soname major of the symbols file.
if [ -z "$lt_major" ]; then
	echo "no 'AC_SUBST([KAIO_LT_VERSION], [C:R:A])' in configure.ac" >"$tmp/why"
	tap_fail_file "KAIO_LT_VERSION gives the soname of the symbols file" "$tmp/why"
elif [ "$sym_soname" = "libkaio.so.$lt_major" ]; then
	tap_pass "KAIO_LT_VERSION $lt_version gives libkaio.so.$lt_major, the soname of the symbols file"
else
	echo "KAIO_LT_VERSION $lt_version: CURRENT-AGE = $lt_major, so libkaio.so.$lt_major; the symbols file says $sym_soname" >"$tmp/why"
	tap_fail_file "KAIO_LT_VERSION gives the soname of the symbols file" "$tmp/why"
fi

# 7. The library package is named after the soname, in the symbols file and
# in debian/control, and has a symbols file of its own name.
if [ -n "$lt_major" ] && [ "$sym_package" = "libkaio$lt_major" ] &&
	[ "$control_libpkg" = "libkaio$lt_major" ] &&
	[ "$(basename "$symfile")" = "libkaio$lt_major.symbols" ]; then
	tap_pass "the library package is libkaio$lt_major in debian/control and in $(basename "$symfile")"
else
	echo "soname major ${lt_major:-?}; symbols file $(basename "$symfile") names '$sym_package'; debian/control has 'Package: ${control_libpkg:-<none>}'" >"$tmp/why"
	tap_fail_file "the library package is named after the soname major" "$tmp/why"
fi

# 8. libkaio-dev depends on that package at the same binary version.
if [ -n "$control_libpkg" ] &&
	awk -v RS= '/(^|\n)Package: *libkaio-dev *(\n|$)/' "$control" | tr '\n' ' ' |
	grep -q "$control_libpkg (= \${binary:Version})"; then
	tap_pass "libkaio-dev depends on $control_libpkg (= \${binary:Version})"
else
	echo "libkaio-dev's stanza in debian/control lacks '${control_libpkg:-libkaioN} (= \${binary:Version})'" >"$tmp/why"
	tap_fail_file "libkaio-dev depends on the library package at the same binary version" "$tmp/why"
fi

# 9. The built library, if there is one, carries that soname.
lib=$top_builddir/.libs/libkaio.so
if [ ! -f "$lib" ]; then
	tap_skip "the built library's SONAME" "$lib not built"
elif ! command -v objdump >/dev/null 2>&1; then
	tap_skip "the built library's SONAME" "objdump not installed"
else
	soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
	if [ -n "$lt_major" ] && [ "$soname" = "libkaio.so.$lt_major" ] && [ "$soname" = "$sym_soname" ]; then
		tap_pass "the built library's SONAME is $soname"
	else
		echo "objdump -p $lib: SONAME '$soname'; expected libkaio.so.${lt_major:-?} ($sym_soname in the symbols file)" >"$tmp/why"
		tap_fail_file "the built library's SONAME matches" "$tmp/why"
	fi
fi
tap_finish
