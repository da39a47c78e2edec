// The public header used from C++ (-std=c++11 -pedantic -Werror): it
// compiles warning-free, its functions have C linkage (this program links
// against the C symbols of libkaio.so), and the ABI layout is as documented
// (API.md "Conventions").
#include "kaio.h"

#include <cstddef>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
static_assert(sizeof(kaio_event) == 64, "struct kaio_event is 64 bytes");
static_assert(sizeof(kaio_op) == 96, "struct kaio_op is 96 bytes");
static_assert(sizeof(kaio_vec) == 24, "struct kaio_vec is 24 bytes");
static_assert(offsetof(kaio_event, res) == 8, "kaio_event.res");
static_assert(offsetof(kaio_event, ctx) == 24, "kaio_event.ctx");
static_assert(offsetof(kaio_event, fd) == 40, "kaio_event.fd");
static_assert(offsetof(kaio_event, op) == 44, "kaio_event.op");
static_assert(offsetof(kaio_event, reserved) == 48, "kaio_event.reserved");
static_assert(offsetof(kaio_op, buf) == 40, "kaio_op.buf");
static_assert(offsetof(kaio_op, cb) == 56, "kaio_op.cb");
static_assert(offsetof(kaio_op, nvec) == 64, "kaio_op.nvec");
static_assert(offsetof(kaio_op, rw_flags) == 68, "kaio_op.rw_flags");
static_assert(offsetof(kaio_op, reserved32) == 76, "kaio_op.reserved32");
static_assert(offsetof(kaio_op, reserved) == 80, "kaio_op.reserved");
static_assert(offsetof(kaio_vec, len) == 16, "kaio_vec.len");
#endif

static_assert(std::is_standard_layout<kaio_event>::value && std::is_trivial<kaio_event>::value,
	      "kaio_event is a plain C struct");
static_assert(std::is_standard_layout<kaio_op>::value && std::is_trivial<kaio_op>::value,
	      "kaio_op is a plain C struct");
static_assert(std::is_same<decltype(kaio_event::res), int64_t>::value, "res is int64_t");
static_assert(std::is_same<decltype(kaio_event::user_data), uint64_t>::value, "user_data is uint64_t");
static_assert(std::is_same<decltype(kaio_op::fd), int32_t>::value, "fd is int32_t");

// Signatures exactly as documented, all 25 functions: std::is_same is exact,
// so no enum type (or any other type) can sneak into a parameter or return
// type without failing here (C would convert silently).
#define KT_SIGNATURE(fn, type) \
	static_assert(std::is_same<decltype(&fn), type>::value, #fn " has the documented signature")
KT_SIGNATURE(kaio_strerror, const char *(*)(int));
KT_SIGNATURE(kaio_last_error, const char *(*)());
KT_SIGNATURE(kaio_version, const char *(*)());
KT_SIGNATURE(kaio_ctx_create, int (*)(kaio_ctx **, unsigned, unsigned));
KT_SIGNATURE(kaio_ctx_destroy, int (*)(kaio_ctx *));
KT_SIGNATURE(kaio_ctx_fd, int (*)(const kaio_ctx *));
KT_SIGNATURE(kaio_ctx_wake, int (*)(kaio_ctx *));
KT_SIGNATURE(kaio_ctx_forget_fd, int (*)(kaio_ctx *, int));
KT_SIGNATURE(kaio_ctx_capacity, unsigned (*)(const kaio_ctx *));
KT_SIGNATURE(kaio_ctx_inflight, unsigned (*)(const kaio_ctx *));
KT_SIGNATURE(kaio_buf_alloc, int (*)(kaio_buf **, size_t, unsigned));
KT_SIGNATURE(kaio_buf_wrap, int (*)(kaio_buf **, void *, size_t, kaio_release_fn, void *));
KT_SIGNATURE(kaio_buf_ref, kaio_buf *(*)(kaio_buf *));
KT_SIGNATURE(kaio_buf_unref, void (*)(kaio_buf *));
KT_SIGNATURE(kaio_buf_data, void *(*)(const kaio_buf *));
KT_SIGNATURE(kaio_buf_len, size_t (*)(const kaio_buf *));
KT_SIGNATURE(kaio_read, int (*)(kaio_ctx *, int, uint64_t, kaio_buf *, size_t, size_t, kaio_cb, uint64_t));
KT_SIGNATURE(kaio_write, int (*)(kaio_ctx *, int, uint64_t, kaio_buf *, size_t, size_t, kaio_cb, uint64_t));
KT_SIGNATURE(kaio_readv, int (*)(kaio_ctx *, int, uint64_t, const kaio_vec *, unsigned, kaio_cb, uint64_t));
KT_SIGNATURE(kaio_writev, int (*)(kaio_ctx *, int, uint64_t, const kaio_vec *, unsigned, kaio_cb, uint64_t));
KT_SIGNATURE(kaio_sync, int (*)(kaio_ctx *, int, unsigned, kaio_cb, uint64_t));
KT_SIGNATURE(kaio_submit, int (*)(kaio_ctx *, const kaio_op *, unsigned));
KT_SIGNATURE(kaio_poll, int (*)(kaio_ctx *, kaio_event *, unsigned));
KT_SIGNATURE(kaio_wait, int (*)(kaio_ctx *, kaio_event *, unsigned, unsigned, int));
KT_SIGNATURE(kaio_fd_alignment, int (*)(int, uint32_t *, uint32_t *));
#undef KT_SIGNATURE
static_assert(std::is_same<kaio_release_fn, void (*)(void *, size_t, void *)>::value, "kaio_release_fn");
static_assert(std::is_same<kaio_cb, void (*)(const kaio_event *)>::value, "kaio_cb");

// Constants usable in constant expressions.
static_assert(KAIO_OP_FDATASYNC == 6 && KAIO_SYNC_FULL == 2, "enum values");
static_assert(KAIO_CAPACITY_MAX == 65536u, "capacity");

extern "C" {
static void release_fn(void *, size_t, void *) {}
static void cb_fn(const kaio_event *) {}
}

int main()
{
	// Calls through C linkage: a missing extern "C" would fail to link.
	const char *v = kaio_version();
	if (!v || !*v)
		return 1;
	const char *e = kaio_strerror(-22);
	if (!e || !*e)
		return 2;
	if (!kaio_last_error())
		return 3;
	if (kaio_ctx_capacity(nullptr) != 0 || kaio_buf_data(nullptr) != nullptr)
		return 4;
	kaio_release_fn r = release_fn;
	kaio_cb c = cb_fn;
	kaio_op op;
	std::memset(&op, 0, sizeof op);
	op.op = KAIO_OP_READ;
	op.cb = c;
	(void)r;
	// The loaded version starts with the header's major version.
	char major[16];
	int n = 0;
	for (int m = KAIO_VERSION_MAJOR; m > 0 && n < 15; m /= 10)
		major[n++] = static_cast<char>('0' + m % 10);
	if (n == 0)
		major[n++] = '0';
	for (int i = 0; i < n; i++)
		if (v[i] != major[n - 1 - i])
			return 5;
	if (v[n] != '.')
		return 6;
	return 0;
}
