"""OSError construction: call-time refusals and completion-time failures."""

import errno
import os

from ._lib import lib

_last_error = lib.kaio_last_error

OP_NAMES = {1: "read", 2: "write", 3: "readv", 4: "writev", 5: "fsync", 6: "fdatasync"}


def last_error():
    """The calling thread's kaio_last_error() sentence ("" if none)."""
    s = _last_error()
    return s.decode("utf-8", "replace") if s else ""


def call_error(rc):
    """OSError for a refusal rc (-errno) just returned by a kaio call on this
    thread.  OSError(errno, msg) picks the subclass (BlockingIOError,
    FileNotFoundError, ...); the message is kaio_last_error()'s sentence."""
    err = -rc
    return OSError(err, last_error() or os.strerror(err))


def completion_error(res, op, fd, offset):
    """OSError for a completion with res < 0.  The kernel's completions do
    not set kaio_last_error(), so the message is built from strerror, the
    operation, the fd and the offset."""
    err = -res
    name = OP_NAMES.get(op, "operation %d" % op)
    if op in (1, 2, 3, 4):
        what = "%s of fd %d at offset %d failed" % (name, fd, offset)
    else:
        what = "%s of fd %d failed" % (name, fd)
    return OSError(err, "%s: %s" % (what, os.strerror(err)))


def closed_error(detail="the kaio context is closed"):
    return OSError(errno.ESHUTDOWN, detail)


def invalid(msg):
    return OSError(errno.EINVAL, msg)
