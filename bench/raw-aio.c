/*
 * raw-aio - the baseline for kaio-bench: the same load with bare syscalls.
 *
 *   raw-aio --file PATH [--rw randread] [--bs 4k] [--depth 32]
 *           [--submit single|batch|auto] [--reap syscall|user] [--json] ...
 *
 * The "physical limit" libkaio is measured against: io_setup, io_submit and
 * io_getevents called through syscall(2) (no libaio, no wrapper of ours),
 * on iocbs prepared once per slot, in the tightest loop that still does
 * what kaio-bench does: check every result, time every I/O, refill.  Same
 * flags, offsets (same --seed), buffers (posix_memalign, filled alike),
 * clock and JSON as kaio-bench (see tools/bench-common.h).
 *
 * Submission (--submit): single = one io_submit per refill, as it
 * happens; batch = every refill of one reap in one io_submit; chunk =
 * io_submit calls of --chunk (default 4) refills, made as soon as that
 * many are ready, the rest at the end of the reap; auto = batch after a
 * reap that found every I/O in flight completed without waiting (known
 * with --reap user only), else chunk (see bench-common.h).
 *
 * Reaping (--reap):
 *   syscall  io_getevents(ctx, 1, DEPTH, ...): one syscall per reap.
 *   user     read the completion ring the kernel maps at the context's
 *            address, as fio's userspace_reap does; io_getevents only to
 *            block when the ring is empty.  Safe here: one consumer, no
 *            fork, and only when the ring's magic and feature words are the
 *            ones this layout was written for (checked at start).
 *
 * Every syscall the loop makes (io_submit, io_getevents) is counted while
 * measuring and reported as syscalls_per_io.
 *
 * Not installed; built by hand:
 *   gcc -O2 -Wall -Wextra -I tools bench/raw-aio.c -o raw-aio
 *
 * Exit status: 0 done, 1 an I/O or system error, 2 a usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <linux/aio_abi.h>   /* struct iocb, struct io_event, aio_context_t */
#include <sys/syscall.h>

#include "bench-common.h"

/* ---- The kernel interface ---------------------------------------------------- */

static inline long sys_io_setup(unsigned nr, aio_context_t *ctx)
{
	return syscall(SYS_io_setup, nr, ctx);
}

static inline long sys_io_destroy(aio_context_t ctx)
{
	return syscall(SYS_io_destroy, ctx);
}

static inline long sys_io_submit(aio_context_t ctx, long n, struct iocb **iocbs)
{
	return syscall(SYS_io_submit, ctx, n, iocbs);
}

static inline long sys_io_getevents(aio_context_t ctx, long min, long max,
                                    struct io_event *ev, struct timespec *timeout)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, timeout);
}

/* The completion ring: the context id is its address (fs/aio.c). */
struct aio_ring {
	unsigned id;
	unsigned nr;                 /* events in the ring (not what io_setup asked) */
	unsigned head;               /* consumer: the next event to read */
	unsigned tail;               /* producer: the kernel writes here */
	unsigned magic;
	unsigned compat_features;
	unsigned incompat_features;
	unsigned header_length;      /* sizeof(struct aio_ring) */
	struct io_event io_events[];
};
#define AIO_RING_MAGIC 0xa10a10a1u

/* ---- The engine ----------------------------------------------------------------- */

enum reap { REAP_SYSCALL, REAP_USER };
static const char *const reap_names[] = { "syscall", "user" };

struct slot {
	struct iocb iocb;   /* prepared once; offset and opcode change per I/O */
	uint64_t t0;        /* when it was issued */
};

struct raw {
	struct bench_run run;
	const struct bench_opts *o;
	aio_context_t ctx;
	struct aio_ring *ring;      /* --reap user */
	int fd;
	bool write_default;
	struct slot *slots;
	struct iocb **pend;         /* batch, chunk, auto: refills not submitted yet */
	unsigned npend;
	struct io_event *events;    /* DEPTH per reap */
	bool failed;
};

static enum reap opt_reap = REAP_SYSCALL;

enum { OPT_REAP = 0x200 };

static int handle_option(int val, const char *arg)
{
	int i;

	if (val == OPT_REAP) {
		if ((i = bench_parse_name(arg, reap_names, 2)) < 0)
			return bench_usage_error("invalid --reap '%s' (syscall, user)", arg);
		opt_reap = (enum reap)i;
		return 0;
	}
	return bench_usage_error("unknown option");
}

#define fail(r, ...) do { \
		if (!(r)->failed) bench_complain(__VA_ARGS__); \
		(r)->failed = true; \
		bench_stop(&(r)->run); \
	} while (0)

/* io_submit n iocbs; a partial submission is continued, a refusal ends the
 * run (what the kernel did not take is not in flight). */
static void submit(struct raw *r, struct iocb **iocbs, unsigned n)
{
	while (n > 0) {
		long k = sys_io_submit(r->ctx, n, iocbs);
		r->run.syscalls++;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			fail(r, "io_submit of %u I/Os on %s: %s", n, r->o->file,
			     k < 0 ? strerror(errno) : "nothing taken");
			r->run.inflight -= n;
			return;
		}
		iocbs += k;
		n -= (unsigned)k;
	}
}

static void flush(struct raw *r)
{
	if (r->npend) {
		submit(r, r->pend, r->npend);
		r->npend = 0;
	}
}

/* Give the slot its next I/O, issued at `now`, unless the run is over. */
static inline void refill(struct raw *r, struct slot *s, uint64_t now)
{
	uint64_t off;

	if (r->failed || !bench_issue(&r->run))
		return;
	bool write = bench_next(&r->run.gen, &off, r->write_default);
	s->iocb.aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
	s->iocb.aio_offset = (int64_t)off;
	s->t0 = now;

	if (r->run.batch_at == 1) {      /* single (or chunks of 1) */
		struct iocb *one = &s->iocb;
		submit(r, &one, 1);
		return;
	}
	r->pend[r->npend++] = &s->iocb;
	if (r->npend >= r->run.batch_at)
		flush(r);
}

/* Completions from the ring, without a syscall: at most max, 0 if none.
 * The kernel publishes tail after writing the event (acquire pairs with
 * it); head is published once the events are copied (release).  Only this
 * thread consumes (io_getevents, when it blocks, moves head too, but never
 * while this runs). */
static inline int ring_reap(struct aio_ring *ring, struct io_event *ev, unsigned max)
{
	unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED), nr = ring->nr, n = 0;
	unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);

	while (head != tail && n < max) {
		ev[n++] = ring->io_events[head];
		if (++head == nr)
			head = 0;
	}
	if (n)
		__atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
	return (int)n;
}

/* At least one completion (blocking), or -errno. */
static inline int reap(struct raw *r)
{
	if (r->ring) {
		int n = ring_reap(r->ring, r->events, r->o->depth);
		if (n > 0)
			return n;
		r->run.reap_blocked = true;
	}
	long n = sys_io_getevents(r->ctx, 1, r->o->depth, r->events, NULL);
	r->run.syscalls++;
	return n < 0 ? -errno : (int)n;
}

static void run(struct raw *r)
{
	const int64_t want = (int64_t)r->o->bs;

	for (;;) {
		flush(r);
		if (r->run.inflight == 0)
			return;
		bench_reap_begin(&r->run);
		int n = reap(r);
		if (n == -EINTR) {
			bench_check_signal(&r->run);
			continue;
		}
		if (n < 0) {
			fail(r, "io_getevents on %s: %s", r->o->file, strerror(-n));
			return;   /* io_destroy waits for the rest */
		}
		for (int i = 0; i < n; i++) {
			struct slot *s = (struct slot *)(uintptr_t)r->events[i].data;
			int64_t res = (int64_t)r->events[i].res;   /* signed, whatever its type */
			if (res != want) {
				const char *what = s->iocb.aio_lio_opcode == IOCB_CMD_PWRITE
				                   ? "writing" : "reading";
				if (res < 0)
					fail(r, "%s %s at offset %" PRId64 ": %s", what, r->o->file,
					     (int64_t)s->iocb.aio_offset, strerror((int)-res));
				else
					fail(r, "%s %s at offset %" PRId64 ": short transfer (%" PRId64
					     " of %" PRId64 " bytes)", what, r->o->file,
					     (int64_t)s->iocb.aio_offset, res, want);
				r->run.inflight--;
				continue;
			}
			uint64_t now = bench_stamp(&r->run);
			bench_complete(&r->run, s->t0, now);
			refill(r, s, now);
		}
		bench_reap_end(&r->run);
		if (!r->run.lat)
			bench_refresh(&r->run);
		bench_check_signal(&r->run);
	}
}

/* The direct-I/O alignment of fd: statx's STATX_DIOALIGN where the kernel
 * reports it (6.1+), else 0 (the kernel then decides, with EINVAL). */
static uint32_t dio_alignment(int fd)
{
#ifdef STATX_DIOALIGN
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN))
		return stx.stx_dio_mem_align > stx.stx_dio_offset_align
		       ? stx.stx_dio_mem_align : stx.stx_dio_offset_align;
#else
	(void)fd;
#endif
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "reap", required_argument, NULL, OPT_REAP },
		{ NULL, 0, NULL, 0 }
	};
	static const struct bench_extra extra = {
		.longopts = longopts,
		.help =
		"  --reap HOW         syscall: io_getevents for every reap; user: read the\n"
		"                     completion ring in user space, io_getevents only to\n"
		"                     block (default syscall)\n",
		.handle = handle_option,
	};
	struct bench_opts o;
	struct raw r = { .fd = -1 };
	int status = 1, rc;

	bench_prog = "raw-aio";
	rc = bench_parse(argc, argv, &o,
	                 "The baseline: O_DIRECT I/O on one file with bare io_submit/io_getevents.",
	                 &extra);
	if (rc)
		return rc == 1 ? 0 : 2;
	r.o = &o;
	r.write_default = bench_write_default(&o);

	rc = bench_open(&o, &r.fd);
	if (rc)
		return rc;
	if (!bench_run_init(&r.run, &o))
		goto out;
	uint32_t align = dio_alignment(r.fd);
	if (align && o.bs % align) {
		bench_complain("--bs %" PRIu64 " is not a multiple of %" PRIu32
		               ", the direct-I/O alignment of %s", o.bs, align, o.file);
		status = 2;
		goto out;
	}

	if (sys_io_setup(o.depth, &r.ctx) < 0) {
		bench_complain("io_setup(%u): %s%s", o.depth, strerror(errno),
		               errno == EAGAIN ? " (over /proc/sys/fs/aio-max-nr?)" : "");
		r.ctx = 0;
		goto out;
	}
	if (opt_reap == REAP_USER) {
		struct aio_ring *ring = (struct aio_ring *)(uintptr_t)r.ctx;
		if (ring->magic != AIO_RING_MAGIC || ring->incompat_features != 0) {
			bench_complain("the AIO ring has magic %#x, incompat features %#x: not a"
			               " layout this program can read (--reap syscall works)",
			               ring->magic, ring->incompat_features);
			goto out;
		}
		r.ring = ring;
	}

	r.slots = calloc(o.depth, sizeof *r.slots);
	r.pend = calloc(o.depth, sizeof *r.pend);
	r.events = calloc(o.depth, sizeof *r.events);
	if (!r.slots || !r.pend || !r.events) {
		bench_complain("out of memory");
		goto out;
	}
	for (unsigned i = 0; i < o.depth; i++) {
		struct slot *s = &r.slots[i];
		void *buf;
		if ((rc = posix_memalign(&buf, 4096, o.bs)) != 0) {
			bench_complain("cannot allocate %u buffers of %" PRIu64 " bytes: %s",
			               o.depth, o.bs, strerror(rc));
			goto out;
		}
		bench_fill(buf, o.bs, o.seed + i);
		s->iocb.aio_data = (uintptr_t)s;
		s->iocb.aio_fildes = (uint32_t)r.fd;
		s->iocb.aio_buf = (uintptr_t)buf;
		s->iocb.aio_nbytes = o.bs;
	}

	bench_begin(&r.run);
	for (unsigned i = 0; i < o.depth && !r.failed; i++)
		refill(&r, &r.slots[i], r.run.now);
	run(&r);
	if (r.failed)
		goto out;
	bench_finish(&r.run);

	char extra_json[64];
	snprintf(extra_json, sizeof extra_json, ",\"reap\":\"%s\"", reap_names[opt_reap]);
	char extra_text[64];
	snprintf(extra_text, sizeof extra_text, "reap=%s", reap_names[opt_reap]);
	struct bench_engine_info info = {
		.engine = "raw", .api = NULL,
		.extra_json = extra_json, .extra_text = extra_text,
		.syscalls_known = true,
	};
	bench_report(&r.run, &info);
	status = 0;

out:
	/* io_destroy waits for every I/O still in flight: only then may the
	 * buffers go. */
	if (r.ctx)
		sys_io_destroy(r.ctx);
	for (unsigned i = 0; r.slots && i < o.depth; i++)
		free((void *)(uintptr_t)r.slots[i].iocb.aio_buf);
	free(r.slots);
	free(r.pend);
	free(r.events);
	bench_run_free(&r.run);
	if (r.fd >= 0)
		close(r.fd);
	return status;
}
