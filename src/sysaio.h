// The syscall seam: the only code that calls kernel AIO (and reads the
// completion eventfd).  Each function
// returns what libaio returns (>= 0, or -errno).  Tests link the internal
// library with -Wl,--wrap=kaio_sys_io_submit (etc.) to make the kernel
// answer any way they like.
#pragma once

#include <libaio.h>
#include <cstdint>
#include <ctime>

extern "C" {
int kaio_sys_io_setup(unsigned nr, io_context_t *ctx);
int kaio_sys_io_destroy(io_context_t ctx);
int kaio_sys_io_submit(io_context_t ctx, long nr, struct iocb **iocbs);
int kaio_sys_io_getevents(io_context_t ctx, long min_nr, long nr,
                          struct io_event *events, struct timespec *timeout);
// read(2) of the completion eventfd's counter: 8 bytes, or -errno.
long kaio_sys_eventfd_read(int fd, uint64_t *value);
}
