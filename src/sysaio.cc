#include "sysaio.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sys/uio.h>
#include <unistd.h>

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifdef HAVE_VALGRIND_MEMCHECK_H
#include <valgrind/memcheck.h>
#endif

#define SEAM extern "C" __attribute__((visibility("hidden"), noinline))

SEAM int kaio_sys_io_setup(unsigned nr, io_context_t *ctx)
{
	return io_setup(static_cast<int>(nr), ctx);
}

SEAM int kaio_sys_io_destroy(io_context_t ctx)
{
	return io_destroy(ctx);
}

SEAM int kaio_sys_io_submit(io_context_t ctx, long nr, struct iocb **iocbs)
{
	return io_submit(ctx, nr, iocbs);
}

SEAM int kaio_sys_io_getevents(io_context_t ctx, long min_nr, long nr,
                               struct io_event *events, struct timespec *timeout)
{
	return io_getevents(ctx, min_nr, nr, events, timeout);
}

SEAM long kaio_sys_eventfd_read(int fd, uint64_t *value)
{
	ssize_t r = read(fd, value, sizeof *value);
	return r < 0 ? -errno : static_cast<long>(r);
}

namespace {

// The kernel's completion ring (fs/aio.c), mapped at the address io_setup
// returns as the context id.  The kernel writes io_events[tail] and then
// advances tail; the consumer copies from head and advances head.
struct AioRing {
	unsigned id;
	unsigned nr; // ring size, which may exceed the size asked for
	unsigned head;
	unsigned tail;
	unsigned magic;
	unsigned compat_features;
	unsigned incompat_features;
	unsigned header_length;
	struct io_event io_events[];
};

constexpr unsigned kAioRingMagic = 0xa10a10a1;

#ifdef HAVE_VALGRIND_MEMCHECK_H
std::atomic<bool> g_valgrind{false}; // memcheck runs us: set by kaio_sys_ring_usable

// What valgrind does after io_getevents, which it cannot do for events read
// from the ring: the bytes a read brought in are now defined.
void mark_read_defined(const struct io_event &ev)
{
	const auto *cb = static_cast<const struct iocb *>(ev.obj);
	long res = static_cast<long>(ev.res);
	if (!cb || res <= 0)
		return;
	if (cb->aio_lio_opcode == IO_CMD_PREAD) {
		VALGRIND_MAKE_MEM_DEFINED(cb->u.c.buf, size_t(res));
	} else if (cb->aio_lio_opcode == IO_CMD_PREADV) {
		const auto *iov = static_cast<const struct iovec *>(cb->u.c.buf);
		for (unsigned long i = 0; i < cb->u.c.nbytes && res > 0; i++) {
			size_t n = iov[i].iov_len < size_t(res) ? iov[i].iov_len : size_t(res);
			VALGRIND_MAKE_MEM_DEFINED(iov[i].iov_base, n);
			res -= long(n);
		}
	}
}
#endif

} // namespace

SEAM int kaio_sys_ring_usable(io_context_t ctx)
{
	const auto *ring = reinterpret_cast<const AioRing *>(ctx);
	if (!(ring && ring->magic == kAioRingMagic && ring->incompat_features == 0 && ring->nr > 0))
		return 0;
#ifdef HAVE_VALGRIND_MEMCHECK_H
	// Valgrind maps only the ring size that was asked for; the kernel's
	// ring is larger.  Tell memcheck the rest is there too.
	if (RUNNING_ON_VALGRIND) {
		// Memcheck answers this request with -1; other tools (callgrind)
		// ignore it and answer 0: only memcheck needs reads marked.
		long r = VALGRIND_MAKE_MEM_DEFINED(ring, sizeof *ring +
		                                             size_t(ring->nr) * sizeof(struct io_event));
		if (r != 0)
			g_valgrind.store(true, std::memory_order_relaxed);
	}
#else
	// Under valgrind (its preload library is in LD_PRELOAD) the ring
	// cannot be described to memcheck: reap with io_getevents.
	const char *pre = getenv("LD_PRELOAD");
	if (pre && strstr(pre, "vgpreload"))
		return 0;
#endif
	return 1;
}

SEAM int kaio_sys_ring_reap(io_context_t ctx, long nr, struct io_event *events)
{
	auto *ring = reinterpret_cast<AioRing *>(ctx);
	const unsigned size = ring->nr;
	unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
	// Acquire: the events before tail are written.
	const unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
	if (head >= size || tail >= size)
		return -EIO;
	// At most two contiguous runs: head to the end of the ring, then from 0.
	long n = 0;
	while (n < nr && head != tail) {
		const unsigned end = tail > head ? tail : size;
		const long run = end - head < unsigned(nr - n) ? long(end - head) : nr - n;
		memcpy(events + n, ring->io_events + head, size_t(run) * sizeof *events);
		n += run;
		head += unsigned(run);
		if (head == size)
			head = 0;
	}
#ifdef HAVE_VALGRIND_MEMCHECK_H
	if (n && g_valgrind.load(std::memory_order_relaxed))
		for (long i = 0; i < n; i++)
			mark_read_defined(events[i]);
#endif
	// Release: the slots are free for the kernel only after the copies.
	if (n)
		__atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
	return static_cast<int>(n);
}
