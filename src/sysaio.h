// The syscall seam: the only code that calls kernel AIO, reads its
// completion ring in user space, or reads the completion eventfd.  Each function
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
// Whether completions can be reaped from ctx's ring in user space (its
// magic and feature words are the ones this code knows).  1 or 0.
int kaio_sys_ring_usable(io_context_t ctx);
// Copies up to nr completions from the ring (never blocks, no syscall) and
// returns their count, or -EIO if the ring's indexes are corrupt.  The
// caller guarantees a single consumer: no concurrent ring reap or
// io_getevents on ctx, and never in a forked child.
int kaio_sys_ring_reap(io_context_t ctx, long nr, struct io_event *events);
}
