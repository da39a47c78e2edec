"""kaio.Buffer, and turning any writable buffer-protocol object into a
kaio_buf handle for one operation."""

import ctypes
import functools
import itertools
import operator
import sys

from ._errors import call_error, invalid
from ._lib import lib, RELEASE_FN

__all__ = ["Buffer", "resolve"]

_alloc = lib.kaio_buf_alloc
_wrap = lib.kaio_buf_wrap
_unref = lib.kaio_buf_unref
_data = lib.kaio_buf_data

BUF_LOCKED = 0x1
# The largest length or offset passed to the library (ctypes would pass a
# larger int modulo 2**64).
INT64_MAX = 0x7FFFFFFFFFFFFFFF


class _Byte(ctypes.Union):
    # An array of a one-byte union exports the buffer format "B" (native
    # unsigned byte, 1-D), whereas arrays of c_ubyte export "<B": slice
    # assignment from bytes into such a memoryview fails, and indexing it
    # is not supported.  (Checked below; Python 3.12+ may use __buffer__.)
    _fields_ = [("b", ctypes.c_ubyte)]


class Buffer:
    """Page-aligned, zero-filled memory from kaio_buf_alloc().

    ``Buffer(length, locked=False)``.  It supports the buffer protocol:
    ``memoryview(buf)`` is 1-D, format ``'B'``, ``len(buf)`` bytes, writable.
    ``bytes(buf)``, ``buf[i]``, ``buf[a:b] = data`` work too.

    The memory is marked MADV_DONTFORK (a forked child does not have it) and,
    with ``locked=True``, mlock()ed (KAIO_BUF_LOCKED).  It is returned to the
    library when the object and every memoryview of it are gone and no
    operation still uses it: each operation holds its own C reference, so a
    buffer may be dropped right after submission.
    """

    __slots__ = ()

    def __new__(cls, length, *, locked=False):
        length = operator.index(length)
        if length <= 0:
            raise invalid("kaio.Buffer: length %d; a buffer needs at least one byte" % length)
        if length > INT64_MAX:
            raise invalid("kaio.Buffer: length %d is larger than any mapping" % length)
        out = ctypes.c_void_p()
        rc = _alloc(ctypes.byref(out), length, BUF_LOCKED if locked else 0)
        if rc < 0:
            raise call_error(rc)
        handle = out.value
        try:
            self = _buffer_type(length).from_address(_data(handle))
        except BaseException:
            _unref(handle)
            raise
        self._kaio_buf = handle
        return self

    def __init__(self, *args, **kwargs):
        pass  # everything is done in __new__ (and ctypes' Array.__init__ must not run)

    def __del__(self):
        handle = getattr(self, "_kaio_buf", None)
        if handle:
            self._kaio_buf = None
            try:
                _unref(handle)
            except Exception:  # interpreter shutdown
                pass

    @property
    def address(self):
        """The memory's address (page-aligned)."""
        return ctypes.addressof(self)

    @property
    def nbytes(self):
        return len(self)

    def __getitem__(self, index):
        return memoryview(self)[index]

    def __setitem__(self, index, value):
        memoryview(self)[index] = value

    def __repr__(self):
        return "<kaio.Buffer of %d bytes at %#x>" % (len(self), ctypes.addressof(self))

    def __reduce__(self):
        raise TypeError("kaio.Buffer cannot be pickled (copy bytes(buf) instead)")


@functools.lru_cache(maxsize=64)
def _buffer_type(length):
    # ctypes arrays have one type per length: a subclass of Buffer and of
    # (_Byte * length), so isinstance(x, kaio.Buffer) holds.
    return type(Buffer.__name__, (Buffer, _Byte * length),
                {"__slots__": ("_kaio_buf",), "__module__": "kaio",
                 "__qualname__": "Buffer", "__doc__": Buffer.__doc__})


def _check_format():
    mv = memoryview((_Byte * 2)())
    return mv.format == "B" and mv.ndim == 1 and mv.itemsize == 1


if not _check_format():  # pragma: no cover - other Pythons
    if sys.version_info >= (3, 12):
        def _buffer(self, flags):
            return memoryview(ctypes.cast(ctypes.addressof(self),
                                          ctypes.POINTER(ctypes.c_ubyte * len(self))).contents
                              ).cast("B")
        Buffer.__buffer__ = _buffer
    else:
        raise ImportError("kaio.Buffer: this Python's ctypes does not export format 'B'")


# ---- Wrapping other objects -------------------------------------------------

# opaque key -> (object, memoryview, ctypes view): what keeps a wrapped
# object alive, and its buffer exported (an mmap cannot be closed, a
# bytearray cannot be resized), until the library's last reference to the
# kaio_buf is dropped and the release callback runs.
_pins = {}
_pin_keys = itertools.count(1)
# The release callback runs inside a library call (kaio_buf_unref,
# kaio_ctx_destroy): it only moves the pin here, and Python code empties the
# list after that call returns, so no finaliser runs inside the library.
released = []


def _release(data, length, opaque):
    try:
        released.append(_pins.pop(opaque, None))
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


_release_cb = RELEASE_FN(_release)  # kept alive for the life of the module


def pinned_count():
    """How many wrapped objects the library still holds (for tests)."""
    return len(_pins)


def resolve(buf, length):
    """(handle, buf_offset, length, wrapped, keep) for an operation on buf.

    A kaio.Buffer (or a memoryview slice of one) is used through its own
    kaio_buf handle: the operation takes its own reference once submitted;
    until then the caller holds keep (the Buffer itself: a view of it may
    be released, and the Buffer freed, before a queued operation is
    submitted).  Any other writable, C-contiguous buffer-protocol object is
    wrapped with kaio_buf_wrap; wrapped is True and the caller drops its
    reference with kaio_buf_unref once the operation was submitted (or
    refused)."""
    if isinstance(buf, Buffer):
        if length is None:
            return buf._kaio_buf, 0, len(buf), False, buf
        return buf._kaio_buf, 0, _length(length), False, buf
    try:
        mv = memoryview(buf)
    except TypeError:
        raise TypeError("kaio needs a writable buffer-protocol object (kaio.Buffer, mmap, "
                        "bytearray, memoryview...), not %s" % type(buf).__name__) from None
    if mv.readonly:
        raise TypeError("kaio needs writable memory the kernel can pin; %s is read-only "
                        "(copy it into a kaio.Buffer)" % type(buf).__name__)
    if not mv.c_contiguous:
        raise TypeError("kaio needs a C-contiguous buffer; this %s is not" % type(buf).__name__)
    nbytes = mv.nbytes
    if length is not None:
        length = _length(length)
    cview = (ctypes.c_char * nbytes).from_buffer(mv)
    addr = ctypes.addressof(cview)
    owner = mv.obj
    if length is not None and length > nbytes:
        # A Buffer's handle covers the whole Buffer: the library could not
        # tell that the view ends first.
        raise invalid("kaio: length %d is larger than the buffer (%d bytes)" % (length, nbytes))
    if isinstance(owner, Buffer):
        off = addr - ctypes.addressof(owner)
        if 0 <= off and off + nbytes <= len(owner):
            return owner._kaio_buf, off, nbytes if length is None else length, False, owner
    if nbytes == 0:
        # Nothing to pin. As for an empty slice of a kaio.Buffer, the
        # operation still goes to the library (which checks the fd) and the
        # kernel answers 0 bytes: it runs on a Buffer of the module's own.
        empty = _empty_buffer()
        return empty._kaio_buf, 0, 0, False, empty
    key = next(_pin_keys)
    _pins[key] = (buf, mv, cview)
    out = ctypes.c_void_p()
    rc = _wrap(ctypes.byref(out), addr, nbytes, _release_cb, key)
    if rc < 0:
        del _pins[key]
        raise call_error(rc)
    return out.value, 0, nbytes if length is None else length, True, buf


_empty = []


def _empty_buffer():
    """The module's Buffer for operations on 0-byte objects (never written:
    they transfer nothing)."""
    if not _empty:
        _empty.append(Buffer(4096))
    return _empty[0]


def _length(length):
    length = operator.index(length)
    if length < 0:
        raise invalid("kaio: length %d is negative" % length)
    if length > INT64_MAX:
        raise invalid("kaio: length %d is larger than any buffer" % length)
    return length
