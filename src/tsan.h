// ThreadSanitizer cannot see the ordering the kernel provides between the
// io_submit of a request and the io_getevents that returns it: tell it.
#pragma once

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
#define KAIO_TSAN_RELEASE(p) __tsan_release(p)
#define KAIO_TSAN_ACQUIRE(p) __tsan_acquire(p)
#else
#define KAIO_TSAN_RELEASE(p) ((void)0)
#define KAIO_TSAN_ACQUIRE(p) ((void)0)
#endif
