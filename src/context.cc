#include "context.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "buffer.h"
#include "errors.h"
#include "sysaio.h"
#include "tsan.h"

#ifndef IOCB_FLAG_RESFD
#define IOCB_FLAG_RESFD (1 << 0)
#endif
#ifndef IOCB_FLAG_IOPRIO
#define IOCB_FLAG_IOPRIO (1 << 1)
#endif

namespace kaio {
namespace {

enum SlotState : uint8_t { kFree = 0, kInKernel, kQueued };

constexpr unsigned kSubmitChunk = 64;   // iocbs prepared per io_submit
constexpr int kReapBatch = 64;          // events per io_getevents
constexpr unsigned kInlineRefs = 16;    // vector refs copied to the stack
constexpr int kKernelRetries = 4;       // io_submit EAGAIN retries
constexpr int kNoResult = INT_MIN;      // submit_to_kernel: no first answer yet
constexpr uint32_t kKnownRwFlags =
	KAIO_RWF_DSYNC | KAIO_RWF_SYNC | KAIO_RWF_NOWAIT | KAIO_RWF_APPEND;

const char kCapacityMessage[] =
	"the context is at capacity: reap completions with kaio_poll or kaio_wait, "
	"then submit again";

// The contexts this thread is delivering on (callbacks, release functions),
// innermost first: poll, wait and destroy on them return -EBUSY.
struct FrameNode {
	const Context *ctx;
	FrameNode *prev;
};
__attribute__((tls_model("initial-exec"))) thread_local FrameNode *tl_frames = nullptr;

const char *op_name(uint32_t op)
{
	switch (op) {
	case KAIO_OP_READ: return "read";
	case KAIO_OP_WRITE: return "write";
	case KAIO_OP_READV: return "readv";
	case KAIO_OP_WRITEV: return "writev";
	case KAIO_OP_FSYNC: return "fsync";
	case KAIO_OP_FDATASYNC: return "fdatasync";
	default: return "operation";
	}
}

bool is_write(uint32_t op)
{
	return op == KAIO_OP_WRITE || op == KAIO_OP_WRITEV;
}

bool is_vector(uint32_t op)
{
	return op == KAIO_OP_READV || op == KAIO_OP_WRITEV;
}

unsigned long read_proc_ulong(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long v = 0;
	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

int64_t now_ms()
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

} // namespace

class Context::DeliveryFrame {
public:
	explicit DeliveryFrame(const Context *c) : node_{c, tl_frames} { tl_frames = &node_; }
	~DeliveryFrame() { tl_frames = node_.prev; }
	DeliveryFrame(const DeliveryFrame &) = delete;
	DeliveryFrame &operator=(const DeliveryFrame &) = delete;

private:
	FrameNode node_;
};

bool Context::delivering_on_this_thread() const
{
	for (const FrameNode *f = tl_frames; f; f = f->prev)
		if (f->ctx == this)
			return true;
	return false;
}

// ---- creation and teardown ---------------------------------------------------

Context::Context(kaio_ctx *handle, unsigned capacity, unsigned flags)
	: handle_(handle), capacity_(capacity),
	  allow_buffered_(flags & KAIO_CTX_ALLOW_BUFFERED),
	  threaded_(!(flags & KAIO_CTX_SINGLE_THREAD)), lock_(threaded_)
{
	fdcache_.set_allow_buffered(allow_buffered_);
}

int Context::create(Context **out, kaio_ctx *handle, unsigned capacity, unsigned flags)
{
	Context *c = new (std::nothrow) Context(handle, capacity, flags);
	if (!c)
		return fail(ENOMEM, "kaio_ctx_create: out of memory");
	c->slots_ = static_cast<Slot *>(calloc(capacity, sizeof(Slot)));
	if (!c->slots_) {
		delete c;
		return fail(ENOMEM, "kaio_ctx_create: out of memory for %u request slots", capacity);
	}
	for (unsigned i = 0; i < capacity; i++) {
		Slot *sl = &c->slots_[i];
		sl->next_free = i; // the slot below slot i is slot i - 1
		sl->self1 = i + 1;
	}
	c->free_head_.store(uint64_t(capacity) | (uint64_t(capacity) << kCountShift),
	                    std::memory_order_relaxed);
	c->evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	c->wakefd_ = c->evfd_ < 0 ? -1 : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->wakefd_ < 0) {
		int err = errno;
		delete c;
		return fail(err, "kaio_ctx_create: cannot create an eventfd: %s", errno_text(err));
	}
	int rc = kaio_sys_io_setup(capacity, &c->kctx_);
	if (rc < 0) {
		c->kctx_ = nullptr;
		delete c;
		int err = -rc;
		if (err == EAGAIN) {
			unsigned long max = read_proc_ulong("/proc/sys/fs/aio-max-nr");
			unsigned long cur = read_proc_ulong("/proc/sys/fs/aio-nr");
			return fail(EAGAIN,
			            "cannot set up a kernel AIO queue of %u requests: the system-wide "
			            "limit /proc/sys/fs/aio-max-nr (%lu) would be passed (aio-nr is "
			            "%lu); raise it with `sysctl fs.aio-max-nr=N` or use a smaller capacity",
			            capacity, max, cur);
		}
		if (err == ENOSYS)
			return fail(ENOSYS, "kernel AIO is not available (io_setup: ENOSYS): the "
			                    "kernel was built without CONFIG_AIO");
		return fail(err, "cannot set up a kernel AIO queue of %u requests: io_setup: %s",
		            capacity, errno_text(err));
	}
	// KAIO_RING=0 in the environment reaps with io_getevents only (for
	// comparison and debugging).
	const char *ring_env = getenv("KAIO_RING");
	c->use_ring_ = kaio_sys_ring_usable(c->kctx_) && !(ring_env && strcmp(ring_env, "0") == 0);
	*out = c;
	return 0;
}

Context::~Context()
{
	if (kctx_)
		kaio_sys_io_destroy(kctx_);
	if (evfd_ >= 0)
		close(evfd_);
	if (wakefd_ >= 0)
		close(wakefd_);
	if (slots_) {
		for (unsigned i = 0; i < capacity_; i++) {
			free(slots_[i].vbufs);
			free(slots_[i].iov);
		}
		free(slots_);
	}
}

void Context::abandon_in_child()
{
	// The kernel context, and every reference in flight, belong to the
	// parent: free our memory, touch nothing else.
	kctx_ = nullptr;
}

void Context::drain_for_destroy()
{
	shutting_down_.store(true, std::memory_order_seq_cst);
	DeliveryFrame frame(this);

	// Events reaped but not yet copied: nowhere to go now.
	lock_.lock();
	Slot *chain = queue_head_;
	queue_head_ = queue_tail_ = nullptr;
	queued_.store(0, std::memory_order_relaxed);
	lock_.unlock();
	while (chain) {
		Slot *next = chain->next;
		drop_slot_refs(chain);
		free_slot(chain);
		chain = next;
	}

	// Everything still in the kernel: wait for it, deliver callbacks.
	struct io_event kev[kReapBatch];
	while (inflight() > 0) {
		int r = kaio_sys_io_getevents(kctx_, 1, kReapBatch, kev, nullptr);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		for (int i = 0; i < r; i++) {
			Slot *s = static_cast<Slot *>(kev[i].data);
			KAIO_TSAN_ACQUIRE(s);
			s->res = static_cast<int64_t>(static_cast<long>(kev[i].res));
			if (s->cb) {
				deliver_callback(s);
			} else {
				drop_slot_refs(s);
				free_slot(s);
			}
		}
	}
	if (inflight() > 0) {
		// The kernel would not report completions.  io_destroy waits for
		// all of its I/O to finish, after which no buffer is in use: only
		// then are references dropped, with the real result unknown.
		kaio_sys_io_destroy(kctx_);
		kctx_ = nullptr;
		for (unsigned i = 0; i < capacity_; i++) {
			Slot *s = &slots_[i];
			if (s->state != kInKernel)
				continue;
			s->res = -ECANCELED;
			if (s->cb) {
				deliver_callback(s);
			} else {
				drop_slot_refs(s);
				free_slot(s);
			}
		}
	}
}

// ---- submission ---------------------------------------------------------------

Slot *Context::take_slot()
{
	uint64_t head = free_head_.load(std::memory_order_acquire);
	for (;;) {
		const uint32_t top = uint32_t(head & kTopMask);
		if (!top)
			return nullptr; // at capacity
		Slot *s = &slots_[top - 1];
		// May read a slot another thread just took: the tag then fails the
		// exchange (the link is read atomically, so the race is benign).
		const uint32_t below = __atomic_load_n(&s->next_free, __ATOMIC_RELAXED);
		if (free_head_.compare_exchange_weak(head, next_head(head, free_count(head) - 1, below),
		                                     std::memory_order_acquire,
		                                     std::memory_order_acquire))
			return s;
	}
}

unsigned Context::take_slots(Slot **out, unsigned want)
{
	uint64_t head = free_head_.load(std::memory_order_acquire);
	for (;;) {
		const unsigned avail = free_count(head);
		const unsigned k = want < avail ? want : avail;
		if (!k)
			return 0;
		// Walk k slots down from the top (links read atomically: another
		// thread may be taking them too, and then the exchange fails).
		uint32_t top = uint32_t(head & kTopMask);
		unsigned got = 0;
		while (got < k && top) {
			Slot *s = &slots_[top - 1];
			out[got++] = s;
			top = __atomic_load_n(&s->next_free, __ATOMIC_RELAXED);
		}
		if (got == k) {
			if (free_head_.compare_exchange_weak(head, next_head(head, avail - k, top),
			                                     std::memory_order_acquire,
			                                     std::memory_order_acquire))
				return k;
		} else {
			head = free_head_.load(std::memory_order_acquire); // torn walk: retry
		}
	}
}

// Pushes the chain first..last (n slots, linked through next_free) back.
inline void Context::push_free(Slot *first, Slot *last, unsigned n)
{
	uint64_t head = free_head_.load(std::memory_order_relaxed);
	do {
		__atomic_store_n(&last->next_free, uint32_t(head & kTopMask), __ATOMIC_RELAXED);
	} while (!free_head_.compare_exchange_weak(head,
	                                           next_head(head, free_count(head) + n, first->self1),
	                                           std::memory_order_release,
	                                           std::memory_order_relaxed));
}

void Context::free_slot(Slot *s)
{
	s->state = kFree;
	push_free(s, s, 1);
}

void Context::drop_slot_refs(Slot *s)
{
	if (s->buf) {
		kaio_buf *b = s->buf;
		s->buf = nullptr;
		buf_put(b);
	}
	for (uint32_t i = 0; i < s->nvec; i++)
		buf_put(s->vbufs[i]);
	s->nvec = 0;
}

// The submit fast path: a plain read or write on a cached fd that passes
// every check is accepted here, in a few dozen instructions.  Anything else
// (vectors, syncs, KAIO_RWF_APPEND, an fd not cached, any check failing)
// returns false and takes the full validation, which alone refuses and
// explains; so this only has to be right when it says yes.
__attribute__((always_inline)) inline bool Context::fast_rw(const struct kaio_op &op) const
{
	if (op.op - uint32_t(KAIO_OP_READ) > 1u)
		return false;
	if (op.reserved32 | op.reserved[0] | op.reserved[1] | (op.ioprio >> 16) |
	    (op.rw_flags & ~(KAIO_RWF_DSYNC | KAIO_RWF_SYNC | KAIO_RWF_NOWAIT)))
		return false;
	const kaio_buf *b = op.buf;
	if (!buf_live(b))
		return false;
	// A buffer is shorter than INT64_MAX, so len is too.
	const uint64_t blen = b->len;
	if (op.len > blen || op.buf_offset > blen - op.len ||
	    op.offset > uint64_t(INT64_MAX) - op.len)
		return false;
	const uint64_t w = fdcache_.peek(op.fd); // 0 for fd < 0 or uncached
	if (!(w & (uint64_t(1) << op.op)))       // kFastRead / kFastWrite
		return false;
	const uintptr_t addr = reinterpret_cast<uintptr_t>(b->data) + op.buf_offset;
	return ((addr & ((w >> FdCache::kMemMaskShift) & 0xffff)) |
	        ((op.offset | op.len) & ((w >> FdCache::kOffMaskShift) & 0xffff))) == 0;
}

// What every operation's slot records for its event.
static inline void fill_slot_header(Slot *s, const struct kaio_op &op)
{
	s->user_data = op.user_data;
	s->offset = op.offset;
	s->cb = op.cb;
	s->fd = op.fd;
	s->op = op.op;
	s->res = 0;
	s->nvec = 0;
}

// fill_slot for what fast_rw accepted: every iocb field set explicitly
// (another path's io_prep_* may have left others in it).
__attribute__((always_inline)) inline void Context::fill_rw_fast(Slot *s, const struct kaio_op &op)
{
	fill_slot_header(s, op);
	s->buf = op.buf;
	buf_get(op.buf);
	struct iocb *cb = &s->iocb;
	cb->data = s;
	cb->aio_lio_opcode = op.op == KAIO_OP_READ ? IO_CMD_PREAD : IO_CMD_PWRITE;
	cb->aio_reqprio = static_cast<short>(op.ioprio);
	cb->aio_fildes = op.fd;
	cb->aio_rw_flags = op.rw_flags;
	cb->u.c.buf = static_cast<char *>(op.buf->data) + op.buf_offset;
	cb->u.c.nbytes = op.len;
	cb->u.c.offset = static_cast<long long>(op.offset);
	cb->u.c.flags = IOCB_FLAG_RESFD | (op.ioprio ? IOCB_FLAG_IOPRIO : 0);
	cb->u.c.resfd = evfd_;
	s->state = kInKernel;
	KAIO_TSAN_RELEASE(s);
}

int Context::validate(const struct kaio_op &op, FdInfo *info)
{
	if (op.reserved32 || op.reserved[0] || op.reserved[1])
		return fail(EINVAL, "kaio_op reserved fields must be 0");
	if (op.rw_flags & ~kKnownRwFlags)
		return fail(EINVAL, "unknown rw_flags bits %#x (known: KAIO_RWF_DSYNC, _SYNC, _NOWAIT, _APPEND)",
		            op.rw_flags & ~kKnownRwFlags);
	if (op.ioprio > 0xffff)
		return fail(EINVAL, "ioprio %#x does not fit the kernel's 16-bit I/O priority", op.ioprio);
	switch (op.op) {
	case KAIO_OP_READ:
	case KAIO_OP_WRITE:
	case KAIO_OP_READV:
	case KAIO_OP_WRITEV:
		return validate_rw(op, info);
	case KAIO_OP_FSYNC:
	case KAIO_OP_FDATASYNC:
		if (op.fd < 0)
			return fail(EBADF, "%s: fd %d is negative", op_name(op.op), op.fd);
		if (op.offset != 0)
			return fail(EINVAL, "%s: the offset of a sync operation must be 0 (it is %llu)",
			            op_name(op.op), static_cast<unsigned long long>(op.offset));
		if (op.rw_flags)
			return fail(EINVAL, "%s: rw_flags apply only to reads and writes", op_name(op.op));
		return fdcache_.get(op.fd, info, op_name(op.op));
	default:
		return fail(EINVAL, "unknown operation code %u (expected KAIO_OP_READ..KAIO_OP_FDATASYNC)",
		            op.op);
	}
}

int Context::validate_rw(const struct kaio_op &op, FdInfo *info)
{
	const char *name = op_name(op.op);
	if (op.fd < 0)
		return fail(EBADF, "%s: fd %d is negative", name, op.fd);
	const bool append = op.rw_flags & KAIO_RWF_APPEND;
	if (append && !is_write(op.op))
		return fail(EINVAL, "%s: KAIO_RWF_APPEND applies only to writes", name);
	if (!append && op.offset > uint64_t(INT64_MAX))
		return fail(EINVAL, "%s: offset %llu is above INT64_MAX", name,
		            static_cast<unsigned long long>(op.offset));
	uint64_t total;
	if (!is_vector(op.op)) {
		if (!buf_live(op.buf))
			return buf_refused(op.buf, name);
		const uint64_t blen = op.buf->len;
		if (op.buf_offset > blen || op.len > blen - op.buf_offset)
			return fail(EINVAL,
			            "%s: %llu bytes at buffer offset %llu do not fit in the buffer of %llu bytes",
			            name, static_cast<unsigned long long>(op.len),
			            static_cast<unsigned long long>(op.buf_offset),
			            static_cast<unsigned long long>(blen));
		total = op.len;
	} else {
		if (op.nvec == 0 || op.nvec > IOV_MAX)
			return fail(EINVAL, "%s: nvec %u is outside 1..%d (IOV_MAX)", name, op.nvec, IOV_MAX);
		if (!op.vec)
			return fail(EINVAL, "%s: vec is NULL", name);
		total = 0;
		for (uint32_t i = 0; i < op.nvec; i++) {
			const struct kaio_vec &v = op.vec[i];
			if (!buf_live(v.buf))
				return fail(EINVAL, "%s: segment %u: buffer %p %s", name, i,
				            static_cast<const void *>(v.buf), buf_problem(v.buf));
			const uint64_t blen = v.buf->len;
			if (v.offset > blen || v.len > blen - v.offset)
				return fail(EINVAL,
				            "%s: segment %u: %llu bytes at buffer offset %llu do not fit in "
				            "the buffer of %llu bytes", name, i,
				            static_cast<unsigned long long>(v.len),
				            static_cast<unsigned long long>(v.offset),
				            static_cast<unsigned long long>(blen));
			total += v.len; // each <= a buffer length <= INT64_MAX: no wrap below
			if (total > uint64_t(INT64_MAX))
				return fail(EINVAL, "%s: the segments add up to more than INT64_MAX bytes", name);
		}
	}
	if (!append && total > uint64_t(INT64_MAX) - op.offset)
		return fail(EINVAL, "%s: offset %llu plus length %llu passes INT64_MAX", name,
		            static_cast<unsigned long long>(op.offset),
		            static_cast<unsigned long long>(total));
	return check_fd_for_rw(op, total, info);
}

namespace {

// Why fd (as described by info) cannot take op, or 0.  Sets the last error
// only when `explain`.
int rw_refusal(const struct kaio_op &op, uint64_t total, const FdInfo &info,
               bool allow_buffered, bool explain)
{
	const char *name = op_name(op.op);
	const bool write = is_write(op.op);
	// Unknown kind (nothing could be learnt): the kernel decides.
	if (info.kind_bits != 0 && info.kind != FdKind::kRegular && info.kind != FdKind::kBlock) {
		return explain ? -fail(EINVAL,
		                       "%s: fd %d is a %s; kernel AIO reads and writes need a regular "
		                       "file or a block device", name, op.fd, fd_kind_name(info))
		               : EINVAL;
	}
	if (write ? !info.writable : !info.readable)
		return explain ? -fail(EBADF, "%s: fd %d is not open for %s", name, op.fd,
		                       write ? "writing" : "reading")
		               : EBADF;
	if (!info.direct) {
		if (allow_buffered)
			return 0;
		return explain ? -fail(EINVAL,
		                       "%s: fd %d was opened without O_DIRECT; open it with O_DIRECT, or "
		                       "create the context with KAIO_CTX_ALLOW_BUFFERED to accept "
		                       "buffered (synchronous) I/O", name, op.fd)
		               : EINVAL;
	}
	const uint64_t mem = info.mem_align, off = info.off_align;
	const bool append = op.rw_flags & KAIO_RWF_APPEND;
	if (off && !append && (op.offset & (off - 1)))
		return explain ? -fail(EINVAL,
		                       "%s: offset %llu is not aligned to %llu bytes, the direct-I/O "
		                       "alignment of fd %d", name,
		                       static_cast<unsigned long long>(op.offset),
		                       static_cast<unsigned long long>(off), op.fd)
		               : EINVAL;
	if (!is_vector(op.op)) {
		const uintptr_t addr = reinterpret_cast<uintptr_t>(op.buf->data) + op.buf_offset;
		if (mem && (addr & (mem - 1)))
			return explain ? -fail(EINVAL,
			                       "%s: buffer address %p is not aligned to %llu bytes, the "
			                       "direct-I/O memory alignment of fd %d", name,
			                       reinterpret_cast<void *>(addr),
			                       static_cast<unsigned long long>(mem), op.fd)
			               : EINVAL;
		if (off && (op.len & (off - 1)))
			return explain ? -fail(EINVAL,
			                       "%s: length %llu is not aligned to %llu bytes, the direct-I/O "
			                       "alignment of fd %d", name,
			                       static_cast<unsigned long long>(op.len),
			                       static_cast<unsigned long long>(off), op.fd)
			               : EINVAL;
		return 0;
	}
	for (uint32_t i = 0; i < op.nvec; i++) {
		const struct kaio_vec &v = op.vec[i];
		const uintptr_t addr = reinterpret_cast<uintptr_t>(v.buf->data) + v.offset;
		if (mem && (addr & (mem - 1)))
			return explain ? -fail(EINVAL,
			                       "%s: segment %u: buffer address %p is not aligned to %llu "
			                       "bytes, the direct-I/O memory alignment of fd %d", name, i,
			                       reinterpret_cast<void *>(addr),
			                       static_cast<unsigned long long>(mem), op.fd)
			               : EINVAL;
		if (off && (v.len & (off - 1)))
			return explain ? -fail(EINVAL,
			                       "%s: segment %u: length %llu is not aligned to %llu bytes, "
			                       "the direct-I/O alignment of fd %d", name, i,
			                       static_cast<unsigned long long>(v.len),
			                       static_cast<unsigned long long>(off), op.fd)
			               : EINVAL;
	}
	(void)total;
	return 0;
}

} // namespace

int Context::check_fd_for_rw(const struct kaio_op &op, uint64_t total, FdInfo *info)
{
	int rc = fdcache_.get(op.fd, info, op_name(op.op));
	if (rc < 0)
		return rc;
	if (rw_refusal(op, total, *info, allow_buffered_, false) == 0)
		return 0;
	// A cached answer is never trusted for a refusal: learn the fd again.
	rc = fdcache_.refresh(op.fd, info, op_name(op.op));
	if (rc < 0)
		return rc;
	int err = rw_refusal(op, total, *info, allow_buffered_, true);
	return err ? -err : 0;
}

int Context::fill_slot(Slot *s, const struct kaio_op &op)
{
	if (is_vector(op.op) && op.nvec > s->vec_cap) {
		auto *bufs = static_cast<kaio_buf **>(malloc(op.nvec * sizeof(kaio_buf *)));
		auto *iov = static_cast<struct iovec *>(malloc(op.nvec * sizeof(struct iovec)));
		if (!bufs || !iov) {
			free(bufs);
			free(iov);
			return fail(ENOMEM, "%s: out of memory for %u segments", op_name(op.op), op.nvec);
		}
		free(s->vbufs);
		free(s->iov);
		s->vbufs = bufs;
		s->iov = iov;
		s->vec_cap = op.nvec;
	}
	const bool append = op.rw_flags & KAIO_RWF_APPEND;
	const long long koff = append ? 0 : static_cast<long long>(op.offset);
	fill_slot_header(s, op);
	s->buf = nullptr;
	switch (op.op) {
	case KAIO_OP_READ:
	case KAIO_OP_WRITE: {
		char *p = static_cast<char *>(op.buf->data) + op.buf_offset;
		if (op.op == KAIO_OP_READ)
			io_prep_pread(&s->iocb, op.fd, p, op.len, koff);
		else
			io_prep_pwrite(&s->iocb, op.fd, p, op.len, koff);
		s->buf = op.buf;
		buf_get(op.buf);
		break;
	}
	case KAIO_OP_READV:
	case KAIO_OP_WRITEV:
		for (uint32_t i = 0; i < op.nvec; i++) {
			const struct kaio_vec &v = op.vec[i];
			s->iov[i].iov_base = static_cast<char *>(v.buf->data) + v.offset;
			s->iov[i].iov_len = v.len;
			s->vbufs[i] = v.buf;
			buf_get(v.buf);
		}
		s->nvec = op.nvec;
		if (op.op == KAIO_OP_READV)
			io_prep_preadv(&s->iocb, op.fd, s->iov, static_cast<int>(op.nvec), koff);
		else
			io_prep_pwritev(&s->iocb, op.fd, s->iov, static_cast<int>(op.nvec), koff);
		break;
	case KAIO_OP_FSYNC:
		io_prep_fsync(&s->iocb, op.fd);
		break;
	default:
		io_prep_fdsync(&s->iocb, op.fd);
		break;
	}
	s->iocb.aio_rw_flags = op.rw_flags; // RWF_*: aio_rw_flags, never aio_flags
	if (op.ioprio) {
		s->iocb.u.c.flags |= IOCB_FLAG_IOPRIO;
		s->iocb.aio_reqprio = static_cast<short>(op.ioprio);
	}
	io_set_eventfd(&s->iocb, evfd_);
	s->iocb.data = s; // io_prep_* cleared it
	s->state = kInKernel;
	KAIO_TSAN_RELEASE(s); // the reaping thread sees it via the kernel
	return 0;
}

int Context::kernel_refusal(const Slot *s, int err, bool nothing_to_reap)
{
	if (err == EINVAL || err == EBADF)
		fdcache_.forget(s->fd);
	if (err == EAGAIN && nothing_to_reap)
		// -EAGAIN tells the caller to reap and retry; with nothing in
		// flight that would wait forever: report what the kernel lacks.
		return fail(ENOMEM, "the kernel has no resources for the %s on fd %d (io_submit "
		                    "keeps answering EAGAIN) and nothing is in flight to wait for",
		            op_name(s->op), s->fd);
	if (err == EAGAIN)
		return fail(EAGAIN, "the kernel had no room for the %s on fd %d now (io_submit: EAGAIN); "
		                    "reap completions and try again", op_name(s->op), s->fd);
	if (err == EOPNOTSUPP && (s->iocb.aio_rw_flags & KAIO_RWF_NOWAIT))
		return fail(err, "the %s on fd %d was refused: this file cannot honour KAIO_RWF_NOWAIT",
		            op_name(s->op), s->fd);
	return fail(err, "the kernel refused the %s on fd %d at offset %llu: %s", op_name(s->op),
	            s->fd, static_cast<unsigned long long>(s->offset), errno_text(err));
}

int Context::submit_to_kernel(Slot **slots, struct iocb **iocbs, unsigned n, unsigned *accepted,
                              int first)
{
	unsigned done = 0;
	int again = 0, err = 0;
	while (done < n) {
		int r = first != kNoResult ? first : kaio_sys_io_submit(kctx_, long(n - done), iocbs + done);
		first = kNoResult;
		if (r > 0) {
			done += unsigned(r) < n - done ? unsigned(r) : n - done;
			again = 0;
			continue;
		}
		if (r == -EINTR)
			continue;
		if ((r == 0 || r == -EAGAIN) && ++again < kKernelRetries) {
			sched_yield();
			continue;
		}
		err = r == 0 ? EAGAIN : -r;
		break;
	}
	*accepted = done;
	if (done == n)
		return 0;
	// What the kernel did not take is handed back: references dropped,
	// slots and capacity returned.
	for (unsigned i = done + 1; i < n; i++) {
		drop_slot_refs(slots[i]);
		free_slot(slots[i]);
	}
	drop_slot_refs(slots[done]);
	const bool nothing_to_reap = inflight() == 1;
	int rc = kernel_refusal(slots[done], err, nothing_to_reap);
	free_slot(slots[done]);
	return rc;
}

int Context::submit_one(const struct kaio_op &op)
{
	if (!fast_rw(op) || shutting_down_.load(std::memory_order_relaxed))
		return submit_general(&op, 1);
	// One plain read or write (kaio_read, kaio_write): it either fails,
	// setting the last error, or succeeds, leaving it; no guard needed.
	Slot *s = take_slot();
	if (!s)
		return fail_fixed(EAGAIN, kCapacityMessage);
	fill_rw_fast(s, op);
	struct iocb *iocb = &s->iocb;
	int r = kaio_sys_io_submit(kctx_, 1, &iocb);
	if (r == 1)
		return 1;
	unsigned took = 0; // anything else: retries and refusals as for a batch
	int rc = submit_to_kernel(&s, &iocb, 1, &took, r);
	return rc < 0 ? rc : 1;
}

int Context::submit(const struct kaio_op *ops, unsigned n)
{
	if (n == 1 && ops)
		return submit_one(ops[0]);
	return submit_general(ops, n);
}

int Context::submit_general(const struct kaio_op *ops, unsigned n)
{
	if (shutting_down_.load(std::memory_order_relaxed))
		return fail(ESHUTDOWN, "the context is being destroyed: no new operation is accepted");
	if (n == 0)
		return 0;
	if (!ops)
		return fail(EINVAL, "kaio_submit: ops is NULL");

	LastErrorGuard last_error_guard; // kept only if the call fails
	Slot *slots[kSubmitChunk];
	struct iocb *iocbs[kSubmitChunk];
	unsigned accepted = 0;
	int refusal = 0; // -errno of the first operation not accepted
	while (accepted < n && !refusal) {
		unsigned k = 0;
		const unsigned room = n - accepted < kSubmitChunk ? n - accepted : kSubmitChunk;
		while (k < room) {
			// A run of plain reads/writes takes its slots in one exchange;
			// each operation is looked at by fast_rw once.
			unsigned run = 0;
			while (k + run < room && fast_rw(ops[accepted + k + run]))
				run++;
			if (run) {
				const unsigned got = take_slots(slots + k, run);
				for (unsigned i = k; i < k + got; i++) {
					fill_rw_fast(slots[i], ops[accepted + i]);
					iocbs[i] = &slots[i]->iocb;
				}
				k += got;
				if (got < run) {
					refusal = fail_fixed(EAGAIN, kCapacityMessage);
					break;
				}
				if (k == room)
					break;
			}
			// ops[accepted + k] is not a plain read/write on a known fd.
			const struct kaio_op &op = ops[accepted + k];
			FdInfo info;
			int rc = validate(op, &info);
			if (rc < 0) {
				refusal = rc;
				break;
			}
			Slot *s = take_slot();
			if (!s) {
				refusal = fail_fixed(EAGAIN, kCapacityMessage);
				break;
			}
			rc = fill_slot(s, op);
			if (rc < 0) {
				free_slot(s);
				refusal = rc;
				break;
			}
			slots[k] = s;
			iocbs[k] = &s->iocb;
			k++;
		}
		if (k == 0)
			break;
		unsigned took = 0;
		int rc = submit_to_kernel(slots, iocbs, k, &took);
		accepted += took;
		if (rc < 0)
			refusal = rc;
	}
	if (accepted == 0) {
		if (refusal)
			last_error_guard.keep_new();
		return refusal;
	}
	return int(accepted); // a success leaves the last error as it was
}

// ---- delivery -----------------------------------------------------------------

void Context::fill_event(const Slot *s, struct kaio_event *ev) const
{
	ev->user_data = s->user_data;
	ev->res = s->res;
	ev->offset = (s->op == KAIO_OP_FSYNC || s->op == KAIO_OP_FDATASYNC) ? 0 : s->offset;
	ev->ctx = handle_;
	ev->buf = s->buf;
	ev->fd = s->fd;
	ev->op = s->op;
	ev->reserved[0] = 0;
	ev->reserved[1] = 0;
}

namespace {

// A finished vector operation's references, moved out of its slot: the
// slot goes back (its delivery has begun, so it stops counting against
// capacity) before the references are dropped, since dropping one may run
// a release function that submits.
class VectorRefs {
public:
	explicit VectorRefs(Slot *s) : refs_(inline_), n_(s->nvec)
	{
		if (n_ > kInlineRefs) {
			refs_ = s->vbufs;
			iov_ = s->iov;
			s->vbufs = nullptr;
			s->iov = nullptr;
			s->vec_cap = 0;
		} else if (n_) {
			memcpy(inline_, s->vbufs, n_ * sizeof(kaio_buf *));
		}
		s->nvec = 0;
	}
	~VectorRefs()
	{
		for (uint32_t i = 0; i < n_; i++)
			buf_put(refs_[i]);
		if (refs_ != inline_) {
			free(refs_);
			free(iov_);
		}
	}
	VectorRefs(const VectorRefs &) = delete;
	VectorRefs &operator=(const VectorRefs &) = delete;

private:
	kaio_buf *inline_[kInlineRefs];
	kaio_buf **refs_;
	struct iovec *iov_ = nullptr;
	uint32_t n_;
};

} // namespace

__attribute__((noinline)) void Context::deliver_vector_callback(Slot *s)
{
	struct kaio_event ev;
	fill_event(s, &ev);
	const kaio_cb cb = s->cb;
	VectorRefs vector_refs(s);
	free_slot(s); // before the callback: it may submit a follow-up
	cb(&ev);
}

void Context::deliver_callback(Slot *s)
{
	if (s->nvec) {
		deliver_vector_callback(s);
		return;
	}
	struct kaio_event ev;
	fill_event(s, &ev);
	const kaio_cb cb = s->cb;
	kaio_buf *const buf = s->buf;
	s->buf = nullptr;
	free_slot(s); // before the callback: it may submit a follow-up

	cb(&ev);

	if (buf)
		buf_put(buf);
}

__attribute__((noinline)) void Context::deliver_event_now(Slot *s, struct kaio_event *ev)
{
	fill_event(s, ev); // ev->buf carries the operation's reference
	s->buf = nullptr;
	VectorRefs vector_refs(s);
	free_slot(s); // before a release function may submit
}

inline void Context::deliver_event(Slot *s, struct kaio_event *ev, FreeChain *chain)
{
	if (s->nvec || !chain) {
		deliver_event_now(s, ev);
		return;
	}
	fill_event(s, ev); // ev->buf carries the operation's reference
	s->buf = nullptr;
	// A read or write: nothing of the user's runs before the chain is
	// returned, at the end of this reap or before the next callback.
	s->state = kFree;
	const uint32_t index1 = s->self1;
	if (chain->last)
		__atomic_store_n(&chain->last->next_free, index1, __ATOMIC_RELAXED);
	else
		chain->first = s;
	chain->last = s;
	chain->n++;
}

void Context::free_chain(FreeChain *chain)
{
	if (!chain->n)
		return;
	push_free(chain->first, chain->last, chain->n);
	*chain = FreeChain();
}

void Context::queue_undelivered(Slot *s)
{
	lock_.lock();
	s->state = kQueued;
	s->next = nullptr;
	if (queue_tail_)
		queue_tail_->next = s;
	else
		queue_head_ = s;
	queue_tail_ = s;
	queued_.fetch_add(1, std::memory_order_seq_cst);
	lock_.unlock();
	// Announced by the reap that queued it, once (see the end of reap).
}

inline void Context::complete(Slot *s, struct kaio_event *events, unsigned max, unsigned *copied,
                              unsigned *delivered, FreeChain *chain, bool *queued_here)
{
	if (s->res == -EINVAL || s->res == -EBADF)
		fdcache_.forget(s->fd); // never trust what we learnt about it again
	if (s->cb) {
		free_chain(chain); // the callback may submit: capacity first
		deliver_callback(s);
		++*delivered;
	} else if (*copied < max) {
		deliver_event(s, &events[(*copied)++], chain);
		++*delivered;
	} else {
		queue_undelivered(s);
		*queued_here = true;
	}
}

unsigned Context::reap(struct kaio_event *events, unsigned max, unsigned *delivered, int *err,
                       bool *ring_busy)
{
	unsigned copied = 0;
	if (max > 0 && queued_.load(std::memory_order_acquire) > 0) {
		lock_.lock();
		Slot *chain = queue_head_, *last = nullptr;
		unsigned taken = 0;
		for (Slot *s = chain; s && taken < max; s = s->next) {
			last = s;
			taken++;
		}
		if (taken) {
			queue_head_ = last->next;
			if (!queue_head_)
				queue_tail_ = nullptr;
			last->next = nullptr;
			queued_.fetch_sub(taken, std::memory_order_relaxed);
		} else {
			chain = nullptr;
		}
		lock_.unlock();
		while (chain) {
			Slot *next = chain->next;
			deliver_event(chain, &events[copied++], nullptr);
			++*delivered;
			chain = next;
		}
	}
	struct io_event kev[kReapBatch];
	bool drained = false; // the completion eventfd, in this call
	bool busy = false;    // another thread was reading the ring
	FreeChain freed;
	// At most about one capacity's worth per call: callbacks that resubmit
	// work the kernel completes at once (a hole-backed file) would
	// otherwise keep this loop, and a kaio_wait that a wake or a signal
	// should end, going for ever.
	//
	// The first look is taken even with nothing in flight: readiness is
	// never left persistent, so every call drains a stale count, and only
	// take_completions may do that: it drains as the ring's owner and
	// looks at the ring after the drain (or leaves both to the thread that
	// owns the ring).  A drain with no look after it would eat the signal
	// of a completion that came just before it (work another thread
	// submitted after inflight() was read, or after the owner's last
	// look), leaving the event in the ring with nothing to announce it: a
	// thread waiting on the eventfd would wait for ever.
	unsigned taken = 0;
	bool looked = false, queued_here = false;
	while (taken < capacity_ &&
	       (!looked || inflight() > queued_.load(std::memory_order_relaxed))) {
		looked = true;
		int r = take_completions(kev, kReapBatch, &drained, &busy);
		if (r == -EINTR)
			continue;
		if (r < 0) {
			*err = -r;
			// The ring is unreadable (or io_getevents failed): there is
			// nothing to look at, but readiness is still not left behind.
			if (!drained)
				drain_eventfd();
			drained = true;
			break;
		}
		for (int i = 0; i < r; i++) {
			Slot *s = static_cast<Slot *>(kev[i].data);
			KAIO_TSAN_ACQUIRE(s);
			// libaio declares res unsigned long: the kernel's value is signed.
			s->res = static_cast<int64_t>(static_cast<long>(kev[i].res));
			complete(s, events, max, &copied, delivered, &freed, &queued_here);
		}
		free_chain(&freed);
		taken += unsigned(r);
		if (r < kReapBatch)
			break;
	}
	// What this call leaves behind must stay announced.  Events left in
	// the ring (a stop on the budget) signalled after this call's drain,
	// which came before its first look: at most capacity events were
	// there then, and the budget takes them all.  But events it queued
	// for want of room in events[] were taken from the ring, their
	// signals drained: an event loop on the eventfd (edge-triggered too)
	// or a blocked kaio_wait would never hear of them.  So make it
	// readable again: spurious readiness is allowed, and the next reap
	// drains it.  Likewise when this call drained the eventfd and leaves
	// events queued by an earlier call: a reap with no room (kaio_poll(ctx,
	// NULL, 0), a callbacks-only reaper) would otherwise eat the readiness
	// that announced them to a loop sharing the context.  Otherwise, if a
	// drain elsewhere ate the signal meant for a blocked kaio_wait with
	// room while queued events wait, hand the signal on.
	const bool left_queued = queued_.load(std::memory_order_seq_cst) > 0;
	if (queued_here || (drained && left_queued))
		rearm_eventfd();
	else if (left_queued)
		signal_blocked_waiters();
	if (ring_busy)
		*ring_busy = busy;
	return copied;
}

void Context::rearm_eventfd()
{
	uint64_t one = 1;
	ssize_t w = write(evfd_, &one, sizeof one);
	(void)w;
}

void Context::signal_blocked_waiters()
{
	if (blocked_.load(std::memory_order_seq_cst) > 0)
		rearm_eventfd();
}

void Context::drain_eventfd()
{
	// Only a hint that completions may be ready: reaping never depends on
	// it, so a failed read (empty: EAGAIN; anything else) changes nothing.
	uint64_t v;
	(void)kaio_sys_eventfd_read(evfd_, &v);
}

// Up to max completions from the kernel, or -errno.  Drains the completion
// eventfd once per reap (*drained), before its first look, as the API
// says: what signalled before the drain is then seen by that look (a
// completion advances the ring's tail before it signals the eventfd), and
// what signals after it leaves the eventfd readable: readiness may be
// spurious, never persistent.  From the ring only as its owner: a drain by
// a thread that then finds the ring taken could eat the signal of a
// completion the owner had already looked past.  Returns 0 and sets *busy
// when another thread owns the ring (it reaps, and drains).  The drain
// costs one read(2) per reap that finds completions too (one per 32 I/Os
// at depth 32 on holes; CPU per I/O unchanged within noise).
int Context::take_completions(struct io_event *kev, int max, bool *drained, bool *busy)
{
	if (use_ring_) {
		if (threaded_ && ring_busy_.exchange(true, std::memory_order_acquire)) {
			*busy = true;
			return 0;
		}
		if (!*drained) {
			drain_eventfd();
			*drained = true;
		}
		int n = kaio_sys_ring_reap(kctx_, max, kev);
		if (threaded_)
			ring_busy_.store(false, std::memory_order_release);
		return n;
	}
	if (!*drained) {
		drain_eventfd();
		*drained = true;
	}
	struct timespec zero = {0, 0};
	return kaio_sys_io_getevents(kctx_, 0, max, kev, &zero);
}

int Context::poll(struct kaio_event *events, unsigned max)
{
	if (delivering_on_this_thread())
		return fail(EBUSY, "kaio_poll: called from a callback or release function running on "
		                   "this context; reap from outside the callback");
	DeliveryFrame frame(this);
	unsigned delivered = 0;
	int err = 0;
	unsigned copied = reap(events, max, &delivered, &err);
	if (err && delivered == 0)
		return fail(err, "kaio_poll: reaping completions failed: %s", errno_text(err));
	return int(copied);
}

// ---- waiting and waking ----------------------------------------------------------
//
// kaio_ctx_wake bumps wake_gen_ and writes the wake eventfd; every waiter
// remembers the generation it started in and returns once it changes.  The
// wake eventfd is drained only when no registered waiter is owed a wake,
// with a re-arm if a wake raced with the drain, so no waiter can miss one.

void Context::register_waiter(Waiter *w)
{
	std::lock_guard<std::mutex> g(wait_mu_);
	w->start_gen = wake_gen_.load(std::memory_order_seq_cst);
	if (!waiters_ && drained_gen_ != w->start_gen)
		drain_wakefd(w->start_gen); // wakes before us are not ours
	w->next = waiters_;
	waiters_ = w;
}

// Under wait_mu_, with no registered waiter owed a wake of generation
// <= gen: empties the wake eventfd, re-arming it if a wake raced in.
void Context::drain_wakefd(uint64_t gen)
{
	uint64_t v;
	ssize_t r = read(wakefd_, &v, sizeof v);
	drained_gen_ = gen;
	if (wake_gen_.load(std::memory_order_seq_cst) != gen) {
		uint64_t one = 1;
		r = write(wakefd_, &one, sizeof one);
	}
	(void)r;
}

void Context::unregister_waiter(Waiter *w)
{
	std::lock_guard<std::mutex> g(wait_mu_);
	for (Waiter **p = &waiters_; *p; p = &(*p)->next) {
		if (*p == w) {
			*p = w->next;
			break;
		}
	}
}

int Context::settle_stale_wake(int remaining_ms, unsigned busy_rounds)
{
	bool owed = false;
	{
		std::lock_guard<std::mutex> g(wait_mu_);
		const uint64_t gen = wake_gen_.load(std::memory_order_seq_cst);
		for (const Waiter *x = waiters_; x; x = x->next)
			if (x->start_gen != gen)
				owed = true;
		if (!owed)
			drain_wakefd(gen);
	}
	if (!owed)
		return 0;
	// Another waiter has a wake to see; it will return and leave the fd
	// to be drained.  Meanwhile wait for completions only, briefly: unless
	// another thread holds the ring, which keeps the completion eventfd
	// readable (see wait_for_ring); then sleep its step, since neither fd
	// can tell us anything until one of them lets go.
	if (busy_rounds > 0) {
		struct timespec ts = ring_step(busy_rounds);
		return ::ppoll(nullptr, 0, &ts, nullptr);
	}
	struct pollfd p = {evfd_, POLLIN, 0};
	return ::poll(&p, 1, remaining_ms < 0 || remaining_ms > 1 ? 1 : remaining_ms);
}

int Context::wake()
{
	wake_gen_.fetch_add(1, std::memory_order_seq_cst);
	uint64_t one = 1;
	ssize_t r = write(wakefd_, &one, sizeof one);
	(void)r;
	return 0;
}

// Another thread is reading the ring.  Completions that come while it
// holds the ring, after its drain, leave the completion eventfd readable
// until it (or the next reaper) drains again, so poll(2) on it would
// return at once, again and again: a spin for as long as the owner keeps
// the ring (microseconds, or a whole timeslice if it is preempted there).
// So give it the CPU first, then sleep in short, growing steps (20 us to
// 1 ms) on the wake eventfd only: kaio_ctx_wake still ends the wait at
// once, and events queued for this waiter are taken by the next look.
// Returns as poll(2) does.
int Context::wait_for_ring(struct pollfd *wake, unsigned busy_rounds)
{
	if (busy_rounds <= 2) {
		sched_yield();
		return 0;
	}
	struct timespec ts = ring_step(busy_rounds);
	return ::ppoll(wake, 1, &ts, nullptr);
}

// The sleep of a waiter's look number busy_rounds (>= 3) at a held ring:
// 20 us, doubling, at most 1 ms: never past the caller's deadline, which
// is >= 1 ms away.
struct timespec Context::ring_step(unsigned busy_rounds)
{
	const long us = busy_rounds - 3 >= 6 ? 1000 : 20L << (busy_rounds - 3);
	return {0, us * 1000};
}

int Context::wait(struct kaio_event *events, unsigned min, unsigned max, int timeout_ms)
{
	if (delivering_on_this_thread())
		return fail(EBUSY, "kaio_wait: called from a callback or release function running on "
		                   "this context; reap from outside the callback");
	if (timeout_ms < -1)
		return fail(EINVAL, "kaio_wait: timeout_ms %d is below -1 (-1 waits without limit)",
		            timeout_ms);
	DeliveryFrame frame(this);
	const int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	Waiter w{};
	register_waiter(&w);
	unsigned copied = 0, delivered = 0;
	int err = 0;
	unsigned busy_rounds = 0; // looks in a row that found the ring taken
	for (;;) {
		bool ring_busy = false;
		copied += reap(events ? events + copied : nullptr, max - copied, &delivered, &err,
		               &ring_busy);
		busy_rounds = ring_busy ? busy_rounds + 1 : 0;
		if (err || delivered >= min || (max && copied >= max))
			break;
		if (wake_gen_.load(std::memory_order_seq_cst) != w.start_gen)
			break;
		int remaining = -1;
		if (timeout_ms == 0)
			break;
		if (timeout_ms > 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				break;
			remaining = int(left);
		}
		// Only a waiter with room for events counts as blocked: events
		// another thread queued must wake it.  Counted before looking at
		// the queue, so a queueing thread either sees it or is seen.
		const bool room = copied < max;
		if (room)
			blocked_.fetch_add(1, std::memory_order_seq_cst);
		const bool queued_for_us = room && queued_.load(std::memory_order_seq_cst) > 0;
		struct pollfd pfd[2] = {{evfd_, POLLIN, 0}, {wakefd_, POLLIN, 0}};
		int pr = 0; // with events queued for us: take them at once
		if (!queued_for_us)
			pr = busy_rounds > 0 ? wait_for_ring(&pfd[1], busy_rounds)
			                     : ::poll(pfd, 2, remaining);
		if (pr > 0 && (pfd[1].revents & POLLIN) &&
		    wake_gen_.load(std::memory_order_seq_cst) == w.start_gen)
			pr = settle_stale_wake(remaining, busy_rounds); // a wake not for us
		const int perr = errno;
		if (room)
			blocked_.fetch_sub(1, std::memory_order_seq_cst);
		if (pr < 0) {
			// Any handled signal ends the wait, SA_RESTART or not; a wake
			// (perhaps from that very handler) wins over EINTR.
			const bool woken = wake_gen_.load(std::memory_order_seq_cst) != w.start_gen;
			if (perr != EINTR)
				err = perr;
			else if (delivered == 0 && !woken)
				err = EINTR;
			break;
		}
	}
	unregister_waiter(&w);
	if (err && delivered == 0) {
		if (err == EINTR)
			return fail(EINTR, "kaio_wait: interrupted by a signal before anything was delivered");
		return fail(err, "kaio_wait: %s", errno_text(err));
	}
	return int(copied);
}

} // namespace kaio
