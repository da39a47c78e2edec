#include "errors.h"

#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace kaio {
namespace {

constexpr size_t kMessageSize = 512;
thread_local char tl_messages[2][kMessageSize];
thread_local const char *tl_last = "";
thread_local char tl_errno_text[64];

} // namespace

int fail(int err, const char *fmt, ...)
{
	char *buf = tl_last == tl_messages[0] ? tl_messages[1] : tl_messages[0];
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

void restore_last_error(const char *previous)
{
	tl_last = previous;
}

} // namespace kaio
