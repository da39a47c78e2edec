/*
 * kaio-bench - measure libkaio with a fio-like load on one file or device.
 *
 *   kaio-bench --file PATH [--rw randread] [--bs 4k] [--depth 32]
 *              [--submit single|batch|auto] [--api callback|poll] [--json] ...
 *
 * Written only on libkaio's public API, like any user of it.  DEPTH slots
 * each own one kaio_buf (allocated once: nothing is allocated per I/O) and
 * keep one operation in flight; when it completes, the slot is refilled
 * with the next offset of the workload.  The context has capacity DEPTH
 * and is single-threaded (KAIO_CTX_SINGLE_THREAD) unless --no-single-thread.
 *
 * Two ways to reap (--api):
 *   callback  every operation carries a kaio_cb; the main loop only calls
 *             kaio_wait(ctx, NULL, 1, 0, -1), and the callbacks refill.
 *   poll      operations carry no callback; kaio_wait(ctx, ev, 1, DEPTH, -1)
 *             copies their events into an array (each event carries a
 *             buffer reference, dropped at once), and the loop refills.
 * Four ways to submit (--submit; the policies are bench-common.h's):
 *   single    kaio_read/kaio_write for each refill, as it happens;
 *   batch     the refills of one reap are collected as kaio_ops and go in
 *             one kaio_submit after it (with callbacks: after kaio_wait);
 *   chunk     kaio_submit calls of --chunk (default 4) refills, made as
 *             soon as that many are ready (from the callbacks too), the
 *             rest after the reap;
 *   auto      batch after a reap that found every operation in flight
 *             completed without waiting (CPU-bound: nothing for a device
 *             to start early), else chunk.
 *
 * The workload, offsets, clock and report are those of bench/raw-aio, the
 * bare-syscall baseline (see bench-common.h): same flags, same --seed, same
 * JSON, so the two can be compared line by line.  The library's own
 * syscalls are invisible from here: syscalls_per_io is reported as null
 * (count them with strace -c -f).
 *
 * Exit status: 0 done, 1 an I/O or system error, 2 a usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "kaio.h"
#include "bench-common.h"

enum api { API_CALLBACK, API_POLL };
static const char *const api_names[] = { "callback", "poll" };

struct bench;

/* One unit of depth: at most one operation in flight at a time. */
struct slot {
	struct bench *b;
	kaio_buf *buf;   /* owned by the slot; each operation holds its own ref */
	uint64_t t0;     /* when its operation was issued */
	uint64_t off;    /* file offset of that operation */
};

struct bench {
	struct bench_run run;
	const struct bench_opts *o;
	kaio_ctx *ctx;
	int fd;
	enum api api;
	bool write_default;    /* direction of every I/O unless --rw mixed */
	bool single;           /* --submit single: kaio_read/kaio_write */
	kaio_cb cb;            /* on_done, or NULL for the poll API */
	struct slot *slots;
	struct kaio_op *pend;  /* batch, chunk, auto: refills not submitted yet */
	unsigned npend;
	struct kaio_event *events;   /* poll API: DEPTH events per reap */
	bool failed;           /* stop refilling; in-flight operations drain */
	uint64_t callbacks;    /* callbacks run (kaio_poll does not count them) */
};

/* Options of this engine (bench_parse handles the common ones). */
static enum api opt_api = API_CALLBACK;
static bool opt_single_thread = true;

enum { OPT_API = 0x200, OPT_NO_SINGLE_THREAD };

static int handle_option(int val, const char *arg)
{
	int i;

	switch (val) {
	case OPT_API:
		if ((i = bench_parse_name(arg, api_names, 2)) < 0)
			return bench_usage_error("invalid --api '%s' (callback, poll)", arg);
		opt_api = (enum api)i;
		return 0;
	case OPT_NO_SINGLE_THREAD:
		opt_single_thread = false;
		return 0;
	}
	return bench_usage_error("unknown option");
}

/* Why a kaio call refused: its own explanation, or at least the errno. */
static const char *why(int rc)
{
	const char *msg = kaio_last_error();
	return *msg ? msg : kaio_strerror(rc);
}

/* The first failure is reported; later ones are usually its echoes. */
#define fail(b, ...) do { \
		if (!(b)->failed) bench_complain(__VA_ARGS__); \
		(b)->failed = true; \
		bench_stop(&(b)->run); \
	} while (0)

/* Submit the pending refills (batch, chunk, auto) in as few calls as
 * kaio_submit allows.  A refusal ends the run: what was not accepted is
 * not in flight. */
static void flush(struct bench *b)
{
	unsigned done = 0;

	while (done < b->npend) {
		int rc = kaio_submit(b->ctx, b->pend + done, b->npend - done);
		if (rc <= 0) {
			const struct kaio_op *op = &b->pend[done];
			fail(b, "cannot submit the %s at offset %" PRIu64 " of %s: %s",
			     op->op == KAIO_OP_WRITE ? "write" : "read", op->offset,
			     b->o->file, why(rc));
			b->run.inflight -= b->npend - done;
			break;
		}
		done += (unsigned)rc;
	}
	b->npend = 0;
}

/* Give the slot its next operation, issued at `now`, unless the run is
 * over (time or count reached, a signal, a failure). */
static void refill(struct bench *b, struct slot *s, uint64_t now)
{
	if (b->failed || !bench_issue(&b->run))
		return;
	bool write = bench_next(&b->run.gen, &s->off, b->write_default);
	s->t0 = now;

	if (b->single) {
		int rc = write
		         ? kaio_write(b->ctx, b->fd, s->off, s->buf, 0, b->o->bs, b->cb, (uintptr_t)s)
		         : kaio_read(b->ctx, b->fd, s->off, s->buf, 0, b->o->bs, b->cb, (uintptr_t)s);
		if (rc < 0) {
			fail(b, "cannot submit the %s at offset %" PRIu64 " of %s: %s",
			     write ? "write" : "read", s->off, b->o->file, why(rc));
			b->run.inflight--;
		}
		return;
	}
	/* Only the fields that change: fd, len, cb are set once (setup). */
	struct kaio_op *op = &b->pend[b->npend++];
	op->op = write ? KAIO_OP_WRITE : KAIO_OP_READ;
	op->offset = s->off;
	op->buf = s->buf;
	op->user_data = (uintptr_t)s;
	if (b->npend >= b->run.batch_at)
		flush(b);
}

/* One completion, from a callback or from the event array. */
static void completed(struct bench *b, struct slot *s, const struct kaio_event *ev)
{
	if (ev->res != (int64_t)b->o->bs) {
		const char *what = ev->op == KAIO_OP_WRITE ? "writing" : "reading";
		if (ev->res < 0)
			fail(b, "%s %s at offset %" PRIu64 ": %s", what, b->o->file,
			     ev->offset, kaio_strerror((int)ev->res));
		else
			fail(b, "%s %s at offset %" PRIu64 ": short transfer (%" PRId64
			     " of %" PRIu64 " bytes): did the file shrink?", what, b->o->file,
			     ev->offset, ev->res, b->o->bs);
		b->run.inflight--;
		return;
	}
	uint64_t now = bench_stamp(&b->run);
	bench_complete(&b->run, s->t0, now);
	refill(b, s, now);
}

/* --api callback: runs inside kaio_wait; single and chunk submit from here. */
static void on_done(const struct kaio_event *ev)
{
	struct slot *s = (struct slot *)(uintptr_t)ev->user_data;

	s->b->callbacks++;
	completed(s->b, s, ev);
}

/* Reap until every operation has completed: the callbacks refill (or, for
 * the poll API, this loop does), and the pending batch goes out before
 * each wait so that nothing waits on an operation not yet submitted. */
static void run(struct bench *b)
{
	for (;;) {
		flush(b);
		if (b->run.inflight == 0)
			return;
		bench_reap_begin(&b->run);
		int n = 0;
		bool wait = true;
		if (bench_probe(&b->run)) {
			/* Anything completed already?  (Callbacks are not counted in
			 * kaio_poll's result.) */
			const uint64_t cbs = b->callbacks;
			n = b->api == API_POLL ? kaio_poll(b->ctx, b->events, b->o->depth)
			                       : kaio_poll(b->ctx, NULL, 0);
			wait = n == 0 && b->callbacks == cbs;
			b->run.reap_blocked = wait;
		}
		if (wait)
			n = b->api == API_POLL
			    ? kaio_wait(b->ctx, b->events, 1, b->o->depth, -1)
			    : kaio_wait(b->ctx, NULL, 1, 0, -1);
		if (n == -EINTR) {
			bench_check_signal(&b->run);
			continue;
		}
		if (n < 0) {
			/* kaio_ctx_destroy still drains what is in flight. */
			fail(b, "waiting for completions: %s", why(n));
			return;
		}
		for (int i = 0; i < n; i++) {
			const struct kaio_event *ev = &b->events[i];
			/* The event carries a reference to the slot's buffer; the
			 * slot keeps its own. */
			kaio_buf_unref(ev->buf);
			completed(b, (struct slot *)(uintptr_t)ev->user_data, ev);
		}
		bench_reap_end(&b->run);
		if (!b->run.lat)
			bench_refresh(&b->run);
		bench_check_signal(&b->run);
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "api", required_argument, NULL, OPT_API },
		{ "no-single-thread", no_argument, NULL, OPT_NO_SINGLE_THREAD },
		{ NULL, 0, NULL, 0 }
	};
	static const struct bench_extra extra = {
		.longopts = longopts,
		.help =
		"  --api API          callback: each operation has a kaio_cb, which refills;\n"
		"                     poll: no callbacks, events reaped into an array by\n"
		"                     kaio_wait (default callback)\n"
		"  --no-single-thread create the context without KAIO_CTX_SINGLE_THREAD\n"
		"                     (the cost of the thread-safe paths)\n",
		.handle = handle_option,
	};
	struct bench_opts o;
	struct bench b = { .fd = -1 };
	int status = 1, rc;

	bench_prog = "kaio-bench";
	rc = bench_parse(argc, argv, &o,
	                 "Measure libkaio: O_DIRECT I/O on one file through its public API.",
	                 &extra);
	if (rc)
		return rc == 1 ? 0 : 2;
	b.o = &o;
	b.api = opt_api;
	b.cb = opt_api == API_CALLBACK ? on_done : NULL;
	b.write_default = bench_write_default(&o);
	b.single = o.submit == BENCH_SUBMIT_SINGLE;

	rc = bench_open(&o, &b.fd);
	if (rc)
		return rc;
	if (!bench_run_init(&b.run, &o))
		goto out;

	/* O_DIRECT needs bs (hence every offset, all multiples of it) aligned;
	 * the buffers are page-aligned. */
	uint32_t mem_align = 0, off_align = 0;
	rc = kaio_fd_alignment(b.fd, &mem_align, &off_align);
	if (rc < 0) {
		bench_complain("cannot learn the alignment of %s: %s", o.file, why(rc));
		goto out;
	}
	uint32_t align = mem_align > off_align ? mem_align : off_align;
	if (align && o.bs % align) {
		bench_complain("--bs %" PRIu64 " is not a multiple of %" PRIu32
		               ", the direct-I/O alignment of %s", o.bs, align, o.file);
		status = 2;
		goto out;
	}

	/* A slot has at most one operation in flight, and a callback refills
	 * after its operation stopped counting: capacity DEPTH is enough. */
	rc = kaio_ctx_create(&b.ctx, o.depth, opt_single_thread ? KAIO_CTX_SINGLE_THREAD : 0);
	if (rc < 0) {
		bench_complain("cannot create a context of capacity %u: %s", o.depth, why(rc));
		goto out;
	}
	b.slots = calloc(o.depth, sizeof *b.slots);
	b.pend = calloc(o.depth, sizeof *b.pend);
	b.events = calloc(o.depth, sizeof *b.events);
	if (!b.slots || !b.pend || !b.events) {
		bench_complain("out of memory");
		goto out;
	}
	for (unsigned i = 0; i < o.depth; i++) {
		struct slot *s = &b.slots[i];
		s->b = &b;
		rc = kaio_buf_alloc(&s->buf, o.bs, 0);
		if (rc < 0) {
			bench_complain("cannot allocate %u buffers of %" PRIu64 " bytes: %s",
			               o.depth, o.bs, why(rc));
			goto out;
		}
		bench_fill(kaio_buf_data(s->buf), o.bs, o.seed + i);
		/* The fields of a pending op that never change. */
		b.pend[i].fd = b.fd;
		b.pend[i].len = o.bs;
		b.pend[i].cb = b.cb;
	}

	/* Fill every slot, by the same submission policy as the refills. */
	bench_begin(&b.run);
	for (unsigned i = 0; i < o.depth && !b.failed; i++)
		refill(&b, &b.slots[i], b.run.now);
	run(&b);
	if (b.failed)
		goto out;
	bench_finish(&b.run);

	char extra_json[128], extra_text[128];
	snprintf(extra_json, sizeof extra_json, ",\"single_thread\":%s,\"version\":\"%s\"",
	         opt_single_thread ? "true" : "false", kaio_version());
	snprintf(extra_text, sizeof extra_text, "(libkaio %s%s)", kaio_version(),
	         opt_single_thread ? "" : ", thread-safe context");
	struct bench_engine_info info = {
		.engine = "kaio", .api = api_names[b.api],
		.extra_json = extra_json, .extra_text = extra_text,
		.syscalls_known = false,
	};
	bench_report(&b.run, &info);
	status = 0;

out:
	/* Destroy first: it waits for what is still in flight and runs those
	 * callbacks, which touch the slots. */
	if (b.ctx)
		kaio_ctx_destroy(b.ctx);
	for (unsigned i = 0; b.slots && i < o.depth; i++)
		kaio_buf_unref(b.slots[i].buf);
	free(b.slots);
	free(b.pend);
	free(b.events);
	bench_run_free(&b.run);
	if (b.fd >= 0)
		close(b.fd);
	return status;
}
