#!/bin/sh
# Runs every test.  Builds what is missing, then:
#   1. make check in build/ (the main configuration: hardened, optimised);
#   2. the test programs under valgrind (memcheck: errors and leaks fail);
#   3. make check in build/asan (AddressSanitizer + UBSan);
#   4. make check in build/tsan (ThreadSanitizer);
#   5. the Debian packages (scripts/build-deb.sh: dpkg-buildpackage, lintian,
#      dpkg -i, a pkg-config program and the Python package run), as root.
# Any sanitizer report fails its test.  Ends with the grand total
# "N passed, N failed, N skipped" and exits non-zero if anything failed.
# KAIO_QUICK=1 runs step 1 only.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
[ -x configure ] || ./autogen.sh >/dev/null 2>&1 || exit 1
jobs=$(nproc)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# configure_and_build DIR [configure args...]
configure_and_build() {
	dir=$1
	shift
	mkdir -p "$dir"
	(cd "$dir" && { [ -f Makefile ] || "$here/configure" -q "$@"; } &&
		make -j"$jobs" >/dev/null && make -j"$jobs" build-tests >/dev/null) ||
		{ echo "== build of $dir failed"; exit 1; }
}

status=0
# step NAME DIR MAKE-TARGET [env...]: runs it, keeps its summary line.
step() {
	name=$1 dir=$2 target=$3
	shift 3
	echo "== $name"
	(cd "$dir" && env "$@" make -s "$target") 2>&1 | tee "$logs/$name.log"
	grep -E '^[0-9]+ passed, [0-9]+ failed' "$logs/$name.log" | tail -n 1 >"$logs/$name.sum"
	[ -s "$logs/$name.sum" ] || { echo "0 passed, 1 failed, 0 skipped" >"$logs/$name.sum"; status=1; }
}

configure_and_build build
step check build check
if [ "${KAIO_QUICK:-0}" != 1 ]; then
	if command -v valgrind >/dev/null 2>&1; then
		step valgrind build check-valgrind KAIO_TEST_TIMEOUT=900
	else
		echo "== valgrind: not installed, skipped"
	fi
	configure_and_build build/asan --enable-sanitizers=address,undefined
	step asan+ubsan build/asan check KAIO_TESTS_SKIP="fuzz readme check-man" \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
	configure_and_build build/tsan --enable-sanitizers=thread
	step tsan build/tsan check KAIO_TESTS_SKIP="fuzz readme check-man" \
		TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
	# The Debian packages: build (running make check inside), lintian,
	# install, and use them (scripts/build-deb.sh); needs root for apt/dpkg.
	if [ "$(id -u)" -eq 0 ]; then
		step deb build deb KAIO_DEB_REMOVE=1
	else
		echo "== deb: not root, skipped (sudo scripts/build-deb.sh)"
	fi
fi

echo "== totals"
p=0 f=0 s=0
for sum in "$logs"/*.sum; do
	name=$(basename "$sum" .sum)
	echo "  $name: $(cat "$sum")"
	set -- $(sed 's/[^0-9 ]//g' "$sum")
	p=$((p + $1)) f=$((f + $2)) s=$((s + ${3:-0}))
done
[ "$f" -gt 0 ] && status=1
echo "$p passed, $f failed, $s skipped"
exit $status
