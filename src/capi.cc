// The C boundary: every exported function lives here.  Each checks its
// handles (a magic tag; the fork generation), turns every failure into
// -errno plus a kaio_last_error() sentence, and lets no C++ exception out.
#include <cerrno>
#include <climits>
#include <ctime>

#include "kaio.h"

#include "buffer.h"
#include "context.h"
#include "errors.h"
#include "fdinfo.h"
#include "forkgen.h"
#include "handles.h"

#define KAIO_API extern "C" KAIO_EXPORT

using kaio::Context;
using kaio::fail;

namespace {

constexpr uint32_t kCtxMagic = 0x6b637478;     // "kctx"
constexpr uint32_t kCtxDeadMagic = 0x64656164; // "dead"

kaio::HandlePool<kaio_ctx> &ctx_pool()
{
	static auto *p = new kaio::HandlePool<kaio_ctx>(); // never destroyed
	return *p;
}

int ctx_refused(const kaio_ctx *h, const char *fn)
{
	if (!h)
		return fail(EINVAL, "%s: the context is NULL", fn);
	if (kaio::aligned_handle(h) && h->magic.load(std::memory_order_relaxed) == kCtxDeadMagic)
		return fail(EINVAL, "%s: context %p was destroyed", fn, static_cast<const void *>(h));
	return fail(EINVAL, "%s: %p is not a kaio context", fn, static_cast<const void *>(h));
}

bool ctx_live(const kaio_ctx *h)
{
	return kaio::aligned_handle(h) && h->magic.load(std::memory_order_relaxed) == kCtxMagic;
}

bool in_forked_child(const kaio_ctx *h)
{
	return h->fork_gen != kaio::fork_generation();
}

int child_refused(const char *fn)
{
	return fail(ECHILD, "%s: this context belongs to the parent process; after fork() the "
	                    "child must create its own", fn);
}

// The live context behind h, or nullptr with *rc = -errno (last error set).
Context *enter(const kaio_ctx *h, const char *fn, int *rc)
{
	if (!ctx_live(h)) {
		*rc = ctx_refused(h, fn);
		return nullptr;
	}
	if (in_forked_child(h)) {
		*rc = child_refused(fn);
		return nullptr;
	}
	Context *c = h->impl.load(std::memory_order_acquire);
	if (!c)
		*rc = ctx_refused(h, fn); // destroyed since the tag was read
	return c;
}

// Counts a kaio_poll/kaio_wait/kaio_ctx_wake caller so that a concurrent
// kaio_ctx_destroy waits for it before freeing the context.  Entered after
// enter() (or ctx_live) succeeded; ok() is false once destroy has begun.
// Dekker-style: the caller increments then reads `closing`; destroy sets
// `closing` then reads the count (both seq_cst), so one sees the other.
class CallerGuard {
public:
	explicit CallerGuard(kaio_ctx *h) : h_(h)
	{
		h_->callers.fetch_add(1, std::memory_order_seq_cst);
		ok_ = !h_->closing.load(std::memory_order_seq_cst);
	}
	~CallerGuard() { h_->callers.fetch_sub(1, std::memory_order_seq_cst); }
	CallerGuard(const CallerGuard &) = delete;
	CallerGuard &operator=(const CallerGuard &) = delete;
	bool ok() const { return ok_; }

private:
	kaio_ctx *h_;
	bool ok_;
};

int shutting_down(const char *fn)
{
	return fail(ESHUTDOWN, "%s: the context is being destroyed by another thread", fn);
}

int internal_error(const char *fn)
{
	return fail(ENOMEM, "%s: out of memory (internal allocation failed)", fn);
}

int submit_one(kaio_ctx *ctx, const struct kaio_op &op, const char *fn)
{
	int rc = 0;
	Context *c = enter(ctx, fn, &rc);
	if (!c)
		return rc;
	try {
		rc = c->submit_one(op);
	} catch (...) {
		return internal_error(fn);
	}
	return rc < 0 ? rc : 0;
}

struct kaio_op make_op(uint32_t code, int fd, uint64_t offset, kaio_cb cb, uint64_t user_data)
{
	struct kaio_op op = {};
	op.op = code;
	op.fd = fd;
	op.offset = offset;
	op.cb = cb;
	op.user_data = user_data;
	return op;
}

} // namespace

// ---- errors and version ----------------------------------------------------------

KAIO_API const char *kaio_strerror(int err)
{
	return kaio::errno_text(err);
}

KAIO_API const char *kaio_last_error(void)
{
	return kaio::last_error();
}

#define KAIO_STR2(x) #x
#define KAIO_STR(x) KAIO_STR2(x)

KAIO_API const char *kaio_version(void)
{
	return KAIO_STR(KAIO_VERSION_MAJOR) "." KAIO_STR(KAIO_VERSION_MINOR) "." KAIO_STR(
		KAIO_VERSION_PATCH);
}

// ---- context ---------------------------------------------------------------------

KAIO_API int kaio_ctx_create(kaio_ctx **out, unsigned capacity, unsigned flags)
{
	if (!out)
		return fail(EINVAL, "kaio_ctx_create: out is NULL");
	if (capacity < 1 || capacity > KAIO_CAPACITY_MAX)
		return fail(EINVAL, "kaio_ctx_create: capacity %u is outside 1..%u", capacity,
		            KAIO_CAPACITY_MAX);
	const unsigned known = KAIO_CTX_ALLOW_BUFFERED | KAIO_CTX_SINGLE_THREAD;
	if (flags & ~known)
		return fail(EINVAL, "kaio_ctx_create: unknown flag bits %#x", flags & ~known);
	try {
		kaio::ensure_fork_handler();
		kaio_ctx *h = ctx_pool().acquire();
		if (!h)
			return internal_error("kaio_ctx_create");
		Context *impl = nullptr;
		int rc = Context::create(&impl, h, capacity, flags);
		if (rc < 0) {
			h->magic.store(kCtxDeadMagic, std::memory_order_relaxed);
			ctx_pool().release(h);
			return rc;
		}
		h->impl.store(impl, std::memory_order_relaxed); // published by the tag below
		h->fork_gen = kaio::fork_generation();
		h->magic.store(kCtxMagic, std::memory_order_release);
		*out = h;
		return 0;
	} catch (...) {
		return internal_error("kaio_ctx_create");
	}
}

KAIO_API int kaio_ctx_destroy(kaio_ctx *ctx)
{
	if (!ctx_live(ctx))
		return ctx_refused(ctx, "kaio_ctx_destroy");
	Context *c = ctx->impl.load(std::memory_order_acquire);
	if (in_forked_child(ctx)) {
		c->abandon_in_child();
	} else {
		if (c->delivering_on_this_thread())
			return fail(EBUSY, "kaio_ctx_destroy: called from a callback or release function "
			                   "running on this context; destroy it from outside");
		bool was = false;
		if (!ctx->closing.compare_exchange_strong(was, true, std::memory_order_seq_cst))
			return fail(EBUSY, "kaio_ctx_destroy: another thread is already destroying this "
			                   "context");
		// From here submissions return -ESHUTDOWN.  Threads still inside
		// kaio_poll/kaio_wait/kaio_ctx_wake are made to return (a wait is
		// woken again until it has noticed) before anything is torn down.
		c->begin_shutdown();
		for (unsigned spins = 0; ctx->callers.load(std::memory_order_seq_cst) > 0; spins++) {
			c->wake();
			struct timespec ts = {0, spins < 10 ? 100000L : 1000000L};
			nanosleep(&ts, nullptr);
		}
		try {
			c->drain_for_destroy();
		} catch (...) {
			// drain_for_destroy allocates nothing; nothing to undo.
		}
	}
	ctx->magic.store(kCtxDeadMagic, std::memory_order_release);
	ctx->impl.store(nullptr, std::memory_order_release);
	delete c;
	ctx_pool().release(ctx);
	return 0;
}

KAIO_API int kaio_ctx_fd(const kaio_ctx *ctx)
{
	int rc = 0;
	const Context *c = enter(ctx, "kaio_ctx_fd", &rc);
	return c ? c->event_fd() : rc;
}

KAIO_API int kaio_ctx_wake(kaio_ctx *ctx)
{
	// Async-signal-safe: atomics and write(2); its refusals use fixed
	// sentences (no formatting) since they too may come from a handler.
	if (!ctx_live(ctx))
		return kaio::fail_fixed(EINVAL, "kaio_ctx_wake: not a live kaio context (NULL, "
		                                "destroyed, or not from kaio_ctx_create)");
	if (in_forked_child(ctx))
		return kaio::fail_fixed(ECHILD, "kaio_ctx_wake: this context belongs to the parent "
		                                "process; after fork() the child must create its own");
	CallerGuard guard(ctx);
	if (!guard.ok())
		return kaio::fail_fixed(ESHUTDOWN, "kaio_ctx_wake: the context is being destroyed "
		                                   "(its waiters are being woken)");
	// Counted before destroy began: the context is there until we leave.
	return ctx->impl.load(std::memory_order_acquire)->wake();
}

KAIO_API int kaio_ctx_forget_fd(kaio_ctx *ctx, int fd)
{
	int rc = 0;
	Context *c = enter(ctx, "kaio_ctx_forget_fd", &rc);
	if (!c)
		return rc;
	if (fd < 0)
		return fail(EBADF, "kaio_ctx_forget_fd: fd %d is negative", fd);
	c->forget_fd(fd);
	return 0;
}

KAIO_API unsigned kaio_ctx_capacity(const kaio_ctx *ctx)
{
	if (!ctx_live(ctx)) {
		ctx_refused(ctx, "kaio_ctx_capacity");
		return 0;
	}
	if (in_forked_child(ctx))
		return 0;
	const Context *c = ctx->impl.load(std::memory_order_acquire);
	return c ? c->capacity() : 0;
}

KAIO_API unsigned kaio_ctx_inflight(const kaio_ctx *ctx)
{
	if (!ctx_live(ctx)) {
		ctx_refused(ctx, "kaio_ctx_inflight");
		return 0;
	}
	if (in_forked_child(ctx))
		return 0;
	const Context *c = ctx->impl.load(std::memory_order_acquire);
	return c ? c->inflight() : 0;
}

// ---- buffers -----------------------------------------------------------------------

KAIO_API int kaio_buf_alloc(kaio_buf **out, size_t len, unsigned flags)
{
	try {
		return kaio::buf_alloc(out, len, flags);
	} catch (...) {
		return internal_error("kaio_buf_alloc");
	}
}

KAIO_API int kaio_buf_wrap(kaio_buf **out, void *data, size_t len, kaio_release_fn release,
                           void *opaque)
{
	try {
		return kaio::buf_wrap(out, data, len, release, opaque);
	} catch (...) {
		return internal_error("kaio_buf_wrap");
	}
}

KAIO_API kaio_buf *kaio_buf_ref(kaio_buf *buf)
{
	if (!kaio::buf_live(buf)) {
		kaio::buf_refused(buf, "kaio_buf_ref");
		return nullptr;
	}
	kaio::buf_get(buf);
	return buf;
}

KAIO_API void kaio_buf_unref(kaio_buf *buf)
{
	if (!buf)
		return;
	if (!kaio::buf_live(buf)) {
		kaio::buf_refused(buf, "kaio_buf_unref");
		return;
	}
	kaio::buf_put(buf);
}

KAIO_API void *kaio_buf_data(const kaio_buf *buf)
{
	if (!kaio::buf_live(buf)) {
		kaio::buf_refused(buf, "kaio_buf_data");
		return nullptr;
	}
	return buf->data;
}

KAIO_API size_t kaio_buf_len(const kaio_buf *buf)
{
	if (!kaio::buf_live(buf)) {
		kaio::buf_refused(buf, "kaio_buf_len");
		return 0;
	}
	return buf->len;
}

// ---- operations ----------------------------------------------------------------------

KAIO_API int kaio_read(kaio_ctx *ctx, int fd, uint64_t offset, kaio_buf *buf,
                       size_t buf_offset, size_t len, kaio_cb cb, uint64_t user_data)
{
	struct kaio_op op = make_op(KAIO_OP_READ, fd, offset, cb, user_data);
	op.buf = buf;
	op.buf_offset = buf_offset;
	op.len = len;
	return submit_one(ctx, op, "kaio_read");
}

KAIO_API int kaio_write(kaio_ctx *ctx, int fd, uint64_t offset, kaio_buf *buf,
                        size_t buf_offset, size_t len, kaio_cb cb, uint64_t user_data)
{
	struct kaio_op op = make_op(KAIO_OP_WRITE, fd, offset, cb, user_data);
	op.buf = buf;
	op.buf_offset = buf_offset;
	op.len = len;
	return submit_one(ctx, op, "kaio_write");
}

KAIO_API int kaio_readv(kaio_ctx *ctx, int fd, uint64_t offset, const struct kaio_vec *vec,
                        unsigned nvec, kaio_cb cb, uint64_t user_data)
{
	struct kaio_op op = make_op(KAIO_OP_READV, fd, offset, cb, user_data);
	op.vec = vec;
	op.nvec = nvec;
	return submit_one(ctx, op, "kaio_readv");
}

KAIO_API int kaio_writev(kaio_ctx *ctx, int fd, uint64_t offset, const struct kaio_vec *vec,
                         unsigned nvec, kaio_cb cb, uint64_t user_data)
{
	struct kaio_op op = make_op(KAIO_OP_WRITEV, fd, offset, cb, user_data);
	op.vec = vec;
	op.nvec = nvec;
	return submit_one(ctx, op, "kaio_writev");
}

KAIO_API int kaio_sync(kaio_ctx *ctx, int fd, unsigned level, kaio_cb cb, uint64_t user_data)
{
	uint32_t code;
	if (level == KAIO_SYNC_DATA) {
		code = KAIO_OP_FDATASYNC;
	} else if (level == KAIO_SYNC_FULL) {
		code = KAIO_OP_FSYNC;
	} else {
		int rc = 0;
		if (!enter(ctx, "kaio_sync", &rc))
			return rc;
		return fail(EINVAL, "kaio_sync: unknown level %u (KAIO_SYNC_DATA or KAIO_SYNC_FULL)",
		            level);
	}
	return submit_one(ctx, make_op(code, fd, 0, cb, user_data), "kaio_sync");
}

KAIO_API int kaio_submit(kaio_ctx *ctx, const struct kaio_op *ops, unsigned n)
{
	int rc = 0;
	Context *c = enter(ctx, "kaio_submit", &rc);
	if (!c)
		return rc;
	if (n > INT_MAX)
		return fail(EINVAL, "kaio_submit: n %u is above INT_MAX", n);
	try {
		return c->submit(ops, n);
	} catch (...) {
		return internal_error("kaio_submit");
	}
}

// ---- completions -----------------------------------------------------------------------

KAIO_API int kaio_poll(kaio_ctx *ctx, struct kaio_event *events, unsigned max)
{
	int rc = 0;
	Context *c = enter(ctx, "kaio_poll", &rc);
	if (!c)
		return rc;
	CallerGuard guard(ctx);
	if (!guard.ok() && !c->delivering_on_this_thread()) // from a callback: -EBUSY below
		return shutting_down("kaio_poll");
	if (max > INT_MAX)
		return fail(EINVAL, "kaio_poll: max %u is above INT_MAX", max);
	if (!events && max)
		return fail(EINVAL, "kaio_poll: events is NULL but max is %u", max);
	try {
		return c->poll(events, max);
	} catch (...) {
		return internal_error("kaio_poll");
	}
}

KAIO_API int kaio_wait(kaio_ctx *ctx, struct kaio_event *events, unsigned min, unsigned max,
                       int timeout_ms)
{
	int rc = 0;
	Context *c = enter(ctx, "kaio_wait", &rc);
	if (!c)
		return rc;
	CallerGuard guard(ctx);
	if (!guard.ok() && !c->delivering_on_this_thread()) // from a callback: -EBUSY below
		return shutting_down("kaio_wait");
	if (max > INT_MAX || min > INT_MAX)
		return fail(EINVAL, "kaio_wait: %s %u is above INT_MAX", max > INT_MAX ? "max" : "min",
		            max > INT_MAX ? max : min);
	if (!events && max)
		return fail(EINVAL, "kaio_wait: events is NULL but max is %u", max);
	try {
		return c->wait(events, min, max, timeout_ms);
	} catch (...) {
		return internal_error("kaio_wait");
	}
}

// ---- alignment --------------------------------------------------------------------------

KAIO_API int kaio_fd_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align)
{
	if (fd < 0)
		return fail(EBADF, "kaio_fd_alignment: fd %d is negative", fd);
	kaio::FdInfo info;
	int rc = kaio::learn_fd(fd, &info, "kaio_fd_alignment");
	if (rc < 0)
		return rc;
	if (mem_align)
		*mem_align = info.direct ? info.mem_align : 0;
	if (offset_align)
		*offset_align = info.direct ? info.off_align : 0;
	return 0;
}
