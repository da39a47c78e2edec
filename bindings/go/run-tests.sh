#!/bin/sh
# run-tests.sh - run the Go binding's tests against a libkaio build, as TAP.
#
#   bindings/go/run-tests.sh [LIBDIR [INCLUDEDIR]]
#
# LIBDIR holds libkaio.so: default $KAIO_BUILD_LIB, else
# $KAIO_TOP_BUILDDIR/.libs (what `make check` exports), else .libs at the
# top of the source tree.  INCLUDEDIR holds kaio.h: default $KAIO_INCLUDE,
# else $KAIO_TOP_SRCDIR/include, else include/ at the top of the source
# tree (the one this script is in).  Runs `go vet`, `go test -v` and
# `go test -race` (as -json, the same tests) and prints one TAP line per
# test and run:
#
#   ok 3 - TestBuffer
#   not ok 4 - TestErrors
#   ok 27 - TestThreads20000ConcurrentReads (race) # SKIP the race detector ...
#
# then the plan "1..N".  Exit status 0 when all passed, 1 otherwise, 77
# (with "1..0 # SKIP reason") when there is no Go toolchain.
#
# No network: GOPROXY=off, and the module has no requirements.  The build
# cache lives in $KAIO_GO_WORKDIR, by default go-work/ in the build
# directory (the parent of LIBDIR when that is a libtool .libs), else a
# temporary directory removed at exit.  Test files go under $KAIO_TEST_DIR
# (default /var/tmp): a file system that accepts O_DIRECT.  KAIO_GO_RACE=0
# skips the race-detector run.
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
GO=${GO:-go}

if ! command -v "$GO" >/dev/null 2>&1; then
	echo "1..0 # SKIP no Go toolchain ('$GO' not found; apt-get install golang-go)"
	exit 77
fi

. "$here/go-env.sh"
if ! go_env "${1:-}" "${2:-}"; then
	echo "Bail out! $go_env_error"
	exit 1
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/kaio-go-out.XXXXXX") || exit 1
trap 'rm -rf "$out" ${go_tmp:+"$go_tmp"}' EXIT
trap 'exit 1' HUP INT TERM

LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH

cd "$here" || exit 1
echo "# Go binding: $("$GO" version), libkaio from $libdir"

n=0
failed=0

# tap_line OK|NOTOK NAME [DIRECTIVE]
tap_line() {
	n=$((n + 1))
	if [ "$1" = OK ]; then
		echo "ok $n - $2${3:+ # $3}"
	else
		echo "not ok $n - $2"
		failed=$((failed + 1))
	fi
}

comment_file() {
	sed -e 's/^/# /' "$1"
}

# go vet over the package and the benchmark command.
if "$GO" vet ./... >"$out/vet.txt" 2>&1; then
	tap_line OK "go vet ./..."
else
	comment_file "$out/vet.txt"
	tap_line NOTOK "go vet ./..."
fi
# The stage-timing build (stages.go) is only for tuning: vetting and
# testing it keeps it working.
if "$GO" vet -tags kaiostages ./... >"$out/vet.txt" 2>&1 &&
	"$GO" test -count=1 -tags kaiostages -run '^TestDebugStages$' . >>"$out/vet.txt" 2>&1; then
	tap_line OK "go vet and TestDebugStages with -tags kaiostages"
else
	comment_file "$out/vet.txt"
	tap_line NOTOK "go vet and TestDebugStages with -tags kaiostages"
fi

# run_tests LABEL [GO TEST FLAGS...]: one TAP line per top-level test.
run_tests() {
	label=$1
	shift
	"$GO" test -json -count=1 -timeout 900s "$@" . >"$out/run.json" 2>"$out/run.err"
	status=$?
	rm -f "$out"/fail-*.txt
	# test2json events, one per line: {"Action":"pass","Test":"TestX",...}.
	# Prints KIND<tab>NAME<tab>EXTRA lines; the output of a failed test goes
	# to fail-K.txt (EXTRA = K).
	awk -v label="$label" -v status="$status" -v dir="$out" '
	function field(name) {
		if (match($0, "\"" name "\":\"([^\"\\\\]|\\\\.)*\""))
			return substr($0, RSTART + length(name) + 4, RLENGTH - length(name) - 5)
		return ""
	}
	function unescape(s) {
		gsub(/\\n/, "", s); gsub(/\\t/, "    ", s)
		gsub(/\\u003c/, "<", s); gsub(/\\u003e/, ">", s); gsub(/\\u0026/, "\\&", s)
		gsub(/\\"/, "\"", s); gsub(/\\\\/, "\\", s)
		return s
	}
	function report(k, text,    f) {
		f = dir "/fail-" k ".txt"
		printf "%s", text > f
		close(f)
	}
	{
		action = field("Action"); test = field("Test")
		if (action == "output") {
			line = unescape(field("Output"))
			if (line ~ /^=== (RUN|PAUSE|CONT)/ || line ~ /^ *--- (PASS|SKIP)/)
				next
			if (test == "") { pkgout = pkgout line "\n"; next }
			top = test; sub(/\/.*/, "", top)
			out[top] = out[top] line "\n"
			if (line !~ /^[ \t]*$/ && line !~ /^ *--- FAIL/) last[top] = line
			next
		}
		if (test == "") { if (action == "fail") pkgfail = 1; next }
		if (test ~ /\//) next # subtests: reported through their parent
		if (action == "run") { order[++nt] = test; result[test] = "" }
		else if (action == "pass" || action == "fail" || action == "skip") result[test] = action
	}
	END {
		anyfail = 0
		for (i = 1; i <= nt; i++) {
			t = order[i]; name = t label
			if (result[t] == "pass") print "PASS\t" name "\t"
			else if (result[t] == "skip") {
				why = last[t]; sub(/^[ \t]*[A-Za-z0-9_]+\.go:[0-9]+: /, "", why)
				print "SKIP\t" name "\t" why
			} else {
				anyfail = 1
				report(i, out[t])
				print "FAIL\t" name (result[t] == "" ? " (no result: crashed or timed out)" : "") "\t" i
			}
		}
		if ((pkgfail || status != 0) && !anyfail) {
			report(0, pkgout)
			print "FAIL\tgo test" label " (exit " status ", failed outside the tests)\t0"
		}
	}' "$out/run.json" >"$out/results.txt"
	[ -s "$out/run.err" ] && comment_file "$out/run.err"
	if [ ! -s "$out/results.txt" ]; then
		tap_line NOTOK "go test$label (exit $status, no test ran)"
		return
	fi
	while IFS="$(printf '\t')" read -r kind name extra; do
		case $kind in
		PASS) tap_line OK "$name" ;;
		SKIP) tap_line OK "$name" "SKIP ${extra:-skipped}" ;;
		FAIL)
			[ -f "$out/fail-$extra.txt" ] && comment_file "$out/fail-$extra.txt"
			tap_line NOTOK "$name"
			;;
		esac
	done <"$out/results.txt"
}

run_tests "" -v
if [ "${KAIO_GO_RACE:-1}" = 0 ]; then
	tap_line OK "go test -race" "SKIP KAIO_GO_RACE=0"
else
	run_tests " (race)" -race -v
fi

echo "1..$n"
[ "$failed" -eq 0 ]
