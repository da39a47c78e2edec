#!/usr/bin/env python3
"""python_bench - random O_DIRECT reads through the Python binding (asyncio).

    python3 bench/python_bench.py --file PATH [--depth 32] [--time 10]
                                  [--bs 4096] [--json]

DEPTH coroutines each own one kaio.Buffer of --bs bytes (allocated once)
and keep one read_async in flight on a context of capacity DEPTH; each
picks a uniformly random, --bs-aligned offset inside the file.  Prints the
completed reads per second, or one line of JSON with --json:
{"engine":"python-asyncio","depth":32,"bs":4096,"iops":...,...}.

The binding is found in bindings/python next to this file (or installed);
the library through KAIO_LIBRARY, LD_LIBRARY_PATH or the loader.  Compare
with `kaio-bench --file PATH --depth 32 --time 10 --json`.
"""

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time

_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_here), "bindings", "python"))

kaio = None  # imported in main(), after the arguments


def parse_size(text):
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    if text and text[-1] in mult:
        return int(text[:-1]) * mult[text[-1]]
    return int(text)


async def run(fd, size, depth, bs, seconds, single_thread):
    blocks = size // bs
    if blocks < 1:
        raise SystemExit("python_bench: the file is smaller than one block (%d bytes)" % bs)
    count = 0
    stop = False

    async def worker(ctx, seed):
        nonlocal count
        buf = kaio.Buffer(bs)
        rnd = random.Random(seed).randrange
        read = ctx.read_async
        n = 0
        while not stop:
            got = await read(fd, buf, rnd(blocks) * bs)
            if got != bs:
                raise SystemExit("python_bench: short read (%d of %d bytes)" % (got, bs))
            n += 1
        count += n

    async def timer():
        nonlocal stop
        await asyncio.sleep(seconds)
        stop = True

    with kaio.Context(depth, single_thread=single_thread) as ctx:
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await asyncio.gather(timer(), *[worker(ctx, 0x6b61696f + i) for i in range(depth)])
        elapsed = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return count, elapsed, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", required=True, help="file or block device, opened with O_DIRECT")
    ap.add_argument("--depth", type=int, default=32, help="reads in flight (default 32)")
    ap.add_argument("--time", type=float, default=10.0, help="seconds to run (default 10)")
    ap.add_argument("--bs", type=parse_size, default=4096, help="block size (default 4096)")
    ap.add_argument("--json", action="store_true", help="one line of JSON")
    ap.add_argument("--single-thread", action="store_true",
                    help="create the context with KAIO_CTX_SINGLE_THREAD")
    a = ap.parse_args(argv)
    if a.depth < 1 or a.time <= 0 or a.bs < 512:
        ap.error("--depth >= 1, --time > 0 and --bs >= 512 are required")
    global kaio
    try:
        import kaio
    except ImportError as e:
        print("python_bench: %s" % e, file=sys.stderr)
        return 1

    fd = os.open(a.file, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        count, elapsed, cpu = asyncio.run(
            run(fd, size, a.depth, a.bs, a.time, a.single_thread))
    finally:
        os.close(fd)
    iops = count / elapsed
    if a.json:
        print(json.dumps({"engine": "python-asyncio", "depth": a.depth, "bs": a.bs,
                          "iops": round(iops, 1), "ops": count,
                          "seconds": round(elapsed, 3), "cpu_seconds": round(cpu, 3),
                          "python": sys.version.split()[0], "libkaio": kaio.version()}))
    else:
        print("python-asyncio: %d reads of %d bytes at depth %d in %.2f s: %.0f IOPS "
              "(%.1f us CPU per read)" % (count, a.bs, a.depth, elapsed, iops,
                                          cpu * 1e6 / max(count, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
