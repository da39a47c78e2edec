// Fault injection through the syscall seam: the test binary is linked with
// -Wl,--wrap=kaio_sys_io_{setup,submit,getevents}, so each call can be
// answered from a script (an error, a partial count, a rewritten result)
// before falling through to the real kernel.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fcntl.h>
#include <unistd.h>

#include "sysaio.h"

#include "common.h"

namespace {

enum class Kind { kError, kLimit, kRewriteRes };
struct Answer {
	Kind kind;
	long value; // -errno, a count limit, or the result to report
};
std::deque<Answer> submit_script, getevents_script, setup_script;
int submit_calls, getevents_calls;

void reset_scripts()
{
	submit_script.clear();
	getevents_script.clear();
	setup_script.clear();
	submit_calls = getevents_calls = 0;
}

} // namespace

extern "C" {
int __real_kaio_sys_io_setup(unsigned nr, io_context_t *ctx);
int __real_kaio_sys_io_submit(io_context_t ctx, long nr, struct iocb **iocbs);
int __real_kaio_sys_io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event *events,
                                 struct timespec *timeout);

int __wrap_kaio_sys_io_setup(unsigned nr, io_context_t *ctx)
{
	if (!setup_script.empty()) {
		Answer a = setup_script.front();
		setup_script.pop_front();
		return int(a.value);
	}
	return __real_kaio_sys_io_setup(nr, ctx);
}

int __wrap_kaio_sys_io_submit(io_context_t ctx, long nr, struct iocb **iocbs)
{
	submit_calls++;
	if (!submit_script.empty()) {
		Answer a = submit_script.front();
		submit_script.pop_front();
		if (a.kind == Kind::kError)
			return int(a.value);
		if (a.kind == Kind::kLimit && nr > a.value)
			nr = a.value;
	}
	return __real_kaio_sys_io_submit(ctx, nr, iocbs);
}

int __wrap_kaio_sys_io_getevents(io_context_t ctx, long min_nr, long nr, struct io_event *events,
                                 struct timespec *timeout)
{
	getevents_calls++;
	if (!getevents_script.empty()) {
		Answer a = getevents_script.front();
		if (a.kind == Kind::kError) {
			getevents_script.pop_front();
			return int(a.value);
		}
		int r = __real_kaio_sys_io_getevents(ctx, min_nr, nr, events, timeout);
		if (r > 0) {
			getevents_script.pop_front();
			for (int i = 0; i < r; i++)
				events[i].res = static_cast<unsigned long>(a.value);
		}
		return r;
	}
	return __real_kaio_sys_io_getevents(ctx, min_nr, nr, events, timeout);
}
}

namespace {

int releases;
void count_release(void *, size_t, void *)
{
	releases++;
}

struct Fixture {
	kaio_ctx *ctx;
	int fd;
	void *mem;
	kaio_buf *buf; // wrapped: releases counts when its last reference goes
};

int setup(void **state)
{
	reset_scripts();
	releases = 0;
	auto *f = new Fixture();
	f->ctx = kt_ctx(16, 0);
	f->fd = kt_make_file("seam", 1 << 20, O_RDWR | O_DIRECT);
	assert_int_equal(posix_memalign(&f->mem, 4096, 65536), 0);
	assert_int_equal(kaio_buf_wrap(&f->buf, f->mem, 65536, count_release, nullptr), 0);
	*state = f;
	return 0;
}

int teardown(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	reset_scripts();
	if (f->ctx)
		assert_int_equal(kaio_ctx_destroy(f->ctx), 0);
	kaio_buf_unref(f->buf);
	free(f->mem);
	close(f->fd);
	delete f;
	return 0;
}

struct kaio_op read_op(const Fixture *f, unsigned i)
{
	struct kaio_op op = {};
	op.op = KAIO_OP_READ;
	op.fd = f->fd;
	op.offset = i * 4096ull;
	op.buf = f->buf;
	op.buf_offset = i * 4096ull;
	op.len = 4096;
	op.user_data = 100 + i;
	return op;
}

// Collects n events (no callbacks), checks each user_data came once.
void expect_delivered_once(Fixture *f, unsigned first, unsigned n)
{
	struct kaio_event ev[16];
	kt_wait_n(f->ctx, ev, n);
	unsigned seen[16] = {};
	for (unsigned i = 0; i < n; i++) {
		assert_true(ev[i].user_data >= 100 + first && ev[i].user_data < 100 + first + n);
		seen[ev[i].user_data - 100 - first]++;
		assert_int_equal(ev[i].res, 4096);
		assert_ptr_equal(ev[i].buf, f->buf);
		kaio_buf_unref(ev[i].buf);
	}
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(kaio_poll(f->ctx, ev, 16), 0);
	assert_int_equal(kaio_ctx_inflight(f->ctx), 0);
}

// A partial io_submit is continued: every operation accepted, each
// delivered exactly once.
void test_partial_submit_is_continued(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	struct kaio_op ops[4];
	for (unsigned i = 0; i < 4; i++)
		ops[i] = read_op(f, i);
	submit_script = {{Kind::kLimit, 1}, {Kind::kLimit, 2}};
	assert_int_equal(kaio_submit(f->ctx, ops, 4), 4);
	assert_int_equal(submit_calls, 3);
	expect_delivered_once(f, 0, 4);
}

// A kernel EAGAIN that persists hands the whole batch back: -EAGAIN, no
// reference kept, no capacity used.
void test_kernel_eagain_hands_back(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	struct kaio_op ops[3];
	for (unsigned i = 0; i < 3; i++)
		ops[i] = read_op(f, i);
	for (int i = 0; i < 10; i++)
		submit_script.push_back({Kind::kError, -EAGAIN});
	assert_int_equal(kaio_submit(f->ctx, ops, 3), -EAGAIN);
	assert_non_null(strstr(kaio_last_error(), "EAGAIN"));
	assert_int_equal(kaio_ctx_inflight(f->ctx), 0);
	kaio_buf *extra = kaio_buf_ref(f->buf);
	kaio_buf_unref(extra);
	assert_int_equal(releases, 0);
	kaio_buf_unref(f->buf); // the caller's was the only reference left
	assert_int_equal(releases, 1);
	f->buf = nullptr;
}

// A transient kernel EAGAIN or EINTR is retried inside.
void test_transient_eagain_and_eintr_retried(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	struct kaio_op op = read_op(f, 0);
	submit_script = {{Kind::kError, -EAGAIN}, {Kind::kError, -EINTR}, {Kind::kError, -EAGAIN}};
	assert_int_equal(kaio_submit(f->ctx, &op, 1), 1);
	expect_delivered_once(f, 0, 1);
}

// A kernel refusal mid-batch: the accepted prefix is reported, the rest
// take nothing; a partial success leaves the last error as it was.
void test_kernel_error_mid_batch(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	struct kaio_op ops[4];
	for (unsigned i = 0; i < 4; i++)
		ops[i] = read_op(f, i);
	assert_int_equal(kaio_ctx_create(nullptr, 1, 0), -EINVAL); // a known last error
	char before[256];
	snprintf(before, sizeof before, "%s", kaio_last_error());
	submit_script = {{Kind::kLimit, 2}, {Kind::kError, -ENOMEM}};
	assert_int_equal(kaio_submit(f->ctx, ops, 4), 2);
	assert_string_equal(kaio_last_error(), before);
	assert_int_equal(kaio_ctx_inflight(f->ctx), 2);
	expect_delivered_once(f, 0, 2);
	// The kernel refusing the first operation: its errno, with a sentence.
	submit_script = {{Kind::kError, -EBADF}};
	assert_int_equal(kaio_submit(f->ctx, ops + 2, 2), -EBADF);
	assert_non_null(strstr(kaio_last_error(), "kernel refused"));
	assert_int_equal(kaio_ctx_inflight(f->ctx), 0);
	// Nothing kept a reference: dropping ours releases now.
	kaio_buf_unref(f->buf);
	assert_int_equal(releases, 1);
	f->buf = nullptr;
}

// io_setup EAGAIN (aio-max-nr exhausted) names the sysctl; ENOMEM passes.
void test_setup_failures(void **)
{
	kaio_ctx *ctx = nullptr;
	setup_script = {{Kind::kError, -EAGAIN}};
	assert_int_equal(kaio_ctx_create(&ctx, 8, 0), -EAGAIN);
	assert_non_null(strstr(kaio_last_error(), "aio-max-nr"));
	assert_null(ctx);
	setup_script = {{Kind::kError, -ENOMEM}};
	assert_int_equal(kaio_ctx_create(&ctx, 8, 0), -ENOMEM);
	assert_true(kaio_last_error()[0] != '\0');
	assert_null(ctx);
}

// io_getevents EINTR is retried; results the kernel reports (EIO, ENOSPC,
// short transfers) are delivered as they are.
void test_completion_results_delivered(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	const long results[] = {-EINTR, -EIO, -ENOSPC, 512};
	for (long want : results) {
		struct kaio_op op = read_op(f, 0);
		if (want == -EINTR)
			getevents_script = {{Kind::kError, -EINTR}};
		else
			getevents_script = {{Kind::kRewriteRes, want}};
		assert_int_equal(kaio_submit(f->ctx, &op, 1), 1);
		struct kaio_event ev;
		kt_wait_n(f->ctx, &ev, 1);
		assert_int_equal(ev.res, want == -EINTR ? 4096 : want);
		kaio_buf_unref(ev.buf);
	}
	assert_int_equal(kaio_ctx_inflight(f->ctx), 0);
}

// When io_getevents fails during destroy, destroy still waits for the
// kernel (io_destroy) before dropping references; callbacks run once.
int destroy_callbacks;
int64_t destroy_res;
void destroy_cb(const struct kaio_event *ev)
{
	destroy_callbacks++;
	destroy_res = ev->res;
}

void test_destroy_when_getevents_fails(void **state)
{
	auto *f = static_cast<Fixture *>(*state);
	destroy_callbacks = 0;
	struct kaio_op ops[2] = {read_op(f, 0), read_op(f, 1)};
	ops[0].cb = destroy_cb;
	assert_int_equal(kaio_submit(f->ctx, ops, 2), 2);
	kaio_buf_unref(f->buf);
	f->buf = nullptr;
	for (int i = 0; i < 4; i++)
		getevents_script.push_back({Kind::kError, -EINVAL});
	assert_int_equal(kaio_ctx_destroy(f->ctx), 0);
	f->ctx = nullptr;
	assert_int_equal(destroy_callbacks, 1);
	assert_int_equal(destroy_res, -ECANCELED);
	assert_int_equal(releases, 1);
}

} // namespace

int main(void)
{
	kt_require_aio();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_partial_submit_is_continued, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_eagain_hands_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transient_eagain_and_eintr_retried, setup, teardown),
		cmocka_unit_test_setup_teardown(test_kernel_error_mid_batch, setup, teardown),
		cmocka_unit_test(test_setup_failures),
		cmocka_unit_test_setup_teardown(test_completion_results_delivered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_when_getevents_fails, setup, teardown),
	};
	return cmocka_run_group_tests(tests, nullptr, nullptr);
}
