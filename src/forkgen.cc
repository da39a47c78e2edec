#include "forkgen.h"

#include <pthread.h>

namespace kaio {

std::atomic<unsigned> g_fork_generation{0};
std::mutex g_handle_pool_mutex;

namespace {
pthread_once_t once = PTHREAD_ONCE_INIT;

void before_fork()
{
	g_handle_pool_mutex.lock();
}

void in_parent()
{
	g_handle_pool_mutex.unlock();
}

void in_child()
{
	g_fork_generation.fetch_add(1, std::memory_order_relaxed);
	g_handle_pool_mutex.unlock();
}

void register_handler()
{
	pthread_atfork(before_fork, in_parent, in_child);
}
} // namespace

void ensure_fork_handler()
{
	pthread_once(&once, register_handler);
}

} // namespace kaio
