/* Integration tests for completion delivery: callbacks and events, what
 * kaio_poll/kaio_wait count and copy, min/max/timeout semantics, pipelines
 * from callbacks, -EBUSY re-entry, the eventfd in an event loop (also full,
 * or signalled for nothing), and RWF_NOWAIT.  Real files with O_DIRECT, the
 * public API only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define FILE_SIZE (4u << 20)

/* ---- helpers ------------------------------------------------------------- */

static void drop_events(struct kaio_event *ev, int n)
{
	for (int i = 0; i < n; i++)
		kaio_buf_unref(ev[i].buf);
}

/* Callbacks record a copy of their event and the thread they ran on. */
#define MAXREC 512
static struct kaio_event rec[MAXREC];
static pthread_t rec_thread[MAXREC];
static atomic_int nrec;

static void record_reset(void)
{
	atomic_store(&nrec, 0);
	memset(rec, 0, sizeof rec);
}

static void record_cb(const struct kaio_event *ev)
{
	int i = atomic_fetch_add(&nrec, 1);
	if (i < MAXREC) {
		rec[i] = *ev;
		rec_thread[i] = pthread_self();
	}
}

static const struct kaio_event *rec_find(uint64_t user_data)
{
	const struct kaio_event *found = NULL;
	int n = atomic_load(&nrec);
	for (int i = 0; i < n && i < MAXREC; i++) {
		if (rec[i].user_data == user_data) {
			if (found)
				fail_msg("callback for user_data %llu ran twice", (unsigned long long)user_data);
			found = &rec[i];
		}
	}
	if (!found)
		fail_msg("callback for user_data %llu never ran", (unsigned long long)user_data);
	return found;
}

/* Poll with max 0 (events NULL) until `n` callbacks have run. */
static void run_callbacks_until(kaio_ctx *ctx, int n)
{
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&nrec) < n) {
		int rc = kaio_wait(ctx, NULL, 1, 0, 200);
		if (rc != 0)
			fail_msg("kaio_wait(events NULL, max 0) = %d (%s)", rc, kaio_last_error());
		if (kt_now_ms() > deadline)
			fail_msg("only %d of %d callbacks ran within 10 s", atomic_load(&nrec), n);
	}
}

static int g_fd = -1; /* FILE_SIZE bytes of pattern, O_RDWR|O_DIRECT */

static int group_setup(void **state)
{
	g_fd = kt_make_file("completion.dat", FILE_SIZE, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	if (g_fd >= 0)
		close(g_fd);
	g_fd = -1;
	return 0;
}

/* ---- event contents ---------------------------------------------------------- */

struct six_ops {
	kaio_buf *rb, *wb, *v1, *v2, *v3, *v4;
};

/* Submit READ, WRITE, READV, WRITEV, FSYNC, FDATASYNC with user_data
 * 101..106.  Writes write the file's own pattern back. */
static void submit_six(kaio_ctx *ctx, struct six_ops *s, kaio_cb cb)
{
	s->rb = kt_buf(BLK);
	s->wb = kt_buf(BLK);
	s->v1 = kt_buf(BLK);
	s->v2 = kt_buf(2 * BLK);
	s->v3 = kt_buf(BLK);
	s->v4 = kt_buf(BLK);
	kt_fill(kaio_buf_data(s->wb), BLK, 64 * BLK);
	kt_fill(kaio_buf_data(s->v3), BLK, 128 * BLK);
	kt_fill(kaio_buf_data(s->v4), BLK, 129 * BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 2 * BLK, s->rb, 0, BLK, cb, 101), 0);
	EXPECT_RC(kaio_write(ctx, g_fd, 64 * BLK, s->wb, 0, BLK, cb, 102), 0);
	struct kaio_vec rv[2] = { { s->v1, 0, BLK }, { s->v2, BLK, BLK } };
	EXPECT_RC(kaio_readv(ctx, g_fd, 16 * BLK, rv, 2, cb, 103), 0);
	struct kaio_vec wv[2] = { { s->v3, 0, BLK }, { s->v4, 0, BLK } };
	EXPECT_RC(kaio_writev(ctx, g_fd, 128 * BLK, wv, 2, cb, 104), 0);
	EXPECT_RC(kaio_sync(ctx, g_fd, KAIO_SYNC_FULL, cb, 105), 0);
	EXPECT_RC(kaio_sync(ctx, g_fd, KAIO_SYNC_DATA, cb, 106), 0);
}

static void check_six(const struct kaio_event *ev, kaio_ctx *ctx, struct six_ops *s)
{
	assert_ptr_equal(ev->ctx, ctx);
	assert_int_equal(ev->fd, g_fd);
	switch (ev->user_data) {
	case 101:
		assert_int_equal(ev->op, KAIO_OP_READ);
		assert_int_equal(ev->res, BLK);
		assert_int_equal(ev->offset, 2 * BLK);
		assert_ptr_equal(ev->buf, s->rb);
		break;
	case 102:
		assert_int_equal(ev->op, KAIO_OP_WRITE);
		assert_int_equal(ev->res, BLK);
		assert_int_equal(ev->offset, 64 * BLK);
		assert_ptr_equal(ev->buf, s->wb);
		break;
	case 103:
		assert_int_equal(ev->op, KAIO_OP_READV);
		assert_int_equal(ev->res, 2 * BLK);
		assert_int_equal(ev->offset, 16 * BLK);
		assert_null(ev->buf);
		break;
	case 104:
		assert_int_equal(ev->op, KAIO_OP_WRITEV);
		assert_int_equal(ev->res, 2 * BLK);
		assert_int_equal(ev->offset, 128 * BLK);
		assert_null(ev->buf);
		break;
	case 105:
		assert_int_equal(ev->op, KAIO_OP_FSYNC);
		assert_int_equal(ev->res, 0);
		assert_int_equal(ev->offset, 0);
		assert_null(ev->buf);
		break;
	case 106:
		assert_int_equal(ev->op, KAIO_OP_FDATASYNC);
		assert_int_equal(ev->res, 0);
		assert_int_equal(ev->offset, 0);
		assert_null(ev->buf);
		break;
	default:
		fail_msg("unexpected user_data %llu", (unsigned long long)ev->user_data);
	}
}

static void finish_six(struct six_ops *s)
{
	assert_int_equal(kt_check(kaio_buf_data(s->rb), BLK, 2 * BLK), 0);
	assert_int_equal(kt_check(kaio_buf_data(s->v1), BLK, 16 * BLK), 0);
	assert_int_equal(kt_check((char *)kaio_buf_data(s->v2) + BLK, BLK, 17 * BLK), 0);
	kaio_buf_unref(s->rb);
	kaio_buf_unref(s->wb);
	kaio_buf_unref(s->v1);
	kaio_buf_unref(s->v2);
	kaio_buf_unref(s->v3);
	kaio_buf_unref(s->v4);
}

/* Contract: a callback runs on the reaping thread with a valid kaio_event
 * (user_data, res, offset, ctx, buf, fd, op) for READ, WRITE, READV, WRITEV,
 * FSYNC and FDATASYNC; callbacks are not counted in the return value. */
static void test_callback_event_fields(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	struct six_ops s;
	record_reset();
	submit_six(ctx, &s, record_cb);
	assert_int_equal(kaio_ctx_inflight(ctx), 6);
	struct kaio_event ev[8];
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&nrec) < 6) {
		int rc = kaio_wait(ctx, ev, 6, 8, 1000);
		if (rc != 0)
			fail_msg("kaio_wait with only callbacks pending = %d (%s), expected 0", rc, kaio_last_error());
		if (kt_now_ms() > deadline)
			fail_msg("only %d of 6 callbacks ran", atomic_load(&nrec));
	}
	assert_int_equal(atomic_load(&nrec), 6);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	for (uint64_t u = 101; u <= 106; u++) {
		const struct kaio_event *e = rec_find(u);
		check_six(e, ctx, &s);
		assert_true(pthread_equal(rec_thread[e - rec], pthread_self()));
	}
	finish_six(&s);
	/* The writes wrote the pattern back. */
	char *chk = NULL;
	assert_int_equal(posix_memalign((void **)&chk, 4096, 2 * BLK), 0);
	assert_int_equal(pread(g_fd, chk, BLK, 64 * BLK), (ssize_t)BLK);
	assert_int_equal(kt_check(chk, BLK, 64 * BLK), 0);
	assert_int_equal(pread(g_fd, chk, 2 * BLK, 128 * BLK), (ssize_t)(2 * BLK));
	assert_int_equal(kt_check(chk, 2 * BLK, 128 * BLK), 0);
	free(chk);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: an operation without a callback is copied into events with the
 * same fields; for READ/WRITE the event carries the reference to ev.buf. */
static void test_event_fields_without_callback(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	struct six_ops s;
	submit_six(ctx, &s, NULL);
	struct kaio_event ev[6];
	kt_wait_n(ctx, ev, 6);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	int seen[6] = { 0 };
	for (int i = 0; i < 6; i++) {
		check_six(&ev[i], ctx, &s);
		seen[ev[i].user_data - 101]++;
	}
	for (int i = 0; i < 6; i++)
		assert_int_equal(seen[i], 1);
	drop_events(ev, 6);
	finish_six(&s);

	/* The event's reference is the one that keeps a buffer alive. */
	struct kt_wrapped w;
	kaio_buf *wb = kt_wrapped_new(&w, BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 3 * BLK, wb, 0, BLK, NULL, 7), 0);
	kaio_buf_unref(wb);
	kt_wait_n(ctx, ev, 1);
	assert_ptr_equal(ev[0].buf, wb);
	assert_int_equal(atomic_load(&w.released), 0);
	assert_int_equal(kt_check(kaio_buf_data(ev[0].buf), BLK, 3 * BLK), 0);
	kaio_buf_unref(ev[0].buf);
	kt_wrapped_free(&w);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

struct reaper_arg {
	kaio_ctx *ctx;
	pthread_t self;
	int rc;
};

static void *reaper_main(void *p)
{
	struct reaper_arg *a = p;
	a->self = pthread_self();
	a->rc = kaio_wait(a->ctx, NULL, 1, 0, 10000);
	return NULL;
}

static void *submitter_main(void *p)
{
	struct reaper_arg *a = p;
	kaio_buf *b = NULL;
	a->rc = kaio_buf_alloc(&b, BLK, 0);
	if (a->rc == 0) {
		a->rc = kaio_read(a->ctx, g_fd, 5 * BLK, b, 0, BLK, record_cb, 55);
		kaio_buf_unref(b);
	}
	return NULL;
}

/* Contract: a callback runs on the reaping thread (not the submitting one). */
static void test_callback_on_reaping_thread(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);

	/* submitted here, reaped by another thread */
	record_reset();
	EXPECT_RC(kaio_read(ctx, g_fd, 4 * BLK, b, 0, BLK, record_cb, 44), 0);
	struct reaper_arg a = { .ctx = ctx };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, reaper_main, &a), 0);
	pthread_join(th, NULL);
	assert_int_equal(a.rc, 0);
	assert_int_equal(atomic_load(&nrec), 1);
	assert_int_equal(rec[0].user_data, 44);
	assert_true(pthread_equal(rec_thread[0], a.self));

	/* submitted by another thread, reaped here */
	record_reset();
	struct reaper_arg s = { .ctx = ctx };
	assert_int_equal(pthread_create(&th, NULL, submitter_main, &s), 0);
	pthread_join(th, NULL);
	assert_int_equal(s.rc, 0);
	run_callbacks_until(ctx, 1);
	assert_int_equal(rec[0].user_data, 55);
	assert_true(pthread_equal(rec_thread[0], pthread_self()));
	assert_int_equal(rec[0].res, BLK);

	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- counting ------------------------------------------------------------- */

/* Contract: kaio_poll/kaio_wait return the number of events copied only
 * (callbacks not counted); min counts both, so min may exceed max. */
static void test_return_counts_events_only(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(5 * BLK);
	record_reset();
	for (unsigned i = 0; i < 5; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, i < 3 ? record_cb : NULL, i), 0);
	struct kaio_event ev[8];
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 5, 2, 5000);
	if (kt_now_ms() - t0 > 4500)
		fail_msg("kaio_wait(min 5, max 2) timed out although 5 operations were in flight");
	if (rc != 2)
		fail_msg("kaio_wait(min 5, max 2) with 3 callbacks and 2 events = %d (%s), expected 2", rc,
			 kaio_last_error());
	assert_int_equal(atomic_load(&nrec), 3);
	for (int i = 0; i < 2; i++) {
		assert_true(ev[i].user_data >= 3 && ev[i].user_data < 5);
		assert_int_equal(ev[i].res, BLK);
	}
	assert_int_not_equal(ev[0].user_data, ev[1].user_data);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	drop_events(ev, 2);

	/* The same through kaio_poll. */
	record_reset();
	for (unsigned i = 0; i < 4; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, i % 2 ? record_cb : NULL, 10 + i), 0);
	int events = 0;
	int64_t deadline = kt_now_ms() + 10000;
	while (events < 2 || atomic_load(&nrec) < 2) {
		rc = kaio_poll(ctx, ev + events, 8 - (unsigned)events);
		if (rc < 0 || rc > 2 - events)
			fail_msg("kaio_poll = %d with %d events already copied and 2 expected in all", rc, events);
		events += rc;
		if (kt_now_ms() > deadline)
			fail_msg("kaio_poll: %d events, %d callbacks after 10 s", events, atomic_load(&nrec));
		if (rc == 0)
			kt_sleep_ms(1);
	}
	assert_int_equal(atomic_load(&nrec), 2);
	drop_events(ev, events);
	assert_int_equal(kt_check(kaio_buf_data(b), 5 * BLK, 0), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: max limits only the events copied, never the callbacks run; events
 * may be NULL when max is 0. */
static void test_max_limits_only_events(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	kaio_buf *b = kt_buf(10 * BLK);
	record_reset();
	EXPECT_RC(kaio_poll(ctx, NULL, 0), 0);
	EXPECT_RC(kaio_wait(ctx, NULL, 0, 0, 0), 0);
	for (unsigned i = 0; i < 10; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, i % 2 ? record_cb : NULL, i), 0);
	/* Everything has finished in the kernel by now. */
	kt_sleep_ms(300);
	struct kaio_event ev[10];
	int rc = kaio_poll(ctx, ev, 1);
	if (rc != 1)
		fail_msg("kaio_poll(max 1) with 5 finished events = %d (%s)", rc, kaio_last_error());
	if (atomic_load(&nrec) != 5)
		fail_msg("kaio_poll(max 1) ran %d of 5 finished callbacks: max limited the callbacks",
			 atomic_load(&nrec));
	int got = 1;
	int64_t deadline = kt_now_ms() + 5000;
	while (got < 5) {
		rc = kaio_poll(ctx, NULL, 0);
		if (rc != 0)
			fail_msg("kaio_poll(NULL, 0) = %d (%s)", rc, kaio_last_error());
		rc = kaio_poll(ctx, ev + got, 1);
		if (rc < 0 || rc > 1)
			fail_msg("kaio_poll(max 1) = %d", rc);
		got += rc;
		if (kt_now_ms() > deadline)
			fail_msg("only %d of 5 events came back", got);
	}
	int seen[10] = { 0 };
	for (int i = 0; i < 5; i++) {
		assert_true(ev[i].user_data < 10);
		assert_int_equal(ev[i].user_data % 2, 0);
		seen[ev[i].user_data]++;
	}
	for (int i = 0; i < 10; i += 2)
		assert_int_equal(seen[i], 1);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	drop_events(ev, 5);

	/* Callbacks only, events NULL, max 0, through kaio_wait. */
	record_reset();
	for (unsigned i = 0; i < 3; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, record_cb, 20 + i), 0);
	int64_t t0 = kt_now_ms();
	EXPECT_RC(kaio_wait(ctx, NULL, 3, 0, 5000), 0);
	if (kt_now_ms() - t0 > 4500)
		fail_msg("kaio_wait(min 3, max 0) did not return after 3 callbacks");
	assert_int_equal(atomic_load(&nrec), 3);
	assert_int_equal(kt_check(kaio_buf_data(b), 10 * BLK, 0), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: events beyond max stay queued for the next call, never lost:
 * 10 events polled 3 at a time come back exactly once each. */
static void test_events_kept_beyond_max(void **state)
{
	kaio_ctx *ctx = kt_ctx(16, 0);
	kaio_buf *b = kt_buf(10 * BLK);
	for (int round = 0; round < 2; round++) {
		for (unsigned i = 0; i < 10; i++)
			EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
		kt_sleep_ms(200);
		int seen[10] = { 0 };
		int got = 0, calls = 0;
		int64_t deadline = kt_now_ms() + 10000;
		while (got < 10) {
			struct kaio_event ev[3];
			int rc = round == 0 ? kaio_poll(ctx, ev, 3) : kaio_wait(ctx, ev, 1, 3, 1000);
			if (rc < 0 || rc > 3)
				fail_msg("round %d: reaping with max 3 = %d (%s)", round, rc, kaio_last_error());
			if (calls++ == 0 && rc != 3)
				fail_msg("round %d: the first call with max 3 and 10 finished events copied %d", round,
					 rc);
			for (int i = 0; i < rc; i++) {
				if (ev[i].user_data >= 10)
					fail_msg("bad user_data %llu", (unsigned long long)ev[i].user_data);
				seen[ev[i].user_data]++;
				assert_int_equal(ev[i].res, BLK);
				assert_ptr_equal(ev[i].buf, b);
				kaio_buf_unref(ev[i].buf);
			}
			got += rc;
			if (kt_now_ms() > deadline)
				fail_msg("round %d: only %d of 10 events came back (lost beyond max?)", round, got);
			if (rc == 0)
				kt_sleep_ms(1);
		}
		for (int i = 0; i < 10; i++)
			if (seen[i] != 1)
				fail_msg("round %d: user_data %d delivered %d times", round, i, seen[i]);
		assert_int_equal(kaio_ctx_inflight(ctx), 0);
		struct kaio_event extra[4];
		EXPECT_RC(kaio_poll(ctx, extra, 4), 0);
	}
	assert_int_equal(kt_check(kaio_buf_data(b), 10 * BLK, 0), 0);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_wait returns when max (not 0) events were copied, even if
 * min is not reached. */
static void test_wait_returns_at_max(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(4 * BLK);
	for (unsigned i = 0; i < 4; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
	struct kaio_event ev[4];
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 100, 2, 5000);
	int64_t took = kt_now_ms() - t0;
	if (rc != 2)
		fail_msg("kaio_wait(min 100, max 2) with 4 reads = %d (%s), expected 2", rc, kaio_last_error());
	if (took > 4000)
		fail_msg("kaio_wait(min 100, max 2) waited for its timeout (%lld ms) instead of returning at max",
			 (long long)took);
	kt_wait_n(ctx, ev + 2, 2);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	drop_events(ev, 4);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_wait returns its count, possibly 0, when timeout_ms passes
 * (callbacks run meanwhile count toward min but not in the return). */
static void test_wait_timeout(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	struct kaio_event ev[4];
	int64_t t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev, 1, 4, 200);
	int64_t took = kt_now_ms() - t0;
	EXPECT_RC(rc, 0);
	if (took < 180 || took > 3000)
		fail_msg("kaio_wait(timeout 200 ms) on an idle context took %lld ms", (long long)took);

	/* timeout 0: never blocks */
	t0 = kt_now_ms();
	EXPECT_RC(kaio_wait(ctx, ev, 1, 4, 0), 0);
	if (kt_now_ms() - t0 > 1000)
		fail_msg("kaio_wait(timeout 0) blocked");

	/* One callback runs, min 5 is never reached: the timeout returns 0. */
	kaio_buf *b = kt_buf(BLK);
	record_reset();
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, record_cb, 9), 0);
	t0 = kt_now_ms();
	rc = kaio_wait(ctx, ev, 5, 4, 300);
	took = kt_now_ms() - t0;
	EXPECT_RC(rc, 0);
	if (took < 280 || took > 3000)
		fail_msg("kaio_wait(min 5, timeout 300 ms) took %lld ms", (long long)took);
	assert_int_equal(atomic_load(&nrec), 1);
	assert_int_equal(rec[0].user_data, 9);

	/* An event copied before the timeout is returned. */
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 10), 0);
	rc = kaio_wait(ctx, ev, 5, 4, 300);
	if (rc != 1)
		fail_msg("kaio_wait(min 5, timeout 300 ms) with one event = %d (%s)", rc, kaio_last_error());
	assert_int_equal(ev[0].user_data, 10);
	kaio_buf_unref(ev[0].buf);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: timeout_ms below -1 is refused with -EINVAL, delivering nothing. */
static void test_wait_bad_timeout(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);
	record_reset();
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, record_cb, 1), 0);
	kt_sleep_ms(50);
	struct kaio_event ev[2];
	EXPECT_REFUSED(kaio_wait(ctx, ev, 1, 2, -2), -EINVAL);
	EXPECT_REFUSED(kaio_wait(ctx, ev, 0, 2, INT_MIN), -EINVAL);
	EXPECT_REFUSED(kaio_wait(ctx, NULL, 1, 0, -1000), -EINVAL);
	assert_int_equal(atomic_load(&nrec), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), 1);
	run_callbacks_until(ctx, 1);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: kaio_poll on an idle context returns 0 at once (never blocks). */
static void test_poll_idle(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	struct kaio_event ev[4];
	int64_t t0 = kt_now_ms();
	for (int i = 0; i < 100; i++)
		EXPECT_RC(kaio_poll(ctx, ev, 4), 0);
	EXPECT_RC(kaio_poll(ctx, NULL, 0), 0);
	if (kt_now_ms() - t0 > 2000)
		fail_msg("100 kaio_poll calls on an idle context took %lld ms", (long long)(kt_now_ms() - t0));
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- callbacks that act --------------------------------------------------------- */

enum { CHAIN_N = 64 };
static atomic_int chain_done;
static atomic_int chain_errors;
static int chain_fd;

static void chain_cb(const struct kaio_event *ev)
{
	uint64_t i = ev->user_data;
	if (ev->res != BLK || ev->offset != i * BLK ||
	    kt_check(kaio_buf_data(ev->buf), BLK, i * BLK) != 0)
		atomic_fetch_add(&chain_errors, 1);
	/* Delivery has begun: the slot is free again. */
	if (kaio_ctx_inflight(ev->ctx) != 0)
		atomic_fetch_add(&chain_errors, 1);
	atomic_fetch_add(&chain_done, 1);
	if (i + 1 < CHAIN_N) {
		memset(kaio_buf_data(ev->buf), 0, BLK);
		int rc = kaio_read(ev->ctx, chain_fd, (i + 1) * BLK, ev->buf, 0, BLK, chain_cb, i + 1);
		if (rc != 0)
			atomic_fetch_add(&chain_errors, 1000);
		else if (kaio_ctx_inflight(ev->ctx) != 1)
			atomic_fetch_add(&chain_errors, 1);
	}
}

/* Contract: an operation counts against capacity only until its delivery
 * begins, so a callback may submit a follow-up even at capacity 1
 * (a pipeline of chained reads through one slot). */
static void test_pipeline_capacity_one(void **state)
{
	kaio_ctx *ctx = kt_ctx(1, 0);
	struct kt_wrapped w;
	kaio_buf *b = kt_wrapped_new(&w, BLK);
	chain_fd = g_fd;
	atomic_store(&chain_done, 0);
	atomic_store(&chain_errors, 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, chain_cb, 0), 0);
	kaio_buf_unref(b); /* the chain keeps it alive */
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&chain_done) < CHAIN_N && atomic_load(&chain_errors) < 1000) {
		int rc = kaio_wait(ctx, NULL, 1, 0, 1000);
		if (rc != 0)
			fail_msg("kaio_wait = %d (%s)", rc, kaio_last_error());
		if (kt_now_ms() > deadline)
			fail_msg("pipeline: %d of %d reads after 10 s", atomic_load(&chain_done), CHAIN_N);
	}
	if (atomic_load(&chain_errors) >= 1000)
		fail_msg("a callback's follow-up kaio_read at capacity 1 was refused (after %d reads)",
			 atomic_load(&chain_done));
	assert_int_equal(atomic_load(&chain_errors), 0);
	assert_int_equal(atomic_load(&chain_done), CHAIN_N);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	/* The last operation's reference was dropped after its callback. */
	assert_int_equal(atomic_load(&w.released), 1);
	kt_wrapped_free(&w);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static kaio_buf *drop_handle;          /* the caller's handle, dropped by the callback */
static struct kt_wrapped *drop_w;
static atomic_int drop_released_in_cb; /* release count seen right after the drop */
static atomic_int drop_data_ok;
static kaio_buf *kept_ref;

static void drop_cb(const struct kaio_event *ev)
{
	kaio_buf_unref(drop_handle);
	drop_handle = NULL;
	atomic_store(&drop_released_in_cb, atomic_load(&drop_w->released));
	/* The operation's own reference keeps the memory valid. */
	atomic_store(&drop_data_ok, ev->res == BLK &&
				    kt_check(kaio_buf_data(ev->buf), BLK, ev->offset) == 0);
}

static void keep_cb(const struct kaio_event *ev)
{
	kept_ref = kaio_buf_ref(ev->buf);
}

/* Contract: callbacks may drop references; the operation's reference is
 * dropped after the callback returns (take your own with kaio_buf_ref to keep
 * the buffer). */
static void test_callback_drops_references(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	struct kt_wrapped w;
	drop_w = &w;
	drop_handle = kt_wrapped_new(&w, BLK);
	atomic_store(&drop_released_in_cb, -1);
	atomic_store(&drop_data_ok, 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 7 * BLK, drop_handle, 0, BLK, drop_cb, 1), 0);
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&drop_released_in_cb) < 0) {
		EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 1000), 0);
		if (kt_now_ms() > deadline)
			fail_msg("callback did not run");
	}
	assert_int_equal(atomic_load(&drop_released_in_cb), 0);
	assert_true(atomic_load(&drop_data_ok));
	assert_int_equal(atomic_load(&w.released), 1);
	kt_wrapped_free(&w);

	/* A callback that takes its own reference keeps the buffer. */
	kaio_buf *b = kt_wrapped_new(&w, BLK);
	kept_ref = NULL;
	EXPECT_RC(kaio_read(ctx, g_fd, 8 * BLK, b, 0, BLK, keep_cb, 2), 0);
	kaio_buf_unref(b);
	deadline = kt_now_ms() + 10000;
	while (kept_ref == NULL) {
		EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 1000), 0);
		if (kt_now_ms() > deadline)
			fail_msg("callback did not run");
	}
	assert_ptr_equal(kept_ref, b);
	assert_int_equal(atomic_load(&w.released), 0);
	assert_int_equal(kt_check(kaio_buf_data(kept_ref), BLK, 8 * BLK), 0);
	kaio_buf_unref(kept_ref);
	kept_ref = NULL;
	assert_int_equal(atomic_load(&w.released), 1);
	kt_wrapped_free(&w);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- re-entry: -EBUSY ----------------------------------------------------------- */

struct busy_result {
	int poll_rc, wait_rc, destroy_rc;
	int msg_ok; /* kaio_last_error non-empty after each */
	int ran;
};
static struct busy_result busy_cb_res, busy_rel_res;
static kaio_ctx *busy_ctx;

static void try_reenter(kaio_ctx *ctx, struct busy_result *r)
{
	struct kaio_event ev[4];
	r->msg_ok = 1;
	r->poll_rc = kaio_poll(ctx, ev, 4);
	if (!kaio_last_error()[0])
		r->msg_ok = 0;
	r->wait_rc = kaio_wait(ctx, ev, 1, 4, 100);
	if (!kaio_last_error()[0])
		r->msg_ok = 0;
	r->destroy_rc = kaio_ctx_destroy(ctx);
	if (!kaio_last_error()[0])
		r->msg_ok = 0;
	r->ran++;
}

static void busy_cb(const struct kaio_event *ev)
{
	try_reenter(ev->ctx, &busy_cb_res);
}

static void busy_release(void *data, size_t len, void *opaque)
{
	kt_wrapped_release(data, len, opaque);
	if (busy_ctx)
		try_reenter(busy_ctx, &busy_rel_res);
}

static void check_busy(const struct busy_result *r, const char *where)
{
	if (r->ran != 1)
		fail_msg("%s ran %d times, expected once", where, r->ran);
	if (r->poll_rc != -EBUSY || r->wait_rc != -EBUSY || r->destroy_rc != -EBUSY)
		fail_msg("from %s on the same context: kaio_poll = %d, kaio_wait = %d, kaio_ctx_destroy = %d; expected -EBUSY (%d) each",
			 where, r->poll_rc, r->wait_rc, r->destroy_rc, -EBUSY);
	if (!r->msg_ok)
		fail_msg("from %s: -EBUSY without a kaio_last_error() explanation", where);
}

/* Contract: from inside a callback, kaio_poll, kaio_wait and kaio_ctx_destroy
 * on that context return -EBUSY (delivery through kaio_poll and kaio_wait). */
static void test_busy_from_callback(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);
	for (int via_wait = 0; via_wait < 2; via_wait++) {
		memset(&busy_cb_res, 0, sizeof busy_cb_res);
		EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, busy_cb, 1), 0);
		int64_t deadline = kt_now_ms() + 10000;
		while (busy_cb_res.ran == 0) {
			int rc = via_wait ? kaio_wait(ctx, NULL, 1, 0, 1000) : kaio_poll(ctx, NULL, 0);
			EXPECT_RC(rc, 0);
			if (kt_now_ms() > deadline)
				fail_msg("callback did not run");
			if (!via_wait && busy_cb_res.ran == 0)
				kt_sleep_ms(1);
		}
		check_busy(&busy_cb_res, via_wait ? "a callback run by kaio_wait" : "a callback run by kaio_poll");
		assert_int_equal(kaio_ctx_inflight(ctx), 0);
	}
	/* The context survived the refused destroy. */
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 2), 0);
	struct kaio_event ev;
	kt_wait_n(ctx, &ev, 1);
	kaio_buf_unref(ev.buf);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

static void noop_cb(const struct kaio_event *ev)
{
}

/* Contract: from a release function that the library runs while delivering,
 * kaio_poll, kaio_wait and kaio_ctx_destroy on that context return -EBUSY
 * (the last reference of a callback's buffer, and of a READV vector). */
static void test_busy_from_release(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	busy_ctx = ctx;

	struct kt_wrapped w;
	memset(&busy_rel_res, 0, sizeof busy_rel_res);
	kaio_buf *b = kt_wrapped_new_fn(&w, BLK, busy_release);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, noop_cb, 1), 0);
	kaio_buf_unref(b);
	assert_int_equal(atomic_load(&w.released), 0);
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&w.released) == 0) {
		EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 1000), 0);
		if (kt_now_ms() > deadline)
			fail_msg("release did not run");
	}
	check_busy(&busy_rel_res, "a release run after a callback");
	kt_wrapped_free(&w);

	/* READV without a callback: the vector's references drop at delivery. */
	memset(&busy_rel_res, 0, sizeof busy_rel_res);
	b = kt_wrapped_new_fn(&w, BLK, busy_release);
	struct kaio_vec vec = { b, 0, BLK };
	EXPECT_RC(kaio_readv(ctx, g_fd, 0, &vec, 1, NULL, 2), 0);
	kaio_buf_unref(b);
	struct kaio_event ev;
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.op, KAIO_OP_READV);
	assert_null(ev.buf);
	assert_int_equal(atomic_load(&w.released), 1);
	check_busy(&busy_rel_res, "a release of a READV vector run during delivery");
	assert_int_equal(kt_check(w.mem, BLK, 0), 0);
	kt_wrapped_free(&w);

	busy_ctx = NULL;
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract: submission never delivers anything itself (not even at capacity);
 * only kaio_poll, kaio_wait and kaio_ctx_destroy deliver. */
static void test_submission_never_delivers(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(BLK);
	record_reset();
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, record_cb, 1), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	kt_sleep_ms(100);
	assert_int_equal(atomic_load(&nrec), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, BLK, b, 0, BLK, record_cb, 2), 0);
	kt_sleep_ms(50);
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = g_fd, .offset = 2 * BLK, .len = BLK,
			      .user_data = 3, .buf = b, .cb = record_cb };
	EXPECT_RC(kaio_submit(ctx, &op, 1), 1);
	kt_sleep_ms(50);
	EXPECT_RC(kaio_sync(ctx, g_fd, KAIO_SYNC_DATA, record_cb, 4), 0);
	kt_sleep_ms(50);
	assert_int_equal(atomic_load(&nrec), 0);
	/* At capacity, with everything finished in the kernel. */
	EXPECT_REFUSED(kaio_read(ctx, g_fd, 0, b, 0, BLK, record_cb, 5), -EAGAIN);
	EXPECT_REFUSED(kaio_submit(ctx, &op, 1), -EAGAIN);
	assert_int_equal(atomic_load(&nrec), 0);
	/* Other calls that are not reaping do not deliver either. */
	(void)kaio_ctx_inflight(ctx);
	(void)kaio_ctx_fd(ctx);
	EXPECT_RC(kaio_ctx_wake(ctx), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, g_fd), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), 4);
	EXPECT_RC(kaio_wait(ctx, NULL, 4, 0, 5000), 0);
	assert_int_equal(atomic_load(&nrec), 4);
	for (uint64_t u = 1; u <= 4; u++)
		(void)rec_find(u);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- several reapers --------------------------------------------------------- */

struct blocked_waiter {
	kaio_ctx *ctx;
	atomic_int started;
	atomic_int done;
	int rc;
	int64_t returned_ms;
	struct kaio_event ev[3];
};

static void *blocked_waiter_main(void *p)
{
	struct blocked_waiter *w = p;
	atomic_store(&w->started, 1);
	w->rc = kaio_wait(w->ctx, w->ev, 3, 3, 5000);
	w->returned_ms = kt_now_ms();
	atomic_store(&w->done, 1);
	return NULL;
}

/* Contract: a kaio_wait with room also takes events that another thread's
 * reap left queued, without waiting for a new completion (fresh and
 * already-blocked waits). */
static void test_wait_takes_events_left_by_other_reaper(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(4 * BLK);
	struct kaio_event ev[4];

	/* A wait that starts after a poll left events queued. */
	for (unsigned i = 0; i < 4; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, i), 0);
	kt_sleep_ms(100);
	int64_t t0 = kt_now_ms();
	while (kaio_poll(ctx, ev, 1) != 1) {
		if (kt_now_ms() - t0 > 10000)
			fail_msg("kaio_poll(max 1) found no event in 10 s");
		kt_sleep_ms(1);
	}
	t0 = kt_now_ms();
	int rc = kaio_wait(ctx, ev + 1, 3, 3, 3000);
	if (rc != 3)
		fail_msg("kaio_wait(min 3, max 3) with 3 queued events = %d (%s) after %lld ms", rc,
			 kaio_last_error(), (long long)(kt_now_ms() - t0));
	if (kt_now_ms() - t0 > 1000)
		fail_msg("kaio_wait waited %lld ms for events that were already queued", (long long)(kt_now_ms() - t0));
	drop_events(ev, 4);

	/* A wait already blocked in another thread while this one polls. */
	for (int iter = 0; iter < 30; iter++) {
		struct blocked_waiter w;
		memset(&w, 0, sizeof w);
		w.ctx = ctx;
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, blocked_waiter_main, &w), 0);
		while (!atomic_load(&w.started))
			kt_sleep_ms(1);
		kt_sleep_ms(iter % 3 == 0 ? 20 : 2);
		for (unsigned i = 0; i < 4; i++)
			EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, NULL, 100 * (unsigned)iter + i), 0);
		int64_t submitted = kt_now_ms();
		int mine = 0;
		int64_t deadline = submitted + 10000;
		while (mine < 1) {
			rc = kaio_poll(ctx, ev, 1);
			if (rc < 0)
				fail_msg("kaio_poll = %d (%s)", rc, kaio_last_error());
			mine += rc;
			if (kt_now_ms() > deadline)
				break;
		}
		pthread_join(th, NULL);
		if (mine != 1)
			fail_msg("iteration %d: the polling thread got no event", iter);
		if (w.rc != 3)
			fail_msg("iteration %d: the blocked kaio_wait(min 3, max 3) = %d, expected 3 "
				 "(events left queued by the other thread's poll were not taken)", iter, w.rc);
		if (w.returned_ms - submitted > 2000)
			fail_msg("iteration %d: the blocked kaio_wait returned %lld ms after the events were ready",
				 iter, (long long)(w.returned_ms - submitted));
		int seen[4] = { 0 };
		const struct kaio_event *got4[4] = { &ev[0], &w.ev[0], &w.ev[1], &w.ev[2] };
		for (int i = 0; i < 4; i++) {
			uint64_t k = got4[i]->user_data - 100 * (uint64_t)iter;
			if (k >= 4)
				fail_msg("iteration %d: unexpected user_data %llu", iter,
					 (unsigned long long)got4[i]->user_data);
			seen[k]++;
		}
		for (int i = 0; i < 4; i++)
			if (seen[i] != 1)
				fail_msg("iteration %d: read %d delivered %d times", iter, i, seen[i]);
		kaio_buf_unref(ev[0].buf);
		drop_events(w.ev, 3);
		assert_int_equal(kaio_ctx_inflight(ctx), 0);
	}
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- the eventfd in an event loop --------------------------------------------- */

/* Contract: an event loop polls the eventfd, then calls kaio_poll until it
 * copies fewer than max events; no completion is ever stranded. */
static void test_eventfd_event_loop(void **state)
{
	enum { N = 40, MAX = 4 };
	kaio_ctx *ctx = kt_ctx(32, 0);
	int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	kaio_buf *b = kt_buf(N * BLK);
	record_reset();
	int seen[N] = { 0 };
	unsigned submitted = 0;
	for (; submitted < 20; submitted++)
		EXPECT_RC(kaio_read(ctx, g_fd, submitted * BLK, b, submitted * BLK, BLK,
				    submitted % 3 == 0 ? record_cb : NULL, submitted), 0);
	int events = 0, wakeups = 0;
	int64_t deadline = kt_now_ms() + 20000;
	while (events + atomic_load(&nrec) < N) {
		struct pollfd p = { .fd = efd, .events = POLLIN };
		int prc = poll(&p, 1, 3000);
		if (prc < 0 && errno == EINTR)
			continue;
		if (prc == 0)
			fail_msg("the eventfd was not readable for 3 s with %u operations undelivered",
				 submitted - (unsigned)events - (unsigned)atomic_load(&nrec));
		assert_true(p.revents & POLLIN);
		wakeups++;
		for (;;) {
			struct kaio_event ev[MAX];
			int rc = kaio_poll(ctx, ev, MAX);
			if (rc < 0 || rc > MAX)
				fail_msg("kaio_poll = %d (%s)", rc, kaio_last_error());
			for (int i = 0; i < rc; i++) {
				if (ev[i].user_data >= N || ev[i].user_data % 3 == 0)
					fail_msg("unexpected event user_data %llu", (unsigned long long)ev[i].user_data);
				seen[ev[i].user_data]++;
				assert_int_equal(ev[i].res, BLK);
				kaio_buf_unref(ev[i].buf);
			}
			events += rc;
			if (rc < MAX)
				break;
		}
		/* Submit the rest from inside the loop, a few at a time. */
		for (int k = 0; k < 5 && submitted < N; k++, submitted++)
			EXPECT_RC(kaio_read(ctx, g_fd, submitted * BLK, b, submitted * BLK, BLK,
					    submitted % 3 == 0 ? record_cb : NULL, submitted), 0);
		if (kt_now_ms() > deadline)
			fail_msg("event loop: %d events, %d callbacks after 20 s", events, atomic_load(&nrec));
	}
	int n = atomic_load(&nrec);
	for (int i = 0; i < n; i++)
		seen[rec[i].user_data]++;
	for (int i = 0; i < N; i++)
		if (seen[i] != 1)
			fail_msg("read %d delivered %d times", i, seen[i]);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	assert_int_equal(kt_check(kaio_buf_data(b), N * BLK, 0), 0);
	assert_true(wakeups >= 1);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- RWF_NOWAIT ------------------------------------------------------------------ */

/* Contract: a KAIO_RWF_NOWAIT read completes (bytes, or the kernel's -EAGAIN)
 * and is delivered like any other operation. */
static void test_nowait_read(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	kaio_buf *b = kt_buf(4 * BLK);
	record_reset();
	struct kaio_op ops[4];
	memset(ops, 0, sizeof ops);
	for (unsigned i = 0; i < 4; i++) {
		ops[i].op = KAIO_OP_READ;
		ops[i].fd = g_fd;
		ops[i].offset = (200 + i) * BLK;
		ops[i].buf_offset = i * BLK;
		ops[i].len = BLK;
		ops[i].user_data = i;
		ops[i].buf = b;
		ops[i].cb = i % 2 ? record_cb : NULL;
		ops[i].rw_flags = KAIO_RWF_NOWAIT;
	}
	int rc = kaio_submit(ctx, ops, 4);
	if (rc == -EOPNOTSUPP) {
		kaio_buf_unref(b);
		kaio_ctx_destroy(ctx);
		skip();
	}
	if (rc != 4)
		fail_msg("kaio_submit(4 RWF_NOWAIT reads) = %d (%s)", rc, kaio_last_error());
	struct kaio_event ev[4];
	int events = 0;
	int64_t deadline = kt_now_ms() + 10000;
	while (events < 2 || atomic_load(&nrec) < 2) {
		int got = kaio_wait(ctx, ev + events, 1, 4 - (unsigned)events, 1000);
		if (got < 0)
			fail_msg("kaio_wait = %d (%s)", got, kaio_last_error());
		events += got;
		if (kt_now_ms() > deadline)
			fail_msg("RWF_NOWAIT reads were not all delivered within 10 s");
	}
	assert_int_equal(events, 2);
	assert_int_equal(atomic_load(&nrec), 2);
	const struct kaio_event *all[4] = { &ev[0], &ev[1], &rec[0], &rec[1] };
	int seen[4] = { 0 };
	for (int i = 0; i < 4; i++) {
		const struct kaio_event *e = all[i];
		assert_true(e->user_data < 4);
		seen[e->user_data]++;
		assert_int_equal(e->op, KAIO_OP_READ);
		assert_int_equal(e->offset, (200 + e->user_data) * BLK);
		assert_ptr_equal(e->ctx, ctx);
		assert_int_equal(e->fd, g_fd);
		if (e->res == BLK)
			assert_int_equal(kt_check((char *)kaio_buf_data(b) + e->user_data * BLK, BLK,
						  (200 + e->user_data) * BLK), 0);
		else if (e->res != -EAGAIN)
			fail_msg("RWF_NOWAIT read %llu: res %lld, expected %u or -EAGAIN",
				 (unsigned long long)e->user_data, (long long)e->res, BLK);
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	drop_events(ev, events);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* ---- -EBUSY is for that context only ---------------------------------------------- */

struct other_result {
	int ran;
	int poll_rc, wait_rc, destroy_rc;
};
static kaio_ctx *other_ctx; /* context B, used from inside a delivery on A */
static struct other_result other_res;

static void use_other_context(struct other_result *r)
{
	struct kaio_event ev[4];
	r->poll_rc = kaio_poll(other_ctx, ev, 4);
	for (int i = 0; i < r->poll_rc; i++)
		kaio_buf_unref(ev[i].buf);
	r->wait_rc = kaio_wait(other_ctx, ev, 0, 4, 0);
	for (int i = 0; i < r->wait_rc; i++)
		kaio_buf_unref(ev[i].buf);
	r->destroy_rc = kaio_ctx_destroy(other_ctx);
	if (r->destroy_rc == 0)
		other_ctx = NULL;
	r->ran++;
}

static void other_ctx_cb(const struct kaio_event *ev)
{
	use_other_context(&other_res);
}

static void other_ctx_release(void *data, size_t len, void *opaque)
{
	kt_wrapped_release(data, len, opaque);
	use_other_context(&other_res);
}

static void check_other(const char *where)
{
	if (other_res.ran != 1)
		fail_msg("%s ran %d times, expected once", where, other_res.ran);
	if (other_res.poll_rc < 0 || other_res.wait_rc < 0 || other_res.destroy_rc != 0)
		fail_msg("from %s on context A, on another context B: kaio_poll = %d, kaio_wait = %d, kaio_ctx_destroy = %d; expected >= 0, >= 0, 0 (-EBUSY is for that context only)",
			 where, other_res.poll_rc, other_res.wait_rc, other_res.destroy_rc);
}

/* Contract: -EBUSY applies only to "that context": inside a callback (run by
 * kaio_wait or kaio_poll) or a release function run while delivering on
 * context A, kaio_poll and kaio_wait on another context B work (B's finished
 * read is reaped) and kaio_ctx_destroy(B) returns 0. */
static void test_busy_only_for_that_context(void **state)
{
	kaio_ctx *a = kt_ctx(4, 0);
	kaio_buf *b = kt_buf(2 * BLK);
	for (int variant = 0; variant < 3; variant++) {
		other_ctx = kt_ctx(4, 0);
		memset(&other_res, 0, sizeof other_res);
		/* B has a read of its own, finished and not reaped. */
		EXPECT_RC(kaio_read(other_ctx, g_fd, 0, b, 0, BLK, NULL, 1), 0);
		kt_sleep_ms(20);
		struct kt_wrapped w;
		const char *where;
		if (variant < 2) {
			where = variant == 0 ? "a callback run by kaio_wait" : "a callback run by kaio_poll";
			EXPECT_RC(kaio_read(a, g_fd, BLK, b, BLK, BLK, other_ctx_cb, 2), 0);
		} else {
			where = "a release function run while kaio_wait delivers";
			kaio_buf *wb = kt_wrapped_new_fn(&w, BLK, other_ctx_release);
			EXPECT_RC(kaio_read(a, g_fd, BLK, wb, 0, BLK, noop_cb, 3), 0);
			kaio_buf_unref(wb); /* the operation's reference is the last */
		}
		int64_t deadline = kt_now_ms() + 10000;
		while (other_res.ran == 0) {
			int rc = variant == 1 ? kaio_poll(a, NULL, 0) : kaio_wait(a, NULL, 1, 0, 1000);
			EXPECT_RC(rc, 0);
			if (kt_now_ms() > deadline)
				fail_msg("%s did not run", where);
			if (variant == 1 && other_res.ran == 0)
				kt_sleep_ms(1);
		}
		if (other_ctx) { /* only after a failure */
			kt_drain(other_ctx);
			kaio_ctx_destroy(other_ctx);
			other_ctx = NULL;
		}
		check_other(where);
		if (variant == 2)
			kt_wrapped_free(&w);
		assert_int_equal(kaio_ctx_inflight(a), 0);
	}
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(a), 0);
}

/* Contract: submission never delivers anything itself, even on an
 * KAIO_CTX_ALLOW_BUFFERED context with a buffered fd, where kernel AIO runs
 * synchronously inside io_submit: the completions are ready (the eventfd is
 * readable) when the submission returns, yet no callback runs until
 * kaio_poll. */
static void test_submission_never_delivers_buffered(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, KAIO_CTX_ALLOW_BUFFERED);
	int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	int fd = kt_make_file("buffered-submit.dat", 64 * BLK, O_RDWR);
	kaio_buf *b = kt_buf(4 * BLK);
	record_reset();
	EXPECT_RC(kaio_read(ctx, fd, 0, b, 0, BLK, record_cb, 1), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	/* Buffered: it completed inside the submission. */
	struct pollfd p = { .fd = efd, .events = POLLIN };
	int ready = poll(&p, 1, 0) == 1;
	if (!ready)
		print_message("# note: the buffered read was not complete when kaio_read returned\n");
	assert_int_equal(atomic_load(&nrec), 0);
	kt_fill((char *)kaio_buf_data(b) + BLK, BLK, 8 * BLK);
	EXPECT_RC(kaio_write(ctx, fd, 8 * BLK, b, BLK, BLK, record_cb, 2), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = fd, .offset = 2 * BLK, .buf_offset = 2 * BLK,
			      .len = BLK, .user_data = 3, .buf = b, .cb = record_cb };
	EXPECT_RC(kaio_submit(ctx, &op, 1), 1);
	assert_int_equal(atomic_load(&nrec), 0);
	struct kaio_vec vec = { b, 3 * BLK, BLK };
	EXPECT_RC(kaio_readv(ctx, fd, 3 * BLK, &vec, 1, record_cb, 4), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	EXPECT_RC(kaio_sync(ctx, fd, KAIO_SYNC_DATA, record_cb, 5), 0);
	assert_int_equal(atomic_load(&nrec), 0);
	kt_sleep_ms(50);
	if (atomic_load(&nrec) != 0)
		fail_msg("%d callbacks ran without any kaio_poll/kaio_wait", atomic_load(&nrec));
	assert_int_equal(kaio_ctx_inflight(ctx), 5);
	if (!ready && poll(&p, 1, 2000) != 1)
		fail_msg("the eventfd never became readable for 5 buffered operations");
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&nrec) < 5) {
		EXPECT_RC(kaio_poll(ctx, NULL, 0), 0);
		if (kt_now_ms() > deadline)
			fail_msg("only %d of 5 callbacks ran", atomic_load(&nrec));
		if (atomic_load(&nrec) < 5)
			kt_sleep_ms(1);
	}
	for (uint64_t u = 1; u <= 4; u++) {
		const struct kaio_event *e = rec_find(u);
		assert_int_equal(e->res, BLK);
	}
	assert_int_equal(rec_find(5)->res, 0);
	assert_int_equal(kt_check(kaio_buf_data(b), BLK, 0), 0);
	assert_int_equal(kt_check((char *)kaio_buf_data(b) + 2 * BLK, 2 * BLK, 2 * BLK), 0);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	EXPECT_RC(kaio_ctx_forget_fd(ctx, fd), 0);
	close(fd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* One edge-triggered event loop over N reads with kaio_poll(max), in waves:
 * a wave starts when everything before it was delivered, with 24 reads; the
 * rest of the wave is submitted from inside the drain loop, one read just
 * before each kaio_poll, given a moment to complete, so that completions
 * land while events stay queued.  A completion stranded at the end of a
 * wave (reaped by nobody, its readiness consumed) stalls the loop, as
 * nothing later signals.  Returns the number of wakeups. */
static int edge_triggered_loop(unsigned max)
{
	enum { N = 200, WAVE = 40, FIRST = 24, MAXMAX = 8 };
	assert_true(max >= 1 && max <= MAXMAX);
	kaio_ctx *ctx = kt_ctx(256, 0);
	int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	assert_true(ep >= 0);
	struct epoll_event ee;
	memset(&ee, 0, sizeof ee);
	ee.events = EPOLLIN | EPOLLET;
	ee.data.u64 = 1;
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ee), 0);
	kaio_buf *b = kt_buf(N * BLK);
	int seen[N] = { 0 };
	unsigned submitted = 0, wave_end = 0;
	int delivered = 0, wakeups = 0;
	while (delivered < N) {
		if ((unsigned)delivered == submitted) { /* a new wave */
			wave_end = submitted + WAVE < N ? submitted + WAVE : N;
			for (unsigned k = 0; k < FIRST && submitted < wave_end; k++, submitted++)
				EXPECT_RC(kaio_read(ctx, g_fd, submitted * BLK, b, submitted * BLK, BLK, NULL, submitted),
					  0);
		}
		struct epoll_event out;
		int n = epoll_wait(ep, &out, 1, 3000);
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n >= 0);
		if (n == 0)
			fail_msg("edge-triggered loop (max %u) stalled: no readiness for 3 s with %d of %d reads delivered (%u submitted, %u in flight)",
				 max, delivered, N, submitted, kaio_ctx_inflight(ctx));
		wakeups++;
		for (;;) {
			if (submitted < wave_end) {
				EXPECT_RC(kaio_read(ctx, g_fd, submitted * BLK, b, submitted * BLK, BLK, NULL, submitted),
					  0);
				submitted++;
				struct timespec ts = { 0, 1000000 }; /* let it complete */
				nanosleep(&ts, NULL);
			}
			struct kaio_event ev[MAXMAX];
			int rc = kaio_poll(ctx, ev, max);
			if (rc < 0 || rc > (int)max)
				fail_msg("kaio_poll(max %u) = %d (%s)", max, rc, kaio_last_error());
			for (int i = 0; i < rc; i++) {
				if (ev[i].user_data >= N)
					fail_msg("unexpected user_data %llu", (unsigned long long)ev[i].user_data);
				seen[ev[i].user_data]++;
				assert_int_equal(ev[i].res, BLK);
				kaio_buf_unref(ev[i].buf);
			}
			delivered += rc;
			if (rc < (int)max)
				break; /* fewer than max: the eventfd signals anything else */
		}
	}
	for (int i = 0; i < N; i++)
		if (seen[i] != 1)
			fail_msg("max %u: read %d delivered %d times", max, i, seen[i]);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	struct kaio_event extra[MAXMAX];
	EXPECT_RC(kaio_poll(ctx, extra, max), 0);
	assert_int_equal(kt_check(kaio_buf_data(b), N * BLK, 0), 0);
	close(ep);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	return wakeups;
}

/* Contract: "While events stay queued because max was reached it need not
 * signal again, so an edge-triggered loop calls kaio_poll until it copies
 * fewer than max events."  Such a loop (epoll, EPOLLET on kaio_ctx_fd,
 * kaio_poll with max 4 until it copies fewer) gets all 200 reads, each
 * exactly once, and never waits 3 s for readiness while something is
 * undelivered.  Also with max 3 and 7: how many events a reap leaves queued
 * depends on max, and a count that divides the library's own batch size
 * can hide a stranded completion. */
static void test_eventfd_edge_triggered(void **state)
{
	static const unsigned maxes[] = { 4, 3, 7 };
	for (size_t i = 0; i < sizeof maxes / sizeof maxes[0]; i++) {
		int wakeups = edge_triggered_loop(maxes[i]);
		print_message("# max %u: %d wakeups for 200 reads\n", maxes[i], wakeups);
	}
}

/* ---- a full or spuriously signalled eventfd ------------------------------------- */

static int readable_now(int efd)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	int rc = poll(&p, 1, 0);
	assert_true(rc >= 0);
	return rc == 1 && (p.revents & POLLIN);
}

/* With everything delivered, kaio_poll copies nothing and leaves the eventfd
 * quiet.  The kernel signals the eventfd just after it posts a completion,
 * so a reaper can deliver the last event an instant before its signal lands:
 * that late readiness is allowed (spurious), and the next kaio_poll must
 * clear it.  A few tries cover that instant; a persistent readiness fails
 * every one. */
static void expect_eventfd_quiet(kaio_ctx *ctx, int efd, const char *what)
{
	for (int tries = 1;; tries++) {
		struct kaio_event ev[4];
		int rc = kaio_poll(ctx, ev, 4);
		if (rc != 0)
			fail_msg("%s: kaio_poll with everything delivered = %d (%s)", what, rc, kaio_last_error());
		if (!readable_now(efd))
			return;
		if (tries == 5)
			fail_msg("%s: the eventfd is still readable after %d kaio_poll calls with nothing to deliver (readiness persists)",
				 what, tries);
		kt_sleep_ms(20);
	}
}

/* Submit n reads of block first..first+n-1 into b (every other one with
 * record_cb), user_data = block number. */
static void submit_reads(kaio_ctx *ctx, kaio_buf *b, unsigned first, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, (uint64_t)(first + i) * BLK, b, (size_t)i * BLK, BLK,
				    i % 2 ? record_cb : NULL, first + i), 0);
}

/* Reap n reads submitted by submit_reads: how = 0 kaio_wait(min = all left),
 * 1 an event loop (poll(2) on the eventfd, then kaio_poll until it copies
 * fewer than max), 2 kaio_poll alone.  Checks each was delivered exactly
 * once with its data. */
static void reap_reads(kaio_ctx *ctx, int efd, kaio_buf *b, unsigned first, unsigned n, int how)
{
	enum { MAXN = 32, MAX = 3 };
	assert_true(n <= MAXN);
	int seen[MAXN] = { 0 };
	int events = 0;
	const int64_t deadline = kt_now_ms() + 20000;
	while ((unsigned)(events + atomic_load(&nrec)) < n) {
		struct kaio_event ev[MAXN];
		int rc;
		if (how == 0) {
			const unsigned left = n - (unsigned)events - (unsigned)atomic_load(&nrec);
			rc = kaio_wait(ctx, ev, left, MAXN, 10000);
		} else if (how == 1) {
			struct pollfd p = { .fd = efd, .events = POLLIN };
			int prc = poll(&p, 1, 3000);
			if (prc < 0 && errno == EINTR)
				continue;
			if (prc == 0)
				fail_msg("the eventfd was not readable for 3 s with %u reads undelivered",
					 n - (unsigned)events - (unsigned)atomic_load(&nrec));
			rc = 0;
			for (;;) {
				int r = kaio_poll(ctx, ev + rc, MAX);
				if (r < 0)
					fail_msg("kaio_poll = %d (%s)", r, kaio_last_error());
				rc += r;
				if (r < MAX || rc + MAX > MAXN)
					break;
			}
		} else {
			rc = kaio_poll(ctx, ev, MAXN);
			if (rc == 0)
				kt_sleep_ms(1);
		}
		if (rc < 0)
			fail_msg("%s = %d (%s)", how == 0 ? "kaio_wait" : "kaio_poll", rc, kaio_last_error());
		for (int i = 0; i < rc; i++) {
			uint64_t u = ev[i].user_data;
			if (u < first || u >= first + n || (u - first) % 2)
				fail_msg("unexpected event user_data %llu", (unsigned long long)u);
			seen[u - first]++;
			assert_int_equal(ev[i].res, BLK);
			assert_ptr_equal(ev[i].buf, b);
			kaio_buf_unref(ev[i].buf);
		}
		events += rc;
		if (kt_now_ms() > deadline)
			fail_msg("%d events and %d callbacks of %u reads after 20 s (%u in flight)", events,
				 atomic_load(&nrec), n, kaio_ctx_inflight(ctx));
	}
	for (int i = 0; i < atomic_load(&nrec); i++) {
		uint64_t u = rec[i].user_data;
		if (u < first || u >= first + n || (u - first) % 2 == 0)
			fail_msg("unexpected callback user_data %llu", (unsigned long long)u);
		seen[u - first]++;
		assert_int_equal(rec[i].res, BLK);
	}
	for (unsigned i = 0; i < n; i++)
		if (seen[i] != 1)
			fail_msg("read %u delivered %d times", first + i, seen[i]);
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	assert_int_equal(kt_check(kaio_buf_data(b), (size_t)n * BLK, (uint64_t)first * BLK), 0);
}

/* kaio_ctx_fd(3): "Completions that a call leaves behind ... leave the
 * descriptor readable, so a loop that shares the context with other reaping
 * threads still hears of them."  A callbacks-only reaper (kaio_poll(ctx,
 * NULL, 0)) queues the events of operations without a callback; a second
 * such call drains the eventfd again and must not eat the readiness that
 * announces them to the loop that collects events. */
static void test_eventfd_kept_by_callbacks_only_reaper(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	int efd = kaio_ctx_fd(ctx);
	kaio_buf *b = kt_buf(2 * BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, NULL, 1), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, BLK, b, BLK, BLK, NULL, 2), 0);
	struct pollfd p = { .fd = efd, .events = POLLIN };
	for (int call = 1; call <= 2; call++) {
		if (poll(&p, 1, 5000) != 1)
			fail_msg("before callbacks-only reap %d: the eventfd was not readable for 5 s", call);
		EXPECT_RC(kaio_poll(ctx, NULL, 0), 0);
	}
	if (!readable_now(efd))
		fail_msg("events are queued, but the eventfd is not readable after a callbacks-only reap");
	struct kaio_event ev[8];
	EXPECT_RC(kaio_wait(ctx, ev, 2, 8, 5000), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(ev[i].res, BLK);
		kaio_buf_unref(ev[i].buf);
	}
	expect_eventfd_quiet(ctx, efd, "after the queued events were collected");
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
}

/* Contract (kaio_ctx_fd): the library owns the eventfd and users should not
 * read or write it, but "Readiness may be spurious, never persistent:
 * kaio_poll/kaio_wait drain it before they reap", and "Each completion is
 * delivered exactly once".  A user writing 0xfffffffffffffffe (the largest
 * value an eventfd holds) leaves it full, so each completion saturates it:
 * reads submitted then are all delivered exactly once with their data --
 * reaped by kaio_wait(min = all), by an event loop on the eventfd, and by
 * kaio_poll alone -- and once everything is delivered the eventfd no longer
 * polls readable.  Catches: a drain that takes less than the whole counter
 * (EFD_SEMAPHORE, reading "one per completion"), trusting the counter as a
 * number of completions, a full counter making a reap fail or hang. */
static void test_eventfd_full_counter(void **state)
{
	enum { N = 12 };
	kaio_ctx *ctx = kt_ctx(32, 0);
	const int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	kaio_buf *b = kt_buf(N * BLK);
	static const char *const how_name[] = { "kaio_wait", "an event loop", "kaio_poll" };
	for (int how = 0; how < 3; how++) {
		const uint64_t full = 0xfffffffffffffffeull, one = 1;
		/* The counter must be 0 to take the maximum: a signal from the
		 * previous round's last completion may land late (see
		 * expect_eventfd_quiet); kaio_poll drains it. */
		for (int tries = 1; write(efd, &full, sizeof full) != (ssize_t)sizeof full; tries++) {
			if (errno != EAGAIN || tries == 5)
				fail_msg("writing 0xfffffffffffffffe to the eventfd failed: %s", strerror(errno));
			EXPECT_RC(kaio_poll(ctx, NULL, 0), 0);
			kt_sleep_ms(20);
		}
		errno = 0;
		if (write(efd, &one, sizeof one) != -1 || errno != EAGAIN)
			fail_msg("the eventfd took one more after 0xfffffffffffffffe: it was not full");
		assert_true(readable_now(efd));
		memset(kaio_buf_data(b), 0, N * BLK);
		record_reset();
		const unsigned first = (unsigned)how * N;
		submit_reads(ctx, b, first, N);
		reap_reads(ctx, efd, b, first, N, how);
		char what[64];
		snprintf(what, sizeof what, "full eventfd, reaped by %s", how_name[how]);
		expect_eventfd_quiet(ctx, efd, what);
	}
	assert_int_equal(kaio_ctx_fd(ctx), efd);
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract (kaio_ctx_fd): "kaio_poll/kaio_wait drain it before they reap".
 * One read, its completion posted (the eventfd readable): the call that
 * copies its event leaves the eventfd quiet, with nothing else in flight
 * to signal after the drain -- for kaio_poll, for kaio_wait, and for a
 * read with a callback reaped by kaio_poll.  Catches a drain deferred to
 * the next call that finds nothing (a level-triggered loop then wakes once
 * more per burst, for nothing). */
static void test_eventfd_drained_by_the_reap(void **state)
{
	(void)state;
	kaio_ctx *ctx = kt_ctx(8, 0);
	const int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	kaio_buf *b = kt_buf(BLK);
	static const char *const how[] = { "kaio_poll", "kaio_wait", "kaio_poll, with a callback" };
	for (int h = 0; h < 3; h++) {
		EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, h == 2 ? record_cb : NULL, 7), 0);
		struct pollfd p = { .fd = efd, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1)
			fail_msg("%s: the read's completion never made the eventfd readable", how[h]);
		struct kaio_event ev[4];
		int rc = h == 1 ? kaio_wait(ctx, ev, 1, 4, 5000) : kaio_poll(ctx, ev, 4);
		if (rc != (h == 2 ? 0 : 1))
			fail_msg("%s returned %d (%s)", how[h], rc, kaio_last_error());
		if (h != 2) {
			assert_int_equal(ev[0].user_data, 7);
			assert_int_equal(ev[0].res, BLK);
			kaio_buf_unref(ev[0].buf);
		}
		assert_int_equal(kaio_ctx_inflight(ctx), 0);
		if (readable_now(efd))
			fail_msg("%s delivered the only completion but left the eventfd readable: "
				 "it did not drain it before it reaped", how[h]);
	}
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

/* Contract (kaio_ctx_fd): "Readiness may be spurious, never persistent:
 * kaio_poll/kaio_wait drain it before they reap"; kaio_wait blocks "until at
 * least min completions were delivered ... or timeout_ms passed"; a
 * kaio_ctx_wake "is not remembered for waits that start later".  An eventfd
 * counter left non-zero with nothing to deliver (a write by someone else, or
 * wakes with nobody waiting): kaio_poll returns 0 and the eventfd is quiet
 * after it; kaio_wait with timeout 0 likewise; kaio_wait(min 1, 300 ms) is
 * not ended early by the stale readiness (it returns 0 after its timeout)
 * and leaves it quiet; and reads submitted on top of a stale count are each
 * delivered once, after which the eventfd is quiet.  Catches: a drain only
 * when something is in flight, a kaio_wait that returns (or spins) on stale
 * readiness without draining it, wakes written into the completion eventfd
 * and left there. */
static void test_eventfd_spurious_readiness(void **state)
{
	enum { N = 10 };
	kaio_ctx *ctx = kt_ctx(16, 0);
	const int efd = kaio_ctx_fd(ctx);
	assert_true(efd >= 0);
	struct kaio_event ev[4];
	uint64_t v;

	/* Idle, kaio_poll. */
	v = 1;
	assert_int_equal(write(efd, &v, sizeof v), sizeof v);
	assert_true(readable_now(efd));
	EXPECT_RC(kaio_poll(ctx, ev, 4), 0);
	if (readable_now(efd))
		fail_msg("a spurious count of 1 is still readable after kaio_poll on an idle context");

	/* Idle, kaio_wait that does not block; then with events NULL, max 0. */
	v = 5;
	assert_int_equal(write(efd, &v, sizeof v), sizeof v);
	EXPECT_RC(kaio_wait(ctx, ev, 1, 4, 0), 0);
	if (readable_now(efd))
		fail_msg("a spurious count of 5 is still readable after kaio_wait(timeout 0) on an idle context");
	assert_int_equal(write(efd, &v, sizeof v), sizeof v);
	EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 0), 0);
	if (readable_now(efd))
		fail_msg("a spurious count is still readable after kaio_wait(events NULL, max 0, timeout 0)");

	/* Idle, kaio_wait with a timeout: waits it out, drains. */
	v = 3;
	assert_int_equal(write(efd, &v, sizeof v), sizeof v);
	int64_t t0 = kt_now_ms();
	EXPECT_RC(kaio_wait(ctx, ev, 1, 4, 300), 0);
	int64_t took = kt_now_ms() - t0;
	if (took < 290)
		fail_msg("kaio_wait(min 1, 300 ms) on an idle context with a spurious count returned after %lld ms",
			 (long long)took);
	if (readable_now(efd))
		fail_msg("a spurious count is still readable after an idle kaio_wait(300 ms)");

	/* Wakes with nobody waiting leave nothing behind. */
	for (int i = 0; i < 10; i++)
		EXPECT_RC(kaio_ctx_wake(ctx), 0);
	expect_eventfd_quiet(ctx, efd, "after 10 wakes with nobody waiting");
	t0 = kt_now_ms();
	EXPECT_RC(kaio_wait(ctx, ev, 1, 4, 200), 0);
	took = kt_now_ms() - t0;
	if (took < 190)
		fail_msg("kaio_wait(200 ms) returned after %lld ms: a wake from before it started was remembered",
			 (long long)took);
	if (readable_now(efd))
		fail_msg("the eventfd is readable after an idle kaio_wait that followed wakes");

	/* Reads on top of a stale count, reaped by kaio_wait and by kaio_poll. */
	kaio_buf *b = kt_buf(N * BLK);
	for (int how = 0; how < 3; how += 2) {
		v = 7;
		assert_int_equal(write(efd, &v, sizeof v), sizeof v);
		record_reset();
		memset(kaio_buf_data(b), 0, N * BLK);
		const unsigned first = 100 + (unsigned)how * N;
		submit_reads(ctx, b, first, N);
		reap_reads(ctx, efd, b, first, N, how);
		expect_eventfd_quiet(ctx, efd, how ? "reads over a stale count, kaio_poll" : "reads over a stale count, kaio_wait");
	}
	kaio_buf_unref(b);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
}

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_callback_event_fields),
		cmocka_unit_test(test_event_fields_without_callback),
		cmocka_unit_test(test_callback_on_reaping_thread),
		cmocka_unit_test(test_return_counts_events_only),
		cmocka_unit_test(test_max_limits_only_events),
		cmocka_unit_test(test_events_kept_beyond_max),
		cmocka_unit_test(test_wait_returns_at_max),
		cmocka_unit_test(test_wait_timeout),
		cmocka_unit_test(test_wait_bad_timeout),
		cmocka_unit_test(test_poll_idle),
		cmocka_unit_test(test_pipeline_capacity_one),
		cmocka_unit_test(test_callback_drops_references),
		cmocka_unit_test(test_busy_from_callback),
		cmocka_unit_test(test_busy_from_release),
		cmocka_unit_test(test_submission_never_delivers),
		cmocka_unit_test(test_wait_takes_events_left_by_other_reaper),
		cmocka_unit_test(test_eventfd_event_loop),
		cmocka_unit_test(test_nowait_read),
		cmocka_unit_test(test_busy_only_for_that_context),
		cmocka_unit_test(test_submission_never_delivers_buffered),
		cmocka_unit_test(test_eventfd_edge_triggered),
		cmocka_unit_test(test_eventfd_full_counter),
		cmocka_unit_test(test_eventfd_kept_by_callbacks_only_reaper),
		cmocka_unit_test(test_eventfd_drained_by_the_reap),
		cmocka_unit_test(test_eventfd_spurious_readiness),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
