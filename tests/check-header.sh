#!/bin/sh
# The public header keeps the promises of API.md "Conventions": it includes
# exactly <stddef.h>, <stdint.h>, <sys/types.h> and <sys/uio.h>; every macro
# it defines is named KAIO_*; every type name it declares (typedef, struct,
# union and enum tags, enum constants) is kaio_* / KAIO_*; and it compiles
# warning-free with -Werror as C (-std=c99, c11, c17, c2x) and as C++
# (-std=c++11, 14, 17, 20), with ${CC:-cc}, ${CXX:-c++}, and gcc/g++ and
# clang/clang++ where present.  Prints TAP.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
header=$top_srcdir/include/kaio.h
cc=${CC:-cc}
cxx=${CXX:-c++}
if [ ! -f "$header" ]; then
	echo "1..0 # SKIP $header not found (set KAIO_TOP_SRCDIR)"
	exit 77
fi
if ! command -v "$cc" >/dev/null 2>&1; then
	echo "1..0 # SKIP no C compiler ($cc)"
	exit 77
fi
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

# Compilers to try, each once (cc and gcc are often the same program).
pick() { # candidates...: prints those present, one per distinct --version
	seen=
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || continue
		# the first line, less the program's own name: "cc (Debian 12.2.0-14) 12.2.0"
		v=$("$c" --version 2>/dev/null | head -n 1 | sed 's/^[^ (]*//')
		case $seen in *"|$v|"*) continue ;; esac
		seen="$seen|$v|"
		echo "$c"
	done
}
ccs=$(pick "$cc" gcc clang)
cxxs=$(pick "$cxx" g++ clang++)
c_stds="c99 c11 c17 c2x"
cxx_stds="c++11 c++14 c++17 c++20"

n_c=0
for c in $ccs; do n_c=$((n_c + 4)); done
for c in $cxxs; do n_c=$((n_c + 4)); done
echo "1..$((4 + n_c))"

n=0 failed=0
report() { # status(0 ok), description, [output file]
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		[ -n "${3:-}" ] && [ -s "$3" ] && sed 's/^/# /' "$3"
		failed=1
	fi
}

# 1. The #include lines, exactly.
printf '%s\n' stddef.h stdint.h sys/types.h sys/uio.h | sort >"$tmp/inc.want"
sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]\([^>"]*\)[>"].*/\1/p' "$header" |
	sort >"$tmp/inc.have"
if grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*[^<"[:space:]]' "$header"; then
	echo "a computed #include (a macro) in kaio.h" >"$tmp/inc.diff"
	report 1 "kaio.h includes exactly stddef.h, stdint.h, sys/types.h, sys/uio.h" "$tmp/inc.diff"
else
	diff "$tmp/inc.want" "$tmp/inc.have" >"$tmp/inc.diff" 2>&1
	report $? "kaio.h includes exactly stddef.h, stdint.h, sys/types.h, sys/uio.h" "$tmp/inc.diff"
fi

# 2. Macros: what kaio.h defines beyond its four system headers (as C and as
# C++, and as the library sees it), all KAIO_*.
printf '#include <stddef.h>\n#include <stdint.h>\n#include <sys/types.h>\n#include <sys/uio.h>\n' \
	>"$tmp/base.h"
printf '#include "%s"\n' "$header" >"$tmp/kaio_only.h"
macros() { # compiler, language, extra flags, file
	# shellcheck disable=SC2086 # $3: flags, split on purpose
	"$1" -x "$2" $3 -E -dM "$4" | sed -n 's/^#define \([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' | sort -u
}
: >"$tmp/mac.bad"
macros_ok=0
for lang in c c++; do
	if [ $lang = c ]; then comp=$cc; else comp=$(echo "$cxxs" | head -n 1); fi
	[ -n "$comp" ] || continue
	for extra in "" "-DKAIO_BUILDING_LIBRARY"; do
		if ! macros "$comp" $lang "$extra" "$tmp/base.h" >"$tmp/mac.base" 2>"$tmp/mac.err" ||
		   ! macros "$comp" $lang "$extra" "$tmp/kaio_only.h" >"$tmp/mac.kaio" 2>>"$tmp/mac.err"; then
			cat "$tmp/mac.err" >>"$tmp/mac.bad"
			macros_ok=1
			continue
		fi
		comm -13 "$tmp/mac.base" "$tmp/mac.kaio" | grep -v '^KAIO_' |
			sed "s/^/$lang $extra: macro not named KAIO_*: /" >>"$tmp/mac.bad"
		# and it does define its own (the check sees them)
		comm -13 "$tmp/mac.base" "$tmp/mac.kaio" | grep -q '^KAIO_VERSION_MAJOR$' ||
			echo "$lang $extra: KAIO_VERSION_MAJOR not seen: the macro check is blind" >>"$tmp/mac.bad"
	done
done
[ -s "$tmp/mac.bad" ] && macros_ok=1
report $macros_ok "every macro kaio.h defines is named KAIO_*" "$tmp/mac.bad"

# 3. Names.  kaio.h alone, preprocessed as C with its four system headers
# replaced by empty ones, gives just its own declarations (comments gone,
# conditionals resolved); at brace depth 0 they split at ';'.  (As C++ it
# only adds extern "C" around the same declarations.)
mkdir -p "$tmp/stub/sys"
: >"$tmp/stub/stddef.h"
: >"$tmp/stub/stdint.h"
: >"$tmp/stub/sys/types.h"
: >"$tmp/stub/sys/uio.h"
: >"$tmp/names.bad"
names_ok=0
lang=c
if ! "$cc" -x c -E -P -nostdinc -I"$tmp/stub" "$header" >"$tmp/own.$lang" 2>"$tmp/own.err"; then
	cat "$tmp/own.err" >>"$tmp/names.bad"
fi
# Tags: struct/union/enum NAME.
tr '\n' ' ' <"$tmp/own.$lang" | grep -oE '\b(struct|union|enum)[[:space:]]+[A-Za-z_][A-Za-z0-9_]*' |
	awk '{print $2}' | sort -u >"$tmp/tags.$lang"
# Typedef names, and enum constants.
tr '\n' ' ' <"$tmp/own.$lang" | awk '
{ text = text $0 }
END {
	depth = 0; stmt = ""; body = ""
	for (i = 1; i <= length(text); i++) {
		ch = substr(text, i, 1)
		if (ch == "{") { depth++; if (depth == 1) { body = ""; stmt = stmt "{}"; continue } }
		if (ch == "}") { depth--; if (depth == 0) { bodies[++nb] = body; btype[nb] = stmt; continue } }
		if (depth > 0) { body = body ch; continue }
		if (ch == ";") { stmts[++ns] = stmt; stmt = ""; continue }
		stmt = stmt ch
	}
	for (k = 1; k <= ns; k++) {
		s = stmts[k]
		if (s !~ /(^|[^A-Za-z0-9_])typedef([^A-Za-z0-9_]|$)/) continue
		if (match(s, /\([[:space:]]*\*[[:space:]]*[A-Za-z_][A-Za-z0-9_]*/)) {
			name = substr(s, RSTART, RLENGTH); sub(/^\([[:space:]]*\*[[:space:]]*/, "", name)
		} else {
			sub(/(\[[^]]*\][[:space:]]*)*[[:space:]]*$/, "", s)
			match(s, /[A-Za-z_][A-Za-z0-9_]*$/); name = substr(s, RSTART, RLENGTH)
		}
		print "typedef " name
	}
	for (k = 1; k <= nb; k++) {
		if (btype[k] !~ /(^|[^A-Za-z0-9_])enum([^A-Za-z0-9_]|$)/) continue
		m = split(bodies[k], parts, ",")
		for (j = 1; j <= m; j++) {
			e = parts[j]; sub(/^[[:space:]]*/, "", e); sub(/[^A-Za-z0-9_].*$/, "", e)
			if (e != "") print "enumerator " e
		}
	}
}' >"$tmp/decl.$lang"
sed 's/^/tag /' "$tmp/tags.$lang" >>"$tmp/decl.$lang"
# The parse sees what it should (else it is blind, not clean).
for want in "typedef kaio_ctx" "typedef kaio_cb" "typedef kaio_release_fn" "tag kaio_event" \
            "tag kaio_op_code" "enumerator KAIO_OP_READ" "enumerator KAIO_SYNC_FULL"; do
	grep -qx "$want" "$tmp/decl.$lang" || echo "$lang: the parse did not find \"$want\"" >>"$tmp/names.bad"
done
grep -E '^(typedef|tag) ' "$tmp/decl.$lang" | grep -vE ' kaio_[A-Za-z0-9_]*$' |
	sed "s/^/$lang: not named kaio_*: /" >>"$tmp/names.bad"
grep -E '^enumerator ' "$tmp/decl.$lang" | grep -vE ' KAIO_[A-Za-z0-9_]*$' |
	sed "s/^/$lang: enum constant not named KAIO_*: /" >>"$tmp/names.bad"
[ -s "$tmp/names.bad" ] && names_ok=1
report $names_ok "every typedef, struct/union/enum tag (kaio_*) and enum constant (KAIO_*) kaio.h declares" \
	"$tmp/names.bad"

# 4. kaio.h is self-contained and idempotent: its own include guard holds.
printf '#include "%s"\n#include "%s"\nint main(void) { return KAIO_VERSION_MAJOR > 0 ? 0 : 1; }\n' \
	"$header" "$header" >"$tmp/twice.c"
"$cc" -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only "$tmp/twice.c" >"$tmp/twice.out" 2>&1
report $? "kaio.h included twice compiles ($cc)" "$tmp/twice.out"

# 5. Warning-free with -Werror in every standard.
cat >"$tmp/use.c" <<EOF
#include "$header"
static int use(void)
{
	struct kaio_event ev;
	struct kaio_op op;
	struct kaio_vec vec;
	kaio_ctx *ctx = 0;
	ev.user_data = 0;
	op.op = KAIO_OP_READ;
	vec.len = 0;
	return (int)ev.user_data + (int)op.op + (int)vec.len + (ctx == 0) + kaio_ctx_fd(ctx);
}
int main(void)
{
	return use();
}
EOF
cat >"$tmp/use.cc" <<EOF
#include "$header"
static int use()
{
	kaio_event ev = kaio_event();
	kaio_op op = kaio_op();
	kaio_vec vec = kaio_vec();
	kaio_ctx *ctx = nullptr;
	op.op = KAIO_OP_READ;
	return static_cast<int>(ev.user_data + op.op + vec.len) + (ctx == nullptr) + kaio_ctx_fd(ctx);
}
int main()
{
	return use();
}
EOF
printf 'int main(void) { return 0; }\n' >"$tmp/probe.c"
cp "$tmp/probe.c" "$tmp/probe.cc"
C_WARN="-Wall -Wextra -Wpedantic -pedantic-errors -Wstrict-prototypes -Wshadow -Wundef -Wconversion \
-Wsign-conversion -Wcast-qual -Wredundant-decls -Wmissing-prototypes -Wold-style-definition"
CXX_WARN="-Wall -Wextra -Wpedantic -pedantic-errors -Wshadow -Wundef -Wconversion -Wsign-conversion \
-Wcast-qual -Wredundant-decls -Wold-style-cast -Wzero-as-null-pointer-constant"
compile() { # compiler, std, warnings, source
	if ! "$1" -std="$2" -fsyntax-only "$(dirname "$4")/probe.${4##*.}" >/dev/null 2>&1; then
		n=$((n + 1))
		echo "ok $n - kaio.h as -std=$2 with $1 # SKIP $1 does not know -std=$2"
		return
	fi
	# shellcheck disable=SC2086 # $3: flags, split on purpose
	"$1" -std="$2" $3 -Werror -fsyntax-only "$4" >"$tmp/out" 2>&1
	report $? "kaio.h compiles warning-free as -std=$2 with $1 (-Werror)" "$tmp/out"
}
for c in $ccs; do
	for std in $c_stds; do compile "$c" "$std" "$C_WARN" "$tmp/use.c"; done
done
for c in $cxxs; do
	for std in $cxx_stds; do compile "$c" "$std" "$CXX_WARN" "$tmp/use.cc"; done
done
exit $failed
