/*
 * buffer-budget.h - how much buffer memory the tools (kaio-cp, kaio-bench,
 * bench/raw-aio) may ask for: their buffers are filled (by reads, or by the
 * benchmark's pattern), so depth x block size is resident memory, and
 * more than the machine has ends in the OOM killer, not in an error.
 */
#ifndef KAIO_TOOLS_BUFFER_BUDGET_H
#define KAIO_TOOLS_BUFFER_BUDGET_H

#include <stdint.h>
#include <unistd.h>

/* Half of this machine's physical memory, in bytes (UINT64_MAX when
 * unknown): the most the tools' buffers may take together. */
static inline uint64_t tool_buffer_budget(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);

	if (pages <= 0 || size <= 0)
		return UINT64_MAX;
	return (uint64_t)pages * (uint64_t)size / 2;
}

/* Whether n buffers of len bytes fit the budget (no overflow). */
static inline int tool_buffers_fit(uint64_t n, uint64_t len)
{
	uint64_t budget = tool_buffer_budget();

	return len == 0 || n <= budget / len;
}

#endif
