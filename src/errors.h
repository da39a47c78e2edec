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

// Puts back a last error read with last_error() before one more failure
// was recorded: a call that succeeds overall (a partial kaio_submit) may
// meet one refusal on the way, and only failures change the last error.
// Formatted messages alternate between two buffers, so the one before the
// latest failure is still intact.
void restore_last_error(const char *previous);

} // namespace kaio
