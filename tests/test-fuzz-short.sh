#!/bin/sh
# make check's libFuzzer run: tests/fuzz/run-fuzz.sh (saved regressions,
# then KAIO_FUZZ_SECONDS of fuzzing, default 20) over the public API.
# Prints TAP; exits 77 when clang++ or the libFuzzer runtime is missing.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
top_srcdir=${KAIO_TOP_SRCDIR:-.}
seconds=${KAIO_FUZZ_SECONDS:-20}
mkdir -p "$top_builddir/tests/fuzz" || exit 1
log=$top_builddir/tests/fuzz/short.log
# A corpus of its own, fresh from the seeds each time: every worker replays
# its corpus before fuzzing, and make fuzz's can grow large.
corpus=$top_builddir/tests/fuzz/corpus-check
rm -rf "$corpus"

# One worker per CPU: make check shares the machine with nothing else.
FUZZ_WORKERS=${FUZZ_WORKERS:-$(nproc 2>/dev/null || echo 1)} FUZZ_SECONDS=$seconds FUZZ_CORPUS=$corpus KAIO_TOP_BUILDDIR=$top_builddir \
	KAIO_TOP_SRCDIR=$top_srcdir ${SHELL:-/bin/sh} "$top_srcdir/tests/fuzz/run-fuzz.sh" >"$log" 2>&1
rc=$?

if [ $rc -eq 77 ]; then
	reason=$(sed -n 's/^SKIP: *//p' "$log" | head -n 1)
	echo "1..0 # SKIP ${reason:-clang++ with libFuzzer is not available}"
	exit 77
fi
echo "1..1"
summary=$(grep '^summary:' "$log" | tail -n 1)
execs=$(echo "$summary" | sed -n 's/.* \([0-9][0-9]*\) executions.*/\1/p')
cov=$(echo "$summary" | sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p')
workers=${FUZZ_WORKERS:-$(nproc 2>/dev/null || echo 1)}
echo "# figure: fuzz_executions ${execs:-0}"
echo "# figure: fuzz_worker_seconds $((seconds * workers))"
if [ $rc -eq 0 ]; then
	echo "ok 1 - libFuzzer ran $seconds s, no crash (${execs:-0} executions${cov:+, $cov})"
	exit 0
fi
case $rc in
1) what="found a crash or an invariant violation" ;;
2) what="could not build the harness" ;;
*) what="failed (exit $rc)" ;;
esac
echo "not ok 1 - libFuzzer $what (log: $log)"
tail -n 40 "$log" | sed 's/^/# /'
exit 1
