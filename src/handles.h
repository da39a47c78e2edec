// Type-stable storage for public handles.  A destroyed handle's memory is
// never returned to the system: it keeps a dead magic tag, so a stale
// pointer passed back in is refused instead of read as freed memory.
// Released handles are reused first-in first-out after a quarantine, so a
// just-destroyed handle stays detectably dead for a long while.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <new>

#include "forkgen.h"

namespace kaio {

template <class T>
class HandlePool {
public:
	// A fresh or recycled T (value-initialised), or nullptr.
	T *acquire()
	{
		ensure_fork_handler();
		{
			std::lock_guard<std::mutex> g(g_handle_pool_mutex);
			if (free_.size() > kQuarantine) {
				T *t = free_.front();
				free_.pop_front();
				t->~T();
				return new (t) T();
			}
		}
		return new (std::nothrow) T();
	}

	// Frees the released handles (the library's own pools are never
	// destroyed, so their dead handles stay readable).
	~HandlePool()
	{
		for (T *t : free_)
			delete t;
	}

	// t must already carry its dead tag.
	void release(T *t)
	{
		std::lock_guard<std::mutex> g(g_handle_pool_mutex);
		try {
			free_.push_back(t);
		} catch (...) {
			// Out of memory: the handle stays dead and unused.
		}
	}

private:
	static constexpr size_t kQuarantine = 64;
	std::deque<T *> free_; // under g_handle_pool_mutex (see forkgen.h)
};

// Is p plausibly a pointer to a T-sized object we could read?  Only its
// alignment can be checked cheaply; the magic tag does the rest.
inline bool aligned_handle(const void *p)
{
	return p && (reinterpret_cast<uintptr_t>(p) & 7) == 0;
}

} // namespace kaio
