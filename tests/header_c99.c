/* The public header compiles as strict C99 (-std=c99 -pedantic -Werror),
 * on its own, and declares every name of the contract (API.md
 * "Conventions"): each function is assigned to a pointer of exactly the
 * documented type, each constant and type is used, and the ABI struct
 * sizes are checked at compile time. */
#include "kaio.h"

/* Compile-time assertions by the negative-array trick (C99 has no
 * _Static_assert). */
#define KT_ASSERT(name, cond) typedef char kt_assert_##name[(cond) ? 1 : -1]

#if defined(__x86_64__)
KT_ASSERT(event_size, sizeof(struct kaio_event) == 64);
KT_ASSERT(op_size, sizeof(struct kaio_op) == 96);
KT_ASSERT(vec_size, sizeof(struct kaio_vec) == 24);
KT_ASSERT(event_res, offsetof(struct kaio_event, res) == 8);
KT_ASSERT(event_offset, offsetof(struct kaio_event, offset) == 16);
KT_ASSERT(event_ctx, offsetof(struct kaio_event, ctx) == 24);
KT_ASSERT(event_buf, offsetof(struct kaio_event, buf) == 32);
KT_ASSERT(event_fd, offsetof(struct kaio_event, fd) == 40);
KT_ASSERT(event_op, offsetof(struct kaio_event, op) == 44);
KT_ASSERT(event_reserved, offsetof(struct kaio_event, reserved) == 48);
KT_ASSERT(op_fd, offsetof(struct kaio_op, fd) == 4);
KT_ASSERT(op_offset, offsetof(struct kaio_op, offset) == 8);
KT_ASSERT(op_buf_offset, offsetof(struct kaio_op, buf_offset) == 16);
KT_ASSERT(op_len, offsetof(struct kaio_op, len) == 24);
KT_ASSERT(op_user_data, offsetof(struct kaio_op, user_data) == 32);
KT_ASSERT(op_buf, offsetof(struct kaio_op, buf) == 40);
KT_ASSERT(op_vec, offsetof(struct kaio_op, vec) == 48);
KT_ASSERT(op_cb, offsetof(struct kaio_op, cb) == 56);
KT_ASSERT(op_nvec, offsetof(struct kaio_op, nvec) == 64);
KT_ASSERT(op_rw_flags, offsetof(struct kaio_op, rw_flags) == 68);
KT_ASSERT(op_ioprio, offsetof(struct kaio_op, ioprio) == 72);
KT_ASSERT(op_reserved32, offsetof(struct kaio_op, reserved32) == 76);
KT_ASSERT(op_reserved, offsetof(struct kaio_op, reserved) == 80);
KT_ASSERT(vec_offset, offsetof(struct kaio_vec, offset) == 8);
KT_ASSERT(vec_len, offsetof(struct kaio_vec, len) == 16);
#endif

/* Field types are the documented fixed-width ones. */
KT_ASSERT(event_user_data_u64, sizeof(((struct kaio_event *)0)->user_data) == 8);
KT_ASSERT(event_res_i64, sizeof(((struct kaio_event *)0)->res) == 8);
KT_ASSERT(event_fd_i32, sizeof(((struct kaio_event *)0)->fd) == 4);
KT_ASSERT(op_op_u32, sizeof(((struct kaio_op *)0)->op) == 4);

/* Constants, with the documented values. */
KT_ASSERT(op_codes, KAIO_OP_READ == 1 && KAIO_OP_WRITE == 2 && KAIO_OP_READV == 3 &&
		    KAIO_OP_WRITEV == 4 && KAIO_OP_FSYNC == 5 && KAIO_OP_FDATASYNC == 6);
KT_ASSERT(sync_levels, KAIO_SYNC_DATA == 1 && KAIO_SYNC_FULL == 2);
KT_ASSERT(ctx_flags, KAIO_CTX_ALLOW_BUFFERED != 0 && KAIO_CTX_SINGLE_THREAD != 0 &&
		     (KAIO_CTX_ALLOW_BUFFERED & KAIO_CTX_SINGLE_THREAD) == 0);
KT_ASSERT(buf_flags, KAIO_BUF_LOCKED != 0);
KT_ASSERT(rwf, KAIO_RWF_NOWAIT && KAIO_RWF_DSYNC && KAIO_RWF_SYNC && KAIO_RWF_APPEND &&
	       ((KAIO_RWF_NOWAIT | KAIO_RWF_DSYNC) & (KAIO_RWF_SYNC | KAIO_RWF_APPEND)) == 0);
KT_ASSERT(capacity_max, KAIO_CAPACITY_MAX == 65536u);
KT_ASSERT(version, KAIO_VERSION_MAJOR >= 1 && KAIO_VERSION_MINOR >= 0 && KAIO_VERSION_PATCH >= 0);

/* Every function, through a pointer of exactly its documented type. */
static const char *(*const p_strerror)(int) = kaio_strerror;
static const char *(*const p_last_error)(void) = kaio_last_error;
static const char *(*const p_version)(void) = kaio_version;
static int (*const p_ctx_create)(kaio_ctx **, unsigned, unsigned) = kaio_ctx_create;
static int (*const p_ctx_destroy)(kaio_ctx *) = kaio_ctx_destroy;
static int (*const p_ctx_fd)(const kaio_ctx *) = kaio_ctx_fd;
static int (*const p_ctx_wake)(kaio_ctx *) = kaio_ctx_wake;
static int (*const p_ctx_forget_fd)(kaio_ctx *, int) = kaio_ctx_forget_fd;
static unsigned (*const p_ctx_capacity)(const kaio_ctx *) = kaio_ctx_capacity;
static unsigned (*const p_ctx_inflight)(const kaio_ctx *) = kaio_ctx_inflight;
static int (*const p_buf_alloc)(kaio_buf **, size_t, unsigned) = kaio_buf_alloc;
static int (*const p_buf_wrap)(kaio_buf **, void *, size_t, kaio_release_fn, void *) = kaio_buf_wrap;
static kaio_buf *(*const p_buf_ref)(kaio_buf *) = kaio_buf_ref;
static void (*const p_buf_unref)(kaio_buf *) = kaio_buf_unref;
static void *(*const p_buf_data)(const kaio_buf *) = kaio_buf_data;
static size_t (*const p_buf_len)(const kaio_buf *) = kaio_buf_len;
static int (*const p_read)(kaio_ctx *, int, uint64_t, kaio_buf *, size_t, size_t, kaio_cb, uint64_t) = kaio_read;
static int (*const p_write)(kaio_ctx *, int, uint64_t, kaio_buf *, size_t, size_t, kaio_cb, uint64_t) = kaio_write;
static int (*const p_readv)(kaio_ctx *, int, uint64_t, const struct kaio_vec *, unsigned, kaio_cb, uint64_t) = kaio_readv;
static int (*const p_writev)(kaio_ctx *, int, uint64_t, const struct kaio_vec *, unsigned, kaio_cb, uint64_t) = kaio_writev;
static int (*const p_sync)(kaio_ctx *, int, unsigned, kaio_cb, uint64_t) = kaio_sync;
static int (*const p_submit)(kaio_ctx *, const struct kaio_op *, unsigned) = kaio_submit;
static int (*const p_poll)(kaio_ctx *, struct kaio_event *, unsigned) = kaio_poll;
static int (*const p_wait)(kaio_ctx *, struct kaio_event *, unsigned, unsigned, int) = kaio_wait;
static int (*const p_fd_alignment)(int, uint32_t *, uint32_t *) = kaio_fd_alignment;

/* The callback types. */
static void release_fn(void *data, size_t len, void *opaque) { (void)data; (void)len; (void)opaque; }
static void cb_fn(const struct kaio_event *ev) { (void)ev; }
static const kaio_release_fn p_release = release_fn;
static const kaio_cb p_cb = cb_fn;

/* The header's own includes make these usable. */
static const struct iovec unused_iov = { 0, 0 };
static const ssize_t unused_ssize = 0;

static int all_set(void)
{
	const void *fns[27];
	int i, n = 0;
	fns[n++] = (const void *)&p_strerror;
	fns[n++] = (const void *)&p_last_error;
	fns[n++] = (const void *)&p_version;
	fns[n++] = (const void *)&p_ctx_create;
	fns[n++] = (const void *)&p_ctx_destroy;
	fns[n++] = (const void *)&p_ctx_fd;
	fns[n++] = (const void *)&p_ctx_wake;
	fns[n++] = (const void *)&p_ctx_forget_fd;
	fns[n++] = (const void *)&p_ctx_capacity;
	fns[n++] = (const void *)&p_ctx_inflight;
	fns[n++] = (const void *)&p_buf_alloc;
	fns[n++] = (const void *)&p_buf_wrap;
	fns[n++] = (const void *)&p_buf_ref;
	fns[n++] = (const void *)&p_buf_unref;
	fns[n++] = (const void *)&p_buf_data;
	fns[n++] = (const void *)&p_buf_len;
	fns[n++] = (const void *)&p_read;
	fns[n++] = (const void *)&p_write;
	fns[n++] = (const void *)&p_readv;
	fns[n++] = (const void *)&p_writev;
	fns[n++] = (const void *)&p_sync;
	fns[n++] = (const void *)&p_submit;
	fns[n++] = (const void *)&p_poll;
	fns[n++] = (const void *)&p_wait;
	fns[n++] = (const void *)&p_fd_alignment;
	fns[n++] = (const void *)&p_release;
	fns[n++] = (const void *)&p_cb;
	for (i = 0; i < n; i++)
		if (!fns[i])
			return 0;
	return p_strerror && p_last_error && p_version && p_ctx_create && p_ctx_destroy &&
	       p_ctx_fd && p_ctx_wake && p_ctx_forget_fd && p_ctx_capacity && p_ctx_inflight &&
	       p_buf_alloc && p_buf_wrap && p_buf_ref && p_buf_unref && p_buf_data && p_buf_len &&
	       p_read && p_write && p_readv && p_writev && p_sync && p_submit && p_poll && p_wait &&
	       p_fd_alignment && p_release && p_cb && unused_iov.iov_len == 0 && unused_ssize == 0;
}

/* "MAJOR.MINOR.PATCH" of the loaded library equals the header's macros. */
static int version_matches(const char *v)
{
	unsigned long part[3] = { 0, 0, 0 };
	unsigned long want[3];
	int i = 0;
	want[0] = KAIO_VERSION_MAJOR;
	want[1] = KAIO_VERSION_MINOR;
	want[2] = KAIO_VERSION_PATCH;
	if (!v || !*v)
		return 0;
	for (; *v; v++) {
		if (*v == '.') {
			if (++i > 2)
				return 0;
		} else if (*v >= '0' && *v <= '9') {
			part[i] = part[i] * 10 + (unsigned long)(*v - '0');
		} else {
			return 0;
		}
	}
	return i == 2 && part[0] == want[0] && part[1] == want[1] && part[2] == want[2];
}

int main(void)
{
	struct kaio_event ev;
	struct kaio_op op;
	struct kaio_vec vec;
	enum kaio_op_code code = KAIO_OP_READ;
	enum kaio_sync_level level = KAIO_SYNC_FULL;
	kaio_ctx *ctx = 0;
	kaio_buf *buf = 0;

	ev.user_data = 0;
	op.op = (uint32_t)code;
	vec.len = (uint64_t)level;
	(void)ev;
	(void)op;
	(void)vec;
	(void)ctx;
	(void)buf;
	if (!all_set())
		return 1;
	if (!version_matches(kaio_version()))
		return 2;
	if (!kaio_strerror(0) || !kaio_last_error())
		return 3;
	return 0;
}
