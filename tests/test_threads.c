/* Integration tests for concurrency: exactly-once delivery with several
 * submitting and reaping threads (callbacks and events mixed), and atomic
 * buffer reference counting.  Real files with O_DIRECT, the public API only.
 * Worker threads never call cmocka: they count errors, and the main thread
 * asserts. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define NBLK 256u /* file blocks */
#define FILE_SIZE (NBLK * BLK)

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

/* First error seen by any thread, reported by the main thread. */
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[512];
static atomic_int n_errors;

static void note_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_error(const char *fmt, ...)
{
	if (atomic_fetch_add(&n_errors, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		pthread_mutex_lock(&err_lock);
		vsnprintf(first_error, sizeof first_error, fmt, ap);
		pthread_mutex_unlock(&err_lock);
		va_end(ap);
	}
}

static void check_no_errors(void)
{
	int n = atomic_load(&n_errors);
	if (n) {
		char msg[sizeof first_error];
		pthread_mutex_lock(&err_lock);
		memcpy(msg, first_error, sizeof msg);
		pthread_mutex_unlock(&err_lock);
		fail_msg("%d errors in worker threads; first: %s", n, msg);
	}
}

static int g_fd = -1;

static int group_setup(void **state)
{
	g_fd = kt_make_file("threads.dat", FILE_SIZE, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	if (g_fd >= 0)
		close(g_fd);
	g_fd = -1;
	return 0;
}

/* Reap (dropping events' references) until nothing is in flight, for at most
 * `ms` milliseconds: after a failure the accounting may be wrong. */
static void drain_bounded(kaio_ctx *ctx, int ms)
{
	int64_t deadline = kt_now_ms() + ms;
	while (kaio_ctx_inflight(ctx) > 0 && kt_now_ms() < deadline) {
		struct kaio_event ev[16];
		int rc = kaio_wait(ctx, ev, 1, 16, 100);
		for (int i = 0; i < rc; i++)
			kaio_buf_unref(ev[i].buf);
	}
}

/* ---- exactly-once delivery --------------------------------------------------- */

enum {
	SUBMITTERS = 4,
	REAPERS = 3,
	PER_THREAD = 1000,
	TOTAL = SUBMITTERS * PER_THREAD,
	CAPACITY = 32,
	BATCH = 4,
};

/* Each operation id has a fixed kind: */
static int op_is_write(unsigned id) { return id % 4 == 3; }
static int op_has_cb(unsigned id) { return id % 2 == 1; }
static uint64_t op_offset(unsigned id) { return (uint64_t)((id * 7u) % NBLK) * BLK; }

static kaio_ctx *mt_ctx;
static unsigned char *arena;          /* TOTAL * BLK, one block per operation */
static kaio_buf *handles[TOTAL];
static atomic_int delivered[TOTAL];
static atomic_int released[TOTAL];
static atomic_int cb_calls[TOTAL];
static atomic_int total_delivered;
static atomic_int stop_reapers;
static atomic_int eagain_seen;
static atomic_int zero_polls;
static int64_t mt_deadline;
static unsigned round_per_thread = PER_THREAD; /* operations per submitter this round */
static int round_total(void) { return (int)(SUBMITTERS * round_per_thread); }

static void mt_release(void *data, size_t len, void *opaque)
{
	unsigned id = (unsigned)(uintptr_t)opaque;
	if (id >= TOTAL || data != arena + (size_t)id * BLK || len != BLK) {
		note_error("release called with wrong arguments (id %u)", id);
		return;
	}
	if (atomic_fetch_add(&released[id], 1) != 0)
		note_error("release of operation %u ran twice", id);
	if (atomic_load(&delivered[id]) != 1)
		note_error("release of operation %u ran before its delivery", id);
}

static void deliver(const struct kaio_event *ev, int via_cb)
{
	uint64_t u = ev->user_data;
	if (u >= TOTAL) {
		note_error("event with unknown user_data %llu", (unsigned long long)u);
		return;
	}
	unsigned id = (unsigned)u;
	if (via_cb != op_has_cb(id))
		note_error("operation %u delivered %s a callback", id, via_cb ? "through" : "without");
	if (ev->ctx != mt_ctx || ev->fd != g_fd)
		note_error("operation %u: wrong ctx or fd in its event", id);
	if (ev->op != (op_is_write(id) ? KAIO_OP_WRITE : KAIO_OP_READ))
		note_error("operation %u: op %u", id, ev->op);
	if (ev->offset != op_offset(id))
		note_error("operation %u: offset %llu", id, (unsigned long long)ev->offset);
	if (ev->res != BLK)
		note_error("operation %u: res %lld", id, (long long)ev->res);
	if (ev->buf != handles[id])
		note_error("operation %u: the event's buffer is not its own", id);
	else if (!op_is_write(id) && ev->res == BLK &&
		 kt_check(kaio_buf_data(ev->buf), BLK, op_offset(id)) != 0)
		note_error("operation %u: read data does not match the file", id);
	if (atomic_load(&released[id]) != 0)
		note_error("operation %u: its buffer was released before delivery", id);
	if (atomic_fetch_add(&delivered[id], 1) != 0)
		note_error("operation %u delivered twice", id);
	atomic_fetch_add(&total_delivered, 1);
}

static void mt_cb(const struct kaio_event *ev)
{
	uint64_t u = ev->user_data;
	if (u < TOTAL && atomic_fetch_add(&cb_calls[u], 1) != 0)
		note_error("callback of operation %llu ran twice", (unsigned long long)u);
	deliver(ev, 1);
}

static void prepare_op(unsigned id, struct kaio_op *op)
{
	unsigned char *mem = arena + (size_t)id * BLK;
	if (op_is_write(id))
		kt_fill(mem, BLK, op_offset(id)); /* writes put the file's own pattern back */
	else
		memset(mem, 0, BLK);
	kaio_buf *b = NULL;
	int rc = kaio_buf_wrap(&b, mem, BLK, mt_release, (void *)(uintptr_t)id);
	if (rc != 0) {
		note_error("kaio_buf_wrap = %d (%s)", rc, kaio_last_error());
		b = NULL;
	}
	handles[id] = b;
	memset(op, 0, sizeof *op);
	op->op = op_is_write(id) ? KAIO_OP_WRITE : KAIO_OP_READ;
	op->fd = g_fd;
	op->offset = op_offset(id);
	op->buf_offset = 0;
	op->len = BLK;
	op->user_data = id;
	op->buf = b;
	op->cb = op_has_cb(id) ? mt_cb : NULL;
}

static void *submitter_main(void *p)
{
	unsigned t = (unsigned)(uintptr_t)p;
	unsigned first = t * PER_THREAD;
	int batched = t % 2 == 1; /* half the threads use kaio_submit batches */
	for (unsigned i = 0; i < round_per_thread && !atomic_load(&stop_reapers);) {
		unsigned n = batched ? BATCH : 1;
		if (i + n > round_per_thread)
			n = round_per_thread - i;
		struct kaio_op ops[BATCH];
		for (unsigned k = 0; k < n; k++)
			prepare_op(first + i + k, &ops[k]);
		unsigned done = 0;
		unsigned spins = 0;
		while (done < n) {
			int rc;
			const struct kaio_op *o = &ops[done];
			if (!batched) {
				rc = o->op == KAIO_OP_WRITE
					? kaio_write(mt_ctx, o->fd, o->offset, o->buf, 0, BLK, o->cb, o->user_data)
					: kaio_read(mt_ctx, o->fd, o->offset, o->buf, 0, BLK, o->cb, o->user_data);
				rc = rc == 0 ? 1 : rc;
			} else {
				rc = kaio_submit(mt_ctx, o, n - done);
			}
			if (rc > 0) {
				if ((unsigned)rc > n - done) {
					note_error("kaio_submit accepted %d of %u", rc, n - done);
					rc = (int)(n - done);
				}
				/* The operations hold their own references now. */
				for (int k = 0; k < rc; k++)
					kaio_buf_unref(ops[done + (unsigned)k].buf);
				done += (unsigned)rc;
				spins = 0;
			} else if (rc == -EAGAIN || rc == 0) {
				atomic_fetch_add(&eagain_seen, 1);
				if (kt_now_ms() > mt_deadline) {
					note_error("submitter %u: still -EAGAIN at the deadline", t);
					atomic_store(&stop_reapers, 1);
					break;
				}
				/* Retry hard for contention, then back off so that a
				 * spinning submitter cannot starve the reapers. */
				if (++spins < 16)
					sched_yield();
				else
					sleep_us(20);
			} else {
				note_error("submitter %u: submission = %d (%s)", t, rc, kaio_last_error());
				atomic_store(&stop_reapers, 1);
				break;
			}
		}
		for (unsigned k = done; k < n; k++) /* refused: still ours */
			kaio_buf_unref(ops[k].buf);
		i += n;
	}
	return NULL;
}

static void *reaper_main(void *p)
{
	unsigned r = (unsigned)(uintptr_t)p;
	struct kaio_event ev[8];
	while (atomic_load(&total_delivered) < round_total() && !atomic_load(&stop_reapers)) {
		int rc;
		if (r == 0)
			rc = kaio_poll(mt_ctx, ev, 8);
		else
			rc = kaio_wait(mt_ctx, ev, 1, r == 1 ? 8 : 3, 20);
		if (rc < 0) {
			note_error("reaper %u: %s = %d (%s)", r, r ? "kaio_wait" : "kaio_poll", rc,
				   kaio_last_error());
			atomic_store(&stop_reapers, 1);
			break;
		}
		for (int i = 0; i < rc; i++) {
			deliver(&ev[i], 0);
			kaio_buf_unref(ev[i].buf); /* the event carried the reference */
		}
		if (rc == 0 && r == 0) {
			atomic_fetch_add(&zero_polls, 1); /* allowed: another thread may be reaping */
			sleep_us(50);
		}
		if (kt_now_ms() > mt_deadline) {
			note_error("reaper %u: only %d of %d delivered at the deadline", r,
				   atomic_load(&total_delivered), round_total());
			atomic_store(&stop_reapers, 1);
		}
	}
	return NULL;
}

/* The meddler: while submitters and reapers run, every other function of the
 * context, concurrently (forgetting an fd is always safe, even one in use). */
static atomic_int meddle_stop;
static atomic_long meddle_loops;
static int meddle_fd0;            /* kaio_ctx_fd at the start */
static unsigned meddle_cap;
static uint32_t meddle_ma, meddle_oa; /* kaio_fd_alignment(g_fd) at the start */
static int meddle_spare_fd;       /* open, never used for I/O */

static void *meddler_main(void *p)
{
	unsigned k = 0;
	while (!atomic_load(&meddle_stop)) {
		const int forget = k % 3 == 0 ? g_fd : k % 3 == 1 ? meddle_spare_fd : 100000;
		int rc = kaio_ctx_forget_fd(mt_ctx, forget);
		if (rc != 0)
			note_error("meddler: kaio_ctx_forget_fd(%d) = %d (%s)", forget, rc, kaio_last_error());
		rc = kaio_ctx_fd(mt_ctx);
		if (rc != meddle_fd0)
			note_error("meddler: kaio_ctx_fd = %d, was %d", rc, meddle_fd0);
		unsigned cap = kaio_ctx_capacity(mt_ctx);
		if (cap != meddle_cap)
			note_error("meddler: kaio_ctx_capacity = %u, expected %u", cap, meddle_cap);
		unsigned in = kaio_ctx_inflight(mt_ctx);
		if (in > meddle_cap)
			note_error("meddler: kaio_ctx_inflight = %u above capacity %u", in, meddle_cap);
		rc = kaio_ctx_wake(mt_ctx);
		if (rc != 0)
			note_error("meddler: kaio_ctx_wake = %d (%s)", rc, kaio_last_error());
		uint32_t ma = 0, oa = 0;
		rc = kaio_fd_alignment(g_fd, &ma, &oa);
		if (rc != 0 || ma != meddle_ma || oa != meddle_oa)
			note_error("meddler: kaio_fd_alignment = %d (%u, %u), expected 0 (%u, %u)", rc, ma, oa,
				   meddle_ma, meddle_oa);
		atomic_fetch_add(&meddle_loops, 1);
		if (++k % 8 == 0)
			sleep_us(50); /* 2 CPUs here: leave the others room */
		else
			sched_yield();
	}
	return NULL;
}

static void exactly_once_round(unsigned capacity, unsigned flags, unsigned per_thread);

/* Contract: each completion is delivered exactly once, whichever thread reaps
 * (4 submitters, 3 reapers, callbacks and events mixed, reads and writes);
 * every operation holds its own buffer reference, dropped exactly once.
 * Meanwhile a meddler thread calls every other function of the context
 * ("every function may be called from any thread concurrently"):
 * kaio_ctx_forget_fd (on the fd in use and others), kaio_ctx_fd (unchanged),
 * kaio_ctx_capacity (unchanged), kaio_ctx_inflight (<= capacity),
 * kaio_ctx_wake, and kaio_fd_alignment. */
static void test_exactly_once_across_threads(void **state)
{
	/* Tight (most submissions see -EAGAIN), medium and roomy capacities. */
	exactly_once_round(3, 0, PER_THREAD / 4);
	exactly_once_round(CAPACITY, 0, PER_THREAD);
	exactly_once_round(256, 0, PER_THREAD);
	exactly_once_round(8, 0, PER_THREAD);
}

static void exactly_once_round(unsigned capacity, unsigned flags, unsigned per_thread)
{
	round_per_thread = per_thread;
	mt_ctx = kt_ctx(capacity, flags);
	assert_int_equal(posix_memalign((void **)&arena, 4096, (size_t)TOTAL * BLK), 0);
	for (unsigned i = 0; i < TOTAL; i++) {
		atomic_store(&delivered[i], 0);
		atomic_store(&released[i], 0);
		atomic_store(&cb_calls[i], 0);
		handles[i] = NULL;
	}
	atomic_store(&total_delivered, 0);
	atomic_store(&stop_reapers, 0);
	atomic_store(&n_errors, 0);
	atomic_store(&eagain_seen, 0);
	atomic_store(&zero_polls, 0);
	mt_deadline = kt_now_ms() + 15000;

	meddle_fd0 = kaio_ctx_fd(mt_ctx);
	assert_true(meddle_fd0 >= 0);
	meddle_cap = capacity;
	EXPECT_RC(kaio_fd_alignment(g_fd, &meddle_ma, &meddle_oa), 0);
	meddle_spare_fd = open(kt_path("threads.dat"), O_RDONLY);
	assert_true(meddle_spare_fd >= 0);
	atomic_store(&meddle_stop, 0);
	atomic_store(&meddle_loops, 0);

	pthread_t sub[SUBMITTERS], rea[REAPERS], meddler;
	for (unsigned r = 0; r < REAPERS; r++)
		assert_int_equal(pthread_create(&rea[r], NULL, reaper_main, (void *)(uintptr_t)r), 0);
	assert_int_equal(pthread_create(&meddler, NULL, meddler_main, NULL), 0);
	for (unsigned t = 0; t < SUBMITTERS; t++)
		assert_int_equal(pthread_create(&sub[t], NULL, submitter_main, (void *)(uintptr_t)t), 0);
	for (unsigned t = 0; t < SUBMITTERS; t++)
		pthread_join(sub[t], NULL);
	for (unsigned r = 0; r < REAPERS; r++)
		pthread_join(rea[r], NULL);
	atomic_store(&meddle_stop, 1);
	pthread_join(meddler, NULL);
	close(meddle_spare_fd);
	if (atomic_load(&meddle_loops) == 0)
		note_error("the meddler thread never completed a loop");

	/* Whatever is left (only after a failure) goes before the checks. */
	if (atomic_load(&stop_reapers))
		drain_bounded(mt_ctx, 5000);
	check_no_errors();
	assert_int_equal(atomic_load(&total_delivered), round_total());
	assert_int_equal(kaio_ctx_inflight(mt_ctx), 0);
	struct kaio_event extra[4];
	EXPECT_RC(kaio_poll(mt_ctx, extra, 4), 0);
	for (unsigned i = 0; i < TOTAL; i++) {
		if (i % PER_THREAD >= round_per_thread) {
			/* not used this round */
			if (atomic_load(&delivered[i]) || atomic_load(&released[i]) || atomic_load(&cb_calls[i]))
				fail_msg("operation %u was never submitted but was delivered or released", i);
			continue;
		}
		if (atomic_load(&delivered[i]) != 1)
			fail_msg("operation %u delivered %d times", i, atomic_load(&delivered[i]));
		if (atomic_load(&cb_calls[i]) != (op_has_cb(i) ? 1 : 0))
			fail_msg("operation %u: callback ran %d times", i, atomic_load(&cb_calls[i]));
		if (atomic_load(&released[i]) != 1)
			fail_msg("operation %u: its buffer was released %d times", i, atomic_load(&released[i]));
	}
	EXPECT_RC(kaio_ctx_destroy(mt_ctx), 0);
	mt_ctx = NULL;
	/* The writes put the pattern back: the file is intact. */
	char *chk = NULL;
	assert_int_equal(posix_memalign((void **)&chk, 4096, FILE_SIZE), 0);
	assert_int_equal(pread(g_fd, chk, FILE_SIZE, 0), (ssize_t)FILE_SIZE);
	assert_int_equal(kt_check(chk, FILE_SIZE, 0), 0);
	free(chk);
	free(arena);
	arena = NULL;
	print_message("# capacity %u: %d submissions saw -EAGAIN, %d polls returned 0, %ld meddler loops\n",
		      capacity, atomic_load(&eagain_seen), atomic_load(&zero_polls), atomic_load(&meddle_loops));
}

/* ---- waiters and wake under load ------------------------------------------- */

static atomic_int wl_stop;

static void *wl_waiter(void *p)
{
	kaio_ctx *ctx = p;
	while (!atomic_load(&wl_stop)) {
		struct kaio_event ev[4];
		int rc = kaio_wait(ctx, ev, 1, 4, -1);
		if (rc < 0 && rc != -EINTR) {
			note_error("kaio_wait(timeout -1) = %d (%s)", rc, kaio_last_error());
			break;
		}
		for (int i = 0; i < rc; i++) {
			deliver(&ev[i], 0);
			kaio_buf_unref(ev[i].buf);
		}
	}
	return NULL;
}

/* Contract: kaio_ctx_wake makes every kaio_wait in progress return, from any
 * thread, while other threads reap and submit. */
static void test_wake_releases_all_waiters(void **state)
{
	enum { WAITERS = 3, N = 400 };
	mt_ctx = kt_ctx(CAPACITY, 0);
	assert_int_equal(posix_memalign((void **)&arena, 4096, (size_t)N * BLK), 0);
	for (unsigned i = 0; i < N; i++) {
		atomic_store(&delivered[i], 0);
		atomic_store(&released[i], 0);
		atomic_store(&cb_calls[i], 0);
	}
	atomic_store(&total_delivered, 0);
	atomic_store(&n_errors, 0);
	atomic_store(&wl_stop, 0);
	pthread_t th[WAITERS];
	for (int i = 0; i < WAITERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, wl_waiter, mt_ctx), 0);
	int64_t deadline = kt_now_ms() + 10000;
	for (unsigned id = 0; id < N; id++) {
		struct kaio_op op;
		prepare_op(id, &op);
		for (;;) {
			int rc = kaio_submit(mt_ctx, &op, 1);
			if (rc == 1)
				break;
			if (rc != -EAGAIN)
				fail_msg("kaio_submit = %d (%s)", rc, kaio_last_error());
			if (kt_now_ms() > deadline)
				fail_msg("capacity never freed up");
			sched_yield();
		}
		kaio_buf_unref(op.buf);
	}
	while (atomic_load(&total_delivered) < N && kt_now_ms() < deadline)
		sleep_us(1000);
	atomic_store(&wl_stop, 1);
	/* One wake must release every waiter blocked with timeout -1; repeat a
	 * few times only in case one was between its loop test and its wait. */
	int64_t t0 = kt_now_ms();
	int joined = 0;
	int is_joined[WAITERS] = { 0 };
	for (int attempt = 0; attempt < 20 && joined < WAITERS; attempt++) {
		EXPECT_RC(kaio_ctx_wake(mt_ctx), 0);
		sleep_us(100000);
		for (int i = 0; i < WAITERS; i++)
			if (!is_joined[i] && pthread_tryjoin_np(th[i], NULL) == 0) {
				is_joined[i] = 1;
				joined++;
			}
	}
	if (joined < WAITERS) {
		/* Rescue so that the program can end: feed completions. */
		kaio_buf *b = kt_buf(BLK);
		for (int k = 0; k < 50 && joined < WAITERS; k++) {
			if (kaio_read(mt_ctx, g_fd, 0, b, 0, BLK, NULL, 1u << 30) == 0) {
			}
			kaio_ctx_wake(mt_ctx);
			sleep_us(100000);
			for (int i = 0; i < WAITERS; i++)
				if (!is_joined[i] && pthread_tryjoin_np(th[i], NULL) == 0) {
					is_joined[i] = 1;
					joined++;
				}
		}
		kaio_buf_unref(b);
		fail_msg("kaio_ctx_wake did not release %d of %d blocked waiters", WAITERS - joined, WAITERS);
	}
	if (kt_now_ms() - t0 > 2000)
		fail_msg("waiters took %lld ms to return after kaio_ctx_wake", (long long)(kt_now_ms() - t0));
	check_no_errors();
	assert_int_equal(atomic_load(&total_delivered), N);
	for (unsigned i = 0; i < N; i++) {
		assert_int_equal(atomic_load(&delivered[i]), 1);
		assert_int_equal(atomic_load(&released[i]), 1);
	}
	assert_int_equal(kaio_ctx_inflight(mt_ctx), 0);
	EXPECT_RC(kaio_ctx_destroy(mt_ctx), 0);
	mt_ctx = NULL;
	free(arena);
	arena = NULL;
}

/* ---- reference counting ---------------------------------------------------- */

struct refs {
	void *mem;
	atomic_int released;
	atomic_int release_on_worker;
	pthread_t main_thread;
};

static void refs_release(void *data, size_t len, void *opaque)
{
	struct refs *r = opaque;
	atomic_fetch_add(&r->released, 1);
	if (!pthread_equal(pthread_self(), r->main_thread))
		atomic_store(&r->release_on_worker, 1);
}

struct ref_worker {
	kaio_buf *b;
	struct refs *r;
	int drop_last; /* ends by dropping a reference given to it */
	int early_release;
};

enum { REF_THREADS = 8, REF_ITERS = 100000 };

static void *ref_worker_main(void *p)
{
	struct ref_worker *w = p;
	for (int i = 0; i < REF_ITERS; i++) {
		kaio_buf *a = kaio_buf_ref(w->b);
		if (a != w->b)
			w->early_release = 2;
		if (i % 7 == 0) {
			kaio_buf *c = kaio_buf_ref(a);
			kaio_buf_unref(c);
		}
		if (atomic_load(&w->r->released) != 0)
			w->early_release = 1;
		kaio_buf_unref(a);
	}
	if (w->drop_last)
		kaio_buf_unref(w->b);
	return NULL;
}

/* Contract: counting is atomic: concurrent kaio_buf_ref/unref from many
 * threads never release early, and the release runs exactly once, on the
 * thread that dropped the last reference. */
static void test_concurrent_ref_unref(void **state)
{
	for (int variant = 0; variant < 2; variant++) {
		struct refs r;
		memset(&r, 0, sizeof r);
		r.main_thread = pthread_self();
		assert_int_equal(posix_memalign(&r.mem, 4096, BLK), 0);
		kaio_buf *b = NULL;
		EXPECT_RC(kaio_buf_wrap(&b, r.mem, BLK, refs_release, &r), 0);
		struct ref_worker w[REF_THREADS];
		pthread_t th[REF_THREADS];
		for (int i = 0; i < REF_THREADS; i++) {
			memset(&w[i], 0, sizeof w[i]);
			w[i].b = b;
			w[i].r = &r;
			w[i].drop_last = variant == 1;
			if (variant == 1)
				assert_ptr_equal(kaio_buf_ref(b), b); /* one per worker */
		}
		if (variant == 1)
			kaio_buf_unref(b); /* the workers hold the only references */
		for (int i = 0; i < REF_THREADS; i++)
			assert_int_equal(pthread_create(&th[i], NULL, ref_worker_main, &w[i]), 0);
		for (int i = 0; i < REF_THREADS; i++)
			pthread_join(th[i], NULL);
		for (int i = 0; i < REF_THREADS; i++) {
			if (w[i].early_release == 2)
				fail_msg("kaio_buf_ref did not return its argument");
			if (w[i].early_release)
				fail_msg("variant %d: the release ran while references were still held", variant);
		}
		if (variant == 0) {
			assert_int_equal(atomic_load(&r.released), 0);
			assert_int_equal(kaio_buf_len(b), BLK);
			kaio_buf_unref(b);
			assert_int_equal(atomic_load(&r.released), 1);
			assert_int_equal(atomic_load(&r.release_on_worker), 0);
		} else {
			assert_int_equal(atomic_load(&r.released), 1);
			assert_int_equal(atomic_load(&r.release_on_worker), 1);
		}
		free(r.mem);
	}
}

/* ---- kaio_ctx_wake from a signal handler, under load -------------------------- */

static kaio_ctx *ws_ctx;
static atomic_int ws_stop;
static atomic_int ws_done;        /* completions delivered to the worker */
static atomic_int ws_signals;     /* handler runs */
static atomic_int ws_worker_done;
static atomic_int ws_wake_bad;

static void ws_handler(int sig)
{
	int saved = errno;
	if (kaio_ctx_wake(ws_ctx) != 0)
		atomic_fetch_add(&ws_wake_bad, 1);
	atomic_fetch_add(&ws_signals, 1);
	errno = saved;
}

static void ws_cb(const struct kaio_event *ev)
{
	if (ev->res != BLK)
		note_error("signalled worker: callback res %lld", (long long)ev->res);
	atomic_fetch_add(&ws_done, 1);
}

enum { WS_CAP = 8 };

static void *ws_worker(void *p)
{
	kaio_buf *b = NULL;
	if (kaio_buf_alloc(&b, WS_CAP * BLK, 0) != 0) {
		note_error("kaio_buf_alloc failed");
		atomic_store(&ws_worker_done, 1);
		return NULL;
	}
	unsigned next = 0, rounds = 0;
	struct kaio_event ev[WS_CAP];
	while (!atomic_load(&ws_stop)) {
		while (kaio_ctx_inflight(ws_ctx) < WS_CAP) {
			int rc = kaio_read(ws_ctx, g_fd, (uint64_t)(next % NBLK) * BLK, b, (next % WS_CAP) * BLK, BLK,
					   next % 2 ? ws_cb : NULL, next);
			if (rc == -EAGAIN)
				break;
			if (rc != 0) {
				note_error("signalled worker: kaio_read = %d (%s)", rc, kaio_last_error());
				atomic_store(&ws_stop, 1);
				break;
			}
			next++;
		}
		/* Mostly non-blocking waits, so that the signals often land inside
		 * the library's wait path; every fourth round a blocking one. */
		int rc = 0;
		if (++rounds % 4 == 0)
			rc = kaio_wait(ws_ctx, ev, 1, WS_CAP, -1);
		else
			for (int k = 0; k < 64 && rc == 0; k++)
				rc = kaio_wait(ws_ctx, ev, 1, WS_CAP, 0);
		if (rc < 0) {
			/* The handler always wakes: a signal never leaves -EINTR. */
			note_error("signalled worker: kaio_wait = %d (%s)", rc, kaio_last_error());
			break;
		}
		for (int i = 0; i < rc; i++) {
			if (ev[i].res != BLK)
				note_error("signalled worker: res %lld", (long long)ev[i].res);
			kaio_buf_unref(ev[i].buf);
			atomic_fetch_add(&ws_done, 1);
		}
	}
	int64_t deadline = kt_now_ms() + 5000;
	while (kaio_ctx_inflight(ws_ctx) > 0 && kt_now_ms() < deadline) {
		int rc = kaio_wait(ws_ctx, ev, 1, WS_CAP, 1000);
		for (int i = 0; i < rc; i++) {
			kaio_buf_unref(ev[i].buf);
			atomic_fetch_add(&ws_done, 1);
		}
	}
	kaio_buf_unref(b);
	atomic_store(&ws_worker_done, 1);
	return NULL;
}

struct ws_signaller {
	pthread_t target;
	atomic_int sent;
};

static void *ws_signaller_main(void *p)
{
	struct ws_signaller *s = p;
	while (!atomic_load(&ws_stop)) {
		if (pthread_kill(s->target, SIGUSR1) == 0)
			atomic_fetch_add(&s->sent, 1);
		sleep_us(1000);
	}
	return NULL;
}

/* Contract: kaio_ctx_wake is async-signal-safe: a thread that submits and
 * reaps (kaio_wait, timeout -1) in a loop while another thread signals it
 * every ~1 ms, with a handler that calls kaio_ctx_wake on the same context,
 * keeps making progress for 1.5 s (a deadlock or a lost completion would
 * stall it: the watchdog fails after 10 s without progress). */
static void test_wake_signal_safe_under_load(void **state)
{
	ws_ctx = kt_ctx(WS_CAP, 0);
	atomic_store(&ws_stop, 0);
	atomic_store(&ws_done, 0);
	atomic_store(&ws_signals, 0);
	atomic_store(&ws_worker_done, 0);
	atomic_store(&ws_wake_bad, 0);
	atomic_store(&n_errors, 0);
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = ws_handler;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);

	pthread_t worker, sig;
	assert_int_equal(pthread_create(&worker, NULL, ws_worker, NULL), 0);
	struct ws_signaller s;
	s.target = worker;
	atomic_init(&s.sent, 0);
	assert_int_equal(pthread_create(&sig, NULL, ws_signaller_main, &s), 0);

	int64_t start = kt_now_ms(), last_progress = start;
	int last = 0, stalled = 0;
	while (!atomic_load(&ws_worker_done)) {
		sleep_us(10000);
		int64_t t = kt_now_ms();
		int d = atomic_load(&ws_done);
		if (d != last) {
			last = d;
			last_progress = t;
		}
		/* At least 1.5 s and 100 handled signals (a slow or serialising
		 * run, such as valgrind's, may need longer), at most 60 s. */
		if ((t - start >= 1500 && atomic_load(&ws_signals) >= 100) || t - start >= 60000)
			atomic_store(&ws_stop, 1);
		if (t - last_progress > 10000) {
			stalled = 1;
			break;
		}
	}
	atomic_store(&ws_stop, 1);
	pthread_join(sig, NULL); /* no signal after this */
	if (stalled) {
		pthread_detach(worker); /* stuck inside the library */
		fail_msg("the signalled thread made no progress for 10 s (%d completions, %d signals handled): "
			 "kaio_ctx_wake from a signal handler deadlocked or a completion was lost",
			 atomic_load(&ws_done), atomic_load(&ws_signals));
	}
	pthread_join(worker, NULL);
	sigaction(SIGUSR1, &old, NULL);
	check_no_errors();
	assert_int_equal(atomic_load(&ws_wake_bad), 0);
	assert_int_equal(kaio_ctx_inflight(ws_ctx), 0);
	EXPECT_RC(kaio_ctx_destroy(ws_ctx), 0);
	ws_ctx = NULL;
	print_message("# %d completions, %d signals sent, %d handled\n", atomic_load(&ws_done),
		      atomic_load(&s.sent), atomic_load(&ws_signals));
	if (atomic_load(&ws_signals) < 100)
		fail_msg("only %d signals were handled: the test did not test", atomic_load(&ws_signals));
	if (atomic_load(&ws_done) < 100)
		fail_msg("only %d completions", atomic_load(&ws_done));
}

/* ---- callbacks and release functions run with no library lock held ------------ */

/* Thread B, on request from a callback or release function running on the
 * reaping thread A, uses the same context: kaio_read (a submission),
 * kaio_poll, kaio_ctx_inflight and kaio_buf_unref. */
static struct {
	kaio_ctx *ctx;
	sem_t go, done;
	atomic_int quit;
	int read_rc, poll_rc;
	unsigned inflight;
	int64_t took_ms;
	int rounds;
} nl;
static atomic_int nl_handshakes; /* completed within 5 s, seen from A */
static atomic_int nl_timeouts;   /* A gave up waiting for B */

static void *nl_thread_b(void *p)
{
	for (;;) {
		kaio_buf *b = NULL;
		if (kaio_buf_alloc(&b, BLK, 0) != 0)
			note_error("kaio_buf_alloc failed");
		while (sem_wait(&nl.go) != 0 && errno == EINTR)
			;
		if (atomic_load(&nl.quit)) {
			kaio_buf_unref(b);
			return NULL;
		}
		int64_t t0 = kt_now_ms();
		nl.read_rc = kaio_read(nl.ctx, g_fd, 5 * BLK, b, 0, BLK, NULL, 5000 + (unsigned)nl.rounds);
		struct kaio_event ev[4];
		nl.poll_rc = kaio_poll(nl.ctx, ev, 4);
		for (int i = 0; i < nl.poll_rc; i++)
			kaio_buf_unref(ev[i].buf);
		nl.inflight = kaio_ctx_inflight(nl.ctx);
		kaio_buf_unref(b); /* its read holds its own reference */
		nl.took_ms = kt_now_ms() - t0;
		nl.rounds++;
		sem_post(&nl.done);
	}
}

/* Run on thread A from inside a delivery. */
static void nl_handshake(void)
{
	sem_post(&nl.go);
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	int rc;
	while ((rc = sem_timedwait(&nl.done, &until)) != 0 && errno == EINTR)
		;
	if (rc == 0)
		atomic_fetch_add(&nl_handshakes, 1);
	else
		atomic_fetch_add(&nl_timeouts, 1);
}

static void nl_cb(const struct kaio_event *ev)
{
	nl_handshake();
}

static void nl_noop_cb(const struct kaio_event *ev)
{
}

static void nl_release(void *data, size_t len, void *opaque)
{
	nl_handshake();
	free(data);
}

/* Contract: callbacks and release functions run with no library lock held:
 * while one runs on the reaping thread (the main thread here) and waits for
 * thread B, B completes kaio_read, kaio_poll, kaio_ctx_inflight and
 * kaio_buf_unref on the same context within 1 s.  Three deliveries: a
 * callback, the release of a callback's buffer (the operation's last
 * reference, dropped after its callback), and the release of a READV
 * vector's buffer delivered without a callback. */
static void test_callbacks_hold_no_lock(void **state)
{
	static const char *const what[] = {
		"a callback",
		"a release function run after a callback",
		"a release function run while delivering a READV event",
	};
	memset(&nl, 0, sizeof nl);
	nl.ctx = kt_ctx(8, 0);
	assert_int_equal(sem_init(&nl.go, 0, 0), 0);
	assert_int_equal(sem_init(&nl.done, 0, 0), 0);
	atomic_store(&n_errors, 0);
	pthread_t b;
	assert_int_equal(pthread_create(&b, NULL, nl_thread_b, NULL), 0);
	for (int variant = 0; variant < 3; variant++) {
		atomic_store(&nl_handshakes, 0);
		atomic_store(&nl_timeouts, 0);
		nl.took_ms = -1;
		nl.read_rc = nl.poll_rc = 1;
		if (variant == 0) {
			kaio_buf *buf = kt_buf(BLK);
			EXPECT_RC(kaio_read(nl.ctx, g_fd, 0, buf, 0, BLK, nl_cb, 1), 0);
			kaio_buf_unref(buf);
		} else {
			void *mem = NULL;
			assert_int_equal(posix_memalign(&mem, 4096, BLK), 0);
			kaio_buf *buf = NULL;
			EXPECT_RC(kaio_buf_wrap(&buf, mem, BLK, nl_release, NULL), 0);
			if (variant == 1) {
				EXPECT_RC(kaio_read(nl.ctx, g_fd, BLK, buf, 0, BLK, nl_noop_cb, 2), 0);
			} else {
				struct kaio_vec vec = { buf, 0, BLK };
				EXPECT_RC(kaio_readv(nl.ctx, g_fd, 2 * BLK, &vec, 1, NULL, 3), 0);
			}
			kaio_buf_unref(buf); /* the operation's reference is the last */
		}
		int64_t deadline = kt_now_ms() + 20000;
		while (atomic_load(&nl_handshakes) + atomic_load(&nl_timeouts) == 0) {
			struct kaio_event ev[4];
			int rc = kaio_wait(nl.ctx, ev, 1, 4, 1000);
			if (rc < 0)
				fail_msg("kaio_wait = %d (%s)", rc, kaio_last_error());
			for (int i = 0; i < rc; i++)
				kaio_buf_unref(ev[i].buf);
			if (kt_now_ms() > deadline)
				fail_msg("%s never ran", what[variant]);
		}
		/* B finishes (if it was blocked) once the delivery is over. */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 10;
		if (atomic_load(&nl_timeouts)) {
			if (sem_timedwait(&nl.done, &until) != 0)
				fail_msg("thread B never finished its calls, even after %s returned", what[variant]);
			fail_msg("while %s ran on the reaping thread, thread B's calls on the same context "
				 "did not complete within 5 s (they took %lld ms): a library lock is held",
				 what[variant], (long long)nl.took_ms);
		}
		if (nl.took_ms > 1000)
			fail_msg("while %s ran, thread B's calls took %lld ms", what[variant], (long long)nl.took_ms);
		if (nl.read_rc != 0)
			fail_msg("thread B's kaio_read while %s ran = %d", what[variant], nl.read_rc);
		if (nl.poll_rc < 0)
			fail_msg("thread B's kaio_poll while %s ran = %d", what[variant], nl.poll_rc);
		if (nl.inflight > 8)
			fail_msg("thread B's kaio_ctx_inflight while %s ran = %u", what[variant], nl.inflight);
		drain_bounded(nl.ctx, 5000);
		assert_int_equal(kaio_ctx_inflight(nl.ctx), 0);
	}
	atomic_store(&nl.quit, 1);
	sem_post(&nl.go);
	pthread_join(b, NULL);
	check_no_errors();
	EXPECT_RC(kaio_ctx_destroy(nl.ctx), 0);
	sem_destroy(&nl.go);
	sem_destroy(&nl.done);
}

/* ---- destroy while other threads are mid-reap ---------------------------------
 * Documented in kaio.h: kaio_ctx_destroy may run while other threads are
 * inside kaio_poll, kaio_wait or kaio_ctx_wake; it makes them return (a wait
 * with what it copied, possibly 0), waits for them, then drains as usual;
 * calls that start while it runs get -ESHUTDOWN, and after it the dead handle
 * is refused (-EINVAL).  Every operation is delivered at most once, each
 * with a callback exactly once, and every buffer is released exactly once. */

enum { DR_OPS = 48, DR_CAP = 64, DR_WAITERS = 2, DR_POLLERS = 1, DR_WAKERS = 1 };

static kaio_ctx *dr_ctx;
static atomic_int dr_cb[DR_OPS];
static atomic_int dr_ev[DR_OPS];
static atomic_int dr_rel[DR_OPS];
static atomic_int dr_started;

static void dr_release(void *data, size_t len, void *opaque)
{
	(void)len;
	atomic_fetch_add(&dr_rel[(uintptr_t)opaque], 1);
	free(data);
}

static void dr_callback(const struct kaio_event *ev)
{
	if (ev->user_data >= DR_OPS) {
		note_error("callback with unknown user_data %llu", (unsigned long long)ev->user_data);
		return;
	}
	if (ev->res != BLK)
		note_error("op %llu: res %lld", (unsigned long long)ev->user_data, (long long)ev->res);
	atomic_fetch_add(&dr_cb[ev->user_data], 1);
}

/* A reaper's last return code must say why it stopped: -ESHUTDOWN while
 * destroy ran, or -EINVAL once the handle was dead. */
static void dr_check_end(const char *who, int rc)
{
	if (rc != -ESHUTDOWN && rc != -EINVAL)
		note_error("%s ended with %d (%s), want -ESHUTDOWN or -EINVAL", who, rc,
			   kaio_last_error());
}

static void dr_count_events(const struct kaio_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		if (ev[i].user_data < DR_OPS)
			atomic_fetch_add(&dr_ev[ev[i].user_data], 1);
		else
			note_error("event with unknown user_data");
		kaio_buf_unref(ev[i].buf);
	}
}

static void *dr_waiter(void *p)
{
	(void)p;
	struct kaio_event ev[4];
	int rc;
	atomic_fetch_add(&dr_started, 1);
	/* min larger than anything that can complete: only a wake (from
	 * destroy) ends each wait */
	while ((rc = kaio_wait(dr_ctx, ev, 1000, 4, -1)) >= 0)
		dr_count_events(ev, rc);
	dr_check_end("kaio_wait", rc);
	return NULL;
}

static void *dr_poller(void *p)
{
	(void)p;
	struct kaio_event ev[4];
	int rc;
	atomic_fetch_add(&dr_started, 1);
	while ((rc = kaio_poll(dr_ctx, ev, 4)) >= 0) {
		dr_count_events(ev, rc);
		sched_yield();
	}
	dr_check_end("kaio_poll", rc);
	return NULL;
}

static void *dr_waker(void *p)
{
	(void)p;
	int rc;
	atomic_fetch_add(&dr_started, 1);
	while ((rc = kaio_ctx_wake(dr_ctx)) == 0)
		sleep_us(2000);
	dr_check_end("kaio_ctx_wake", rc);
	return NULL;
}

static void test_destroy_while_threads_reap(void **state)
{
	(void)state;
	for (int round = 0; round < 10; round++) {
		memset(dr_cb, 0, sizeof dr_cb);
		memset(dr_ev, 0, sizeof dr_ev);
		memset(dr_rel, 0, sizeof dr_rel);
		atomic_store(&dr_started, 0);
		dr_ctx = kt_ctx(DR_CAP, 0);
		pthread_t th[DR_WAITERS + DR_POLLERS + DR_WAKERS];
		int nth = 0;
		for (int i = 0; i < DR_WAITERS; i++)
			assert_int_equal(pthread_create(&th[nth++], NULL, dr_waiter, NULL), 0);
		for (int i = 0; i < DR_POLLERS; i++)
			assert_int_equal(pthread_create(&th[nth++], NULL, dr_poller, NULL), 0);
		for (int i = 0; i < DR_WAKERS; i++)
			assert_int_equal(pthread_create(&th[nth++], NULL, dr_waker, NULL), 0);
		while (atomic_load(&dr_started) < nth)
			sleep_us(1000);
		/* Half the operations with a callback, half without; the odd
		 * rounds destroy at once, with everything still in flight. */
		for (unsigned i = 0; i < DR_OPS; i++) {
			void *mem = NULL;
			assert_int_equal(posix_memalign(&mem, BLK, BLK), 0);
			kaio_buf *b = NULL;
			assert_int_equal(kaio_buf_wrap(&b, mem, BLK, dr_release, (void *)(uintptr_t)i), 0);
			int rc = kaio_read(dr_ctx, g_fd, (uint64_t)(i % NBLK) * BLK, b, 0, BLK,
					   i % 2 ? dr_callback : NULL, i);
			kaio_buf_unref(b);
			assert_int_equal(rc, 0);
		}
		if (round % 2 == 0)
			sleep_us(20000);
		assert_int_equal(kaio_ctx_destroy(dr_ctx), 0);
		for (int i = 0; i < nth; i++)
			pthread_join(th[i], NULL);
		check_no_errors();
		for (unsigned i = 0; i < DR_OPS; i++) {
			int cb = atomic_load(&dr_cb[i]), ev = atomic_load(&dr_ev[i]);
			int rel = atomic_load(&dr_rel[i]);
			if (i % 2 && (cb != 1 || ev != 0))
				fail_msg("round %d: op %u with a callback: %d callbacks, %d events", round,
					 i, cb, ev);
			if (i % 2 == 0 && (cb != 0 || ev > 1))
				fail_msg("round %d: op %u without a callback: %d callbacks, %d events",
					 round, i, cb, ev);
			if (rel != 1)
				fail_msg("round %d: op %u's buffer released %d times", round, i, rel);
		}
	}
}

/* ---- an event loop on the eventfd, with submitting threads ----------------------- */

/* Regression: with the ring read in user space, a reap that found nothing
 * in flight cleared the eventfd's count without looking at the ring again;
 * a read another thread submitted just then, and that completed before
 * that read of the eventfd, lost its signal, and an event loop (or a Go
 * or Python binding) waiting on kaio_ctx_fd() slept for ever with the
 * event in the ring.  Hole reads complete inside io_submit, which makes
 * the window easy to hit: the old code hung within seconds here.  A
 * thread keeps one read of a hole in flight and waits for the loop to
 * hand it its completion; the loop waits on the eventfd, edge-triggered,
 * and reaps with kaio_poll until it finds nothing.  A lost wake-up shows as
 * an idle eventfd while an event that completed long before is still
 * there to reap. */
enum { EL_THREADS = 1, EL_IDLE_MS = 1000, EL_RUN_MS = 2000 };
static kaio_ctx *el_ctx;
static int el_fd;
static sem_t el_sem[EL_THREADS];
static atomic_int el_stop, el_exited;
static atomic_long el_done;
/* Per thread: when the read of generation el_gen returned from kaio_read
 * (a hole: it had completed by then); el_gen is stored after el_done_at. */
static _Atomic int64_t el_done_at[EL_THREADS];
static _Atomic uint64_t el_gen[EL_THREADS];

static void spin_us(unsigned us)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000 < (long)us);
}

static void *el_submitter(void *p)
{
	const long t = (long)p;
	kaio_buf *b = NULL;
	if (kaio_buf_alloc(&b, BLK, 0) < 0) {
		note_error("kaio_buf_alloc: %s", kaio_last_error());
		atomic_fetch_add(&el_exited, 1);
		return NULL;
	}
	for (uint64_t gen = 1; !atomic_load(&el_stop); gen++) {
		int rc = kaio_read(el_ctx, el_fd, (uint64_t)t * BLK, b, 0, BLK, NULL,
				   gen * EL_THREADS + (uint64_t)t);
		if (rc < 0) {
			note_error("kaio_read: %d (%s)", rc, kaio_last_error());
			break;
		}
		atomic_store(&el_done_at[t], kt_now_ms());
		atomic_store(&el_gen[t], gen);
		while (sem_wait(&el_sem[t]) < 0 && errno == EINTR)
			;
		atomic_fetch_add(&el_done, 1);
	}
	kaio_buf_unref(b);
	atomic_fetch_add(&el_exited, 1);
	return NULL;
}

/* Delivers what kaio_poll copies until a call finds nothing (so that a
 * call with nothing in flight races with the thread just woken, which is
 * where the signal was lost).  idle_since: when a wait on the eventfd that
 * ended without readiness began, else 0; an event whose read was submitted
 * (and, on a hole, completed) before then is a lost wake-up. */
static void el_reap(int64_t idle_since)
{
	static unsigned seed = 1;
	struct kaio_event ev[16];
	int n;
	do {
		n = kaio_poll(el_ctx, ev, 16);
		if (n < 0)
			fail_msg("kaio_poll = %d (%s)", n, kaio_last_error());
		for (int i = 0; i < n; i++) {
			const uint64_t t = ev[i].user_data % EL_THREADS;
			const uint64_t gen = ev[i].user_data / EL_THREADS;
			/* Judged only once its thread has recorded when it returned. */
			const bool known = atomic_load(&el_gen[t]) == gen;
			if (idle_since && known && atomic_load(&el_done_at[t]) < idle_since)
				fail_msg("lost wake-up after %ld completions: the eventfd stayed idle for "
					 "%lld ms while a read that completed before then waited in the "
					 "context", atomic_load(&el_done),
					 (long long)(kt_now_ms() - idle_since));
			if (ev[i].res != BLK)
				fail_msg("a read of a hole returned %lld", (long long)ev[i].res);
			kaio_buf_unref(ev[i].buf);
			sem_post(&el_sem[t]);
		}
		/* Look again after 0-40 us: sweeps the next call across the
		 * moment a woken thread submits. */
		if (n > 0)
			spin_us(rand_r(&seed) % 40);
	} while (n > 0);
}

static void test_eventfd_loop_with_submitting_threads(void **state)
{
	(void)state;
	el_fd = open(kt_path("threads-holes"), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
	assert_true(el_fd >= 0);
	assert_int_equal(ftruncate(el_fd, 1 << 20), 0);
	el_ctx = kt_ctx(8, 0);
	const int efd = kaio_ctx_fd(el_ctx);
	assert_true(efd >= 0);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	assert_true(ep >= 0);
	struct epoll_event want = {.events = EPOLLIN | EPOLLET};
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &want), 0);
	atomic_store(&el_stop, 0);
	atomic_store(&el_exited, 0);
	atomic_store(&el_done, 0);
	pthread_t th[EL_THREADS];
	for (long t = 0; t < EL_THREADS; t++) {
		assert_int_equal(sem_init(&el_sem[t], 0, 0), 0);
		atomic_store(&el_gen[t], 0);
		assert_int_equal(pthread_create(&th[t], NULL, el_submitter, (void *)t), 0);
	}
	const int64_t end = kt_now_ms() + EL_RUN_MS;
	while (kt_now_ms() < end) {
		struct epoll_event got;
		const int64_t since = kt_now_ms();
		int r = epoll_wait(ep, &got, 1, EL_IDLE_MS);
		if (r < 0 && errno == EINTR)
			continue;
		assert_true(r >= 0);
		/* Idle: if the eventfd is readable now, something came just at the
		 * end of the wait; else what was done before the wait was missed. */
		struct pollfd p = {efd, POLLIN, 0};
		el_reap(r == 0 && poll(&p, 1, 0) == 0 ? since : 0);
	}
	atomic_store(&el_stop, 1);
	while (atomic_load(&el_exited) < EL_THREADS) {
		struct kaio_event ev[16];
		int n = kaio_wait(el_ctx, ev, 0, 16, 10);
		for (int i = 0; i < n; i++) {
			kaio_buf_unref(ev[i].buf);
			sem_post(&el_sem[ev[i].user_data % EL_THREADS]);
		}
	}
	for (int t = 0; t < EL_THREADS; t++) {
		pthread_join(th[t], NULL);
		sem_destroy(&el_sem[t]);
	}
	check_no_errors();
	assert_true(atomic_load(&el_done) > 0);
	assert_int_equal(kaio_ctx_inflight(el_ctx), 0);
	close(ep);
	assert_int_equal(kaio_ctx_destroy(el_ctx), 0);
	close(el_fd);
}

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exactly_once_across_threads),
		cmocka_unit_test(test_wake_releases_all_waiters),
		cmocka_unit_test(test_concurrent_ref_unref),
		cmocka_unit_test(test_wake_signal_safe_under_load),
		cmocka_unit_test(test_callbacks_hold_no_lock),
		cmocka_unit_test(test_destroy_while_threads_reap),
		cmocka_unit_test(test_eventfd_loop_with_submitting_threads),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
