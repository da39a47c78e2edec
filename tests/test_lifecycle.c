/* Integration tests for the context's life: kaio_ctx_destroy with operations
 * in flight (callbacks, discarded events, references, -ESHUTDOWN, -EBUSY),
 * and fork() (-ECHILD in the child, the parent unaffected, MADV_DONTFORK
 * buffers).  Real files with O_DIRECT, the public API only.  Child processes
 * never call cmocka: they report through their exit status. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define CHUNK (64u * 1024)
#define FILE_SIZE (8u << 20)

/* Whether fd becomes readable within timeout_ms. */
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

static int g_fd = -1; /* FILE_SIZE bytes of pattern, O_RDWR|O_DIRECT */

static int group_setup(void **state)
{
	g_fd = kt_make_file("lifecycle.dat", FILE_SIZE, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	if (g_fd >= 0)
		close(g_fd);
	g_fd = -1;
	return 0;
}

/* ---- tracked operations ------------------------------------------------------- */

/* One operation's buffer (a kaio_buf_wrap over heap memory) and what happened
 * to it: when its callback ran and when its release ran, on a global clock. */
struct tracked {
	void *mem;
	size_t len;
	kaio_buf *handle;
	uint64_t offset;   /* file offset read into mem */
	int64_t expect_res;
	int fill_on_release; /* release overwrites the memory with 0xA5 */
	atomic_int cb_runs;
	atomic_int released;
	atomic_long cb_seq;
	atomic_long rel_seq;
	int64_t res;
	int data_ok;
	int cb_during_destroy;
};

static atomic_long clock_seq;
static atomic_int destroying; /* set around kaio_ctx_destroy */

static void tracked_release(void *data, size_t len, void *opaque)
{
	struct tracked *t = opaque;
	if (data != t->mem || len != t->len)
		atomic_fetch_add(&t->released, 1000);
	atomic_store(&t->rel_seq, atomic_fetch_add(&clock_seq, 1) + 1);
	if (t->fill_on_release)
		memset(t->mem, 0xA5, t->len);
	atomic_fetch_add(&t->released, 1);
}

static kaio_buf *tracked_new(struct tracked *t, size_t len)
{
	memset(t, 0, sizeof *t);
	t->len = len;
	assert_int_equal(posix_memalign(&t->mem, 4096, len), 0);
	memset(t->mem, 0, len);
	EXPECT_RC(kaio_buf_wrap(&t->handle, t->mem, len, tracked_release, t), 0);
	return t->handle;
}

static void tracked_cb(const struct kaio_event *ev)
{
	struct tracked *t = (struct tracked *)(uintptr_t)ev->user_data;
	atomic_store(&t->cb_seq, atomic_fetch_add(&clock_seq, 1) + 1);
	t->res = ev->res;
	t->cb_during_destroy = atomic_load(&destroying);
	size_t n = ev->res > 0 ? (size_t)ev->res : 0;
	t->data_ok = ev->buf == t->handle && atomic_load(&t->released) == 0 &&
		     kt_check(kaio_buf_data(ev->buf), n, t->offset) == 0;
	atomic_fetch_add(&t->cb_runs, 1);
}

static void tracked_free(struct tracked *t)
{
	free(t->mem);
	t->mem = NULL;
}

/* ---- destroy ------------------------------------------------------------------------ */

/* Contract: kaio_ctx_destroy waits for every operation in flight, runs each
 * callback with the real result, then drops every buffer reference (a wrapped
 * buffer's release runs exactly once, after its operation's callback), all
 * before it returns. */
static void test_destroy_runs_callbacks(void **state)
{
	enum { N = 24 };
	kaio_ctx *ctx = kt_ctx(64, 0);
	static struct tracked t[N + 2];
	for (unsigned i = 0; i < N; i++) {
		kaio_buf *b = tracked_new(&t[i], CHUNK);
		t[i].offset = (uint64_t)i * 3 * CHUNK % FILE_SIZE;
		t[i].expect_res = CHUNK;
		EXPECT_RC(kaio_read(ctx, g_fd, t[i].offset, b, 0, CHUNK, tracked_cb, (uintptr_t)&t[i]), 0);
		kaio_buf_unref(b); /* the operation holds its own */
	}
	/* the real result: crossing end of file, and wholly past it */
	kaio_buf *b = tracked_new(&t[N], 2 * BLK);
	t[N].offset = FILE_SIZE - BLK;
	t[N].expect_res = BLK;
	EXPECT_RC(kaio_read(ctx, g_fd, t[N].offset, b, 0, 2 * BLK, tracked_cb, (uintptr_t)&t[N]), 0);
	kaio_buf_unref(b);
	b = tracked_new(&t[N + 1], BLK);
	t[N + 1].offset = FILE_SIZE + CHUNK;
	t[N + 1].expect_res = 0;
	EXPECT_RC(kaio_read(ctx, g_fd, t[N + 1].offset, b, 0, BLK, tracked_cb, (uintptr_t)&t[N + 1]), 0);
	kaio_buf_unref(b);
	assert_int_equal(kaio_ctx_inflight(ctx), N + 2);

	atomic_store(&destroying, 1);
	int rc = kaio_ctx_destroy(ctx);
	atomic_store(&destroying, 0);
	if (rc != 0)
		fail_msg("kaio_ctx_destroy with %d operations in flight = %d (%s)", N + 2, rc, kaio_last_error());

	for (unsigned i = 0; i < N + 2; i++) {
		if (atomic_load(&t[i].cb_runs) != 1)
			fail_msg("operation %u: callback ran %d times during destroy", i, atomic_load(&t[i].cb_runs));
		if (t[i].res != t[i].expect_res)
			fail_msg("operation %u: callback saw res %lld, expected %lld", i, (long long)t[i].res,
				 (long long)t[i].expect_res);
		if (!t[i].data_ok)
			fail_msg("operation %u: callback saw wrong data, buffer, or an already released buffer", i);
		assert_true(t[i].cb_during_destroy);
		if (atomic_load(&t[i].released) != 1)
			fail_msg("operation %u: release ran %d times by the time destroy returned", i,
				 atomic_load(&t[i].released));
		if (atomic_load(&t[i].rel_seq) <= atomic_load(&t[i].cb_seq))
			fail_msg("operation %u: the buffer was released before its callback ran", i);
		tracked_free(&t[i]);
	}
}

/* Contract: operations submitted without a callback are waited for, their
 * references dropped and their events discarded by kaio_ctx_destroy (also
 * events already reaped but left queued beyond max); events already copied
 * out keep their reference past the context. */
static void test_destroy_discards_events(void **state)
{
	enum { N = 16 };
	kaio_ctx *ctx = kt_ctx(64, 0);
	static struct tracked t[N + 2];
	for (unsigned i = 0; i < N; i++) {
		kaio_buf *b = tracked_new(&t[i], CHUNK);
		t[i].offset = (uint64_t)i * CHUNK;
		EXPECT_RC(kaio_read(ctx, g_fd, t[i].offset, b, 0, CHUNK, NULL, i), 0);
		kaio_buf_unref(b);
	}
	kaio_buf *v0 = tracked_new(&t[N], BLK);
	kaio_buf *v1 = tracked_new(&t[N + 1], BLK);
	struct kaio_vec vec[2] = { { v0, 0, BLK }, { v1, 0, BLK } };
	EXPECT_RC(kaio_readv(ctx, g_fd, 0, vec, 2, NULL, 1000), 0);
	kaio_buf_unref(v0);
	kaio_buf_unref(v1);
	kt_sleep_ms(100);
	/* Take two; the others finished and may sit queued in the library. */
	struct kaio_event held[2];
	int nheld = kaio_poll(ctx, held, 2);
	if (nheld < 0)
		fail_msg("kaio_poll = %d (%s)", nheld, kaio_last_error());
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);

	for (unsigned i = 0; i < N + 2; i++) {
		assert_int_equal(atomic_load(&t[i].cb_runs), 0);
		int is_held = 0;
		for (int k = 0; k < nheld; k++)
			if (held[k].buf != NULL && held[k].buf == t[i].handle)
				is_held = 1;
		int want = is_held ? 0 : 1;
		if (atomic_load(&t[i].released) != want)
			fail_msg("buffer %u (%s): released %d times after destroy, expected %d", i,
				 is_held ? "its event is held by the caller" : "discarded",
				 atomic_load(&t[i].released), want);
	}
	/* The held events' buffers outlive the context. */
	for (int k = 0; k < nheld; k++) {
		if (held[k].buf == NULL) {
			assert_int_equal(held[k].op, KAIO_OP_READV);
			continue;
		}
		assert_int_equal(held[k].res, CHUNK);
		assert_int_equal(kt_check(kaio_buf_data(held[k].buf), CHUNK, held[k].offset), 0);
		struct tracked *owner = NULL;
		for (unsigned i = 0; i < N; i++)
			if (t[i].handle == held[k].buf)
				owner = &t[i];
		assert_non_null(owner);
		kaio_buf_unref(held[k].buf);
		assert_int_equal(atomic_load(&owner->released), 1);
	}
	for (unsigned i = 0; i < N + 2; i++)
		tracked_free(&t[i]);
}

/* What a callback or release saw when it tried to use the context while
 * destroy was running. */
struct reentry {
	int runs;
	int read_rc, write_rc, readv_rc, submit_rc, sync_rc;
	int poll_rc, wait_rc, destroy_rc;
	int msgs_ok;
};
static struct reentry cb_seen[8];
static atomic_int cb_seen_n;
static struct reentry rel_seen;
static kaio_buf *extra_buf; /* the buffer they try to submit */
static kaio_ctx *life_ctx;

static void check_msg(struct reentry *r)
{
	if (kaio_last_error()[0] == '\0')
		r->msgs_ok = 0;
}

static void try_everything(kaio_ctx *ctx, struct reentry *r, int submissions)
{
	r->msgs_ok = 1;
	if (submissions) {
		r->read_rc = kaio_read(ctx, g_fd, 0, extra_buf, 0, BLK, NULL, 1);
		check_msg(r);
		r->write_rc = kaio_write(ctx, g_fd, 0, extra_buf, 0, BLK, NULL, 2);
		check_msg(r);
		struct kaio_vec vec = { extra_buf, 0, BLK };
		r->readv_rc = kaio_readv(ctx, g_fd, 0, &vec, 1, NULL, 3);
		check_msg(r);
		struct kaio_op op = { .op = KAIO_OP_READ, .fd = g_fd, .len = BLK, .user_data = 4,
				      .buf = extra_buf };
		r->submit_rc = kaio_submit(ctx, &op, 1);
		check_msg(r);
		r->sync_rc = kaio_sync(ctx, g_fd, KAIO_SYNC_DATA, NULL, 5);
		check_msg(r);
	}
	struct kaio_event ev[2];
	r->poll_rc = kaio_poll(ctx, ev, 2);
	check_msg(r);
	r->wait_rc = kaio_wait(ctx, ev, 1, 2, 50);
	check_msg(r);
	r->destroy_rc = kaio_ctx_destroy(ctx);
	check_msg(r);
	r->runs++;
}

static void shutdown_cb(const struct kaio_event *ev)
{
	int i = atomic_fetch_add(&cb_seen_n, 1);
	if (i < 8)
		try_everything(ev->ctx, &cb_seen[i], 1);
}

static void reentering_release(void *data, size_t len, void *opaque)
{
	if (life_ctx)
		try_everything(life_ctx, &rel_seen, 0);
	tracked_release(data, len, opaque);
}

/* Contract: while destroy runs, submissions from its callbacks return
 * -ESHUTDOWN and take nothing; kaio_poll, kaio_wait and kaio_ctx_destroy from
 * its callbacks and from the release functions it runs return -EBUSY. */
static void test_destroy_reentry(void **state)
{
	enum { N = 3 };
	kaio_ctx *ctx = kt_ctx(8, 0);
	life_ctx = NULL;
	struct tracked x, r;
	extra_buf = tracked_new(&x, BLK);
	memset(cb_seen, 0, sizeof cb_seen);
	memset(&rel_seen, 0, sizeof rel_seen);
	atomic_store(&cb_seen_n, 0);
	kaio_buf *b = kt_buf(N * BLK);
	for (unsigned i = 0; i < N; i++)
		EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, shutdown_cb, i), 0);
	kaio_buf_unref(b);
	/* An operation without a callback whose buffer's release re-enters. */
	memset(&r, 0, sizeof r);
	r.len = BLK;
	assert_int_equal(posix_memalign(&r.mem, 4096, BLK), 0);
	EXPECT_RC(kaio_buf_wrap(&r.handle, r.mem, BLK, reentering_release, &r), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 0, r.handle, 0, BLK, NULL, 99), 0);
	kaio_buf_unref(r.handle);
	assert_int_equal(kaio_ctx_inflight(ctx), N + 1);

	life_ctx = ctx;
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	life_ctx = NULL;

	assert_int_equal(atomic_load(&cb_seen_n), N);
	for (int i = 0; i < N; i++) {
		struct reentry *e = &cb_seen[i];
		if (e->read_rc != -ESHUTDOWN || e->write_rc != -ESHUTDOWN || e->readv_rc != -ESHUTDOWN ||
		    e->submit_rc != -ESHUTDOWN || e->sync_rc != -ESHUTDOWN)
			fail_msg("submissions from a callback during destroy: read %d, write %d, readv %d, submit %d, sync %d; expected -ESHUTDOWN (%d)",
				 e->read_rc, e->write_rc, e->readv_rc, e->submit_rc, e->sync_rc, -ESHUTDOWN);
		if (e->poll_rc != -EBUSY || e->wait_rc != -EBUSY || e->destroy_rc != -EBUSY)
			fail_msg("from a callback during destroy: kaio_poll %d, kaio_wait %d, kaio_ctx_destroy %d; expected -EBUSY (%d)",
				 e->poll_rc, e->wait_rc, e->destroy_rc, -EBUSY);
		if (!e->msgs_ok)
			fail_msg("a refusal inside destroy left kaio_last_error() empty");
	}
	if (rel_seen.runs != 1)
		fail_msg("the re-entering release ran %d times", rel_seen.runs);
	if (rel_seen.poll_rc != -EBUSY || rel_seen.wait_rc != -EBUSY || rel_seen.destroy_rc != -EBUSY)
		fail_msg("from a release run by destroy: kaio_poll %d, kaio_wait %d, kaio_ctx_destroy %d; expected -EBUSY (%d)",
			 rel_seen.poll_rc, rel_seen.wait_rc, rel_seen.destroy_rc, -EBUSY);
	if (!rel_seen.msgs_ok)
		fail_msg("a refusal inside a release left kaio_last_error() empty");
	assert_int_equal(atomic_load(&r.released), 1);
	/* The refused submissions took no reference: ours is the last. */
	assert_int_equal(atomic_load(&x.released), 0);
	assert_int_equal(atomic_load(&x.cb_runs), 0);
	kaio_buf_unref(extra_buf);
	extra_buf = NULL;
	assert_int_equal(atomic_load(&x.released), 1);
	tracked_free(&x);
	tracked_free(&r);
}

/* Contract: after kaio_ctx_destroy the kernel holds no pointer into any
 * buffer: once every release has run (before destroy returns), no I/O lands
 * in the memory any more. */
static void test_destroy_kernel_holds_no_pointer(void **state)
{
	enum { N = 8, BIG = 1u << 20 };
	kaio_ctx *ctx = kt_ctx(16, 0);
	static struct tracked t[N];
	for (unsigned i = 0; i < N; i++) {
		kaio_buf *b = tracked_new(&t[i], BIG);
		t[i].fill_on_release = 1;
		t[i].offset = (uint64_t)i * BIG;
		t[i].expect_res = BIG;
		EXPECT_RC(kaio_read(ctx, g_fd, t[i].offset, b, 0, BIG, i % 2 ? tracked_cb : NULL,
				    i % 2 ? (uintptr_t)&t[i] : i), 0);
		kaio_buf_unref(b);
	}
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	for (unsigned i = 0; i < N; i++) {
		if (atomic_load(&t[i].released) != 1)
			fail_msg("buffer %u: release had run %d times when destroy returned", i,
				 atomic_load(&t[i].released));
		if (i % 2) {
			assert_int_equal(atomic_load(&t[i].cb_runs), 1);
			assert_int_equal(t[i].res, BIG);
			assert_true(t[i].data_ok);
		}
	}
	/* Any read still in flight would now overwrite the 0xA5 fill. */
	kt_sleep_ms(200);
	for (unsigned i = 0; i < N; i++) {
		const unsigned char *m = t[i].mem;
		for (size_t k = 0; k < BIG; k++)
			if (m[k] != 0xA5)
				fail_msg("buffer %u byte %zu was written after its release (I/O outlived destroy)", i,
					 k);
		tracked_free(&t[i]);
	}
}

/* Contract: kaio_ctx_destroy of an idle context (fresh, or drained) returns 0
 * and runs nothing. */
static void test_destroy_idle(void **state)
{
	kaio_ctx *ctx = kt_ctx(4, 0);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	ctx = kt_ctx(4, 0);
	struct tracked t;
	kaio_buf *b = tracked_new(&t, BLK);
	t.offset = 0;
	EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, tracked_cb, (uintptr_t)&t), 0);
	int64_t deadline = kt_now_ms() + 10000;
	while (atomic_load(&t.cb_runs) == 0) {
		EXPECT_RC(kaio_wait(ctx, NULL, 1, 0, 1000), 0);
		if (kt_now_ms() > deadline)
			fail_msg("callback did not run");
	}
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	assert_int_equal(atomic_load(&t.released), 0); /* we still hold ours */
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	assert_int_equal(atomic_load(&t.cb_runs), 1);
	assert_int_equal(atomic_load(&t.released), 0);
	kaio_buf_unref(b);
	assert_int_equal(atomic_load(&t.released), 1);
	tracked_free(&t);
}

/* ---- fork ------------------------------------------------------------------------------ */

/* In a child: undo cmocka's signal handlers (a crash must kill the child, not
 * run the rest of the test suite in it) and bound its life. */
static void child_init(void)
{
	const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGALRM };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		signal(sigs[i], SIG_DFL);
	alarm(20);
}

static pid_t fork_child(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	return pid;
}

/* Wait (at most 30 s) for a child; returns its wait status. */
static int wait_child(pid_t pid)
{
	int st = 0;
	int64_t deadline = kt_now_ms() + 30000;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return st;
		if (r < 0 && errno != EINTR)
			fail_msg("waitpid: %s", strerror(errno));
		if (kt_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("child %d did not finish within 30 s", (int)pid);
		}
		kt_sleep_ms(5);
	}
}

/* A child that reports a result code (0 = ok) through a pipe as well as its
 * exit status: under valgrind, a leak found in the child at exit replaces
 * its exit status, so the pipe is what the parent trusts. */
struct reporting_child {
	pid_t pid;
	int rfd;
};
static int child_report_fd = -1;

static struct reporting_child fork_reporting(void)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	struct reporting_child c;
	c.pid = fork_child();
	if (c.pid == 0) {
		close(p[0]);
		child_report_fd = p[1];
		c.rfd = -1;
		return c;
	}
	close(p[1]);
	c.rfd = p[0];
	return c;
}

static void __attribute__((noreturn)) child_exit(int code)
{
	unsigned char c = (unsigned char)code;
	if (child_report_fd >= 0 && write(child_report_fd, &c, 1) != 1)
		code = 125;
	_exit(code);
}

/* Waits for the child and fails the test unless it reported 0. */
static void expect_child_ok(struct reporting_child c, const char *const *names, size_t nnames)
{
	int st = wait_child(c.pid);
	unsigned char code = 0;
	ssize_t n = read(c.rfd, &code, 1);
	close(c.rfd);
	if (n != 1) {
		if (WIFSIGNALED(st))
			fail_msg("the child died of signal %d before reporting", WTERMSIG(st));
		fail_msg("the child exited (status %#x) without reporting", st);
	}
	if (code != 0) {
		if ((size_t)code < nnames)
			fail_msg("in the child: %s", names[code]);
		fail_msg("the child reported failure %d", code);
	}
}

/* Like expect_child_ok, for a child already reaped with wait_child. */
static void expect_reported_ok(int rfd, const char *const *names, size_t nnames)
{
	unsigned char code = 0;
	ssize_t n = read(rfd, &code, 1);
	close(rfd);
	if (n != 1)
		fail_msg("the child ended without reporting (crashed?)");
	if (code != 0) {
		if ((size_t)code < nnames)
			fail_msg("in the child: %s", names[code]);
		fail_msg("the child reported failure %d", code);
	}
}

static const char *const echild_checks[] = {
	"ok",
	"kaio_read on the parent's context did not return -ECHILD",
	"kaio_write on the parent's context did not return -ECHILD",
	"kaio_readv on the parent's context did not return -ECHILD",
	"kaio_writev on the parent's context did not return -ECHILD",
	"kaio_sync on the parent's context did not return -ECHILD",
	"kaio_submit on the parent's context did not return -ECHILD",
	"kaio_poll on the parent's context did not return -ECHILD",
	"kaio_wait on the parent's context did not return -ECHILD",
	"kaio_ctx_fd on the parent's context did not return -ECHILD",
	"kaio_ctx_wake on the parent's context did not return -ECHILD",
	"kaio_ctx_forget_fd on the parent's context did not return -ECHILD",
	"kaio_ctx_capacity on the parent's context is not 0",
	"kaio_ctx_inflight on the parent's context is not 0",
	"kaio_ctx_destroy of the parent's context did not return 0",
	"kaio_ctx_destroy in the child ran a release function or a callback",
	"kaio_buf_len of a kaio_buf_alloc handle is wrong in the child",
	"an -ECHILD refusal left kaio_last_error() empty",
};

struct marker {
	int fd;      /* pipe write end */
	char c;
	atomic_int ran;
	void *mem;
};

static void marker_release(void *data, size_t len, void *opaque)
{
	struct marker *m = opaque;
	atomic_fetch_add(&m->ran, 1);
	if (write(m->fd, &m->c, 1) != 1)
		atomic_fetch_add(&m->ran, 100);
}

static struct marker cb_marker;

static void marker_cb(const struct kaio_event *ev)
{
	atomic_fetch_add(&cb_marker.ran, 1);
	if (write(cb_marker.fd, &cb_marker.c, 1) != 1)
		atomic_fetch_add(&cb_marker.ran, 100);
}

#define CHILD_EXPECT_ECHILD(code, expr) do { \
	if ((expr) != -ECHILD) \
		return code; \
	if (kaio_last_error()[0] == '\0') \
		return 17; \
} while (0)

static int child_echild(kaio_ctx *ctx, kaio_buf *a, size_t alen, struct marker *wm)
{
	CHILD_EXPECT_ECHILD(1, kaio_read(ctx, g_fd, 0, a, 0, BLK, NULL, 1));
	CHILD_EXPECT_ECHILD(2, kaio_write(ctx, g_fd, 0, a, 0, BLK, NULL, 2));
	struct kaio_vec vec = { a, 0, BLK };
	CHILD_EXPECT_ECHILD(3, kaio_readv(ctx, g_fd, 0, &vec, 1, NULL, 3));
	CHILD_EXPECT_ECHILD(4, kaio_writev(ctx, g_fd, 0, &vec, 1, NULL, 4));
	CHILD_EXPECT_ECHILD(5, kaio_sync(ctx, g_fd, KAIO_SYNC_FULL, NULL, 5));
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = g_fd, .len = BLK, .user_data = 6, .buf = a };
	CHILD_EXPECT_ECHILD(6, kaio_submit(ctx, &op, 1));
	struct kaio_event ev[4];
	CHILD_EXPECT_ECHILD(7, kaio_poll(ctx, ev, 4));
	CHILD_EXPECT_ECHILD(8, kaio_wait(ctx, ev, 1, 4, 100));
	CHILD_EXPECT_ECHILD(9, kaio_ctx_fd(ctx));
	CHILD_EXPECT_ECHILD(10, kaio_ctx_wake(ctx));
	CHILD_EXPECT_ECHILD(11, kaio_ctx_forget_fd(ctx, g_fd));
	if (kaio_ctx_capacity(ctx) != 0)
		return 12;
	if (kaio_ctx_inflight(ctx) != 0)
		return 13;
	if (kaio_buf_len(a) != alen)
		return 16;
	if (kaio_ctx_destroy(ctx) != 0)
		return 14;
	if (atomic_load(&wm->ran) != 0 || atomic_load(&cb_marker.ran) != 0)
		return 15;
	return 0;
}

/* Contract: after fork(), the child's calls on the parent's context return
 * -ECHILD (capacity and inflight 0), kaio_ctx_destroy there returns 0 and runs
 * no release functions; the parent's context is untouched and keeps working
 * (its pending completions all still arrive). */
static void test_fork_child_gets_echild(void **state)
{
	kaio_ctx *ctx = kt_ctx(8, 0);
	int efd = kaio_ctx_fd(ctx);
	int pfd[2];
	assert_int_equal(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);

	/* W: an event without callback whose buffer's release writes 'W'. */
	static struct marker wm;
	memset(&wm, 0, sizeof wm);
	wm.fd = pfd[1];
	wm.c = 'W';
	assert_int_equal(posix_memalign(&wm.mem, 4096, BLK), 0);
	kaio_buf *wb = NULL;
	EXPECT_RC(kaio_buf_wrap(&wb, wm.mem, BLK, marker_release, &wm), 0);
	EXPECT_RC(kaio_read(ctx, g_fd, 5 * BLK, wb, 0, BLK, NULL, 77), 0);
	kaio_buf_unref(wb);
	/* C: an operation whose callback writes 'C'. */
	memset(&cb_marker, 0, sizeof cb_marker);
	cb_marker.fd = pfd[1];
	cb_marker.c = 'C';
	kaio_buf *cbuf = kt_buf(BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 6 * BLK, cbuf, 0, BLK, marker_cb, 78), 0);
	kaio_buf_unref(cbuf);
	kaio_buf *a = kt_buf(4 * BLK);
	/* Both finished in the kernel, not yet reaped: the eventfd says so. */
	if (!fd_readable(efd, 5000))
		fail_msg("the eventfd did not become readable for two reads within 5 s");
	kt_sleep_ms(50);

	struct reporting_child child = fork_reporting();
	if (child.pid == 0) {
		child_init();
		child_exit(child_echild(ctx, a, 4 * BLK, &wm));
	}
	/* The child ran the checks and kaio_ctx_destroy before reporting. */
	(void)wait_child(child.pid);
	char c;
	ssize_t n = read(pfd[0], &c, 1);
	if (n == 1)
		fail_msg("the child ran the '%c' %s", c, c == 'W' ? "release function" : "callback");
	assert_int_equal(errno, EAGAIN);
	expect_reported_ok(child.rfd, echild_checks, sizeof echild_checks / sizeof echild_checks[0]);

	/* The parent's context is as it was. */
	assert_int_equal(kaio_ctx_capacity(ctx), 8);
	assert_int_equal(kaio_ctx_inflight(ctx), 2);
	assert_int_equal(kaio_ctx_fd(ctx), efd);
	/* The child never touched the parent's kernel context or its eventfd
	 * (shared across fork): the completions that were ready before the
	 * fork still signal it, before anything is reaped. */
	if (!fd_readable(efd, 2000))
		fail_msg("after the child's calls, the parent's eventfd no longer signals its pending completions (the child drained it)");
	assert_int_equal(atomic_load(&wm.ran), 0);
	assert_int_equal(atomic_load(&cb_marker.ran), 0);
	struct kaio_event ev[2];
	int got = 0;
	int64_t deadline = kt_now_ms() + 10000;
	while (got < 1 || atomic_load(&cb_marker.ran) < 1) {
		int rc = kaio_wait(ctx, ev + got, 1, 2 - (unsigned)got, 1000);
		if (rc < 0)
			fail_msg("kaio_wait in the parent after fork = %d (%s)", rc, kaio_last_error());
		got += rc;
		if (kt_now_ms() > deadline)
			fail_msg("the parent lost completions pending at fork (%d events, %d callbacks)", got,
				 atomic_load(&cb_marker.ran));
	}
	assert_int_equal(got, 1);
	assert_int_equal(ev[0].user_data, 77);
	assert_int_equal(ev[0].res, BLK);
	assert_int_equal(kt_check(kaio_buf_data(ev[0].buf), BLK, 5 * BLK), 0);
	assert_int_equal(atomic_load(&cb_marker.ran), 1);
	kaio_buf_unref(ev[0].buf);
	assert_int_equal(atomic_load(&wm.ran), 1);
	char marks[4] = { 0 };
	assert_int_equal(read(pfd[0], marks, sizeof marks), 2);
	assert_string_equal(marks, "CW");

	/* New I/O in the parent works: write then read back. */
	kt_fill(kaio_buf_data(a), 4 * BLK, 32 * BLK);
	EXPECT_RC(kaio_write(ctx, g_fd, 32 * BLK, a, 0, 4 * BLK, NULL, 80), 0);
	kt_wait_n(ctx, ev, 1);
	assert_int_equal(ev[0].res, 4 * BLK);
	kaio_buf_unref(ev[0].buf);
	memset(kaio_buf_data(a), 0, 4 * BLK);
	EXPECT_RC(kaio_read(ctx, g_fd, 32 * BLK, a, 0, 4 * BLK, NULL, 81), 0);
	kt_wait_n(ctx, ev, 1);
	assert_int_equal(ev[0].res, 4 * BLK);
	assert_int_equal(kt_check(kaio_buf_data(a), 4 * BLK, 32 * BLK), 0);
	kaio_buf_unref(ev[0].buf);

	kaio_buf_unref(a);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	close(pfd[0]);
	close(pfd[1]);
	free(wm.mem);
}

/* Contract: kaio_buf_alloc memory is MADV_DONTFORK, so a fork() during I/O
 * cannot corrupt it: reads and writes in flight across fork() complete with
 * intact data in the parent, whose context keeps working. */
static void test_fork_with_io_in_flight(void **state)
{
	enum { NR = 16, NW = 8 };
	kaio_ctx *ctx = kt_ctx(64, 0);
	uint32_t ma = 0, oa = 0;
	EXPECT_RC(kaio_fd_alignment(g_fd, &ma, &oa), 0);
	uint32_t unit = ma > oa ? ma : oa;
	if (unit < 512)
		unit = 512;
	/* Read less than a page when alignment allows, so the parent can write
	 * to the rest of the same page while the read is in flight. */
	size_t rl = unit <= BLK / 2 ? BLK / 2 : BLK;
	int wfd = kt_open("fork-writes.dat", O_RDWR | O_DIRECT);
	assert_int_equal(ftruncate(wfd, NW * CHUNK), 0);

	for (int round = 0; round < 3; round++) {
		kaio_buf *rb[NR], *wb[NW];
		for (unsigned i = 0; i < NR; i++) {
			rb[i] = kt_buf(BLK);
			EXPECT_RC(kaio_read(ctx, g_fd, (uint64_t)(i * 7 + (unsigned)round) * CHUNK, rb[i], 0, rl,
					    NULL, i), 0);
		}
		for (unsigned i = 0; i < NW; i++) {
			wb[i] = kt_buf(CHUNK);
			kt_fill(kaio_buf_data(wb[i]), CHUNK, (uint64_t)i * CHUNK + 8 * (uint64_t)round);
			EXPECT_RC(kaio_write(ctx, wfd, (uint64_t)i * CHUNK, wb[i], 0, CHUNK, NULL, 100 + i), 0);
		}
		struct reporting_child child = fork_reporting();
		if (child.pid == 0) {
			child_init();
			/* Dirty plenty of memory in the child. */
			size_t big = 8u << 20;
			char *p = malloc(big);
			if (p)
				memset(p, 0x3c, big);
			free(p);
			/* The parent's context: frees only the child's copy. */
			child_exit(kaio_ctx_destroy(ctx) == 0 ? 0 : 1);
		}
		/* Parent: write next to the in-flight reads, in the same pages. */
		for (unsigned i = 0; i < NR; i++)
			memset((char *)kaio_buf_data(rb[i]) + rl, 0x11, BLK - rl);
		struct kaio_event ev[NR + NW];
		kt_wait_n(ctx, ev, NR + NW);
		expect_child_ok(child, NULL, 0);
		for (unsigned k = 0; k < NR + NW; k++) {
			uint64_t u = ev[k].user_data;
			if (u < NR) {
				assert_int_equal(ev[k].res, rl);
				const unsigned char *d = kaio_buf_data(rb[u]);
				if (kt_check(d, rl, (uint64_t)(u * 7 + (unsigned)round) * CHUNK) != 0)
					fail_msg("round %d: read %llu in flight across fork() lost its data", round,
						 (unsigned long long)u);
				for (size_t j = rl; j < BLK; j++)
					assert_int_equal(d[j], 0x11);
			} else {
				assert_true(u >= 100 && u < 100 + NW);
				assert_int_equal(ev[k].res, CHUNK);
			}
			kaio_buf_unref(ev[k].buf);
		}
		/* The writes reached the file intact. */
		kaio_buf *chk = kt_buf(NW * CHUNK);
		EXPECT_RC(kaio_read(ctx, wfd, 0, chk, 0, NW * CHUNK, NULL, 999), 0);
		kt_wait_n(ctx, ev, 1);
		assert_int_equal(ev[0].res, NW * CHUNK);
		for (unsigned i = 0; i < NW; i++)
			if (kt_check((char *)kaio_buf_data(chk) + (size_t)i * CHUNK, CHUNK,
				     (uint64_t)i * CHUNK + 8 * (uint64_t)round) != 0)
				fail_msg("round %d: write %u in flight across fork() wrote wrong data", round, i);
		kaio_buf_unref(ev[0].buf);
		kaio_buf_unref(chk);
		for (unsigned i = 0; i < NR; i++)
			kaio_buf_unref(rb[i]);
		for (unsigned i = 0; i < NW; i++)
			kaio_buf_unref(wb[i]);
	}
	assert_int_equal(kaio_ctx_inflight(ctx), 0);
	EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	close(wfd);
}

static const char *const absent_checks[] = {
	"ok",
	"kaio_buf_len of a kaio_buf_alloc handle is wrong in the child",
	"kaio_buf_data of a kaio_buf_alloc handle changed in the child",
	"kaio_buf_alloc memory is mapped in the child (no MADV_DONTFORK)",
	"a pooled (reused) kaio_buf_alloc block is mapped in the child (MADV_DONTFORK lost)",
	"kaio_buf_ref of a kaio_buf_alloc handle failed in the child",
	"heap memory (kaio_buf_wrap) is missing in the child",
};

static int child_absent(kaio_buf *a, void *adata, size_t alen, kaio_buf *p, kaio_buf *w, void *wmem)
{
	unsigned char vec[64];
	if (kaio_buf_len(a) != alen)
		return 1;
	if (kaio_buf_data(a) != adata)
		return 2;
	errno = 0;
	if (mincore(adata, alen, vec) == 0 || errno != ENOMEM)
		return 3;
	errno = 0;
	if (mincore(kaio_buf_data(p), kaio_buf_len(p), vec) == 0 || errno != ENOMEM)
		return 4;
	if (kaio_buf_ref(a) != a)
		return 5;
	kaio_buf_unref(a);
	/* Contrast: a wrapped heap buffer is an ordinary copy. */
	if (kaio_buf_data(w) != wmem || mincore(wmem, BLK, vec) != 0 ||
	    ((unsigned char *)wmem)[0] != 0x42)
		return 6;
	return 0;
}

static void count_release(void *data, size_t len, void *opaque)
{
	atomic_fetch_add((atomic_int *)opaque, 1);
}

/* Contract: kaio_buf_alloc memory is absent in a child (MADV_DONTFORK, kept
 * by pooled blocks too): touching it there faults, but the handle itself still
 * works (kaio_buf_len, kaio_buf_ref). */
static void test_fork_alloc_memory_absent(void **state)
{
	const size_t alen = 4 * BLK;
	kaio_buf *a = kt_buf(alen);
	void *adata = kaio_buf_data(a);
	memset(adata, 1, alen);
	/* a block that went back to the library and came out again */
	kaio_buf *p = kt_buf(BLK);
	kaio_buf_unref(p);
	p = kt_buf(BLK);
	unsigned char *pd = kaio_buf_data(p);
	for (size_t i = 0; i < BLK; i++)
		if (pd[i] != 0)
			fail_msg("a reused kaio_buf_alloc block is not zeroed (byte %zu)", i);
	memset(pd, 2, BLK);
	void *wmem = NULL;
	assert_int_equal(posix_memalign(&wmem, 4096, BLK), 0);
	memset(wmem, 0x42, BLK);
	atomic_int wrel = 0;
	kaio_buf *w = NULL;
	EXPECT_RC(kaio_buf_wrap(&w, wmem, BLK, count_release, &wrel), 0);
	unsigned char vec[64];
	assert_int_equal(mincore(adata, alen, vec), 0);

	struct reporting_child child = fork_reporting();
	if (child.pid == 0) {
		child_init();
		child_exit(child_absent(a, adata, alen, p, w, wmem));
	}
	expect_child_ok(child, absent_checks, sizeof absent_checks / sizeof absent_checks[0]);

	/* Touching it in a child faults. */
	pid_t pid = fork_child();
	if (pid == 0) {
		child_init();
		volatile unsigned char *v = adata;
		unsigned char x = v[0];
		(void)x;
		_exit(0);
	}
	int st = wait_child(pid);
	if (!WIFSIGNALED(st) || (WTERMSIG(st) != SIGSEGV && WTERMSIG(st) != SIGBUS))
		fail_msg("a child read kaio_buf_alloc memory without faulting (status %#x): it is not MADV_DONTFORK",
			 st);

	/* The parent's memory is untouched. */
	for (size_t i = 0; i < alen; i++)
		assert_int_equal(((unsigned char *)adata)[i], 1);
	assert_int_equal(pd[0], 2);
	kaio_buf_unref(a);
	kaio_buf_unref(p);
	kaio_buf_unref(w);
	assert_int_equal(atomic_load(&wrel), 1);
	free(wmem);
}

static int child_own_context(void)
{
	kaio_ctx *c = NULL;
	if (kaio_ctx_create(&c, 4, 0) != 0)
		return 1;
	kaio_buf *b = NULL;
	if (kaio_buf_alloc(&b, BLK, 0) != 0)
		return 2;
	if (kaio_read(c, g_fd, 3 * BLK, b, 0, BLK, NULL, 5) != 0)
		return 3;
	struct kaio_event ev;
	if (kaio_wait(c, &ev, 1, 1, 10000) != 1)
		return 4;
	if (ev.res != BLK || ev.user_data != 5 || kt_check(kaio_buf_data(b), BLK, 3 * BLK) != 0)
		return 5;
	kaio_buf_unref(ev.buf);
	kaio_buf_unref(b);
	if (kaio_ctx_destroy(c) != 0)
		return 6;
	return 0;
}

static const char *const own_checks[] = {
	"ok",
	"kaio_ctx_create failed in the child",
	"kaio_buf_alloc failed in the child",
	"kaio_read on the child's own context was refused",
	"kaio_wait on the child's own context got no event",
	"the child's own read returned wrong data",
	"kaio_ctx_destroy of the child's own context failed",
	"kaio_ctx_destroy of the parent's context in the child failed",
};

/* Contract (scope of -ECHILD: the parent's contexts only): a child can create
 * and use a context of its own, and destroy its copy of the parent's. */
static void test_fork_child_own_context(void **state)
{
	kaio_ctx *parent = kt_ctx(4, 0); /* exists across the fork */
	struct reporting_child child = fork_reporting();
	if (child.pid == 0) {
		child_init();
		int rc = child_own_context();
		if (rc == 0 && kaio_ctx_destroy(parent) != 0)
			rc = 7;
		child_exit(rc);
	}
	expect_child_ok(child, own_checks, sizeof own_checks / sizeof own_checks[0]);
	EXPECT_RC(kaio_ctx_destroy(parent), 0);
}

/* ---- fork() while threads do I/O ----------------------------------------------- */

/* Four threads write 4 KiB blocks (a pattern naming thread, round and
 * offset) into their own regions of one O_DIRECT file through one shared
 * context, reap, read back and verify, while the main thread forks.  Threads
 * 0 and 1 submit with callbacks, 2 and 3 without; threads 0 and 2 reap with
 * kaio_wait, 1 and 3 with poll(2) on kaio_ctx_fd plus kaio_poll.  Whichever
 * thread reaps an operation records it in the owner's slot (so another
 * thread's events are never lost), and kicks the owner with kaio_ctx_wake.
 * Worker threads never call cmocka: the first problem is recorded in
 * ft_msg and the main thread fails after joining them. */
#define FT_THREADS 4
#define FT_BATCH 4    /* writes, then reads, in flight per thread at once */
#define FT_BLOCKS 16  /* 4 KiB blocks in each thread's region */
#define FT_FORKS 20
#define FT_REGION ((uint64_t)FT_BLOCKS * BLK)

/* One operation in a thread's batch; reused round after round, so every
 * field describes the operation whose user_data is in `expect`. */
struct ft_slot {
	_Atomic uint64_t expect;
	atomic_int delivered;
	atomic_int released; /* writes: the wrapped buffer's release */
	atomic_int done;     /* set (release) after the fields below */
	int64_t res;
	uint64_t offset;
	int32_t fd;
	uint32_t op;
	int had_buf; /* the event carried a buffer */
};

struct ft_thread {
	int tid;
	int use_cb;   /* submit with callbacks */
	int use_wait; /* reap with kaio_wait (else poll(2) + kaio_poll) */
	pthread_t th;
	kaio_buf *arena; /* kaio_buf_alloc memory the writes are wrapped over */
	struct ft_slot w[FT_BATCH], r[FT_BATCH];
	atomic_long rounds;
	long last_seq[FT_BLOCKS]; /* round that last wrote each block, or -1 */
};

static struct ft_thread ft_th[FT_THREADS];
static kaio_ctx *ft_ctx;
static int ft_fd = -1;
static int ft_efd = -1;
static atomic_int ft_stop;
static atomic_int ft_failed;
static char ft_msg[512];
static atomic_long ft_submitted, ft_delivered, ft_writes, ft_releases;
static _Thread_local int ft_self = -1;

static void ft_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void ft_error(const char *fmt, ...)
{
	if (atomic_exchange(&ft_failed, 1) == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ft_msg, sizeof ft_msg, fmt, ap);
		va_end(ap);
	}
	atomic_store(&ft_stop, 1);
}

static uint64_t ft_ud(int tid, int kind, int idx, long seq)
{
	return (uint64_t)tid << 56 | (uint64_t)kind << 48 | (uint64_t)idx << 40 | (uint64_t)seq;
}

static struct ft_slot *ft_slot_of(uint64_t ud)
{
	unsigned tid = (unsigned)(ud >> 56), kind = (unsigned)(ud >> 48) & 0xff, idx = (unsigned)(ud >> 40) & 0xff;
	if (tid >= FT_THREADS || kind > 1 || idx >= FT_BATCH)
		return NULL;
	return kind ? &ft_th[tid].r[idx] : &ft_th[tid].w[idx];
}

static uint64_t ft_word(int tid, long seq, uint64_t off)
{
	return off * 0x9E3779B97F4A7C15ull ^ (uint64_t)(tid + 1) << 58 ^ (uint64_t)seq << 24 ^ 0x666f726bull;
}

static void ft_fill(void *p, int tid, long seq, uint64_t off)
{
	uint64_t *w = p;
	for (size_t i = 0; i < BLK / 8; i++)
		w[i] = ft_word(tid, seq, off + 8 * i);
}

/* 0 if p holds the block written by (tid, seq) at off, else 1 + the index
 * of the first wrong word. */
static size_t ft_check(const void *p, int tid, long seq, uint64_t off)
{
	const uint64_t *w = p;
	for (size_t i = 0; i < BLK / 8; i++)
		if (w[i] != ft_word(tid, seq, off + 8 * i))
			return i + 1;
	return 0;
}

static void ft_kick(uint64_t ud)
{
	if ((int)(ud >> 56) != ft_self)
		kaio_ctx_wake(ft_ctx); /* the owner may be blocked in kaio_wait */
}

/* A delivery, by callback or event, on whichever thread reaped it. */
static void ft_record(const struct kaio_event *ev)
{
	struct ft_slot *s = ft_slot_of(ev->user_data);
	if (!s || atomic_load(&s->expect) != ev->user_data) {
		ft_error("delivery of user_data %#llx, which no operation in flight has (a stale or duplicate delivery)",
			 (unsigned long long)ev->user_data);
		return;
	}
	if (atomic_fetch_add(&s->delivered, 1) != 0) {
		ft_error("user_data %#llx delivered twice", (unsigned long long)ev->user_data);
		return;
	}
	s->res = ev->res;
	s->offset = ev->offset;
	s->fd = ev->fd;
	s->op = ev->op;
	s->had_buf = ev->buf != NULL;
	if (ev->ctx != ft_ctx)
		ft_error("an event names context %p, not %p", (void *)ev->ctx, (void *)ft_ctx);
	atomic_fetch_add(&ft_delivered, 1);
	atomic_store_explicit(&s->done, 1, memory_order_release);
}

static void ft_cb(const struct kaio_event *ev)
{
	ft_record(ev);
	ft_kick(ev->user_data);
}

static void ft_release(void *data, size_t len, void *opaque)
{
	struct ft_slot *s = opaque;
	if (len != BLK)
		ft_error("a release saw length %zu", len);
	if (atomic_fetch_add(&s->released, 1) != 0)
		ft_error("the buffer of user_data %#llx was released twice", (unsigned long long)atomic_load(&s->expect));
	atomic_fetch_add(&ft_releases, 1);
	ft_kick(atomic_load(&s->expect));
}

/* Reap (with this thread's API) until the n slots are done (and, for
 * writes, released).  Returns 0, or -1 after recording an error. */
static int ft_reap_until(struct ft_thread *t, struct ft_slot *slots, int n, int writes)
{
	const int64_t deadline = kt_now_ms() + 30000;
	for (;;) {
		int all = 1;
		for (int i = 0; i < n; i++)
			if (!atomic_load_explicit(&slots[i].done, memory_order_acquire) ||
			    (writes && atomic_load(&slots[i].released) == 0))
				all = 0;
		if (all)
			return 0;
		if (atomic_load(&ft_failed))
			return -1;
		if (kt_now_ms() > deadline) {
			ft_error("thread %d round %ld: its %s not delivered within 30 s (%u in flight)", t->tid,
				 atomic_load(&t->rounds),
				 writes ? "writes were" : "reads were", kaio_ctx_inflight(ft_ctx));
			return -1;
		}
		struct kaio_event ev[8];
		int rc;
		if (t->use_wait) {
			rc = kaio_wait(ft_ctx, ev, 1, 8, 50);
		} else {
			struct pollfd p = { .fd = ft_efd, .events = POLLIN };
			(void)poll(&p, 1, 20);
			rc = kaio_poll(ft_ctx, ev, 8);
		}
		if (rc < 0) {
			ft_error("thread %d: %s = %d (%s)", t->tid, t->use_wait ? "kaio_wait" : "kaio_poll", rc,
				 kaio_last_error());
			return -1;
		}
		for (int k = 0; k < rc; k++) {
			ft_record(&ev[k]);
			kaio_buf_unref(ev[k].buf); /* the event's reference: a write's runs its release */
			ft_kick(ev[k].user_data);
		}
	}
}

/* Make slot s ready for the operation ud, after checking that its previous
 * operation was delivered once (and its buffer released once). */
static int ft_reuse(struct ft_thread *t, struct ft_slot *s, uint64_t ud, int write)
{
	if (atomic_load(&t->rounds) > 0) {
		int d = atomic_load(&s->delivered), r = atomic_load(&s->released);
		if (d != 1 || (write && r != 1)) {
			ft_error("user_data %#llx: delivered %d times, buffer released %d times",
				 (unsigned long long)atomic_load(&s->expect), d, r);
			return -1;
		}
	}
	atomic_store(&s->done, 0);
	atomic_store(&s->delivered, 0);
	atomic_store(&s->released, 0);
	atomic_store(&s->expect, ud);
	return 0;
}

static void *ft_worker(void *arg)
{
	struct ft_thread *t = arg;
	ft_self = t->tid;
	const uint64_t base = (uint64_t)t->tid * FT_REGION;
	char *arena = kaio_buf_data(t->arena);
	kaio_buf *rb[FT_BATCH];
	uint64_t off[FT_BATCH];
	while (!atomic_load(&ft_stop)) {
		const long seq = atomic_load(&t->rounds);
		for (int i = 0; i < FT_BATCH; i++) {
			const int blk = (int)((seq * FT_BATCH + i) % FT_BLOCKS);
			off[i] = base + (uint64_t)blk * BLK;
			const uint64_t ud = ft_ud(t->tid, 0, i, seq);
			if (ft_reuse(t, &t->w[i], ud, 1) < 0)
				return NULL;
			ft_fill(arena + (size_t)i * BLK, t->tid, seq, off[i]);
			kaio_buf *h = NULL;
			int rc = kaio_buf_wrap(&h, arena + (size_t)i * BLK, BLK, ft_release, &t->w[i]);
			if (rc != 0) {
				ft_error("thread %d: kaio_buf_wrap = %d (%s)", t->tid, rc, kaio_last_error());
				return NULL;
			}
			rc = kaio_write(ft_ctx, ft_fd, off[i], h, 0, BLK, t->use_cb ? ft_cb : NULL, ud);
			kaio_buf_unref(h); /* the operation holds its own */
			if (rc != 0) {
				ft_error("thread %d: kaio_write = %d (%s)", t->tid, rc, kaio_last_error());
				return NULL;
			}
			atomic_fetch_add(&ft_submitted, 1);
			atomic_fetch_add(&ft_writes, 1);
			t->last_seq[blk] = seq;
		}
		if (ft_reap_until(t, t->w, FT_BATCH, 1) < 0)
			return NULL;
		for (int i = 0; i < FT_BATCH; i++) {
			const struct ft_slot *s = &t->w[i];
			if (s->res != BLK || s->offset != off[i] || s->fd != ft_fd || s->op != KAIO_OP_WRITE || !s->had_buf) {
				ft_error("thread %d round %ld: write %d delivered res %lld offset %llu fd %d op %u (buf %d)", t->tid,
					 seq, i, (long long)s->res, (unsigned long long)s->offset, s->fd, s->op, s->had_buf);
				return NULL;
			}
		}
		for (int i = 0; i < FT_BATCH; i++) {
			const uint64_t ud = ft_ud(t->tid, 1, i, seq);
			if (ft_reuse(t, &t->r[i], ud, 0) < 0)
				return NULL;
			rb[i] = NULL;
			int rc = kaio_buf_alloc(&rb[i], BLK, 0);
			if (rc == 0)
				rc = kaio_read(ft_ctx, ft_fd, off[i], rb[i], 0, BLK, t->use_cb ? ft_cb : NULL, ud);
			if (rc != 0) {
				ft_error("thread %d: kaio_buf_alloc/kaio_read = %d (%s)", t->tid, rc, kaio_last_error());
				return NULL;
			}
			atomic_fetch_add(&ft_submitted, 1);
		}
		int ok = ft_reap_until(t, t->r, FT_BATCH, 0) == 0;
		for (int i = 0; ok && i < FT_BATCH; i++) {
			const struct ft_slot *s = &t->r[i];
			size_t bad = ft_check(kaio_buf_data(rb[i]), t->tid, seq, off[i]);
			if (s->res != BLK || s->offset != off[i] || s->op != KAIO_OP_READ || bad) {
				ft_error("thread %d round %ld: read %d at %llu delivered res %lld op %u; data %s (word %zu)",
					 t->tid, seq, i, (unsigned long long)off[i], (long long)s->res, s->op,
					 bad ? "CORRUPT" : "ok", bad ? bad - 1 : 0);
				ok = 0;
			}
		}
		for (int i = 0; i < FT_BATCH; i++)
			kaio_buf_unref(rb[i]); /* an event path dropped the operation's; this is ours */
		if (!ok)
			return NULL;
		atomic_fetch_add(&t->rounds, 1);
	}
	return NULL;
}

static void ft_count_release(void *data, size_t len, void *opaque)
{
	(*(int *)opaque)++;
}

static const char *const ft_child_checks[] = {
	"ok",
	"kaio_buf_alloc failed in the child",
	"kaio_read on the parent's context did not return -ECHILD",
	"kaio_write on the parent's context did not return -ECHILD",
	"kaio_submit on the parent's context did not return -ECHILD",
	"kaio_sync on the parent's context did not return -ECHILD",
	"kaio_poll on the parent's context did not return -ECHILD",
	"kaio_wait (100 ms) on the parent's context did not return -ECHILD",
	"kaio_wait (no limit) on the parent's context did not return -ECHILD",
	"kaio_ctx_fd on the parent's context did not return -ECHILD",
	"kaio_ctx_wake on the parent's context did not return -ECHILD",
	"kaio_ctx_forget_fd on the parent's context did not return -ECHILD",
	"kaio_ctx_capacity on the parent's context is not 0",
	"kaio_ctx_inflight on the parent's context is not 0 (the parent had I/O in flight)",
	"kaio_buf_wrap/kaio_buf_unref in the child did not run the release exactly once",
	"kaio_ctx_destroy of the parent's context did not return 0",
	"kaio_ctx_destroy in the child ran a callback or a release function, or delivered something",
	"an -ECHILD refusal left kaio_last_error() empty",
	"the child could not create, use and destroy a context of its own",
};

/* In the child: only this thread exists; the others' operations are the
 * parent's. */
static int ft_child(kaio_ctx *ctx)
{
	const long deliv0 = atomic_load(&ft_delivered), rel0 = atomic_load(&ft_releases);
	kaio_buf *b = NULL;
	if (kaio_buf_alloc(&b, BLK, 0) != 0)
		return 1;
	CHILD_EXPECT_ECHILD(2, kaio_read(ctx, ft_fd, 0, b, 0, BLK, ft_cb, ft_ud(0, 1, 0, 0)));
	CHILD_EXPECT_ECHILD(3, kaio_write(ctx, ft_fd, 0, b, 0, BLK, NULL, 1));
	struct kaio_op op = { .op = KAIO_OP_READ, .fd = ft_fd, .len = BLK, .user_data = 2, .buf = b };
	CHILD_EXPECT_ECHILD(4, kaio_submit(ctx, &op, 1));
	CHILD_EXPECT_ECHILD(5, kaio_sync(ctx, ft_fd, KAIO_SYNC_DATA, NULL, 3));
	struct kaio_event ev[4];
	CHILD_EXPECT_ECHILD(6, kaio_poll(ctx, ev, 4));
	CHILD_EXPECT_ECHILD(7, kaio_wait(ctx, ev, 1, 4, 100));
	CHILD_EXPECT_ECHILD(8, kaio_wait(ctx, NULL, 1, 0, -1));
	CHILD_EXPECT_ECHILD(9, kaio_ctx_fd(ctx));
	CHILD_EXPECT_ECHILD(10, kaio_ctx_wake(ctx));
	CHILD_EXPECT_ECHILD(11, kaio_ctx_forget_fd(ctx, ft_fd));
	if (kaio_ctx_capacity(ctx) != 0)
		return 12;
	if (kaio_ctx_inflight(ctx) != 0)
		return 13;
	/* The handle pool, which the parent's threads were using at the fork. */
	static char mem[64];
	int runs = 0;
	kaio_buf *w = NULL;
	if (kaio_buf_wrap(&w, mem, sizeof mem, ft_count_release, &runs) != 0)
		return 14;
	kaio_buf_unref(w);
	if (runs != 1)
		return 14;
	kaio_buf_unref(b);
	if (kaio_ctx_destroy(ctx) != 0)
		return 15;
	if (atomic_load(&ft_delivered) != deliv0 || atomic_load(&ft_releases) != rel0)
		return 16;
	/* Nothing the parent's threads held at the fork wedges the child. */
	kaio_ctx *own = NULL;
	if (kaio_ctx_create(&own, 4, 0) != 0 || kaio_buf_alloc(&b, BLK, 0) != 0)
		return 18;
	if (kaio_read(own, ft_fd, FT_REGION, b, 0, BLK, NULL, 9) != 0 || kaio_wait(own, ev, 1, 1, 10000) != 1 ||
	    ev[0].res != BLK || ev[0].user_data != 9)
		return 18;
	kaio_buf_unref(ev[0].buf);
	kaio_buf_unref(b);
	if (kaio_ctx_destroy(own) != 0)
		return 18;
	return 0;
}

/* Contract (fork section): "After fork(), a child's calls on the parent's
 * context return -ECHILD (kaio_ctx_fd too; kaio_ctx_capacity and
 * kaio_ctx_inflight return 0); they never touch the parent's kernel context,
 * and kaio_ctx_destroy in the child returns 0, frees only the child's memory
 * and runs no release functions" -- here with the child forked while four
 * threads have I/O in flight on that context and churn the handle pool.  And
 * (buffers, threads): "kaio_buf_alloc ... marked MADV_DONTFORK so a fork()
 * during I/O cannot corrupt it", "Each completion is delivered exactly once,
 * whichever thread reaps": in the parent, every write and read across the 20
 * forks is delivered once with the right result, every read-back matches what
 * was written, every wrapped buffer's release runs once, inflight ends at 0
 * and kaio_ctx_destroy returns 0.  Catches: fork detection missing or per
 * thread (the child reaps or submits on the parent's queue), a child's
 * destroy running the parent's releases/callbacks, atfork handling that
 * leaves a pool lock held in the child (the child dies of its alarm), lost or
 * duplicated completions in the parent around fork(). */
static void test_fork_while_threads_do_io(void **state)
{
	ft_ctx = kt_ctx(64, 0);
	ft_efd = kaio_ctx_fd(ft_ctx);
	assert_true(ft_efd >= 0);
	/* One more region past the threads' for the child's own read. */
	ft_fd = kt_make_file("fork-threads.dat", (FT_THREADS + 1) * FT_REGION, O_RDWR | O_DIRECT);
	atomic_store(&ft_stop, 0);
	atomic_store(&ft_failed, 0);
	ft_msg[0] = '\0';
	atomic_store(&ft_submitted, 0);
	atomic_store(&ft_delivered, 0);
	atomic_store(&ft_writes, 0);
	atomic_store(&ft_releases, 0);
	memset(ft_th, 0, sizeof ft_th);
	for (int i = 0; i < FT_THREADS; i++) {
		struct ft_thread *t = &ft_th[i];
		t->tid = i;
		t->use_cb = i < 2;
		t->use_wait = i % 2 == 0;
		t->arena = kt_buf(FT_BATCH * BLK);
		for (int b = 0; b < FT_BLOCKS; b++)
			t->last_seq[b] = -1;
	}
	for (int i = 0; i < FT_THREADS; i++)
		assert_int_equal(pthread_create(&ft_th[i].th, NULL, ft_worker, &ft_th[i]), 0);

	/* Every thread under way before the first fork. */
	int64_t deadline = kt_now_ms() + 30000;
	for (int i = 0; i < FT_THREADS && !atomic_load(&ft_failed); i++)
		while (atomic_load(&ft_th[i].rounds) < 2 && !atomic_load(&ft_failed) &&
		       kt_now_ms() < deadline)
			kt_sleep_ms(1);

	const int64_t t0 = kt_now_ms();
	int child_code[FT_FORKS], child_status[FT_FORKS];
	int forks = 0, forks_in_flight = 0;
	for (; forks < FT_FORKS && !atomic_load(&ft_failed); forks++) {
		/* Fork with operations in flight (wait up to 200 ms for some). */
		const int64_t until = kt_now_ms() + 200;
		while (kaio_ctx_inflight(ft_ctx) == 0 && kt_now_ms() < until)
			sched_yield();
		if (kaio_ctx_inflight(ft_ctx) > 0)
			forks_in_flight++;
		struct reporting_child c = fork_reporting();
		if (c.pid == 0) {
			child_init();
			child_exit(ft_child(ft_ctx));
		}
		/* Collect without failing: the threads must be stopped first. */
		int st = 0;
		const int64_t cdl = kt_now_ms() + 30000;
		pid_t r;
		while ((r = waitpid(c.pid, &st, WNOHANG)) == 0 && kt_now_ms() < cdl)
			kt_sleep_ms(2);
		if (r != c.pid) {
			kill(c.pid, SIGKILL);
			waitpid(c.pid, &st, 0);
		}
		unsigned char code = 255;
		if (read(c.rfd, &code, 1) != 1)
			code = 255; /* crashed, or killed by its alarm: deadlocked */
		close(c.rfd);
		child_code[forks] = code;
		child_status[forks] = st;
		if (code != 0) { /* one is enough (and a stuck one takes its alarm's 20 s) */
			forks++;
			break;
		}
		kt_sleep_ms(3);
	}
	atomic_store(&ft_stop, 1);
	for (int i = 0; i < FT_THREADS; i++)
		assert_int_equal(pthread_join(ft_th[i].th, NULL), 0);

	long rounds = 0;
	for (int i = 0; i < FT_THREADS; i++)
		rounds += atomic_load(&ft_th[i].rounds);
	print_message("# %d forks (%d with operations in flight) in %lld ms, %ld rounds, %ld operations\n", forks,
		      forks_in_flight, (long long)(kt_now_ms() - t0), rounds, atomic_load(&ft_submitted));
	if (atomic_load(&ft_failed)) {
		kaio_ctx_destroy(ft_ctx);
		fail_msg("%s", ft_msg);
	}
	for (int i = 0; i < forks; i++) {
		if (child_code[i] == 255) {
			kaio_ctx_destroy(ft_ctx);
			if (WIFSIGNALED(child_status[i]))
				fail_msg("child %d died of signal %d before reporting (SIGALRM: deadlocked)", i,
					 WTERMSIG(child_status[i]));
			fail_msg("child %d ended (status %#x) without reporting", i, child_status[i]);
		}
		if (child_code[i] != 0) {
			kaio_ctx_destroy(ft_ctx);
			const size_t n = sizeof ft_child_checks / sizeof ft_child_checks[0];
			fail_msg("in child %d: %s", i,
				 (size_t)child_code[i] < n ? ft_child_checks[child_code[i]] : "unknown failure");
		}
	}
	if (forks_in_flight == 0)
		fail_msg("no fork happened with an operation in flight (the threads never had one?)");

	/* Exactly once, everything back. */
	assert_int_equal(kaio_ctx_inflight(ft_ctx), 0);
	struct kaio_event ev[4];
	EXPECT_RC(kaio_poll(ft_ctx, ev, 4), 0);
	if (atomic_load(&ft_delivered) != atomic_load(&ft_submitted))
		fail_msg("%ld operations submitted, %ld delivered", atomic_load(&ft_submitted), atomic_load(&ft_delivered));
	if (atomic_load(&ft_releases) != atomic_load(&ft_writes))
		fail_msg("%ld wrapped write buffers, %ld releases", atomic_load(&ft_writes), atomic_load(&ft_releases));
	for (int i = 0; i < FT_THREADS; i++) {
		for (int k = 0; k < FT_BATCH; k++) {
			const struct ft_slot *w = &ft_th[i].w[k], *r = &ft_th[i].r[k];
			if (atomic_load(&w->delivered) != 1 || atomic_load(&w->released) != 1 ||
			    atomic_load(&r->delivered) != 1)
				fail_msg("thread %d's last round, op %d: write delivered %d times (released %d), read %d times",
					 i, k, atomic_load(&w->delivered), atomic_load(&w->released),
					 atomic_load(&r->delivered));
		}
	}

	/* The file holds each block's last write. */
	const size_t all = FT_THREADS * FT_REGION;
	kaio_buf *chk = kt_buf(all);
	EXPECT_RC(kaio_read(ft_ctx, ft_fd, 0, chk, 0, all, NULL, 7), 0);
	kt_wait_n(ft_ctx, ev, 1);
	assert_int_equal(ev[0].res, all);
	kaio_buf_unref(ev[0].buf);
	for (int i = 0; i < FT_THREADS; i++) {
		for (int b = 0; b < FT_BLOCKS; b++) {
			const uint64_t off = (uint64_t)i * FT_REGION + (uint64_t)b * BLK;
			const char *p = (const char *)kaio_buf_data(chk) + off;
			size_t bad = ft_th[i].last_seq[b] < 0 ? kt_check(p, BLK, off)
							      : ft_check(p, i, ft_th[i].last_seq[b], off);
			if (bad)
				fail_msg("thread %d block %d (file offset %llu): wrong data at word %zu after the run", i, b,
					 (unsigned long long)off, bad - 1);
		}
	}
	kaio_buf_unref(chk);
	EXPECT_RC(kaio_ctx_destroy(ft_ctx), 0);
	ft_ctx = NULL;
	for (int i = 0; i < FT_THREADS; i++)
		kaio_buf_unref(ft_th[i].arena);
	close(ft_fd);
	ft_fd = -1;
}

/* ---- destroy frees everything ------------------------------------------------------- */

static void noop_cb(const struct kaio_event *ev)
{
}

/* Contract: kaio_ctx_destroy "frees everything": right after it, the
 * context's eventfd number is closed (checked before anything else is
 * opened), and the process has as many open fds as before the context was
 * created (the library's other descriptors are gone too) -- for an idle
 * context, one with operations (with and without callbacks) in flight, and
 * one with completions reaped into the queue but not copied out. */
static void test_destroy_closes_descriptors(void **state)
{
	kaio_buf *b = kt_buf(8 * BLK);
	for (int variant = 0; variant < 4; variant++) {
		const unsigned flags = variant == 3 ? KAIO_CTX_ALLOW_BUFFERED | KAIO_CTX_SINGLE_THREAD : 0;
		int before = kt_count_fds();
		kaio_ctx *ctx = kt_ctx(8, flags);
		int efd = kaio_ctx_fd(ctx);
		assert_true(efd >= 0);
		if (variant >= 1) {
			for (unsigned i = 0; i < 6; i++)
				EXPECT_RC(kaio_read(ctx, g_fd, i * BLK, b, i * BLK, BLK, i % 2 ? noop_cb : NULL, i), 0);
		}
		if (variant == 2) {
			kt_sleep_ms(50);
			struct kaio_event ev;
			int rc = kaio_poll(ctx, &ev, 1); /* the other finished events stay queued */
			if (rc < 0)
				fail_msg("kaio_poll = %d (%s)", rc, kaio_last_error());
			if (rc == 1)
				kaio_buf_unref(ev.buf);
		}
		EXPECT_RC(kaio_ctx_destroy(ctx), 0);
		errno = 0;
		int r = fcntl(efd, F_GETFD);
		int e = errno;
		if (r != -1 || e != EBADF)
			fail_msg("variant %d: the context's eventfd %d is still open after kaio_ctx_destroy (fcntl = %d, errno %d)",
				 variant, efd, r, e);
		int after = kt_count_fds();
		if (after != before)
			fail_msg("variant %d: %d open fds before kaio_ctx_create, %d after kaio_ctx_destroy", variant, before,
				 after);
	}
	kaio_buf_unref(b);
}

static long read_proc_long(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	long v = -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/* Contract: kaio_ctx_destroy frees everything, including the kernel queue
 * sized by capacity (io_setup), which counts against the system-wide
 * /proc/sys/fs/aio-nr: 50 create/destroy rounds at capacity 16384 never run
 * out (4 leaked queues would pass the usual aio-max-nr of 65536), and
 * aio-nr goes back to its start value.  (aio-nr is system-wide: a change of
 * less than one of our queues is another process's doing and is tolerated.) */
static void test_destroy_returns_kernel_queue(void **state)
{
	enum { CAP = 16384, ROUNDS = 50 };
	const long max = read_proc_long("/proc/sys/fs/aio-max-nr");
	const long start = read_proc_long("/proc/sys/fs/aio-nr");
	if (max < 0 || start < 0) {
		print_message("# /proc/sys/fs/aio-nr or aio-max-nr cannot be read\n");
		skip();
	}
	if (max - start < 2 * CAP) {
		print_message("# aio-max-nr %ld leaves no room for two queues of %d (aio-nr %ld)\n", max, CAP, start);
		skip();
	}
	kaio_buf *b = kt_buf(BLK);
	int counted = 0; /* rounds where aio-nr showed our queue */
	for (int r = 0; r < ROUNDS; r++) {
		kaio_ctx *ctx = NULL;
		int rc = kaio_ctx_create(&ctx, CAP, 0);
		const long now = read_proc_long("/proc/sys/fs/aio-nr");
		if (rc == -EAGAIN && now - start < CAP) {
			/* Not ours: another process took the room meanwhile. */
			kaio_buf_unref(b);
			print_message("# round %d: the system-wide AIO limit was reached by another process (aio-nr %ld, was %ld)\n",
				      r, now, start);
			skip();
		}
		if (rc != 0)
			fail_msg("round %d: kaio_ctx_create(%d) = %d (%s); aio-nr is %ld, was %ld before round 0: earlier kaio_ctx_destroy calls did not give their kernel queues back",
				 r, CAP, rc, kaio_last_error(), now, start);
		if (now - start >= CAP)
			counted++;
		if (r % 5 == 0) /* sometimes with an operation in flight */
			EXPECT_RC(kaio_read(ctx, g_fd, 0, b, 0, BLK, r % 10 ? NULL : noop_cb, (uint64_t)r), 0);
		EXPECT_RC(kaio_ctx_destroy(ctx), 0);
	}
	kaio_buf_unref(b);
	long end = read_proc_long("/proc/sys/fs/aio-nr");
	for (int i = 0; i < 100 && end != start; i++) { /* let another process settle */
		kt_sleep_ms(10);
		end = read_proc_long("/proc/sys/fs/aio-nr");
	}
	if (end - start >= CAP)
		fail_msg("aio-nr is %ld after %d create/destroy rounds at capacity %d, %ld before: kernel queues leaked",
			 end, ROUNDS, CAP, start);
	if (end != start)
		print_message("# aio-nr %ld -> %ld: another process's change (less than one queue of %d)\n", start,
			      end, CAP);
	if (counted == 0)
		print_message("# note: aio-nr never showed a queue of %d while one existed\n", CAP);
}

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_destroy_runs_callbacks),
		cmocka_unit_test(test_destroy_discards_events),
		cmocka_unit_test(test_destroy_reentry),
		cmocka_unit_test(test_destroy_kernel_holds_no_pointer),
		cmocka_unit_test(test_destroy_idle),
		cmocka_unit_test(test_destroy_closes_descriptors),
		cmocka_unit_test(test_destroy_returns_kernel_queue),
		cmocka_unit_test(test_fork_child_gets_echild),
		cmocka_unit_test(test_fork_with_io_in_flight),
		cmocka_unit_test(test_fork_alloc_memory_absent),
		cmocka_unit_test(test_fork_child_own_context),
		cmocka_unit_test(test_fork_while_threads_do_io),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
