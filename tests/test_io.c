/* Integration tests: real O_DIRECT I/O through every operation (API.md
 * "Operations"), kaio_submit batches, rw_flags and event fields. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

#define SUBMIT_N(want, ctx, ops, n) do { int rc_ = kaio_submit((ctx), (ops), (n)); if (rc_ != (want)) \
	fail_msg("line %d: kaio_submit(%s, %u) = %d (%s), expected %d", __LINE__, #ops, (unsigned)(n), \
		 rc_, kaio_last_error(), (int)(want)); } while (0)

/* Check every field of an event (reserved words must come back 0). */
static void check_event_at(const struct kaio_event *ev, uint64_t ud, int64_t res, uint64_t off,
			   kaio_ctx *ctx, kaio_buf *buf, int fd, unsigned op, int line)
{
	if (ev->user_data != ud || ev->res != res || ev->offset != off || ev->ctx != ctx ||
	    ev->buf != buf || ev->fd != fd || ev->op != op || ev->reserved[0] || ev->reserved[1])
		fail_msg("line %d: event {user_data %" PRIu64 ", res %" PRId64 ", offset %" PRIu64
			 ", ctx %p, buf %p, fd %d, op %u, reserved %" PRIx64 " %" PRIx64 "}, expected "
			 "{%" PRIu64 ", %" PRId64 ", %" PRIu64 ", %p, %p, %d, %u, 0 0}",
			 line, ev->user_data, ev->res, ev->offset, (void *)ev->ctx, (void *)ev->buf, ev->fd,
			 ev->op, ev->reserved[0], ev->reserved[1], ud, res, off, (void *)ctx, (void *)buf,
			 fd, op);
}
#define CHECK_EVENT(ev, ud, res, off, ctx, buf, fd, op) \
	check_event_at((ev), (ud), (res), (off), (ctx), (buf), (fd), (op), __LINE__)

/* Wait for one event (the only one expected). */
static void wait_one(kaio_ctx *ctx, struct kaio_event *ev)
{
	memset(ev, 0xff, sizeof *ev);
	kt_wait_n(ctx, ev, 1);
}

/* Find the event with user_data ud among n. */
static const struct kaio_event *find_ev(const struct kaio_event *ev, int n, uint64_t ud)
{
	for (int i = 0; i < n; i++)
		if (ev[i].user_data == ud)
			return &ev[i];
	fail_msg("no event with user_data %" PRIu64 " among %d", ud, n);
	return NULL;
}

/* Read `len` bytes at `off` through a plain (buffered) fd: independent of the library. */
static void plain_read(const char *name, void *dst, size_t len, off_t off)
{
	int fd = open(kt_path(name), O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = pread(fd, dst, len, off);
	close(fd);
	if (n != (ssize_t)len)
		fail_msg("pread(%s, %zu, %lld) = %zd", name, len, (long long)off, n);
}

/* An empty file of `size` bytes (zeros), opened O_RDWR|O_DIRECT. */
static int zero_file(const char *name, off_t size)
{
	int fd = open(kt_path(name), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, size), 0);
	return fd;
}

static int is_zero(const void *p, size_t len)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < len; i++)
		if (c[i])
			return 0;
	return 1;
}

static struct kaio_op op_rw(uint32_t op, int fd, uint64_t off, kaio_buf *b, uint64_t boff,
			    uint64_t len, uint64_t ud)
{
	struct kaio_op o;
	memset(&o, 0, sizeof o);
	o.op = op;
	o.fd = fd;
	o.offset = off;
	o.buf = b;
	o.buf_offset = boff;
	o.len = len;
	o.user_data = ud;
	return o;
}

/* ---- plain reads and writes ---------------------------------------------- */

/* A write of N bytes reports res == N and the data reads back (event fields user_data, res, offset, ctx, buf, fd, op). */
static void test_write_then_read(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	int fd = zero_file("wr.dat", 1 << 20);
	kaio_buf *wb = kt_buf(65536);
	kaio_buf *rb = kt_buf(65536);
	char *w = kaio_buf_data(wb);
	struct kaio_event ev;

	/* Write 16 KiB at file offset 8192 from buffer offset 4096. */
	kt_fill(w + 4096, 16384, 8192);
	ACCEPTED(kaio_write(ctx, fd, 8192, wb, 4096, 16384, NULL, 0x1122334455667788ull));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 0x1122334455667788ull, 16384, 8192, ctx, wb, fd, KAIO_OP_WRITE);
	kaio_buf_unref(ev.buf);

	/* What the disk now holds, seen through another fd. */
	char *plain = malloc(32768);
	plain_read("wr.dat", plain, 32768, 0);
	assert_true(is_zero(plain, 8192));
	assert_int_equal(kt_check(plain + 8192, 16384, 8192), 0);
	assert_true(is_zero(plain + 24576, 8192));
	free(plain);

	/* Read it back into buffer offset 512 through the library. */
	ACCEPTED(kaio_read(ctx, fd, 8192, rb, 512, 16384, NULL, UINT64_MAX));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, UINT64_MAX, 16384, 8192, ctx, rb, fd, KAIO_OP_READ);
	char *r = kaio_buf_data(rb);
	assert_true(is_zero(r, 512));
	assert_int_equal(kt_check(r + 512, 16384, 8192), 0);
	assert_true(is_zero(r + 512 + 16384, 65536 - 512 - 16384));
	kaio_buf_unref(ev.buf);

	/* A large write/read (1 MiB) reports its full size. */
	kaio_buf *big = kt_buf(1 << 20);
	kt_fill(kaio_buf_data(big), 1 << 20, 0);
	ACCEPTED(kaio_write(ctx, fd, 0, big, 0, 1 << 20, NULL, 5));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 5, 1 << 20, 0, ctx, big, fd, KAIO_OP_WRITE);
	kaio_buf_unref(ev.buf);
	memset(kaio_buf_data(big), 0, 1 << 20);
	ACCEPTED(kaio_read(ctx, fd, 0, big, 0, 1 << 20, NULL, 6));
	kaio_buf_unref(big); /* the event carries the operation's reference */
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 6, 1 << 20, 0, ctx, big, fd, KAIO_OP_READ);
	assert_int_equal(kt_check(kaio_buf_data(ev.buf), 1 << 20, 0), 0);
	kaio_buf_unref(ev.buf);

	kaio_buf_unref(wb);
	kaio_buf_unref(rb);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

struct cb_rec {
	int calls;
	struct kaio_event ev;
	size_t check_len;
	uint64_t check_off;
	int data_ok;
};

static void rec_cb(const struct kaio_event *ev)
{
	struct cb_rec *r = (struct cb_rec *)(uintptr_t)ev->user_data;
	r->calls++;
	r->ev = *ev;
	if (r->check_len && ev->buf)
		r->data_ok = kt_check(kaio_buf_data(ev->buf), r->check_len, r->check_off) == 0;
}

static void wait_calls(kaio_ctx *ctx, int *calls, int n)
{
	struct kaio_event ev[4];
	for (int i = 0; *calls < n; i++) {
		if (i > 100)
			fail_msg("callback not run within 10 s (%d of %d)", *calls, n);
		int rc = kaio_wait(ctx, ev, 1, 4, 100);
		if (rc < 0)
			fail_msg("kaio_wait = %d: %s", rc, kaio_last_error());
		if (rc > 0)
			fail_msg("kaio_wait copied %d events for operations that had a callback", rc);
	}
}

/* Event fields as seen by a callback: user_data, res, offset, ctx, buf, fd, op. */
static void test_event_fields_callback(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("cbf.dat", 1 << 20, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(8192);
	struct cb_rec rec;
	memset(&rec, 0, sizeof rec);
	rec.check_len = 8192;
	rec.check_off = 40960;
	ACCEPTED(kaio_read(ctx, fd, 40960, b, 0, 8192, rec_cb, (uintptr_t)&rec));
	wait_calls(ctx, &rec.calls, 1);
	CHECK_EVENT(&rec.ev, (uintptr_t)&rec, 8192, 40960, ctx, b, fd, KAIO_OP_READ);
	assert_true(rec.data_ok);

	memset(&rec, 0, sizeof rec);
	kt_fill(kaio_buf_data(b), 8192, 40960);
	ACCEPTED(kaio_write(ctx, fd, 40960, b, 0, 8192, rec_cb, (uintptr_t)&rec));
	wait_calls(ctx, &rec.calls, 1);
	CHECK_EVENT(&rec.ev, (uintptr_t)&rec, 8192, 40960, ctx, b, fd, KAIO_OP_WRITE);

	memset(&rec, 0, sizeof rec);
	ACCEPTED(kaio_sync(ctx, fd, KAIO_SYNC_FULL, rec_cb, (uintptr_t)&rec));
	wait_calls(ctx, &rec.calls, 1);
	CHECK_EVENT(&rec.ev, (uintptr_t)&rec, 0, 0, ctx, NULL, fd, KAIO_OP_FSYNC);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* res is signed: a read crossing EOF reports the bytes up to it; one wholly past it reports 0. */
static void test_short_read_eof(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	/* 5000 bytes (not a multiple of 512), written through a normal fd. */
	int fd = kt_make_file("eof.dat", 5000, O_RDONLY | O_DIRECT);
	kaio_buf *b = kt_buf(16384);
	struct kaio_event ev[8];

	ACCEPTED(kaio_read(ctx, fd, 0, b, 0, 8192, NULL, 1));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 1, 5000, 0, ctx, b, fd, KAIO_OP_READ);
	assert_int_equal(kt_check(kaio_buf_data(b), 5000, 0), 0);
	kaio_buf_unref(ev[0].buf);

	ACCEPTED(kaio_read(ctx, fd, 4096, b, 8192, 4096, NULL, 2));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 2, 904, 4096, ctx, b, fd, KAIO_OP_READ);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 8192, 904, 4096), 0);
	kaio_buf_unref(ev[0].buf);

	ACCEPTED(kaio_read(ctx, fd, 8192, b, 0, 4096, NULL, 3));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 3, 0, 8192, ctx, b, fd, KAIO_OP_READ);
	kaio_buf_unref(ev[0].buf);

	ACCEPTED(kaio_read(ctx, fd, 1ull << 30, b, 0, 512, NULL, 4));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 4, 0, 1ull << 30, ctx, b, fd, KAIO_OP_READ);
	kaio_buf_unref(ev[0].buf);

	/* A READV crossing EOF. */
	struct kaio_vec vec[2] = { { b, 0, 4096 }, { b, 8192, 4096 } };
	memset(kaio_buf_data(b), 0, 16384);
	ACCEPTED(kaio_readv(ctx, fd, 0, vec, 2, NULL, 5));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 5, 5000, 0, ctx, NULL, fd, KAIO_OP_READV);
	assert_int_equal(kt_check(kaio_buf_data(b), 4096, 0), 0);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 8192, 904, 4096), 0);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* A len of 0 is accepted (kaio_read(3)): nothing moves, res is 0, the file
 * is unchanged; the fd is still checked. */
static void test_zero_length(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	int fd = kt_make_file("zero.dat", 4096, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	memset(kaio_buf_data(b), 0x5a, 4096);
	struct kaio_event ev[8];

	ACCEPTED(kaio_read(ctx, fd, 0, b, 0, 0, NULL, 1));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 1, 0, 0, ctx, b, fd, KAIO_OP_READ);
	kaio_buf_unref(ev[0].buf);
	ACCEPTED(kaio_write(ctx, fd, 8192, b, 4096, 0, NULL, 2));
	wait_one(ctx, ev);
	CHECK_EVENT(ev, 2, 0, 8192, ctx, b, fd, KAIO_OP_WRITE);
	kaio_buf_unref(ev[0].buf);
	for (int i = 0; i < 4096; i++)
		if (((unsigned char *)kaio_buf_data(b))[i] != 0x5a)
			fail_msg("a 0-byte read changed byte %d of the buffer", i);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 4096);
	static char back[4096];
	plain_read("zero.dat", back, sizeof back, 0);
	assert_int_equal(kt_check(back, sizeof back, 0), 0);

	int closed = dup(fd);
	close(closed);
	REFUSED(EBADF, kaio_read(ctx, closed, 0, b, 0, 0, NULL, 3));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ---- vectors ----------------------------------------------------------------- */

/* READV/WRITEV move data between several segments of several buffers (with buffer offsets) and one file range. */
static void test_readv_writev(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	int fd = zero_file("vec.dat", 1 << 20);
	kaio_buf *a = kt_buf(8192), *b = kt_buf(8192), *c = kt_buf(4096);
	char *pa = kaio_buf_data(a), *pb = kaio_buf_data(b), *pc = kaio_buf_data(c);
	const uint64_t base = 4096;
	struct kaio_vec wv[4] = {
		{ a, 512, 1024 },
		{ b, 4096, 4096 },
		{ c, 0, 512 },
		{ a, 4096, 2048 },
	};
	uint64_t o = base;
	for (int i = 0; i < 4; i++) {
		char *p = (char *)kaio_buf_data(wv[i].buf) + wv[i].offset;
		kt_fill(p, wv[i].len, o);
		o += wv[i].len;
	}
	const uint64_t total = o - base; /* 7680 */
	struct kaio_event ev;
	ACCEPTED(kaio_writev(ctx, fd, base, wv, 4, NULL, 11));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 11, (int64_t)total, base, ctx, NULL, fd, KAIO_OP_WRITEV);

	char *plain = malloc(16384);
	plain_read("vec.dat", plain, 16384, 0);
	assert_true(is_zero(plain, base));
	assert_int_equal(kt_check(plain + base, total, base), 0);
	assert_true(is_zero(plain + base + total, 16384 - base - total));
	free(plain);

	/* Read back into a different layout of fresh buffers. */
	kaio_buf *x = kt_buf(8192), *y = kt_buf(4096), *z = kt_buf(8192);
	struct kaio_vec rv[3] = {
		{ y, 1024, 2048 },
		{ x, 0, 512 },
		{ z, 512, 5120 },
	};
	ACCEPTED(kaio_readv(ctx, fd, base, rv, 3, NULL, 12));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 12, (int64_t)total, base, ctx, NULL, fd, KAIO_OP_READV);
	char *px = kaio_buf_data(x), *py = kaio_buf_data(y), *pz = kaio_buf_data(z);
	assert_true(is_zero(py, 1024));
	assert_int_equal(kt_check(py + 1024, 2048, base), 0);
	assert_true(is_zero(py + 3072, 1024));
	assert_int_equal(kt_check(px, 512, base + 2048), 0);
	assert_true(is_zero(px + 512, 8192 - 512));
	assert_true(is_zero(pz, 512));
	assert_int_equal(kt_check(pz + 512, 5120, base + 2560), 0);
	assert_true(is_zero(pz + 5632, 8192 - 5632));

	/* nvec == IOV_MAX (1024) is accepted: 1024 segments of 512 bytes. */
	kaio_buf *big = kt_buf(1024 * 512);
	struct kaio_vec *many = calloc(1024, sizeof *many);
	for (unsigned i = 0; i < 1024; i++) {
		/* reversed order in the buffer, so segments are really distinct */
		many[i].buf = big;
		many[i].offset = (1023 - i) * 512u;
		many[i].len = 512;
	}
	ACCEPTED(kaio_readv(ctx, fd, 0, many, 1024, NULL, 13));
	free(many); /* not retained after the call */
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 13, 1024 * 512, 0, ctx, NULL, fd, KAIO_OP_READV);
	char *pbig = kaio_buf_data(big);
	/* file bytes [base, base+total) landed in segments counted from the end */
	for (uint64_t fo = base; fo < base + total; fo += 512) {
		unsigned seg = (unsigned)(fo / 512);
		if (kt_check(pbig + (1023 - seg) * 512u, 512, fo) != 0)
			fail_msg("READV with 1024 segments: segment %u holds the wrong data", seg);
	}
	kaio_buf_unref(big);

	kaio_buf_unref(a);
	kaio_buf_unref(b);
	kaio_buf_unref(c);
	kaio_buf_unref(x);
	kaio_buf_unref(y);
	kaio_buf_unref(z);
	(void)pa; (void)pb; (void)pc;
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ---- sync ------------------------------------------------------------------ */

/* kaio_sync: KAIO_SYNC_DATA -> op FDATASYNC, KAIO_SYNC_FULL -> op FSYNC; res 0, offset 0, buf NULL. */
static void test_sync_levels(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("sync.dat", 65536, O_RDWR | O_DIRECT);
	struct kaio_event ev;
	ACCEPTED(kaio_sync(ctx, fd, KAIO_SYNC_DATA, NULL, 21));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 21, 0, 0, ctx, NULL, fd, KAIO_OP_FDATASYNC);
	ACCEPTED(kaio_sync(ctx, fd, KAIO_SYNC_FULL, NULL, 22));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 22, 0, 0, ctx, NULL, fd, KAIO_OP_FSYNC);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* kaio_sync never requires O_DIRECT (works on a buffered fd without KAIO_CTX_ALLOW_BUFFERED). */
static void test_sync_buffered_fd(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("syncb.dat", 65536, O_RDWR);
	kaio_buf *b = kt_buf(4096);
	struct kaio_event ev;
	/* The context is strict: I/O on this fd is refused ... */
	REFUSED(EINVAL, kaio_read(ctx, fd, 0, b, 0, 4096, NULL, 1));
	/* ... but sync is not. */
	ACCEPTED(kaio_sync(ctx, fd, KAIO_SYNC_DATA, NULL, 31));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 31, 0, 0, ctx, NULL, fd, KAIO_OP_FDATASYNC);
	ACCEPTED(kaio_sync(ctx, fd, KAIO_SYNC_FULL, NULL, 32));
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 32, 0, 0, ctx, NULL, fd, KAIO_OP_FSYNC);
	/* and through kaio_submit */
	struct kaio_op ops[2];
	memset(ops, 0, sizeof ops);
	ops[0].op = KAIO_OP_FSYNC;
	ops[0].fd = fd;
	ops[0].user_data = 33;
	ops[1].op = KAIO_OP_FDATASYNC;
	ops[1].fd = fd;
	ops[1].user_data = 34;
	SUBMIT_N(2, ctx, ops, 2);
	struct kaio_event evs[2];
	kt_wait_n(ctx, evs, 2);
	CHECK_EVENT(find_ev(evs, 2, 33), 33, 0, 0, ctx, NULL, fd, KAIO_OP_FSYNC);
	CHECK_EVENT(find_ev(evs, 2, 34), 34, 0, 0, ctx, NULL, fd, KAIO_OP_FDATASYNC);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* An unknown sync level -> -EINVAL (nothing queued). */
static void test_sync_unknown_level(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("syncu.dat", 4096, O_RDWR | O_DIRECT);
	static const unsigned bad[] = { 0, 3, 4, 0x80000001u, UINT_MAX };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		REFUSED(EINVAL, kaio_sync(ctx, fd, bad[i], NULL, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	struct kaio_event ev;
	assert_int_equal(kaio_wait(ctx, &ev, 1, 1, 100), 0);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ---- kaio_submit ------------------------------------------------------------- */

/* kaio_submit accepts a mixed batch (read, write, readv, writev, fsync, fdatasync) and returns n. */
static void test_submit_mixed(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	int src = kt_make_file("mix-src.dat", 262144, O_RDWR | O_DIRECT);
	int dst = zero_file("mix-dst.dat", 262144);
	kaio_buf *rb = kt_buf(4096), *wb = kt_buf(4096), *va = kt_buf(8192), *vb = kt_buf(8192);
	kt_fill(kaio_buf_data(wb), 4096, 65536);
	kt_fill((char *)kaio_buf_data(vb) + 4096, 4096, 131072);
	kt_fill(kaio_buf_data(vb), 1024, 131072 + 4096);
	struct kaio_vec rv[2] = { { va, 0, 4096 }, { va, 4096, 4096 } };
	struct kaio_vec wv[2] = { { vb, 4096, 4096 }, { vb, 0, 1024 } };
	struct kaio_op ops[6];
	ops[0] = op_rw(KAIO_OP_READ, src, 8192, rb, 0, 4096, 100);
	ops[1] = op_rw(KAIO_OP_WRITE, dst, 65536, wb, 0, 4096, 101);
	ops[2] = op_rw(KAIO_OP_READV, src, 16384, NULL, 0, 0, 102);
	ops[2].vec = rv;
	ops[2].nvec = 2;
	ops[3] = op_rw(KAIO_OP_WRITEV, dst, 131072, NULL, 0, 0, 103);
	ops[3].vec = wv;
	ops[3].nvec = 2;
	ops[4] = op_rw(KAIO_OP_FSYNC, src, 0, NULL, 0, 0, 104);
	ops[5] = op_rw(KAIO_OP_FDATASYNC, dst, 0, NULL, 0, 0, 105);
	SUBMIT_N(6, ctx, ops, 6);
	memset(ops, 0xAB, sizeof ops); /* not retained */
	memset(rv, 0, sizeof rv);
	memset(wv, 0, sizeof wv);
	assert_int_equal(kaio_ctx_inflight(ctx), 6);

	struct kaio_event ev[6];
	memset(ev, 0xff, sizeof ev);
	kt_wait_n(ctx, ev, 6);
	CHECK_EVENT(find_ev(ev, 6, 100), 100, 4096, 8192, ctx, rb, src, KAIO_OP_READ);
	CHECK_EVENT(find_ev(ev, 6, 101), 101, 4096, 65536, ctx, wb, dst, KAIO_OP_WRITE);
	CHECK_EVENT(find_ev(ev, 6, 102), 102, 8192, 16384, ctx, NULL, src, KAIO_OP_READV);
	CHECK_EVENT(find_ev(ev, 6, 103), 103, 5120, 131072, ctx, NULL, dst, KAIO_OP_WRITEV);
	CHECK_EVENT(find_ev(ev, 6, 104), 104, 0, 0, ctx, NULL, src, KAIO_OP_FSYNC);
	CHECK_EVENT(find_ev(ev, 6, 105), 105, 0, 0, ctx, NULL, dst, KAIO_OP_FDATASYNC);
	for (int i = 0; i < 6; i++)
		kaio_buf_unref(ev[i].buf);
	assert_int_equal(kt_check(kaio_buf_data(rb), 4096, 8192), 0);
	assert_int_equal(kt_check(kaio_buf_data(va), 8192, 16384), 0);
	char *plain = malloc(8192);
	plain_read("mix-dst.dat", plain, 4096, 65536);
	assert_int_equal(kt_check(plain, 4096, 65536), 0);
	plain_read("mix-dst.dat", plain, 8192, 131072);
	assert_int_equal(kt_check(plain, 5120, 131072), 0);
	assert_true(is_zero(plain + 5120, 8192 - 5120));
	free(plain);
	kaio_buf_unref(rb);
	kaio_buf_unref(wb);
	kaio_buf_unref(va);
	kaio_buf_unref(vb);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(src);
	close(dst);
}

/* Make sure nothing more is delivered (ops refused by kaio_submit never are). */
static void expect_nothing_more(kaio_ctx *ctx)
{
	struct kaio_event ev[4];
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	int rc = kaio_wait(ctx, ev, 1, 4, 200);
	if (rc != 0)
		fail_msg("kaio_wait delivered %d unexpected events (first user_data %" PRIu64 ")", rc,
			 rc > 0 ? ev[0].user_data : 0);
}

/* kaio_submit returns how many leading ops were accepted; ops after the first refusal take nothing; resubmitting ops+k reports ops[k]'s -errno. */
static void test_submit_bad_k(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	int fd = kt_make_file("badk.dat", 262144, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(65536);
	struct kaio_op ops[5];
	for (int i = 0; i < 5; i++)
		ops[i] = op_rw(KAIO_OP_READ, fd, 4096u * (unsigned)i, b, 4096u * (unsigned)i, 4096, 200u + (unsigned)i);

	/* op 2 misaligned -> 2 accepted; ops+2 -> -EINVAL.  Returning 2 is a
	 * success, so it leaves kaio_last_error() as it was. */
	ops[2].len = 100;
	kt_set_marker();
	SUBMIT_N(2, ctx, ops, 5);
	if (strcmp(kaio_last_error(), kt_marker()) != 0)
		fail_msg("a partly accepted kaio_submit (a success) changed kaio_last_error() to \"%s\"",
			 kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), 2);
	REFUSED(EINVAL, kaio_submit(ctx, ops + 2, 3));
	assert_int_equal(kaio_ctx_inflight(ctx), 2);
	struct kaio_event ev[2];
	kt_wait_n(ctx, ev, 2);
	assert_non_null(find_ev(ev, 2, 200));
	assert_non_null(find_ev(ev, 2, 201));
	kaio_buf_unref(ev[0].buf);
	kaio_buf_unref(ev[1].buf);
	expect_nothing_more(ctx);

	/* op 3 with a negative fd -> 3 accepted; ops+3 -> -EBADF */
	ops[2].len = 4096;
	ops[3].fd = -1;
	SUBMIT_N(3, ctx, ops, 5);
	REFUSED(EBADF, kaio_submit(ctx, ops + 3, 2));
	struct kaio_event ev3[3];
	kt_wait_n(ctx, ev3, 3);
	for (int i = 0; i < 3; i++) {
		assert_non_null(find_ev(ev3, 3, 200u + (unsigned)i));
		kaio_buf_unref(ev3[i].buf);
	}
	expect_nothing_more(ctx);

	/* op 0 bad -> the call itself returns -errno, nothing accepted */
	ops[3].fd = fd;
	ops[0].offset = 1ull << 63;
	REFUSED(EINVAL, kaio_submit(ctx, ops, 5));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	expect_nothing_more(ctx);

	/* the last op bad -> n-1 */
	ops[0].offset = 0;
	ops[4].op = 0;
	SUBMIT_N(4, ctx, ops, 5);
	REFUSED(EINVAL, kaio_submit(ctx, ops + 4, 1));
	struct kaio_event ev4[4];
	kt_wait_n(ctx, ev4, 4);
	for (int i = 0; i < 4; i++)
		kaio_buf_unref(ev4[i].buf);
	expect_nothing_more(ctx);

	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* kaio_submit with n = 0 returns 0; ops NULL with n > 0 -> -EINVAL. */
static void test_submit_zero_and_null(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	struct kaio_op op;
	memset(&op, 0, sizeof op);
	assert_int_equal(kaio_submit(ctx, &op, 0), 0);
	assert_int_equal(kaio_submit(ctx, NULL, 0), 0);
	REFUSED(EINVAL, kaio_submit(ctx, NULL, 1));
	REFUSED(EINVAL, kaio_submit(ctx, NULL, 64));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
}

/* At capacity kaio_submit returns the accepted prefix; with nothing accepted it returns -EAGAIN. */
static void test_submit_capacity_prefix(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("cap.dat", 65536, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(6 * 4096);
	struct kaio_op ops[6];
	for (int i = 0; i < 6; i++)
		ops[i] = op_rw(KAIO_OP_READ, fd, 4096u * (unsigned)i, b, 4096u * (unsigned)i, 4096, 300u + (unsigned)i);
	SUBMIT_N(4, ctx, ops, 6);
	assert_int_equal(kaio_ctx_inflight(ctx), 4);
	REFUSED(EAGAIN, kaio_submit(ctx, ops + 4, 2));
	assert_int_equal(kaio_ctx_inflight(ctx), 4);
	struct kaio_event ev[6];
	kt_wait_n(ctx, ev, 4);
	for (int i = 0; i < 4; i++) {
		assert_non_null(find_ev(ev, 4, 300u + (unsigned)i));
		kaio_buf_unref(ev[i].buf);
	}
	SUBMIT_N(2, ctx, ops + 4, 2);
	kt_wait_n(ctx, ev, 2);
	assert_non_null(find_ev(ev, 2, 304));
	assert_non_null(find_ev(ev, 2, 305));
	kaio_buf_unref(ev[0].buf);
	kaio_buf_unref(ev[1].buf);
	assert_int_equal(kt_check(kaio_buf_data(b), 6 * 4096, 0), 0);
	expect_nothing_more(ctx);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* FSYNC/FDATASYNC: offset must be 0 in kaio_op (else -EINVAL). */
static void test_submit_sync_offset(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("synco.dat", 4096, O_RDWR | O_DIRECT);
	struct kaio_op op = op_rw(KAIO_OP_FSYNC, fd, 4096, NULL, 0, 0, 1);
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	op.offset = 1;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	op.op = KAIO_OP_FDATASYNC;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	op.offset = 1ull << 63;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	op.offset = 0;
	SUBMIT_N(1, ctx, &op, 1);
	struct kaio_event ev;
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 1, 0, 0, ctx, NULL, fd, KAIO_OP_FDATASYNC);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ---- rw_flags, ioprio, reserved --------------------------------------------- */

/* KAIO_RWF_DSYNC / KAIO_RWF_SYNC writes (per-write durability) succeed and their data reads back. */
static void test_rwf_dsync_sync(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = zero_file("dsync.dat", 65536);
	kaio_buf *b = kt_buf(16384);
	kt_fill(kaio_buf_data(b), 16384, 0);
	struct kaio_op ops[3];
	ops[0] = op_rw(KAIO_OP_WRITE, fd, 0, b, 0, 4096, 1);
	ops[0].rw_flags = KAIO_RWF_DSYNC;
	ops[1] = op_rw(KAIO_OP_WRITE, fd, 4096, b, 4096, 4096, 2);
	ops[1].rw_flags = KAIO_RWF_SYNC;
	struct kaio_vec v[1] = { { b, 8192, 8192 } };
	ops[2] = op_rw(KAIO_OP_WRITEV, fd, 8192, NULL, 0, 0, 3);
	ops[2].vec = v;
	ops[2].nvec = 1;
	ops[2].rw_flags = KAIO_RWF_DSYNC | KAIO_RWF_SYNC;
	SUBMIT_N(3, ctx, ops, 3);
	struct kaio_event ev[3];
	kt_wait_n(ctx, ev, 3);
	CHECK_EVENT(find_ev(ev, 3, 1), 1, 4096, 0, ctx, b, fd, KAIO_OP_WRITE);
	CHECK_EVENT(find_ev(ev, 3, 2), 2, 4096, 4096, ctx, b, fd, KAIO_OP_WRITE);
	CHECK_EVENT(find_ev(ev, 3, 3), 3, 8192, 8192, ctx, NULL, fd, KAIO_OP_WRITEV);
	for (int i = 0; i < 3; i++)
		kaio_buf_unref(ev[i].buf);
	char *plain = malloc(16384);
	plain_read("dsync.dat", plain, 16384, 0);
	assert_int_equal(kt_check(plain, 16384, 0), 0);
	free(plain);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* KAIO_RWF_APPEND writes at the end of file ignoring the offset (no offset check); the event's offset is the one given. */
static void test_rwf_append(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("append.dat", 8192, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	struct kaio_event ev;
	struct stat st;

	kt_fill(kaio_buf_data(b), 4096, 8192);
	struct kaio_op op = op_rw(KAIO_OP_WRITE, fd, 0, b, 0, 4096, 1);
	op.rw_flags = KAIO_RWF_APPEND;
	SUBMIT_N(1, ctx, &op, 1);
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 1, 4096, 0, ctx, b, fd, KAIO_OP_WRITE);
	kaio_buf_unref(ev.buf);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 12288);

	/* A misaligned offset is not checked with APPEND. */
	kt_fill(kaio_buf_data(b), 4096, 12288);
	op.offset = 100;
	op.user_data = 2;
	SUBMIT_N(1, ctx, &op, 1);
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 2, 4096, 100, ctx, b, fd, KAIO_OP_WRITE);
	kaio_buf_unref(ev.buf);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 16384);

	/* WRITEV with APPEND. */
	kt_fill(kaio_buf_data(b), 4096, 16384);
	struct kaio_vec v[2] = { { b, 0, 2048 }, { b, 2048, 2048 } };
	op = op_rw(KAIO_OP_WRITEV, fd, 512, NULL, 0, 0, 3);
	op.vec = v;
	op.nvec = 2;
	op.rw_flags = KAIO_RWF_APPEND;
	SUBMIT_N(1, ctx, &op, 1);
	wait_one(ctx, &ev);
	CHECK_EVENT(&ev, 3, 4096, 512, ctx, NULL, fd, KAIO_OP_WRITEV);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 20480);

	char *plain = malloc(20480);
	plain_read("append.dat", plain, 20480, 0);
	assert_int_equal(kt_check(plain, 20480, 0), 0);
	free(plain);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* KAIO_RWF_APPEND applies only to writes: on a read, readv or sync -> -EINVAL. */
static void test_rwf_append_not_write(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("appr.dat", 8192, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	struct kaio_op op = op_rw(KAIO_OP_READ, fd, 0, b, 0, 4096, 1);
	op.rw_flags = KAIO_RWF_APPEND;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	struct kaio_vec v[1] = { { b, 0, 4096 } };
	op = op_rw(KAIO_OP_READV, fd, 0, NULL, 0, 0, 2);
	op.vec = v;
	op.nvec = 1;
	op.rw_flags = KAIO_RWF_APPEND;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	op = op_rw(KAIO_OP_FSYNC, fd, 0, NULL, 0, 0, 3);
	op.rw_flags = KAIO_RWF_APPEND;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	op.op = KAIO_OP_FDATASYNC;
	REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* Any rw_flags bit other than NOWAIT/DSYNC/SYNC/APPEND is unknown: -EINVAL. */
static void test_rwf_unknown(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("rwfu.dat", 8192, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	static const uint32_t bad[] = { 0x1, 0x20, 0x40, 0x80, 0x100, 0x10000, 0x80000000u,
					KAIO_RWF_DSYNC | 0x20 };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct kaio_op op = op_rw(KAIO_OP_WRITE, fd, 0, b, 0, 4096, 1);
		op.rw_flags = bad[i];
		REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
		op.op = KAIO_OP_READ;
		REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	}
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* Reserved fields of kaio_op must be 0 (else -EINVAL). */
static void test_reserved_nonzero(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("resv.dat", 8192, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	for (int which = 0; which < 3; which++) {
		struct kaio_op op = op_rw(KAIO_OP_READ, fd, 0, b, 0, 4096, 1);
		if (which == 0)
			op.reserved32 = 1;
		else if (which == 1)
			op.reserved[0] = 1;
		else
			op.reserved[1] = 1ull << 63;
		REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
		op.op = KAIO_OP_FSYNC;
		op.buf = NULL;
		op.len = 0;
		REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	}
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* KAIO_RWF_NOWAIT: a read is delivered with its data or -EAGAIN (or refused at submission by a file that cannot honour it). */
static void test_rwf_nowait(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("nowait.dat", 65536, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	struct kaio_op op = op_rw(KAIO_OP_READ, fd, 8192, b, 0, 4096, 1);
	op.rw_flags = KAIO_RWF_NOWAIT;
	kt_set_marker();
	int rc = kaio_submit(ctx, &op, 1);
	if (rc == -EOPNOTSUPP) {
		kt_check_refused(rc, EOPNOTSUPP, 0, "kaio_submit(NOWAIT read)", __LINE__);
		print_message("RWF_NOWAIT refused at submission here: %s\n", kaio_last_error());
	} else {
		if (rc != 1)
			fail_msg("kaio_submit(NOWAIT read) = %d (%s)", rc, kaio_last_error());
		struct kaio_event ev;
		wait_one(ctx, &ev);
		if (ev.res == -EAGAIN)
			print_message("RWF_NOWAIT read completed with -EAGAIN\n");
		else {
			CHECK_EVENT(&ev, 1, 4096, 8192, ctx, b, fd, KAIO_OP_READ);
			assert_int_equal(kt_check(kaio_buf_data(b), 4096, 8192), 0);
		}
		assert_ptr_equal(ev.buf, b);
		assert_int_equal(ev.op, KAIO_OP_READ);
		kaio_buf_unref(ev.buf);
	}
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* ioprio 0 (and a best-effort I/O priority, IOCB_FLAG_IOPRIO) is accepted. */
static void test_ioprio(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("prio.dat", 65536, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(8192);
	struct kaio_op ops[2];
	ops[0] = op_rw(KAIO_OP_READ, fd, 0, b, 0, 4096, 1);
	ops[1] = op_rw(KAIO_OP_READ, fd, 4096, b, 4096, 4096, 2);
	ops[1].ioprio = (2u << 13) | 4u; /* IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, 4) */
	SUBMIT_N(2, ctx, ops, 2);
	struct kaio_event ev[2];
	kt_wait_n(ctx, ev, 2);
	CHECK_EVENT(find_ev(ev, 2, 1), 1, 4096, 0, ctx, b, fd, KAIO_OP_READ);
	CHECK_EVENT(find_ev(ev, 2, 2), 2, 4096, 4096, ctx, b, fd, KAIO_OP_READ);
	kaio_buf_unref(ev[0].buf);
	kaio_buf_unref(ev[1].buf);
	assert_int_equal(kt_check(kaio_buf_data(b), 8192, 0), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

/* An offset above INT64_MAX -> -EINVAL (every entry point). */
static void test_offset_above_int64(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("big.dat", 8192, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(4096);
	static const uint64_t bad[] = { 1ull << 63, (1ull << 63) + 4096, UINT64_MAX & ~4095ull };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		REFUSED(EINVAL, kaio_read(ctx, fd, bad[i], b, 0, 4096, NULL, 1));
		REFUSED(EINVAL, kaio_write(ctx, fd, bad[i], b, 0, 4096, NULL, 1));
		struct kaio_vec v[1] = { { b, 0, 4096 } };
		REFUSED(EINVAL, kaio_readv(ctx, fd, bad[i], v, 1, NULL, 1));
		REFUSED(EINVAL, kaio_writev(ctx, fd, bad[i], v, 1, NULL, 1));
		struct kaio_op op = op_rw(KAIO_OP_READ, fd, bad[i], b, 0, 4096, 1);
		REFUSED(EINVAL, kaio_submit(ctx, &op, 1));
	}
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	close(fd);
}

int main(void)
{
	kt_require_aio();
	alarm(900); /* a hung case fails the program instead of blocking forever */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_then_read),
		cmocka_unit_test(test_event_fields_callback),
		cmocka_unit_test(test_short_read_eof),
		cmocka_unit_test(test_zero_length),
		cmocka_unit_test(test_readv_writev),
		cmocka_unit_test(test_sync_levels),
		cmocka_unit_test(test_sync_buffered_fd),
		cmocka_unit_test(test_sync_unknown_level),
		cmocka_unit_test(test_submit_mixed),
		cmocka_unit_test(test_submit_bad_k),
		cmocka_unit_test(test_submit_zero_and_null),
		cmocka_unit_test(test_submit_capacity_prefix),
		cmocka_unit_test(test_submit_sync_offset),
		cmocka_unit_test(test_rwf_dsync_sync),
		cmocka_unit_test(test_rwf_append),
		cmocka_unit_test(test_rwf_append_not_write),
		cmocka_unit_test(test_rwf_unknown),
		cmocka_unit_test(test_reserved_nonzero),
		cmocka_unit_test(test_rwf_nowait),
		cmocka_unit_test(test_ioprio),
		cmocka_unit_test(test_offset_above_int64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
