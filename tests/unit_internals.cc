// Unit tests of the internals (linked to the convenience library): error
// sentences, the fd learner and its cache, buffer handles and the
// type-stable handle pool, fork detection.
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

// Internal headers first: cmocka's fail() macro would eat kaio::fail.
#include "buffer.h"
#include "errors.h"
#include "fdinfo.h"
#include "forkgen.h"
#include "handles.h"

#include "common.h"

using namespace kaio;

// fail() records a formatted sentence and returns -errno; fail_fixed() a
// fixed one.  A LastErrorGuard brings back the sentence from before it,
// however many failures happened meanwhile, unless told to keep the new.
static void test_errors_record_and_guard(void **)
{
	assert_int_equal((kaio::fail)(EINVAL, "first %d", 1), -EINVAL);
	assert_string_equal(last_error(), "first 1");
	{
		LastErrorGuard guard;
		for (int i = 0; i < 5; i++) {
			assert_int_equal((kaio::fail)(EBADF, "failure %d", i), -EBADF);
			assert_string_equal(last_error(), i == 0 ? "failure 0" : last_error());
		}
		assert_string_equal(last_error(), "failure 4");
	}
	assert_string_equal(last_error(), "first 1");
	{
		LastErrorGuard guard;
		(kaio::fail)(EBADF, "second %s", "x");
		(kaio::fail)(EBADF, "third %s", "y");
		guard.keep_new();
	}
	assert_string_equal(last_error(), "third y");
	assert_int_equal(fail_fixed(EAGAIN, "fixed"), -EAGAIN);
	assert_string_equal(last_error(), "fixed");
}

// errno_text takes either sign, 0, and unknown numbers, never NULL.
static void test_errno_text(void **)
{
	assert_string_equal(errno_text(0), "Success");
	assert_string_equal(errno_text(-EINVAL), errno_text(EINVAL));
	assert_non_null(strstr(errno_text(EINVAL), "nvalid"));
	assert_non_null(strstr(errno_text(123456), "123456"));
	assert_non_null(errno_text(INT32_MIN));
}

// learn_fd: a closed fd is EBADF with a sentence; kinds and access modes.
static void test_learn_fd_kinds(void **)
{
	FdInfo info;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	close(fds[1]);
	assert_int_equal(learn_fd(fds[1], &info, "test"), -EBADF);
	assert_non_null(strstr(last_error(), "test: fd "));
	assert_non_null(strstr(last_error(), "not an open file descriptor"));
	assert_int_equal(learn_fd(fds[0], &info, "test"), 0);
	assert_true(info.kind == FdKind::kOther);
	assert_string_equal(fd_kind_name(info), "pipe");
	assert_true(info.readable);
	assert_false(info.writable);
	close(fds[0]);

	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(learn_fd(sv[0], &info, "test"), 0);
	assert_string_equal(fd_kind_name(info), "socket");
	close(sv[0]);
	close(sv[1]);

	int dfd = open(kt_dir(), O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	assert_int_equal(learn_fd(dfd, &info, "test"), 0);
	assert_true(info.kind == FdKind::kDirectory);
	close(dfd);
}

// An O_DIRECT regular file on disk reports power-of-two alignments; the
// same file without O_DIRECT reports none.
static void test_learn_fd_alignment(void **)
{
	int fd = kt_make_file("align", 4096, O_RDWR | O_DIRECT);
	FdInfo info;
	assert_int_equal(learn_fd(fd, &info, "test"), 0);
	assert_true(info.direct);
	assert_true(info.kind == FdKind::kRegular);
	assert_true(info.mem_align >= 1 && (info.mem_align & (info.mem_align - 1)) == 0);
	assert_true(info.off_align >= 1 && (info.off_align & (info.off_align - 1)) == 0);
	close(fd);
	fd = open(kt_path("align"), O_RDONLY);
	assert_int_equal(learn_fd(fd, &info, "test"), 0);
	assert_false(info.direct);
	assert_int_equal(info.mem_align, 0);
	close(fd);
}

// The cache keeps what it learnt (even after F_SETFL) until refresh() or
// forget(); refresh() relearns; fds beyond the table are learnt each time.
static void test_fd_cache(void **)
{
	FdCache cache;
	int fd = kt_make_file("cache", 4096, O_RDWR | O_DIRECT);
	FdInfo a, b;
	assert_int_equal(cache.get(fd, &a, "test"), 0);
	assert_true(a.direct);
	int fl = fcntl(fd, F_GETFL);
	assert_int_equal(fcntl(fd, F_SETFL, fl & ~O_DIRECT), 0);
	assert_int_equal(cache.get(fd, &b, "test"), 0);
	assert_true(b.direct); // cached
	assert_int_equal(b.mem_align, a.mem_align);
	assert_int_equal(b.off_align, a.off_align);
	assert_true(b.kind == a.kind);
	assert_int_equal(cache.refresh(fd, &b, "test"), 0);
	assert_false(b.direct);
	assert_int_equal(fcntl(fd, F_SETFL, fl), 0);
	cache.forget(fd);
	assert_int_equal(cache.get(fd, &b, "test"), 0);
	assert_true(b.direct);

	// A number above the table (dup2 to a high fd needs RLIMIT_NOFILE).
	int high = fcntl(fd, F_DUPFD, 1 << 20);
	if (high >= 0) {
		assert_int_equal(cache.get(high, &b, "test"), 0);
		assert_true(b.direct);
		close(high);
		assert_int_equal(cache.get(high, &b, "test"), -EBADF);
	}
	close(fd);
	// A closed fd that was cached is answered from the cache (the kernel
	// refuses it at submission, which forgets it); refresh says EBADF.
	assert_int_equal(cache.refresh(fd, &b, "test"), -EBADF);
	assert_int_equal(cache.get(fd, &b, "test"), -EBADF);
}

// A buffer's last put marks the handle dead, runs the release once, and
// the handle is refused afterwards (buf_live false).
static int releases;
static void count_release(void *, size_t, void *opaque)
{
	releases++;
	*static_cast<int *>(opaque) += 1;
}

static void test_buffer_lifecycle(void **)
{
	char mem[64];
	int mine = 0;
	kaio_buf *b = nullptr;
	releases = 0;
	assert_int_equal(buf_wrap(&b, mem, sizeof mem, count_release, &mine), 0);
	assert_true(buf_live(b));
	buf_get(b);
	buf_put(b);
	assert_int_equal(releases, 0);
	buf_put(b);
	assert_int_equal(releases, 1);
	assert_int_equal(mine, 1);
	assert_false(buf_live(b));
	assert_int_equal(buf_refused(b, "x"), -EINVAL);
	assert_non_null(strstr(last_error(), "already freed"));

	assert_int_equal(buf_alloc(&b, 10000, 0), 0);
	assert_int_equal(reinterpret_cast<uintptr_t>(b->data) % 4096, 0);
	assert_int_equal(b->len, 10000);
	assert_int_equal(b->map_len, 12288);
	buf_put(b);
	assert_false(buf_live(b));
}

// The pool hands back a released handle only after its quarantine, oldest
// first, so a just-released handle stays dead.
struct Thing {
	int magic = 0;
};
static void test_handle_pool_quarantine(void **)
{
	HandlePool<Thing> pool;
	Thing *first = pool.acquire();
	first->magic = -1;
	pool.release(first);
	for (int i = 0; i < 64; i++) {
		Thing *t = pool.acquire();
		assert_ptr_not_equal(t, first);
		t->magic = -1;
		pool.release(t);
	}
	Thing *again = pool.acquire(); // 65 released: the oldest comes back
	assert_ptr_equal(again, first);
	assert_int_equal(again->magic, 0);
	pool.release(again);
}

// The child of a fork() sees a new fork generation; the parent does not.
static void test_fork_generation(void **)
{
	ensure_fork_handler();
	unsigned before = fork_generation();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fork_generation() != before ? 0 : 1);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(fork_generation(), before);
}

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_errors_record_and_guard),
		cmocka_unit_test(test_errno_text),
		cmocka_unit_test(test_learn_fd_kinds),
		cmocka_unit_test(test_learn_fd_alignment),
		cmocka_unit_test(test_fd_cache),
		cmocka_unit_test(test_buffer_lifecycle),
		cmocka_unit_test(test_handle_pool_quarantine),
		cmocka_unit_test(test_fork_generation),
	};
	return cmocka_run_group_tests(tests, nullptr, nullptr);
}
