// The syscall seam: the only code that calls kernel AIO.  Each function
// returns what libaio returns (>= 0, or -errno).  Tests link the internal
// library with -Wl,--wrap=kaio_sys_io_submit (etc.) to make the kernel
// answer any way they like.
#pragma once

#include <libaio.h>
#include <ctime>

extern "C" {
int kaio_sys_io_setup(unsigned nr, io_context_t *ctx);
int kaio_sys_io_destroy(io_context_t ctx);
int kaio_sys_io_submit(io_context_t ctx, long nr, struct iocb **iocbs);
int kaio_sys_io_getevents(io_context_t ctx, long min_nr, long nr,
                          struct io_event *events, struct timespec *timeout);
}
