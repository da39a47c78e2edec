#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char test_dir[4096];
static pid_t dir_owner;

void kt_skip_all(const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	printf("1..0 # SKIP %s\n", reason);
	fprintf(stderr, "skipped: %s\n", reason);
	fflush(stdout);
	exit(77);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static void remove_dir(void)
{
	if (test_dir[0] && getpid() == dir_owner)
		nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *kt_dir(void)
{
	if (!test_dir[0]) {
		const char *base = getenv("KAIO_TEST_DIR");
		if (!base || !*base)
			base = ".";
		snprintf(test_dir, sizeof test_dir, "%s/kaio-test.XXXXXX", base);
		if (!mkdtemp(test_dir))
			kt_skip_all("cannot create a test directory under %s: %s", base, strerror(errno));
		dir_owner = getpid();
		atexit(remove_dir);
	}
	return test_dir;
}

const char *kt_path(const char *name)
{
	static char bufs[8][4200];
	static unsigned next;
	char *b = bufs[next++ % 8];
	snprintf(b, sizeof bufs[0], "%s/%s", kt_dir(), name);
	return b;
}

int kt_no_loop(void)
{
	const char *v = getenv("KAIO_TEST_NO_LOOP");
	return v && *v && strcmp(v, "0") != 0;
}

void kt_require_aio(void)
{
	kaio_ctx *ctx = NULL;
	int rc = kaio_ctx_create(&ctx, 4, 0);
	if (rc == -ENOSYS || rc == -EPERM)
		kt_skip_all("kernel AIO is not available here: %s", kaio_last_error());
	if (rc == -EAGAIN)
		kt_skip_all("the system-wide AIO limit is exhausted: %s", kaio_last_error());
	if (rc < 0) {
		fprintf(stderr, "kaio_ctx_create failed: %s\n", kaio_last_error());
		exit(1);
	}
	kaio_ctx_destroy(ctx);
	int fd = open(kt_path(".odirect-probe"), O_RDWR | O_CREAT | O_DIRECT, 0600);
	if (fd < 0)
		kt_skip_all("the test directory %s refuses O_DIRECT (%s); set KAIO_TEST_DIR to a disk filesystem",
			    kt_dir(), strerror(errno));
	close(fd);
	unlink(kt_path(".odirect-probe"));
}

void kt_fill(void *p, size_t len, uint64_t file_off)
{
	unsigned char *c = p;
	for (size_t i = 0; i < len; i++) {
		uint64_t o = file_off + i;
		uint64_t w = (o & ~(uint64_t)7) * 0x9E3779B97F4A7C15ull ^ 0x6b61696full;
		c[i] = (unsigned char)(w >> (8 * (o & 7)));
	}
}

size_t kt_check(const void *p, size_t len, uint64_t file_off)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < len; i++) {
		uint64_t o = file_off + i;
		uint64_t w = (o & ~(uint64_t)7) * 0x9E3779B97F4A7C15ull ^ 0x6b61696full;
		if (c[i] != (unsigned char)(w >> (8 * (o & 7))))
			return i + 1;
	}
	return 0;
}

int kt_make_file(const char *name, size_t size, int flags)
{
	const char *path = kt_path(name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	char chunk[65536];
	for (size_t done = 0; done < size;) {
		size_t n = size - done < sizeof chunk ? size - done : sizeof chunk;
		kt_fill(chunk, n, done);
		assert_int_equal(pwrite(fd, chunk, n, (off_t)done), (ssize_t)n);
		done += n;
	}
	assert_int_equal(fsync(fd), 0);
	close(fd);
	fd = open(path, flags);
	assert_true(fd >= 0);
	return fd;
}

int kt_open(const char *name, int flags)
{
	int fd = open(kt_path(name), flags | O_CREAT, 0600);
	assert_true(fd >= 0);
	return fd;
}

kaio_ctx *kt_ctx(unsigned capacity, unsigned flags)
{
	kaio_ctx *ctx = NULL;
	int rc = kaio_ctx_create(&ctx, capacity, flags);
	if (rc < 0)
		fail_msg("kaio_ctx_create(%u, %#x) = %d: %s", capacity, flags, rc, kaio_last_error());
	return ctx;
}

kaio_buf *kt_buf(size_t len)
{
	kaio_buf *b = NULL;
	int rc = kaio_buf_alloc(&b, len, 0);
	if (rc < 0)
		fail_msg("kaio_buf_alloc(%zu) = %d: %s", len, rc, kaio_last_error());
	return b;
}

int kt_wait_n(kaio_ctx *ctx, struct kaio_event *events, unsigned n)
{
	unsigned copied = 0;
	while (copied < n) {
		int rc = kaio_wait(ctx, events + copied, n - copied, n - copied, 10000);
		if (rc < 0)
			fail_msg("kaio_wait = %d: %s", rc, kaio_last_error());
		if (rc == 0)
			fail_msg("kaio_wait: no event within 10 s (%u of %u copied, %u in flight)",
				 copied, n, kaio_ctx_inflight(ctx));
		copied += (unsigned)rc;
	}
	return (int)copied;
}

void kt_drain(kaio_ctx *ctx)
{
	struct kaio_event ev[16];
	for (int rounds = 0; kaio_ctx_inflight(ctx) > 0; rounds++) {
		if (rounds > 10000)
			fail_msg("kt_drain: %u operations never completed", kaio_ctx_inflight(ctx));
		int rc = kaio_wait(ctx, ev, 1, 16, 1000);
		if (rc < 0)
			fail_msg("kaio_wait = %d: %s", rc, kaio_last_error());
		for (int i = 0; i < rc; i++)
			kaio_buf_unref(ev[i].buf);
	}
}

int64_t kt_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kt_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static char marker[512];

void kt_set_marker(void)
{
	kaio_ctx *c = NULL;
	int rc = kaio_ctx_create(&c, 0, 0);
	if (rc >= 0) {
		kaio_ctx_destroy(c);
		fail_msg("kaio_ctx_create(capacity 0) was accepted");
	}
	snprintf(marker, sizeof marker, "%s", kaio_last_error());
	if (!marker[0])
		fail_msg("kaio_ctx_create(capacity 0) refused without a message");
}

const char *kt_marker(void)
{
	return marker;
}

static struct {
	const char *key;
	long long value;
} figures[16];
static pid_t figures_owner;
static void add_figure(const char *key, long long value);

static void print_figures(void)
{
	if (getpid() != figures_owner) /* a forked child that called exit() */
		return;
	for (size_t i = 0; i < sizeof figures / sizeof figures[0] && figures[i].key; i++)
		printf("# figure: %s %lld\n", figures[i].key, figures[i].value);
	fflush(stdout);
}

static pthread_mutex_t figures_lock = PTHREAD_MUTEX_INITIALIZER;

void kt_figure_add(const char *key, long long value)
{
	pthread_mutex_lock(&figures_lock);
	add_figure(key, value);
	pthread_mutex_unlock(&figures_lock);
}

static void add_figure(const char *key, long long value)
{
	size_t i = 0, n = sizeof figures / sizeof figures[0];
	while (i < n && figures[i].key && strcmp(figures[i].key, key) != 0)
		i++;
	if (i == n)
		return;
	if (!figures[i].key) {
		if (!figures_owner) {
			figures_owner = getpid();
			atexit(print_figures);
		}
		figures[i].key = key;
	}
	figures[i].value += value;
}

void kt_check_refused(int rc, int want1, int want2, const char *expr, int line)
{
	kt_figure_add("bad_inputs_refused", 1);
	const char *m = kaio_last_error();
	int ok = (want1 == 0 && rc < 0) || rc == -want1 || (want2 && rc == -want2);
	if (!ok)
		fail_msg("line %d: %s = %d (%s), expected -%d%s", line, expr, rc,
			 m ? m : "(null)", want1, want2 ? " or another listed errno" : "");
	if (!m || !m[0] || strcmp(m, marker) == 0)
		fail_msg("line %d: %s refused (%d) without setting its own kaio_last_error() (\"%s\")",
			 line, expr, rc, m ? m : "(null)");
}

void kt_wrapped_release(void *data, size_t len, void *opaque)
{
	struct kt_wrapped *w = opaque;
	atomic_fetch_add(&w->released, (data == w->mem && len == w->len) ? 1 : 1000);
}

kaio_buf *kt_wrapped_new_fn(struct kt_wrapped *w, size_t len, kaio_release_fn fn)
{
	w->len = len;
	atomic_store(&w->released, 0);
	assert_int_equal(posix_memalign(&w->mem, 4096, len), 0);
	memset(w->mem, 0, len);
	kaio_buf *b = NULL;
	EXPECT_RC(kaio_buf_wrap(&b, w->mem, len, fn, w), 0);
	assert_non_null(b);
	return b;
}

kaio_buf *kt_wrapped_new(struct kt_wrapped *w, size_t len)
{
	return kt_wrapped_new_fn(w, len, kt_wrapped_release);
}

void kt_wrapped_free(struct kt_wrapped *w)
{
	assert_int_equal(atomic_load(&w->released), 1);
	free(w->mem);
	w->mem = NULL;
}

int kt_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int kt_count_fds(void)
{
	int n = kt_count_entries("/proc/self/fd");
	assert_true(n >= 0);
	return n;
}
