"""Tests of the Python binding (unittest, standard library only).

Run through run-tests.sh (TAP), or directly:
    KAIO_LIBRARY=/path/to/libkaio.so.1 python3 -m unittest discover -s tests -v
(from bindings/python).  Files under test live in a temporary directory
under $KAIO_TEST_DIR if set, else under the current directory or
/var/tmp: it must accept O_DIRECT (tmpfs does not).  Every test is skipped,
with the reason, when the library cannot be loaded or O_DIRECT is refused.
"""

import asyncio
import ctypes
import errno
import gc
import mmap
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import weakref

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_ROOT = os.path.dirname(HERE)
if PKG_ROOT not in sys.path:
    sys.path.insert(0, PKG_ROOT)

BS = 4096


def _probe():
    """(kaio module or None, base directory or None, reason to skip or None)"""
    try:
        import kaio
    except ImportError as e:
        return None, None, "libkaio cannot be loaded: %s" % e
    try:
        kaio.Context(1).close()
    except OSError as e:
        return None, None, "no kernel AIO context: %s" % e
    env = os.environ.get("KAIO_TEST_DIR")
    bases = [env] if env else [os.getcwd(), "/var/tmp"]
    refusals = []
    fallback = None
    for base in bases:
        try:
            os.makedirs(base, exist_ok=True)
            d = tempfile.mkdtemp(prefix="kaio-py-probe.", dir=base)
        except OSError as e:
            refusals.append("%s: %s" % (base, e))
            continue
        try:
            fd = os.open(os.path.join(d, "probe"), os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
            try:
                aligned = kaio.fd_alignment(fd).offset > 0
            finally:
                os.close(fd)
            # Without KAIO_TEST_DIR, prefer a disk (a direct-I/O alignment
            # is known) to a tmpfs that merely accepts O_DIRECT.
            if aligned or env:
                return kaio, base, None
            fallback = fallback or base
        except OSError as e:
            refusals.append("%s: O_DIRECT refused (%s)" % (base, e.strerror))
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if fallback:
        return kaio, fallback, None
    return None, None, "no directory accepts O_DIRECT (%s)" % "; ".join(refusals)


kaio, BASE_DIR, SKIP_REASON = _probe()


def pattern(block, size=BS):
    """Distinct, checkable contents for file block number `block`."""
    head = ("block %08d " % block).encode()
    return (head * (size // len(head) + 1))[:size]


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


async def submitted():
    """Let the tasks created so far run and the context's queue be flushed
    (kaio_submit runs once per loop pass), before any completion is reaped."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def async_wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.001)
    return True


class KaioTest(unittest.TestCase):
    def setUp(self):
        if SKIP_REASON:
            raise unittest.SkipTest(SKIP_REASON)
        self.dir = tempfile.mkdtemp(prefix="kaio-py.", dir=BASE_DIR)
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def make_file(self, name, blocks=0, data=None):
        """A file of `blocks` pattern blocks (or `data`), opened O_RDWR|O_DIRECT."""
        p = self.path(name)
        with open(p, "wb") as f:
            if data is not None:
                f.write(data)
            for b in range(blocks):
                f.write(pattern(b))
        return self.open_fd(p, os.O_RDWR | os.O_DIRECT)

    def open_fd(self, p, flags):
        fd = os.open(p, flags | os.O_CLOEXEC | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        return fd

    def context(self, capacity=16, **kw):
        ctx = kaio.Context(capacity, **kw)
        self.addCleanup(ctx.close)
        return ctx

    def run_async(self, coro, timeout=30):
        return asyncio.run(asyncio.wait_for(coro, timeout))

    def assertRefused(self, cm, err, *words):
        e = cm.exception
        self.assertEqual(e.errno, err, e)
        for w in words:
            self.assertIn(w, str(e))


class TestBuffer(KaioTest):
    def test_buffer_protocol(self):
        buf = kaio.Buffer(3 * BS)
        self.assertIsInstance(buf, kaio.Buffer)
        self.assertEqual(len(buf), 3 * BS)
        self.assertEqual(buf.nbytes, 3 * BS)
        self.assertEqual(buf.address % mmap.PAGESIZE, 0)
        mv = memoryview(buf)
        self.assertEqual((mv.format, mv.ndim, mv.itemsize, mv.readonly),
                         ("B", 1, 1, False))
        self.assertEqual(mv.shape, (3 * BS,))
        self.assertEqual(bytes(buf), bytes(3 * BS))  # zero-filled
        mv[:4] = b"abcd"
        mv[4] = 0x65
        buf[5:7] = b"fg"
        self.assertEqual(bytes(buf[:7]), b"abcdefg")
        self.assertEqual(buf[0], 0x61)
        self.assertEqual(list(buf[1:3]), [0x62, 0x63])
        self.assertIn("kaio.Buffer of 12288 bytes", repr(buf))

    def test_buffer_bad_length(self):
        for n in (0, -1):
            with self.assertRaises(OSError) as cm:
                kaio.Buffer(n)
            self.assertRefused(cm, errno.EINVAL, "length")
        with self.assertRaises(TypeError):
            kaio.Buffer(1.5)
        with self.assertRaises(OSError) as cm:  # not 4096 bytes (modulo 2**64)
            kaio.Buffer(2**64 + 4096)
        self.assertRefused(cm, errno.EINVAL, "larger")

    def test_buffer_freed_after_last_view(self):
        buf = kaio.Buffer(BS)
        ref = weakref.ref(buf)
        mv = memoryview(buf)[100:200]
        del buf
        gc.collect()
        self.assertIsNotNone(ref(), "a memoryview must keep its Buffer alive")
        mv[:3] = b"xyz"
        self.assertEqual(bytes(mv[:3]), b"xyz")
        mv.release()
        del mv
        gc.collect()
        self.assertIsNone(ref())

    def test_buffer_locked(self):
        try:
            buf = kaio.Buffer(BS, locked=True)
        except OSError as e:  # RLIMIT_MEMLOCK: the message must say so
            self.assertIn("RLIMIT_MEMLOCK", str(e))
        else:
            self.assertEqual(len(buf), BS)

    def test_buffer_not_picklable(self):
        import pickle
        with self.assertRaises(TypeError):
            pickle.dumps(kaio.Buffer(16))


class TestBlocking(KaioTest):
    def test_write_read_roundtrip(self):
        fd = self.make_file("f")
        ctx = self.context()
        out = kaio.Buffer(2 * BS)
        out[:] = pattern(0) + pattern(1)
        self.assertEqual(ctx.write(fd, out, 0), 2 * BS)
        self.assertEqual(ctx.write(fd, out, 2 * BS, length=BS), BS)
        self.assertEqual(os.fstat(fd).st_size, 3 * BS)
        back = kaio.Buffer(3 * BS)
        self.assertEqual(ctx.read(fd, back, 0), 3 * BS)
        self.assertEqual(bytes(back), pattern(0) + pattern(1) + pattern(0))
        back2 = kaio.Buffer(2 * BS)
        self.assertEqual(ctx.read(fd, back2, BS, length=BS), BS)
        self.assertEqual(bytes(back2[:BS]), pattern(1))
        self.assertEqual(bytes(back2[BS:]), bytes(BS))

    def test_short_read_at_end_of_file(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        buf = kaio.Buffer(4 * BS)
        self.assertEqual(ctx.read(fd, buf, 0), BS)
        self.assertEqual(bytes(buf[:BS]), pattern(0))
        self.assertEqual(ctx.read(fd, buf, 8 * BS), 0)

    def test_fsync_fdatasync(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        self.assertIsNone(ctx.fsync(fd))
        self.assertIsNone(ctx.fdatasync(fd))
        # sync operations do not need O_DIRECT
        plain = self.open_fd(self.path("plain"), os.O_RDWR)
        self.assertIsNone(ctx.fsync(plain))
        self.assertIsNone(ctx.fdatasync(plain))

    def test_mmap_and_memoryview_slices(self):
        fd = self.make_file("f", blocks=4)
        ctx = self.context()
        m = mmap.mmap(-1, 2 * BS)
        self.assertEqual(ctx.read(fd, m, BS), 2 * BS)
        self.assertEqual(m[:], pattern(1) + pattern(2))
        self.assertEqual(ctx.read(fd, memoryview(m)[BS:], 3 * BS), BS)
        self.assertEqual(m[BS:], pattern(3))
        m[:BS] = pattern(7)
        self.assertEqual(ctx.write(fd, m, 0, length=BS), BS)
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        # A slice of a kaio.Buffer goes through the Buffer's own handle.
        buf = kaio.Buffer(4 * BS)
        self.assertEqual(ctx.read(fd, memoryview(buf)[2 * BS:], 0, length=BS), BS)
        self.assertEqual(bytes(buf[2 * BS:3 * BS]), pattern(7))
        m.close()  # no export is left behind

    def test_file_object_and_fileno(self):
        p = self.path("f")
        with open(p, "wb") as f:
            f.write(pattern(0))
        ctx = self.context()
        with open(os.open(p, os.O_RDONLY | os.O_DIRECT), "rb", buffering=0) as f:
            buf = kaio.Buffer(BS)
            self.assertEqual(ctx.read(f, buf, 0), BS)
            self.assertEqual(bytes(buf), pattern(0))

    def test_rw_flags(self):
        fd = self.make_file("f", blocks=2)
        ctx = self.context(capacity=1)  # one slot: flags must not stick to it
        buf = kaio.Buffer(BS)
        buf[:] = pattern(5)
        self.assertEqual(ctx.write(fd, buf, 0, flags=kaio.RWF_DSYNC), BS)
        self.assertEqual(ctx.write(fd, buf, BS, flags=kaio.RWF_SYNC | kaio.RWF_DSYNC), BS)
        self.assertEqual(ctx.write(fd, buf, 0, flags=kaio.RWF_APPEND), BS)  # offset ignored
        self.assertEqual(os.fstat(fd).st_size, 3 * BS)
        buf[:] = pattern(6)
        self.assertEqual(ctx.write(fd, buf, 0), BS)  # at 0 again: not appended
        self.assertEqual(os.fstat(fd).st_size, 3 * BS)
        back = kaio.Buffer(3 * BS)
        self.assertEqual(ctx.read(fd, back, 0), 3 * BS)
        self.assertEqual(bytes(back), pattern(6) + pattern(5) + pattern(5))
        try:  # the kernel may decline to wait (EAGAIN) or the file the flag
            n = ctx.read(fd, back, 0, flags=kaio.RWF_NOWAIT)
        except OSError as e:
            self.assertIn(e.errno, (errno.EAGAIN, errno.EOPNOTSUPP), e)
        else:
            self.assertEqual(n, 3 * BS)
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, back, 0, flags=kaio.RWF_APPEND)
        self.assertRefused(cm, errno.EINVAL, "KAIO_RWF_APPEND", "writes")
        with self.assertRaises(OSError) as cm:
            ctx.write(fd, buf, 0, flags=1 << 20)
        self.assertRefused(cm, errno.EINVAL, "unknown rw_flags")
        with self.assertRaises(OSError) as cm:
            ctx.write(fd, buf, 0, flags=-1)
        self.assertRefused(cm, errno.EINVAL, "flags -1")
        with self.assertRaises(TypeError):
            ctx.read(fd, buf, 0, flags=1.5)
        self.assertEqual(os.fstat(fd).st_size, 3 * BS)  # refusals wrote nothing
        self.assertEqual(ctx.inflight, 0)

    def test_readv_writev(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        a, b = kaio.Buffer(BS), kaio.Buffer(2 * BS)
        a[:] = pattern(1)
        b[:] = pattern(2) + pattern(3)
        m = mmap.mmap(-1, BS)  # wrapped, not a kaio.Buffer
        m[:] = pattern(4)
        self.assertEqual(ctx.writev(fd, [a, b, m], BS), 4 * BS)
        self.assertEqual(ctx.writev(fd, (memoryview(b)[BS:],), 5 * BS, flags=kaio.RWF_DSYNC), BS)
        self.assertEqual(os.fstat(fd).st_size, 6 * BS)
        x, y = kaio.Buffer(2 * BS), mmap.mmap(-1, 4 * BS)
        self.assertEqual(ctx.readv(fd, [x, y], 0), 6 * BS)
        self.assertEqual(bytes(x) + y[:], pattern(0) + pattern(1) + pattern(2) + pattern(3)
                         + pattern(4) + pattern(3))
        self.assertEqual(ctx.readv(fd, [x, y], 4 * BS), 2 * BS)  # short at end of file
        self.assertEqual(bytes(x), pattern(4) + pattern(3))

        def fresh(i):  # buffers that only the iterator refers to
            b = kaio.Buffer(BS)
            b[:] = pattern(20 + i)
            return b
        self.assertEqual(ctx.writev(fd, (fresh(i) for i in range(2)), 0), 2 * BS)
        self.assertEqual(ctx.readv(fd, iter([x]), 0), 2 * BS)
        self.assertEqual(bytes(x), pattern(20) + pattern(21))
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        m.close()
        y.close()

    def test_readv_writev_refusals(self):
        fd = self.make_file("f", blocks=2)
        ctx = self.context()
        a = kaio.Buffer(2 * BS)
        for bad in (bytes(BS), a, 5, None):  # not a sequence of buffers
            with self.assertRaises(TypeError):
                ctx.readv(fd, bad, 0)
        with self.assertRaises(TypeError):  # read-only element
            ctx.readv(fd, [a, bytes(BS)], 0)
        with self.assertRaises(OSError) as cm:
            ctx.readv(fd, [], 0)
        self.assertEqual(cm.exception.errno, errno.EINVAL)
        with self.assertRaises(OSError) as cm:  # an element at a misaligned address
            ctx.readv(fd, [memoryview(a)[:BS], memoryview(a)[1:BS + 1]], 0)
        self.assertRefused(cm, errno.EINVAL, "align")
        with self.assertRaises(OSError) as cm:
            ctx.readv(fd, [a], 0, flags=kaio.RWF_APPEND)
        self.assertRefused(cm, errno.EINVAL, "KAIO_RWF_APPEND")
        m = mmap.mmap(-1, BS)
        with self.assertRaises(OSError):  # refused after m was wrapped: m is let go
            ctx.writev(fd, [m, memoryview(a)[1:BS + 1]], 0)
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        m.close()
        self.assertEqual((ctx.inflight, ctx._pending), (0, {}))

    def test_threads_share_a_context_at_capacity(self):
        fd = self.make_file("f", blocks=64)
        ctx = self.context(capacity=3)
        errors = []

        def worker(seed):
            try:
                buf = kaio.Buffer(BS)
                for i in range(150):
                    b = (seed * 7 + i) % 64
                    self.assertEqual(ctx.read(fd, buf, b * BS), BS)
                    if bytes(buf) != pattern(b):
                        errors.append("thread %d: block %d corrupted" % (seed, b))
            except BaseException as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "a blocking call hung")
        self.assertEqual(errors, [])
        self.assertEqual(ctx.inflight, 0)

    def test_dropped_object_kept_until_done(self):
        # Blocking calls return after delivery: nothing stays pinned.
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        m = mmap.mmap(-1, BS)
        ref = weakref.ref(m)
        ctx.read(fd, m, 0)
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        del m
        gc.collect()
        self.assertIsNone(ref())


class TestAsync(KaioTest):
    def test_every_coroutine(self):
        fd = self.make_file("f", blocks=4)
        ctx = self.context()

        async def main():
            buf = kaio.Buffer(2 * BS)
            self.assertEqual(await ctx.read_async(fd, buf, 0), 2 * BS)
            self.assertEqual(bytes(buf), pattern(0) + pattern(1))
            self.assertEqual(await ctx.read_async(fd, buf, 2 * BS, length=BS), BS)
            self.assertEqual(bytes(buf[:BS]), pattern(2))
            buf[:] = pattern(10) + pattern(11)
            self.assertEqual(await ctx.write_async(fd, buf, 4 * BS), 2 * BS)
            self.assertEqual(await ctx.write_async(fd, buf, 6 * BS, length=BS), BS)
            self.assertIsNone(await ctx.fsync_async(fd))
            self.assertIsNone(await ctx.fdatasync_async(fd))
            m = mmap.mmap(-1, 3 * BS)
            self.assertEqual(await ctx.read_async(fd, m, 4 * BS), 3 * BS)
            self.assertEqual(m[:], pattern(10) + pattern(11) + pattern(10))
            self.assertEqual(await ctx.read_async(fd, memoryview(buf)[BS:], 0), BS)
            self.assertEqual(bytes(buf[BS:]), pattern(0))
            m[:BS] = pattern(20)
            self.assertEqual(await ctx.write_async(fd, memoryview(m)[:BS], 0), BS)
            self.assertEqual(await ctx.read_async(fd, buf, 0, length=BS), BS)
            self.assertEqual(bytes(buf[:BS]), pattern(20))
            self.assertEqual(await ctx.read_async(fd, buf, 100 * BS), 0)  # past EOF
            m.close()

        self.run_async(main())
        self.assertEqual(kaio._buffer.pinned_count(), 0)

    def test_rw_flags_async(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context(capacity=2)

        async def main():
            buf = kaio.Buffer(BS)
            buf[:] = pattern(7)
            n = await asyncio.gather(
                ctx.write_async(fd, buf, 0, flags=kaio.RWF_DSYNC),
                ctx.write_async(fd, buf, 0, flags=kaio.RWF_APPEND),
                ctx.read_async(fd, buf, 0, flags=kaio.RWF_APPEND),
                ctx.write_async(fd, buf, 0, flags=1 << 20),
                return_exceptions=True)
            self.assertEqual(n[:2], [BS, BS])
            for e, words in ((n[2], ("KAIO_RWF_APPEND", "writes")), (n[3], ("unknown rw_flags",))):
                self.assertIsInstance(e, OSError)
                self.assertEqual(e.errno, errno.EINVAL, e)
                for w in words:
                    self.assertIn(w, str(e))
            with self.assertRaises(OSError) as cm:
                await ctx.read_async(fd, buf, 0, flags=-2)
            self.assertRefused(cm, errno.EINVAL, "flags -2")
            back = kaio.Buffer(2 * BS)
            self.assertEqual(await ctx.read_async(fd, back, 0), 2 * BS)
            self.assertEqual(bytes(back), pattern(7) * 2)

        self.run_async(main())
        self.assertEqual(os.fstat(fd).st_size, 2 * BS)

    def test_readv_writev_async(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context(capacity=2)

        async def main():
            a, b = kaio.Buffer(BS), mmap.mmap(-1, BS)
            a[:] = pattern(5)
            b[:] = pattern(6)
            n = await asyncio.gather(*(ctx.writev_async(fd, [a, b], 2 * i * BS)
                                       for i in range(4)))
            self.assertEqual(n, [2 * BS] * 4)
            x, y = kaio.Buffer(4 * BS), kaio.Buffer(4 * BS)
            self.assertEqual(await ctx.readv_async(fd, [x, memoryview(y)], 0), 8 * BS)
            self.assertEqual(bytes(x) + bytes(y), (pattern(5) + pattern(6)) * 4)
            self.assertEqual(await ctx.writev_async(fd, map(lambda b: b, [kaio.Buffer(BS)]), 0),
                             BS)
            with self.assertRaises(OSError) as cm:
                await ctx.writev_async(fd, [a, memoryview(x)[1:BS + 1]], 0)
            self.assertRefused(cm, errno.EINVAL, "align")
            b.close()

        self.run_async(main())
        self.assertEqual(kaio._buffer.pinned_count(), 0)

    def test_queued_view_keeps_its_buffer(self):
        # A queued operation on a memoryview of a kaio.Buffer: the view is
        # released and the Buffer dropped before the flush.  The operation
        # must still write the Buffer's bytes (the handle was freed, or
        # worse reused by a later Buffer, before).
        fd = self.make_file("f")
        ctx = self.context()

        async def main():
            b = kaio.Buffer(BS)
            b[:] = pattern(7)
            with memoryview(b) as m:
                t = asyncio.ensure_future(ctx.write_async(fd, m, 0))
                await asyncio.sleep(0)  # queued, not yet flushed
            del b
            gc.collect()
            others = [kaio.Buffer(BS) for _ in range(200)]  # would reuse the handle
            self.assertEqual(await t, BS)
            del others

        self.run_async(main())
        back = kaio.Buffer(BS)
        self.assertEqual(ctx.read(fd, back, 0), BS)
        self.assertEqual(bytes(back), pattern(7))

    def test_closed_loop_queue_is_let_go(self):
        # Operations a loop queued and never flushed before it was closed are
        # dropped (their pins released) by the next blocking call that reaps,
        # not performed by it; a refusal among them does not turn into an
        # exception of that unrelated call.
        fd = self.make_file("f")
        ctx = self.context()
        buf = kaio.Buffer(BS)
        m = mmap.mmap(-1, BS)
        m[:] = pattern(3)
        loop = asyncio.new_event_loop()
        loop.call_soon(loop.stop)
        t1 = loop.create_task(ctx.write_async(fd, buf, 100))  # misaligned
        t2 = loop.create_task(ctx.write_async(fd, m, BS))
        t1._log_destroy_pending = t2._log_destroy_pending = False  # they never finish
        loop.run_forever()
        loop.close()
        self.assertEqual(len(ctx._sq), 2)
        self.assertEqual(ctx.write(fd, buf, 2 * BS), BS)
        self.assertEqual((len(ctx._sq), ctx._pending), (0, {}))
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        back = kaio.Buffer(BS)
        self.assertEqual(ctx.read(fd, back, BS), BS)
        self.assertEqual(bytes(back), bytes(BS))  # the queued write was not performed
        del t1, t2
        m.close()

    def test_ten_thousand_concurrent_reads_capacity_32(self):
        blocks = 256
        fd = self.make_file("f", blocks=blocks)
        ctx = self.context(capacity=32)
        n = 10000
        big = kaio.Buffer(n * BS)
        mv = memoryview(big)
        peak = 0

        async def one(i):
            nonlocal peak
            got = await ctx.read_async(fd, mv[i * BS:(i + 1) * BS], (i % blocks) * BS)
            peak = max(peak, ctx.inflight)
            return got

        async def main():
            return await asyncio.gather(*[one(i) for i in range(n)])

        t0 = time.monotonic()
        results = self.run_async(main(), timeout=60)
        elapsed = time.monotonic() - t0
        self.assertEqual(results, [BS] * n)
        for i in range(n):
            if mv[i * BS:(i + 1) * BS] != pattern(i % blocks):
                self.fail("read %d (block %d) got the wrong data" % (i, i % blocks))
        self.assertLessEqual(peak, 32)
        self.assertEqual(ctx.inflight, 0)
        self.assertEqual(ctx._pending, {})
        print("# python: %d read_async in %.2f s" % (n, elapsed), file=sys.stderr)

    def test_submits_as_soon_as_sixteen_wait(self):
        # Reads queued in one pass of the loop go to the kernel 16 at a
        # time, without waiting for the end of the pass; with the context
        # full, they wait for completions instead of retrying.
        from kaio._context import OP_READ
        fd = self.make_file("f", blocks=32)

        async def main(capacity, inflight, queued):
            ctx = self.context(capacity=capacity)
            bufs = [kaio.Buffer(BS) for _ in range(30)]
            futs = [ctx._queue_rw(OP_READ, fd, b, i * BS, None) for i, b in enumerate(bufs)]
            self.assertEqual((ctx.inflight, len(ctx._sq)), (inflight, queued))
            self.assertEqual(await asyncio.gather(*futs), [BS] * 30)
            for i, b in enumerate(bufs):
                self.assertEqual(bytes(b), pattern(i))
            self.assertEqual((ctx.inflight, ctx._pending), (0, {}))

        self.run_async(main(24, 16, 14))
        self.run_async(main(8, 8, 22))

    def test_capacity_waits_in_fifo_order(self):
        fd = self.make_file("f", blocks=16)
        ctx = self.context(capacity=1)
        order = []

        async def one(i):
            buf = kaio.Buffer(BS)
            self.assertEqual(await ctx.read_async(fd, buf, (i % 16) * BS), BS)
            self.assertEqual(bytes(buf), pattern(i % 16))
            order.append(i)

        async def main():
            await asyncio.gather(*[one(i) for i in range(40)])

        self.run_async(main())
        self.assertEqual(order, list(range(40)))

    def test_mixed_operations_at_capacity(self):
        fd = self.make_file("f", blocks=8)
        ctx = self.context(capacity=2)

        async def main():
            bufs = [kaio.Buffer(BS) for _ in range(8)]
            for i, b in enumerate(bufs):
                b[:] = pattern(100 + i)
            coros = []
            for i, b in enumerate(bufs):
                coros.append(ctx.write_async(fd, b, (8 + i) * BS))
                coros.append(ctx.fdatasync_async(fd))
                coros.append(ctx.fsync_async(fd))
            res = await asyncio.gather(*coros)
            self.assertEqual(res, [BS, None, None] * 8)
            back = kaio.Buffer(8 * BS)
            self.assertEqual(await ctx.read_async(fd, back, 8 * BS), 8 * BS)
            self.assertEqual(bytes(back), b"".join(pattern(100 + i) for i in range(8)))

        self.run_async(main())

    def test_cancelled_read_keeps_object_alive(self):
        fd = self.make_file("f", blocks=256)
        ctx = self.context()

        async def main():
            loop = asyncio.get_running_loop()
            m = mmap.mmap(-1, 256 * BS)
            ref = weakref.ref(m)
            task = asyncio.create_task(ctx.read_async(fd, m, 0))
            await submitted()  # the task submits; nothing is reaped yet
            self.assertEqual(ctx.inflight, 1)
            # Hold the completion back: no reaping until the reader returns.
            loop.remove_reader(ctx.fileno())
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            del m, task
            gc.collect()
            # Cancelled, its coroutine gone, dropped by its caller: the mmap
            # lives on, pinned by the library's reference to the wrapped buffer.
            self.assertIsNotNone(ref(), "memory freed while the kernel may write to it")
            self.assertEqual(kaio._buffer.pinned_count(), 1)
            self.assertEqual(ctx.inflight, 1)
            loop.add_reader(ctx.fileno(), ctx._on_readable)
            # Once the completion is reaped, it goes.
            self.assertTrue(await async_wait_until(lambda: ref() is None))
            self.assertEqual(kaio._buffer.pinned_count(), 0)
            self.assertEqual(ctx.inflight, 0)

        self.run_async(main())
        self.assertEqual(ctx._pending, {})

    def test_cancelled_write_still_writes(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()

        async def main():
            loop = asyncio.get_running_loop()
            buf = kaio.Buffer(BS)
            buf[:] = pattern(42)
            ref = weakref.ref(buf)
            task = asyncio.create_task(ctx.write_async(fd, buf, BS))
            await submitted()
            loop.remove_reader(ctx.fileno())
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            del buf, task
            gc.collect()
            # A kaio.Buffer object may go while its write is in flight: the
            # operation holds its own C reference to the memory.
            self.assertIsNone(ref())
            self.assertEqual(ctx.inflight, 1)
            loop.add_reader(ctx.fileno(), ctx._on_readable)
            self.assertTrue(await async_wait_until(lambda: ctx.inflight == 0))

        self.run_async(main())
        back = kaio.Buffer(BS)
        self.assertEqual(ctx.read(fd, back, BS), BS)
        self.assertEqual(bytes(back), pattern(42))
        self.assertEqual(ctx._pending, {})

    def test_sys_getrefcount_while_in_flight(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()

        async def main():
            loop = asyncio.get_running_loop()
            m = mmap.mmap(-1, BS)
            before = sys.getrefcount(m)
            task = asyncio.create_task(ctx.read_async(fd, m, 0))
            await submitted()
            loop.remove_reader(ctx.fileno())
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            del task
            self.assertGreater(sys.getrefcount(m), before)  # the pin
            loop.add_reader(ctx.fileno(), ctx._on_readable)
            self.assertTrue(await async_wait_until(lambda: ctx.inflight == 0))
            await asyncio.sleep(0)
            self.assertEqual(sys.getrefcount(m), before)
            self.assertEqual(m[:], pattern(0))  # the read landed after all
            m.close()

        self.run_async(main())

    def test_cancelled_while_waiting_for_a_slot(self):
        fd = self.make_file("f", blocks=4)
        ctx = self.context(capacity=1)

        async def main():
            bufs = [kaio.Buffer(BS) for _ in range(4)]
            tasks = [asyncio.create_task(ctx.read_async(fd, bufs[i], i * BS)) for i in range(4)]
            await submitted()  # task 0 submitted; 1..3 wait for the slot
            self.assertEqual(ctx.inflight, 1)
            self.assertEqual(len(ctx._sq), 3)
            tasks[1].cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            self.assertIsInstance(done[1], asyncio.CancelledError)
            self.assertEqual([done[0], done[2], done[3]], [BS, BS, BS])
            self.assertEqual(bytes(bufs[3]), pattern(3))
            self.assertEqual(bytes(bufs[1]), bytes(BS))  # never submitted
            self.assertEqual(len(ctx._sq), 0)

        self.run_async(main())

    def test_cancelled_from_a_completion_while_queued(self):
        fd = self.make_file("f", blocks=4)
        ctx = self.context(capacity=1)
        tasks = {}

        async def first():
            buf = kaio.Buffer(BS)
            n = await ctx.read_async(fd, buf, 0)
            # Its completion let task 1's read in; cancel task 1 now: task 2
            # must still get its turn.
            tasks[1].cancel()
            return n

        async def main():
            tasks[0] = asyncio.create_task(first())
            tasks[1] = asyncio.create_task(ctx.read_async(fd, kaio.Buffer(BS), BS))
            tasks[2] = asyncio.create_task(ctx.read_async(fd, kaio.Buffer(BS), 2 * BS))
            await submitted()
            self.assertEqual(len(ctx._sq), 2)
            r = await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 5)
            self.assertEqual(r[0], BS)
            self.assertIsInstance(r[1], asyncio.CancelledError)
            self.assertEqual(r[2], BS)

        self.run_async(main())

    def test_context_across_event_loops(self):
        fd = self.make_file("f", blocks=2)
        ctx = self.context()
        buf = kaio.Buffer(BS)
        for b in range(2):
            self.assertEqual(asyncio.run(ctx.read_async(fd, buf, b * BS)), BS)
            self.assertEqual(bytes(buf), pattern(b))

    def test_blocking_thread_beside_the_loop(self):
        # Completions reaped by the "wrong" side are routed to their owner.
        fd = self.make_file("f", blocks=32)
        ctx = self.context(capacity=1)
        errors = []

        def blocking():
            try:
                buf = kaio.Buffer(BS)
                for i in range(300):
                    ctx.read(fd, buf, (i % 32) * BS)
                    if bytes(buf) != pattern(i % 32):
                        errors.append("blocking read %d corrupted" % i)
            except BaseException as e:
                errors.append(repr(e))

        async def main():
            t = threading.Thread(target=blocking)
            t.start()

            async def one(i):
                buf = kaio.Buffer(BS)
                self.assertEqual(await ctx.read_async(fd, buf, (i % 32) * BS), BS)
                self.assertEqual(bytes(buf), pattern(i % 32))

            await asyncio.gather(*[one(i) for i in range(600)])
            await asyncio.get_running_loop().run_in_executor(None, t.join, 30)
            self.assertFalse(t.is_alive())

        self.run_async(main())
        self.assertEqual(errors, [])


class TestErrors(KaioTest):
    def test_bad_fd(self):
        ctx = self.context()
        buf = kaio.Buffer(BS)
        with self.assertRaises(OSError) as cm:
            ctx.read(-1, buf, 0)
        self.assertIs(type(cm.exception), OSError)
        self.assertRefused(cm, errno.EBADF, "fd -1 is negative")
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with self.assertRaises(OSError) as cm:  # a closed fd
            ctx.write(w, buf, 0)
        self.assertRefused(cm, errno.EBADF)
        self.assertNotEqual(cm.exception.strerror, os.strerror(errno.EBADF),
                            "the message should be kaio_last_error()'s sentence")
        with self.assertRaises(OSError) as cm:
            self.run_async(ctx.fsync_async(-5))
        self.assertRefused(cm, errno.EBADF, "-5")
        ro = self.open_fd(self.path("ro"), os.O_RDONLY | os.O_DIRECT)
        with self.assertRaises(OSError) as cm:  # not open for writing
            ctx.write(ro, buf, 0)
        self.assertRefused(cm, errno.EBADF, "writing")

    def test_empty_objects_transfer_nothing(self):
        # A 0-byte object of any kind is a 0-byte operation, as os.preadv
        # with an empty buffer: 0, and the fd still checked.
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        buf = kaio.Buffer(BS)
        m = mmap.mmap(-1, BS)
        self.addCleanup(m.close)
        for obj in (bytearray(0), memoryview(m)[0:0], memoryview(buf)[BS:BS]):
            self.assertEqual(ctx.read(fd, obj, 0), 0)
            self.assertEqual(ctx.write(fd, obj, 0), 0)
        self.assertEqual(ctx.read(fd, buf, 0, length=0), 0)
        self.assertEqual(bytes(m), bytes(BS))
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        with self.assertRaises(OSError) as cm:
            ctx.read(-5, bytearray(0), 0)
        self.assertRefused(cm, errno.EBADF, "-5")

        async def main():
            self.assertEqual(await ctx.read_async(fd, bytearray(0), 0), 0)
            self.assertEqual(await ctx.write_async(fd, memoryview(m)[0:0], 0), 0)
        self.run_async(main())
        self.assertEqual(os.fstat(fd).st_size, BS)

    def test_length_past_a_view(self):
        fd = self.make_file("f", blocks=2)
        ctx = self.context()
        buf = kaio.Buffer(2 * BS)
        buf[BS:] = pattern(9)
        with self.assertRaises(OSError) as cm:  # the view ends before the Buffer
            ctx.read(fd, memoryview(buf)[:BS], 0, length=2 * BS)
        self.assertRefused(cm, errno.EINVAL, "larger than the buffer")
        self.assertEqual(bytes(buf[BS:]), pattern(9))

        async def main():
            with self.assertRaises(OSError) as cm:
                await ctx.read_async(fd, memoryview(buf)[:BS], 0, length=2 * BS)
            self.assertRefused(cm, errno.EINVAL, "larger than the buffer")
        self.run_async(main())
        self.assertEqual(bytes(buf[BS:]), pattern(9))
        self.assertEqual(kaio.strerror(2), kaio.strerror(-2))
        for bad, exc in ((2**32 + 2, ValueError), (2.9, TypeError)):
            with self.assertRaises(exc):
                kaio.strerror(bad)

    def test_out_of_range_integers_change_nothing(self):
        # ctypes passes a Python int modulo the C type's width: fd 2**32 + fd
        # would reach the library as fd, offset 2**64 as 0, length 2**64 +
        # BS as BS.  Each is refused before the call, and the file is intact.
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        buf = kaio.Buffer(BS)
        buf[:] = pattern(9)
        cases = [
            ((fd + 2**32, buf, 0), {}, errno.EBADF, "C int"),
            ((-2**31 - 1, buf, 0), {}, errno.EBADF, "C int"),
            ((fd, buf, 2**64), {}, errno.EINVAL, "INT64_MAX"),
            ((fd, buf, 2**63), {"flags": kaio.RWF_DSYNC}, errno.EINVAL, "INT64_MAX"),
            ((fd, buf, 0), {"length": 2**64 + BS}, errno.EINVAL, "length"),
            ((fd, buf, 0), {"flags": 2**32 + kaio.RWF_DSYNC}, errno.EINVAL, "flags"),
        ]
        for args, kw, err, word in cases:
            with self.assertRaises(OSError, msg=(args, kw)) as cm:
                ctx.write(*args, **kw)
            self.assertRefused(cm, err, word)

            async def main():
                with self.assertRaises(OSError, msg=(args, kw)) as cm:
                    await ctx.write_async(*args, **kw)
                self.assertRefused(cm, err, word)
            self.run_async(main())
        for bad in (None, 1.0, "8"):
            with self.assertRaises(TypeError):
                ctx.write(fd, buf, 0, flags=bad)

            async def main():
                with self.assertRaises(TypeError):
                    await ctx.write_async(fd, buf, 0, flags=bad)
            self.run_async(main())
        with self.assertRaises(OSError) as cm:
            ctx.fsync(2**32 + fd)
        self.assertRefused(cm, errno.EBADF, "C int")
        back = kaio.Buffer(BS)
        self.assertEqual(ctx.read(fd, back, 0), BS)
        self.assertEqual(bytes(back), pattern(0))
        self.assertEqual(os.fstat(fd).st_size, BS)
        self.assertEqual((ctx.inflight, ctx._pending), (0, {}))
        self.assertEqual(kaio._buffer.pinned_count(), 0)

    def test_misaligned(self):
        fd = self.make_file("f", blocks=2)
        ctx = self.context()
        buf = kaio.Buffer(2 * BS)
        align = kaio.fd_alignment(fd)
        if not align.offset:
            self.skipTest("the filesystem reports no direct-I/O alignment")
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, buf, 100)
        self.assertRefused(cm, errno.EINVAL, "offset 100", "aligned", str(align.offset))
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, memoryview(buf)[1:1 + BS], 0)
        self.assertRefused(cm, errno.EINVAL, "address", "aligned", str(align.memory))
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, buf, 0, length=100)
        self.assertRefused(cm, errno.EINVAL, "length 100", "aligned")
        with self.assertRaises(OSError) as cm:
            self.run_async(ctx.write_async(fd, buf, 513))
        self.assertRefused(cm, errno.EINVAL, "offset 513", "aligned")
        # any other object is wrapped, and refused the same way when it is
        # misaligned; nothing stays pinned after the refusal
        ba = bytearray(2 * BS)
        addr = ctypes.addressof((ctypes.c_char * 1).from_buffer(ba))
        start = 1 if addr % align.memory == 0 else 0
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, memoryview(ba)[start:start + BS], 0)
        self.assertRefused(cm, errno.EINVAL, "address", "aligned")
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        ba.append(0)  # not exported any more

    def test_without_o_direct(self):
        p = self.path("plain")
        with open(p, "wb") as f:
            f.write(pattern(0))
        fd = self.open_fd(p, os.O_RDWR)
        buf = kaio.Buffer(BS)
        ctx = self.context()
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, buf, 0)
        self.assertRefused(cm, errno.EINVAL, "O_DIRECT")
        with self.assertRaises(OSError) as cm:
            self.run_async(ctx.read_async(fd, buf, 0))
        self.assertRefused(cm, errno.EINVAL, "O_DIRECT")
        buffered = self.context(allow_buffered=True)
        self.assertEqual(buffered.read(fd, buf, 0), BS)
        self.assertEqual(bytes(buf), pattern(0))
        self.assertEqual(self.run_async(buffered.read_async(fd, buf, 0)), BS)
        self.assertEqual(kaio.fd_alignment(fd), (0, 0))
        # BINDINGS.md's signature, Context(capacity, allow_buffered=False):
        # positional too.
        positional = kaio.Context(4, True)
        self.addCleanup(positional.close)
        self.assertEqual(positional.read(fd, buf, 0), BS)

    def test_refused_buffers(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        with self.assertRaisesRegex(TypeError, "read-only"):
            ctx.write(fd, b"x" * BS, 0)
        with self.assertRaisesRegex(TypeError, "read-only"):
            ctx.read(fd, memoryview(bytearray(BS)).toreadonly(), 0)
        with self.assertRaisesRegex(TypeError, "read-only"):
            self.run_async(ctx.write_async(fd, bytes(BS), 0))
        with self.assertRaisesRegex(TypeError, "contiguous"):
            ctx.read(fd, memoryview(kaio.Buffer(2 * BS))[::2], 0)
        with self.assertRaisesRegex(TypeError, "buffer-protocol"):
            ctx.read(fd, 12345, 0)
        with self.assertRaises(TypeError):
            ctx.read("nope", kaio.Buffer(BS), 0)
        buf = kaio.Buffer(BS)
        with self.assertRaises(OSError) as cm:  # range outside the buffer
            ctx.read(fd, buf, 0, length=2 * BS)
        self.assertRefused(cm, errno.EINVAL)
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, buf, -BS)
        self.assertRefused(cm, errno.EINVAL, "negative")
        with self.assertRaises(OSError) as cm:
            ctx.read(fd, buf, 0, length=-1)
        self.assertRefused(cm, errno.EINVAL, "negative")
        self.assertEqual(kaio._buffer.pinned_count(), 0)
        self.assertEqual(ctx._pending, {})

    def test_bad_capacity(self):
        for cap in (0, 65537, -1):
            with self.assertRaises(OSError) as cm:
                kaio.Context(cap)
            self.assertRefused(cm, errno.EINVAL, "capacity")

    def test_refusal_inside_a_batch(self):
        # Coroutines of one loop pass go to kaio_submit together: a refused
        # operation fails its own coroutine only, with its own sentence.
        fd = self.make_file("f", blocks=4)
        ctx = self.context(capacity=8)

        async def main():
            bufs = [kaio.Buffer(BS) for _ in range(5)]
            return await asyncio.gather(
                ctx.read_async(fd, bufs[0], 0),
                ctx.read_async(fd, bufs[1], 100),          # misaligned offset
                ctx.read_async(fd, bufs[2], 2 * BS),
                ctx.read_async(-3, bufs[3], 0),            # bad fd
                ctx.read_async(fd, bufs[4], 3 * BS),
                return_exceptions=True), bufs

        res, bufs = self.run_async(main())
        self.assertEqual([res[0], res[2], res[4]], [BS, BS, BS])
        self.assertEqual(bytes(bufs[4]), pattern(3))
        self.assertIsInstance(res[1], OSError)
        self.assertEqual(res[1].errno, errno.EINVAL)
        self.assertIn("offset 100", str(res[1]))
        self.assertIsInstance(res[3], OSError)
        self.assertEqual(res[3].errno, errno.EBADF)
        self.assertIn("fd -3", str(res[3]))
        self.assertEqual(ctx._pending, {})

    def test_completion_error_message(self):
        # A write past RLIMIT_FSIZE is refused by the kernel when it runs,
        # i.e. at completion (EFBIG): no kaio_last_error() sentence then.
        fd = self.make_file("f")
        ctx = self.context()
        buf = kaio.Buffer(BS)
        old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
            with self.assertRaises(OSError) as cm:
                ctx.write(fd, buf, 4 << 20)
            with self.assertRaises(OSError) as cm2:
                self.run_async(ctx.write_async(fd, buf, 8 << 20))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            signal.signal(signal.SIGXFSZ, old_handler)
        self.assertRefused(cm, errno.EFBIG, "write", "fd %d" % fd, "offset %d" % (4 << 20),
                           os.strerror(errno.EFBIG))
        self.assertRefused(cm2, errno.EFBIG, "write", "offset %d" % (8 << 20))

    def test_errno_selects_the_subclass(self):
        ctx = kaio.Context(1)
        ctx.close()
        with self.assertRaises(BrokenPipeError) as cm:  # ESHUTDOWN
            ctx.fsync(0)
        self.assertEqual(cm.exception.errno, errno.ESHUTDOWN)
        # After fork(), the child's calls on the parent's context: ECHILD.
        fd = self.make_file("f", blocks=1)
        live = self.context()
        pid = os.fork()
        if pid == 0:  # child
            code = 3
            try:
                live.fsync(fd)
            except ChildProcessError as e:
                code = 0 if e.errno == errno.ECHILD and "fork" in str(e) else 2
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0,
                         "the child did not get ChildProcessError(ECHILD)")


class TestClose(KaioTest):
    def test_close_semantics(self):
        fd = self.make_file("f", blocks=1)
        buf = kaio.Buffer(BS)
        with kaio.Context(4) as ctx:
            self.assertFalse(ctx.closed)
            self.assertEqual(ctx.capacity, 4)
            self.assertGreaterEqual(ctx.fileno(), 0)
            ctx.read(fd, buf, 0)
        self.assertTrue(ctx.closed)
        ctx.close()  # idempotent
        for call in (lambda: ctx.read(fd, buf, 0), lambda: ctx.write(fd, buf, 0),
                     lambda: ctx.fsync(fd), lambda: ctx.fdatasync(fd), ctx.fileno,
                     lambda: self.run_async(ctx.read_async(fd, buf, 0)),
                     lambda: self.run_async(ctx.fdatasync_async(fd))):
            with self.assertRaises(OSError) as cm:
                call()
            self.assertEqual(cm.exception.errno, errno.ESHUTDOWN)
        self.assertEqual(ctx.inflight, 0)
        self.assertEqual(bytes(buf), pattern(0))  # buffers outlive their context

    def test_close_waits_for_operations_in_flight(self):
        fd = self.make_file("f", blocks=64)
        ctx = kaio.Context(8)

        async def main():
            bufs = [kaio.Buffer(BS) for _ in range(20)]
            tasks = [asyncio.create_task(ctx.read_async(fd, bufs[i], i * BS))
                     for i in range(20)]
            await submitted()  # 8 submitted, 12 waiting for a slot
            self.assertEqual(ctx.inflight, 8)
            self.assertEqual(len(ctx._sq), 12)
            ctx.close()
            self.assertIsNone(ctx._ctx)
            res = await asyncio.gather(*tasks, return_exceptions=True)
            self.assertEqual(res[:8], [BS] * 8)
            for i in range(8):
                self.assertEqual(bytes(bufs[i]), pattern(i))
            for r in res[8:]:
                self.assertIsInstance(r, BrokenPipeError)
                self.assertEqual(r.errno, errno.ESHUTDOWN)

        self.run_async(main())
        self.assertEqual(kaio._buffer.pinned_count(), 0)

    def test_async_with(self):
        fd = self.make_file("f", blocks=8)

        async def main():
            async with kaio.Context(4) as ctx:
                tasks = [asyncio.create_task(ctx.read_async(fd, mmap.mmap(-1, BS), i * BS))
                         for i in range(8)]
                await asyncio.sleep(0)
            self.assertTrue(ctx.closed)
            self.assertEqual(await asyncio.gather(*tasks), [BS] * 8)

        self.run_async(main())
        self.assertEqual(kaio._buffer.pinned_count(), 0)

    def test_unclosed_context_is_collected(self):
        fd = self.make_file("f", blocks=1)
        ctx = kaio.Context(2)
        ctx.read(fd, kaio.Buffer(BS), 0)
        ref = weakref.ref(ctx)
        del ctx
        gc.collect()
        self.assertIsNone(ref())


class TestModule(KaioTest):
    def test_version(self):
        self.assertRegex(kaio.version(), r"^\d+\.\d+\.\d+$")

    def test_fd_alignment(self):
        fd = self.make_file("f", blocks=1)
        a = kaio.fd_alignment(fd)
        self.assertIsInstance(a, kaio.Alignment)
        for v in a:
            self.assertEqual(v & (v - 1), 0, "not a power of two: %d" % v)
        with self.assertRaises(OSError) as cm:
            kaio.fd_alignment(-1)
        self.assertRefused(cm, errno.EBADF, "-1")
        with self.assertRaises(OSError) as cm:  # not fd's answer (modulo 2**32)
            kaio.fd_alignment(fd + 2**32)
        self.assertRefused(cm, errno.EBADF, "C int")
        with self.assertRaises(TypeError):
            kaio.fd_alignment("3")

    def test_strerror(self):
        self.assertEqual(kaio.strerror(-errno.ENOENT), os.strerror(errno.ENOENT))

    def test_forget_fd(self):
        fd = self.make_file("f", blocks=1)
        ctx = self.context()
        buf = kaio.Buffer(BS)
        ctx.read(fd, buf, 0)
        ctx.forget_fd(fd)
        self.assertEqual(ctx.read(fd, buf, 0), BS)
        with self.assertRaises(OSError) as cm:
            ctx.forget_fd(-1)
        self.assertRefused(cm, errno.EBADF)

    def test_library_lookup(self):
        env = dict(os.environ, KAIO_LIBRARY=self.path("no-such-libkaio.so.1"),
                   PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-c", "import kaio"], env=env, cwd=PKG_ROOT,
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryNotFound", r.stderr)
        self.assertIn("KAIO_LIBRARY", r.stderr)
        # another library there: said so, not an AttributeError
        env = dict(os.environ, KAIO_LIBRARY="libc.so.6", PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run([sys.executable, "-c", "import kaio"], env=env, cwd=PKG_ROOT,
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryNotFound", r.stderr)
        self.assertIn("is not libkaio", r.stderr)
        # the loaded library is the one asked for, when asked
        if os.environ.get("KAIO_LIBRARY"):
            self.assertEqual(kaio.library_path(), os.environ["KAIO_LIBRARY"])


if __name__ == "__main__":
    unittest.main()
