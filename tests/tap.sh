# tests/tap.sh - sourced by the shell tests (POSIX sh): TAP output, and a
# scratch directory on a disk filesystem.
#
#   . "$(dirname "$0")/tap.sh"
#   tap_disk_dir "$base" NAME    $dir: a new directory under $base, removed
#                                at exit (and tap_cleanup_hook run first,
#                                when the script defines it); skips the
#                                whole script (exit 77) on tmpfs or when
#                                O_DIRECT is refused
#   tap_plan N                   prints 1..N
#   tap_pass NAME / tap_fail NAME [LINE...] / tap_skip NAME WHY
#   tap_fail_file NAME FILE      tap_fail with FILE's lines as diagnostics
#   tap_finish                   exit 0 when N ran and none failed, else 1

tap_skip_all() {
	echo "1..0 # SKIP $*"
	echo "skipped: $*" >&2
	exit 77
}

tap_cleanup() {
	if command -v tap_cleanup_hook >/dev/null 2>&1; then
		tap_cleanup_hook
	fi
	[ -n "${dir:-}" ] && rm -rf "$dir"
}

tap_disk_dir() {
	dir=$(mktemp -d "$1/$2.XXXXXX") ||
		tap_skip_all "cannot create a temporary directory under $1"
	trap tap_cleanup EXIT
	trap 'exit 1' HUP INT TERM     # dash runs the EXIT trap only on exit
	# tmpfs (often /tmp) refuses O_DIRECT at open before Linux 6.6, and
	# since then accepts it but still goes through the page cache.
	case $(stat -f -c %T "$dir" 2>/dev/null) in
	tmpfs | ramfs) tap_skip_all "$dir is on tmpfs; set KAIO_TEST_DIR to a disk filesystem" ;;
	esac
	dd if=/dev/zero of="$dir/probe" bs=4096 count=1 oflag=direct 2>/dev/null ||
		tap_skip_all "$dir refuses O_DIRECT; set KAIO_TEST_DIR to a disk filesystem"
}

tap_plan() {
	tap_planned=$1
	tap_n=0
	tap_failed=0
	echo "1..$1"
}

tap_pass() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $1"
}

tap_fail() {
	tap_n=$((tap_n + 1))
	tap_failed=$((tap_failed + 1))
	echo "not ok $tap_n - $1"
	shift
	for line in "$@"; do
		echo "# $line"
	done
}

tap_fail_file() {
	tap_fail "$1"
	[ -s "$2" ] && sed 's/^/# /' "$2"
	return 0
}

tap_skip() {
	tap_n=$((tap_n + 1))
	echo "ok $tap_n - $1 # SKIP $2"
}

tap_finish() {
	if [ "$tap_n" -ne "$tap_planned" ]; then
		echo "# planned $tap_planned tests but ran $tap_n"
		exit 1
	fi
	[ "$tap_failed" -eq 0 ] || exit 1
	exit 0
}
