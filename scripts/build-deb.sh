#!/bin/sh
# Builds the Debian packages of libkaio and tries them end to end:
#
#   1. installs the tools (dpkg-dev, debhelper, lintian, a compiler) and the
#      Build-Depends of debian/control (apt-get build-dep on the source
#      tree; nothing is installed when everything is there already);
#   2. makes the upstream tarball libkaio_VERSION.orig.tar.gz from the git
#      checkout (tracked and untracked-but-not-ignored files, debian/ left
#      out; byte-for-byte the same for the same files);
#   3. unpacks it with debian/ into build/deb/libkaio-VERSION, builds the
#      source package there (dpkg-buildpackage -S: the 3.0 (quilt) .dsc,
#      which checks that orig tarball and tree agree), then runs
#      dpkg-buildpackage -us -uc -b (make check runs inside; the full log
#      is build/deb/build.log);
#   4. lintian on the two .changes (binary and source): any error or
#      warning fails (overrides, each with its reason, are in
#      debian/*.lintian-overrides and debian/source/lintian-overrides);
#   5. dpkg -i of libkaio1, libkaio-dev, kaio-tools and python3-kaio;
#   6. man pages: every kaio_* function has a page man(1) can find;
#   7. a C program built with `pkg-config --cflags --libs libkaio` writes,
#      syncs and reads back 1 MiB of an O_DIRECT file on disk through the
#      installed library (and the same, linked statically with
#      `pkg-config --static`);
#   8. /usr/bin/python3 imports kaio from python3-kaio, prints
#      kaio.version() and does an O_DIRECT write and read.
#
# Run it as root (it installs packages) on Debian 12 or later, from a
# clone; it is idempotent and writes nothing into the source tree outside
# build/.  Each step prints "== step"; the last line is
# "N passed, N failed, N skipped" over the steps above; the exit status is
# non-zero when any step failed.  Environment:
#   KAIO_DEB_DIR      where to build (default: build/deb in the clone)
#   KAIO_TEST_DIR     a disk directory for the O_DIRECT checks (default:
#                     KAIO_DEB_DIR, else /var/tmp)
#   DEB_BUILD_OPTIONS passed on (e.g. nocheck); parallel=$(nproc) is added
#   KAIO_DEB_NO_APT=1 install nothing with apt-get (missing Build-Depends
#                     then fail the build step)
#   KAIO_DEB_REMOVE=1 remove the four packages again at the end (by default
#                     they stay installed: then `pkg-config libkaio` and
#                     the loader find the packaged library system-wide)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
out=${KAIO_DEB_DIR:-$here/build/deb}
start_all=$(date +%s)
passed=0 failed=0 skipped=0

step() { echo; echo "== $*"; step_start=$(date +%s); }
pass() { passed=$((passed + 1)); echo "-- ok: $* ($(( $(date +%s) - step_start ))s)"; }
skip() { skipped=$((skipped + 1)); echo "-- skipped: $*"; }
finish() {
	if [ "${KAIO_DEB_REMOVE:-0}" = 1 ] && dpkg-query -W libkaio1 >/dev/null 2>&1; then
		echo
		echo "== removing the packages (KAIO_DEB_REMOVE=1)"
		dpkg -r python3-kaio kaio-tools libkaio-dev libkaio1 >/dev/null ||
			{ echo "-- FAILED: dpkg -r" >&2; failed=$((failed + 1)); }
	fi
	echo
	echo "== build-deb.sh: $(( $(date +%s) - start_all ))s; packages in $out"
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ] && exit 0
	exit 1
}
# fail MESSAGE: a failed step ends the run (the later steps need it).
fail() { failed=$((failed + 1)); echo "-- FAILED: $*" >&2; finish; }

if [ "$(id -u)" -ne 0 ]; then
	echo "build-deb.sh: run as root (it installs the Build-Depends and the packages)" >&2
	exit 1
fi
[ -f debian/control ] && [ -f debian/changelog ] || { echo "build-deb.sh: no debian/ in $here" >&2; exit 1; }

# Versions: debian/changelog's first line, upstream part checked against
# configure.ac's AC_INIT.
version=$(sed -n '1s/^libkaio (\([^)]*\)).*/\1/p' debian/changelog)
upstream=${version%-*}
ac_version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' configure.ac)
if [ -z "$version" ] || [ "$upstream" = "$version" ]; then
	echo "build-deb.sh: cannot read a non-native 'libkaio (UPSTREAM-REVISION)' from debian/changelog" >&2
	exit 1
fi
if [ "$upstream" != "$ac_version" ]; then
	echo "build-deb.sh: debian/changelog is at $version but configure.ac's AC_INIT says $ac_version" >&2
	exit 1
fi
srcdir=$out/libkaio-$upstream
orig=$out/libkaio_$upstream.orig.tar.gz
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }

# ---- 1. tools and Build-Depends --------------------------------------------
step "1. build tools and Build-Depends"
tools="build-essential dpkg-dev debhelper lintian git pkgconf"
missing=
for p in $tools; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	[ "${KAIO_DEB_NO_APT:-0}" = 1 ] && fail "missing:$missing (KAIO_DEB_NO_APT=1)"
	echo "installing:$missing"
	apt_get install --no-install-recommends $missing >/dev/null 2>&1 ||
		{ apt_get update >/dev/null && apt_get install --no-install-recommends $missing >/dev/null; } ||
		fail "apt-get install$missing"
fi
if unmet=$(dpkg-checkbuilddeps 2>&1); then
	echo "Build-Depends: all installed"
else
	[ "${KAIO_DEB_NO_APT:-0}" = 1 ] && fail "$unmet (KAIO_DEB_NO_APT=1)"
	echo "$unmet"
	echo "apt-get build-dep $here"
	apt_get build-dep --no-install-recommends "$here" >/dev/null 2>&1 ||
		{ apt_get update >/dev/null && apt_get build-dep --no-install-recommends "$here"; } ||
		fail "apt-get build-dep"
	dpkg-checkbuilddeps || fail "Build-Depends still unmet after apt-get build-dep"
fi
pass "tools and Build-Depends installed"

# ---- 2. the upstream tarball -------------------------------------------------
step "2. upstream tarball $(basename "$orig")"
mkdir -p "$out" || fail "mkdir $out"
list=$out/.files
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# What git would commit now: a clean clone gives exactly HEAD.
	git -C "$here" ls-files -z --cached --others --exclude-standard -- \
		':(exclude)debian' ':(exclude).pybuild' ':(exclude)build' >"$list.z" ||
		fail "git ls-files"
	tr '\0' '\n' <"$list.z" | while read -r f; do [ -f "$f" ] && printf '%s\0' "$f"; done >"$list"
	mtime=$(git -C "$here" log -1 --format=%ct 2>/dev/null || date +%s)
	rm -f "$list.z"
else
	# Not a git checkout (an unpacked tarball): everything but debian/ and
	# what builds leave.
	find . -path ./debian -prune -o -path ./build -prune -o -path ./.git -prune \
		-o -path ./autom4te.cache -prune -o -type f -print0 | sed -z 's,^\./,,' >"$list"
	mtime=$(stat -c %Y configure.ac)
fi
tar --null -T "$list" --sort=name --mtime="@$mtime" --owner=0 --group=0 --numeric-owner \
	--mode='u+rw,go+r,go-w' --format=gnu --transform "s,^,libkaio-$upstream/," -cf - |
	gzip -n -9 >"$orig.tmp" || fail "tar $orig"
nfiles=$(tr -cd '\0' <"$list" | wc -c)
[ "$nfiles" -gt 0 ] && [ "$(tar -tzf "$orig.tmp" | grep -vc '/$')" -eq "$nfiles" ] ||
	fail "$orig.tmp does not hold the $nfiles files listed"
mv "$orig.tmp" "$orig" || fail "mv $orig"
rm -f "$list"
echo "$(tar -tzf "$orig" | grep -vc '/$') files, $(du -k "$orig" | cut -f1) KiB, sha256 $(sha256sum "$orig" | cut -c1-16)..."
pass "$orig"

# ---- 3. dpkg-buildpackage ------------------------------------------------------
step "3. dpkg-buildpackage -us -uc -b in $srcdir"
rm -rf "$srcdir" || fail "rm -rf $srcdir"
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out"/*.dsc "$out"/*.debian.tar.* \
	"$out"/build.log "$out"/source.log "$out"/lintian.log
tar -C "$out" -xzf "$orig" || fail "untar $orig"
# debian/ as git sees it (not a build someone left in it by hand)
if git -C "$here" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$here" ls-files -z --cached --others --exclude-standard -- debian |
		tar -C "$here" --null -T - -cf - | tar -C "$srcdir" -xf - || fail "copy debian/"
else
	cp -a debian "$srcdir/" || fail "copy debian/"
fi
opts="parallel=$(nproc)${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}"
# A build environment, not the caller's: system PATH (no pyenv, no
# /usr/local), no stray compiler or loader variables.
in_build_env() {
	(cd "$srcdir" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
		LANG=C.UTF-8 TERM=dumb DEB_BUILD_OPTIONS="$opts" \
		${DEB_BUILD_PROFILES:+DEB_BUILD_PROFILES="$DEB_BUILD_PROFILES"} \
		${KAIO_TEST_DIR:+KAIO_TEST_DIR="$KAIO_TEST_DIR"} \
		${KAIO_TEST_TIMEOUT:+KAIO_TEST_TIMEOUT="$KAIO_TEST_TIMEOUT"} \
		"$@")
}
echo "dpkg-buildpackage -S -us -uc (the source package; log: $out/source.log)"
if ! in_build_env dpkg-buildpackage -S -us -uc >"$out/source.log" 2>&1; then
	tail -n 30 "$out/source.log"
	fail "dpkg-buildpackage -S"
fi
echo "dpkg-buildpackage -us -uc -b, DEB_BUILD_OPTIONS=\"$opts\" (log: $out/build.log)"
in_build_env dpkg-buildpackage -us -uc -b >"$out/build.log" 2>&1
rc=$?
# make check's per-test lines and total
grep -E '^(PASS|FAIL|SKIP): |^  [A-Za-z ].*skipped|^[0-9]+ passed, [0-9]+ failed|^failed:|^TIMEOUT' "$out/build.log" | sed 's/^/  /'
if [ $rc -ne 0 ]; then
	echo "---- $out/build.log (last 60 lines) ----"
	tail -n 60 "$out/build.log"
	echo "----"
	fail "dpkg-buildpackage exited $rc"
fi
arch=$(dpkg --print-architecture)
changes=$out/libkaio_${version}_$arch.changes
source_changes=$out/libkaio_${version}_source.changes
[ -f "$changes" ] || fail "no $changes"
[ -f "$source_changes" ] || fail "no $source_changes"
ls -l "$out"/*.deb "$out"/*.dsc "$out"/*.debian.tar.* | awk '{print "  " $5 "\t" $NF}'
pass "dpkg-buildpackage (source and binary)"

# ---- 4. lintian -------------------------------------------------------------------
step "4. lintian --fail-on error,warning $(basename "$changes") $(basename "$source_changes")"
# Not as root when it can be helped (lintian warns about it).
as_user=
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null 2>&1 &&
	setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups test -r "$changes" 2>/dev/null; then
	as_user="setpriv --reuid=nobody --regid=$(id -g nobody) --clear-groups env HOME=/tmp"
fi
$as_user lintian --fail-on error,warning --display-info --pedantic "$changes" "$source_changes" \
	>"$out/lintian.log" 2>&1
rc=$?
# (lintian's "running with root privileges is not recommended!" is noise
# here: the build tree is not readable by nobody, e.g. under /root.)
sed -i '/^running with root privileges is not recommended!$/d' "$out/lintian.log"
if [ -s "$out/lintian.log" ]; then
	sed 's/^/  /' "$out/lintian.log"
else
	echo "  (lintian printed nothing: no tag at any level, pedantic included)"
fi
[ $rc -eq 0 ] || fail "lintian exited $rc (errors or warnings above)"
echo "  overridden, each with its reason in the override file:"
for f in debian/*.lintian-overrides debian/source/lintian-overrides; do
	[ -f "$f" ] && grep -v '^#' "$f" | grep . | sed "s|^|    $f: |"
done
pass "lintian: no error, no warning"

# ---- 5. dpkg -i ------------------------------------------------------------------
step "5. dpkg -i"
debs=
for p in libkaio1 libkaio-dev kaio-tools; do
	debs="$debs $out/${p}_${version}_$arch.deb"
done
debs="$debs $out/python3-kaio_${version}_all.deb"
# shellcheck disable=SC2086
dpkg -i $debs || fail "dpkg -i"
for p in libkaio1 libkaio-dev kaio-tools python3-kaio; do
	s=$(dpkg-query -W -f='${Status} ${Version}' "$p" 2>/dev/null)
	[ "$s" = "install ok installed $version" ] || fail "$p: '$s', not 'install ok installed $version'"
done
command -v kaio-cp >/dev/null && kaio-cp --help >/dev/null 2>&1 || fail "kaio-cp --help"
command -v kaio-bench >/dev/null && kaio-bench --help >/dev/null 2>&1 || fail "kaio-bench --help"
pass "libkaio1 libkaio-dev kaio-tools python3-kaio $version installed; kaio-cp and kaio-bench run"

# ---- 6. man pages --------------------------------------------------------------
step "6. man pages"
mandir=/usr/share/man
if [ ! -f "$mandir/man7/kaio.7.gz" ]; then
	# e.g. a container image whose dpkg excludes /usr/share/man
	skip "$mandir/man7/kaio.7.gz not on disk (dpkg path-exclude?)"
else
	bad=
	for sym in $(sed -n 's/^ \(kaio_[a-z_]*\)@.*/\1/p' debian/libkaio1.symbols); do
		page=$mandir/man3/$sym.3.gz
		# a page, or a symlink to one (dh_installman turns .so links into symlinks)
		real=$(readlink -f "$page" 2>/dev/null)
		if [ ! -f "$real" ] || zcat "$real" | head -n 1 | grep -q '^\.so '; then
			bad="$bad $sym"
		elif command -v man >/dev/null 2>&1 &&
			! MANWIDTH=80 man 3 "$sym" 2>/dev/null | grep -qw "$sym"; then
			bad="$bad $sym(man)"
		fi
	done
	for pg in man1/kaio-cp.1.gz man1/kaio-bench.1.gz man7/kaio.7.gz; do
		[ -f "$mandir/$pg" ] || bad="$bad $pg"
	done
	[ -z "$bad" ] || fail "man pages missing or broken:$bad"
	links=$(find "$mandir/man3" -name 'kaio_*.3.gz' -type l | wc -l)
	pass "a man3 page for every symbol ($links of them symlinks), kaio(7), kaio-cp(1), kaio-bench(1)"
fi

# A directory on disk that accepts O_DIRECT, for steps 7 and 8.
dio_dir=
for d in ${KAIO_TEST_DIR:-} "$out" /var/tmp; do
	[ -d "$d" ] || continue
	if dd if=/dev/zero of="$d/.kaio-dio-probe" bs=4096 count=1 oflag=direct 2>/dev/null; then
		rm -f "$d/.kaio-dio-probe"
		case $(stat -f -c %T "$d") in tmpfs | ramfs) continue ;; esac
		dio_dir=$d
		break
	fi
	rm -f "$d/.kaio-dio-probe"
done
work=$(mktemp -d "${dio_dir:-/tmp}/kaio-deb-check.XXXXXX") || fail "mktemp"
trap 'rm -rf "$work"' EXIT

# ---- 7. a C program against the installed library --------------------------------
step "7. C program built with pkg-config --cflags --libs libkaio"
cat >"$work/roundtrip.c" <<'EOF'
/* Writes 1 MiB (a pattern) to an O_DIRECT file with kaio_write, syncs it
 * with kaio_sync, reads it back with kaio_read into a second buffer and
 * compares; prints the library version.  Exit 0 on success. */
#define _GNU_SOURCE
#include <kaio.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LEN (1u << 20)

static int run(kaio_ctx *ctx, int fd, kaio_buf *buf, int (*op)(kaio_ctx *, int, uint64_t,
               kaio_buf *, size_t, size_t, kaio_cb, uint64_t), const char *what)
{
	struct kaio_event ev;
	int rc = op(ctx, fd, 0, buf, 0, LEN, NULL, 0);

	memset(&ev, 0, sizeof ev);
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", what, kaio_last_error());
		return -1;
	}
	if (kaio_wait(ctx, &ev, 1, 1, -1) != 1 || ev.res != (int64_t)LEN) {
		fprintf(stderr, "%s: completion %lld, expected %u\n", what, (long long)ev.res, LEN);
		return -1;
	}
	kaio_buf_unref(ev.buf);
	return 0;
}

int main(int argc, char **argv)
{
	kaio_ctx *ctx;
	kaio_buf *out, *in;
	struct kaio_event ev;
	int fd, rc = 1;

	if (argc != 2)
		return 2;
	fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0644);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	if (kaio_ctx_create(&ctx, 8, 0) < 0 || kaio_buf_alloc(&out, LEN, 0) < 0 ||
	    kaio_buf_alloc(&in, LEN, 0) < 0) {
		fprintf(stderr, "setup: %s\n", kaio_last_error());
		return 1;
	}
	for (size_t i = 0; i < LEN; i++)
		((unsigned char *)kaio_buf_data(out))[i] = (unsigned char)(i * 7 + i / 4096);
	if (run(ctx, fd, out, kaio_write, "kaio_write") < 0)
		goto done;
	if (kaio_sync(ctx, fd, KAIO_SYNC_DATA, NULL, 0) < 0 || kaio_wait(ctx, &ev, 1, 1, -1) != 1 ||
	    ev.res != 0) {
		fprintf(stderr, "kaio_sync: %s\n", kaio_last_error());
		goto done;
	}
	if (run(ctx, fd, in, kaio_read, "kaio_read") < 0)
		goto done;
	if (memcmp(kaio_buf_data(out), kaio_buf_data(in), LEN) != 0) {
		fprintf(stderr, "read back differs from what was written\n");
		goto done;
	}
	printf("libkaio %s: 1 MiB written, synced and read back with O_DIRECT\n", kaio_version());
	rc = 0;
done:
	kaio_buf_unref(out);
	kaio_buf_unref(in);
	if (kaio_ctx_destroy(ctx) < 0)
		rc = 1;
	close(fd);
	return rc;
}
EOF
# the plain system environment: nothing but the installed package is found
syscc() { env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
flags=$(syscc pkg-config --cflags --libs libkaio) || fail "pkg-config --cflags --libs libkaio"
echo "  pkg-config --cflags --libs libkaio: $flags"
syscc cc -std=c99 -Wall -Wextra -Werror -o "$work/roundtrip" "$work/roundtrip.c" $flags ||
	fail "cc roundtrip.c \$(pkg-config --cflags --libs libkaio)"
resolved=$(syscc ldd "$work/roundtrip" | awk '$1 == "libkaio.so.1" {print $3}')
echo "  libkaio.so.1 => $resolved"
case $resolved in
/usr/lib/*/libkaio.so.1 | /lib/*/libkaio.so.1) ;;
*) fail "the program does not load the installed libkaio.so.1 (ldd: '$resolved')" ;;
esac
if [ -z "$dio_dir" ]; then
	skip "no directory here accepts O_DIRECT (set KAIO_TEST_DIR to a disk filesystem)"
else
	syscc "$work/roundtrip" "$work/data.bin" | sed 's/^/  /'
	[ "$(stat -c %s "$work/data.bin")" -eq 1048576 ] || fail "roundtrip on $work/data.bin"
	# The static library, with what pkg-config --static adds (libaio, libstdc++).
	sflags=$(syscc pkg-config --static --libs libkaio) || fail "pkg-config --static"
	echo "  static: cc ... -Wl,-Bstatic $sflags -Wl,-Bdynamic"
	syscc cc -std=c99 -Wall -Wextra -Werror -o "$work/roundtrip-static" "$work/roundtrip.c" \
		$(syscc pkg-config --cflags libkaio) -Wl,-Bstatic $sflags -Wl,-Bdynamic ||
		fail "static link against libkaio.a"
	syscc ldd "$work/roundtrip-static" | grep -q libkaio && fail "the static program still loads libkaio.so"
	syscc "$work/roundtrip-static" "$work/data2.bin" | sed 's/^/  /' ||
		fail "the statically linked program"
	[ "$(stat -c %s "$work/data2.bin")" -eq 1048576 ] || fail "static roundtrip on $work/data2.bin"
	pass "C program (shared and static) ran on $dio_dir ($(stat -f -c %T "$dio_dir"))"
fi

# ---- 8. the Python binding ---------------------------------------------------------
step "8. python3-kaio"
cat >"$work/check.py" <<'EOF'
import os
import sys

import kaio

print("  kaio %s from %s, library %s (%s)" % (
    kaio.version(), os.path.dirname(kaio.__file__), kaio.library_path(),
    os.path.realpath(kaio.library_path()) if os.path.isabs(kaio.library_path()) else "soname"))
if not kaio.__file__.startswith("/usr/lib/python3/dist-packages/"):
    sys.exit("kaio was not imported from python3-kaio: %s" % kaio.__file__)
if len(sys.argv) > 1:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    with kaio.Context(capacity=8) as ctx:
        buf = kaio.Buffer(65536)
        buf[:] = bytes(range(256)) * 256
        assert ctx.write(fd, buf, 0) == 65536
        ctx.fdatasync(fd)
        back = kaio.Buffer(65536)
        assert ctx.read(fd, back, 0) == 65536
        assert bytes(back) == bytes(buf)
    os.close(fd)
    print("  64 KiB written, synced and read back with O_DIRECT")
EOF
# Debian's interpreter, from a neutral directory, with no KAIO_LIBRARY or
# PYTHONPATH: only the installed packages can answer.
syscc sh -c "cd / && /usr/bin/python3 -c 'import kaio; print(kaio.version())'" >"$work/version" 2>&1 ||
	{ cat "$work/version"; fail "python3 -c 'import kaio; print(kaio.version())'"; }
echo "  python3 -c 'import kaio; print(kaio.version())': $(cat "$work/version")"
[ "$(cat "$work/version")" = "$upstream" ] || fail "kaio.version() is '$(cat "$work/version")', expected $upstream"
syscc sh -c "cd / && /usr/bin/python3 '$work/check.py' ${dio_dir:+'$work/py.bin'}" ||
	fail "python3-kaio check"
pass "python3-kaio imports and runs${dio_dir:+ O_DIRECT I/O}"

finish
