/* Regression tests: each reproduces a bug found in review before its fix
 * (see the git log), and fails if it comes back. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int data_fd;

/* ---- a blocked kaio_wait with room is woken by events another thread left
 * queued, even when a third reap drained the eventfd in between ---------- */

struct waiter {
	kaio_ctx *ctx;
	int timeout_ms;
	unsigned max;
	int rc;
	double seconds;
};

static void *wait_thread(void *arg)
{
	struct waiter *w = arg;
	struct kaio_event ev[8];
	double t0 = now_s();
	w->rc = kaio_wait(w->ctx, ev, 1, w->max, w->timeout_ms);
	w->seconds = now_s() - t0;
	for (int i = 0; i < w->rc; i++)
		kaio_buf_unref(ev[i].buf);
	return NULL;
}

static void submit_reads(kaio_ctx *ctx, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		kaio_buf *b = kt_buf(4096);
		assert_int_equal(kaio_read(ctx, data_fd, 4096ull * i, b, 0, 4096, NULL, i), 0);
		kaio_buf_unref(b);
	}
}

static void test_queued_events_wake_blocked_waiter(void **state)
{
	kaio_ctx *ctx = kt_ctx(64, 0);
	for (int round = 0; round < 10; round++) {
		struct waiter w = {ctx, 3000, 8, 0, 0};
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, wait_thread, &w), 0);
		usleep(30000); /* the waiter is asleep in poll(2) */
		submit_reads(ctx, 3);
		struct kaio_event ev;
		int got = 0;
		for (double t0 = now_s(); !got && now_s() - t0 < 5;) {
			int n = kaio_poll(ctx, &ev, 1); /* copies 1, queues the rest */
			assert_true(n >= 0);
			if (n) {
				got = 1;
				kaio_buf_unref(ev.buf);
			}
		}
		kaio_poll(ctx, NULL, 0); /* a callbacks-only reaper drains the eventfd */
		pthread_join(th, NULL);
		kt_drain(ctx);
		if (!got)
			continue; /* the waiter took them all itself: nothing to test */
		if (w.seconds > 1.0)
			fail_msg("round %d: the waiter slept %.2f s with events queued for it (got %d)",
				 round, w.seconds, w.rc);
	}
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
}

/* ---- a signal ends a kaio_wait even while another waiter is owed a wake
 * (the wake eventfd stays readable until that waiter returns) ------------ */

static int in_slow_cb;  /* atomic: __atomic_* */
static int release_cb;  /* atomic: the test lets the callback return */
static void slow_cb(const struct kaio_event *ev)
{
	__atomic_store_n(&in_slow_cb, 1, __ATOMIC_SEQ_CST);
	/* stay in the callback (so the wake stays owed) until the test is done
	 * with the second waiter, however slowly it runs (valgrind) */
	for (int i = 0; i < 10000 && !__atomic_load_n(&release_cb, __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	__atomic_store_n(&in_slow_cb, 2, __ATOMIC_SEQ_CST);
}

struct signalled_waiter {
	struct waiter w;
	int done; /* atomic */
};

static void *signalled_wait_thread(void *arg)
{
	struct signalled_waiter *sw = arg;
	wait_thread(&sw->w);
	__atomic_store_n(&sw->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *owed_waiter(void *arg)
{
	kaio_ctx *ctx = arg;
	kaio_wait(ctx, NULL, 2, 0, 5000);
	return NULL;
}

static void on_usr1(int sig)
{
	(void)sig;
}

static void test_signal_ends_wait_while_wake_owed(void **state)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1; /* no SA_RESTART */
	sigaction(SIGUSR1, &sa, &old);
	kaio_ctx *ctx = kt_ctx(8, 0);
	pthread_t a, b;
	__atomic_store_n(&in_slow_cb, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&release_cb, 0, __ATOMIC_SEQ_CST);
	assert_int_equal(pthread_create(&a, NULL, owed_waiter, ctx), 0);
	usleep(30000);
	kaio_buf *buf = kt_buf(4096);
	assert_int_equal(kaio_read(ctx, data_fd, 0, buf, 0, 4096, slow_cb, 0), 0);
	kaio_buf_unref(buf);
	while (!__atomic_load_n(&in_slow_cb, __ATOMIC_SEQ_CST))
		usleep(1000);
	assert_int_equal(kaio_ctx_wake(ctx), 0); /* owed to a, busy in its callback */
	struct signalled_waiter sw = {{ctx, 3000, 0, 0, 0}, 0};
	assert_int_equal(pthread_create(&b, NULL, signalled_wait_thread, &sw), 0);
	/* Signal b until it returns: a signal that lands before b is asleep
	 * is lost, so one is not enough on a slow machine. The bug this guards
	 * against swallowed every signal while the wake was owed, so b would
	 * sleep its whole 3 s timeout and return 0. */
	for (int i = 0; i < 125 && !__atomic_load_n(&sw.done, __ATOMIC_SEQ_CST); i++) {
		pthread_kill(b, SIGUSR1);
		usleep(20000);
	}
	pthread_join(b, NULL);
	int still_owed = __atomic_load_n(&in_slow_cb, __ATOMIC_SEQ_CST) == 1;
	__atomic_store_n(&release_cb, 1, __ATOMIC_SEQ_CST);
	pthread_join(a, NULL);
	sigaction(SIGUSR1, &old, NULL);
	if (sw.w.rc != -EINTR || !still_owed)
		fail_msg("kaio_wait returned %d after %.2f s (wake still owed: %d); a signal should end it with -EINTR",
			 sw.w.rc, sw.w.seconds, still_owed);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
}

/* ---- a vector operation stops counting against capacity before its
 * references are dropped (a release function may submit) ---------------- */

static kaio_ctx *cap_ctx;
static kaio_buf *other_buf;
static int follow_rc = 999;
static void submit_from_release(void *data, size_t len, void *opaque)
{
	follow_rc = kaio_read(cap_ctx, data_fd, 0, other_buf, 0, 4096, NULL, 7);
	free(data);
}

static void test_vector_release_may_submit_at_capacity(void **state)
{
	cap_ctx = kt_ctx(1, 0);
	other_buf = kt_buf(4096);
	void *mem = NULL;
	assert_int_equal(posix_memalign(&mem, 4096, 4096), 0);
	kaio_buf *w = NULL;
	assert_int_equal(kaio_buf_wrap(&w, mem, 4096, submit_from_release, NULL), 0);
	struct kaio_vec v = {w, 0, 4096};
	assert_int_equal(kaio_readv(cap_ctx, data_fd, 0, &v, 1, NULL, 1), 0);
	kaio_buf_unref(w); /* the operation holds the only reference now */
	struct kaio_event ev;
	kt_wait_n(cap_ctx, &ev, 1);
	assert_null(ev.buf);
	if (follow_rc != 0)
		fail_msg("a release function run at delivery could not submit at capacity 1: %d (%s)",
			 follow_rc, kaio_last_error());
	kt_drain(cap_ctx);
	assert_int_equal(kaio_ctx_destroy(cap_ctx), 0);
	kaio_buf_unref(other_buf);
}

/* ---- kaio_ctx_wake's refusals need no formatting (async-signal-safe) --- */

static void test_wake_refusals_are_fixed_sentences(void **state)
{
	kaio_ctx *ctx = kt_ctx(1, 0);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(kaio_ctx_wake(ctx), -EINVAL);
	const char *first = kaio_last_error();
	assert_true(first[0] != '\0');
	assert_int_equal(kaio_ctx_wake(NULL), -EINVAL);
	/* The same static sentence: nothing was formatted into a buffer. */
	assert_ptr_equal(kaio_last_error(), first);
}

/* ---- fork() while other threads allocate and free handles: the child can
 * still use the handle pools (no lock inherited held) ------------------- */

static int churning; /* atomic: __atomic_* */
static void *churn(void *arg)
{
	while (__atomic_load_n(&churning, __ATOMIC_SEQ_CST)) {
		kaio_buf *b = NULL;
		char mem[64];
		if (kaio_buf_wrap(&b, mem, sizeof mem, NULL, NULL) == 0)
			kaio_buf_unref(b);
	}
	return NULL;
}

static int under_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");
	return pre && strstr(pre, "vgpreload") != NULL;
}

static void test_fork_while_handles_churn(void **state)
{
	/* valgrind runs one thread at a time and can itself hang a child
	 * forked while other threads run: this test is for native runs. */
	if (under_valgrind())
		skip();
	pthread_t th[2];
	__atomic_store_n(&churning, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, churn, NULL), 0);
	int stuck = 0;
	for (int round = 0; round < 30 && !stuck; round++) {
		/* The child reports through a pipe: under valgrind its exit
		 * status also carries leak reports (other threads' handles). */
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			alarm(5); /* a child deadlocked on the pool dies of SIGALRM */
			kaio_buf *b = NULL;
			char mem[64];
			if (kaio_buf_wrap(&b, mem, sizeof mem, NULL, NULL) == 0) {
				kaio_buf_unref(b);
				if (write(p[1], "k", 1) != 1)
					_exit(3);
			}
			_exit(0);
		}
		close(p[1]);
		char c = 0;
		ssize_t n = read(p[0], &c, 1);
		close(p[0]);
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (n != 1 || c != 'k')
			stuck = 1;
	}
	__atomic_store_n(&churning, 0, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	if (stuck)
		fail_msg("a child forked while other threads used the handle pool could not use it");
}

static int group_setup(void **state)
{
	data_fd = kt_make_file("regressions", 1 << 20, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	close(data_fd);
	return 0;
}

/* ---- one kaio_wait ends on its timeout (or a wake) even while callbacks
 * resubmit work the kernel completes at once: a reap pass is bounded
 * (it used to loop for as long as each io_getevents/ring read came back
 * full, so the wait ran until the callbacks stopped) ---------------------- */

static kaio_ctx *busy_ctx;
static int busy_fd;
static kaio_buf *busy_buf;
static double busy_until;
static long busy_count;
static void busy_cb(const struct kaio_event *ev)
{
	busy_count++;
	if (now_s() < busy_until)
		kaio_read(busy_ctx, busy_fd, (ev->user_data % 256) * 4096, busy_buf,
			  (ev->user_data % 128) * 4096, 4096, busy_cb, ev->user_data + 128);
}

static void test_wait_bounded_while_callbacks_resubmit(void **state)
{
	const char *path = kt_path("holes");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0); /* a hole: reads complete at once */
	busy_fd = fd;
	busy_ctx = kt_ctx(128, 0);
	busy_buf = kt_buf(128 * 4096);
	busy_until = now_s() + 4.0;
	busy_count = 0;
	for (unsigned i = 0; i < 128; i++)
		assert_int_equal(kaio_read(busy_ctx, fd, (i % 256) * 4096ull, busy_buf, i * 4096ull, 4096,
					   busy_cb, i), 0);
	double t0 = now_s();
	int rc = kaio_wait(busy_ctx, NULL, INT_MAX, 0, 300);
	double took = now_s() - t0;
	busy_until = 0; /* stop resubmitting */
	kt_drain(busy_ctx);
	assert_int_equal(kaio_ctx_destroy(busy_ctx), 0);
	kaio_buf_unref(busy_buf);
	close(fd);
	if (rc != 0 || took > 2.0)
		fail_msg("kaio_wait(timeout 300 ms) returned %d after %.2f s while %ld callbacks ran",
			 rc, took, busy_count);
}

int main(void)
{
	kt_require_aio();
	alarm(300);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queued_events_wake_blocked_waiter),
		cmocka_unit_test(test_signal_ends_wait_while_wake_owed),
		cmocka_unit_test(test_vector_release_may_submit_at_capacity),
		cmocka_unit_test(test_wake_refusals_are_fixed_sentences),
		cmocka_unit_test(test_fork_while_handles_churn),
		cmocka_unit_test(test_wait_bounded_while_callbacks_resubmit),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
