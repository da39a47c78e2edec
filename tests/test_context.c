/* Integration tests for the context: capacity bounds and enforcement, flags,
 * the eventfd, kaio_ctx_wake, the per-context fd cache (kaio_ctx_forget_fd),
 * kaio_version and kaio_strerror.  Real files with O_DIRECT, the public API
 * only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define FILE_SIZE (1u << 20)

/* ---- helpers ------------------------------------------------------------- */

static int g_fd = -1; /* FILE_SIZE bytes of pattern, O_RDWR|O_DIRECT */

static int group_setup(void **state)
{
	g_fd = kt_make_file("context.dat", FILE_SIZE, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	if (g_fd >= 0)
		close(g_fd);
	g_fd = -1;
	return 0;
}

static void drop_events(struct kaio_event *ev, int n)
{
	for (int i = 0; i < n; i++)
		kaio_buf_unref(ev[i].buf);
}

/* ---- capacity bounds and flags ------------------------------------------- */

/* Contract: capacity is 1 to 65536, else -EINVAL (with an explanation). */
static void test_create_capacity_bounds(void **state)
{
	kaio_ctx *ctx = NULL;
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 0, 0), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 65537, 0), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, UINT_MAX, 0), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, (unsigned)INT_MAX + 1u, 0), -EINVAL);

	ctx = NULL;
	EXPECT_RC(kaio_ctx_create(&ctx, 1, 0), 0);
	assert_non_null(ctx);
	assert_int_equal(kaio_ctx_capacity(ctx), 1);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);

	ctx = NULL;
	EXPECT_RC(kaio_ctx_create(&ctx, 4096, 0), 0);
	assert_non_null(ctx);
	assert_int_equal(kaio_ctx_capacity(ctx), 4096);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: capacity 65536 is in range; when /proc/sys/fs/aio-max-nr refuses
 * it, the error says so. */
static void test_create_capacity_max(void **state)
{
	kaio_ctx *ctx = NULL;
	int rc = kaio_ctx_create(&ctx, KAIO_CAPACITY_MAX, 0);
	if (rc == 0) {
		assert_int_equal(kaio_ctx_capacity(ctx), KAIO_CAPACITY_MAX);
		EXPECT_RC(kaio_ctx_destroy(ctx), 0);
		return;
	}
	if (rc != -EAGAIN)
		fail_msg("kaio_ctx_create(65536) = %d (%s): expected 0, or -EAGAIN from the system-wide limit",
			 rc, kaio_last_error());
	if (!strstr(kaio_last_error(), "aio-max-nr"))
		fail_msg("capacity 65536 refused by the system-wide limit, but the error does not say so: \"%s\"",
			 kaio_last_error());
}

/* Contract: unknown flag bits are refused with -EINVAL; the known flags
 * combine. */
static void test_create_unknown_flags(void **state)
{
	kaio_ctx *ctx = NULL;
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 4, 0x4u), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 4, 0x80000000u), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 4, ~0u), -EINVAL);
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 4, KAIO_CTX_ALLOW_BUFFERED | 0x100u), -EINVAL);

	ctx = NULL;
	EXPECT_RC(kaio_ctx_create(&ctx, 4, KAIO_CTX_ALLOW_BUFFERED | KAIO_CTX_SINGLE_THREAD), 0);
	assert_non_null(ctx);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_ctx_capacity is the capacity given; kaio_ctx_inflight counts
 * accepted operations until their delivery. */
static void test_capacity_and_inflight_values(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(5 * BLK);
	assert_int_equal(kaio_ctx_capacity(ctx), 8);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	for (unsigned i = 0; i < 5; i++) {
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
		assert_int_equal(kaio_ctx_inflight(ctx), i + 1);
	}
	assert_int_equal(kaio_ctx_capacity(ctx), 8);
	struct kaio_event ev[5];
	kt_wait_n(ctx, ev, 5);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	for (int i = 0; i < 5; i++)
		assert_int_equal(ev[i].res, BLK);
	assert_int_equal(kt_check(kaio_buf_data(b), 5 * BLK, 0), 0);
	drop_events(ev, 5);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: a submission that would pass capacity returns -EAGAIN and takes
 * nothing (no reference, nothing queued); after reaping it succeeds. */
static void test_capacity_enforced(void **state)
{
	enum { CAP = 4 };
	kaio_ctx *ctx = kt_ctx(CAP, 0);
	kaio_buf *b = kt_buf(CAP * BLK);
	for (unsigned i = 0; i < CAP; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);

	/* Let the kernel finish them: they still count until delivered. */
	kt_sleep_ms(50);

	struct kt_wrapped w;
	kaio_buf *wb = kt_wrapped_new(&w, BLK);
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, wb, 0, BLK, NULL, 100), -EAGAIN);
	EXPECT_REFUSED(kaio_write(ctx, g_fd, 0, wb, 0, BLK, NULL, 101), -EAGAIN);
	struct kaio_vec vec = { wb, 0, BLK };
	EXPECT_REFUSED(kaio_readv(ctx, g_fd, 0, &vec, 1, NULL, 102), -EAGAIN);
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = g_fd, .offset = 0, .buf_offset = 0,
			      .len = BLK, .user_data = 103, .buf = wb };
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EAGAIN);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);
	assert_int_equal(atomic_load(&w.released), 0);

	/* The refusals took no reference: ours is the only one left. */
	kaio_buf_unref(wb);
	assert_int_equal(atomic_load(&w.released), 1);
	kt_wrapped_free(&w);

	/* Reap one; then one submission fits again, the next does not. */
	struct kaio_event ev[CAP + 1];
	int got = kaio_wait(ctx, ev, 1, 1, 5000);
	if (got != 1)
		fail_msg("kaio_wait(min 1, max 1) = %d (%s)", got, kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), CAP - 1);
	wb = kt_wrapped_new(&w, BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 8 * BLK, wb, 0, BLK, NULL, 200), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 201), -EAGAIN);
	kaio_buf_unref(wb); /* the accepted read holds its own reference */
	assert_int_equal(atomic_load(&w.released), 0);

	kt_wait_n(ctx, ev + 1, CAP);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	int seen200 = 0;
	for (int i = 0; i < CAP + 1; i++) {
		assert_int_equal(ev[i].res, BLK);
		if (ev[i].user_data == 200) {
			seen200++;
			assert_ptr_equal(ev[i].buf, wb);
			assert_int_equal(kt_check(kaio_buf_data(ev[i].buf), BLK, 8 * BLK), 0);
		}
	}
	assert_int_equal(seen200, 1);
	assert_int_equal(atomic_load(&w.released), 0);
	drop_events(ev, CAP + 1);
	kt_wrapped_free(&w);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_submit returns how many leading operations were accepted;
 * at capacity the first one is refused with -EAGAIN and nothing is taken. */
static void test_capacity_batch_submit(void **state)
{
	enum { CAP = 4, N = 6 };
	kaio_ctx *ctx = kt_ctx(CAP, 0);
	kaio_buf *b = kt_buf(N * BLK);
	struct kaio_op ops[N];
	memset(ops, 0, sizeof ops);
	for (unsigned i = 0; i < N; i++) {
		ops[i].op = KAIO_OP_READ;
		ops[i].fd = g_fd;
		ops[i].offset = i * BLK;
		ops[i].buf_offset = i * BLK;
		ops[i].len = BLK;
		ops[i].user_data = i;
		ops[i].buf = b;
	}
	int rc = kaio_submit(ctx, ops, N);
	/* Either the leading CAP were accepted, or (a reading of "a submission
	 * that would pass capacity") none was; nothing else is allowed. */
	if (rc == CAP) {
		assert_int_equal(kaio_ctx_inflight(ctx), CAP);
		EXPECT_REFUSED(kaio_submit(ctx, ops + CAP, N - CAP), -EAGAIN);
		assert_int_equal(kaio_ctx_inflight(ctx), CAP);
	} else if (rc == -EAGAIN) {
		assert_int_equal(kaio_ctx_inflight(ctx), 0);
		EXPECT_RC(kaio_submit(ctx, ops, CAP), CAP);
	} else {
		fail_msg("kaio_submit(%d ops) at capacity %d = %d (%s), expected %d", N, CAP, rc,
			 kaio_last_error(), CAP);
	}
	struct kaio_event ev[CAP];
	kt_wait_n(ctx, ev, CAP);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	for (int i = 0; i < CAP; i++) {
		assert_true(ev[i].user_data < CAP);
		assert_int_equal(ev[i].res, BLK);
	}
	drop_events(ev, CAP);
	/* The rest go through now. */
	EXPECT_RC(kaio_submit(ctx, ops + CAP, N - CAP), N - CAP);
	kt_wait_n(ctx, ev, N - CAP);
	drop_events(ev, N - CAP);
	assert_int_equal(kt_check(kaio_buf_data(b), N * BLK, 0), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: an operation counts against capacity until its delivery begins,
 * so completed-but-undelivered events (left queued because max was reached)
 * still count. */
static void test_capacity_counts_queued_events(void **state)
{
	enum { CAP = 4 };
	kaio_ctx *ctx = kt_ctx(CAP, 0);
	kaio_buf *b = kt_buf((CAP + 1) * BLK);
	for (unsigned i = 0; i < CAP; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
	kt_sleep_ms(100);
	struct kaio_event ev[CAP + 1];
	int got = kaio_wait(ctx, ev, 1, 1, 5000);
	if (got != 1)
		fail_msg("kaio_wait(min 1, max 1) = %d (%s)", got, kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), CAP - 1);
	EXPECT_RC(kaio_read(ctx, g_fd, CAP * BLK, b, CAP * BLK, BLK, NULL, CAP), 0);
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 99), -EAGAIN);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);
	kt_wait_n(ctx, ev + 1, CAP);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	drop_events(ev, CAP + 1);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: arguments are validated before capacity is checked (a bad
 * request at capacity gets its own error, not -EAGAIN). */
static void test_validation_before_capacity(void **state)
{
	enum { CAP = 2 };
	kaio_ctx *ctx = kt_ctx(CAP, 0);
	kaio_buf *b = kt_buf(2 * BLK);
	for (unsigned i = 0; i < CAP; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);

	int closed = open(kt_path("context.dat"), O_RDONLY);
	assert_true(closed >= 0);
	close(closed);

	/* misaligned file offset */
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 100, b, 0, BLK, NULL, 10), -EINVAL);
	/* misaligned length */
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, 0, 100, NULL, 11), -EINVAL);
	/* range outside the buffer */
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, BLK, 2 * BLK, NULL, 12), -EINVAL);
	/* offset above INT64_MAX */
	EXPECT_REFUSED(kaio_write(ctx, g_fd, (uint64_t)INT64_MAX + 1, b, 0, BLK, NULL, 13), -EINVAL);
	/* negative and closed fds */
	EXPECT_REFUSED(kaio_read(ctx, -1, 0, b, 0, BLK, NULL, 14), -EBADF);
	EXPECT_REFUSED(kaio_read(ctx, closed, 0, b, 0, BLK, NULL, 15), -EBADF);
	/* unknown sync level */
	EXPECT_REFUSED(kaio_sync(ctx, g_fd, 7, NULL, 16), -EINVAL);
	/* nvec 0 */
	struct kaio_vec vec = { b, 0, BLK };
	EXPECT_REFUSED(kaio_readv(ctx, g_fd, 0, &vec, 0, NULL, 17), -EINVAL);
	/* unknown rw_flags bit, reserved words not 0 */
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = g_fd, .len = BLK, .user_data = 18, .buf = b };
	op.rw_flags = 0x40000000u;
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EINVAL);
	op.rw_flags = 0;
	op.reserved32 = 1;
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EINVAL);
	op.reserved32 = 0;
	op.reserved[1] = 1;
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EINVAL);
	op.reserved[1] = 0;
	/* unknown op code */
	op.op = 99;
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EINVAL);
	op.op = KAIO_OP_READ;
	/* a well-formed request is the one that gets -EAGAIN */
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EAGAIN);
	assert_int_equal(kaio_ctx_inflight(ctx), CAP);

	struct kaio_event ev[CAP];
	kt_wait_n(ctx, ev, CAP);
	for (int i = 0; i < CAP; i++)
		assert_true(ev[i].user_data < CAP);
	drop_events(ev, CAP);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- the eventfd ----------------------------------------------------------- */

/* Contract: kaio_ctx_fd returns an eventfd created EFD_NONBLOCK|EFD_CLOEXEC,
 * valid (the same descriptor) until kaio_ctx_destroy. */
static void test_eventfd_flags(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kaio_ctx_fd(ctx);
	if (fd < 0)
		fail_msg("kaio_ctx_fd = %d (%s)", fd, kaio_last_error());
	int fl = fcntl(fd, F_GETFL);
	assert_true(fl >= 0);
	assert_true(fl & O_NONBLOCK);
	int fdfl = fcntl(fd, F_GETFD);
	assert_true(fdfl >= 0);
	assert_true(fdfl & FD_CLOEXEC);
	char link[64], target[256];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof target - 1);
	assert_true(n > 0);
	target[n] = '\0';
	if (!strstr(target, "eventfd"))
		fail_msg("kaio_ctx_fd is not an eventfd: %s", target);
	assert_int_equal(kaio_ctx_fd(ctx), fd);
	/* Each context has its own. */
	kaio_ctx *ctx2 = kt_ctx(4, 0);
	assert_true(kaio_ctx_fd(ctx2) >= 0);
	assert_int_not_equal(kaio_ctx_fd(ctx2), fd);
	EXPECT_RC(kaio_ctx_destroy(ctx2), 0);
	assert_int_equal(kaio_ctx_fd(ctx), fd);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static int fd_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc;
	do
		rc = poll(&p, 1, timeout_ms);
	while (rc < 0 && errno == EINTR);
	assert_true(rc >= 0);
	return rc == 1 && (p.revents & POLLIN);
}

/* Contract: the eventfd becomes readable when completions may be ready;
 * readiness is never persistent: kaio_poll drains it before it reaps. */
static void test_eventfd_readiness(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	kaio_buf *b = kt_buf(BLK);
	struct kaio_event ev[4];

	for (int round = 0; round < 3; round++) {
		EXPECT_RC(kaio_read(ctx, g_fd, (unsigned)round * BLK, b, 0, BLK, NULL, (uint64_t)round), 0);
		if (!fd_readable(efd, 5000))
			fail_msg("round %d: the eventfd did not become readable within 5 s of a read", round);
		/* Readable stays readable until someone reaps. */
		assert_true(fd_readable(efd, 0));
		int got = 0;
		int64_t deadline = kt_now_ms() + 5000;
		while (got < 1) {
			int rc = kaio_poll(ctx, ev, 4);
			if (rc < 0)
				fail_msg("kaio_poll = %d (%s)", rc, kaio_last_error());
			got += rc;
			if (kt_now_ms() > deadline)
				fail_msg("round %d: the eventfd was readable but kaio_poll found nothing in 5 s", round);
		}
		assert_int_equal(got, 1);
		assert_int_equal(ev[0].res, BLK);
		assert_int_equal(kt_check(kaio_buf_data(ev[0].buf), BLK, (unsigned)round * BLK), 0);
		kaio_buf_unref(ev[0].buf);
		/* One more poll drains any spurious readiness; after it, with
		 * nothing in flight, the fd must not be readable. */
		EXPECT_RC(kaio_poll(ctx, ev, 4), 0);
		for (int i = 0; i < 3; i++) {
			if (fd_readable(efd, 20))
				fail_msg("round %d: the eventfd stays readable after kaio_poll reaped everything", round);
		}
	}
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static atomic_int cb_count;
static void count_cb(const struct kaio_event *ev)
{
	atomic_fetch_add(&cb_count, 1);
}

/* Contract: kaio_wait also drains the eventfd (readiness never persistent),
 * including for completions delivered through callbacks. */
static void test_eventfd_drained_by_wait(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int efd = kaio_ctx_fd(ctx);
	kaio_buf *b = kt_buf(2 * BLK);
	atomic_store(&cb_count, 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, count_cb, 1), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, BLK, b, BLK, BLK, count_cb, 2), 0);
	if (!fd_readable(efd, 5000))
		fail_msg("the eventfd did not become readable within 5 s");
	int64_t deadline = kt_now_ms() + 5000;
	while (atomic_load(&cb_count) < 2) {
		int rc = kaio_wait(ctx, NULL, 2, 0, 1000);
		if (rc != 0)
			fail_msg("kaio_wait(events NULL, max 0) = %d (%s)", rc, kaio_last_error());
		if (kt_now_ms() > deadline)
			fail_msg("callbacks did not run within 5 s");
	}
	EXPECT_RC(kaio_wait(ctx, NULL, 0, 0, 0), 0);
	if (fd_readable(efd, 20))
		fail_msg("the eventfd stays readable after kaio_wait delivered everything");
	assert_int_equal(kt_check(kaio_buf_data(b), 2 * BLK, 0), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- kaio_ctx_wake ------------------------------------------------------------ */

struct waiter {
	kaio_ctx *ctx;
	atomic_int started;
	atomic_int done;
	int rc;
	struct kaio_event ev[4];
};

static void *waiter_main(void *p)
{
	struct waiter *w = p;
	atomic_store(&w->started, 1);
	w->rc = kaio_wait(w->ctx, w->ev, 1, 4, -1);
	atomic_store(&w->done, 1);
	return NULL;
}

/* Contract: kaio_ctx_wake makes every kaio_wait in progress (even timeout -1)
 * return with its count (0 here); it may be called from another thread. */
static void test_wake_blocked_waiters(void **state)
{
	enum { NW = 2 };
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(BLK);
	struct waiter w[NW];
	pthread_t th[NW];
	for (int i = 0; i < NW; i++) {
		memset(&w[i], 0, sizeof w[i]);
		w[i].ctx = ctx;
		assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &w[i]), 0);
	}
	int64_t deadline = kt_now_ms() + 5000;
	for (int i = 0; i < NW; i++)
		while (!atomic_load(&w[i].started) && kt_now_ms() < deadline)
			kt_sleep_ms(1);
	kt_sleep_ms(200); /* let both block inside kaio_wait */
	int blocked_ok = 1;
	for (int i = 0; i < NW; i++)
		if (atomic_load(&w[i].done))
			blocked_ok = 0;

	int wake_rc = kaio_ctx_wake(ctx);
	int64_t t0 = kt_now_ms();
	int all_done = 0;
	while (kt_now_ms() - t0 < 3000) {
		all_done = 1;
		for (int i = 0; i < NW; i++)
			if (!atomic_load(&w[i].done))
				all_done = 0;
		if (all_done)
			break;
		kt_sleep_ms(2);
	}
	/* Rescue so the test never hangs: wake again and feed completions. */
	int rescued = 0;
	for (uint64_t k = 0; !all_done && k < 50; k++) {
		rescued = 1;
		kaio_ctx_wake(ctx);
		if (kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 1000 + k) == 0) {
			/* a waiter takes it */
		}
		kt_sleep_ms(100);
		all_done = 1;
		for (int i = 0; i < NW; i++)
			if (!atomic_load(&w[i].done))
				all_done = 0;
	}
	for (int i = 0; i < NW; i++) {
		if (atomic_load(&w[i].done))
			pthread_join(th[i], NULL);
		else
			pthread_detach(th[i]); /* cannot happen unless wake and completions are both broken */
	}
	for (int i = 0; i < NW; i++)
		if (w[i].rc > 0)
			drop_events(w[i].ev, w[i].rc);
	kt_drain(ctx);
	kaio_buf_unref(b);
	if (!all_done)
		fail_msg("kaio_wait(timeout -1) never returned, even after completions");
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);

	if (!blocked_ok)
		fail_msg("kaio_wait(min 1, timeout -1) returned with nothing in flight before any wake");
	if (wake_rc != 0)
		fail_msg("kaio_ctx_wake = %d", wake_rc);
	if (rescued)
		fail_msg("kaio_ctx_wake did not make the blocked kaio_wait calls return within 3 s");
	for (int i = 0; i < NW; i++)
		if (w[i].rc != 0)
			fail_msg("waiter %d: kaio_wait returned %d after a wake, expected its count 0", i, w[i].rc);
}

/* Contract: kaio_ctx_wake is not remembered for waits that start later. */
static void test_wake_not_remembered(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	EXPECT_RC(kaio_ctx_wake(ctx), 0);
	EXPECT_RC(kaio_ctx_wake(ctx), 0);
	struct kaio_event ev[2];
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 1, 2, 200);
	int64_t took = kt_now_ms() - t0;
	if (rc != 0)
		fail_msg("kaio_wait after an earlier wake = %d (%s), expected 0", rc, kaio_last_error());
	if (took < 180)
		fail_msg("kaio_wait(timeout 200 ms) returned after %lld ms: an earlier kaio_ctx_wake was remembered",
			 (long long)took);
	if (took > 3000)
		fail_msg("kaio_wait(timeout 200 ms) took %lld ms", (long long)took);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static kaio_ctx *sig_ctx;
static volatile sig_atomic_t sig_wake_rc = 1;
static volatile sig_atomic_t sig_count;

static void on_alarm_wake(int sig)
{
	int saved = errno;
	sig_wake_rc = kaio_ctx_wake(sig_ctx);
	sig_count++;
	errno = saved;
}

static void on_alarm_plain(int sig)
{
	sig_count++;
}

static void arm_alarm(int ms)
{
	struct itimerval it;
	memset(&it, 0, sizeof it);
	it.it_value.tv_sec = ms / 1000;
	it.it_value.tv_usec = (ms % 1000) * 1000;
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void disarm_alarm(void)
{
	struct itimerval it;
	memset(&it, 0, sizeof it);
	setitimer(ITIMER_REAL, &it, NULL);
}

/* Contract: kaio_ctx_wake is async-signal-safe: called from a signal handler
 * it makes the wait return its count (0), even though a signal also
 * interrupted it (even with SA_RESTART). */
static void test_wake_from_signal_handler(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	sig_ctx = ctx;
	sig_wake_rc = 1;
	sig_count = 0;
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm_wake;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	struct kaio_event ev[2];
	arm_alarm(200);
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 1, 2, 5000);
	int64_t took = kt_now_ms() - t0;
	disarm_alarm();
	sigaction(SIGALRM, &old, NULL);
	sig_ctx = NULL;
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(sig_count, 1);
	if (sig_wake_rc != 0)
		fail_msg("kaio_ctx_wake from a signal handler = %d", (int)sig_wake_rc);
	if (took >= 4000)
		fail_msg("kaio_wait did not return after a wake from a signal handler (%lld ms)", (long long)took);
	if (rc != 0)
		fail_msg("kaio_wait woken from a signal handler = %d, expected its count 0 (wake wins over EINTR)", rc);
}

/* Contract: any handled signal makes kaio_wait return, whatever SA_RESTART
 * says: -EINTR when nothing had been delivered. */
static void test_signal_interrupts_wait(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	sig_count = 0;
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm_plain;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	struct kaio_event ev[2];
	arm_alarm(200);
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 1, 2, 5000);
	int64_t took = kt_now_ms() - t0;
	disarm_alarm();
	sigaction(SIGALRM, &old, NULL);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(sig_count, 1);
	if (took >= 4000)
		fail_msg("a handled SIGALRM (SA_RESTART) did not make kaio_wait return (%lld ms)", (long long)took);
	if (rc != -EINTR)
		fail_msg("kaio_wait interrupted by a signal with nothing delivered = %d, expected -EINTR", rc);
}

/* ---- wake and signals with a nonzero count ------------------------------------ */

struct count_waiter {
	kaio_ctx *ctx;
	atomic_int done;
	int rc;
	struct kaio_event ev[4];
};

static void *count_waiter_main(void *p)
{
	struct count_waiter *w = p;
	w->rc = kaio_wait(w->ctx, w->ev, 3, 4, -1);
	atomic_store(&w->done, 1);
	return NULL;
}

/* Contract: kaio_ctx_wake makes a kaio_wait in progress return with its
 * count: a wait (min 3, timeout -1) that already copied one event and is
 * blocked for more returns 1 when woken, and that event is in events[0]. */
static void test_wake_returns_count(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(4 * BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 9 * BLK, b, 0, BLK, NULL, 42), 0);
	struct count_waiter w;
	memset(&w, 0, sizeof w);
	w.ctx = ctx;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, count_waiter_main, &w), 0);
	/* Only the waiter reaps: once nothing is in flight, it has taken the
	 * event (delivery began) and, short of min 3, blocks for more. */
	int64_t deadline = kt_now_ms() + 5000;
	while (kaio_ctx_inflight(ctx) != 0 && kt_now_ms() < deadline)
		kt_sleep_ms(1);
	int reaped = kaio_ctx_inflight(ctx) == 0;
	kt_sleep_ms(150);
	int early = atomic_load(&w.done);
	int wake_rc = kaio_ctx_wake(ctx);
	deadline = kt_now_ms() + 3000;
	while (!atomic_load(&w.done) && kt_now_ms() < deadline)
		kt_sleep_ms(2);
	int woken = atomic_load(&w.done);
	/* Rescue so that the test never hangs: two more completions reach min. */
	for (unsigned i = 0; !atomic_load(&w.done) && i < 2; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, (10 + i) * BLK, b, (1 + i) * BLK, BLK, NULL, 50 + i), 0);
	pthread_join(th, NULL);
	if (w.rc > 0)
		drop_events(w.ev, w.rc);
	kt_drain(ctx);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);

	if (!reaped)
		fail_msg("the blocked kaio_wait did not take the finished read within 5 s");
	if (early)
		fail_msg("kaio_wait(min 3, timeout -1) returned (%d) after one completion, before any wake", w.rc);
	assert_int_equal(wake_rc, 0);
	if (!woken)
		fail_msg("kaio_ctx_wake did not make a kaio_wait that had copied one event return within 3 s");
	if (w.rc != 1)
		fail_msg("kaio_wait woken after copying one event = %d (%s), expected its count 1", w.rc,
			 kaio_last_error());
	assert_int_equal(w.ev[0].user_data, 42);
	assert_int_equal(w.ev[0].res, BLK);
}

/* Contract: a handled signal (even with SA_RESTART) makes kaio_wait return;
 * when something was already delivered it returns its count, not -EINTR:
 * min 2 with one finished event, SIGALRM at 300 ms -> 1. */
static void test_signal_after_event_returns_count(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 3 * BLK, b, 0, BLK, NULL, 7), 0);
	kt_sleep_ms(50); /* finished in the kernel */
	sig_count = 0;
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm_plain;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	struct kaio_event ev[4];
	memset(ev, 0, sizeof ev);
	arm_alarm(300);
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 2, 4, 5000);
	int64_t took = kt_now_ms() - t0;
	disarm_alarm();
	sigaction(SIGALRM, &old, NULL);
	if (rc > 0)
		drop_events(ev, rc);
	kt_drain(ctx);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(sig_count, 1);
	if (took >= 4000)
		fail_msg("a handled SIGALRM (SA_RESTART) did not make kaio_wait return (%lld ms)", (long long)took);
	if (rc != 1)
		fail_msg("kaio_wait(min 2) interrupted by a signal after copying one event = %d, expected its count 1 (not -EINTR)",
			 rc);
	assert_int_equal(ev[0].user_data, 7);
	assert_int_equal(ev[0].res, BLK);
}

/* Contract: callbacks run count as delivered: kaio_wait(events NULL, min 2,
 * max 0) that ran one callback and is then interrupted by a signal returns 0
 * (its count of events), not -EINTR; the callback ran exactly once. */
static void test_signal_after_callback_returns_zero(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);
	atomic_store(&cb_count, 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 4 * BLK, b, 0, BLK, count_cb, 8), 0);
	kt_sleep_ms(50);
	sig_count = 0;
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm_plain;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	arm_alarm(300);
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, NULL, 2, 0, 5000);
	int64_t took = kt_now_ms() - t0;
	disarm_alarm();
	sigaction(SIGALRM, &old, NULL);
	int runs = atomic_load(&cb_count);
	kt_drain(ctx);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(sig_count, 1);
	if (took >= 4000)
		fail_msg("a handled SIGALRM (SA_RESTART) did not make kaio_wait return (%lld ms)", (long long)took);
	if (rc != 0)
		fail_msg("kaio_wait(NULL, min 2, max 0) interrupted by a signal after running one callback = %d, expected 0 (not -EINTR)",
			 rc);
	if (runs != 1)
		fail_msg("%d callbacks ran, expected exactly 1", runs);
}

/* ---- the fd cache ---------------------------------------------------------- */

static void read_one(kaio_ctx *ctx, int fd, kaio_buf *b, uint64_t off)
{
	EXPECT_RC(kaio_read(ctx, fd, off, b, 0, BLK, NULL, off), 0);
	struct kaio_event ev;
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.res, BLK);
	assert_int_equal(ev.user_data, off);
	assert_int_equal(kt_check(kaio_buf_data(ev.buf), BLK, off), 0);
	kaio_buf_unref(ev.buf);
}

/* Contract: kaio_ctx_forget_fd drops what is cached for fd, so after F_SETFL
 * removes O_DIRECT the fd is re-learnt and refused (message names O_DIRECT). */
static void test_forget_fd_relearns_flags(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("forget.dat", 64 * 1024, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(BLK);
	read_one(ctx, fd, b, 0);

	int fl = fcntl(fd, F_GETFL);
	assert_true(fl >= 0);
	assert_int_equal(fcntl(fd, F_SETFL, fl & ~O_DIRECT), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	EXPECT_REFUSED(kaio_read(ctx, fd, 0, b, 0, BLK, NULL, 1), -EINVAL);
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("refusal of a non-O_DIRECT fd does not name O_DIRECT: \"%s\"", kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	/* And back: O_DIRECT again, forget, accepted. */
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_DIRECT), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	read_one(ctx, fd, b, BLK);

	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: call kaio_ctx_forget_fd before closing an fd whose number may
 * come back: the new file behind the same number is learnt afresh. */
static void test_forget_fd_number_reuse(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("reuse-direct.dat", 64 * 1024, O_RDWR | O_DIRECT);
	kaio_buf *b = kt_buf(BLK);
	read_one(ctx, fd, b, 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	int fd2 = kt_make_file("reuse-buffered.dat", 64 * 1024, O_RDWR);
	if (fd2 != fd) {
		close(fd2);
		kaio_buf_unref(b);
		kaio_ctx_destroy(ctx);
		skip();
	}
	EXPECT_REFUSED(kaio_read(ctx, fd2, 0, b, 0, BLK, NULL, 2), -EINVAL);
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("refusal of a non-O_DIRECT fd does not name O_DIRECT: \"%s\"", kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd2), 0);
	close(fd2);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: a cached answer is never trusted for a refusal: an fd refused for
 * lacking O_DIRECT is accepted once F_SETFL adds it, even without forget. */
static void test_refusal_relearns(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("relearn.dat", 64 * 1024, O_RDWR);
	kaio_buf *b = kt_buf(BLK);
	EXPECT_REFUSED(kaio_read(ctx, fd, 0, b, 0, BLK, NULL, 1), -EINVAL);
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("refusal of a non-O_DIRECT fd does not name O_DIRECT: \"%s\"", kaio_last_error());
	int fl = fcntl(fd, F_GETFL);
	assert_int_equal(fcntl(fd, F_SETFL, fl | O_DIRECT), 0);
	assert_true(fcntl(fd, F_GETFL) & O_DIRECT);
	read_one(ctx, fd, b, 2 * BLK);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_ctx_forget_fd on an fd the context never saw returns 0. */
static void test_forget_unknown_fd(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = open(kt_path("context.dat"), O_RDONLY);
	assert_true(fd >= 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);   /* closed, never seen */
	EXPECT_RC(kaio_ctx_forget_fd(ctx, 100000), 0); /* never open */
	EXPECT_RC(kaio_ctx_forget_fd(ctx, g_fd), 0);   /* open, never used here */
	EXPECT_RC(kaio_ctx_forget_fd(ctx, g_fd), 0);   /* twice */
	/* The context still works for it. */
	kaio_buf *b = kt_buf(BLK);
	read_one(ctx, g_fd, b, 3 * BLK);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- flags ------------------------------------------------------------------- */

/* Contract: without KAIO_CTX_ALLOW_BUFFERED an fd opened without O_DIRECT is
 * refused with -EINVAL naming O_DIRECT (reads and writes), but kaio_sync
 * never requires O_DIRECT. */
static void test_buffered_refused_by_default(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	int fd = kt_make_file("buffered-refused.dat", 64 * 1024, O_RDWR);
	kaio_buf *b = kt_buf(BLK);
	EXPECT_REFUSED(kaio_read(ctx, fd, 0, b, 0, BLK, NULL, 1), -EINVAL);
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("read refusal does not name O_DIRECT: \"%s\"", kaio_last_error());
	EXPECT_REFUSED(kaio_write(ctx, fd, 0, b, 0, BLK, NULL, 2), -EINVAL);
	if (!strstr(kaio_last_error(), "O_DIRECT"))
		fail_msg("write refusal does not name O_DIRECT: \"%s\"", kaio_last_error());
	assert_int_equal(kaio_ctx_inflight(ctx), 0);

	EXPECT_RC(kaio_sync(ctx, fd, KAIO_SYNC_FULL, NULL, 3), 0);
	struct kaio_event ev;
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.user_data, 3);
	assert_int_equal(ev.res, 0);
	assert_int_equal(ev.op, KAIO_OP_FSYNC);
	assert_null(ev.buf);
	/* The refused write did not touch the file. */
	char check[BLK];
	assert_int_equal(pread(fd, check, BLK, 0), (ssize_t)BLK);
	assert_int_equal(kt_check(check, BLK, 0), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: KAIO_CTX_ALLOW_BUFFERED accepts fds opened without O_DIRECT and
 * does real I/O; alignment is not enforced on them. */
static void test_allow_buffered(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, KAIO_CTX_ALLOW_BUFFERED);
	int fd = kt_make_file("buffered.dat", 64 * 1024, O_RDWR);
	kaio_buf *b = kt_buf(2 * BLK);
	struct kaio_event ev;

	/* aligned read */
	EXPECT_RC(kaio_read(ctx, fd, BLK, b, 0, BLK, NULL, 1), 0);
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.res, BLK);
	assert_int_equal(kt_check(kaio_buf_data(b), BLK, BLK), 0);
	kaio_buf_unref(ev.buf);

	/* unaligned everything */
	memset(kaio_buf_data(b), 0, 2 * BLK);
	EXPECT_RC(kaio_read(ctx, fd, 100, b, 3, 300, NULL, 2), 0);
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.user_data, 2);
	assert_int_equal(ev.res, 300);
	assert_int_equal(ev.offset, 100);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 3, 300, 100), 0);
	assert_int_equal(((unsigned char *)kaio_buf_data(b))[2], 0);
	assert_int_equal(((unsigned char *)kaio_buf_data(b))[303], 0);
	kaio_buf_unref(ev.buf);

	/* a write that lands in the file */
	memset(kaio_buf_data(b), 0x5a, 2 * BLK);
	EXPECT_RC(kaio_write(ctx, fd, 8192 + 7, b, 1, 1000, NULL, 3), 0);
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.res, 1000);
	kaio_buf_unref(ev.buf);
	unsigned char chk[1200];
	assert_int_equal(pread(fd, chk, sizeof chk, 8192 - 100), (ssize_t)sizeof chk);
	assert_int_equal(kt_check(chk, 107, 8192 - 100), 0);
	for (int i = 107; i < 1107; i++)
		if (chk[i] != 0x5a)
			fail_msg("byte %d of the buffered write is %#x", i - 107, chk[i]);
	assert_int_equal(kt_check(chk + 1107, 93, 8192 + 1007), 0);

	uint32_t ma = 99, oa = 99;
	EXPECT_RC(kaio_fd_alignment(fd, &ma, &oa), 0);
	assert_int_equal(ma, 0);
	assert_int_equal(oa, 0);

	/* O_DIRECT fds still work on such a context. */
	read_one(ctx, g_fd, b, 5 * BLK);

	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static atomic_int st_cb_ok;
static void single_thread_cb(const struct kaio_event *ev)
{
	if (ev->res == BLK && ev->user_data == 77 && ev->op == KAIO_OP_READ &&
	    kt_check(kaio_buf_data(ev->buf), BLK, 4 * BLK) == 0)
		atomic_fetch_add(&st_cb_ok, 1);
	else
		atomic_fetch_add(&st_cb_ok, 100);
}

/* Contract: KAIO_CTX_SINGLE_THREAD contexts work (one thread calling in). */
static void test_single_thread(void **state)
{
	kaio_ctx *ctx = kt_ctx(2, KAIO_CTX_SINGLE_THREAD);
	kaio_buf *b = kt_buf(BLK);
	atomic_store(&st_cb_ok, 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 4 * BLK, b, 0, BLK, single_thread_cb, 77), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), 1);
	int64_t deadline = kt_now_ms() + 5000;
	while (atomic_load(&st_cb_ok) == 0 && kt_now_ms() < deadline)
		EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 1000), 0);
	assert_int_equal(atomic_load(&st_cb_ok), 1);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	read_one(ctx, g_fd, b, 6 * BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 1), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 2), 0);
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 3), -EAGAIN);
	kt_drain(ctx);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- version, strerror, last_error ------------------------------------------ */

/* Contract: kaio_version is "MAJOR.MINOR.PATCH" matching the header macros. */
static void test_version(void **state)
{
	const char *v = kaio_version();
	assert_non_null(v);
	char want[64];
	snprintf(want, sizeof want, "%d.%d.%d", KAIO_VERSION_MAJOR, KAIO_VERSION_MINOR, KAIO_VERSION_PATCH);
	assert_string_equal(v, want);
}

/* Contract: kaio_strerror never returns NULL (negative or positive errno, 0,
 * or nonsense), and the sign of an errno does not change its text. */
static void test_strerror(void **state)
{
	const int errs[] = { 0, -EINVAL, EINVAL, -EAGAIN, EAGAIN, -ECHILD, -EBUSY, -ESHUTDOWN,
			     99999, -99999, INT_MIN, INT_MAX, -1, 1 };
	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
		const char *s = kaio_strerror(errs[i]);
		if (s == NULL)
			fail_msg("kaio_strerror(%d) is NULL", errs[i]);
		(void)strlen(s);
	}
	assert_true(kaio_strerror(-EINVAL)[0] != '\0');
	assert_string_equal(kaio_strerror(-EINVAL), kaio_strerror(EINVAL));
	assert_string_equal(kaio_strerror(-EAGAIN), kaio_strerror(EAGAIN));
	assert_string_not_equal(kaio_strerror(-EINVAL), kaio_strerror(-EAGAIN));
}

static void *fresh_thread_last_error(void *p)
{
	const char *le = kaio_last_error();
	*(int *)p = (le != NULL && le[0] == '\0');
	return NULL;
}

/* Contract: kaio_last_error is per thread, "" when there was no failure, and
 * only failures set it (success leaves it). */
static void test_last_error_per_thread(void **state)
{
	kaio_ctx *ctx = NULL;
	EXPECT_REFUSED(kaio_ctx_create(&ctx, 0, 0), -EINVAL);
	char saved[512];
	snprintf(saved, sizeof saved, "%s", kaio_last_error());
	int fresh_ok = 0;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fresh_thread_last_error, &fresh_ok), 0);
	pthread_join(th, NULL);
	if (!fresh_ok)
		fail_msg("a new thread's kaio_last_error() is not \"\" (another thread's failure leaked)");
	ctx = kt_ctx(2, 0);
	assert_int_equal(kaio_ctx_capacity(ctx), 2);
	assert_string_equal(kaio_last_error(), saved);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_string_equal(kaio_last_error(), saved);
}

/* ---- libkaio creates no threads ---------------------------------------------- */

/* The threads of this process. */
static int count_tasks(void)
{
	return kt_count_entries("/proc/self/task");
}

/* The thread count once it equals `want` (a joined thread may linger in
 * /proc for a moment), or whatever it is after a second. */
static int count_tasks_settled(int want)
{
	int n = count_tasks();
	for (int i = 0; i < 200 && n != want; i++) {
		kt_sleep_ms(5);
		n = count_tasks();
	}
	return n;
}

static int nt_base;
static atomic_int nt_cb_runs;
static atomic_int nt_cb_bad; /* a callback saw a thread the test did not create */

static void nt_cb(const struct kaio_event *ev)
{
	if (count_tasks() != nt_base)
		atomic_fetch_add(&nt_cb_bad, 1);
	atomic_fetch_add(&nt_cb_runs, 1);
}

struct nt_counter {
	kaio_ctx *ctx;
	int seen;
};

static void *nt_counter_main(void *p)
{
	struct nt_counter *c = p;
	kt_sleep_ms(200); /* the main thread is blocked in kaio_wait by now */
	c->seen = count_tasks();
	kaio_ctx_wake(c->ctx);
	return NULL;
}

static const char *const nt_checks[] = {
	"ok",
	"/proc/self/task cannot be read",
	"kaio_ctx_create failed in the child",
	"kaio_ctx_create added a thread",
	"a submission failed in the child",
	"submissions (with and without callbacks) added a thread",
	"kaio_wait failed or timed out in the child",
	"reaping with kaio_wait added a thread",
	"a callback saw a thread the test did not create",
	"while kaio_wait was blocked, the process had a thread the test did not create",
	"a thread remained after a blocked kaio_wait returned",
	"kaio_ctx_destroy with callbacks in flight failed or ran the wrong number of callbacks",
	"a thread remained after kaio_ctx_destroy",
	"pthread_create failed in the child",
	"the test process (the parent) has more threads than the test created: a thread left by earlier library use",
};

static int child_no_threads(void)
{
	nt_base = count_tasks();
	if (nt_base < 1)
		return 1;
	/* The child has only the thread that forked (plus whatever the
	 * runtime starts in a child, e.g. ThreadSanitizer's background
	 * thread); the parent, blocked in waitpid, must have no more: a thread
	 * the library started during earlier tests is not copied by fork(). */
	char parent_tasks[64];
	snprintf(parent_tasks, sizeof parent_tasks, "/proc/%d/task", (int)getppid());
	int parent = kt_count_entries(parent_tasks);
	for (int i = 0; i < 200 && parent > nt_base; i++) {
		kt_sleep_ms(5); /* a thread the test just joined may linger a moment */
		parent = kt_count_entries(parent_tasks);
	}
	if (parent > nt_base)
		return 14;
	kaio_ctx *ctx = NULL;
	if (kaio_ctx_create(&ctx, 16, 0) != 0)
		return 2;
	if (count_tasks() != nt_base)
		return 3;
	kaio_buf *b = NULL;
	if (kaio_buf_alloc(&b, 8 * BLK, 0) != 0)
		return 4;
	for (unsigned i = 0; i < 8; i++)
		if (kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, i % 2 ? nt_cb : NULL, i) != 0)
			return 4;
	if (count_tasks() != nt_base)
		return 5;
	struct kaio_event ev[8];
	int events = 0;
	int64_t deadline = kt_now_ms() + 10000;
	while (events < 4 || atomic_load(&nt_cb_runs) < 4) {
		int rc = kaio_wait(ctx, ev + events, 1, 8 - (unsigned)events, 1000);
		if (rc < 0 || kt_now_ms() > deadline)
			return 6;
		events += rc;
	}
	for (int i = 0; i < events; i++)
		kaio_buf_unref(ev[i].buf);
	if (count_tasks() != nt_base)
		return 7;
	if (atomic_load(&nt_cb_bad))
		return 8;

	/* A kaio_wait that reaps one event, then blocks for a second until the
	 * test's own counting thread wakes it. */
	if (kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 100) != 0)
		return 4;
	struct nt_counter c = { ctx, -1 };
	pthread_t th;
	if (pthread_create(&th, NULL, nt_counter_main, &c) != 0)
		return 13;
	int rc = kaio_wait(ctx, ev, 2, 4, 5000);
	pthread_join(th, NULL);
	if (rc < 0)
		return 6;
	for (int i = 0; i < rc; i++)
		kaio_buf_unref(ev[i].buf);
	if (c.seen != nt_base + 1)
		return 9;
	if (count_tasks_settled(nt_base) != nt_base)
		return 10;

	/* Destroy with callbacks in flight: they run inside destroy. */
	for (unsigned i = 0; i < 4; i++)
		if (kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, nt_cb, 200 + i) != 0)
			return 4;
	if (kaio_ctx_destroy(ctx) != 0 || atomic_load(&nt_cb_runs) != 8)
		return 11;
	if (atomic_load(&nt_cb_bad))
		return 8;
	kaio_buf_unref(b);
	if (count_tasks() != nt_base)
		return 12;
	return 0;
}

/* Contract ("Conventions"): libkaio creates no threads.  In a forked child
 * (no cmocka around it), /proc/self/task keeps the same number of entries
 * across a whole workload: create, reads with and without callbacks,
 * kaio_wait, destroy with callbacks in flight; also as seen from inside a
 * callback, and from a second (the test's own) thread while kaio_wait
 * blocks.  And the parent, after all the earlier tests' library use, has
 * no more threads than the freshly forked child. */
static void test_no_threads_created(void **state)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGALRM };
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
			signal(sigs[i], SIG_DFL);
		alarm(20);
		_exit(child_no_threads());
	}
	int st = 0;
	int64_t deadline = kt_now_ms() + 30000;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (r < 0 && errno != EINTR)
			fail_msg("waitpid: %s", strerror(errno));
		if (kt_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("the child did not finish within 30 s");
		}
		kt_sleep_ms(5);
	}
	if (WIFSIGNALED(st))
		fail_msg("the child died of signal %d", WTERMSIG(st));
	int code = WEXITSTATUS(st);
	if (code != 0) {
		if ((size_t)code < sizeof nt_checks / sizeof nt_checks[0])
			fail_msg("in the child: %s", nt_checks[code]);
		fail_msg("the child exited with %d", code);
	}
}

/* ---- the capacity -EAGAIN message ---------------------------------------------- */

/* Whether the decimal number n appears in s as a whole number. */
static int has_number(const char *s, long long n)
{
	char pat[32];
	snprintf(pat, sizeof pat, "%lld", n);
	size_t l = strlen(pat);
	for (const char *p = strstr(s, pat); p; p = strstr(p + 1, pat)) {
		int digit_before = p > s && isdigit((unsigned char)p[-1]);
		int digit_after = isdigit((unsigned char)p[l]);
		if (!digit_before && !digit_after)
			return 1;
	}
	return 0;
}

/* Contract: the routine capacity -EAGAIN sets a fixed string (no formatting
 * on that path): from two contexts (capacity 1 and 3), two fds, through
 * kaio_read, kaio_submit and kaio_sync, every message is the same text, and
 * it names neither fd nor either capacity. */
static void test_capacity_message_fixed(void **state)
{
	/* Distinctive fd numbers, so that a formatted message would show. */
	int fds[2];
	fds[0] = fcntl(g_fd, F_DUPFD_CLOEXEC, 517);
	if (fds[0] < 0) /* a low RLIMIT_NOFILE */
		fds[0] = fcntl(g_fd, F_DUPFD_CLOEXEC, 10);
	int other = kt_make_file("capmsg.dat", 64 * 1024, O_RDWR | O_DIRECT);
	fds[1] = fcntl(other, F_DUPFD_CLOEXEC, 733);
	if (fds[1] < 0)
		fds[1] = fcntl(other, F_DUPFD_CLOEXEC, 10);
	close(other);
	assert_true(fds[0] >= 10 && fds[1] >= 10);
	const unsigned caps[2] = { 1, 3 };
	char msgs[6][512];
	const char *how[6];
	int n = 0;
	for (int k = 0; k < 2; k++) {
		kaio_ctx *ctx = kt_ctx(caps[k], 0);
		kaio_buf *b = kt_buf(caps[k] * BLK);
		for (unsigned i = 0; i < caps[k]; i++)
			EXPECT_RC(kaio_read(ctx, fds[k], i * BLK, b, i * BLK, BLK, NULL, i), 0);
		assert_int_equal(kaio_ctx_inflight(ctx), caps[k]);

		EXPECT_REFUSED(kaio_read(ctx, fds[k], 0, b, 0, BLK, NULL, 90), -EAGAIN);
		how[n] = "kaio_read";
		snprintf(msgs[n++], sizeof msgs[0], "%s", kaio_last_error());
		struct kaio_op op = { .op = KAIO_OP_READ, .fd = fds[k], .len = BLK, .user_data = 91, .buf = b };
		EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EAGAIN);
		how[n] = "kaio_submit";
		snprintf(msgs[n++], sizeof msgs[0], "%s", kaio_last_error());
		EXPECT_REFUSED(kaio_sync(ctx, fds[k], KAIO_SYNC_FULL, NULL, 92), -EAGAIN);
		how[n] = "kaio_sync";
		snprintf(msgs[n++], sizeof msgs[0], "%s", kaio_last_error());

		assert_int_equal(kaio_ctx_inflight(ctx), caps[k]);
		kt_drain(ctx);
		kaio_buf_unref(b);
		EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	}
	close(fds[0]);
	close(fds[1]);
	for (int i = 0; i < n; i++) {
		int k = i / 3;
		if (strcmp(msgs[i], msgs[0]) != 0)
			fail_msg("capacity -EAGAIN messages differ: %s at capacity %u says \"%s\", kaio_read at capacity 1 said \"%s\"",
				 how[i], caps[k], msgs[i], msgs[0]);
		for (int j = 0; j < 2; j++) {
			if (has_number(msgs[i], fds[j]))
				fail_msg("the capacity -EAGAIN message names fd %d (formatted): \"%s\"", fds[j], msgs[i]);
			if (has_number(msgs[i], caps[j]))
				fail_msg("the capacity -EAGAIN message names the capacity %u (formatted): \"%s\"", caps[j],
					 msgs[i]);
		}
	}
}

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_capacity_bounds),
		cmocka_unit_test(test_create_capacity_max),
		cmocka_unit_test(test_create_unknown_flags),
		cmocka_unit_test(test_capacity_and_inflight_values),
		cmocka_unit_test(test_capacity_enforced),
		cmocka_unit_test(test_capacity_batch_submit),
		cmocka_unit_test(test_capacity_counts_queued_events),
		cmocka_unit_test(test_validation_before_capacity),
		cmocka_unit_test(test_eventfd_flags),
		cmocka_unit_test(test_eventfd_readiness),
		cmocka_unit_test(test_eventfd_drained_by_wait),
		cmocka_unit_test(test_wake_blocked_waiters),
		cmocka_unit_test(test_wake_not_remembered),
		cmocka_unit_test(test_wake_from_signal_handler),
		cmocka_unit_test(test_signal_interrupts_wait),
		cmocka_unit_test(test_wake_returns_count),
		cmocka_unit_test(test_signal_after_event_returns_count),
		cmocka_unit_test(test_signal_after_callback_returns_zero),
		cmocka_unit_test(test_forget_fd_relearns_flags),
		cmocka_unit_test(test_forget_fd_number_reuse),
		cmocka_unit_test(test_refusal_relearns),
		cmocka_unit_test(test_forget_unknown_fd),
		cmocka_unit_test(test_buffered_refused_by_default),
		cmocka_unit_test(test_allow_buffered),
		cmocka_unit_test(test_single_thread),
		cmocka_unit_test(test_version),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_last_error_per_thread),
		cmocka_unit_test(test_no_threads_created),
		cmocka_unit_test(test_capacity_message_fixed),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
