// Refcounted buffer handles (struct kaio_buf of the public header).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "kaio.h"

struct kaio_buf {
	std::atomic<uint32_t> magic{0};
	bool mapped = false;  // from kaio_buf_alloc: munmap at the end
	std::atomic<uint64_t> refs{0};
	void *data = nullptr;
	size_t len = 0;
	size_t map_len = 0;
	kaio_release_fn release = nullptr;
	void *opaque = nullptr;
};

namespace kaio {

constexpr uint32_t kBufMagic = 0x6b627566;     // "kbuf"
constexpr uint32_t kBufDeadMagic = 0x64656164; // "dead"

int buf_alloc(kaio_buf **out, size_t len, unsigned flags);
int buf_wrap(kaio_buf **out, void *data, size_t len, kaio_release_fn release,
             void *opaque);

// Is b a live handle?  Cheap: alignment plus the magic tag.
inline bool buf_live(const kaio_buf *b)
{
	return b && (reinterpret_cast<uintptr_t>(b) & 7) == 0 &&
	       b->magic.load(std::memory_order_relaxed) == kBufMagic;
}

// What is wrong with a handle that is not live, as a phrase:
// "is NULL", "was already freed ...", "is not a kaio buffer handle".
const char *buf_problem(const kaio_buf *b);
// Sets the last error "<what>: buffer <p> <problem>" and returns -EINVAL.
int buf_refused(const kaio_buf *b, const char *what);

inline void buf_get(kaio_buf *b)
{
	b->refs.fetch_add(1, std::memory_order_relaxed);
}

// Drops one reference of a live handle; the last one frees it.
void buf_put(kaio_buf *b);

} // namespace kaio
