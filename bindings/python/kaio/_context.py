"""kaio.Context: blocking and asyncio I/O on one libkaio context.

How completions travel: every operation is submitted without a C callback
and with an integer key as user_data; ``_pending`` maps the key to what
waits for it (an asyncio future, or a ``_Waiter`` of a blocking call).
Whoever reaps -- the event loop's reader on the context's eventfd, or a
blocking call -- copies events with kaio_poll/kaio_wait into an events
array, drops the reference each event carries (kaio_buf_unref) and hands
the result to its waiter, in its own thread or through
loop.call_soon_threadsafe.

How coroutines submit: read_async & co. append their operation to a FIFO
submission queue (``_sq``) and await a future; once per event-loop pass
``_flush`` packs the queued operations into a kaio_op array and hands them
to kaio_submit in one call (so one io_submit(2) for the many operations the
coroutines woken by one batch of completions issue).  What the context
cannot take yet (-EAGAIN: capacity) stays at the head of the queue and is
flushed again as completions free slots: waiting for a slot is first come,
first served, costs no polling, and a coroutine cancelled while queued is
simply skipped (its operation is never submitted).  A refusal fails only
its own future, with kaio_last_error()'s sentence.
"""

import asyncio
import collections
import ctypes
import errno
import itertools
import operator
import struct
import threading

from . import _buffer
from ._buffer import Buffer, resolve, INT64_MAX
from ._errors import call_error, closed_error, completion_error, invalid
from ._lib import lib, EVENT, EVENT_SIZE

__all__ = ["Context", "RWF_DSYNC", "RWF_SYNC", "RWF_NOWAIT", "RWF_APPEND"]

_read = lib.kaio_read
_write = lib.kaio_write
_sync = lib.kaio_sync
_submit = lib.kaio_submit
_poll = lib.kaio_poll
_wait = lib.kaio_wait
_unref = lib.kaio_buf_unref
_wake = lib.kaio_ctx_wake
_iter_unpack = EVENT.iter_unpack
_released = _buffer.released
_get_running_loop = asyncio.get_running_loop
_Future = asyncio.Future
_get_ident = threading.get_ident
_ArgumentError = ctypes.ArgumentError

CTX_ALLOW_BUFFERED = 0x1
CTX_SINGLE_THREAD = 0x2
SYNC_DATA, SYNC_FULL = 1, 2
# Per-operation flags (the flags= of read, write, read_async, write_async):
# the kernel's RWF_* values, KAIO_RWF_* in kaio.h (see kaio_submit(3)).
RWF_DSYNC = 0x02   # this write is durable when it completes (as with O_DSYNC)
RWF_SYNC = 0x04    # ... as with O_SYNC
RWF_NOWAIT = 0x08  # never block: an operation that would wait fails with EAGAIN
RWF_APPEND = 0x10  # write at the end of the file; the offset is ignored
OP_READ, OP_WRITE, OP_READV, OP_WRITEV, OP_FSYNC, OP_FDATASYNC = 1, 2, 3, 4, 5, 6
# struct kaio_op: u32 op; i32 fd; u64 offset, buf_offset, len, user_data;
# ptr buf, vec, cb; u32 nvec, rw_flags, ioprio, reserved32; u64 reserved[2]
_OP = struct.Struct("@IiQQQQPPPIIII16x")
_OP_SIZE = _OP.size
_pack_op = _OP.pack_into
# struct kaio_vec: ptr buf; u64 offset, len
_VEC = struct.Struct("@PQQ")
_pack_vec = _VEC.pack_into
_EAGAIN = -errno.EAGAIN
_EINTR = -errno.EINTR
_MAX_EVENTS = 256
# A blocking call that reaps sleeps in kaio_wait at most this long before
# looking again: kaio_ctx_wake is not remembered by a wait that starts
# after it, so this bounds the rare case of an event (its own) reaped by
# the event loop's thread just before it went to sleep.
_WAIT_SLICE_MS = 50


# Queued operations are submitted at the end of the loop's pass, or as soon
# as this many wait: a virtio disk given one large batch completes it as a
# burst, and the coroutines, resumed together, refill it as one batch again
# (each pass then waits for the slowest of the 32); submitting every 16
# keeps it fed (41k -> 60k IOPS at depth 32 on this project's VM).
_SUBMIT_EARLY = 16


def _settle(futs):
    """Give each future of _collect its result or its exception (in the
    loop's thread)."""
    for fut, res, op, fd, off in futs:
        if fut.done():  # its coroutine was cancelled
            continue
        try:
            if res >= 0:
                fut.set_result(res if op <= 4 else None)
            else:
                fut.set_exception(completion_error(res, op, fd, off))
        except RuntimeError:  # its loop is closed
            pass


class _Waiter:
    """What a blocking call waits on (in _pending)."""
    __slots__ = ("done", "res", "op", "fd", "off")

    def __init__(self):
        self.done = False

    def result(self):
        res = self.res
        if res < 0:
            raise completion_error(res, self.op, self.fd, self.off)
        return res if self.op <= 4 else None


# ctypes converts a Python int to a C integer silently modulo its width:
# fd 2**32 + 1 would reach the library as 1, offset 2**64 as 0.  So what
# does not fit is refused here (negative fds are the library's to refuse).
_INT_MIN, _INT_MAX = -0x80000000, 0x7FFFFFFF
_OFF_MAX = INT64_MAX  # the library's limit for offsets
_FLAGS_MAX = 0xFFFFFFFF


def _fileno(fd):
    if fd.__class__ is not int:
        try:
            fd = operator.index(fd)
        except TypeError:
            fileno = getattr(fd, "fileno", None)
            if fileno is None:
                raise TypeError("fd must be an int or have a fileno() method, not %s"
                                % type(fd).__name__) from None
            fd = operator.index(fileno())
    if not _INT_MIN <= fd <= _INT_MAX:
        raise OSError(errno.EBADF, "fd %d is not a file descriptor (outside the range of a "
                                   "C int)" % fd)
    return fd


def _offset(offset):
    offset = operator.index(offset)
    if offset < 0:
        raise invalid("offset %d is negative" % offset)
    if offset > _OFF_MAX:
        raise invalid("offset %d is above INT64_MAX" % offset)
    return offset


def _rw_flags(flags):
    flags = operator.index(flags)
    if not 0 <= flags <= _FLAGS_MAX:
        raise invalid("flags %d is outside 0..0xffffffff (RWF_* bits)" % flags)
    return flags


def _submit_rw(ctx, op, fd, offset, handle, boff, n, flags, vec, nvec, cb, key):
    """One operation with rw_flags, or a vectored one, through kaio_submit
    (kaio_read and kaio_write take no flags); 0 or -errno, as they return."""
    ob = ctypes.create_string_buffer(_OP_SIZE)
    _pack_op(ob, 0, op, fd, offset, boff, n, key, handle, vec, 0, nvec, flags, 0, 0)
    rc = _submit(ctx, ctypes.addressof(ob), 1)
    return 0 if rc == 1 else rc


def _drop(wrapped):
    """Drop the caller's reference to wrapped handles: None, one, or a list."""
    if wrapped.__class__ is list:
        for h in wrapped:
            _unref(h)
    elif wrapped is not None:
        _unref(wrapped)


def _resolve_vec(bufs):
    """(keep, vec, address, nvec, wrapped) for a vectored operation over
    bufs, each used whole: keep holds what must stay alive until the
    operation is submitted (the buffers: an iterator is used up here, and a
    view of a kaio.Buffer may be released), and so does vec, the struct
    kaio_vec array; wrapped lists the handles to drop after submission."""
    if isinstance(bufs, (bytes, bytearray, memoryview)) or not hasattr(bufs, "__iter__"):
        raise TypeError("bufs must be a sequence of buffers, not %s" % type(bufs).__name__)
    bufs = list(bufs)
    vec = ctypes.create_string_buffer(max(len(bufs), 1) * _VEC.size)
    wrapped = []
    keep = []
    try:
        for i, b in enumerate(bufs):
            handle, boff, n, w, k = resolve(b, None)
            if w:
                wrapped.append(handle)
            keep.append(k)
            _pack_vec(vec, i * _VEC.size, handle, boff, n)
    except BaseException:
        _drop(wrapped)
        _released.clear()
        raise
    return keep, vec, ctypes.addressof(vec), len(bufs), wrapped


class Context:
    """A libkaio context: at most ``capacity`` operations in flight.

    ``Context(capacity=64, allow_buffered=False, *, single_thread=False)``

    Blocking methods (``read``, ``write``, ``fsync``, ``fdatasync``) may be
    called from any thread; coroutine methods (``read_async``, ...) from one
    asyncio event loop at a time.  At capacity, a coroutine waits for a
    slot (first come, first served) and a blocking call reaps and retries:
    a full queue is never an error.

    ``allow_buffered=True`` sets KAIO_CTX_ALLOW_BUFFERED (fds opened
    without O_DIRECT are accepted; the kernel then does the I/O
    synchronously).  ``single_thread=True`` sets KAIO_CTX_SINGLE_THREAD:
    you promise that one thread at a time uses the context.

    ``close()`` (also on leaving a ``with``/``async with`` block) waits for
    every operation in flight and delivers its result, then destroys the
    context.  Coroutines still waiting for a slot get OSError(ESHUTDOWN)
    (BrokenPipeError), and so does every later call.
    """

    def __init__(self, capacity=64, allow_buffered=False, *, single_thread=False):
        capacity = operator.index(capacity)
        if not 0 <= capacity <= 0xFFFFFFFF:
            raise invalid("kaio.Context: capacity %d is outside 1..65536" % capacity)
        flags = (CTX_ALLOW_BUFFERED if allow_buffered else 0) | \
                (CTX_SINGLE_THREAD if single_thread else 0)
        self._ctx = None
        self._closing = True
        out = ctypes.c_void_p()
        rc = lib.kaio_ctx_create(ctypes.byref(out), capacity, flags)
        if rc < 0:
            raise call_error(rc)
        ctx = out.value
        self._ctx = ctx
        self._closing = False
        self._efd = lib.kaio_ctx_fd(ctx)
        self._capacity = lib.kaio_ctx_capacity(ctx)
        self._allow_buffered = bool(allow_buffered)
        self._pending = {}
        self._keys = itertools.count(1)
        # asyncio side
        self._loop = None
        self._loop_tid = None
        # Queued operations: (future, op, fd, offset, kaio_buf handle, buf_offset,
        # len, wrapped handle to unref once submitted or None, the Python
        # buffer object: it keeps the handle valid until the operation holds
        # its own reference).
        self._sq = collections.deque()
        self._flush_soon = False
        nmax = min(self._capacity, _MAX_EVENTS)
        self._lmax = nmax
        self._levents = (ctypes.c_char * (nmax * EVENT_SIZE))()
        self._laddr = ctypes.addressof(self._levents)
        self._lraw = memoryview(self._levents).cast("B")
        self._opmax = nmax
        self._opbuf = (ctypes.c_char * (nmax * _OP_SIZE))()
        self._opaddr = ctypes.addressof(self._opbuf)
        # blocking side: one reaping thread at a time (the "leader") uses
        # these; the others wait on the condition.
        self._cond = threading.Condition(threading.Lock())
        self._reaping = False
        self._sync_users = 0
        self._sevents = (ctypes.c_char * (nmax * EVENT_SIZE))()
        self._saddr = ctypes.addressof(self._sevents)
        self._sraw = memoryview(self._sevents).cast("B")

    # ---- properties ------------------------------------------------------

    @property
    def capacity(self):
        """The most operations in flight at once."""
        return self._capacity

    @property
    def inflight(self):
        """Operations accepted and not yet delivered (kaio_ctx_inflight)."""
        ctx = self._ctx
        return lib.kaio_ctx_inflight(ctx) if ctx is not None else 0

    @property
    def closed(self):
        return self._ctx is None or self._closing

    def fileno(self):
        """The context's eventfd (kaio_ctx_fd).  The library owns it: do not
        read or close it; os.dup() it to give another poller its own."""
        self._check_open()
        return self._efd

    def forget_fd(self, fd):
        """Drop what the context learnt about fd (kaio_ctx_forget_fd): call
        it before closing an fd whose number may come back, or after
        changing its flags with F_SETFL."""
        self._check_open()
        rc = lib.kaio_ctx_forget_fd(self._ctx, _fileno(fd))
        if rc < 0:
            raise call_error(rc)

    def _check_open(self):
        if self._ctx is None or self._closing:
            raise closed_error()

    def __repr__(self):
        state = "closed" if self.closed else "capacity=%d inflight=%d" % (
            self._capacity, self.inflight)
        return "<kaio.Context %s>" % state

    # ---- blocking I/O ------------------------------------------------------

    def read(self, fd, buf, offset, length=None, flags=0):
        """Read into buf from fd at offset; blocks; returns the bytes read
        (fewer at end of file, 0 past it).  length=None: all of buf.
        flags: 0 or RWF_NOWAIT."""
        return self._rw_sync(OP_READ, fd, buf, offset, length, flags)

    def write(self, fd, buf, offset, length=None, flags=0):
        """Write buf (its first length bytes) to fd at offset; blocks;
        returns the bytes written.  flags: 0 or RWF_DSYNC, RWF_SYNC,
        RWF_NOWAIT, RWF_APPEND (or'ed)."""
        return self._rw_sync(OP_WRITE, fd, buf, offset, length, flags)

    def readv(self, fd, bufs, offset, flags=0):
        """Read from fd at offset into the buffers of bufs, in order, each
        whole (one preadv-like operation); blocks; returns the bytes read."""
        return self._rw_sync(OP_READV, fd, bufs, offset, None, flags)

    def writev(self, fd, bufs, offset, flags=0):
        """Write the buffers of bufs, in order, to fd at offset (one
        pwritev-like operation); blocks; returns the bytes written."""
        return self._rw_sync(OP_WRITEV, fd, bufs, offset, None, flags)

    def fsync(self, fd):
        """fsync(fd) through kernel AIO; blocks; returns None."""
        self._sync_sync(fd, SYNC_FULL)

    def fdatasync(self, fd):
        """fdatasync(fd) through kernel AIO; blocks; returns None."""
        self._sync_sync(fd, SYNC_DATA)

    def _rw_sync(self, op, fd, buf, offset, length, flags):
        """A blocking read or write of buf, or (OP_READV/OP_WRITEV) of the
        buffers of the sequence buf."""
        fd = _fileno(fd)
        offset = _offset(offset)
        flags = _rw_flags(flags)
        self._enter()
        try:
            if op == OP_READV or op == OP_WRITEV:
                keep, vec, addr, nvec, wrapped = _resolve_vec(buf)
                keep = (keep, vec)
                fn, args = _submit_rw, (op, fd, offset, 0, 0, 0, flags, addr, nvec)
            else:
                handle, boff, n, wrapped, keep = resolve(buf, length)
                wrapped = handle if wrapped else None
                if flags:
                    fn, args = _submit_rw, (op, fd, offset, handle, boff, n, flags, 0, 0)
                else:
                    fn, args = _read if op == OP_READ else _write, (fd, offset, handle, boff, n)
            try:
                w = self._submit_sync(fn, args)
            finally:
                del keep  # the operation holds its own references now
                if wrapped:
                    _drop(wrapped)
                    _released.clear()
            self._reap_until(w)
        finally:
            self._leave()
        return w.result()

    def _sync_sync(self, fd, level):
        fd = _fileno(fd)
        self._enter()
        try:
            w = self._submit_sync(_sync, (fd, level))
            self._reap_until(w)
        finally:
            self._leave()
        w.result()

    def _submit_sync(self, fn, args):
        w = _Waiter()
        key = next(self._keys)
        pending = self._pending
        pending[key] = w
        while True:
            try:
                rc = fn(self._ctx, *args, None, key)
            except _ArgumentError as e:
                pending.pop(key, None)
                raise TypeError(str(e)) from None
            if rc == 0:
                return w
            if rc != _EAGAIN:
                pending.pop(key, None)
                raise call_error(rc)
            self._reap_until(None)  # at capacity: reap, then retry

    def _enter(self):
        with self._cond:
            if self._ctx is None or self._closing:
                raise closed_error()
            self._sync_users += 1

    def _leave(self):
        with self._cond:
            self._sync_users -= 1
            if self._closing and not self._sync_users:
                self._cond.notify_all()

    def _reap_until(self, w):
        """Reap until w is done; w None: reap once (a submission found the
        queue full).  One thread at a time reaps; the others sleep on the
        condition and are woken whenever something was delivered."""
        cond = self._cond
        with cond:
            while True:
                if w is not None and w.done:
                    return
                if not self._reaping:
                    self._reaping = True
                    break
                if w is None:
                    cond.wait(_WAIT_SLICE_MS / 1000)
                    return
                cond.wait()
        try:
            ctx, addr, nmax = self._ctx, self._saddr, self._lmax
            while True:
                n = _wait(ctx, addr, 1, nmax, _WAIT_SLICE_MS)
                if n > 0:
                    self._dispatch(self._sraw, n)
                elif n < 0 and n != _EINTR:
                    raise call_error(n)
                if w is None or w.done:
                    return
        finally:
            with cond:
                self._reaping = False
                cond.notify_all()

    def _collect(self, raw, n):
        """Take n copied events: drop the buffer reference each carries and
        mark the blocking calls' waiters done.  Returns the futures to
        settle, (future, res, op, fd, offset) each, and whether a waiter
        was done."""
        pending = self._pending
        futs = []
        waiters = False
        for key, res, off, buf, fd, op in _iter_unpack(raw[:n * EVENT_SIZE]):
            if buf:
                _unref(buf)
            ent = pending.pop(key, None)
            if ent is None:
                continue
            if ent.__class__ is _Waiter:
                ent.res, ent.op, ent.fd, ent.off = res, op, fd, off
                ent.done = waiters = True
            else:
                futs.append((ent, res, op, fd, off))
        if _released:
            _released.clear()
        return futs, waiters

    def _dispatch(self, raw, n):
        """Hand n copied events to their waiters, from any thread."""
        futs, _ = self._collect(raw, n)
        with self._cond:
            self._cond.notify_all()
        loop = self._loop
        if loop is None or not (futs or self._sq):
            return
        if self._loop_tid == _get_ident() or not loop.is_running():
            self._resolve(futs)
        else:
            try:
                loop.call_soon_threadsafe(self._resolve, futs)
            except RuntimeError:  # the loop was closed meanwhile
                pass

    def _resolve(self, futs):
        _settle(futs)
        if self._sq:
            loop = self._loop
            if loop is not None and loop.is_closed():
                # Nobody can await what a closed loop left queued: let it
                # go (as close() and the next loop's attach would), rather
                # than perform it from whatever call reaps now.
                self._drop_queue(closed_error("the event loop of this operation was closed "
                                              "before it was submitted"))
            else:
                self._flush()

    # ---- asyncio -------------------------------------------------------------

    async def read_async(self, fd, buf, offset, length=None, flags=0):
        """Coroutine: read into buf from fd at offset; returns the bytes read.
        flags: as for read().

        Cancelling it does not cancel an I/O already submitted: the kernel
        still fills buf, which stays alive (a wrapped object through the
        library's reference) until it is done."""
        return await self._queue_rw(OP_READ, fd, buf, offset, length, flags)

    async def write_async(self, fd, buf, offset, length=None, flags=0):
        """Coroutine: write buf to fd at offset; returns the bytes written.
        flags: as for write().  A cancelled write that was already
        submitted still writes (as os.write in a thread would)."""
        return await self._queue_rw(OP_WRITE, fd, buf, offset, length, flags)

    async def readv_async(self, fd, bufs, offset, flags=0):
        """Coroutine: readv(); returns the bytes read.  Cancelling it does
        not cancel an I/O already submitted (see read_async)."""
        return await self._queue_rwv(OP_READV, fd, bufs, offset, flags)

    async def writev_async(self, fd, bufs, offset, flags=0):
        """Coroutine: writev(); returns the bytes written."""
        return await self._queue_rwv(OP_WRITEV, fd, bufs, offset, flags)

    def _queue_rwv(self, op, fd, bufs, offset, flags):
        """Queues a vectored read or write for the next flush."""
        loop = _get_running_loop()
        if loop is not self._loop or self._closing:
            self._attach(loop)
        fd = _fileno(fd)
        offset = _offset(offset)
        flags = _rw_flags(flags)
        fut = _Future(loop=loop)
        keep, vec, addr, nvec, wrapped = _resolve_vec(bufs)
        # The vec array and the buffers stay referenced by the entry (slot
        # 8) until it leaves the queue; the library holds its own references
        # to the buffers from submission to completion.
        return self._enqueue(loop, (fut, op, fd, offset, 0, 0, 0, wrapped or None, (keep, vec),
                                    flags, addr, nvec))

    def _queue_rw(self, op, fd, buf, offset, length, flags=0):
        """Queues a read or write for the next flush; returns its future."""
        loop = _get_running_loop()
        if loop is not self._loop or self._closing:
            self._attach(loop)
        if fd.__class__ is not int or not _INT_MIN <= fd <= _INT_MAX:
            fd = _fileno(fd)
        if offset.__class__ is not int or not 0 <= offset <= _OFF_MAX:
            offset = _offset(offset)
        if flags.__class__ is not int or not 0 <= flags <= _FLAGS_MAX:
            flags = _rw_flags(flags)
        fut = _Future(loop=loop)
        if length is None and isinstance(buf, Buffer):
            return self._enqueue(loop, (fut, op, fd, offset, buf._kaio_buf, 0, len(buf), None,
                                        buf, flags, 0, 0))
        handle, boff, n, wrapped, keep = resolve(buf, length)
        return self._enqueue(loop, (fut, op, fd, offset, handle, boff, n,
                                    handle if wrapped else None, (buf, keep), flags, 0, 0))

    def _enqueue(self, loop, ent):
        """Queue ent (its future first) for the next flush, or flush at once
        when enough wait; returns the future."""
        sq = self._sq
        sq.append(ent)
        if len(sq) >= _SUBMIT_EARLY and len(self._pending) < self._capacity:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        return ent[0]

    async def fsync_async(self, fd):
        """Coroutine: fsync(fd) through kernel AIO; returns None."""
        return await self._sync_async(fd, OP_FSYNC)

    async def fdatasync_async(self, fd):
        """Coroutine: fdatasync(fd) through kernel AIO; returns None."""
        return await self._sync_async(fd, OP_FDATASYNC)

    def _sync_async(self, fd, op):
        loop = _get_running_loop()
        if loop is not self._loop or self._closing:
            self._attach(loop)
        return self._enqueue(loop, (_Future(loop=loop), op, _fileno(fd), 0, 0, 0, 0, None, None,
                                    0, 0, 0))

    def _flush(self, closing=False):
        """Submit the queued operations (in the loop's thread), in order,
        as many as the context takes; the rest wait for completions."""
        self._flush_soon = False
        sq = self._sq
        ctx = self._ctx
        if ctx is None or not sq or (self._closing and not closing):
            return
        pending, keys = self._pending, self._keys
        opbuf, opaddr, nmax = self._opbuf, self._opaddr, self._opmax
        while sq:
            batch = []
            while sq and len(batch) < nmax:
                ent = sq.popleft()
                if ent[0].done():  # cancelled before it was submitted
                    if ent[7] is not None:
                        _drop(ent[7])
                        _released.clear()
                    continue
                key = next(keys)
                pending[key] = ent[0]
                # op, fd, offset, buf_offset, len, user_data, buf, vec, cb, nvec, rw_flags,
                # ioprio, reserved32
                _pack_op(opbuf, len(batch) * _OP_SIZE, ent[1], ent[2], ent[3], ent[5], ent[6],
                         key, ent[4], ent[10], 0, ent[11], ent[9], 0, 0)
                batch.append((key, ent))
            n = len(batch)
            done = 0
            while done < n:
                rc = _submit(ctx, opaddr + done * _OP_SIZE, n - done)
                if rc > 0:
                    for key, ent in batch[done:done + rc]:
                        if ent[7] is not None:
                            _drop(ent[7])  # the operation holds its own reference
                    done += rc
                    continue
                if rc == 0 or rc == _EAGAIN:
                    # Full: the rest goes back to the head of the queue, in order.
                    rest = batch[done:]
                    for key, ent in rest:
                        del pending[key]
                    sq.extendleft([ent for key, ent in reversed(rest)])
                    return
                # Refused: fail that one operation, go on with the others.
                key, ent = batch[done]
                del pending[key]
                err = call_error(rc)
                if ent[7] is not None:
                    _drop(ent[7])
                    _released.clear()
                try:
                    ent[0].set_exception(err)
                except RuntimeError:  # its loop is closed
                    pass
                done += 1

    def _attach(self, loop):
        """Make loop the one this context serves (or refuse)."""
        if self._ctx is None or self._closing:
            raise closed_error()
        if loop is self._loop:
            return
        old = self._loop
        if old is not None:
            if not old.is_closed():
                busy = any(v.__class__ is not _Waiter and not v.done()
                           for v in list(self._pending.values()))
                if busy or any(not e[0].done() for e in self._sq):
                    raise RuntimeError("this kaio.Context has operations in flight on another "
                                       "event loop; a context serves one loop at a time")
                try:
                    old.remove_reader(self._efd)
                except Exception:
                    pass
            self._drop_queue()  # what a closed loop left unsubmitted
            self._loop = None
        loop.add_reader(self._efd, self._on_readable)
        self._loop = loop
        self._loop_tid = _get_ident()
        self._flush_soon = False

    def _drop_queue(self, exc=None):
        """Empty the submission queue: unref wrapped handles; fail the
        futures with exc (when given and their loop allows)."""
        sq = self._sq
        while sq:
            ent = sq.popleft()
            if ent[7] is not None:
                _drop(ent[7])
            if exc is not None and not ent[0].done():
                try:
                    ent[0].set_exception(OSError(exc.errno, exc.strerror))
                except RuntimeError:  # its loop is closed
                    pass
        _released.clear()

    def _detach(self):
        loop = self._loop
        self._loop = None
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self._efd)
            except Exception:
                pass

    def _on_readable(self):
        """The eventfd is readable: deliver every completion (the hot path)."""
        ctx = self._ctx
        if ctx is None:
            return
        addr, nmax, raw = self._laddr, self._lmax, self._lraw
        while True:
            n = _poll(ctx, addr, nmax)
            if n <= 0:
                if n < 0 and n != _EINTR:
                    self._reader_failed(n)
                    return
                break
            futs, waiters = self._collect(raw, n)
            _settle(futs)
            if waiters:  # a blocking call's completion: wake its thread
                with self._cond:
                    self._cond.notify_all()
                _wake(ctx)
            if n < nmax:
                break
        if self._sq:  # slots were freed: submit what waits for one
            self._flush()

    def _reader_failed(self, rc):
        # kaio_poll refused (e.g. -ECHILD after fork): stop listening and
        # fail what this loop waits for rather than spin on the eventfd.
        err = call_error(rc)
        self._detach()
        for key, ent in list(self._pending.items()):
            if ent.__class__ is not _Waiter and not ent.done():
                self._pending.pop(key, None)
                ent.set_exception(OSError(err.errno, err.strerror))
        self._drop_queue(err)

    # ---- closing ---------------------------------------------------------------

    def close(self):
        """Wait for every operation in flight, deliver its result, destroy
        the context.  Idempotent.  Call it from the event loop's thread (or
        when the loop no longer runs) if coroutines use the context."""
        cond = self._cond if hasattr(self, "_cond") else None
        if cond is None:  # __init__ failed
            return
        with cond:
            if self._closing:
                while self._ctx is not None:
                    cond.wait()
                return
            self._closing = True
            while self._sync_users:
                cond.wait()
        ctx = self._ctx
        try:
            loop = self._loop
            if self._sq and loop is not None and not loop.is_closed() and (
                    self._loop_tid == _get_ident() or not loop.is_running()):
                self._flush(closing=True)  # submitted what fits; the rest waits for a slot
            self._drop_queue(closed_error("the kaio context was closed while this operation "
                                          "waited for a free slot"))
            addr, nmax, raw = self._saddr, self._lmax, self._sraw
            while lib.kaio_ctx_inflight(ctx) > 0:
                n = _wait(ctx, addr, 1, nmax, 100)
                if n > 0:
                    self._dispatch(raw, n)
                elif n < 0 and n != _EINTR:
                    break
            while True:
                n = _poll(ctx, addr, nmax)
                if n > 0:
                    self._dispatch(raw, n)
                if n < nmax:
                    break
        finally:
            self._detach()  # before destroy: the eventfd goes with the context
            rc = lib.kaio_ctx_destroy(ctx)
            err = call_error(rc) if rc < 0 else None
            _released.clear()
            with cond:
                self._ctx = None
                cond.notify_all()
        if err is not None:
            raise err

    async def aclose(self):
        """Wait (asynchronously) until this loop's operations, submitted or
        queued, are done, then close()."""
        while True:
            futs = [v for v in list(self._pending.values())
                    if v.__class__ is not _Waiter and not v.done()]
            futs += [e[0] for e in self._sq if not e[0].done()]
            if not futs or self._closing:
                break
            await asyncio.wait(futs)
        self.close()

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()

    async def __aenter__(self):
        self._check_open()
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    def __del__(self):
        try:
            if getattr(self, "_ctx", None) is not None:
                self.close()
        except Exception:
            pass
