#include "errors.h"

#include <cerrno>
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
	if (err < 0)
		err = -err;
	if (err > 0) { // -INT_MIN overflows back to negative: falls through
		const char *s = strerrordesc_np(err);
		if (s)
			return s;
	}
	snprintf(tl_errno_text, sizeof tl_errno_text, "Unknown error %d", err);
	return tl_errno_text;
}

void restore_last_error(const char *previous)
{
	tl_last = previous;
}

} // namespace kaio
