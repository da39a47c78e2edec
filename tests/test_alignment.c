/* Integration tests: direct-I/O alignment learnt per fd and enforced with a
 * specific message (API.md "Operations", "Alignment helper", and the
 * per-context fd cache of "Context"). */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

/* ---- helpers -------------------------------------------------------------- */

/* Does s contain the decimal number n as a whole token? */
static int has_number(const char *s, unsigned long n)
{
	char num[32];
	snprintf(num, sizeof num, "%lu", n);
	size_t l = strlen(num);
	for (const char *p = strstr(s, num); p; p = strstr(p + 1, num)) {
		int before_ok = p == s || !isalnum((unsigned char)p[-1]);
		int after_ok = !isalnum((unsigned char)p[l]);
		if (before_ok && after_ok)
			return 1;
	}
	return 0;
}

static int has_word(const char *s, const char *w)
{
	return strstr(s, w) != NULL;
}

/* The refusal just made must be -EINVAL with an alignment message naming `align` (and ideally the fd). */
static void check_align_refusal(int rc, uint32_t align, int fd, const char *what, int line)
{
	kt_check_refused(rc, EINVAL, 0, what, line);
	const char *m = kaio_last_error();
	if (!has_word(m, "aligned"))
		fail_msg("line %d: %s: message lacks the word \"aligned\": \"%s\"", line, what, m);
	if (!has_number(m, align))
		fail_msg("line %d: %s: message lacks the alignment %u: \"%s\"", line, what, align, m);
	if (!has_number(m, (unsigned long)fd))
		print_message("note: line %d: %s: message does not name fd %d: \"%s\"\n", line, what, fd, m);
}
#define ALIGN_REFUSED(align, fd, expr) do { kt_set_marker(); int rc_ = (expr); \
	check_align_refusal(rc_, (align), (fd), #expr, __LINE__); } while (0)

static void wait_one(kaio_ctx *ctx, struct kaio_event *ev)
{
	memset(ev, 0xff, sizeof *ev);
	kt_wait_n(ctx, ev, 1);
}

static int is_pow2(uint32_t v)
{
	return v && !(v & (v - 1));
}

/* What statx(STATX_DIOALIGN) reports for fd, if anything. */
static int statx_dio(int fd, uint32_t *mem, uint32_t *off)
{
	struct statx stx;
	memset(&stx, 0, sizeof stx);
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0)
		return -1;
	if (!(stx.stx_mask & STATX_DIOALIGN) || !stx.stx_dio_offset_align)
		return -1;
	*mem = stx.stx_dio_mem_align;
	*off = stx.stx_dio_offset_align;
	return 0;
}

/* ---- kaio_fd_alignment ------------------------------------------------------- */

/* kaio_fd_alignment on an O_DIRECT file reports nonzero powers of two (statx STATX_DIOALIGN where reported). */
static void test_fd_alignment_odirect(void **state)
{
	int fd = kt_make_file("al.dat", 65536, O_RDWR | O_DIRECT);
	uint32_t mem = 0xdeadbeef, off = 0xdeadbeef, smem, soff;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	if (!is_pow2(mem) || !is_pow2(off))
		fail_msg("kaio_fd_alignment = %u/%u: not nonzero powers of two", mem, off);
	if (statx_dio(fd, &smem, &soff) == 0) {
		if (mem != smem || off != soff)
			fail_msg("kaio_fd_alignment = %u/%u but statx STATX_DIOALIGN reports %u/%u", mem, off,
				 smem, soff);
	}
	print_message("direct-I/O alignment here: memory %u, offset %u\n", mem, off);
	/* A read-only O_DIRECT fd reports the same. */
	int ro = open(kt_path("al.dat"), O_RDONLY | O_DIRECT);
	assert_true(ro >= 0);
	uint32_t mem2 = 0, off2 = 0;
	ACCEPTED(kaio_fd_alignment(ro, &mem2, &off2));
	assert_int_equal(mem2, mem);
	assert_int_equal(off2, off);
	close(ro);
	close(fd);
}

/* kaio_fd_alignment on an fd without O_DIRECT reports 0/0. */
static void test_fd_alignment_buffered(void **state)
{
	int fd = kt_make_file("alb.dat", 4096, O_RDWR);
	uint32_t mem = 0xdeadbeef, off = 0xdeadbeef;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	assert_int_equal(mem, 0);
	assert_int_equal(off, 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	mem = off = 7;
	ACCEPTED(kaio_fd_alignment(p[0], &mem, &off));
	assert_int_equal(mem, 0);
	assert_int_equal(off, 0);
	close(p[0]);
	close(p[1]);
	close(fd);
}

/* kaio_fd_alignment on a negative or closed fd -> -EBADF. */
static void test_fd_alignment_badfd(void **state)
{
	uint32_t mem = 1, off = 1;
	REFUSED(EBADF, kaio_fd_alignment(-1, &mem, &off));
	REFUSED(EBADF, kaio_fd_alignment(INT_MIN, &mem, &off));
	int fd = kt_open("alc.dat", O_RDWR | O_DIRECT);
	close(fd);
	REFUSED(EBADF, kaio_fd_alignment(fd, &mem, &off));
	/* The sentence names the function and the fd, like every other one. */
	char want[96];
	snprintf(want, sizeof want, "kaio_fd_alignment: fd %d is not an open file descriptor", fd);
	assert_string_equal(kaio_last_error(), want);
	REFUSED(EBADF, kaio_fd_alignment(fd, NULL, NULL));
}

/* kaio_fd_alignment: either out-pointer may be NULL. */
static void test_fd_alignment_null_out(void **state)
{
	int fd = kt_make_file("aln.dat", 4096, O_RDWR | O_DIRECT);
	uint32_t mem = 0, off = 0, m2 = 0, o2 = 0;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	ACCEPTED(kaio_fd_alignment(fd, NULL, NULL));
	ACCEPTED(kaio_fd_alignment(fd, &m2, NULL));
	assert_int_equal(m2, mem);
	ACCEPTED(kaio_fd_alignment(fd, NULL, &o2));
	assert_int_equal(o2, off);
	close(fd);
}

/* ---- enforcement --------------------------------------------------------------- */

/* Misaligned buffer address, file offset or length -> -EINVAL, message with "aligned" and the alignment number. */
static void test_misaligned_rw(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("mis.dat", 65536, O_RDWR | O_DIRECT);
	uint32_t mem, off;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	assert_true(mem > 1 && off > 1);
	kaio_buf *b = kt_buf(65536);

	ALIGN_REFUSED(mem, fd, kaio_read(ctx, fd, 0, b, 1, off, NULL, 1));
	ALIGN_REFUSED(mem, fd, kaio_write(ctx, fd, 0, b, mem / 2, off, NULL, 1));
	ALIGN_REFUSED(off, fd, kaio_read(ctx, fd, 100, b, 0, off, NULL, 1));
	ALIGN_REFUSED(off, fd, kaio_write(ctx, fd, off + off / 2, b, 0, off, NULL, 1));
	ALIGN_REFUSED(off, fd, kaio_read(ctx, fd, 0, b, 0, 100, NULL, 1));
	ALIGN_REFUSED(off, fd, kaio_write(ctx, fd, 0, b, 0, off + 1, NULL, 1));

	struct kaio_op op;
	memset(&op, 0, sizeof op);
	op.op = KAIO_OP_READ;
	op.fd = fd;
	op.buf = b;
	op.len = off;
	op.buf_offset = 1;
	ALIGN_REFUSED(mem, fd, kaio_submit(ctx, &op, 1));
	op.buf_offset = 0;
	op.offset = 100;
	ALIGN_REFUSED(off, fd, kaio_submit(ctx, &op, 1));
	op.offset = 0;
	op.len = 100;
	op.op = KAIO_OP_WRITE;
	ALIGN_REFUSED(off, fd, kaio_submit(ctx, &op, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	/* The aligned version of the same request is accepted. */
	ACCEPTED(kaio_read(ctx, fd, off, b, mem, off, NULL, 2));
	struct kaio_event ev;
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, off);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + mem, off, off), 0);
	kaio_buf_unref(ev.buf);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* A misaligned segment in READV/WRITEV -> -EINVAL with the alignment message. */
static void test_misaligned_vec(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("misv.dat", 65536, O_RDWR | O_DIRECT);
	uint32_t mem, off;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	kaio_buf *a = kt_buf(16384), *b = kt_buf(16384);

	struct kaio_vec v[3] = { { a, 0, off }, { b, 1, off }, { a, off, off } };
	ALIGN_REFUSED(mem, fd, kaio_readv(ctx, fd, 0, v, 3, NULL, 1));
	ALIGN_REFUSED(mem, fd, kaio_writev(ctx, fd, 0, v, 3, NULL, 1));
	v[1].offset = 0;
	v[1].len = 100; /* total no longer a multiple of the alignment */
	ALIGN_REFUSED(off, fd, kaio_readv(ctx, fd, 0, v, 3, NULL, 1));
	ALIGN_REFUSED(off, fd, kaio_writev(ctx, fd, 0, v, 3, NULL, 1));
	v[1].len = off;
	ALIGN_REFUSED(off, fd, kaio_readv(ctx, fd, 100, v, 3, NULL, 1));
	struct kaio_op op;
	memset(&op, 0, sizeof op);
	op.op = KAIO_OP_READV;
	op.fd = fd;
	op.vec = v;
	op.nvec = 3;
	v[2].offset = 3;
	ALIGN_REFUSED(mem, fd, kaio_submit(ctx, &op, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	v[2].offset = off;
	ACCEPTED(kaio_readv(ctx, fd, 0, v, 3, NULL, 2));
	struct kaio_event ev;
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 3 * off);
	assert_int_equal(kt_check(kaio_buf_data(a), off, 0), 0);
	assert_int_equal(kt_check(kaio_buf_data(b), off, off), 0);
	assert_int_equal(kt_check((char *)kaio_buf_data(a) + off, off, 2 * off), 0);

	kaio_buf_unref(a);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* Without KAIO_CTX_ALLOW_BUFFERED an fd opened without O_DIRECT is refused with -EINVAL and a message naming O_DIRECT. */
static void test_buffered_fd_refused(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("buf.dat", 65536, O_RDWR);
	kaio_buf *b = kt_buf(8192);
	struct kaio_vec v[1] = { { b, 0, 4096 } };
	struct kaio_op op;
	memset(&op, 0, sizeof op);
	op.op = KAIO_OP_WRITE;
	op.fd = fd;
	op.buf = b;
	op.len = 4096;

	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 1));
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("the refusal does not name O_DIRECT: \"%s\"", kaio_last_error());
	REFUSED(EINVAL, kaio_write(ctx, fd, 0, b, 0, 4096, NULL, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	REFUSED(EINVAL, kaio_readv(ctx, fd, 0, v, 1, NULL, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	REFUSED(EINVAL, kaio_writev(ctx, fd, 0, v, 1, NULL, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	/* asked again (the refusal is re-learnt, still refused) */
	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* With KAIO_CTX_ALLOW_BUFFERED, unaligned I/O on a buffered fd works (alignment is enforced only on O_DIRECT fds). */
static void test_allow_buffered_unaligned(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, KAIO_CTX_ALLOW_BUFFERED);
	int fd = kt_make_file("bufok.dat", 65536, O_RDWR);
	kaio_buf *b = kt_buf(8192);
	struct kaio_event ev;

	ACCEPTED(kaio_read(ctx, fd, 100, b, 1, 100, NULL, 1));
	wait_one(ctx, &ev);
	assert_int_equal(ev.user_data, 1);
	assert_int_equal(ev.res, 100);
	assert_int_equal(ev.offset, 100);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 1, 100, 100), 0);
	kaio_buf_unref(ev.buf);

	/* An unaligned write into a zero-filled buffered file, checked with pread. */
	int zfd = kt_open("bufz.dat", O_RDWR);
	assert_int_equal(ftruncate(zfd, 8192), 0);
	kt_fill((char *)kaio_buf_data(b) + 3, 333, 1000);
	ACCEPTED(kaio_write(ctx, zfd, 1000, b, 3, 333, NULL, 2));
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 333);
	kaio_buf_unref(ev.buf);
	char chk[2000];
	assert_int_equal(pread(zfd, chk, sizeof chk, 0), (ssize_t)sizeof chk);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(chk[i], 0);
	assert_int_equal(kt_check(chk + 1000, 333, 1000), 0);
	for (int i = 1333; i < 2000; i++)
		assert_int_equal(chk[i], 0);

	/* Unaligned READV on the buffered fd. */
	struct kaio_vec v[2] = { { b, 7, 10 }, { b, 4001, 33 } };
	ACCEPTED(kaio_readv(ctx, fd, 3, v, 2, NULL, 3));
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 43);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 7, 10, 3), 0);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 4001, 33, 13), 0);

	/* The same context still enforces alignment on an O_DIRECT fd. */
	int dfd = kt_make_file("bufd.dat", 65536, O_RDWR | O_DIRECT);
	uint32_t mem, off;
	ACCEPTED(kaio_fd_alignment(dfd, &mem, &off));
	ALIGN_REFUSED(off, dfd, kaio_read(ctx, dfd, 100, b, 0, 4096, NULL, 4));
	ALIGN_REFUSED(mem, dfd, kaio_read(ctx, dfd, 0, b, 1, 4096, NULL, 4));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
	close(zfd);
	close(dfd);
}

/* ---- a 4096-byte-sector loop device ------------------------------------------- */

static char loop_dev[64];

static int loop_teardown(void **state)
{
	if (loop_dev[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "losetup -d %s 2>/dev/null", loop_dev);
		if (system(cmd) != 0)
			fprintf(stderr, "could not detach %s\n", loop_dev);
		loop_dev[0] = 0;
	}
	return 0;
}

/* Alignment is learnt per device: a loop device with 4096-byte logical sectors enforces 4096 (offset 512 refused). */
static void test_loop_4096(void **state)
{
	if (geteuid() != 0) {
		print_message("skipping: not root, cannot set up a loop device\n");
		skip();
	}
	if (kt_no_loop()) {
		print_message("skipping: KAIO_TEST_NO_LOOP is set (no loop devices)\n");
		skip();
	}
	const char *img = kt_path("loop4k.img");
	int ifd = open(img, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(ifd >= 0);
	{
		/* pattern-fill 1 MiB */
		char *chunk = malloc(65536);
		for (unsigned o = 0; o < (1u << 20); o += 65536) {
			kt_fill(chunk, 65536, o);
			assert_int_equal(pwrite(ifd, chunk, 65536, o), 65536);
		}
		free(chunk);
	}
	assert_int_equal(fsync(ifd), 0);
	close(ifd);

	char cmd[4300];
	snprintf(cmd, sizeof cmd, "losetup -f --show --direct-io=on --sector-size 4096 '%s' 2>&1", img);
	FILE *p = popen(cmd, "r");
	if (!p) {
		print_message("skipping: popen(losetup) failed\n");
		skip();
	}
	char out[256] = "";
	if (!fgets(out, sizeof out, p))
		out[0] = 0;
	int st = pclose(p);
	out[strcspn(out, "\n")] = 0;
	if (st != 0 || strncmp(out, "/dev/loop", 9) != 0) {
		print_message("skipping: losetup cannot create a 4096-byte-sector loop device here: %s\n", out);
		skip();
	}
	snprintf(loop_dev, sizeof loop_dev, "%s", out);

	int fd = open(loop_dev, O_RDWR | O_DIRECT);
	if (fd < 0) {
		print_message("skipping: cannot open %s with O_DIRECT: %s\n", loop_dev, strerror(errno));
		skip();
	}
	uint32_t mem = 0, off = 0;
	ACCEPTED(kaio_fd_alignment(fd, &mem, &off));
	print_message("%s: kaio_fd_alignment = %u/%u\n", loop_dev, mem, off);
	if (off != 4096)
		fail_msg("4096-byte-sector loop device: offset alignment %u, expected 4096", off);
	if (!is_pow2(mem) || mem > 4096)
		fail_msg("4096-byte-sector loop device: memory alignment %u", mem);

	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(16384);
	ALIGN_REFUSED(4096, fd, kaio_read(ctx, fd, 512, b, 0, 4096, NULL, 1));
	ALIGN_REFUSED(4096, fd, kaio_read(ctx, fd, 0, b, 0, 512, NULL, 1));
	ALIGN_REFUSED(4096, fd, kaio_write(ctx, fd, 2048, b, 0, 4096, NULL, 1));
	struct kaio_vec v[2] = { { b, 0, 2048 }, { b, 8192, 1024 } };
	ALIGN_REFUSED(4096, fd, kaio_readv(ctx, fd, 0, v, 2, NULL, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	ACCEPTED(kaio_read(ctx, fd, 4096, b, 0, 4096, NULL, 2));
	struct kaio_event ev;
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 4096);
	assert_int_equal(kt_check(kaio_buf_data(b), 4096, 4096), 0);
	kaio_buf_unref(ev.buf);
	if (mem < 4096) {
		/* memory needs only `mem` alignment */
		ACCEPTED(kaio_read(ctx, fd, 8192, b, mem, 4096, NULL, 3));
		wait_one(ctx, &ev);
		assert_int_equal(ev.res, 4096);
		assert_int_equal(kt_check((char *)kaio_buf_data(b) + mem, 4096, 8192), 0);
		kaio_buf_unref(ev.buf);
	}
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ---- the per-context fd cache ------------------------------------------------- */

/* A cached answer is never trusted for a refusal: after F_SETFL adds O_DIRECT to an fd first seen without it, I/O is accepted without kaio_ctx_forget_fd. */
static void test_cache_relearn_before_refusal(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("setfl.dat", 65536, O_RDWR);
	kaio_buf *b = kt_buf(8192);
	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 1));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	int fl = fcntl(fd, F_GETFL);
	assert_true(fl >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_DIRECT), 0);
	assert_true(fcntl(fd, F_GETFL) & O_DIRECT);
	ACCEPTED(kaio_read(ctx, fd, 4096, b, 0, 4096, NULL, 2));
	struct kaio_event ev;
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 4096);
	assert_int_equal(kt_check(kaio_buf_data(b), 4096, 4096), 0);
	kaio_buf_unref(ev.buf);

	/* The other direction, under ALLOW_BUFFERED: the fd is learnt as
	 * O_DIRECT with its alignment, then F_SETFL removes O_DIRECT; an
	 * unaligned request must not be refused on the strength of the stale
	 * cached alignment. */
	kaio_ctx *bctx = kt_ctx(4, KAIO_CTX_ALLOW_BUFFERED);
	int fd2 = kt_make_file("setfl2.dat", 65536, O_RDWR | O_DIRECT);
	ACCEPTED(kaio_read(bctx, fd2, 0, b, 0, 4096, NULL, 3));
	wait_one(bctx, &ev);
	kaio_buf_unref(ev.buf);
	fl = fcntl(fd2, F_GETFL);
	assert_int_equal(fcntl(fd2, F_SETFL, fl & ~O_DIRECT), 0);
	ACCEPTED(kaio_read(bctx, fd2, 100, b, 1, 100, NULL, 4));
	wait_one(bctx, &ev);
	assert_int_equal(ev.res, 100);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 1, 100, 100), 0);
	kaio_buf_unref(ev.buf);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(kaio_ctx_destroy(bctx), 0);
	close(fd);
	close(fd2);
}

/* kaio_ctx_forget_fd drops what is cached for fd: after F_SETFL removes O_DIRECT, or the fd number is reused by another file, the fd is re-learnt. */
static void test_forget_fd_relearn(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("forget.dat", 65536, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(8192);
	struct kaio_event ev;

	ACCEPTED(kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 1));
	wait_one(ctx, &ev);
	kaio_buf_unref(ev.buf);

	/* Remove O_DIRECT, forget: now refused as not O_DIRECT. */
	int fl = fcntl(fd, F_GETFL);
	assert_int_equal(fcntl(fd, F_SETFL, fl & ~O_DIRECT), 0);
	ACCEPTED(kaio_ctx_forget_fd(ctx, fd));
	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 2));
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("after forget_fd the buffered fd was refused without naming O_DIRECT: \"%s\"",
			 kaio_last_error());

	/* Put O_DIRECT back, forget: accepted again. */
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_DIRECT), 0);
	ACCEPTED(kaio_ctx_forget_fd(ctx, fd));
	ACCEPTED(kaio_read(ctx, fd, 4096, b, 0, 4096, NULL, 3));
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 4096);
	assert_int_equal(kt_check(kaio_buf_data(b), 4096, 4096), 0);
	kaio_buf_unref(ev.buf);

	/* The fd number comes back as a different (buffered) file. */
	ACCEPTED(kaio_ctx_forget_fd(ctx, fd));
	int other = kt_make_file("forget2.dat", 65536, O_RDWR);
	assert_int_equal(dup2(other, fd), fd);
	close(other);
	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 4));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	/* Forgetting an fd the context never saw is harmless. */
	int never = kt_make_file("forget3.dat", 4096, O_RDWR | O_DIRECT);
	ACCEPTED(kaio_ctx_forget_fd(ctx, never));
	ACCEPTED(kaio_read(ctx, never, 0, b, 0, 4096, NULL, 5));
	wait_one(ctx, &ev);
	assert_int_equal(ev.res, 4096);
	kaio_buf_unref(ev.buf);
	close(never);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

int main(void)
{
	kt_require_aio();
	alarm(900); /* a hung case fails the program instead of blocking forever */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_alignment_odirect),
		cmocka_unit_test(test_fd_alignment_buffered),
		cmocka_unit_test(test_fd_alignment_badfd),
		cmocka_unit_test(test_fd_alignment_null_out),
		cmocka_unit_test(test_misaligned_rw),
		cmocka_unit_test(test_misaligned_vec),
		cmocka_unit_test(test_buffered_fd_refused),
		cmocka_unit_test(test_allow_buffered_unaligned),
		cmocka_unit_test_teardown(test_loop_4096, loop_teardown),
		cmocka_unit_test(test_cache_relearn_before_refusal),
		cmocka_unit_test(test_forget_fd_relearn),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
