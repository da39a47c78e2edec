// Fork detection at no per-call cost: a pthread_atfork child handler bumps
// a generation number; each context remembers the one it was created in.
#pragma once

#include <atomic>
#include <mutex>

namespace kaio {

extern std::atomic<unsigned> g_fork_generation;

// The lock of the handle pools.  The atfork handlers hold it across fork(),
// so a child never inherits it locked by a thread that does not exist
// there.
extern std::mutex g_handle_pool_mutex;

// Registers the atfork handlers once per process (idempotent, thread-safe).
void ensure_fork_handler();

inline unsigned fork_generation()
{
	return g_fork_generation.load(std::memory_order_relaxed);
}

} // namespace kaio
