/* Helpers shared by the integration tests: a temporary directory on a real
 * disk, O_DIRECT files filled with a checkable pattern, and skipping (exit
 * 77 with a reason) when the kernel or filesystem cannot do what a test
 * needs.  Never fakes the kernel. */
#ifndef KAIO_TESTS_COMMON_H
#define KAIO_TESTS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <setjmp.h>

#include "kaio.h"

#ifdef __cplusplus
extern "C" {
#endif

#include <cmocka.h> /* cmocka 1.1 declares no C linkage of its own */

/* Exit 77 after printing "1..0 # SKIP reason" (TAP) and the reason on
 * stderr. */
void kt_skip_all(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Call first in main(): checks that kernel AIO works and that the test
 * directory accepts O_DIRECT; skips the whole program otherwise. */
void kt_require_aio(void);

/* The test directory: created once (under $KAIO_TEST_DIR, else the current
 * directory, which is on disk; never /tmp if that is tmpfs), removed at
 * exit. */
const char *kt_dir(void);

/* "<kt_dir()>/<name>" in a static rotating buffer. */
const char *kt_path(const char *name);

/* Non-zero when $KAIO_TEST_NO_LOOP is set (and not "0"): tests that would
 * attach loop devices (root only) skip, e.g. in a package build. */
int kt_no_loop(void);

/* Create (truncate) file `name` of `size` bytes filled with kt_pattern, and
 * return it opened with `flags` (O_RDWR|O_DIRECT typical).  Fails the test
 * on error. */
int kt_make_file(const char *name, size_t size, int flags);

/* Open (creating, empty) file `name` with `flags`. */
int kt_open(const char *name, int flags);

/* The pattern: each 8-byte word at file offset o (o % 8 == 0) holds
 * o * 0x9E3779B97F4A7C15 ^ 0x6b61696f; kt_fill writes it for a region that
 * starts at file offset `file_off` (a multiple of 8), kt_check returns 0 if
 * it matches, else 1 + the index of the first bad byte. */
void kt_fill(void *p, size_t len, uint64_t file_off);
size_t kt_check(const void *p, size_t len, uint64_t file_off);

/* A kaio context or fail the test. */
kaio_ctx *kt_ctx(unsigned capacity, unsigned flags);
/* A zero-filled kaio_buf_alloc buffer or fail the test. */
kaio_buf *kt_buf(size_t len);

/* Wait until `n` events (operations submitted without a callback) were
 * copied into events[0..n-1]; fails the test on error or after 10 s with
 * nothing.  Returns n. */
int kt_wait_n(kaio_ctx *ctx, struct kaio_event *events, unsigned n);

/* Reap until kaio_ctx_inflight() is 0, dropping copied events' buffer
 * references; callbacks run as usual. */
void kt_drain(kaio_ctx *ctx);

/* CLOCK_MONOTONIC in milliseconds; a sleep that resumes after signals. */
int64_t kt_now_ms(void);
void kt_sleep_ms(int ms);

/* `expr` must return `want`. */
#define EXPECT_RC(expr, want) do { \
	int rc_ = (expr); \
	if (rc_ != (want)) \
		fail_msg("%s = %d (%s), expected %d", #expr, rc_, kaio_last_error(), (int)(want)); \
} while (0)

/* `expr` must be refused with `want` (negative) and explain why. */
#define EXPECT_REFUSED(expr, want) do { \
	int rc_ = (expr); \
	if (rc_ != (want)) \
		fail_msg("%s = %d (%s), expected %d", #expr, rc_, kaio_last_error(), (int)(want)); \
	const char *le_ = kaio_last_error(); \
	if (le_ == NULL || le_[0] == '\0') \
		fail_msg("%s was refused with %d but kaio_last_error() is empty", #expr, rc_); \
} while (0)

#ifndef __cplusplus
#include <stdatomic.h>
/* A kaio_buf_wrap buffer over page-aligned, zeroed heap memory whose
 * release callback counts how often it ran (a call with the wrong data or
 * length counts 1000: shows up as a failure). */
struct kt_wrapped {
	void *mem;
	size_t len;
	atomic_int released;
};
void kt_wrapped_release(void *data, size_t len, void *opaque);
/* A new wrapped buffer of len bytes released through fn (which may call
 * kt_wrapped_release), or fail the test. */
kaio_buf *kt_wrapped_new_fn(struct kt_wrapped *w, size_t len, kaio_release_fn fn);
kaio_buf *kt_wrapped_new(struct kt_wrapped *w, size_t len);
/* Free the memory once its release ran exactly once (else fail). */
void kt_wrapped_free(struct kt_wrapped *w);
#endif

/* The entries of a directory, "." and ".." aside (e.g. /proc/self/task:
 * the threads of this process), or -1 when it cannot be opened. */
int kt_count_entries(const char *dir);
/* The number of open file descriptors (entries of /proc/self/fd). */
int kt_count_fds(void);

/* Figures for the end of `make check` (tests/run-tests.sh sums them over
 * every program): kt_figure_add() accumulates per key, and at exit the
 * process prints one "# figure: KEY VALUE" line per key.  Every refusal
 * checked with REFUSED/REFUSED2 counts as a bad input. */
void kt_figure_add(const char *key, long long value);

/* Refusal checks that prove the refusal set its own sentence:
 * kt_set_marker() provokes a known refusal first (its sentence is
 * kt_marker()); kt_check_refused() then wants rc == -want1 (or -want2 when
 * not 0; any negative when want1 is 0) and a non-empty kaio_last_error()
 * other than the marker. */
void kt_set_marker(void);
const char *kt_marker(void);
void kt_check_refused(int rc, int want1, int want2, const char *expr, int line);

#define REFUSED(want, expr) do { kt_set_marker(); int rc_ = (expr); \
	kt_check_refused(rc_, (want), 0, #expr, __LINE__); } while (0)
#define REFUSED2(w1, w2, expr) do { kt_set_marker(); int rc_ = (expr); \
	kt_check_refused(rc_, (w1), (w2), #expr, __LINE__); } while (0)
#define ACCEPTED(expr) do { int rc_ = (expr); if (rc_ != 0) \
	fail_msg("line %d: %s = %d (%s), expected 0", __LINE__, #expr, rc_, kaio_last_error()); } while (0)

#ifdef __cplusplus
}
#endif

#endif
