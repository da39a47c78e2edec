#include "buffer.h"

#include <cerrno>
#include <cstring>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "errors.h"
#include "handles.h"

namespace kaio {
namespace {

// Never destroyed: dead handles stay readable until the process ends.
HandlePool<kaio_buf> &pool()
{
	static HandlePool<kaio_buf> *p = new HandlePool<kaio_buf>();
	return *p;
}

size_t page_size()
{
	static const size_t ps = static_cast<size_t>(sysconf(_SC_PAGESIZE));
	return ps;
}

int memlock_failure(size_t len, int err)
{
	struct rlimit rl {};
	getrlimit(RLIMIT_MEMLOCK, &rl);
	if (rl.rlim_cur == RLIM_INFINITY)
		return fail(err, "cannot lock %zu bytes in RAM: %s", len, errno_text(err));
	return fail(err,
	            "cannot lock %zu bytes in RAM: RLIMIT_MEMLOCK (ulimit -l) allows "
	            "%llu bytes per process; raise it or drop KAIO_BUF_LOCKED",
	            len, static_cast<unsigned long long>(rl.rlim_cur));
}

} // namespace

const char *buf_problem(const kaio_buf *b)
{
	if (!b)
		return "is NULL";
	if ((reinterpret_cast<uintptr_t>(b) & 7) == 0 &&
	    b->magic.load(std::memory_order_relaxed) == kBufDeadMagic)
		return "was already freed (its last reference was dropped)";
	return "is not a kaio buffer handle";
}

int buf_refused(const kaio_buf *b, const char *what)
{
	return fail(EINVAL, "%s: buffer %p %s", what, static_cast<const void *>(b), buf_problem(b));
}

int buf_alloc(kaio_buf **out, size_t len, unsigned flags)
{
	if (!out)
		return fail(EINVAL, "kaio_buf_alloc: out is NULL");
	if (flags & ~KAIO_BUF_LOCKED)
		return fail(EINVAL, "kaio_buf_alloc: unknown flag bits %#x",
		            flags & ~KAIO_BUF_LOCKED);
	if (len == 0)
		return fail(EINVAL, "kaio_buf_alloc: length 0; a buffer needs at least one byte");
	const size_t ps = page_size();
	if (len > SIZE_MAX - ps)
		return fail(ENOMEM, "kaio_buf_alloc: %zu bytes is more than can be mapped", len);
	const size_t map_len = (len + ps - 1) & ~(ps - 1);
	void *mem = mmap(nullptr, map_len, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		int err = errno;
		return fail(err, "kaio_buf_alloc: cannot map %zu bytes: %s", len, errno_text(err));
	}
	// A fork() during I/O must not copy-on-write pages the kernel is
	// writing into: the child simply does not get this memory.
	if (madvise(mem, map_len, MADV_DONTFORK) != 0) {
		int err = errno;
		munmap(mem, map_len);
		return fail(err, "kaio_buf_alloc: madvise(MADV_DONTFORK) failed: %s", errno_text(err));
	}
	if ((flags & KAIO_BUF_LOCKED) && mlock(mem, map_len) != 0) {
		int err = errno;
		munmap(mem, map_len);
		return memlock_failure(len, err);
	}
	kaio_buf *b = pool().acquire();
	if (!b) {
		munmap(mem, map_len);
		return fail(ENOMEM, "kaio_buf_alloc: out of memory for the handle");
	}
	b->data = mem;
	b->len = len;
	b->map_len = map_len;
	b->mapped = true;
	b->release = nullptr;
	b->opaque = nullptr;
	b->refs.store(1, std::memory_order_relaxed);
	b->magic.store(kBufMagic, std::memory_order_release);
	*out = b;
	return 0;
}

int buf_wrap(kaio_buf **out, void *data, size_t len, kaio_release_fn release,
             void *opaque)
{
	if (!out)
		return fail(EINVAL, "kaio_buf_wrap: out is NULL");
	if (!data)
		return fail(EINVAL, "kaio_buf_wrap: data is NULL");
	if (len == 0)
		return fail(EINVAL, "kaio_buf_wrap: length 0; a buffer needs at least one byte");
	if (len > static_cast<size_t>(INT64_MAX) ||
	    reinterpret_cast<uintptr_t>(data) > UINTPTR_MAX - len)
		return fail(EINVAL, "kaio_buf_wrap: %zu bytes at %p run past the end of the address space",
		            len, data);
	kaio_buf *b = pool().acquire();
	if (!b)
		return fail(ENOMEM, "kaio_buf_wrap: out of memory for the handle");
	b->data = data;
	b->len = len;
	b->map_len = 0;
	b->mapped = false;
	b->release = release;
	b->opaque = opaque;
	b->refs.store(1, std::memory_order_relaxed);
	b->magic.store(kBufMagic, std::memory_order_release);
	*out = b;
	return 0;
}

void buf_put(kaio_buf *b)
{
	if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1)
		return;
	b->magic.store(kBufDeadMagic, std::memory_order_relaxed);
	if (b->mapped)
		munmap(b->data, b->map_len); // absent in a forked child: harmless
	else if (b->release)
		b->release(b->data, b->len, b->opaque);
	pool().release(b);
}

} // namespace kaio
