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

tap_plan 40
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

# expect_msg NAME STATUS PATTERN ARGS...: exit STATUS, stderr matches PATTERN.
expect_msg() {
	name=$1 want=$2 pattern=$3
	shift 3
	timeout $limit "$kb" "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
	if [ $rc -eq "$want" ] && grep -q -- "$pattern" "$dir/err"; then
		tap_pass "$name"
	else
		tap_fail "$name" "exit $rc (want $want, stderr matching '$pattern'): kaio-bench $*" \
			"$(head -3 "$dir/err")"
	fi
}
expect_msg "an ambiguous abbreviation is called so" 2 "'--s' is ambiguous (--size, --seed, --submit)" \
	--file "$dir/data" --s 1
expect_msg "a value for an option that takes none is called so" 2 "'--json' takes no value" \
	--file "$dir/data" --json=1
# Buffers that would not fit in memory: refused, not left to the OOM killer.
expect_msg "--depth x --bs beyond half the memory: exit 2" 2 "half of this machine's memory" \
	--file "$dir/data" --depth 65536 --bs 1g --count 1
# Neither a regular file nor a block device: exit 2 at once (a FIFO's open
# would otherwise wait for a writer for ever).
mkfifo "$dir/fifo"
mkdir "$dir/subdir"
expect_msg "a FIFO: exit 2 at once, says so" 2 "is a FIFO" --file "$dir/fifo" --count 1
expect_msg "a directory: exit 2, says so" 2 "is a directory" --file "$dir/subdir" --count 1
expect_msg "/dev/null: exit 2, a character device" 2 "is a character device" --file /dev/null --count 1

# --submit auto reports the chunk it uses: 1, or --chunk's.
for c in "" 3; do
	name="--submit auto${c:+ --chunk $c}: the JSON's chunk is ${c:-1}"
	run "$name" --file "$dir/data" --count 64 --submit auto ${c:+--chunk $c} &&
		if grep -q "\"chunk\":${c:-1}," "$dir/out"; then tap_pass "$name"; else
			tap_fail "$name" "$(cat "$dir/out")"; fi
done

# Interrupted during the warm-up: nothing measured, no latencies reported.
timeout $limit "$kb" --file "$dir/data" --ramp 30 --time 1 --json >"$dir/out" 2>"$dir/err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
if [ $rc -eq 0 ] && grep -q '"ios":0,' "$dir/out" && grep -q '"lat_us":null' "$dir/out" &&
	grep -q '"interrupted":true' "$dir/out"; then
	tap_pass "SIGINT during --ramp: 0 I/Os and no latencies reported"
else
	tap_fail "SIGINT during --ramp: 0 I/Os and no latencies reported" "exit $rc" "$(cat "$dir/out")"
fi

# A file name that is not UTF-8 still makes valid JSON (U+FFFD for the byte).
odd=$(printf 'x\377y')
ln "$dir/data" "$dir/$odd"
if command -v python3 >/dev/null 2>&1; then
	name="a file name that is not UTF-8: the JSON is valid"
	run "$name" --file "$dir/$odd" --count 8 &&
		if python3 -c 'import json, sys; d = json.loads(open(sys.argv[1], "rb").read()); assert d["file"].endswith("x\ufffdy"), d["file"]' "$dir/out" 2>"$dir/err"; then
			tap_pass "$name"
		else
			tap_fail "$name" "$(cat "$dir/err")" "$(cat "$dir/out")"
		fi
else
	tap_skip "a file name that is not UTF-8: the JSON is valid" "no python3"
fi

# A file that cannot be opened: exit 1, and the file is named.
timeout $limit "$kb" --file "$dir/missing" --count 1 >"$dir/out" 2>"$dir/err"
rc=$?
if [ $rc -eq 1 ] && grep -q missing "$dir/err"; then
	tap_pass "a missing file: exit 1, named"
else
	tap_fail "a missing file: exit 1, named" "exit $rc" "$(head -3 "$dir/err")"
fi

tap_finish
