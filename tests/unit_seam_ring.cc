// unit_seam's wrap of kaio_sys_ring_usable: the fault-injection tests script
// io_getevents, so by default the library is told the completion ring
// cannot be read in user space and reaps with io_getevents only.  A test
// sets seam_ring_allowed = 1 to let the real check decide.  And the wrap of
// kaio_sys_ring_reap: a test sets seam_ring_reap to answer the ring reads
// itself (it may call __real_kaio_sys_ring_reap).
#include <libaio.h>

extern "C" {
int seam_ring_allowed = 0;
int __real_kaio_sys_ring_usable(io_context_t ctx);
int __wrap_kaio_sys_ring_usable(io_context_t ctx)
{
	return seam_ring_allowed ? __real_kaio_sys_ring_usable(ctx) : 0;
}

int (*seam_ring_reap)(io_context_t ctx, long nr, struct io_event *events);
int __real_kaio_sys_ring_reap(io_context_t ctx, long nr, struct io_event *events);
int __wrap_kaio_sys_ring_reap(io_context_t ctx, long nr, struct io_event *events)
{
	if (seam_ring_reap)
		return seam_ring_reap(ctx, nr, events);
	return __real_kaio_sys_ring_reap(ctx, nr, events);
}
}
