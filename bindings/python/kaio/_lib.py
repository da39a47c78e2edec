"""Loading libkaio.so.1 and declaring its C prototypes (ctypes only).

The library is found, in this order:

1. ``KAIO_LIBRARY`` -- a path (or soname) of the library. When it is set,
   it is the only place looked at: a wrong value is an error, not a silent
   fall-back to some other copy of the library.
2. ``libkaio.so.1`` through the dynamic loader (``LD_LIBRARY_PATH``, the
   ``ldconfig`` cache, the default directories).
3. ``ctypes.util.find_library("kaio")``.
"""

import ctypes
import ctypes.util
import os
import struct

__all__ = ["lib", "LibraryNotFound", "EVENT", "EVENT_SIZE", "RELEASE_FN"]

SONAME = "libkaio.so.1"


class LibraryNotFound(ImportError):
    """libkaio.so.1 could not be loaded (see the module docstring)."""


def _load():
    explicit = os.environ.get("KAIO_LIBRARY")
    if explicit:
        try:
            return ctypes.CDLL(explicit)
        except OSError as e:
            raise LibraryNotFound(
                "cannot load libkaio from KAIO_LIBRARY=%r: %s" % (explicit, e)) from None
    try:
        return ctypes.CDLL(SONAME)
    except OSError as e:
        first = e
    name = ctypes.util.find_library("kaio")
    if name:
        try:
            return ctypes.CDLL(name)
        except OSError as e:
            raise LibraryNotFound("cannot load libkaio (%s): %s" % (name, e)) from None
    raise LibraryNotFound(
        "cannot find libkaio: %s; install it, add its directory to LD_LIBRARY_PATH, "
        "or set KAIO_LIBRARY to the path of libkaio.so.1" % first)


lib = _load()

c_int, c_uint, c_size_t = ctypes.c_int, ctypes.c_uint, ctypes.c_size_t
c_uint64, c_uint32, c_void_p = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p
c_char_p = ctypes.c_char_p
P_void_p = ctypes.POINTER(c_void_p)
P_uint32 = ctypes.POINTER(c_uint32)

# void (*kaio_release_fn)(void *data, size_t len, void *opaque)
RELEASE_FN = ctypes.CFUNCTYPE(None, c_void_p, c_size_t, c_void_p)

_PROTOTYPES = {
    "kaio_strerror": (c_char_p, [c_int]),
    "kaio_last_error": (c_char_p, []),
    "kaio_version": (c_char_p, []),
    "kaio_ctx_create": (c_int, [P_void_p, c_uint, c_uint]),
    "kaio_ctx_destroy": (c_int, [c_void_p]),
    "kaio_ctx_fd": (c_int, [c_void_p]),
    "kaio_ctx_wake": (c_int, [c_void_p]),
    "kaio_ctx_forget_fd": (c_int, [c_void_p, c_int]),
    "kaio_ctx_capacity": (c_uint, [c_void_p]),
    "kaio_ctx_inflight": (c_uint, [c_void_p]),
    "kaio_buf_alloc": (c_int, [P_void_p, c_size_t, c_uint]),
    "kaio_buf_wrap": (c_int, [P_void_p, c_void_p, c_size_t, RELEASE_FN, c_void_p]),
    "kaio_buf_ref": (c_void_p, [c_void_p]),
    "kaio_buf_unref": (None, [c_void_p]),
    "kaio_buf_data": (c_void_p, [c_void_p]),
    "kaio_buf_len": (c_size_t, [c_void_p]),
    # ctx, fd, offset, buf, buf_offset, len, cb, user_data
    "kaio_read": (c_int, [c_void_p, c_int, c_uint64, c_void_p, c_size_t, c_size_t,
                          c_void_p, c_uint64]),
    "kaio_write": (c_int, [c_void_p, c_int, c_uint64, c_void_p, c_size_t, c_size_t,
                           c_void_p, c_uint64]),
    # ctx, fd, level, cb, user_data
    "kaio_sync": (c_int, [c_void_p, c_int, c_uint, c_void_p, c_uint64]),
    # ctx, const struct kaio_op *ops, n
    "kaio_submit": (c_int, [c_void_p, c_void_p, c_uint]),
    "kaio_poll": (c_int, [c_void_p, c_void_p, c_uint]),
    "kaio_wait": (c_int, [c_void_p, c_void_p, c_uint, c_uint, c_int]),
    "kaio_fd_alignment": (c_int, [c_int, P_uint32, P_uint32]),
}

for _name, (_res, _args) in _PROTOTYPES.items():
    try:
        _f = getattr(lib, _name)
    except AttributeError:
        raise LibraryNotFound(
            "%s is not libkaio 1.x: it has no %s()" % (lib._name, _name)) from None
    _f.restype = _res
    _f.argtypes = _args
del _name, _res, _args, _f

# struct kaio_event (64 bytes on LP64):
#   u64 user_data; i64 res; u64 offset; ptr ctx; ptr buf; i32 fd; u32 op;
#   u64 reserved[2]
# Decoded with struct (one call per event) rather than ctypes field access.
EVENT = struct.Struct("@QqQ%dxPiI16x" % ctypes.sizeof(c_void_p))
EVENT_SIZE = EVENT.size


class _Event(ctypes.Structure):
    _fields_ = [("user_data", c_uint64), ("res", ctypes.c_int64), ("offset", c_uint64),
                ("ctx", c_void_p), ("buf", c_void_p), ("fd", ctypes.c_int32),
                ("op", c_uint32), ("reserved", c_uint64 * 2)]


assert ctypes.sizeof(_Event) == EVENT_SIZE, "struct kaio_event layout mismatch"
