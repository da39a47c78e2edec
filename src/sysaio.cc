#include "sysaio.h"

#include <cerrno>
#include <unistd.h>

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
