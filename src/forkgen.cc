#include "forkgen.h"

#include <pthread.h>

namespace kaio {

std::atomic<unsigned> g_fork_generation{0};

namespace {
pthread_once_t once = PTHREAD_ONCE_INIT;

void in_child()
{
	g_fork_generation.fetch_add(1, std::memory_order_relaxed);
}

void register_handler()
{
	pthread_atfork(nullptr, nullptr, in_child);
}
} // namespace

void ensure_fork_handler()
{
	pthread_once(&once, register_handler);
}

} // namespace kaio
