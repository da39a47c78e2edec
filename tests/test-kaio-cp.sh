#!/bin/sh
# Tests of tools/kaio-cp: real copies with O_DIRECT, checked byte for byte
# with cmp, and the error paths (exit 1 during the copy, 2 for usage).
# Prints TAP; exits 0 when all pass, 77 (1..0 # SKIP) when O_DIRECT or
# kernel AIO is unavailable here, else 1.  POSIX sh (runs under dash).
#
# Environment: KAIO_TOP_BUILDDIR (where tools/kaio-cp was built, default .),
# KAIO_TEST_DIR (a disk filesystem for the temporary files, default .).

top=${KAIO_TOP_BUILDDIR:-.}
kcp=$top/tools/kaio-cp
base=${KAIO_TEST_DIR:-.}
. "$(dirname "$0")/tap.sh"

if [ ! -x "$kcp" ]; then
	echo "1..1"
	echo "not ok 1 - $kcp is not built"
	exit 1
fi

loop=
tap_cleanup_hook() {
	[ -n "$loop" ] && losetup -d "$loop" 2>/dev/null
}
tap_disk_dir "$base" kaio-cp-test
if ! "$kcp" --no-progress "$dir/probe" "$dir/probe.out" 2>"$dir/err"; then
	if grep -q 'I/O context' "$dir/err"; then
		tap_skip_all "kernel AIO unavailable: $(cat "$dir/err")"
	fi
fi

tap_plan 61
pass() { tap_pass "$1"; }
skip() { tap_skip "$1" "$2"; }
fail() {
	tap_fail "$1" "  exit status $rc; stderr:"
	sed 's/^/#     /' "$dir/err"
}

# run ARGS...: run kaio-cp, stderr in $dir/err, status in $rc.
run() {
	$timeout "$kcp" "$@" >"$dir/out" 2>"$dir/err"
	rc=$?
}
# A hang (a FIFO's open waiting for a writer) must fail, not stall make check.
timeout=
command -v timeout >/dev/null 2>&1 && timeout="timeout 60"


# A pool of random bytes; sources are prefixes of it, so a block written
# at the wrong offset never matches by accident.
head -c $((9 * 1048576)) /dev/urandom >"$dir/pool"
MiB=1048576

# copy DESC SIZE [OPTIONS...]: copy a SIZE-byte source to a fresh DEST; the
# copy must succeed silently (stderr is not a terminal) and match.
copy() {
	desc=$1 size=$2
	shift 2
	head -c "$size" "$dir/pool" >"$dir/src"
	rm -f "$dir/dst"
	run "$@" "$dir/src" "$dir/dst"
	if [ $rc -eq 0 ] && [ ! -s "$dir/err" ] && cmp -s "$dir/src" "$dir/dst"; then
		pass "$desc"
	else
		fail "$desc"
	fi
}

# expect_exit DESC STATUS PATTERN ARGS...: kaio-cp exits STATUS and stderr
# matches the grep pattern PATTERN.
expect_exit() {
	desc=$1 want=$2 pattern=$3
	shift 3
	run "$@"
	if [ $rc -eq "$want" ] && grep -q -- "$pattern" "$dir/err"; then
		pass "$desc"
	else
		fail "$desc"
	fi
}

# ---- copies ----------------------------------------------------------------
copy "5 MiB + 777 bytes (unaligned tail), defaults" $((5 * MiB + 777))
copy "3000 bytes: less than one block and one sector" 3000
copy "1 byte" 1
copy "64 KiB: less than one block, aligned" 65536
copy "4 MiB: exact multiple of the block size" $((4 * MiB))
copy "1 MiB + 512: one sector past a block" $((MiB + 512))
copy "-q 1 (no overlap)" $((5 * MiB + 777)) -q 1
copy "-q 2" $((3 * MiB + 1)) -q 2
copy "-b 4K (1281 blocks in flight 32 deep)" $((5 * MiB + 777)) -b 4K
copy "-b 4K -q 1" $((MiB + 4095)) -b 4K -q 1
copy "-b 12K (not a power of two)" $((5 * MiB + 777)) -b 12K
copy "-b 1048576 (plain bytes)" $((2 * MiB + 9)) -b 1048576
copy "-b 2m (lower-case suffix), -q 1000 (more than blocks)" $((5 * MiB + 777)) -b 2m -q 1000
copy "-b 8M (one block for the whole file)" $((5 * MiB + 777)) -b 8M
copy "--fsync" $((5 * MiB + 777)) --fsync
copy "--no-progress --fsync -q 4 -b 64K" $((MiB + 100)) --no-progress --fsync -q 4 -b 64K
copy "--depth/--block long options" $((MiB + 3)) --depth 3 --block 128K

# The empty file: DEST is created, empty.
: >"$dir/empty"
rm -f "$dir/dst"
run "$dir/empty" "$dir/dst"
if [ $rc -eq 0 ] && [ -f "$dir/dst" ] && [ ! -s "$dir/dst" ]; then
	pass "empty source creates an empty DEST"
else
	fail "empty source creates an empty DEST"
fi
head -c 10000 "$dir/pool" >"$dir/dst"
run --fsync "$dir/empty" "$dir/dst"
if [ $rc -eq 0 ] && [ ! -s "$dir/dst" ]; then
	pass "empty source truncates an existing DEST to 0 (with --fsync)"
else
	fail "empty source truncates an existing DEST to 0 (with --fsync)"
fi

# Overwriting a longer file leaves exactly the source (not O_TRUNC, but the
# final ftruncate).
head -c $((3 * MiB + 5)) "$dir/pool" >"$dir/src"
tail -c $((7 * MiB)) "$dir/pool" >"$dir/dst"
run "$dir/src" "$dir/dst"
if [ $rc -eq 0 ] && cmp -s "$dir/src" "$dir/dst"; then
	pass "overwrite a longer DEST: exact size and content"
else
	fail "overwrite a longer DEST: exact size and content"
fi
head -c $((3 * MiB + 5)) "$dir/pool" >"$dir/src"
head -c 100 /dev/urandom >"$dir/dst"
run "$dir/src" "$dir/dst"
if [ $rc -eq 0 ] && cmp -s "$dir/src" "$dir/dst"; then
	pass "overwrite a shorter DEST"
else
	fail "overwrite a shorter DEST"
fi

# The page cache stays out of the copy: a source written with O_DIRECT and
# its copy have no resident pages afterwards.
if command -v fincore >/dev/null 2>&1; then
	rm -f "$dir/src" "$dir/dst"
	dd if="$dir/pool" of="$dir/src" bs=1M count=4 oflag=direct 2>/dev/null
	run "$dir/src" "$dir/dst"
	res=$(fincore -b -n -o RES "$dir/src" "$dir/dst" 2>/dev/null | tr -d ' ' | sort -u)
	if [ $rc -eq 0 ] && [ "$res" = 0 ] && cmp -s "$dir/src" "$dir/dst"; then
		pass "no page cache used for SOURCE or DEST"
	else
		echo "# fincore RES: $res" | tr '\n' ' '; echo
		fail "no page cache used for SOURCE or DEST"
	fi
else
	skip "no page cache used for SOURCE or DEST" "fincore not installed"
fi

# The progress line: only on a terminal (script(1) provides one), ended by
# a newline, and never with --no-progress.
head -c $((2 * MiB + 1)) "$dir/pool" >"$dir/src"
if command -v script >/dev/null 2>&1 && script -qfc true /dev/null >/dev/null 2>&1; then
	rc=0
	script -qfc "'$kcp' -q 1 '$dir/src' '$dir/dst'" /dev/null >"$dir/err" 2>&1 || rc=$?
	if [ $rc -eq 0 ] && grep -q 'MiB/s' "$dir/err" && grep -q '100%' "$dir/err"; then
		pass "progress line on a terminal"
	else
		fail "progress line on a terminal"
	fi
	script -qfc "'$kcp' --no-progress '$dir/src' '$dir/dst'" /dev/null >"$dir/err" 2>&1 || rc=$?
	if [ $rc -eq 0 ] && [ ! -s "$dir/err" ]; then
		pass "--no-progress on a terminal prints nothing"
	else
		fail "--no-progress on a terminal prints nothing"
	fi
else
	skip "progress line on a terminal" "no script(1) from util-linux"
	skip "--no-progress on a terminal prints nothing" "no script(1) from util-linux"
fi

# ---- errors during the copy: exit 1 ----------------------------------------
rm -f "$dir/dst"
expect_exit "missing source: exit 1, names the path" 1 "$dir/no-such-file" \
	"$dir/no-such-file" "$dir/dst"
if [ -e "$dir/dst" ]; then fail "missing source does not create DEST"; else pass "missing source does not create DEST"; fi
head -c 100000 "$dir/pool" >"$dir/src"
cp "$dir/src" "$dir/src.orig"
expect_exit "same file: exit 1" 1 "same file" "$dir/src" "$dir/src"
ln "$dir/src" "$dir/src.link"
expect_exit "same file through a hard link: exit 1" 1 "same file" "$dir/src" "$dir/src.link"
expect_exit "same file through ./: exit 1" 1 "same file" "$dir/src" "$dir/./src"
if cmp -s "$dir/src" "$dir/src.orig"; then pass "same file: source left intact"; else fail "same file: source left intact"; fi
expect_exit "DEST in a missing directory: exit 1" 1 "$dir/nodir/dst" \
	"$dir/src" "$dir/nodir/dst"
mkdir "$dir/subdir"
expect_exit "a directory as SOURCE: exit 1" 1 "subdir" "$dir/subdir" "$dir/dst"
expect_exit "a directory as DEST: exit 1" 1 "subdir" "$dir/src" "$dir/subdir"
# Neither a regular file nor a block device: refused at once, by kind (a
# FIFO's open would otherwise wait for a writer for ever).
mkfifo "$dir/fifo"
expect_exit "a FIFO as SOURCE: exit 1 at once, says it is a FIFO" 1 "fifo'.* is a FIFO" \
	--no-progress "$dir/fifo" "$dir/dst"
expect_exit "a FIFO as DEST: exit 1 at once, says it is a FIFO" 1 "fifo'.* is a FIFO" \
	--no-progress "$dir/src" "$dir/fifo"
expect_exit "/dev/zero as SOURCE: exit 1, a character device" 1 "is a character device" \
	--no-progress /dev/zero "$dir/dst"

# ---- usage errors: exit 2 --------------------------------------------------
expect_exit "-b 1000 (not a multiple of 512): exit 2" 2 "block size" -b 1000 "$dir/src" "$dir/dst"
expect_exit "-b garbage: exit 2" 2 "block size" -b garbage "$dir/src" "$dir/dst"
for b in 0 4X -4K " 4096" 2G 4K4K; do
	expect_exit "-b '$b': exit 2" 2 "block size" -b "$b" "$dir/src" "$dir/dst"
done
for q in 0 abc 1K 65537 -1; do
	expect_exit "-q '$q': exit 2" 2 "depth" -q "$q" "$dir/src" "$dir/dst"
done
expect_exit "one operand: exit 2" 2 "SOURCE and DEST" "$dir/src"
expect_exit "a value for an option that takes none is called so" 2 "'--fsync' takes no value" \
	--fsync=1 "$dir/src" "$dir/dst"
# Buffers beyond half the memory (a sparse 15 TiB source, 1 GiB blocks):
# refused before DEST is created or touched, not left to the OOM killer.
rm -f "$dir/dst"
if truncate -s 15T "$dir/huge" 2>/dev/null; then
	expect_exit "-q x -b beyond half the memory: exit 2" 2 "half of this machine's memory" \
		-q 65536 -b 1G "$dir/huge" "$dir/dst"
	if [ -e "$dir/dst" ]; then fail "... and DEST is not left behind"; else pass "... and DEST is not left behind"; fi
	rm -f "$dir/huge"
else
	skip "-q x -b beyond half the memory: exit 2" "this filesystem has no 15 TiB sparse files"
	skip "... and DEST is not left behind" "this filesystem has no 15 TiB sparse files"
fi
expect_exit "unknown option: exit 2" 2 "help" --frobnicate "$dir/src" "$dir/dst"
run --help
if [ $rc -eq 0 ] && grep -q "Usage: kaio-cp" "$dir/out"; then pass "--help: usage on stdout, exit 0"; else fail "--help: usage on stdout, exit 0"; fi
run --version
if [ $rc -eq 0 ] && grep -q "^kaio-cp .*[0-9]\.[0-9]*\.[0-9]" "$dir/out"; then pass "--version"; else fail "--version"; fi

# ---- block devices (loop devices; root only) -------------------------------
# KAIO_TEST_NO_LOOP=1 (e.g. a package build) leaves the host's loop devices
# alone: these cases skip.
case ${KAIO_TEST_NO_LOOP:-0} in
0) loop_why="needs root and a loop device"; can_loop=$([ "$(id -u)" = 0 ] && echo yes) ;;
*) loop_why="KAIO_TEST_NO_LOOP is set"; can_loop= ;;
esac
# Copy onto a device with an unaligned tail: the last bytes go through a
# buffered pwrite, and the device's bytes past the copy stay untouched.
if [ -n "$can_loop" ] && command -v losetup >/dev/null 2>&1 &&
   head -c $((8 * MiB)) "$dir/pool" >"$dir/img" &&
   loop=$(losetup -f --show "$dir/img" 2>/dev/null) && [ -b "$loop" ]; then
	size=$((5 * MiB + 777))
	head -c $size /dev/urandom >"$dir/src"
	tail -c +$((size + 1)) "$dir/img" >"$dir/img.rest"
	run -b 64K "$dir/src" "$loop"
	head -c $size "$loop" >"$dir/dev.head"
	tail -c +$((size + 1)) "$loop" >"$dir/dev.rest"
	if [ $rc -eq 0 ] && cmp -s "$dir/src" "$dir/dev.head" && cmp -s "$dir/img.rest" "$dir/dev.rest"; then
		pass "file to block device, unaligned tail, rest of the device intact"
	else
		fail "file to block device, unaligned tail, rest of the device intact"
	fi
	rm -f "$dir/dst"
	run --fsync "$loop" "$dir/dst"
	if [ $rc -eq 0 ] && [ "$(wc -c <"$dir/dst")" -eq $((8 * MiB)) ] &&
	   head -c $size "$dir/dst" | cmp -s "$dir/src" - &&
	   tail -c +$((size + 1)) "$dir/dst" | cmp -s "$dir/img.rest" -; then
		pass "block device to file (size from BLKGETSIZE64)"
	else
		fail "block device to file (size from BLKGETSIZE64)"
	fi
	head -c $((9 * MiB)) "$dir/pool" >"$dir/src"
	expect_exit "source larger than the DEST device: exit 1" 1 "too small" "$dir/src" "$loop"
	expect_exit "device onto itself: exit 1" 1 "same file" "$loop" "$loop"
	losetup -d "$loop"
	loop=
else
	for t in "file to block device, unaligned tail, rest of the device intact" \
	         "block device to file (size from BLKGETSIZE64)" \
	         "source larger than the DEST device: exit 1" \
	         "device onto itself: exit 1"; do
		skip "$t" "$loop_why"
	done
fi

# A 4096-byte-sector device: a 512-byte block size is refused with the
# alignment learnt from the device.
if [ -n "$can_loop" ] &&
   loop=$(losetup -f --show --sector-size 4096 "$dir/img" 2>/dev/null) && [ -b "$loop" ]; then
	head -c 3000 "$dir/pool" >"$dir/src"
	expect_exit "-b 512 onto a 4K-sector device: exit 2, names 4096" 2 "4096" -b 512 "$dir/src" "$loop"
	losetup -d "$loop"
	loop=
else
	loop=
	skip "-b 512 onto a 4K-sector device: exit 2, names 4096" "$loop_why"
fi

tap_finish
