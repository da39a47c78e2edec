// Fork detection at no per-call cost: a pthread_atfork child handler bumps
// a generation number; each context remembers the one it was created in.
#pragma once

#include <atomic>

namespace kaio {

extern std::atomic<unsigned> g_fork_generation;

// Registers the atfork handler once per process (idempotent, thread-safe).
void ensure_fork_handler();

inline unsigned fork_generation()
{
	return g_fork_generation.load(std::memory_order_relaxed);
}

} // namespace kaio
