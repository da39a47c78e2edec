#!/bin/sh
# Runs every test program and script given as arguments, counting cases:
# a program that prints TAP (cmocka with CMOCKA_MESSAGE_OUTPUT=TAP, or a
# script) counts each "ok"/"not ok" line; any other counts once by its exit
# status (0 pass, 77 skip, else fail).  Logs go to tests/logs/NAME.log.
# Ends with the figures the tests printed ("# figure: KEY VALUE" lines,
# summed per key) and the line "N passed, N failed, N skipped"; exits 1 on
# any failure.  KAIO_TESTS="a b" runs only tests whose name contains a or b,
# KAIO_TESTS_SKIP="c" leaves out those whose name contains c;
# KAIO_TEST_WRAPPER="valgrind ..." runs each test program under a wrapper.
top_builddir=${KAIO_TOP_BUILDDIR:-.}
logdir=$top_builddir/tests/logs
mkdir -p "$logdir"
CMOCKA_MESSAGE_OUTPUT=TAP
export CMOCKA_MESSAGE_OUTPUT KAIO_TOP_BUILDDIR KAIO_TOP_SRCDIR
: "${KAIO_TEST_DIR:=$top_builddir/tests}"
export KAIO_TEST_DIR

passed=0 failed=0 skipped=0
failures=
logs=
for t in "$@"; do
	name=$(basename "$t")
	skip_this=no
	for unwanted in ${KAIO_TESTS_SKIP:-}; do
		case $name in *"$unwanted"*) skip_this=yes ;; esac
	done
	[ $skip_this = yes ] && continue
	if [ -n "${KAIO_TESTS:-}" ]; then
		keep=no
		for want in $KAIO_TESTS; do
			case $name in *"$want"*) keep=yes ;; esac
		done
		[ $keep = yes ] || continue
	fi
	log=$logdir/${name%.sh}.log
	case $t in
	*.sh) runner="${SHELL:-/bin/sh}" ;;
	*) runner= ;;
	esac
	start=$(date +%s)
	# A hang is a failure: every test runs under a time limit.
	limit="timeout -k 10 ${KAIO_TEST_TIMEOUT:-300}"
	if [ -n "$runner" ]; then
		$limit $runner "$t" >"$log" 2>&1
	elif [ -n "${KAIO_TEST_WRAPPER:-}" ]; then
		# e.g. valgrind: through libtool, so it sees the real binary
		$limit "$top_builddir/libtool" --mode=execute $KAIO_TEST_WRAPPER "$t" >"$log" 2>&1
	else
		$limit "$t" >"$log" 2>&1
	fi
	rc=$?
	secs=$(( $(date +%s) - start ))
	if grep -qE '^1\.\.[0-9]+' "$log"; then
		# cmocka 1.1 reports a skipped case as "not ok N # SKIP".
		p=$(grep -E '^ok [0-9]+' "$log" | grep -vc '# SKIP')
		s=$(grep -E '^(not )?ok [0-9]+.*# SKIP' "$log" | grep -c .)
		f=$(grep -E '^not ok [0-9]+' "$log" | grep -vc '# SKIP')
		plan=$(grep -E '^1\.\.[0-9]+' "$log" | head -n1 | sed 's/^1\.\.\([0-9]*\).*/\1/')
		if grep -qE '^1\.\.0 # SKIP' "$log"; then
			s=$((s + 1))
		elif [ $((p + s + f)) -lt "$plan" ]; then
			f=$((f + plan - p - s - f))   # cases that never reported
		fi
		if [ $rc -ne 0 ] && [ $rc -ne 77 ] && [ "$f" -eq 0 ]; then
			f=1                          # crashed or failed after its cases
		fi
	else
		p=0 f=0 s=0
		case $rc in
		0) p=1 ;;
		77) s=1 ;;
		*) f=1 ;;
		esac
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	logs="$logs $log"
	if [ "$f" -gt 0 ]; then
		status=FAIL
		failures="$failures $name"
	elif [ "$p" -eq 0 ] && [ "$s" -gt 0 ]; then
		status=SKIP
	else
		status=PASS
	fi
	[ $rc -eq 124 ] && echo "TIMEOUT: $name ran longer than ${KAIO_TEST_TIMEOUT:-300} s" >>"$log"
	echo "$status: $name ($p passed, $f failed, $s skipped; ${secs}s; exit $rc)"
	if [ $status = FAIL ]; then
		echo "---- $log (last 40 lines) ----"
		tail -n 40 "$log"
		echo "----"
	elif [ $status = SKIP ]; then
		grep -m1 -E 'SKIP|skipped' "$log" | sed 's/^/  /'
	fi
done
# Figures the tests report ("# figure: KEY VALUE"), summed over this run.
if [ -n "$logs" ]; then
	# shellcheck disable=SC2086
	cat $logs | sed -n 's/^# figure: \([a-z_0-9]*\) \(-\{0,1\}[0-9][0-9]*\)$/\1 \2/p' |
		awk '{ sum[$1] += $2; if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
		     END { if (n) print "figures:"; for (i = 0; i < n; i++) printf "  %-32s %d\n", order[i], sum[order[i]] }'
fi
[ -n "$failures" ] && echo "failed:$failures"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
