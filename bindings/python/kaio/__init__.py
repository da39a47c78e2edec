"""libkaio for Python: kernel AIO on O_DIRECT files, blocking or asyncio.

    import kaio, os
    fd = os.open("data.bin", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o644)
    with kaio.Context(capacity=64) as ctx:
        buf = kaio.Buffer(1 << 20)            # page-aligned, zero-filled
        memoryview(buf)[:4] = b"abcd"
        n = ctx.write(fd, buf, 0)             # blocking
        n = await ctx.read_async(fd, buf, 0)  # in a coroutine

ctypes and the standard library only.  The shared library is found through
KAIO_LIBRARY (a path; only there when set), else libkaio.so.1 through the
dynamic loader (LD_LIBRARY_PATH, ldconfig), else ctypes.util.find_library.

Errors are OSError, of the subclass its errno selects (BrokenPipeError for
ESHUTDOWN, ...).  A refusal at call time carries kaio_last_error()'s
sentence ("offset 100 is not aligned to 512 bytes, ..."); a failure the
kernel reports at completion carries strerror, the operation, the fd and
the offset.  Buffers must be writable (bytes and other read-only objects
raise TypeError) and C-contiguous.
"""

import collections as _collections
import operator as _operator
import ctypes as _ctypes

from ._lib import lib as _clib, LibraryNotFound
from ._buffer import Buffer
from ._context import (Context, RWF_DSYNC, RWF_SYNC, RWF_NOWAIT, RWF_APPEND, _fileno,
                       _INT_MIN, _INT_MAX)
from . import _errors

__all__ = ["Context", "Buffer", "version", "fd_alignment", "strerror", "Alignment",
           "LibraryNotFound", "library_path", "RWF_DSYNC", "RWF_SYNC", "RWF_NOWAIT",
           "RWF_APPEND"]

__version__ = "1.0.0"

Alignment = _collections.namedtuple("Alignment", ["memory", "offset"])
Alignment.__doc__ = ("Direct-I/O alignment in bytes of buffer addresses (memory) and of file "
                     "offsets and lengths (offset); 0 where none is known or enforced.")


def version():
    """The version string of the libkaio actually loaded ("1.0.0")."""
    return _clib.kaio_version().decode()


def library_path():
    """The name or path the shared library was loaded from."""
    return _clib._name


def strerror(err):
    """libkaio's text for an errno (positive or negative; an int)."""
    err = _operator.index(err)
    if not _INT_MIN <= err <= _INT_MAX:
        raise ValueError("errno %d is outside the range of a C int" % err)
    return _clib.kaio_strerror(err).decode("utf-8", "replace")


def fd_alignment(fd):
    """kaio_fd_alignment: Alignment(memory, offset) that libkaio enforces for
    fd; (0, 0) for an fd without O_DIRECT or whose alignment is unknown."""
    fd = _fileno(fd)
    mem, off = _ctypes.c_uint32(), _ctypes.c_uint32()
    rc = _clib.kaio_fd_alignment(fd, _ctypes.byref(mem), _ctypes.byref(off))
    if rc < 0:
        raise _errors.call_error(rc)
    return Alignment(mem.value, off.value)
