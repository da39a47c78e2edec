/* Integration tests: every exported function given NULL or nonsense
 * arguments (API.md "Conventions": every refusal returns -errno, sets
 * kaio_last_error(), changes nothing).
 *
 * Each refusal in the tables runs on a fresh thread, whose kaio_last_error()
 * starts as "" (checked), so the message seen afterwards was set by that very
 * call.  After each one the watched contexts' inflight counts and the watched
 * release counters must be unchanged. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixture ----------------------------------------------------------------- */

struct rel {
	atomic_int count;
};

static void rel_fn(void *data, size_t len, void *opaque)
{
	struct rel *r = opaque;
	atomic_fetch_add(&r->count, 1);
}

static struct fixture {
	kaio_ctx *ctx;        /* strict (no ALLOW_BUFFERED), capacity 4 */
	kaio_ctx *bctx;       /* ALLOW_BUFFERED */
	kaio_ctx *extra;      /* another context whose inflight is watched */
	int fd;               /* 1 MiB pattern file, O_RDWR|O_DIRECT */
	int rdonly, wronly;   /* the same file, O_RDONLY / O_WRONLY with O_DIRECT */
	int plain;            /* the same file without O_DIRECT */
	int closed;           /* a number known to be closed (set per test) */
	int pipe[2], sock[2], dir, dir_direct;
	kaio_buf *buf;        /* kaio_buf_alloc, 64 KiB */
	kaio_buf *wbuf;       /* wrapped 64 KiB, release counted in rel */
	void *wmem, *wmem2;
	struct rel rel, rel2; /* rel2: for wraps that must be refused */
	kaio_ctx *tmp_ctx;    /* out-parameters of calls expected to fail */
	kaio_buf *tmp_buf;
	kaio_ctx *dead_ctx, *foreign_ctx;
	kaio_buf *dead_buf, *foreign_buf;
	struct kaio_event evs[4];
	uint32_t u1, u2;
	struct kaio_vec vec[2], vec_nullbuf[2], vec_past[2], vec_ovf[2], vec_lovf[2], vec_foreign[2],
		vec_dead[2];
	struct kaio_vec *bigvec; /* 1025 valid segments */
	struct kaio_op op_ok, op_code0, op_code7, op_codemax, op_fdneg, op_fdclosed, op_buf_null,
		op_vec_null, op_nvec0, op_nvec1025, op_fsync_off, op_past, op_bufoff_ovf, op_offset,
		op_foreign_buf, op_dead_buf, op_misaligned, op_reserved;
} F;

static struct kaio_op mkop(uint32_t code, int fd, uint64_t off, kaio_buf *b, uint64_t boff, uint64_t len)
{
	struct kaio_op o;
	memset(&o, 0, sizeof o);
	o.op = code;
	o.fd = fd;
	o.offset = off;
	o.buf = b;
	o.buf_offset = boff;
	o.len = len;
	return o;
}

static int group_setup(void **state)
{
	memset(&F, 0, sizeof F);
	F.ctx = kt_ctx(4, 0);
	F.bctx = kt_ctx(4, KAIO_CTX_ALLOW_BUFFERED);
	F.fd = kt_make_file("ba.dat", 1 << 20, O_RDWR | O_DIRECT);
	F.rdonly = open(kt_path("ba.dat"), O_RDONLY | O_DIRECT);
	F.wronly = open(kt_path("ba.dat"), O_WRONLY | O_DIRECT);
	F.plain = open(kt_path("ba.dat"), O_RDWR);
	assert_true(F.rdonly >= 0 && F.wronly >= 0 && F.plain >= 0);
	assert_int_equal(pipe(F.pipe), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, F.sock), 0);
	F.dir = open(kt_dir(), O_RDONLY | O_DIRECTORY);
	assert_true(F.dir >= 0);
	F.dir_direct = open(kt_dir(), O_RDONLY | O_DIRECTORY | O_DIRECT); /* may fail: then -1 */
	F.closed = -1;
	F.buf = kt_buf(65536);
	assert_int_equal(posix_memalign(&F.wmem, 4096, 65536), 0);
	assert_int_equal(posix_memalign(&F.wmem2, 4096, 4096), 0);
	atomic_init(&F.rel.count, 0);
	atomic_init(&F.rel2.count, 0);
	assert_int_equal(kaio_buf_wrap(&F.wbuf, F.wmem, 65536, rel_fn, &F.rel), 0);

	F.vec[0] = (struct kaio_vec){ F.wbuf, 0, 4096 };
	F.vec[1] = (struct kaio_vec){ F.buf, 4096, 4096 };
	memcpy(F.vec_nullbuf, F.vec, sizeof F.vec);
	F.vec_nullbuf[1].buf = NULL;
	memcpy(F.vec_past, F.vec, sizeof F.vec);
	F.vec_past[1] = (struct kaio_vec){ F.buf, 65536 - 512, 1024 };
	memcpy(F.vec_ovf, F.vec, sizeof F.vec);
	F.vec_ovf[1] = (struct kaio_vec){ F.buf, UINT64_MAX & ~511ull, 1024 };
	memcpy(F.vec_lovf, F.vec, sizeof F.vec);
	F.vec_lovf[1] = (struct kaio_vec){ F.buf, 512, UINT64_MAX & ~511ull };
	F.bigvec = calloc(1025, sizeof *F.bigvec);
	for (int i = 0; i < 1025; i++)
		F.bigvec[i] = (struct kaio_vec){ F.wbuf, 0, 512 };

	F.op_ok = mkop(KAIO_OP_READ, F.fd, 0, F.wbuf, 0, 4096);
	F.op_code0 = F.op_ok;
	F.op_code0.op = 0;
	F.op_code7 = F.op_ok;
	F.op_code7.op = KAIO_OP_FDATASYNC + 1;
	F.op_codemax = F.op_ok;
	F.op_codemax.op = UINT32_MAX;
	F.op_fdneg = F.op_ok;
	F.op_fdneg.fd = -1;
	F.op_buf_null = F.op_ok;
	F.op_buf_null.buf = NULL;
	F.op_vec_null = mkop(KAIO_OP_READV, F.fd, 0, NULL, 0, 0);
	F.op_vec_null.nvec = 1;
	F.op_nvec0 = mkop(KAIO_OP_READV, F.fd, 0, NULL, 0, 0);
	F.op_nvec0.vec = F.vec;
	F.op_nvec1025 = F.op_nvec0;
	F.op_nvec1025.vec = F.bigvec;
	F.op_nvec1025.nvec = 1025;
	F.op_fsync_off = mkop(KAIO_OP_FSYNC, F.fd, 4096, NULL, 0, 0);
	F.op_past = mkop(KAIO_OP_WRITE, F.fd, 0, F.wbuf, 65536 - 512, 1024);
	F.op_bufoff_ovf = mkop(KAIO_OP_READ, F.fd, 0, F.wbuf, UINT64_MAX & ~511ull, 1024);
	F.op_offset = mkop(KAIO_OP_READ, F.fd, 1ull << 63, F.wbuf, 0, 4096);
	F.op_misaligned = mkop(KAIO_OP_READ, F.fd, 100, F.wbuf, 0, 4096);
	F.op_reserved = F.op_ok;
	F.op_reserved.reserved[1] = 1;
	return 0;
}

static int group_teardown(void **state)
{
	kt_drain(F.ctx);
	kt_drain(F.bctx);
	kaio_ctx_destroy(F.ctx);
	kaio_ctx_destroy(F.bctx);
	kaio_buf_unref(F.buf);
	if (atomic_load(&F.rel.count) == 0)
		kaio_buf_unref(F.wbuf);
	free(F.wmem);
	free(F.wmem2);
	free(F.bigvec);
	close(F.fd);
	close(F.rdonly);
	close(F.wronly);
	close(F.plain);
	close(F.pipe[0]);
	close(F.pipe[1]);
	close(F.sock[0]);
	close(F.sock[1]);
	close(F.dir);
	if (F.dir_direct >= 0)
		close(F.dir_direct);
	return 0;
}

/* A number that is certainly not an open fd right now. */
static int closed_fd(void)
{
	int fd = open(kt_path("ba.dat"), O_RDONLY);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	return fd;
}

/* ---- the row runner ------------------------------------------------------------ */

struct row {
	const char *name;
	const char *expr;
	int (*call)(void);
	int e1, e2; /* expected -e1 or -e2; e1 == 0: any negative errno */
};

struct run {
	const struct row *row;
	int rc;
	int before_null;
	char before[128];
	int msg_null;
	char msg[512];
};

static void *row_thread(void *p)
{
	struct run *r = p;
	const char *b = kaio_last_error();
	r->before_null = b == NULL;
	snprintf(r->before, sizeof r->before, "%s", b ? b : "");
	r->rc = r->row->call();
	const char *m = kaio_last_error();
	r->msg_null = m == NULL;
	snprintf(r->msg, sizeof r->msg, "%s", m ? m : "");
	return NULL;
}

static unsigned inflight_of(kaio_ctx *c)
{
	return c ? kaio_ctx_inflight(c) : 0;
}

/* Whether the decimal number n appears in s as a whole number. */
static int has_number(const char *s, long long n)
{
	char pat[32];
	snprintf(pat, sizeof pat, "%lld", n);
	size_t l = strlen(pat);
	for (const char *p = strstr(s, pat); p; p = strstr(p + 1, pat)) {
		int digit_before = p > s && p[-1] >= '0' && p[-1] <= '9';
		int digit_after = p[l] >= '0' && p[l] <= '9';
		if (!digit_before && !digit_after)
			return 1;
	}
	return 0;
}

/* The fd number that a row expecting -EBADF passes (by the row's name), so
 * that its message can be checked for it; *known = 0 for an unknown row. */
static int row_fd(const char *name, int *known)
{
	*known = 1;
	if (strstr(name, "fd_int_min"))
		return INT_MIN;
	if (strstr(name, "fd_neg"))
		return -1;
	if (strstr(name, "closed"))
		return F.closed;
	if (strstr(name, "wronly"))
		return F.wronly;
	if (strstr(name, "rdonly"))
		return F.rdonly;
	*known = 0;
	return 0;
}

/* Whether msg names the operation refused: "read: ..." (the library's
 * checks) or "... the read on fd ..." (the kernel's refusal), and so on. */
static int names_op(const char *msg)
{
	static const char *const ops[] = {"read", "write", "readv", "writev", "fsync", "fdatasync"};
	if (strncmp(msg, "kaio_", 5) == 0)
		return 1;
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		char head[16], word[24];
		snprintf(head, sizeof head, "%s: ", ops[i]);
		snprintf(word, sizeof word, " %s ", ops[i]);
		if (strncmp(msg, head, strlen(head)) == 0 || strstr(msg, word))
			return 1;
	}
	return 0;
}

/* Run each row on a fresh thread; collect every deviation, then fail once.
 * Besides the return value: the message is set, one line (API.md: "a
 * one-line, specific explanation"), and a -EBADF refusal names the fd and
 * the operation. */
static void run_rows(const struct row *rows, size_t n)
{
	size_t cap = 16384, len = 0;
	char *report = malloc(cap);
	int bad = 0;
	report[0] = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned in0 = inflight_of(F.ctx), bin0 = inflight_of(F.bctx), ein0 = inflight_of(F.extra);
		int rel0 = atomic_load(&F.rel.count), rel20 = atomic_load(&F.rel2.count);
		struct run r;
		memset(&r, 0, sizeof r);
		r.row = &rows[i];
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, row_thread, &r), 0);
		assert_int_equal(pthread_join(t, NULL), 0);
		kt_figure_add("bad_inputs_refused", 1);

		char why[768] = "";
		int fd_known = 0;
		const int bad_fd = row_fd(rows[i].name, &fd_known);
		const int ebadf_row = r.rc == -EBADF && (rows[i].e1 == EBADF || rows[i].e2 == EBADF);
		int ok_rc = (rows[i].e1 == 0 && r.rc < 0) || r.rc == -rows[i].e1 ||
			    (rows[i].e2 && r.rc == -rows[i].e2);
		if (!ok_rc)
			snprintf(why, sizeof why, "returned %d, expected -%d%s", r.rc, rows[i].e1,
				 rows[i].e1 == 0 ? " (any negative)" : rows[i].e2 ? " or the alternative" : "");
		else if (r.before_null || r.before[0])
			snprintf(why, sizeof why, "a fresh thread's kaio_last_error() was \"%s\"%s", r.before,
				 r.before_null ? " (NULL)" : "");
		else if (r.msg_null || !r.msg[0])
			snprintf(why, sizeof why, "refused (%d) with an empty kaio_last_error()", r.rc);
		else if (strchr(r.msg, '\n') != NULL)
			snprintf(why, sizeof why, "kaio_last_error() is not one line");
		else if (ebadf_row && !fd_known)
			snprintf(why, sizeof why, "an -EBADF row whose fd the test does not know (add it to row_fd)");
		else if (ebadf_row && !has_number(r.msg, bad_fd))
			snprintf(why, sizeof why, "the -EBADF message does not name fd %d", bad_fd);
		else if (ebadf_row && !names_op(r.msg))
			snprintf(why, sizeof why, "the -EBADF message does not name the operation");
		else if (inflight_of(F.ctx) != in0 || inflight_of(F.bctx) != bin0 ||
			 inflight_of(F.extra) != ein0)
			snprintf(why, sizeof why, "changed inflight (%u/%u/%u -> %u/%u/%u)", in0, bin0, ein0,
				 inflight_of(F.ctx), inflight_of(F.bctx), inflight_of(F.extra));
		else if (atomic_load(&F.rel.count) != rel0 || atomic_load(&F.rel2.count) != rel20)
			snprintf(why, sizeof why, "ran a release function");
		if (why[0]) {
			bad++;
			char line[1200];
			int l = snprintf(line, sizeof line, "#   %s: %s: %s [%s]\n", rows[i].name, rows[i].expr,
					 why, r.msg);
			if (len + (size_t)l + 1 > cap) {
				cap = (cap + (size_t)l) * 2;
				report = realloc(report, cap);
			}
			memcpy(report + len, line, (size_t)l + 1);
			len += (size_t)l;
		}
		/* A call wrongly accepted must not leak into the next rows. */
		if (F.tmp_ctx) {
			kaio_ctx_destroy(F.tmp_ctx);
			F.tmp_ctx = NULL;
		}
		if (F.tmp_buf) {
			kaio_buf_unref(F.tmp_buf);
			F.tmp_buf = NULL;
		}
		if (inflight_of(F.ctx) != in0)
			kt_drain(F.ctx);
		if (inflight_of(F.bctx) != bin0)
			kt_drain(F.bctx);
	}
	if (bad) {
		print_error("# %d of %zu refusals misbehaved:\n%s", bad, n, report);
		free(report);
		fail_msg("%d of %zu refusals misbehaved (listed above)", bad, n);
	}
	free(report);
}

#define DEF_ROW(n, e1, e2, expr) static int call_##n(void) { return (expr); }
#define ENT_ROW(n, e1, e2, expr) { #n, #expr, call_##n, e1, e2 },
#define SZ(a) (sizeof(a) / sizeof((a)[0]))

/* ---- tables ------------------------------------------------------------------------- */

#define CTX_ROWS(X) \
	X(ctx_create_null_out, EINVAL, 0, kaio_ctx_create(NULL, 4, 0)) \
	X(ctx_create_cap0, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, 0, 0)) \
	X(ctx_create_cap65537, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, KAIO_CAPACITY_MAX + 1, 0)) \
	X(ctx_create_cap_uint_max, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, UINT_MAX, 0)) \
	X(ctx_create_flag4, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, 4, 0x4)) \
	X(ctx_create_flag_high, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, 4, 0x80000000u)) \
	X(ctx_create_flags_all, EINVAL, 0, kaio_ctx_create(&F.tmp_ctx, 4, ~0u)) \
	X(ctx_destroy_null, EINVAL, 0, kaio_ctx_destroy(NULL)) \
	X(ctx_fd_null, EINVAL, 0, kaio_ctx_fd(NULL)) \
	X(ctx_wake_null, EINVAL, 0, kaio_ctx_wake(NULL)) \
	X(ctx_forget_null, EINVAL, 0, kaio_ctx_forget_fd(NULL, F.fd))

#define BUF_ROWS(X) \
	X(buf_alloc_null_out, EINVAL, 0, kaio_buf_alloc(NULL, 4096, 0)) \
	X(buf_alloc_len0, EINVAL, 0, kaio_buf_alloc(&F.tmp_buf, 0, 0)) \
	X(buf_alloc_flag2, EINVAL, 0, kaio_buf_alloc(&F.tmp_buf, 4096, 0x2)) \
	X(buf_alloc_flag_high, EINVAL, 0, kaio_buf_alloc(&F.tmp_buf, 4096, 0x80000000u)) \
	X(buf_alloc_size_max, 0, 0, kaio_buf_alloc(&F.tmp_buf, SIZE_MAX, 0)) \
	X(buf_alloc_size_huge, 0, 0, kaio_buf_alloc(&F.tmp_buf, SIZE_MAX - 4095, 0)) \
	X(buf_wrap_null_out, EINVAL, 0, kaio_buf_wrap(NULL, F.wmem2, 4096, rel_fn, &F.rel2)) \
	X(buf_wrap_null_data, EINVAL, 0, kaio_buf_wrap(&F.tmp_buf, NULL, 4096, rel_fn, &F.rel2))

#define RW_ROWS(X) \
	X(read_null_ctx, EINVAL, 0, kaio_read(NULL, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_fd_neg, EBADF, 0, kaio_read(F.ctx, -1, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_fd_int_min, EBADF, 0, kaio_read(F.ctx, INT_MIN, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_fd_closed, EBADF, 0, kaio_read(F.ctx, F.closed, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_buf_null, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, NULL, 0, 4096, NULL, 0)) \
	X(read_past_buf, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, F.wbuf, 65536 - 512, 1024, NULL, 0)) \
	X(read_bufoff_at_end, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, F.wbuf, 65536, 512, NULL, 0)) \
	X(read_bufoff_overflow, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, F.wbuf, SIZE_MAX & ~(size_t)511, 1024, NULL, 0)) \
	X(read_len_overflow, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, F.wbuf, 512, SIZE_MAX & ~(size_t)511, NULL, 0)) \
	X(read_len_size_max, EINVAL, 0, kaio_read(F.ctx, F.fd, 0, F.wbuf, 0, SIZE_MAX, NULL, 0)) \
	X(read_offset_2p63, EINVAL, 0, kaio_read(F.ctx, F.fd, 1ull << 63, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_offset_max, EINVAL, 0, kaio_read(F.ctx, F.fd, UINT64_MAX & ~4095ull, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_pipe, 0, 0, kaio_read(F.ctx, F.pipe[0], 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_socket, 0, 0, kaio_read(F.ctx, F.sock[0], 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_dir, 0, 0, kaio_read(F.ctx, F.dir, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_dir_odirect, 0, 0, kaio_read(F.ctx, F.dir_direct, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_dir_allow_buffered, 0, 0, kaio_read(F.bctx, F.dir, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(read_wronly_fd, EBADF, 0, kaio_read(F.ctx, F.wronly, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_null_ctx, EINVAL, 0, kaio_write(NULL, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_fd_neg, EBADF, 0, kaio_write(F.ctx, -1, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_fd_closed, EBADF, 0, kaio_write(F.ctx, F.closed, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_buf_null, EINVAL, 0, kaio_write(F.ctx, F.fd, 0, NULL, 0, 4096, NULL, 0)) \
	X(write_past_buf, EINVAL, 0, kaio_write(F.ctx, F.fd, 0, F.wbuf, 4096, 65536, NULL, 0)) \
	X(write_bufoff_overflow, EINVAL, 0, kaio_write(F.ctx, F.fd, 0, F.wbuf, SIZE_MAX & ~(size_t)511, 1024, NULL, 0)) \
	X(write_len_overflow, EINVAL, 0, kaio_write(F.ctx, F.fd, 0, F.wbuf, 512, SIZE_MAX & ~(size_t)511, NULL, 0)) \
	X(write_offset_2p63, EINVAL, 0, kaio_write(F.ctx, F.fd, 1ull << 63, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_rdonly_fd, EBADF, 0, kaio_write(F.ctx, F.rdonly, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_pipe, 0, 0, kaio_write(F.ctx, F.pipe[1], 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(write_buffered_fd, EINVAL, 0, kaio_write(F.ctx, F.plain, 0, F.wbuf, 0, 4096, NULL, 0))

#define VEC_ROWS(X) \
	X(readv_null_ctx, EINVAL, 0, kaio_readv(NULL, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(readv_fd_neg, EBADF, 0, kaio_readv(F.ctx, -1, 0, F.vec, 2, NULL, 0)) \
	X(readv_fd_closed, EBADF, 0, kaio_readv(F.ctx, F.closed, 0, F.vec, 2, NULL, 0)) \
	X(readv_nvec0, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.vec, 0, NULL, 0)) \
	X(readv_nvec1025, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.bigvec, 1025, NULL, 0)) \
	X(readv_nvec_uint_max, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.bigvec, UINT_MAX, NULL, 0)) \
	X(readv_vec_null, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, NULL, 1, NULL, 0)) \
	X(readv_seg_buf_null, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_nullbuf, 2, NULL, 0)) \
	X(readv_seg_past_buf, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_past, 2, NULL, 0)) \
	X(readv_seg_offset_overflow, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_ovf, 2, NULL, 0)) \
	X(readv_seg_len_overflow, EINVAL, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_lovf, 2, NULL, 0)) \
	X(readv_offset_2p63, EINVAL, 0, kaio_readv(F.ctx, F.fd, 1ull << 63, F.vec, 2, NULL, 0)) \
	X(readv_pipe, 0, 0, kaio_readv(F.ctx, F.pipe[0], 0, F.vec, 2, NULL, 0)) \
	X(writev_null_ctx, EINVAL, 0, kaio_writev(NULL, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(writev_fd_neg, EBADF, 0, kaio_writev(F.ctx, -1, 0, F.vec, 2, NULL, 0)) \
	X(writev_fd_closed, EBADF, 0, kaio_writev(F.ctx, F.closed, 0, F.vec, 2, NULL, 0)) \
	X(writev_nvec0, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, F.vec, 0, NULL, 0)) \
	X(writev_nvec1025, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, F.bigvec, 1025, NULL, 0)) \
	X(writev_vec_null, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, NULL, 2, NULL, 0)) \
	X(writev_seg_buf_null, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, F.vec_nullbuf, 2, NULL, 0)) \
	X(writev_seg_past_buf, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, F.vec_past, 2, NULL, 0)) \
	X(writev_seg_offset_overflow, EINVAL, 0, kaio_writev(F.ctx, F.fd, 0, F.vec_ovf, 2, NULL, 0)) \
	X(writev_offset_max, EINVAL, 0, kaio_writev(F.ctx, F.fd, UINT64_MAX & ~4095ull, F.vec, 2, NULL, 0)) \
	X(writev_rdonly_fd, EBADF, 0, kaio_writev(F.ctx, F.rdonly, 0, F.vec, 2, NULL, 0))

#define SYNC_ROWS(X) \
	X(sync_null_ctx, EINVAL, 0, kaio_sync(NULL, F.fd, KAIO_SYNC_DATA, NULL, 0)) \
	X(sync_fd_neg, EBADF, 0, kaio_sync(F.ctx, -1, KAIO_SYNC_DATA, NULL, 0)) \
	X(sync_fd_closed, EBADF, 0, kaio_sync(F.ctx, F.closed, KAIO_SYNC_FULL, NULL, 0)) \
	X(sync_level0, EINVAL, 0, kaio_sync(F.ctx, F.fd, 0, NULL, 0)) \
	X(sync_level3, EINVAL, 0, kaio_sync(F.ctx, F.fd, 3, NULL, 0)) \
	X(sync_level_uint_max, EINVAL, 0, kaio_sync(F.ctx, F.fd, UINT_MAX, NULL, 0)) \
	X(sync_pipe, 0, 0, kaio_sync(F.ctx, F.pipe[1], KAIO_SYNC_FULL, NULL, 0)) \
	X(sync_socket, 0, 0, kaio_sync(F.ctx, F.sock[0], KAIO_SYNC_DATA, NULL, 0))

#define SUBMIT_ROWS(X) \
	X(submit_null_ctx, EINVAL, 0, kaio_submit(NULL, &F.op_ok, 1)) \
	X(submit_ops_null, EINVAL, 0, kaio_submit(F.ctx, NULL, 1)) \
	X(submit_n_above_int_max, EINVAL, 0, kaio_submit(F.ctx, &F.op_ok, (unsigned)INT_MAX + 1u)) \
	X(submit_n_uint_max, EINVAL, 0, kaio_submit(F.ctx, &F.op_ok, UINT_MAX)) \
	X(submit_op_code0, EINVAL, 0, kaio_submit(F.ctx, &F.op_code0, 1)) \
	X(submit_op_code7, EINVAL, 0, kaio_submit(F.ctx, &F.op_code7, 1)) \
	X(submit_op_code_max, EINVAL, 0, kaio_submit(F.ctx, &F.op_codemax, 1)) \
	X(submit_fd_neg, EBADF, 0, kaio_submit(F.ctx, &F.op_fdneg, 1)) \
	X(submit_fd_closed, EBADF, 0, kaio_submit(F.ctx, &F.op_fdclosed, 1)) \
	X(submit_read_buf_null, EINVAL, 0, kaio_submit(F.ctx, &F.op_buf_null, 1)) \
	X(submit_readv_vec_null, EINVAL, 0, kaio_submit(F.ctx, &F.op_vec_null, 1)) \
	X(submit_readv_nvec0, EINVAL, 0, kaio_submit(F.ctx, &F.op_nvec0, 1)) \
	X(submit_readv_nvec1025, EINVAL, 0, kaio_submit(F.ctx, &F.op_nvec1025, 1)) \
	X(submit_fsync_offset, EINVAL, 0, kaio_submit(F.ctx, &F.op_fsync_off, 1)) \
	X(submit_write_past_buf, EINVAL, 0, kaio_submit(F.ctx, &F.op_past, 1)) \
	X(submit_bufoff_overflow, EINVAL, 0, kaio_submit(F.ctx, &F.op_bufoff_ovf, 1)) \
	X(submit_offset_2p63, EINVAL, 0, kaio_submit(F.ctx, &F.op_offset, 1)) \
	X(submit_reserved, EINVAL, 0, kaio_submit(F.ctx, &F.op_reserved, 1))

#define REAP_ROWS(X) \
	X(poll_null_ctx, EINVAL, 0, kaio_poll(NULL, F.evs, 4)) \
	X(poll_events_null, EINVAL, 0, kaio_poll(F.ctx, NULL, 4)) \
	X(poll_max_above_int_max, EINVAL, 0, kaio_poll(F.ctx, F.evs, (unsigned)INT_MAX + 1u)) \
	X(poll_max_uint_max, EINVAL, 0, kaio_poll(F.ctx, F.evs, UINT_MAX)) \
	X(wait_null_ctx, EINVAL, 0, kaio_wait(NULL, F.evs, 0, 4, 0)) \
	X(wait_events_null, EINVAL, 0, kaio_wait(F.ctx, NULL, 0, 4, 0)) \
	X(wait_max_above_int_max, EINVAL, 0, kaio_wait(F.ctx, F.evs, 0, (unsigned)INT_MAX + 1u, 0)) \
	X(wait_max_uint_max, EINVAL, 0, kaio_wait(F.ctx, F.evs, 0, UINT_MAX, 0)) \
	X(wait_timeout_minus2, EINVAL, 0, kaio_wait(F.ctx, F.evs, 0, 4, -2)) \
	X(wait_timeout_int_min, EINVAL, 0, kaio_wait(F.ctx, F.evs, 0, 4, INT_MIN)) \
	X(align_fd_neg, EBADF, 0, kaio_fd_alignment(-1, &F.u1, &F.u2)) \
	X(align_fd_int_min, EBADF, 0, kaio_fd_alignment(INT_MIN, &F.u1, &F.u2)) \
	X(align_fd_closed, EBADF, 0, kaio_fd_alignment(F.closed, NULL, NULL))

CTX_ROWS(DEF_ROW)
BUF_ROWS(DEF_ROW)
RW_ROWS(DEF_ROW)
VEC_ROWS(DEF_ROW)
SYNC_ROWS(DEF_ROW)
SUBMIT_ROWS(DEF_ROW)
REAP_ROWS(DEF_ROW)

static void prepare_closed(void)
{
	F.closed = closed_fd();
	F.op_fdclosed = F.op_ok;
	F.op_fdclosed.fd = F.closed;
}

/* ---- tests ------------------------------------------------------------------- */

/* Context functions refuse NULL ctx / NULL out / capacity outside 1..65536 / unknown flags with -EINVAL and a message. */
static void test_ctx_badargs(void **state)
{
	static const struct row rows[] = { CTX_ROWS(ENT_ROW) };
	run_rows(rows, SZ(rows));
}

/* Buffer functions refuse NULL out / len 0 / unknown flags / impossible sizes / NULL data; a refused wrap never runs its release. */
static void test_buf_badargs(void **state)
{
	static const struct row rows[] = { BUF_ROWS(ENT_ROW) };
	run_rows(rows, SZ(rows));
}

/* kaio_read/kaio_write: -EBADF for negative/closed fds, -EINVAL for NULL ctx/buf, ranges outside the buffer (incl. overflow), offsets above INT64_MAX; pipe/socket/directory refused; no reference taken. */
static void test_rw_badargs(void **state)
{
	static const struct row rows[] = { RW_ROWS(ENT_ROW) };
	prepare_closed();
	run_rows(rows, SZ(rows));
}

/* kaio_readv/kaio_writev: nvec outside 1..IOV_MAX, vec NULL, bad segments -> -EINVAL; no reference taken to any segment. */
static void test_vec_badargs(void **state)
{
	static const struct row rows[] = { VEC_ROWS(ENT_ROW) };
	prepare_closed();
	run_rows(rows, SZ(rows));
}

/* kaio_sync: NULL ctx, bad fd, unknown level refused; a sync the kernel cannot do (pipe, socket) is refused at submission. */
static void test_sync_badargs(void **state)
{
	static const struct row rows[] = { SYNC_ROWS(ENT_ROW) };
	prepare_closed();
	run_rows(rows, SZ(rows));
}

/* kaio_submit: NULL ctx/ops, n above INT_MAX, unknown op codes and bad single ops refused with -errno (nothing accepted). */
static void test_submit_badargs(void **state)
{
	static const struct row rows[] = { SUBMIT_ROWS(ENT_ROW) };
	prepare_closed();
	run_rows(rows, SZ(rows));
}

/* kaio_poll/kaio_wait/kaio_fd_alignment: NULL ctx/events, max above INT_MAX, timeout below -1, bad fds refused. */
static void test_reap_badargs(void **state)
{
	static const struct row rows[] = { REAP_ROWS(ENT_ROW) };
	prepare_closed();
	run_rows(rows, SZ(rows));
}

/* Functions that cannot return -errno answer NULL/0 for NULL handles; kaio_strerror never returns NULL. */
static void test_non_int_null(void **state)
{
	assert_int_equal(kaio_ctx_capacity(NULL), 0);
	assert_int_equal(kaio_ctx_inflight(NULL), 0);
	assert_null(kaio_buf_data(NULL));
	assert_int_equal(kaio_buf_len(NULL), 0);
	assert_null(kaio_buf_ref(NULL));
	kaio_buf_unref(NULL);
	static const int errs[] = { 0, EINVAL, -EINVAL, -EAGAIN, EBADF, -ESHUTDOWN, 4095, -4095, 100000,
				    -100000, INT_MAX, INT_MIN };
	for (size_t i = 0; i < SZ(errs); i++) {
		const char *s = kaio_strerror(errs[i]);
		if (!s)
			fail_msg("kaio_strerror(%d) returned NULL", errs[i]);
	}
	assert_true(kaio_strerror(-EINVAL)[0] != 0);
	assert_true(kaio_strerror(EBADF)[0] != 0);
}


#define CAP_ROWS(X) \
	X(cap_misaligned, EINVAL, 0, kaio_read(F.extra, F.fd, 100, F.wbuf, 0, 4096, NULL, 0)) \
	X(cap_fd_neg, EBADF, 0, kaio_read(F.extra, -1, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(cap_offset, EINVAL, 0, kaio_write(F.extra, F.fd, 1ull << 63, F.wbuf, 0, 4096, NULL, 0)) \
	X(cap_past_buf, EINVAL, 0, kaio_read(F.extra, F.fd, 0, F.wbuf, 65536, 4096, NULL, 0)) \
	X(cap_buffered_fd, EINVAL, 0, kaio_read(F.extra, F.plain, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(cap_sync_level, EINVAL, 0, kaio_sync(F.extra, F.fd, 0, NULL, 0)) \
	X(cap_readv_nvec0, EINVAL, 0, kaio_readv(F.extra, F.fd, 0, F.vec, 0, NULL, 0)) \
	X(cap_submit_code, EINVAL, 0, kaio_submit(F.extra, &F.op_code0, 1)) \
	X(cap_submit_misaligned, EINVAL, 0, kaio_submit(F.extra, &F.op_misaligned, 1)) \
	X(cap_submit_n_huge, EINVAL, 0, kaio_submit(F.extra, &F.op_ok, UINT_MAX)) \
	X(cap_good_read, EAGAIN, 0, kaio_read(F.extra, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(cap_good_sync, EAGAIN, 0, kaio_sync(F.extra, F.fd, KAIO_SYNC_FULL, NULL, 0)) \
	X(cap_good_submit, EAGAIN, 0, kaio_submit(F.extra, &F.op_ok, 1))
CAP_ROWS(DEF_ROW)

/* Arguments are validated before capacity is checked: at capacity a bad request gets its own error, not -EAGAIN (and -EAGAIN sets a message). */
static void test_validated_before_capacity(void **state)
{
	static const struct row rows[] = { CAP_ROWS(ENT_ROW) };
	kaio_ctx *c = kt_ctx(1, 0);
	assert_int_equal(kaio_read(c, F.fd, 0, F.buf, 0, 4096, NULL, 1), 0);
	assert_int_equal(kaio_ctx_inflight(c), 1);
	F.extra = c;
	run_rows(rows, SZ(rows));
	F.extra = NULL;
	struct kaio_event ev;
	kt_wait_n(c, &ev, 1);
	assert_int_equal(ev.user_data, 1);
	kaio_buf_unref(ev.buf);
	assert_int_equal(kaio_ctx_destroy(c), 0);
}

#define DEAD_CTX_ROWS(X) \
	X(dead_ctx_destroy, 0, 0, kaio_ctx_destroy(F.dead_ctx)) \
	X(dead_ctx_fd, 0, 0, kaio_ctx_fd(F.dead_ctx)) \
	X(dead_ctx_wake, 0, 0, kaio_ctx_wake(F.dead_ctx)) \
	X(dead_ctx_forget, 0, 0, kaio_ctx_forget_fd(F.dead_ctx, F.fd)) \
	X(dead_ctx_read, 0, 0, kaio_read(F.dead_ctx, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(dead_ctx_write, 0, 0, kaio_write(F.dead_ctx, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(dead_ctx_readv, 0, 0, kaio_readv(F.dead_ctx, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(dead_ctx_writev, 0, 0, kaio_writev(F.dead_ctx, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(dead_ctx_sync, 0, 0, kaio_sync(F.dead_ctx, F.fd, KAIO_SYNC_DATA, NULL, 0)) \
	X(dead_ctx_submit, 0, 0, kaio_submit(F.dead_ctx, &F.op_ok, 1)) \
	X(dead_ctx_poll, 0, 0, kaio_poll(F.dead_ctx, F.evs, 4)) \
	X(dead_ctx_wait, 0, 0, kaio_wait(F.dead_ctx, F.evs, 0, 4, 0)) \
	X(dead_ctx_destroy_again, 0, 0, kaio_ctx_destroy(F.dead_ctx))
DEAD_CTX_ROWS(DEF_ROW)

/* A destroyed context is refused, not trusted (negative errno, message, no crash); double destroy frees nothing twice. */
static void test_destroyed_ctx(void **state)
{
	static const struct row rows[] = { DEAD_CTX_ROWS(ENT_ROW) };
	kaio_ctx *c = kt_ctx(2, 0);
	assert_int_equal(kaio_read(c, F.fd, 0, F.buf, 0, 4096, NULL, 1), 0);
	struct kaio_event ev;
	kt_wait_n(c, &ev, 1);
	kaio_buf_unref(ev.buf);
	assert_int_equal(kaio_ctx_destroy(c), 0);
	F.dead_ctx = c;
	run_rows(rows, SZ(rows));
	assert_int_equal(kaio_ctx_capacity(c), 0);
	assert_int_equal(kaio_ctx_inflight(c), 0);
	F.dead_ctx = NULL;

	/* The library is intact: two new contexts are distinct and work. */
	kaio_ctx *a = kt_ctx(2, 0), *b = kt_ctx(2, 0);
	assert_ptr_not_equal(a, b);
	assert_true(kaio_ctx_fd(a) >= 0 && kaio_ctx_fd(b) >= 0);
	assert_int_not_equal(kaio_ctx_fd(a), kaio_ctx_fd(b));
	assert_int_equal(kaio_read(a, F.fd, 0, F.buf, 0, 4096, NULL, 2), 0);
	assert_int_equal(kaio_ctx_inflight(b), 0);
	kt_wait_n(a, &ev, 1);
	assert_int_equal(ev.user_data, 2);
	kaio_buf_unref(ev.buf);
	assert_int_equal(kaio_ctx_destroy(a), 0);
	assert_int_equal(kaio_ctx_destroy(b), 0);
}

#define FOREIGN_ROWS(X) \
	X(foreign_ctx_destroy, 0, 0, kaio_ctx_destroy(F.foreign_ctx)) \
	X(foreign_ctx_fd, 0, 0, kaio_ctx_fd(F.foreign_ctx)) \
	X(foreign_ctx_wake, 0, 0, kaio_ctx_wake(F.foreign_ctx)) \
	X(foreign_ctx_forget, 0, 0, kaio_ctx_forget_fd(F.foreign_ctx, F.fd)) \
	X(foreign_ctx_read, 0, 0, kaio_read(F.foreign_ctx, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(foreign_ctx_write, 0, 0, kaio_write(F.foreign_ctx, F.fd, 0, F.wbuf, 0, 4096, NULL, 0)) \
	X(foreign_ctx_readv, 0, 0, kaio_readv(F.foreign_ctx, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(foreign_ctx_writev, 0, 0, kaio_writev(F.foreign_ctx, F.fd, 0, F.vec, 2, NULL, 0)) \
	X(foreign_ctx_sync, 0, 0, kaio_sync(F.foreign_ctx, F.fd, KAIO_SYNC_FULL, NULL, 0)) \
	X(foreign_ctx_submit, 0, 0, kaio_submit(F.foreign_ctx, &F.op_ok, 1)) \
	X(foreign_ctx_poll, 0, 0, kaio_poll(F.foreign_ctx, F.evs, 4)) \
	X(foreign_ctx_wait, 0, 0, kaio_wait(F.foreign_ctx, F.evs, 0, 4, 0)) \
	X(foreign_buf_read, 0, 0, kaio_read(F.ctx, F.fd, 0, F.foreign_buf, 0, 4096, NULL, 0)) \
	X(foreign_buf_write, 0, 0, kaio_write(F.ctx, F.fd, 0, F.foreign_buf, 0, 4096, NULL, 0)) \
	X(foreign_buf_readv, 0, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_foreign, 2, NULL, 0)) \
	X(foreign_buf_submit, 0, 0, kaio_submit(F.ctx, &F.op_foreign_buf, 1))
FOREIGN_ROWS(DEF_ROW)

static _Alignas(4096) unsigned char foreign_mem[16384];
static unsigned char foreign_copy[16384];

/* A foreign pointer (not a handle the library made) passed as kaio_ctx* or kaio_buf* is refused, never written through. */
static void test_foreign_pointers(void **state)
{
	static const struct row rows[] = { FOREIGN_ROWS(ENT_ROW) };
	static const int fills[] = { 0x00, 0xA5, 0xFF };
	for (size_t k = 0; k < SZ(fills); k++) {
		memset(foreign_mem, fills[k], sizeof foreign_mem);
		if (fills[k] == 0xA5) /* plausible-looking words: a pointer to itself, small counts */
			for (size_t i = 0; i < sizeof foreign_mem; i += 16) {
				void *self = foreign_mem + i;
				memcpy(foreign_mem + i, &self, sizeof self);
			}
		memcpy(foreign_copy, foreign_mem, sizeof foreign_mem);
		/* In the middle, so that reads a little before or after stay in bounds. */
		F.foreign_ctx = (kaio_ctx *)(void *)(foreign_mem + 8192);
		F.foreign_buf = (kaio_buf *)(void *)(foreign_mem + 8192);
		F.vec_foreign[0] = (struct kaio_vec){ F.wbuf, 0, 4096 };
		F.vec_foreign[1] = (struct kaio_vec){ F.foreign_buf, 0, 4096 };
		F.op_foreign_buf = mkop(KAIO_OP_READ, F.fd, 0, F.foreign_buf, 0, 4096);
		run_rows(rows, SZ(rows));
		assert_int_equal(kaio_ctx_capacity(F.foreign_ctx), 0);
		assert_int_equal(kaio_ctx_inflight(F.foreign_ctx), 0);
		assert_null(kaio_buf_ref(F.foreign_buf));
		assert_null(kaio_buf_data(F.foreign_buf));
		assert_int_equal(kaio_buf_len(F.foreign_buf), 0);
		kaio_buf_unref(F.foreign_buf);
		if (memcmp(foreign_copy, foreign_mem, sizeof foreign_mem) != 0)
			fail_msg("the library wrote into foreign memory (fill %#x)", fills[k]);
	}
}

#define DEAD_BUF_ROWS(X) \
	X(dead_buf_read, 0, 0, kaio_read(F.ctx, F.fd, 0, F.dead_buf, 0, 4096, NULL, 0)) \
	X(dead_buf_write, 0, 0, kaio_write(F.ctx, F.fd, 0, F.dead_buf, 0, 4096, NULL, 0)) \
	X(dead_buf_readv, 0, 0, kaio_readv(F.ctx, F.fd, 0, F.vec_dead, 2, NULL, 0)) \
	X(dead_buf_submit, 0, 0, kaio_submit(F.ctx, &F.op_dead_buf, 1))
DEAD_BUF_ROWS(DEF_ROW)

/* Double unref of a buffer whose count reached zero: no crash, release not run twice, the handle is refused afterwards, the pool is not corrupted. */
static void test_double_unref(void **state)
{
	static const struct row rows[] = { DEAD_BUF_ROWS(ENT_ROW) };
	int base = atomic_load(&F.rel2.count);
	kaio_buf *b = NULL;
	assert_int_equal(kaio_buf_wrap(&b, F.wmem2, 4096, rel_fn, &F.rel2), 0);
	kaio_buf_unref(b);
	assert_int_equal(atomic_load(&F.rel2.count), base + 1);
	kaio_buf_unref(b);
	assert_int_equal(atomic_load(&F.rel2.count), base + 1);
	kaio_buf *again = kaio_buf_ref(b);
	if (again)
		kaio_buf_unref(again);
	if (atomic_load(&F.rel2.count) != base + 1)
		fail_msg("kaio_buf_ref on a dead handle revived it: the release ran twice");

	F.dead_buf = b;
	F.vec_dead[0] = (struct kaio_vec){ F.wbuf, 0, 4096 };
	F.vec_dead[1] = (struct kaio_vec){ b, 0, 4096 };
	F.op_dead_buf = mkop(KAIO_OP_READ, F.fd, 0, b, 0, 4096);
	run_rows(rows, SZ(rows));
	assert_int_equal(atomic_load(&F.rel2.count), base + 1);
	F.dead_buf = NULL;

	/* kaio_buf_alloc handles: a double unref must not hand one block out twice. */
	kaio_buf *x = kt_buf(4096);
	kaio_buf_unref(x);
	kaio_buf_unref(x);
	kaio_buf *y = kt_buf(4096), *z = kt_buf(4096);
	assert_ptr_not_equal(y, z);
	assert_ptr_not_equal(kaio_buf_data(y), kaio_buf_data(z));
	memset(kaio_buf_data(y), 0x11, 4096);
	assert_int_equal(((unsigned char *)kaio_buf_data(z))[0], 0);
	kaio_buf_unref(y);
	kaio_buf_unref(z);
}

/* ---- kaio_last_error ------------------------------------------------------------ */

struct le_fresh {
	int null;
	char msg[256];
};

static void *le_fresh_thread(void *p)
{
	struct le_fresh *r = p;
	const char *m = kaio_last_error();
	r->null = m == NULL;
	snprintf(r->msg, sizeof r->msg, "%s", m ? m : "");
	return NULL;
}

/* kaio_last_error() is "" (not NULL) on a thread that had no failure. */
static void test_last_error_fresh_thread(void **state)
{
	/* Make sure this thread has a message, so a global one would show. */
	assert_true(kaio_ctx_create(NULL, 1, 0) < 0);
	assert_true(kaio_last_error()[0] != 0);
	struct le_fresh r;
	memset(&r, 0, sizeof r);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, le_fresh_thread, &r), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(r.null);
	if (r.msg[0])
		fail_msg("a fresh thread's kaio_last_error() is \"%s\"", r.msg);
}

struct le_keep {
	char first[512];
	const char *broke_at; /* the success that changed the message, or NULL */
	char after[512];
};

#define KEEP_STEP(name, stmt) do { stmt; if (strcmp(kaio_last_error(), r->first) != 0) { \
	r->broke_at = name; snprintf(r->after, sizeof r->after, "%s", kaio_last_error()); return NULL; } } while (0)

static void *le_keep_thread(void *p)
{
	struct le_keep *r = p;
	(void)kaio_ctx_create(NULL, 4, 0);
	snprintf(r->first, sizeof r->first, "%s", kaio_last_error());
	if (!r->first[0]) {
		r->broke_at = "(the failure set no message)";
		return NULL;
	}
	kaio_buf *b = NULL;
	kaio_ctx *c = NULL;
	uint32_t m = 0, o = 0;
	struct kaio_event ev[2];
	KEEP_STEP("kaio_buf_alloc", if (kaio_buf_alloc(&b, 4096, 0) != 0) { r->broke_at = "kaio_buf_alloc failed"; return NULL; });
	KEEP_STEP("kaio_buf_ref/unref", kaio_buf_unref(kaio_buf_ref(b)));
	KEEP_STEP("kaio_buf_data", (void)kaio_buf_data(b));
	KEEP_STEP("kaio_fd_alignment", if (kaio_fd_alignment(F.fd, &m, &o) != 0) { r->broke_at = "kaio_fd_alignment failed"; return NULL; });
	KEEP_STEP("kaio_version", (void)kaio_version());
	KEEP_STEP("kaio_strerror", (void)kaio_strerror(-EINVAL));
	KEEP_STEP("kaio_ctx_create", if (kaio_ctx_create(&c, 1, 0) != 0) { r->broke_at = "kaio_ctx_create failed"; return NULL; });
	KEEP_STEP("kaio_ctx_fd", (void)kaio_ctx_fd(c));
	KEEP_STEP("kaio_read", if (kaio_read(c, F.fd, 0, b, 0, 4096, NULL, 5) != 0) { r->broke_at = "kaio_read failed"; return NULL; });
	KEEP_STEP("kaio_wait", if (kaio_wait(c, ev, 1, 2, 10000) != 1) { r->broke_at = "kaio_wait did not return 1"; return NULL; });
	kaio_buf_unref(ev[0].buf);
	KEEP_STEP("kaio_poll", (void)kaio_poll(c, ev, 2));
	KEEP_STEP("kaio_ctx_wake", (void)kaio_ctx_wake(c));
	KEEP_STEP("kaio_ctx_forget_fd", (void)kaio_ctx_forget_fd(c, F.fd));
	KEEP_STEP("kaio_ctx_destroy", (void)kaio_ctx_destroy(c));
	KEEP_STEP("kaio_buf_unref", kaio_buf_unref(b));
	return NULL;
}

/* Only failures set kaio_last_error(): success leaves it. */
static void test_last_error_success_keeps(void **state)
{
	struct le_keep r;
	memset(&r, 0, sizeof r);
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, le_keep_thread, &r), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (r.broke_at)
		fail_msg("after a successful %s, kaio_last_error() changed from \"%s\" to \"%s\"", r.broke_at,
			 r.first, r.after);
}

static pthread_barrier_t le_bar;

struct le_pt {
	int which;
	char own[512];
	char start[512];
	char end[512];
};

static void *le_pt_thread(void *p)
{
	struct le_pt *r = p;
	snprintf(r->start, sizeof r->start, "%s", kaio_last_error());
	if (r->which == 0) {
		kaio_ctx *c = NULL;
		(void)kaio_ctx_create(&c, 0, 0);
		snprintf(r->own, sizeof r->own, "%s", kaio_last_error());
		pthread_barrier_wait(&le_bar); /* A has failed */
		pthread_barrier_wait(&le_bar); /* B has failed */
	} else {
		pthread_barrier_wait(&le_bar); /* A has failed */
		snprintf(r->start, sizeof r->start, "%s", kaio_last_error());
		(void)kaio_fd_alignment(-1, NULL, NULL);
		snprintf(r->own, sizeof r->own, "%s", kaio_last_error());
		pthread_barrier_wait(&le_bar); /* B has failed */
	}
	snprintf(r->end, sizeof r->end, "%s", kaio_last_error());
	return NULL;
}

/* kaio_last_error() is per thread: one thread's failure is invisible to others. */
static void test_last_error_per_thread(void **state)
{
	kaio_buf *b = NULL;
	assert_true(kaio_buf_alloc(&b, 0, 0) < 0);
	char mine[512];
	snprintf(mine, sizeof mine, "%s", kaio_last_error());
	assert_true(mine[0] != 0);

	struct le_pt ra, rb;
	memset(&ra, 0, sizeof ra);
	memset(&rb, 0, sizeof rb);
	ra.which = 0;
	rb.which = 1;
	assert_int_equal(pthread_barrier_init(&le_bar, NULL, 2), 0);
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, le_pt_thread, &ra), 0);
	assert_int_equal(pthread_create(&tb, NULL, le_pt_thread, &rb), 0);
	assert_int_equal(pthread_join(ta, NULL), 0);
	assert_int_equal(pthread_join(tb, NULL), 0);
	pthread_barrier_destroy(&le_bar);

	assert_string_equal(ra.start, "");
	if (rb.start[0])
		fail_msg("thread B saw thread A's failure: \"%s\"", rb.start);
	assert_true(ra.own[0] != 0);
	assert_true(rb.own[0] != 0);
	assert_string_not_equal(ra.own, rb.own);
	if (strcmp(ra.end, ra.own) != 0)
		fail_msg("thread A's message changed from \"%s\" to \"%s\" by thread B's failure", ra.own, ra.end);
	assert_string_equal(rb.end, rb.own);
	if (strcmp(kaio_last_error(), mine) != 0)
		fail_msg("the main thread's message changed from \"%s\" to \"%s\"", mine, kaio_last_error());
}

/* ---- a learnt fd that was closed -------------------------------------------------- */

/* A closed fd is refused with -EBADF even after the context learnt (and may have cached) it. */
static void test_closed_after_learning(void **state)
{
	int fd = open(kt_path("ba.dat"), O_RDWR | O_DIRECT);
	assert_true(fd >= 0);
	assert_int_equal(kaio_read(F.ctx, fd, 0, F.buf, 0, 4096, NULL, 9), 0);
	struct kaio_event ev;
	kt_wait_n(F.ctx, &ev, 1);
	kaio_buf_unref(ev.buf);
	close(fd);
	assert_int_equal(fcntl(fd, F_GETFD), -1);
	F.closed = fd;
	F.op_fdclosed = F.op_ok;
	F.op_fdclosed.fd = fd;
	static const struct row rows[] = {
		{ "learnt_closed_read", "kaio_read(closed)", call_read_fd_closed, EBADF, 0 },
		{ "learnt_closed_write", "kaio_write(closed)", call_write_fd_closed, EBADF, 0 },
		{ "learnt_closed_readv", "kaio_readv(closed)", call_readv_fd_closed, EBADF, 0 },
		{ "learnt_closed_sync", "kaio_sync(closed)", call_sync_fd_closed, EBADF, 0 },
		{ "learnt_closed_submit", "kaio_submit(closed)", call_submit_fd_closed, EBADF, 0 },
	};
	run_rows(rows, SZ(rows));
	kaio_ctx_forget_fd(F.ctx, fd);
}

/* Every refused call above took no reference: the wrapped buffer used in them is released by the caller's single unref. */
static void test_no_reference_leaked(void **state)
{
	assert_int_equal(kaio_ctx_inflight(F.ctx), 0);
	assert_int_equal(kaio_ctx_inflight(F.bctx), 0);
	assert_int_equal(atomic_load(&F.rel.count), 0);
	kaio_buf_unref(F.wbuf);
	if (atomic_load(&F.rel.count) != 1)
		fail_msg("a refused call kept a reference to the wrapped buffer (release count %d after the caller's unref)",
			 atomic_load(&F.rel.count));
}

/* ---- refusals leak no descriptor ---------------------------------------------------- */

/* "A failed call changes nothing ... nothing leaked": every refusal of every
 * table above (bad arguments, a context at capacity, a destroyed context,
 * foreign pointers, a dead buffer), 200 times over, leaves the number of
 * open file descriptors as it was. */
static void test_refusals_leak_no_fd(void **state)
{
	static const struct row rows[] = {
		CTX_ROWS(ENT_ROW) BUF_ROWS(ENT_ROW) RW_ROWS(ENT_ROW) VEC_ROWS(ENT_ROW) SYNC_ROWS(ENT_ROW)
		SUBMIT_ROWS(ENT_ROW) REAP_ROWS(ENT_ROW) CAP_ROWS(ENT_ROW) DEAD_CTX_ROWS(ENT_ROW)
		FOREIGN_ROWS(ENT_ROW) DEAD_BUF_ROWS(ENT_ROW)
	};
	/* A context at capacity (the CAP rows). */
	kaio_ctx *full = kt_ctx(1, 0);
	assert_int_equal(kaio_read(full, F.fd, 0, F.buf, 0, 4096, NULL, 1), 0);
	F.extra = full;
	/* A destroyed context. */
	kaio_ctx *dead = kt_ctx(2, 0);
	assert_int_equal(kaio_ctx_destroy(dead), 0);
	F.dead_ctx = dead;
	/* Foreign pointers. */
	memset(foreign_mem, 0xA5, sizeof foreign_mem);
	F.foreign_ctx = (kaio_ctx *)(void *)(foreign_mem + 8192);
	F.foreign_buf = (kaio_buf *)(void *)(foreign_mem + 8192);
	F.vec_foreign[0] = (struct kaio_vec){ F.wbuf, 0, 4096 };
	F.vec_foreign[1] = (struct kaio_vec){ F.foreign_buf, 0, 4096 };
	F.op_foreign_buf = mkop(KAIO_OP_READ, F.fd, 0, F.foreign_buf, 0, 4096);
	/* A dead buffer. */
	kaio_buf *db = NULL;
	assert_int_equal(kaio_buf_wrap(&db, F.wmem2, 4096, rel_fn, &F.rel2), 0);
	kaio_buf_unref(db);
	F.dead_buf = db;
	F.vec_dead[0] = (struct kaio_vec){ F.wbuf, 0, 4096 };
	F.vec_dead[1] = (struct kaio_vec){ db, 0, 4096 };
	F.op_dead_buf = mkop(KAIO_OP_READ, F.fd, 0, db, 0, 4096);
	/* A closed number far above the others: should a refusal leak a
	 * descriptor, the leak shows in the count, not by reusing this one. */
	F.closed = 900;
	while (fcntl(F.closed, F_GETFD) != -1)
		F.closed++;
	F.op_fdclosed = F.op_ok;
	F.op_fdclosed.fd = F.closed;

	const int before = kt_count_fds();
	int bad = 0;
	char first[600] = "";
	for (int it = 0; it < 200; it++) {
		for (size_t i = 0; i < SZ(rows); i++) {
			int rc = rows[i].call();
			int ok_rc = (rows[i].e1 == 0 && rc < 0) || rc == -rows[i].e1 || (rows[i].e2 && rc == -rows[i].e2);
			if (!ok_rc && bad++ == 0)
				snprintf(first, sizeof first, "%s: %s = %d (%s)", rows[i].name, rows[i].expr, rc,
					 kaio_last_error());
			if (F.tmp_ctx) {
				kaio_ctx_destroy(F.tmp_ctx);
				F.tmp_ctx = NULL;
			}
			if (F.tmp_buf) {
				kaio_buf_unref(F.tmp_buf);
				F.tmp_buf = NULL;
			}
		}
	}
	const int after = kt_count_fds();

	F.extra = NULL;
	F.dead_ctx = NULL;
	F.foreign_ctx = NULL;
	F.foreign_buf = NULL;
	F.dead_buf = NULL;
	kt_drain(full);
	assert_int_equal(kaio_ctx_destroy(full), 0);
	kt_drain(F.ctx);
	kt_drain(F.bctx);
	if (after != before)
		fail_msg("%d open fds before %zu refusals, %d after: a refusal leaked a descriptor", before,
			 200 * SZ(rows), after);
	if (bad)
		fail_msg("%d of %zu calls were not refused as expected; first: %s", bad, 200 * SZ(rows), first);
}

/* Wrong kind of fd: a tmpfs file.  Opened without O_DIRECT it is refused
 * like any buffered fd (-EINVAL, naming O_DIRECT); with O_DIRECT, older
 * kernels refuse the open itself, newer ones (6.6+) do direct I/O on tmpfs,
 * which the library then accepts like any other file. */
static void test_tmpfs_fd(void **state)
{
	char path[] = "/dev/shm/kaio-badargs-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0) {
		skip(); /* no /dev/shm here */
		return;
	}
	unlink(path);
	assert_int_equal(ftruncate(fd, 65536), 0);
	unsigned in0 = kaio_ctx_inflight(F.ctx);
	REFUSED(EINVAL, kaio_read(F.ctx, fd, 0, F.buf, 0, 4096, NULL, 0));
	assert_non_null(strstr(kaio_last_error(), "O_DIRECT"));
	assert_int_equal(kaio_ctx_inflight(F.ctx), in0);
	close(fd);
	char dpath[] = "/dev/shm/kaio-badargs-d-XXXXXX";
	int tmp = mkstemp(dpath);
	assert_true(tmp >= 0);
	close(tmp);
	int dfd = open(dpath, O_RDWR | O_DIRECT);
	unlink(dpath);
	if (dfd < 0) {
		assert_int_equal(errno, EINVAL); /* this kernel's tmpfs refuses O_DIRECT */
		return;
	}
	assert_int_equal(ftruncate(dfd, 65536), 0);
	assert_int_equal(kaio_read(F.ctx, dfd, 0, F.buf, 0, 4096, NULL, 77), 0);
	struct kaio_event ev;
	assert_int_equal(kt_wait_n(F.ctx, &ev, 1), 1);
	assert_int_equal(ev.user_data, 77);
	assert_int_equal(ev.res, 4096);
	kaio_buf_unref(ev.buf);
	assert_int_equal(kaio_ctx_forget_fd(F.ctx, dfd), 0);
	close(dfd);
}

int main(void)
{
	kt_require_aio();
	alarm(900); /* a hung case fails the program instead of blocking forever */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_badargs),
		cmocka_unit_test(test_buf_badargs),
		cmocka_unit_test(test_rw_badargs),
		cmocka_unit_test(test_vec_badargs),
		cmocka_unit_test(test_sync_badargs),
		cmocka_unit_test(test_submit_badargs),
		cmocka_unit_test(test_reap_badargs),
		cmocka_unit_test(test_non_int_null),
		cmocka_unit_test(test_validated_before_capacity),
		cmocka_unit_test(test_destroyed_ctx),
		cmocka_unit_test(test_foreign_pointers),
		cmocka_unit_test(test_double_unref),
		cmocka_unit_test(test_last_error_fresh_thread),
		cmocka_unit_test(test_last_error_success_keeps),
		cmocka_unit_test(test_last_error_per_thread),
		cmocka_unit_test(test_closed_after_learning),
		cmocka_unit_test(test_refusals_leak_no_fd),
		cmocka_unit_test(test_no_reference_leaked),
		cmocka_unit_test(test_tmpfs_fd),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
