#!/bin/sh
# Tests of tools/kaio-bench: every submission policy with both reaping APIs
# ends, on a data file and on a hole-backed one (where the kernel completes
# reads inside io_submit), by count and by time, with the JSON it promises;
# usage errors exit 2.  Prints TAP; exits 0 when all pass, 77 (1..0 # SKIP)
# when O_DIRECT or kernel AIO is unavailable here, else 1.  POSIX sh.
#
# Environment: KAIO_TOP_BUILDDIR (where tools/kaio-bench was built, default
# .), KAIO_TEST_DIR (a disk filesystem for the temporary files, default .).

top=${KAIO_TOP_BUILDDIR:-.}
kb=$top/tools/kaio-bench
base=${KAIO_TEST_DIR:-.}
limit=120     # seconds: a run that hangs fails instead of stopping make check

. "$(dirname "$0")/tap.sh"

if [ ! -x "$kb" ]; then
	echo "1..1"
	echo "not ok 1 - $kb is not built"
	exit 1
fi

tap_disk_dir "$base" kaio-bench-test
# 8 MiB of data on disk, and a 64 MiB file of holes.
dd if=/dev/urandom of="$dir/data" bs=1M count=8 oflag=direct 2>/dev/null ||
	tap_skip_all "cannot write $dir/data with O_DIRECT"
truncate -s 64M "$dir/holes"
if ! "$kb" --file "$dir/data" --count 1 --json >/dev/null 2>"$dir/err"; then
	if grep -q -i 'context' "$dir/err"; then
		tap_skip_all "kernel AIO unavailable: $(cat "$dir/err")"
	fi
fi

tap_plan 30
# json_ok NAME OUT IOS SUBMIT API: the one line of JSON has these values.
json_ok() {
	name=$1 out=$2 ios=$3 submit=$4 api=$5
	line=$(grep '^{' "$out" | tail -1)
	case $line in
	*"\"engine\":\"kaio\""*"\"submit\":\"$submit\",\"api\":\"$api\""*) ;;
	*)
		tap_fail "$name" "unexpected JSON: $line"
		return
		;;
	esac
	if [ -n "$ios" ]; then
		case $line in
		*"\"ios\":$ios,"*) ;;
		*)
			tap_fail "$name" "expected \"ios\":$ios in: $line"
			return
			;;
		esac
	fi
	tap_pass "$name"
}

# run NAME ARGS...: kaio-bench ARGS --json under a time limit; exit 0.
run() {
	name=$1
	shift
	timeout $limit "$kb" "$@" --json >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ $rc -eq 124 ]; then
		tap_fail "$name" "did not end within $limit s: kaio-bench $*"
		return 1
	fi
	if [ $rc -ne 0 ]; then
		tap_fail "$name" "exit $rc: kaio-bench $*" "$(tail -3 "$dir/err")"
		return 1
	fi
	return 0
}

for file in data holes; do
	for api in callback poll; do
		for submit in single batch chunk auto; do
			name="$file, --api $api --submit $submit --count 3000: ends, 3000 I/Os"
			run "$name" --file "$dir/$file" --depth 32 --count 3000 --api $api --submit $submit &&
				json_ok "$name" "$dir/out" 3000 $submit $api
		done
	done
	# Ending by time: the last completions may come from a look before
	# waiting (auto), which must not leave the loop waiting for none.
	for api in callback poll; do
		name="$file, --api $api --submit auto --time 0.3: ends"
		run "$name" --file "$dir/$file" --depth 32 --time 0.3 --api $api --submit auto &&
			json_ok "$name" "$dir/out" "" auto $api
	done
done

for submit in single auto; do
	name="random writes, --submit $submit --count 2000, depth 8"
	run "$name" --file "$dir/data" --rw randwrite --depth 8 --count 2000 --submit $submit &&
		json_ok "$name" "$dir/out" 2000 $submit callback
done
name="mixed reads and writes, --no-single-thread, depth 64, chunk 3"
run "$name" --file "$dir/data" --rw mixed --depth 64 --count 4000 --submit chunk --chunk 3 \
	--no-single-thread && json_ok "$name" "$dir/out" 4000 chunk callback

# Usage errors: exit 2 and a message, no I/O.
expect_usage() {
	name=$1
	shift
	timeout $limit "$kb" "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ $rc -eq 2 ] && [ -s "$dir/err" ]; then
		tap_pass "$name"
	else
		tap_fail "$name" "exit $rc (want 2 and a message): kaio-bench $*" "$(head -3 "$dir/err")"
	fi
}
expect_usage "no --file: exit 2" --count 1
expect_usage "--submit bogus: exit 2" --file "$dir/data" --submit bogus
expect_usage "--api bogus: exit 2" --file "$dir/data" --api bogus
expect_usage "--depth 0: exit 2" --file "$dir/data" --depth 0
expect_usage "--bs 1000 (not a multiple of the alignment): exit 2" --file "$dir/data" --bs 1000 --count 1
expect_usage "an unknown option: exit 2" --file "$dir/data" --no-such-option

# A file that cannot be opened: exit 1, and the file is named.
timeout $limit "$kb" --file "$dir/missing" --count 1 >"$dir/out" 2>"$dir/err"
rc=$?
if [ $rc -eq 1 ] && grep -q missing "$dir/err"; then
	tap_pass "a missing file: exit 1, named"
else
	tap_fail "a missing file: exit 1, named" "exit $rc" "$(head -3 "$dir/err")"
fi

tap_finish
