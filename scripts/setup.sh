#!/bin/sh
# One command on a fresh Debian machine: install the build dependencies,
# build libkaio out of tree in build/, and run the main job: copy a
# generated file with kaio-cp (O_DIRECT, asynchronous pipeline) and verify
# the copy with cmp.
#   scripts/setup.sh            # 256 MiB demo file
#   KAIO_DEMO_MIB=1024 scripts/setup.sh
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
# build and tests (abigail-tools: the ABI check; mandoc: the man pages); the bindings (python3, golang-go); the benchmark (fio,
# linux-perf or strace, gnuplot-nox)
packages="build-essential g++ pkgconf autoconf automake libtool libaio-dev libcmocka-dev
	valgrind clang libclang-rt-14-dev devscripts abigail-tools mandoc python3 python3-venv python3-pip golang-go fio linux-perf strace gnuplot-nox"
missing=
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "== installing:$missing"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "== building into build/"
./autogen.sh >/dev/null 2>&1 || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure -q
make -j"$(nproc)" >/dev/null

echo "== main job: kaio-cp of a generated file"
mib=${KAIO_DEMO_MIB:-256}
work=$(mktemp -d "$here/build/demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Not a multiple of the block size: the unaligned tail is part of the job.
head -c $((mib * 1048576 + 12345)) /dev/urandom >"$work/source"
./tools/kaio-cp --no-progress "$work/source" "$work/copy"
cmp "$work/source" "$work/copy"
echo "== kaio-cp copied $mib MiB + 12345 bytes; cmp: identical"
