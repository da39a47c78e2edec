// The calling thread's last-error sentence and errno texts.
#pragma once

#include <cstddef>

namespace kaio {

// Sets the thread's last error to the formatted sentence; returns -err.
int fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Same with a fixed sentence: no formatting (the capacity path uses it).
int fail_fixed(int err, const char *msg);
const char *last_error();
// Text for an errno (either sign); never NULL.
const char *errno_text(int err);

// Keeps the thread's last error as it was when constructed, unless
// keep_new() is called: a call that succeeds overall (a partial
// kaio_submit) may meet refusals on the way, and only failures change the
// last error.  While a guard lives, new failures are formatted into
// buffers other than the one it protects.
class LastErrorGuard {
public:
	LastErrorGuard();
	~LastErrorGuard();
	void keep_new() { keep_ = true; }
	LastErrorGuard(const LastErrorGuard &) = delete;
	LastErrorGuard &operator=(const LastErrorGuard &) = delete;

private:
	const char *saved_;
	const char *outer_protected_;
	bool keep_ = false;
};

} // namespace kaio
