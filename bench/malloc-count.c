/* LD_PRELOAD heap-allocation counter for bench/compare: counts every call
 * of malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign and
 * valloc (operator new goes through malloc) in the whole process and
 * writes the total to $MALLOC_COUNT_FILE (else stderr) at exit. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_ulong count;

/* dlsym may itself call calloc: serve that from a static arena. */
static char boot[4096];
static size_t boot_used;

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static int resolving;

static void resolve(void)
{
	if (real_malloc || resolving)
		return;
	resolving = 1;
	real_malloc = dlsym(RTLD_NEXT, "malloc");
	real_calloc = dlsym(RTLD_NEXT, "calloc");
	real_realloc = dlsym(RTLD_NEXT, "realloc");
	real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
	real_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
	real_memalign = dlsym(RTLD_NEXT, "memalign");
	resolving = 0;
}

static int from_boot(const void *p)
{
	return (const char *)p >= boot && (const char *)p < boot + sizeof boot;
}

void *malloc(size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	return real_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	if (!real_calloc) {
		if (resolving) { /* dlsym's own allocation */
			size_t want = (n * m + 15) & ~(size_t)15;
			if (boot_used + want > sizeof boot)
				return NULL;
			void *p = boot + boot_used;
			boot_used += want;
			return p;
		}
		resolve();
	}
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	return real_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	if (from_boot(p)) {
		void *q = real_malloc(n);
		if (q)
			memcpy(q, p, n);
		return q;
	}
	return real_realloc(p, n);
}

void free(void *p)
{
	static void (*real_free)(void *);
	if (!p || from_boot(p))
		return;
	if (!real_free)
		real_free = dlsym(RTLD_NEXT, "free");
	real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	return real_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&count, 1, memory_order_relaxed);
	return real_memalign(align, n);
}

__attribute__((destructor)) static void report(void)
{
	const char *path = getenv("MALLOC_COUNT_FILE");
	FILE *f = path ? fopen(path, "w") : stderr;
	if (!f)
		return;
	fprintf(f, "%lu\n", atomic_load(&count));
	if (f != stderr)
		fclose(f);
}
