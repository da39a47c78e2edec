#!/bin/sh
# Builds the libFuzzer harness tests/fuzz/fuzz_api.cc straight from the
# library sources (clang++, -fsanitize=fuzzer,address,undefined), runs it
# once on every file in tests/fuzz/regressions/, then fuzzes for
# FUZZ_SECONDS seconds.
#
#   KAIO_TOP_SRCDIR    source tree (default .)
#   KAIO_TOP_BUILDDIR  build tree (default .): the binary, corpus/ and
#                      crashes/ go to $KAIO_TOP_BUILDDIR/tests/fuzz
#   KAIO_TEST_DIR      where the harness creates its O_DIRECT test file (a
#                      disk filesystem, not tmpfs; default: the build dir)
#   FUZZ_SECONDS       fuzzing time (default 300); 0 runs the regressions only
#   FUZZ_WORKERS       parallel fuzzing processes (default: 8 per CPU, at most 16)
#   FUZZ_CORPUS        corpus directory (default $KAIO_TOP_BUILDDIR/tests/fuzz/corpus;
#                      every worker replays all of it before fuzzing)
#   FUZZ_JOBS          extra libFuzzer options, e.g. "-use_value_profile=1"
#   KAIO_FUZZ_KNOWN_BUGS  comma-separated tags of known library bugs whose
#                      checks should not stop the run (see fuzz_api.cc)
#   CLANGXX            the compiler (default clang++)
#
# Exit status: 0 no crash, 1 a crash or failed regression (the input is in
# tests/fuzz/crashes/), 77 clang++ or the libFuzzer runtime is missing,
# 2 the harness could not be built.
top_srcdir=${KAIO_TOP_SRCDIR:-.}
top_builddir=${KAIO_TOP_BUILDDIR:-.}
seconds=${FUZZ_SECONDS:-300}
CLANGXX=${CLANGXX:-clang++}
out=$top_builddir/tests/fuzz
bin=$out/fuzz_api
fuzzdir=$top_srcdir/tests/fuzz

corpus=${FUZZ_CORPUS:-$out/corpus}
mkdir -p "$out" "$corpus" "$out/crashes" || exit 2

# ---- toolchain --------------------------------------------------------------
if ! command -v "$CLANGXX" >/dev/null 2>&1; then
	echo "SKIP: $CLANGXX not found: libFuzzer needs clang (apt-get install clang libclang-rt-dev)"
	exit 77
fi
probe=$out/probe.$$
trap 'rm -rf "$probe"' EXIT
mkdir -p "$probe" || exit 2
cat >"$probe/p.cc" <<'EOF'
#include <cstddef>
#include <cstdint>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *, size_t) { return 0; }
EOF
if ! "$CLANGXX" -std=c++17 -fsanitize=fuzzer,address,undefined "$probe/p.cc" \
	-o "$probe/p" >"$probe/log" 2>&1; then
	echo "SKIP: $CLANGXX cannot link -fsanitize=fuzzer,address,undefined (is the libFuzzer" \
	     "runtime, libclang-rt-dev, installed?)"
	sed 's/^/  /' "$probe/log" | head -n 5
	exit 77
fi

# ---- build (skipped when the binary is newer than every input) ---------------
sources="$fuzzdir/fuzz_api.cc $(ls "$top_srcdir"/src/*.cc)"
stale=yes
if [ -x "$bin" ]; then
	stale=no
	for f in $sources "$top_srcdir"/src/*.h "$top_srcdir/include/kaio.h" "$0"; do
		if [ -n "$(find "$f" -newer "$bin" 2>/dev/null)" ]; then
			stale=yes
			break
		fi
	done
fi
if [ $stale = yes ]; then
	echo "building $bin"
	# shellcheck disable=SC2086 # $sources is a list of paths without spaces
	if ! "$CLANGXX" -std=c++17 -g -O1 -fno-omit-frame-pointer \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
		-I"$top_srcdir/include" -I"$top_srcdir/src" -DKAIO_BUILDING_LIBRARY -D_GNU_SOURCE \
		$sources -o "$bin.tmp" -laio -lpthread; then
		echo "FAIL: cannot build the fuzz harness"
		exit 2
	fi
	mv "$bin.tmp" "$bin" || exit 2
fi

: "${KAIO_TEST_DIR:=$out}"
export KAIO_TEST_DIR
# Leaks, UB and ASan reports all end the run; ASan's own exit code is 1.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:quarantine_size_mb=64}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS
common="-detect_leaks=1 -timeout=60 -report_slow_units=30 -rss_limit_mb=4096 -error_exitcode=1 -timeout_exitcode=1"

# ---- preflight: the harness needs a file it can open with O_DIRECT ----------
: >"$probe/empty"
if ! "$bin" -runs=1 "$probe/empty" >"$probe/pre.log" 2>&1; then
	if grep -q 'with O_DIRECT' "$probe/pre.log"; then
		echo "SKIP: $(grep -m1 'with O_DIRECT' "$probe/pre.log" | sed 's/^fuzz_api: //')"
		exit 77
	fi
	cat "$probe/pre.log"
	echo "FAIL: the harness does not run"
	exit 1
fi

# ---- regressions: every saved input runs once ------------------------------
set --
if [ -d "$fuzzdir/regressions" ]; then
	for f in "$fuzzdir/regressions"/*; do
		[ -f "$f" ] && set -- "$@" "$f"
	done
fi
if [ $# -gt 0 ]; then
	echo "running $# regression input(s) from $fuzzdir/regressions"
	# shellcheck disable=SC2086
	if ! "$bin" $common "$@" >"$out/regressions.log" 2>&1; then
		tail -n 60 "$out/regressions.log"
		echo "FAIL: a regression input crashed (log: $out/regressions.log)"
		exit 1
	fi
	echo "regressions: all $# passed"
fi
[ "$seconds" -gt 0 ] 2>/dev/null || exit 0

# ---- fuzz -------------------------------------------------------------------
if [ -d "$fuzzdir/seeds" ]; then
	for f in "$fuzzdir/seeds"/*; do
		[ -f "$f" ] || continue
		b=$(basename "$f")
		[ -e "$corpus/seed-$b" ] || cp "$f" "$corpus/seed-$b"
	done
fi
# An execution mostly sleeps (io_destroy waits ~30 ms for an RCU grace
# period per context), so several workers share even a small machine.
workers=${FUZZ_WORKERS:-auto}
if [ "$workers" = auto ]; then
	workers=$(( $(nproc 2>/dev/null || echo 1) * 8 ))
	[ "$workers" -gt 16 ] && workers=16
fi
abs_out=$(cd "$out" && pwd) || exit 2
abs_corpus=$(cd "$corpus" && pwd) || exit 2
fuzzopts="$common -max_total_time=$seconds -max_len=1024 -print_final_stats=1"
fuzzopts="$fuzzopts -artifact_prefix=$abs_out/crashes/ ${FUZZ_JOBS:-}"
jobdir=$abs_out/jobs
rm -rf "$jobdir"
mkdir -p "$jobdir" || exit 2
echo "fuzzing for $seconds s with $workers worker(s): corpus $abs_corpus," \
     "artifacts $abs_out/crashes/, logs $jobdir/"
# libFuzzer's exit status survives the pipe through a file.
if [ "$workers" -le 1 ]; then
	# shellcheck disable=SC2086
	( cd "$jobdir" && "$bin" $fuzzopts "$abs_corpus" 2>&1
	  echo $? >"$probe/rc" ) | tee "$jobdir/fuzz-0.log"
else
	# Each job writes $jobdir/fuzz-N.log and shares the corpus directory.
	# shellcheck disable=SC2086
	( cd "$jobdir" && "$bin" $fuzzopts -jobs="$workers" -workers="$workers" \
		"$abs_corpus" 2>&1; echo $? >"$probe/rc" ) | grep -v '^INFO:\|^#\|NEW_FUNC\|^  *[0-9a-fx]* in \|Recommended dict\|Uses: \|End of recommended'
fi
rc=$(cat "$probe/rc" 2>/dev/null || echo 1)

# ---- summary ----------------------------------------------------------------
execs=0
for log in "$jobdir"/fuzz-*.log; do
	[ -f "$log" ] || continue
	n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	execs=$((execs + ${n:-0}))
done
best=$(cat "$jobdir"/fuzz-*.log 2>/dev/null | grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' |
	sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1 \2/p' | sort -n -k1,1 -k2,2 | tail -n 1)
ninputs=$(find "$abs_corpus" -type f | wc -l)
[ -n "$best" ] || best="? ?"
echo "summary: $workers worker(s), $execs executions in $seconds s ($((execs / seconds)) exec/s)," \
     "cov: ${best%% *} ft: ${best##* }, corpus: $ninputs inputs"
if [ "$rc" -ne 0 ]; then
	echo "FAIL: libFuzzer exited with $rc; the inputs:"
	cat "$jobdir"/fuzz-*.log 2>/dev/null | sed -n 's/.*Test unit written to /  /p' | sort -u
	for log in "$jobdir"/fuzz-*.log; do
		grep -q 'INVARIANT VIOLATED\|ERROR: \(AddressSanitizer\|libFuzzer\|LeakSanitizer\)\|runtime error' \
			"$log" 2>/dev/null || continue
		echo "---- $log ----"
		grep -m1 -A12 'INVARIANT VIOLATED\|ERROR: \|runtime error' "$log"
	done
	echo "reproduce: KAIO_FUZZ_TRACE=1 $bin $abs_out/crashes/<file>"
	exit 1
fi
echo "no crash in $seconds s"
exit 0
