/* Integration tests: refcounted buffer handles (API.md "Buffers: refcounted
 * handles with release callbacks") and the references operations hold. */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

/* Records what a release function saw. */
struct rel {
	atomic_int count;
	void *data;
	size_t len;
	void *opaque;
	pthread_t thread;
};

static void rel_fn(void *data, size_t len, void *opaque)
{
	struct rel *r = opaque;
	r->data = data;
	r->len = len;
	r->opaque = opaque;
	r->thread = pthread_self();
	atomic_fetch_add(&r->count, 1);
}

static int rel_count(struct rel *r)
{
	return atomic_load(&r->count);
}

static void *xmemalign(size_t len)
{
	void *p = NULL;
	assert_int_equal(posix_memalign(&p, 4096, len), 0);
	memset(p, 0, len);
	return p;
}

/* A wrapped, page-aligned, zeroed block of len bytes tracked by r. */
static kaio_buf *wrap_tracked(size_t len, struct rel *r, void **mem)
{
	kaio_buf *b = NULL;
	memset(r, 0, sizeof *r);
	atomic_init(&r->count, 0);
	*mem = xmemalign(len);
	ACCEPTED(kaio_buf_wrap(&b, *mem, len, rel_fn, r));
	assert_non_null(b);
	return b;
}

/* Flags (VmFlags line of /proc/self/smaps) of the mapping holding addr.
 * MADV_DONTFORK sets VM_DONTCOPY, shown as "dc" ("dd" is VM_DONTDUMP);
 * mlock shows as "lo". */
static int vm_flags(const void *addr, char *out, size_t outsz)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[1024];
	int in = 0, found = 0;
	uintptr_t a = (uintptr_t)addr;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		unsigned long s, e;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3) {
			in = a >= s && a < e;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			size_t l = strlen(line + 8);
			if (l >= outsz)
				l = outsz - 1;
			memcpy(out, line + 8, l);
			out[l] = 0;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found ? 0 : -1;
}

static int has_vm_flag(const char *flags, const char *flag)
{
	char copy[512];
	snprintf(copy, sizeof copy, "%s", flags);
	for (char *save = NULL, *t = strtok_r(copy, " \n", &save); t; t = strtok_r(NULL, " \n", &save))
		if (strcmp(t, flag) == 0)
			return 1;
	return 0;
}

static int all_zero(const void *p, size_t len)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < len; i++)
		if (c[i])
			return 0;
	return 1;
}

/* Calls with a callback store their state in user_data. */
struct cbs {
	int calls;
	int rel_at_cb;          /* release count of rel when the callback ran */
	int rel2_at_cb;
	struct rel *rel, *rel2;
	kaio_buf *ev_buf;
	int64_t res;
	uint32_t op;
	int keep;               /* take a reference in the callback */
	kaio_buf *kept;
	size_t check_len;       /* verify the pattern in the buffer */
	uint64_t check_off;
	int data_ok;
};

static void cb_fn(const struct kaio_event *ev)
{
	struct cbs *s = (struct cbs *)(uintptr_t)ev->user_data;
	s->calls++;
	s->rel_at_cb = s->rel ? rel_count(s->rel) : -1;
	s->rel2_at_cb = s->rel2 ? rel_count(s->rel2) : -1;
	s->ev_buf = ev->buf;
	s->res = ev->res;
	s->op = ev->op;
	if (s->check_len && ev->buf)
		s->data_ok = kt_check(kaio_buf_data(ev->buf), s->check_len, s->check_off) == 0;
	if (s->keep)
		s->kept = kaio_buf_ref(ev->buf);
}

/* Reap until *calls reaches n (callbacks only; no event may be copied). */
static void wait_calls(kaio_ctx *ctx, int *calls, int n)
{
	struct kaio_event ev[4];
	for (int i = 0; *calls < n; i++) {
		if (i > 100)
			fail_msg("callback not run within 10 s (%d of %d)", *calls, n);
		int rc = kaio_wait(ctx, ev, 1, 4, 100);
		if (rc < 0)
			fail_msg("kaio_wait = %d: %s", rc, kaio_last_error());
		if (rc > 0)
			fail_msg("kaio_wait copied %d events for operations that had a callback", rc);
	}
}

static kaio_ctx *g_ctx;
static int g_fd; /* 1 MiB pattern file, O_DIRECT */

static int group_setup(void **state)
{
	g_ctx = kt_ctx(16, 0);
	g_fd = kt_make_file("bufs.dat", 1 << 20, O_RDWR | O_DIRECT);
	return 0;
}

static int group_teardown(void **state)
{
	kt_drain(g_ctx);
	assert_int_equal(kaio_ctx_destroy(g_ctx), 0);
	close(g_fd);
	return 0;
}

/* ---- kaio_buf_alloc -------------------------------------------------------- */

/* kaio_buf_alloc returns zero-filled, page-aligned memory; kaio_buf_len reports len; pooled blocks are zeroed on reuse. */
static void test_alloc_zeroed_aligned(void **state)
{
	static const size_t sizes[] = { 1, 512, 4096, 4097, 65536, 1 << 20, 3 << 20 };
	long page = sysconf(_SC_PAGESIZE);
	for (int round = 0; round < 2; round++) {
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			kaio_buf *b = NULL;
			ACCEPTED(kaio_buf_alloc(&b, sizes[i], 0));
			assert_non_null(b);
			unsigned char *p = kaio_buf_data(b);
			assert_non_null(p);
			if ((uintptr_t)p % (uintptr_t)page)
				fail_msg("buffer of %zu bytes at %p is not page-aligned", sizes[i], (void *)p);
			assert_int_equal(kaio_buf_len(b), sizes[i]);
			if (!all_zero(p, sizes[i]))
				fail_msg("buffer of %zu bytes (round %d) is not zero-filled", sizes[i], round);
			/* Dirty it all so that a pooled block must be zeroed on reuse. */
			memset(p, 0xA5, sizes[i]);
			kaio_buf_unref(b);
		}
	}
}

/* Unknown flag bits: -EINVAL. */
static void test_alloc_unknown_flags(void **state)
{
	static const unsigned bad[] = { 0x2, 0x4, 0x100, 0x80000000u, ~KAIO_BUF_LOCKED, ~0u };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		kaio_buf *b = NULL;
		REFUSED(EINVAL, kaio_buf_alloc(&b, 4096, bad[i]));
		if (b) {
			kaio_buf_unref(b);
			fail_msg("refused kaio_buf_alloc(flags %#x) still returned a handle", bad[i]);
		}
	}
}

/* The library refuses empty buffers: kaio_buf_alloc with len 0 -> -EINVAL. */
static void test_alloc_len_zero(void **state)
{
	kaio_buf *b = NULL;
	REFUSED(EINVAL, kaio_buf_alloc(&b, 0, 0));
	assert_null(b);
	REFUSED(EINVAL, kaio_buf_alloc(&b, 0, KAIO_BUF_LOCKED));
	assert_null(b);
}

/* KAIO_BUF_LOCKED also locks the memory in RAM (mlock). */
static void test_alloc_locked(void **state)
{
	kaio_buf *b = NULL;
	char flags[512];
	int rc = kaio_buf_alloc(&b, 65536, KAIO_BUF_LOCKED);
	if (rc == -ENOMEM || rc == -EPERM) {
		const char *m = kaio_last_error();
		if (!strcasestr(m, "memlock"))
			fail_msg("KAIO_BUF_LOCKED refused (%d) without naming RLIMIT_MEMLOCK: \"%s\"", rc, m);
		print_message("RLIMIT_MEMLOCK here forbids locking 64 KiB: %s\n", m);
		skip();
	}
	if (rc != 0)
		fail_msg("kaio_buf_alloc(65536, KAIO_BUF_LOCKED) = %d: %s", rc, kaio_last_error());
	void *p = kaio_buf_data(b);
	assert_int_equal(kaio_buf_len(b), 65536);
	assert_true(all_zero(p, 65536));
	if (vm_flags(p, flags, sizeof flags) != 0)
		fail_msg("no mapping in /proc/self/smaps holds %p", p);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* The sanitizers turn mlock(2) into a no-op: nothing to observe. */
	const int mlock_works = 0;
#else
	const int mlock_works = 1;
#endif
	if (mlock_works && !has_vm_flag(flags, "lo"))
		fail_msg("KAIO_BUF_LOCKED memory is not locked: VmFlags:%s", flags);
	if (!has_vm_flag(flags, "dc"))
		fail_msg("KAIO_BUF_LOCKED memory is not MADV_DONTFORK: VmFlags:%s", flags);
	kaio_buf_unref(b);

	/* A plain allocation is not locked. */
	b = kt_buf(65536);
	if (vm_flags(kaio_buf_data(b), flags, sizeof flags) != 0)
		fail_msg("no mapping in /proc/self/smaps holds the buffer");
	if (has_vm_flag(flags, "lo"))
		fail_msg("a buffer allocated without KAIO_BUF_LOCKED is locked: VmFlags:%s", flags);
	kaio_buf_unref(b);
}

struct locked_report {
	int skip;      /* 1: this environment cannot forbid mlock */
	int rc;        /* kaio_buf_alloc(LOCKED) */
	int rc_plain;  /* kaio_buf_alloc(0) under the same limit */
	char msg[400];
};

static void drop_ipc_lock(void)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	if (syscall(SYS_capget, &hdr, data) != 0)
		return;
	data[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
	(void)syscall(SYS_capset, &hdr, data);
}

/* When RLIMIT_MEMLOCK forbids KAIO_BUF_LOCKED, the error (-ENOMEM/-EPERM) says so (names RLIMIT_MEMLOCK / memlock). */
static void test_alloc_locked_rlimit(void **state)
{
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Child: no cmocka here. */
		struct locked_report r;
		memset(&r, 0, sizeof r);
		struct rlimit rl;
		getrlimit(RLIMIT_MEMLOCK, &rl);
		rl.rlim_cur = 0;
		setrlimit(RLIMIT_MEMLOCK, &rl);
		drop_ipc_lock();
		void *probe = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (probe != MAP_FAILED && mlock(probe, 65536) == 0)
			r.skip = 1;
		kaio_buf *b = NULL;
		if (!r.skip) {
			r.rc = kaio_buf_alloc(&b, 65536, KAIO_BUF_LOCKED);
			snprintf(r.msg, sizeof r.msg, "%s", kaio_last_error());
			if (r.rc == 0)
				kaio_buf_unref(b);
			b = NULL;
			r.rc_plain = kaio_buf_alloc(&b, 65536, 0);
			if (r.rc_plain == 0)
				kaio_buf_unref(b);
		}
		ssize_t w = write(pfd[1], &r, sizeof r);
		_exit(w == (ssize_t)sizeof r ? 0 : 1);
	}
	close(pfd[1]);
	struct locked_report r;
	ssize_t got = read(pfd[0], &r, sizeof r);
	close(pfd[0]);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (got != (ssize_t)sizeof r || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the child process failed (status %#x)", status);
	if (r.skip) {
		print_message("mlock still works with RLIMIT_MEMLOCK 0 here (CAP_IPC_LOCK cannot be dropped)\n");
		skip();
	}
	if (r.rc != -ENOMEM && r.rc != -EPERM)
		fail_msg("KAIO_BUF_LOCKED under RLIMIT_MEMLOCK 0 = %d (%s), expected -ENOMEM or -EPERM",
			 r.rc, r.msg);
	if (!strstr(r.msg, "RLIMIT_MEMLOCK") && !strcasestr(r.msg, "memlock"))
		fail_msg("the KAIO_BUF_LOCKED refusal does not name RLIMIT_MEMLOCK: \"%s\"", r.msg);
	print_message("KAIO_BUF_LOCKED under RLIMIT_MEMLOCK 0: %d \"%s\"\n", r.rc, r.msg);
	if (r.rc_plain != 0)
		fail_msg("a plain kaio_buf_alloc under RLIMIT_MEMLOCK 0 = %d: buffers must not be locked by default",
			 r.rc_plain);
}

/* kaio_buf_alloc memory is marked MADV_DONTFORK (absent in a fork child, handle still works), also when pooled. */
static void test_alloc_dontfork(void **state)
{
	char flags[512];
	for (int round = 0; round < 2; round++) {
		kaio_buf *b = kt_buf(8192);
		void *p = kaio_buf_data(b);
		if (vm_flags(p, flags, sizeof flags) != 0)
			fail_msg("no mapping in /proc/self/smaps holds %p", p);
		if (!has_vm_flag(flags, "dc"))
			fail_msg("round %d: buffer memory is not MADV_DONTFORK: VmFlags:%s", round, flags);
		memset(p, 0x5A, 8192);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* The kernel's view (/proc/self/smaps), not mincore():
			 * valgrind emulates mincore from its own bookkeeping. */
			char cflags[512];
			int code = 0;
			if (vm_flags(p, cflags, sizeof cflags) == 0) {
				code |= 1; /* memory present in the child */
				fprintf(stderr, "fork child: %p is mapped, VmFlags:%s", p, cflags);
			}
			if (kaio_buf_data(b) != p || kaio_buf_len(b) != 8192)
				code |= 2; /* handle does not work */
			/* The handle works in the child: dropping the child's
			 * copy of the reference must be harmless. */
			kaio_buf_unref(b);
			_exit(code ? 0x40 | code : 0);
		}
		int status = 0;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFEXITED(status) || (WEXITSTATUS(status) != 0 && (WEXITSTATUS(status) & 0xC0) != 0x40))
			fail_msg("the fork child failed (wait status %#x)", status);
		if (WEXITSTATUS(status) & 1)
			fail_msg("kaio_buf_alloc memory is still mapped in a fork child");
		if (WEXITSTATUS(status) & 2)
			fail_msg("kaio_buf_data/kaio_buf_len misbehave in a fork child");
		kaio_buf_unref(b); /* second round may get a pooled block */
	}
}

/* ---- kaio_buf_wrap / ref / unref -------------------------------------------- */

/* kaio_buf_wrap reports data/len back; release runs exactly once with (data, len, opaque) when the count reaches zero. */
static void test_wrap_release_once(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(12345, &r, &mem);
	assert_ptr_equal(kaio_buf_data(b), mem);
	assert_int_equal(kaio_buf_len(b), 12345);
	assert_int_equal(rel_count(&r), 0);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 1);
	assert_ptr_equal(r.data, mem);
	assert_int_equal(r.len, 12345);
	assert_ptr_equal(r.opaque, &r);
	assert_true(pthread_equal(r.thread, pthread_self()));
	free(mem);
}

struct unref_arg {
	kaio_buf *b;
	pthread_t self;
};

static void *unref_thread(void *p)
{
	struct unref_arg *a = p;
	a->self = pthread_self();
	kaio_buf_unref(a->b);
	return NULL;
}

/* The release runs on the thread that dropped the last reference. */
static void test_wrap_release_thread(void **state)
{
	struct rel r;
	void *mem;
	pthread_t t;
	struct unref_arg a;

	/* Another thread drops the last reference. */
	kaio_buf *b = wrap_tracked(4096, &r, &mem);
	assert_ptr_equal(kaio_buf_ref(b), b);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 0);
	a.b = b;
	assert_int_equal(pthread_create(&t, NULL, unref_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(rel_count(&r), 1);
	assert_true(pthread_equal(r.thread, a.self));
	free(mem);

	/* The other thread drops a reference first; this one drops the last. */
	b = wrap_tracked(4096, &r, &mem);
	a.b = kaio_buf_ref(b);
	assert_ptr_equal(a.b, b);
	assert_int_equal(pthread_create(&t, NULL, unref_thread, &a), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(rel_count(&r), 0);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 1);
	assert_true(pthread_equal(r.thread, pthread_self()));
	free(mem);
}

/* A NULL release function is allowed. */
static void test_wrap_null_release(void **state)
{
	void *mem = xmemalign(4096);
	kaio_buf *b = NULL;
	ACCEPTED(kaio_buf_wrap(&b, mem, 4096, NULL, NULL));
	assert_non_null(b);
	assert_ptr_equal(kaio_buf_data(b), mem);
	assert_int_equal(kaio_buf_len(b), 4096);
	/* Usable for I/O too. */
	ACCEPTED(kaio_read(g_ctx, g_fd, 8192, b, 0, 4096, NULL, 7));
	kaio_buf_unref(b);
	struct kaio_event ev;
	kt_wait_n(g_ctx, &ev, 1);
	assert_int_equal(ev.res, 4096);
	assert_ptr_equal(ev.buf, b);
	assert_int_equal(kt_check(mem, 4096, 8192), 0);
	kaio_buf_unref(ev.buf);
	free(mem);
}

/* kaio_buf_wrap with data NULL -> -EINVAL (and the release does not run). */
static void test_wrap_null_data(void **state)
{
	struct rel r;
	memset(&r, 0, sizeof r);
	kaio_buf *b = NULL;
	REFUSED(EINVAL, kaio_buf_wrap(&b, NULL, 4096, rel_fn, &r));
	assert_null(b);
	assert_int_equal(rel_count(&r), 0);
}

/* kaio_buf_ref returns buf and adds one reference; counting is exact. */
static void test_ref_adds_one(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(4096, &r, &mem);
	for (int i = 0; i < 5; i++)
		assert_ptr_equal(kaio_buf_ref(b), b);
	for (int i = 0; i < 5; i++) {
		kaio_buf_unref(b);
		if (rel_count(&r) != 0)
			fail_msg("released after %d of 6 references were dropped", i + 1);
	}
	assert_ptr_equal(kaio_buf_data(b), mem);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 1);
	free(mem);
}

/* kaio_buf_unref(NULL) is a no-op. */
static void test_unref_null(void **state)
{
	kaio_buf_unref(NULL);
	kaio_buf_unref(NULL);
	/* The library still works afterwards. */
	kaio_buf *b = kt_buf(4096);
	kaio_buf_unref(b);
}

struct hammer_arg {
	kaio_buf *b;
	int n;
};

static void *hammer_thread(void *p)
{
	struct hammer_arg *a = p;
	for (int i = 0; i < a->n; i++) {
		kaio_buf_ref(a->b);
		kaio_buf_unref(a->b);
	}
	return NULL;
}

/* Counting is atomic: concurrent ref/unref pairs never release early or twice. */
static void test_ref_atomic(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(4096, &r, &mem);
	pthread_t t[4];
	struct hammer_arg a = { b, 200000 };
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer_thread, &a), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(rel_count(&r), 0);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 1);
	free(mem);
}

/* ---- references held by operations ----------------------------------------- */

/* An accepted operation holds its own reference; without a callback the event carries it to ev.buf and the release runs only at kaio_buf_unref(ev.buf). */
static void test_op_holds_ref_event(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(16384, &r, &mem);
	ACCEPTED(kaio_read(g_ctx, g_fd, 4096, b, 0, 16384, NULL, 42));
	kaio_buf_unref(b); /* the caller's reference, right away */
	assert_int_equal(rel_count(&r), 0);
	assert_int_equal(kaio_ctx_inflight(g_ctx), 1);

	struct kaio_event ev;
	kt_wait_n(g_ctx, &ev, 1);
	assert_int_equal(ev.user_data, 42);
	assert_int_equal(ev.res, 16384);
	assert_ptr_equal(ev.buf, b);
	if (rel_count(&r) != 0)
		fail_msg("the release ran at delivery although the event carries the reference");
	assert_ptr_equal(kaio_buf_data(ev.buf), mem);
	assert_int_equal(kaio_buf_len(ev.buf), 16384);
	assert_int_equal(kt_check(mem, 16384, 4096), 0);
	kaio_buf_unref(ev.buf);
	assert_int_equal(rel_count(&r), 1);
	assert_ptr_equal(r.data, mem);
	assert_int_equal(r.len, 16384);
	assert_true(pthread_equal(r.thread, pthread_self()));
	free(mem);
}

/* With a callback, the library drops the operation's reference after the callback returns. */
static void test_op_ref_callback(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(8192, &r, &mem);
	struct cbs s;
	memset(&s, 0, sizeof s);
	s.rel = &r;
	s.check_len = 8192;
	s.check_off = 65536;
	ACCEPTED(kaio_read(g_ctx, g_fd, 65536, b, 0, 8192, cb_fn, (uintptr_t)&s));
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 0);
	wait_calls(g_ctx, &s.calls, 1);
	assert_int_equal(s.calls, 1);
	if (s.rel_at_cb != 0)
		fail_msg("the release ran before the callback (count %d in the callback)", s.rel_at_cb);
	assert_ptr_equal(s.ev_buf, b);
	assert_int_equal(s.res, 8192);
	assert_true(s.data_ok);
	if (rel_count(&r) != 1)
		fail_msg("the operation's reference was not dropped after the callback (release count %d)",
			 rel_count(&r));
	assert_true(pthread_equal(r.thread, pthread_self()));
	free(mem);
}

/* A callback that takes kaio_buf_ref keeps the buffer after delivery. */
static void test_op_ref_callback_keeps(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(4096, &r, &mem);
	struct cbs s;
	memset(&s, 0, sizeof s);
	s.rel = &r;
	s.keep = 1;
	ACCEPTED(kaio_read(g_ctx, g_fd, 0, b, 0, 4096, cb_fn, (uintptr_t)&s));
	kaio_buf_unref(b);
	wait_calls(g_ctx, &s.calls, 1);
	assert_ptr_equal(s.kept, b);
	if (rel_count(&r) != 0)
		fail_msg("the buffer was released although the callback took a reference");
	assert_int_equal(kt_check(kaio_buf_data(s.kept), 4096, 0), 0);
	kaio_buf_unref(s.kept);
	assert_int_equal(rel_count(&r), 1);
	free(mem);
}

/* READV/WRITEV: ev.buf is NULL and the vector's references are dropped at delivery. */
static void test_vec_refs_dropped(void **state)
{
	struct rel ra, rb;
	void *ma, *mb;
	kaio_buf *a = wrap_tracked(8192, &ra, &ma);
	kaio_buf *b = wrap_tracked(4096, &rb, &mb);
	struct kaio_vec vec[3] = {
		{ a, 4096, 4096 },
		{ b, 0, 4096 },
		{ a, 0, 512 },
	};
	ACCEPTED(kaio_readv(g_ctx, g_fd, 131072, vec, 3, NULL, 9));
	memset(vec, 0, sizeof vec); /* the vector is not retained */
	kaio_buf_unref(a);
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&ra), 0);
	assert_int_equal(rel_count(&rb), 0);

	struct kaio_event ev;
	memset(&ev, 0xff, sizeof ev);
	kt_wait_n(g_ctx, &ev, 1);
	assert_int_equal(ev.user_data, 9);
	assert_int_equal(ev.op, KAIO_OP_READV);
	assert_int_equal(ev.res, 4096 + 4096 + 512);
	assert_null(ev.buf);
	if (rel_count(&ra) != 1 || rel_count(&rb) != 1)
		fail_msg("READV delivered without a callback but vector references not dropped (releases %d, %d)",
			 rel_count(&ra), rel_count(&rb));
	assert_int_equal(kt_check((char *)ma + 4096, 4096, 131072), 0);
	assert_int_equal(kt_check(mb, 4096, 131072 + 4096), 0);
	assert_int_equal(kt_check(ma, 512, 131072 + 8192), 0);
	free(ma);
	free(mb);

	/* WRITEV with a callback: references held through the callback, dropped after it. */
	a = wrap_tracked(4096, &ra, &ma);
	b = wrap_tracked(4096, &rb, &mb);
	kt_fill(ma, 4096, 262144);
	kt_fill(mb, 4096, 262144 + 4096);
	struct kaio_vec wvec[2] = { { a, 0, 4096 }, { b, 0, 4096 } };
	struct cbs s;
	memset(&s, 0, sizeof s);
	s.rel = &ra;
	s.rel2 = &rb;
	ACCEPTED(kaio_writev(g_ctx, g_fd, 262144, wvec, 2, cb_fn, (uintptr_t)&s));
	kaio_buf_unref(a);
	kaio_buf_unref(b);
	wait_calls(g_ctx, &s.calls, 1);
	assert_int_equal(s.op, KAIO_OP_WRITEV);
	assert_int_equal(s.res, 8192);
	assert_null(s.ev_buf);
	if (s.rel_at_cb != 0 || s.rel2_at_cb != 0)
		fail_msg("WRITEV buffers released before its callback ran (%d, %d)", s.rel_at_cb, s.rel2_at_cb);
	if (rel_count(&ra) != 1 || rel_count(&rb) != 1)
		fail_msg("WRITEV vector references not dropped at delivery (releases %d, %d)",
			 rel_count(&ra), rel_count(&rb));
	free(ma);
	free(mb);
}

/* A refused submission takes no reference: the caller still holds its handle, the release does not run early. */
static void test_refused_takes_no_ref(void **state)
{
	struct rel r, r2;
	void *mem, *mem2;

	/* Refused for misalignment. */
	kaio_buf *b = wrap_tracked(8192, &r, &mem);
	REFUSED(EINVAL, kaio_read(g_ctx, g_fd, 0, b, 0, 100, NULL, 1));
	REFUSED(EBADF, kaio_write(g_ctx, -1, 0, b, 0, 4096, NULL, 1));
	REFUSED(EINVAL, kaio_read(g_ctx, g_fd, 0, b, 4096, 8192, NULL, 1)); /* past the buffer */
	assert_int_equal(rel_count(&r), 0);
	assert_int_equal(kaio_ctx_inflight(g_ctx), 0);
	assert_ptr_equal(kaio_buf_data(b), mem); /* still the caller's */
	kaio_buf_unref(b);
	if (rel_count(&r) != 1)
		fail_msg("a refused submission kept a reference (release count %d after the caller's unref)",
			 rel_count(&r));
	free(mem);

	/* A refused READV whose second segment is bad takes no reference to either buffer. */
	b = wrap_tracked(4096, &r, &mem);
	kaio_buf *b2 = wrap_tracked(4096, &r2, &mem2);
	struct kaio_vec vec[2] = { { b, 0, 4096 }, { b2, 1, 512 } };
	REFUSED(EINVAL, kaio_readv(g_ctx, g_fd, 0, vec, 2, NULL, 2));
	vec[1].offset = 4096; /* beyond b2 */
	REFUSED(EINVAL, kaio_readv(g_ctx, g_fd, 0, vec, 2, NULL, 2));
	assert_int_equal(rel_count(&r) + rel_count(&r2), 0);
	kaio_buf_unref(b);
	kaio_buf_unref(b2);
	if (rel_count(&r) != 1 || rel_count(&r2) != 1)
		fail_msg("a refused READV kept references (releases %d, %d)", rel_count(&r), rel_count(&r2));
	free(mem);
	free(mem2);

	/* Refused at capacity (-EAGAIN). */
	kaio_ctx *ctx = kt_ctx(1, 0);
	struct rel ra;
	void *ma;
	kaio_buf *a = wrap_tracked(4096, &ra, &ma);
	ACCEPTED(kaio_read(ctx, g_fd, 0, a, 0, 4096, NULL, 3));
	b = wrap_tracked(4096, &r, &mem);
	REFUSED(EAGAIN, kaio_read(ctx, g_fd, 4096, b, 0, 4096, NULL, 4));
	assert_int_equal(kaio_ctx_inflight(ctx), 1);
	kaio_buf_unref(b);
	if (rel_count(&r) != 1)
		fail_msg("a submission refused with -EAGAIN kept a reference");
	free(mem);
	kaio_buf_unref(a);
	assert_int_equal(rel_count(&ra), 0);
	struct kaio_event ev;
	kt_wait_n(ctx, &ev, 1);
	assert_int_equal(ev.user_data, 3);
	kaio_buf_unref(ev.buf);
	assert_int_equal(rel_count(&ra), 1);
	free(ma);
	assert_int_equal(kaio_ctx_destroy(ctx), 0);

	/* kaio_submit: ops after the first refusal take nothing. */
	struct rel rx, ry, rz;
	void *mx, *my, *mz;
	kaio_buf *x = wrap_tracked(4096, &rx, &mx);
	kaio_buf *y = wrap_tracked(4096, &ry, &my);
	kaio_buf *z = wrap_tracked(4096, &rz, &mz);
	struct kaio_op ops[3];
	memset(ops, 0, sizeof ops);
	for (int i = 0; i < 3; i++) {
		ops[i].op = KAIO_OP_READ;
		ops[i].fd = g_fd;
		ops[i].offset = 4096u * (unsigned)i;
		ops[i].len = 4096;
		ops[i].user_data = 100u + (unsigned)i;
	}
	ops[0].buf = x;
	ops[1].buf = y;
	ops[1].len = 100; /* misaligned */
	ops[2].buf = z;
	int rc = kaio_submit(g_ctx, ops, 3);
	if (rc != 1)
		fail_msg("kaio_submit with op 1 bad = %d (%s), expected 1", rc, kaio_last_error());
	kaio_buf_unref(x);
	kaio_buf_unref(y);
	kaio_buf_unref(z);
	if (rel_count(&ry) != 1 || rel_count(&rz) != 1)
		fail_msg("operations not accepted by kaio_submit kept references (releases %d, %d)",
			 rel_count(&ry), rel_count(&rz));
	assert_int_equal(rel_count(&rx), 0);
	kt_wait_n(g_ctx, &ev, 1);
	assert_int_equal(ev.user_data, 100);
	assert_ptr_equal(ev.buf, x);
	kaio_buf_unref(ev.buf);
	assert_int_equal(rel_count(&rx), 1);
	free(mx);
	free(my);
	free(mz);
}

/* The same buffer used by several operations at once: each holds its own reference (counts add up). */
static void test_shared_buffer_refs(void **state)
{
	struct rel r;
	void *mem;
	kaio_buf *b = wrap_tracked(5 * 4096, &r, &mem);
	struct cbs s[2];
	memset(s, 0, sizeof s);
	/* Two with callbacks, two without, one READV naming the buffer twice. */
	ACCEPTED(kaio_read(g_ctx, g_fd, 0, b, 0, 4096, cb_fn, (uintptr_t)&s[0]));
	ACCEPTED(kaio_read(g_ctx, g_fd, 4096, b, 4096, 4096, cb_fn, (uintptr_t)&s[1]));
	ACCEPTED(kaio_read(g_ctx, g_fd, 8192, b, 8192, 4096, NULL, 2));
	ACCEPTED(kaio_read(g_ctx, g_fd, 12288, b, 12288, 2048, NULL, 3));
	struct kaio_vec vec[2] = { { b, 12288 + 2048, 2048 }, { b, 16384, 4096 } };
	ACCEPTED(kaio_readv(g_ctx, g_fd, 12288 + 2048, vec, 2, NULL, 4));
	kaio_buf_unref(b);
	assert_int_equal(rel_count(&r), 0);

	struct kaio_event ev[3];
	int copied = 0;
	for (int i = 0; copied < 3 || s[0].calls + s[1].calls < 2; i++) {
		if (i > 100)
			fail_msg("operations not delivered within 10 s");
		int rc = kaio_wait(g_ctx, ev + copied, 1, (unsigned)(3 - copied), 100);
		if (rc < 0)
			fail_msg("kaio_wait = %d: %s", rc, kaio_last_error());
		copied += rc;
	}
	assert_int_equal(copied, 3);
	assert_int_equal(kaio_ctx_inflight(g_ctx), 0);
	/* The READV dropped its references at delivery; the callbacks' were dropped
	 * after they returned; the two READ events still hold one each. */
	if (rel_count(&r) != 0)
		fail_msg("released while two events still carry references");
	assert_int_equal(kt_check(mem, 5 * 4096, 0), 0);
	kaio_buf *held[2];
	int nheld = 0;
	for (int i = 0; i < 3; i++) {
		if (ev[i].op == KAIO_OP_READ) {
			assert_ptr_equal(ev[i].buf, b);
			assert_true(nheld < 2);
			held[nheld++] = ev[i].buf;
		} else {
			assert_int_equal(ev[i].op, KAIO_OP_READV);
			assert_null(ev[i].buf);
		}
	}
	assert_int_equal(nheld, 2);
	kaio_buf_unref(held[0]);
	assert_int_equal(rel_count(&r), 0);
	kaio_buf_unref(held[1]);
	assert_int_equal(rel_count(&r), 1);
	free(mem);
}

/* An alloc'd buffer's memory stays valid while an operation holds it after the caller's unref (pattern arrives intact). */
static void test_alloc_buffer_held_by_op(void **state)
{
	kaio_buf *b = kt_buf(65536);
	ACCEPTED(kaio_read(g_ctx, g_fd, 65536, b, 0, 65536, NULL, 77));
	kaio_buf_unref(b);
	/* Allocate and dirty other buffers meanwhile: none may get b's memory. */
	kaio_buf *o[4];
	for (int i = 0; i < 4; i++) {
		o[i] = kt_buf(65536);
		assert_ptr_not_equal(kaio_buf_data(o[i]), kaio_buf_data(b));
		memset(kaio_buf_data(o[i]), 0xEE, 65536);
	}
	struct kaio_event ev;
	kt_wait_n(g_ctx, &ev, 1);
	assert_ptr_equal(ev.buf, b);
	assert_int_equal(ev.res, 65536);
	assert_int_equal(kt_check(kaio_buf_data(ev.buf), 65536, 65536), 0);
	kaio_buf_unref(ev.buf);
	for (int i = 0; i < 4; i++)
		kaio_buf_unref(o[i]);
}

int main(void)
{
	kt_require_aio();
	alarm(900); /* a hung case fails the program instead of blocking forever */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_zeroed_aligned),
		cmocka_unit_test(test_alloc_unknown_flags),
		cmocka_unit_test(test_alloc_len_zero),
		cmocka_unit_test(test_alloc_locked),
		cmocka_unit_test(test_alloc_locked_rlimit),
		cmocka_unit_test(test_alloc_dontfork),
		cmocka_unit_test(test_wrap_release_once),
		cmocka_unit_test(test_wrap_release_thread),
		cmocka_unit_test(test_wrap_null_release),
		cmocka_unit_test(test_wrap_null_data),
		cmocka_unit_test(test_ref_adds_one),
		cmocka_unit_test(test_unref_null),
		cmocka_unit_test(test_ref_atomic),
		cmocka_unit_test(test_op_holds_ref_event),
		cmocka_unit_test(test_op_ref_callback),
		cmocka_unit_test(test_op_ref_callback_keeps),
		cmocka_unit_test(test_vec_refs_dropped),
		cmocka_unit_test(test_refused_takes_no_ref),
		cmocka_unit_test(test_shared_buffer_refs),
		cmocka_unit_test(test_alloc_buffer_held_by_op),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
