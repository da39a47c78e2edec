#include "errors.h"

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace kaio {
namespace {

constexpr size_t kMessageSize = 512;
// Three buffers: the one kaio_last_error() shows, the one a LastErrorGuard
// protects, and one to format into.
thread_local char tl_messages[3][kMessageSize];
// Small and used on every call: initial-exec (no __tls_get_addr call).
// The big buffers above stay general-dynamic: they are touched only on
// failures, and static TLS space for dlopen'ed libraries is scarce.
__attribute__((tls_model("initial-exec"))) thread_local const char *tl_protected = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local const char *tl_last = "";
thread_local char tl_errno_text[64];

} // namespace

int fail(int err, const char *fmt, ...)
{
	char *buf = tl_messages[0];
	for (char *candidate : tl_messages) {
		if (candidate != tl_last && candidate != tl_protected) {
			buf = candidate;
			break;
		}
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, kMessageSize, fmt, ap);
	va_end(ap);
	tl_last = buf;
	return -err;
}

int fail_fixed(int err, const char *msg)
{
	tl_last = msg;
	return -err;
}

const char *last_error()
{
	return tl_last;
}

const char *errno_text(int err)
{
	if (err == 0)
		return "Success";
	const long magnitude = err < 0 ? -static_cast<long>(err) : err; // INT_MIN too
	if (magnitude <= INT_MAX) {
		const char *s = strerrordesc_np(static_cast<int>(magnitude));
		if (s)
			return s;
	}
	snprintf(tl_errno_text, sizeof tl_errno_text, "Unknown error %ld", magnitude);
	return tl_errno_text;
}

LastErrorGuard::LastErrorGuard() : saved_(tl_last), outer_protected_(tl_protected)
{
	tl_protected = tl_last;
}

LastErrorGuard::~LastErrorGuard()
{
	tl_protected = outer_protected_;
	if (!keep_)
		tl_last = saved_;
}

} // namespace kaio
