// Allocation failure inside the library: every malloc/calloc/new that the
// library's objects call is routed through wrappers (-Wl,--wrap=...) that
// can make the Nth one fail.  Each entry point is run with N = 0, 1, 2...
// until it succeeds without reaching a failure: every run must return 0
// or a clean -ENOMEM with a sentence, take no reference, keep no capacity,
// and leak nothing (the sanitizer and valgrind runs check the last part).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <initializer_list>
#include <new>
#include <unistd.h>

#include "common.h"

namespace {
int countdown = -1; // allocations left before one fails; -1: never
int failures;       // failures injected so far

bool inject()
{
	if (countdown < 0)
		return false;
	if (countdown-- == 0) {
		failures++;
		return true;
	}
	return false;
}

// Arms the wrappers for one call: the allocation number `n` (from 0) fails.
struct Armed {
	explicit Armed(int n)
	{
		countdown = n;
		failures = 0;
	}
	~Armed() { countdown = -1; }
	bool fired() const { return failures > 0; }
};
} // namespace

extern "C" {
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__wrap_malloc(size_t n)
{
	return inject() ? nullptr : __real_malloc(n);
}
void *__wrap_calloc(size_t n, size_t m)
{
	return inject() ? nullptr : __real_calloc(n, m);
}
// operator new(size_t), new(size_t, nothrow_t), new[](size_t, nothrow_t)
void *__real__Znwm(size_t n);
void *__wrap__Znwm(size_t n)
{
	if (inject())
		throw std::bad_alloc();
	return __real__Znwm(n);
}
void *__real__ZnwmRKSt9nothrow_t(size_t n, const std::nothrow_t &t);
void *__wrap__ZnwmRKSt9nothrow_t(size_t n, const std::nothrow_t &t)
{
	return inject() ? nullptr : __real__ZnwmRKSt9nothrow_t(n, t);
}
void *__real__ZnamRKSt9nothrow_t(size_t n, const std::nothrow_t &t);
void *__wrap__ZnamRKSt9nothrow_t(size_t n, const std::nothrow_t &t)
{
	return inject() ? nullptr : __real__ZnamRKSt9nothrow_t(n, t);
}
}

namespace {

int releases;
void count_release(void *, size_t, void *)
{
	releases++;
}

constexpr int kMaxSteps = 64;

// Runs op(n) for n = 0.. until it succeeds without an injected failure;
// check(rc, fired) validates each run.  Returns how many failures were
// survived.
template <class Op>
int each_failure(Op op)
{
	int survived = 0;
	for (int n = 0; n < kMaxSteps; n++) {
		bool fired;
		int rc;
		{
			Armed armed(n);
			rc = op();
			fired = armed.fired();
		}
		if (!fired) {
			if (rc < 0)
				fail_msg("without an injected failure the call failed: %d (%s)", rc,
				         kaio_last_error());
			printf("# survived %d injected allocation failures\n", survived);
			kt_figure_add("alloc_failures_injected", survived);
			return survived;
		}
		survived++;
		if (rc != 0 && rc != -ENOMEM)
			fail_msg("allocation %d failed: expected 0 or -ENOMEM, got %d (%s)", n, rc,
			         kaio_last_error());
		if (rc == -ENOMEM && kaio_last_error()[0] == '\0')
			fail_msg("allocation %d failed: -ENOMEM without a sentence", n);
	}
	fail_msg("still allocating after %d steps", kMaxSteps);
	return survived;
}

// kaio_ctx_create: -ENOMEM or a working context, nothing else.
void test_ctx_create(void **)
{
	each_failure([] {
		kaio_ctx *ctx = nullptr;
		int rc = kaio_ctx_create(&ctx, 8, 0);
		if (rc == 0) {
			assert_non_null(ctx);
			assert_int_equal(kaio_ctx_capacity(ctx), 8);
			assert_int_equal(kaio_ctx_destroy(ctx), 0);
		} else {
			assert_null(ctx);
		}
		return rc;
	});
}

// kaio_buf_wrap / kaio_buf_alloc: -ENOMEM runs no release, maps nothing.
void test_buffers(void **)
{
	static char mem[4096];
	releases = 0;
	each_failure([] {
		kaio_buf *b = nullptr;
		int rc = kaio_buf_wrap(&b, mem, sizeof mem, count_release, nullptr);
		if (rc == 0)
			kaio_buf_unref(b);
		return rc;
	});
	assert_int_equal(releases, 1); // only the successful one, exactly once
	each_failure([] {
		kaio_buf *b = nullptr;
		int rc = kaio_buf_alloc(&b, 8192, 0);
		if (rc == 0)
			kaio_buf_unref(b);
		return rc;
	});
}

// Submissions that allocate (a long vector; the fd cache's first table;
// a new context's first use of an fd): -ENOMEM takes no reference and no
// capacity; success delivers once.
void test_submissions(void **)
{
	int fd = kt_make_file("alloc", 1 << 20, O_RDWR | O_DIRECT);
	void *mem = nullptr;
	assert_int_equal(posix_memalign(&mem, 4096, 40 * 4096), 0);
	memset(mem, 0, 40 * 4096);
	kaio_buf *b = nullptr;
	releases = 0;
	assert_int_equal(kaio_buf_wrap(&b, mem, 40 * 4096, count_release, nullptr), 0);
	int high = fcntl(fd, F_DUPFD, 5000); // a fresh second-level cache table
	assert_true(high >= 0);
	for (int use_fd : {fd, high}) {
		each_failure([&] {
			kaio_ctx *ctx = nullptr;
			const int armed_at = countdown;
			countdown = -1; // the context itself is not under test here
			assert_int_equal(kaio_ctx_create(&ctx, 4, 0), 0);
			countdown = armed_at;
			struct kaio_vec vec[40];
			for (unsigned i = 0; i < 40; i++)
				vec[i] = {b, 4096ull * i, 4096};
			int rc = kaio_readv(ctx, use_fd, 0, vec, 40, nullptr, 9);
			const int saved = countdown;
			countdown = -1; // reaping and teardown are not under test
			if (rc == 0) {
				struct kaio_event ev;
				kt_wait_n(ctx, &ev, 1);
				assert_int_equal(ev.res, 40 * 4096);
			}
			assert_int_equal(kaio_ctx_inflight(ctx), 0);
			assert_int_equal(kaio_ctx_destroy(ctx), 0);
			countdown = saved;
			return rc;
		});
	}
	assert_int_equal(releases, 0); // no reference was kept or lost
	kaio_buf_unref(b);
	assert_int_equal(releases, 1);
	free(mem);
	close(high);
	close(fd);
}

} // namespace

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_create),
		cmocka_unit_test(test_buffers),
		cmocka_unit_test(test_submissions),
	};
	return cmocka_run_group_tests(tests, nullptr, nullptr);
}
