/* Integrity stress test: several submitting and reaping threads drive one
 * kaio context at full capacity with reads, writes, readv, writev, fsync and
 * fdatasync on O_DIRECT files, through the public API only.
 *
 * Every 4 KiB block on disk carries a header (file id, offset, generation,
 * writer operation id) and a checksum (FNV-1a over 64-bit words) of the rest
 * of the block.  Each block has an owner state (idle/busy, claimed by
 * compare-and-swap): a submitter claims the blocks of an operation, writes
 * generation g+1 or reads expecting the last committed generation, and the
 * completion (a callback or an event, on a reaping thread) checks the data,
 * commits the generation and releases the blocks.  A read must return
 * exactly the generation of the last completed write.
 *
 * Every operation has a unique id (user_data) with a delivery counter:
 * each accepted id must be delivered exactly once.  Every buffer is a
 * kaio_buf_wrap with a counting release function: after kaio_ctx_destroy
 * releases must equal wraps.  A final pass reads every block back.
 *
 * Plain main(), no cmocka runner; prints a summary and TAP (1..5).
 * Options: --submitters N --reapers N --ops N --files N --blocks N
 *          --capacity N --seed N --timeout SECONDS --stall SECONDS
 * With no option it is the short run of `make check`; `make stress` passes
 * --ops 1000000. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLK 4096u
#define MAXB 4u        /* blocks per operation at most */
#define BATCH_MAX 8u
#define EV_MAX 32u
#define MAGIC 0x6b61696f5354524bull /* "kaioSTRK" */
#define GEN_UNKNOWN UINT64_MAX      /* contents unknown after a failed write */
#define FINAL_TAG (1ull << 62)      /* user_data of the final pass */

/* ---- options ---------------------------------------------------------- */

static unsigned opt_submitters = 4;
static unsigned opt_reapers = 2;
static uint64_t opt_ops = 60000;
static unsigned opt_files = 3;
static unsigned opt_blocks = 2048; /* per file: 8 MiB */
static unsigned opt_capacity = 128;
static uint64_t opt_seed;
static unsigned opt_timeout;       /* 0: scaled by --ops */
static unsigned opt_stall = 60;

/* ---- shared state ------------------------------------------------------ */

enum { K_READ, K_WRITE, K_READV, K_WRITEV, K_FSYNC, K_FDATASYNC, K_N };
static const uint32_t kind_op[K_N] = {
	KAIO_OP_READ, KAIO_OP_WRITE, KAIO_OP_READV,
	KAIO_OP_WRITEV, KAIO_OP_FSYNC, KAIO_OP_FDATASYNC
};
static const char *const kind_name[K_N] = {
	"read", "write", "readv", "writev", "fsync", "fdatasync"
};
/* Mix per 1000 draws. */
static const unsigned kind_weight[K_N] = { 300, 300, 170, 170, 30, 30 };

struct blk_hdr {          /* at the start of every block, 48 bytes */
	uint64_t csum;    /* FNV-1a (64-bit words) over bytes 8..BLK-1 */
	uint64_t magic;
	uint32_t file;
	uint32_t pad;
	uint64_t offset;
	uint64_t gen;
	uint64_t writer;  /* operation id of the write, or UINT64_MAX */
};

/* One operation, from construction to completion.  Owned by the submitter
 * until accepted, then by whichever thread delivers it. */
struct oprec {
	uint64_t id;
	uint64_t gen[MAXB];       /* write: generation written; read: expected */
	kaio_buf *bufs[MAXB];     /* distinct handles */
	uint32_t seg_buf[MAXB];   /* READV/WRITEV: block i is in bufs[seg_buf[i]] */
	size_t seg_off[MAXB];     /*               at this offset */
	size_t buf_off, buf_len;  /* READ/WRITE: data at bufs[0] + buf_off */
	uint32_t nbufs;
	uint32_t kind, file, blk, nblk;
	bool cb, keep_ref, chain;
};

static kaio_ctx *g_ctx;
static int *g_fds;
static uint64_t g_nblocks_total;
static _Atomic uint8_t *g_bstate;       /* 0 idle, 1 busy */
static uint64_t *g_committed;           /* protected by the block's claim */
static uint64_t *g_gen_last;            /* likewise */

static uint64_t g_nids;
static atomic_uint_fast64_t g_next_id;
static struct oprec **g_recs;           /* by id */
static atomic_uint *g_delivered;        /* by id */
static _Atomic uint8_t *g_accepted;     /* by id */

static atomic_llong g_outstanding;      /* accepted or being submitted, undelivered */
static atomic_bool g_submit_done;
static atomic_bool g_reap_stop;         /* drain gave up: stop reaping */
static atomic_bool g_watchdog_stop;
static atomic_uint_fast64_t g_progress;
static _Atomic(const char *) g_phase = "setup";

static atomic_uint_fast64_t n_done[K_N], n_cb, n_ev, n_batched, n_batches,
	n_followups, n_followup_refused, n_eagain, n_bytes, n_corrupt, n_dup,
	n_errors, n_wrapped, n_released, n_unknown_id, n_claim_retry;
static atomic_uint n_max_inflight;
static char **g_paths;                  /* for a cleanup from a watchdog */
static char g_dirpath[4096];
static atomic_int n_messages;

static void note(atomic_uint_fast64_t *counter, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void note(atomic_uint_fast64_t *counter, const char *fmt, ...)
{
	if (counter)
		atomic_fetch_add(counter, 1);
	if (atomic_fetch_add(&n_messages, 1) >= 40)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(stderr, "stress: %s\n", msg);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

static uint64_t rnd(uint64_t *s)
{
	/* xorshift64* */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

/* ---- block contents ---------------------------------------------------- */

static uint64_t block_csum(const unsigned char *blk)
{
	const uint64_t *w = (const uint64_t *)(const void *)(blk + 8);
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < (BLK - 8) / 8; i++) {
		h ^= w[i];
		h *= 0x100000001b3ull;
	}
	return mix64(h);
}

static void fill_block(unsigned char *p, uint32_t file, uint64_t blk,
		       uint64_t gen, uint64_t writer)
{
	struct blk_hdr h = {
		.magic = MAGIC, .file = file, .offset = blk * BLK,
		.gen = gen, .writer = writer,
	};
	memcpy(p, &h, sizeof h);
	uint64_t x = mix64(((uint64_t)file << 40) ^ (blk << 20) ^ gen ^ mix64(writer)) | 1;
	uint64_t *w = (uint64_t *)(void *)(p + sizeof h);
	for (size_t i = 0; i < (BLK - sizeof h) / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
	uint64_t c = block_csum(p);
	memcpy(p, &c, sizeof c);
}

/* 0 if the block read at (file, blk) is intact and of generation `gen`
 * (any generation when GEN_UNKNOWN); else counts a corruption. */
static int verify_block(const unsigned char *p, uint32_t file, uint64_t blk,
			uint64_t gen, const char *what, uint64_t id)
{
	struct blk_hdr h;
	memcpy(&h, p, sizeof h);
	uint64_t c = block_csum(p);
	if (h.magic != MAGIC || h.csum != c) {
		note(&n_corrupt, "CORRUPTION (%s, op %" PRIu64 "): file %u block %" PRIu64
		     ": bad %s (magic %#" PRIx64 ", stored checksum %#" PRIx64 ", computed %#" PRIx64
		     ", first bytes %02x %02x %02x %02x)",
		     what, id, file, blk, h.magic != MAGIC ? "magic" : "checksum",
		     h.magic, h.csum, c, p[0], p[1], p[2], p[3]);
		return -1;
	}
	if (h.file != file || h.offset != blk * BLK) {
		note(&n_corrupt, "CORRUPTION (%s, op %" PRIu64 "): file %u offset %" PRIu64
		     " holds the block of file %u offset %" PRIu64 " (gen %" PRIu64 ", writer %" PRIu64 ")",
		     what, id, file, blk * BLK, h.file, h.offset, h.gen, h.writer);
		return -1;
	}
	if (gen != GEN_UNKNOWN && h.gen != gen) {
		note(&n_corrupt, "CORRUPTION (%s, op %" PRIu64 "): file %u block %" PRIu64
		     ": generation %" PRIu64 " (writer op %" PRIu64 "), expected %" PRIu64,
		     what, id, file, blk, h.gen, h.writer, gen);
		return -1;
	}
	return 0;
}

/* ---- buffers: wrapped, with a counting release ------------------------- */

static void release_fn(void *data, size_t len, void *opaque)
{
	if ((size_t)(uintptr_t)opaque != len)
		note(&n_errors, "release function called with len %zu for a buffer of %zu bytes",
		     len, (size_t)(uintptr_t)opaque);
	memset(data, 0xDD, len); /* poison: a late use shows as corruption */
	free(data);
	atomic_fetch_add(&n_released, 1);
}

static kaio_buf *new_buf(size_t len)
{
	void *p = NULL;
	if (posix_memalign(&p, BLK, len)) {
		fprintf(stderr, "stress: out of memory\n");
		_exit(1);
	}
	kaio_buf *b = NULL;
	int rc = kaio_buf_wrap(&b, p, len, release_fn, (void *)(uintptr_t)len);
	if (rc < 0) {
		fprintf(stderr, "stress: kaio_buf_wrap(%zu) = %d: %s\n", len, rc, kaio_last_error());
		_exit(1);
	}
	atomic_fetch_add(&n_wrapped, 1);
	return b;
}

/* ---- block claims ------------------------------------------------------- */

static uint64_t gidx(uint32_t file, uint64_t blk)
{
	return (uint64_t)file * opt_blocks + blk;
}

static bool claim(uint32_t file, uint32_t blk, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t idle = 0;
		if (!atomic_compare_exchange_strong_explicit(&g_bstate[gidx(file, blk + i)], &idle, 1,
							     memory_order_acquire, memory_order_relaxed)) {
			while (i--)
				atomic_store_explicit(&g_bstate[gidx(file, blk + i)], 0, memory_order_release);
			return false;
		}
	}
	return true;
}

static void unclaim(uint32_t file, uint32_t blk, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t was = atomic_exchange_explicit(&g_bstate[gidx(file, blk + i)], 0,
						       memory_order_release);
		if (was != 1)
			note(&n_errors, "block %u of file %u released while not claimed", blk + i, file);
	}
}

/* ---- operations ---------------------------------------------------------- */

/* What a submitter keeps of an operation: the kaio_op (and its vector) to
 * (re)submit, and its own references, usable after acceptance when the
 * record may already be gone. */
struct pend {
	struct kaio_op op;
	struct kaio_vec vec[MAXB];
	kaio_buf *own[MAXB];
	unsigned nown;
	bool keep_ref;
	struct oprec *rec;
};

static void op_cb(const struct kaio_event *ev);

/* Fill rec's buffers (blocks already claimed, id and gens set) and build
 * the kaio_op. */
static void prepare(struct pend *p, struct oprec *r, uint64_t *rng)
{
	memset(p, 0, sizeof *p);
	p->rec = r;
	struct kaio_op *op = &p->op;
	op->op = kind_op[r->kind];
	op->fd = g_fds[r->file];
	op->user_data = r->id;
	op->cb = r->cb ? op_cb : NULL;
	bool wr = r->kind == K_WRITE || r->kind == K_WRITEV;

	if (r->kind == K_READ || r->kind == K_WRITE) {
		size_t len = (size_t)r->nblk * BLK;
		r->buf_off = rnd(rng) % 4 == 0 ? BLK : 0;
		size_t tail = rnd(rng) % 4 == 0 ? BLK : 0;
		r->buf_len = r->buf_off + len + tail;
		kaio_buf *b = new_buf(r->buf_len);
		unsigned char *d = kaio_buf_data(b);
		memset(d, 0xA5, r->buf_off);                     /* guards */
		memset(d + r->buf_off + len, 0xA5, tail);
		for (uint32_t i = 0; i < r->nblk; i++) {
			unsigned char *blk = d + r->buf_off + (size_t)i * BLK;
			if (wr)
				fill_block(blk, r->file, r->blk + i, r->gen[i], r->id);
			else
				memset(blk, 0x5A, BLK);
		}
		r->bufs[0] = b;
		r->nbufs = 1;
		op->offset = (uint64_t)r->blk * BLK;
		op->buf = b;
		op->buf_offset = r->buf_off;
		op->len = len;
	} else if (r->kind == K_READV || r->kind == K_WRITEV) {
		bool single = rnd(rng) % 2;
		bool reversed = rnd(rng) % 2;
		if (single) {
			r->bufs[0] = new_buf((size_t)r->nblk * BLK);
			r->nbufs = 1;
		}
		for (uint32_t i = 0; i < r->nblk; i++) {
			if (single) {
				uint32_t pos = reversed ? r->nblk - 1 - i : i;
				r->seg_buf[i] = 0;
				r->seg_off[i] = (size_t)pos * BLK;
			} else {
				r->bufs[r->nbufs] = new_buf(BLK);
				r->seg_buf[i] = r->nbufs++;
				r->seg_off[i] = 0;
			}
			kaio_buf *b = r->bufs[r->seg_buf[i]];
			unsigned char *blk = (unsigned char *)kaio_buf_data(b) + r->seg_off[i];
			if (wr)
				fill_block(blk, r->file, r->blk + i, r->gen[i], r->id);
			else
				memset(blk, 0x5A, BLK);
			p->vec[i] = (struct kaio_vec){ b, r->seg_off[i], BLK };
		}
		op->offset = (uint64_t)r->blk * BLK;
		op->vec = p->vec;
		op->nvec = r->nblk;
	}
	/* READV data is reachable only through our own references. */
	r->keep_ref = r->kind == K_READV ? true : rnd(rng) % 2;
	p->keep_ref = r->keep_ref;
	p->nown = r->nbufs;
	for (unsigned i = 0; i < r->nbufs; i++)
		p->own[i] = r->bufs[i];
}

static int pick_kind(uint64_t *rng)
{
	unsigned x = (unsigned)(rnd(rng) % 1000);
	for (int k = 0; k < K_N; k++) {
		if (x < kind_weight[k])
			return k;
		x -= kind_weight[k];
	}
	return K_READ;
}

/* Build one operation: claim blocks, take an id.  0 done, -1 could not
 * claim blocks (try later), 1 no id left. */
static int build(struct pend *p, uint64_t *rng)
{
	int kind = pick_kind(rng);
	uint32_t file = (uint32_t)(rnd(rng) % opt_files);
	uint32_t nblk = 0, blk = 0;
	if (kind == K_READV || kind == K_WRITEV)
		nblk = 2 + (uint32_t)(rnd(rng) % 3);
	else if (kind == K_READ || kind == K_WRITE)
		nblk = rnd(rng) % 8 == 0 ? 2 + (uint32_t)(rnd(rng) % 3) : 1;
	if (nblk) {
		int tries;
		for (tries = 0; tries < 64; tries++) {
			blk = (uint32_t)(rnd(rng) % (opt_blocks - nblk + 1));
			if (claim(file, blk, nblk))
				break;
			atomic_fetch_add(&n_claim_retry, 1);
		}
		if (tries == 64)
			return -1;
	}
	uint64_t id = atomic_fetch_add(&g_next_id, 1);
	if (id >= g_nids) {
		if (nblk)
			unclaim(file, blk, nblk);
		return 1;
	}
	struct oprec *r = calloc(1, sizeof *r);
	if (!r) {
		fprintf(stderr, "stress: out of memory\n");
		_exit(1);
	}
	r->id = id;
	r->kind = (uint32_t)kind;
	r->file = file;
	r->blk = blk;
	r->nblk = nblk;
	r->cb = rnd(rng) % 2;
	r->chain = r->cb && (kind == K_WRITE || kind == K_WRITEV) && rnd(rng) % 4 == 0;
	for (uint32_t i = 0; i < nblk; i++) {
		uint64_t g = gidx(file, blk + i);
		if (kind == K_WRITE || kind == K_WRITEV)
			r->gen[i] = ++g_gen_last[g];
		else
			r->gen[i] = g_committed[g];
	}
	prepare(p, r, rng);
	g_recs[id] = r;
	atomic_fetch_add(&g_outstanding, 1);
	return 0;
}

static void check_inflight(void)
{
	unsigned cur = kaio_ctx_inflight(g_ctx);
	unsigned max = atomic_load_explicit(&n_max_inflight, memory_order_relaxed);
	while (cur > max &&
	       !atomic_compare_exchange_weak_explicit(&n_max_inflight, &max, cur,
						      memory_order_relaxed, memory_order_relaxed))
		;
	if (cur > opt_capacity)
		note(&n_errors, "kaio_ctx_inflight() = %u above capacity %u", cur, opt_capacity);
}

static void accepted(struct pend *p)
{
	atomic_store_explicit(&g_accepted[p->op.user_data], 1, memory_order_relaxed);
	/* p->rec may already be delivered and freed: use only p's copies. */
	if (!p->keep_ref)
		for (unsigned i = 0; i < p->nown; i++)
			kaio_buf_unref(p->own[i]);
}

/* A refusal other than -EAGAIN: the operation never happens. */
static void refused(struct pend *p, int rc, const char *call)
{
	struct oprec *r = p->rec;
	note(&n_errors, "%s(%s, id %" PRIu64 ") refused: %d (%s): %s", call, kind_name[r->kind],
	     r->id, rc, kaio_strerror(rc), kaio_last_error());
	for (unsigned i = 0; i < p->nown; i++)
		kaio_buf_unref(p->own[i]);
	if (r->nblk)
		unclaim(r->file, r->blk, r->nblk);
	g_recs[r->id] = NULL;
	free(r);
	atomic_fetch_sub(&g_outstanding, 1);
}

static int submit_single(const struct kaio_op *op)
{
	switch (op->op) {
	case KAIO_OP_READ:
		return kaio_read(g_ctx, op->fd, op->offset, op->buf, op->buf_offset, op->len,
				 op->cb, op->user_data);
	case KAIO_OP_WRITE:
		return kaio_write(g_ctx, op->fd, op->offset, op->buf, op->buf_offset, op->len,
				  op->cb, op->user_data);
	case KAIO_OP_READV:
		return kaio_readv(g_ctx, op->fd, op->offset, op->vec, op->nvec, op->cb, op->user_data);
	case KAIO_OP_WRITEV:
		return kaio_writev(g_ctx, op->fd, op->offset, op->vec, op->nvec, op->cb, op->user_data);
	case KAIO_OP_FSYNC:
		return kaio_sync(g_ctx, op->fd, KAIO_SYNC_FULL, op->cb, op->user_data);
	default:
		return kaio_sync(g_ctx, op->fd, KAIO_SYNC_DATA, op->cb, op->user_data);
	}
}

static void backoff(unsigned *spins)
{
	if (++*spins < 8)
		sched_yield();
	else
		sleep_us(*spins < 64 ? 20 : 200);
}

static void on_eagain(void)
{
	atomic_fetch_add_explicit(&n_eagain, 1, memory_order_relaxed);
	if (!kaio_last_error()[0])
		note(&n_errors, "-EAGAIN at capacity left kaio_last_error() empty");
}

/* ---- completion ----------------------------------------------------------- */

static void complete(const struct kaio_event *ev, bool via_cb);

static void op_cb(const struct kaio_event *ev)
{
	complete(ev, true);
}

/* From a callback: read back what a write just committed, keeping the
 * claims.  One attempt: a callback cannot reap, so at capacity (another
 * thread took the freed slot) the follow-up is dropped. */
static bool follow_up(const struct oprec *w)
{
	static __thread uint64_t rng;
	if (!rng)
		rng = mix64(opt_seed ^ (uint64_t)(uintptr_t)&rng) | 1;
	uint64_t id = atomic_fetch_add(&g_next_id, 1);
	if (id >= g_nids)
		return false;
	struct oprec *r = calloc(1, sizeof *r);
	if (!r) {
		fprintf(stderr, "stress: out of memory\n");
		_exit(1);
	}
	r->id = id;
	r->kind = K_READ;
	r->file = w->file;
	r->blk = w->blk;
	r->nblk = w->nblk;
	r->cb = rnd(&rng) % 2;
	for (uint32_t i = 0; i < r->nblk; i++)
		r->gen[i] = g_committed[gidx(r->file, r->blk + i)];
	struct pend p;
	prepare(&p, r, &rng);
	g_recs[id] = r;
	atomic_fetch_add(&g_outstanding, 1);
	int rc = submit_single(&p.op);
	if (rc == 0) {
		accepted(&p);
		atomic_fetch_add(&n_followups, 1);
		return true;
	}
	if (rc != -EAGAIN)
		note(&n_errors, "follow-up read from a callback refused: %d (%s): %s",
		     rc, kaio_strerror(rc), kaio_last_error());
	atomic_fetch_add(&n_followup_refused, 1);
	for (unsigned i = 0; i < p.nown; i++)
		kaio_buf_unref(p.own[i]);
	g_recs[id] = NULL;
	free(r);
	atomic_fetch_sub(&g_outstanding, 1);
	return false;
}

static void complete(const struct kaio_event *ev, bool via_cb)
{
	uint64_t id = ev->user_data;
	atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
	if (id >= g_nids) {
		note(&n_unknown_id, "event with unknown user_data %#" PRIx64 " (op %u, res %" PRId64 ")",
		     id, ev->op, ev->res);
		if (!via_cb)
			kaio_buf_unref(ev->buf);
		return;
	}
	unsigned prev = atomic_fetch_add(&g_delivered[id], 1);
	if (prev) {
		note(&n_dup, "DUPLICATE delivery of op %" PRIu64 " (delivery #%u, %s)",
		     id, prev + 1, via_cb ? "callback" : "event");
		if (!via_cb)
			kaio_buf_unref(ev->buf);
		return;
	}
	struct oprec *r = g_recs[id];
	if (!r) {
		note(&n_errors, "op %" PRIu64 " delivered but never accepted", id);
		if (!via_cb)
			kaio_buf_unref(ev->buf);
		return;
	}
	g_recs[id] = NULL;
	atomic_fetch_add_explicit(via_cb ? &n_cb : &n_ev, 1, memory_order_relaxed);

	bool rw1 = r->kind == K_READ || r->kind == K_WRITE;
	bool wr = r->kind == K_WRITE || r->kind == K_WRITEV;
	int64_t want = (int64_t)r->nblk * BLK;
	bool ok = true;

	if (via_cb != r->cb) {
		note(&n_errors, "op %" PRIu64 " (%s) submitted %s a callback delivered as %s",
		     id, kind_name[r->kind], r->cb ? "with" : "without", via_cb ? "a callback" : "an event");
		ok = false;
	}
	if (ev->op != kind_op[r->kind] || ev->fd != g_fds[r->file] || ev->ctx != g_ctx ||
	    ev->offset != (uint64_t)r->blk * BLK || ev->reserved[0] || ev->reserved[1]) {
		note(&n_errors, "op %" PRIu64 " (%s): event fields wrong: op %u fd %d offset %" PRIu64
		     " ctx %p (want op %u fd %d offset %" PRIu64 " ctx %p)", id, kind_name[r->kind],
		     ev->op, ev->fd, ev->offset, (void *)ev->ctx, kind_op[r->kind], g_fds[r->file],
		     (uint64_t)r->blk * BLK, (void *)g_ctx);
		ok = false;
	}
	if (rw1 ? ev->buf != r->bufs[0] : ev->buf != NULL) {
		note(&n_errors, "op %" PRIu64 " (%s): ev.buf %p, expected %p", id, kind_name[r->kind],
		     (void *)ev->buf, rw1 ? (void *)r->bufs[0] : NULL);
		ok = false;
	}
	if (ev->res < 0) {
		note(&n_errors, "op %" PRIu64 " (%s file %u block %u x%u) failed: %" PRId64 " (%s)",
		     id, kind_name[r->kind], r->file, r->blk, r->nblk, ev->res, kaio_strerror((int)ev->res));
		ok = false;
	} else if (ev->res != want) {
		note(&n_errors, "op %" PRIu64 " (%s file %u block %u x%u): res %" PRId64 ", expected %" PRId64,
		     id, kind_name[r->kind], r->file, r->blk, r->nblk, ev->res, want);
		ok = false;
	}

	if (ok && !wr && r->nblk) {
		/* A read: check the guards and every block. */
		if (rw1) {
			const unsigned char *d = kaio_buf_data(ev->buf);
			size_t len = kaio_buf_len(ev->buf);
			if (len != r->buf_len) {
				note(&n_errors, "op %" PRIu64 ": kaio_buf_len %zu, expected %zu", id, len, r->buf_len);
			} else {
				size_t end = r->buf_off + (size_t)want;
				for (size_t i = 0; i < r->buf_len; i++) {
					if (i == r->buf_off)
						i = end;
					if (i < r->buf_len && d[i] != 0xA5) {
						note(&n_corrupt, "CORRUPTION: read op %" PRIu64 " wrote byte %zu of its "
						     "buffer, outside [%zu, %zu)", id, i, r->buf_off, end);
						break;
					}
				}
			}
			for (uint32_t i = 0; i < r->nblk; i++)
				verify_block(d + r->buf_off + (size_t)i * BLK, r->file, r->blk + i,
					     r->gen[i], "read", id);
		} else {
			for (uint32_t i = 0; i < r->nblk; i++) {
				const unsigned char *d = kaio_buf_data(r->bufs[r->seg_buf[i]]);
				verify_block(d + r->seg_off[i], r->file, r->blk + i, r->gen[i], "readv", id);
			}
		}
	}
	if (wr)
		for (uint32_t i = 0; i < r->nblk; i++)
			g_committed[gidx(r->file, r->blk + i)] = ok ? r->gen[i] : GEN_UNKNOWN;
	if (ok) {
		atomic_fetch_add_explicit(&n_done[r->kind], 1, memory_order_relaxed);
		if (ev->res > 0)
			atomic_fetch_add_explicit(&n_bytes, (uint64_t)ev->res, memory_order_relaxed);
	}

	if (!via_cb)
		kaio_buf_unref(ev->buf); /* the event carried the operation's reference */
	if (r->keep_ref)
		for (unsigned i = 0; i < r->nbufs; i++)
			kaio_buf_unref(r->bufs[i]);
	bool chained = false;
	if (ok && r->chain && via_cb)
		chained = follow_up(r);
	if (r->nblk && !chained)
		unclaim(r->file, r->blk, r->nblk);
	free(r);
	atomic_fetch_sub(&g_outstanding, 1); /* last: reapers may stop after it */
}

/* ---- threads --------------------------------------------------------------- */

static void *submitter(void *arg)
{
	uint64_t rng = mix64(opt_seed + 0x9E3779B97F4A7C15ull * (uintptr_t)arg) | 1;
	static __thread struct pend pb[BATCH_MAX];
	struct kaio_op ops[BATCH_MAX];
	bool more = true;
	while (more) {
		unsigned want = rnd(&rng) % 4 == 0 ? 1 + (unsigned)(rnd(&rng) % BATCH_MAX) : 1;
		bool use_submit = want > 1 || rnd(&rng) % 8 == 0;
		unsigned n = 0, spins = 0;
		while (n < want) {
			int b = build(&pb[n], &rng);
			if (b == 1) {
				more = false;
				break;
			}
			if (b < 0) {
				if (n)
					break;       /* submit what we have */
				backoff(&spins);
				continue;
			}
			n++;
		}
		if (!n)
			continue;
		for (unsigned i = 0; i < n; i++) {
			ops[i] = pb[i].op;
			if (use_submit && (ops[i].op == KAIO_OP_WRITE || ops[i].op == KAIO_OP_WRITEV) &&
			    rnd(&rng) % 8 == 0)
				ops[i].rw_flags = KAIO_RWF_DSYNC;
		}
		if (use_submit) {
			atomic_fetch_add(&n_batches, 1);
			atomic_fetch_add(&n_batched, n);
		}
		unsigned done = 0;
		spins = 0;
		while (done < n) {
			int rc = use_submit ? kaio_submit(g_ctx, ops + done, n - done)
					    : submit_single(&ops[done]);
			if (rc == 0 && !use_submit)
				rc = 1;
			if (rc > 0) {
				if ((unsigned)rc > n - done) {
					note(&n_errors, "kaio_submit accepted %d of %u", rc, n - done);
					rc = (int)(n - done);
				}
				for (int i = 0; i < rc; i++)
					accepted(&pb[done + (unsigned)i]);
				done += (unsigned)rc;
				spins = 0;
				check_inflight();
			} else if (rc == -EAGAIN || rc == 0) {
				on_eagain();
				backoff(&spins);
			} else {
				refused(&pb[done], rc, use_submit ? "kaio_submit" : "submit");
				done++;
			}
		}
	}
	return NULL;
}

static void *reaper(void *arg)
{
	unsigned idx = (unsigned)(uintptr_t)arg;
	unsigned max = idx % 2 ? 4 : EV_MAX;
	struct kaio_event evs[EV_MAX];
	for (unsigned round = 0;; round++) {
		if ((atomic_load(&g_submit_done) && atomic_load(&g_outstanding) == 0) ||
		    atomic_load(&g_reap_stop))
			break;
		int rc = round % 8 == 7 ? kaio_poll(g_ctx, evs, max)
					: kaio_wait(g_ctx, evs, 1, max, 100);
		if (rc < 0) {
			if (rc != -EINTR)
				note(&n_errors, "kaio_%s = %d (%s): %s", round % 8 == 7 ? "poll" : "wait",
				     rc, kaio_strerror(rc), kaio_last_error());
			sleep_us(1000);
			continue;
		}
		if ((unsigned)rc > max) {
			note(&n_errors, "reap returned %d events for max %u", rc, max);
			rc = (int)max;
		}
		for (int i = 0; i < rc; i++)
			complete(&evs[i], false);
	}
	return NULL;
}

/* The watchdogs end the process with _exit (threads may be stuck in the
 * library): remove the test files first, async-signal-safely. */
static void remove_files_raw(void)
{
	for (unsigned f = 0; g_paths && f < opt_files; f++)
		if (g_paths[f])
			unlink(g_paths[f]);
	if (g_dirpath[0])
		rmdir(g_dirpath);
}

static void *watchdog(void *arg)
{
	uint64_t last = UINT64_MAX;
	unsigned still = 0;
	while (!atomic_load(&g_watchdog_stop)) {
		sleep_us(250000);
		uint64_t cur = atomic_load(&g_progress);
		if (cur != last) {
			last = cur;
			still = 0;
			continue;
		}
		if (++still < opt_stall * 4)
			continue;
		fprintf(stderr, "stress: STALL: no completion for %u s in phase %s: next id %" PRIu64
			" of %" PRIu64 ", %lld outstanding, kaio_ctx_inflight() = %u\n",
			opt_stall, atomic_load(&g_phase), (uint64_t)atomic_load(&g_next_id), g_nids,
			(long long)atomic_load(&g_outstanding), g_ctx ? kaio_ctx_inflight(g_ctx) : 0);
		printf("Bail out! stalled for %u s in phase %s\n", opt_stall, atomic_load(&g_phase));
		fflush(stdout);
		remove_files_raw();
		_exit(1);
	}
	return NULL;
}

static void on_alarm(int sig)
{
	static const char msg[] = "stress: TIMEOUT: the run exceeded its time limit\nBail out! timeout\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
	(void)w;
	remove_files_raw();
	_exit(1);
}

/* ---- setup, final pass ------------------------------------------------------ */

static int make_file(uint32_t file)
{
	char name[64];
	snprintf(name, sizeof name, "stress-%u.dat", file);
	const char *path = kt_path(name);
	g_paths[file] = strdup(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "stress: cannot create %s: %s\n", path, strerror(errno));
		exit(1);
	}
	enum { CHUNK = 64 };
	unsigned char *chunk = malloc((size_t)CHUNK * BLK);
	if (!chunk)
		exit(1);
	for (uint64_t b = 0; b < opt_blocks; b += CHUNK) {
		uint64_t n = opt_blocks - b < CHUNK ? opt_blocks - b : CHUNK;
		for (uint64_t i = 0; i < n; i++)
			fill_block(chunk + i * BLK, file, b + i, 0, UINT64_MAX);
		atomic_fetch_add(&g_progress, 1); /* setup counts for the watchdog */
		if (pwrite(fd, chunk, n * BLK, (off_t)(b * BLK)) != (ssize_t)(n * BLK)) {
			fprintf(stderr, "stress: cannot write %s: %s\n", path, strerror(errno));
			exit(1);
		}
	}
	free(chunk);
	if (fsync(fd) || close(fd)) {
		fprintf(stderr, "stress: cannot fsync %s: %s\n", path, strerror(errno));
		exit(1);
	}
	fd = open(path, O_RDWR | O_DIRECT);
	if (fd < 0)
		kt_skip_all("cannot open %s with O_DIRECT: %s", path, strerror(errno));
	uint32_t mem = 0, off = 0;
	int rc = kaio_fd_alignment(fd, &mem, &off);
	if (rc < 0 || mem > BLK || off > BLK || (mem && BLK % mem) || (off && BLK % off))
		kt_skip_all("direct-I/O alignment of %s is %u/%u (rc %d), more than %u", path, mem, off, rc, BLK);
	return fd;
}

/* Read every block of every file back through the context (events only,
 * kaio_buf_alloc buffers) and check it against the committed generation. */
static uint64_t final_pass(uint64_t *blocks_checked)
{
	enum { DEPTH = 8, CHUNK = 64 };
	uint64_t chunks_per_file = (opt_blocks + CHUNK - 1) / CHUNK;
	uint64_t nchunks = chunks_per_file * opt_files;
	unsigned *seen = calloc(nchunks, sizeof *seen);
	kaio_buf *bufs[DEPTH];
	uint64_t errs = 0, next = 0, done = 0;
	unsigned inflight = 0, depth = DEPTH < opt_capacity ? DEPTH : opt_capacity;
	struct kaio_event evs[DEPTH];
	*blocks_checked = 0;
	for (unsigned i = 0; i < DEPTH; i++) {
		int rc = kaio_buf_alloc(&bufs[i], (size_t)CHUNK * BLK, 0);
		if (rc < 0) {
			fprintf(stderr, "stress: kaio_buf_alloc: %s\n", kaio_last_error());
			exit(1);
		}
	}
	bool slot_busy[DEPTH] = { false };
	while (done < nchunks) {
		for (unsigned s = 0; s < depth && next < nchunks; s++) {
			if (slot_busy[s])
				continue;
			uint32_t file = (uint32_t)(next / chunks_per_file);
			uint64_t b0 = (next % chunks_per_file) * CHUNK;
			uint64_t n = opt_blocks - b0 < CHUNK ? opt_blocks - b0 : CHUNK;
			memset(kaio_buf_data(bufs[s]), 0x5A, (size_t)n * BLK);
			int rc = kaio_read(g_ctx, g_fds[file], b0 * BLK, bufs[s], 0, (size_t)n * BLK,
					   NULL, FINAL_TAG | (uint64_t)s << 40 | next);
			if (rc < 0) {
				note(&n_errors, "final pass: kaio_read = %d: %s", rc, kaio_last_error());
				errs++;
				done++;
				next++;
				continue;
			}
			slot_busy[s] = true;
			inflight++;
			next++;
		}
		if (!inflight)
			continue;
		int rc = kaio_wait(g_ctx, evs, 1, DEPTH, 1000);
		if (rc < 0) {
			note(&n_errors, "final pass: kaio_wait = %d: %s", rc, kaio_last_error());
			sleep_us(1000);
			continue;
		}
		for (int i = 0; i < rc; i++) {
			const struct kaio_event *ev = &evs[i];
			atomic_fetch_add_explicit(&g_progress, 1, memory_order_relaxed);
			uint64_t c = ev->user_data & ((1ull << 40) - 1);
			unsigned s = (unsigned)((ev->user_data >> 40) & 0xff);
			if (!(ev->user_data & FINAL_TAG) || c >= nchunks || s >= depth || ev->buf != bufs[s]) {
				note(&n_unknown_id, "final pass: unexpected event user_data %#" PRIx64,
				     ev->user_data);
				kaio_buf_unref(ev->buf);
				continue;
			}
			if (seen[c]++) {
				note(&n_dup, "DUPLICATE delivery in the final pass (chunk %" PRIu64 ")", c);
				kaio_buf_unref(ev->buf);
				continue;
			}
			uint32_t file = (uint32_t)(c / chunks_per_file);
			uint64_t b0 = (c % chunks_per_file) * CHUNK;
			uint64_t n = opt_blocks - b0 < CHUNK ? opt_blocks - b0 : CHUNK;
			if (ev->res != (int64_t)(n * BLK)) {
				note(&n_errors, "final pass: read of file %u at %" PRIu64 ": res %" PRId64,
				     file, b0 * BLK, ev->res);
				errs++;
			} else {
				const unsigned char *d = kaio_buf_data(ev->buf);
				for (uint64_t k = 0; k < n; k++) {
					if (verify_block(d + k * BLK, file, b0 + k,
							 g_committed[gidx(file, b0 + k)], "final pass", c))
						errs++;
					(*blocks_checked)++;
				}
			}
			kaio_buf_unref(ev->buf); /* the event's reference; ours stays */
			slot_busy[s] = false;
			inflight--;
			done++;
		}
	}
	for (unsigned i = 0; i < DEPTH; i++)
		kaio_buf_unref(bufs[i]);
	for (uint64_t c = 0; c < nchunks; c++)
		if (seen[c] != 1 && !errs) {
			note(&n_errors, "final pass: chunk %" PRIu64 " delivered %u times", c, seen[c]);
			errs++;
		}
	free(seen);
	return errs;
}

/* ---- main -------------------------------------------------------------------- */

static uint64_t parse_num(const char *opt, const char *s, uint64_t lo, uint64_t hi)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || !*s || *end || v < lo || v > hi) {
		fprintf(stderr, "stress: --%s wants a number in %" PRIu64 "..%" PRIu64 ", not '%s'\n",
			opt, lo, hi, s);
		exit(2);
	}
	return v;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: stress [--submitters N] [--reapers N] [--ops N] [--files N] [--blocks N]\n"
		   "              [--capacity N] [--seed N] [--timeout SECONDS] [--stall SECONDS]\n");
}

static void tap(int n, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void tap(int n, bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%sok %d - ", ok ? "" : "not ", n);
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "submitters", required_argument, NULL, 's' },
		{ "reapers", required_argument, NULL, 'r' },
		{ "ops", required_argument, NULL, 'n' },
		{ "files", required_argument, NULL, 'f' },
		{ "blocks", required_argument, NULL, 'b' },
		{ "capacity", required_argument, NULL, 'c' },
		{ "seed", required_argument, NULL, 'S' },
		{ "timeout", required_argument, NULL, 't' },
		{ "stall", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool seeded = false;
	int c;
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 's': opt_submitters = (unsigned)parse_num("submitters", optarg, 1, 256); break;
		case 'r': opt_reapers = (unsigned)parse_num("reapers", optarg, 1, 256); break;
		case 'n': opt_ops = parse_num("ops", optarg, 1, 1ull << 32); break;
		case 'f': opt_files = (unsigned)parse_num("files", optarg, 1, 64); break;
		case 'b': opt_blocks = (unsigned)parse_num("blocks", optarg, 4, 1u << 20); break;
		case 'c': opt_capacity = (unsigned)parse_num("capacity", optarg, 1, KAIO_CAPACITY_MAX); break;
		case 'S': opt_seed = parse_num("seed", optarg, 0, UINT64_MAX); seeded = true; break;
		case 't': opt_timeout = (unsigned)parse_num("timeout", optarg, 1, 86400); break;
		case 'w': opt_stall = (unsigned)parse_num("stall", optarg, 1, 3600); break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (!seeded)
		opt_seed = mix64((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));

	kt_require_aio();
	printf("1..5\n");
	printf("# stress: %u submitters, %u reapers, %" PRIu64 " ops, %u files x %u blocks of %u, "
	       "capacity %u, seed %" PRIu64 "\n", opt_submitters, opt_reapers, opt_ops, opt_files,
	       opt_blocks, BLK, opt_capacity, opt_seed);
	fflush(stdout);

	/* Watchdogs: a stall (no completion for --stall s) and a total limit. */
	if (!opt_timeout) {
		uint64_t t = 120 + opt_ops / 2000;
		opt_timeout = t > 3600 ? 3600 : (unsigned)t;
	}
	signal(SIGALRM, on_alarm);
	alarm(opt_timeout);
	pthread_t wd;
	if (pthread_create(&wd, NULL, watchdog, NULL)) {
		fprintf(stderr, "stress: cannot start the watchdog\n");
		return 1;
	}

	g_nblocks_total = (uint64_t)opt_files * opt_blocks;
	g_nids = opt_ops;
	g_fds = calloc(opt_files, sizeof *g_fds);
	g_paths = calloc(opt_files, sizeof *g_paths);
	g_bstate = calloc(g_nblocks_total, sizeof *g_bstate);
	g_committed = calloc(g_nblocks_total, sizeof *g_committed);
	g_gen_last = calloc(g_nblocks_total, sizeof *g_gen_last);
	g_recs = calloc(g_nids, sizeof *g_recs);
	g_delivered = calloc(g_nids, sizeof *g_delivered);
	g_accepted = calloc(g_nids, sizeof *g_accepted);
	if (!g_fds || !g_paths || !g_bstate || !g_committed || !g_gen_last || !g_recs || !g_delivered || !g_accepted) {
		fprintf(stderr, "stress: out of memory\n");
		return 1;
	}
	snprintf(g_dirpath, sizeof g_dirpath, "%s", kt_dir());
	for (unsigned f = 0; f < opt_files; f++)
		g_fds[f] = make_file(f);

	int rc = kaio_ctx_create(&g_ctx, opt_capacity, 0);
	if (rc == -EAGAIN)
		kt_skip_all("the system-wide AIO limit refuses capacity %u: %s", opt_capacity, kaio_last_error());
	if (rc < 0) {
		fprintf(stderr, "stress: kaio_ctx_create(%u) = %d: %s\n", opt_capacity, rc, kaio_last_error());
		return 1;
	}

	/* The run. */
	g_phase = "run";
	double t0 = now_s();
	pthread_t *subs = calloc(opt_submitters, sizeof *subs);
	pthread_t *reps = calloc(opt_reapers, sizeof *reps);
	for (unsigned i = 0; i < opt_reapers; i++)
		if (pthread_create(&reps[i], NULL, reaper, (void *)(uintptr_t)i)) {
			fprintf(stderr, "stress: pthread_create failed\n");
			return 1;
		}
	for (unsigned i = 0; i < opt_submitters; i++)
		if (pthread_create(&subs[i], NULL, submitter, (void *)(uintptr_t)(i + 1))) {
			fprintf(stderr, "stress: pthread_create failed\n");
			return 1;
		}
	for (unsigned i = 0; i < opt_submitters; i++)
		pthread_join(subs[i], NULL);
	g_phase = "drain";
	atomic_store(&g_submit_done, true);
	kaio_ctx_wake(g_ctx);
	/* A completion the library lost would keep the reapers waiting: give
	 * up after 10 s without progress, and count what is missing. */
	uint64_t last_progress = atomic_load(&g_progress);
	double last_change = now_s();
	while (atomic_load(&g_outstanding) > 0) {
		sleep_us(2000);
		uint64_t p = atomic_load(&g_progress);
		if (p != last_progress) {
			last_progress = p;
			last_change = now_s();
		} else if (now_s() - last_change > 10) {
			fprintf(stderr, "stress: drain: %lld operations still undelivered after 10 s without "
				"progress (kaio_ctx_inflight() = %u); counting them as lost\n",
				(long long)atomic_load(&g_outstanding), kaio_ctx_inflight(g_ctx));
			break;
		}
	}
	atomic_store(&g_reap_stop, true);
	kaio_ctx_wake(g_ctx);
	for (unsigned i = 0; i < opt_reapers; i++)
		pthread_join(reps[i], NULL);
	double t1 = now_s();
	bool drained = atomic_load(&g_outstanding) == 0;

	/* Accounting: exactly once, nothing left claimed or in flight. */
	uint64_t lost = 0, dup = atomic_load(&n_dup), accepted_n = 0, spurious = 0;
	for (uint64_t id = 0; id < g_nids; id++) {
		unsigned d = atomic_load_explicit(&g_delivered[id], memory_order_relaxed);
		if (g_accepted[id]) {
			accepted_n++;
			if (d == 0) {
				lost++;
				if (lost <= 10)
					fprintf(stderr, "stress: LOST: op %" PRIu64 " accepted, never delivered\n", id);
			}
		} else if (d) {
			spurious++;
			if (spurious <= 10)
				fprintf(stderr, "stress: op %" PRIu64 " delivered %u times, never accepted\n", id, d);
		}
		if (g_recs[id] && drained) {
			note(&n_errors, "op %" PRIu64 ": record never completed", id);
			free(g_recs[id]);
			g_recs[id] = NULL;
		}
	}
	dup += spurious + atomic_load(&n_unknown_id);
	if (kaio_ctx_inflight(g_ctx) != 0)
		note(&n_errors, "kaio_ctx_inflight() = %u after the drain", kaio_ctx_inflight(g_ctx));
	for (uint64_t b = 0; b < g_nblocks_total && drained; b++)
		if (atomic_load(&g_bstate[b]))
			note(&n_errors, "block %" PRIu64 " still claimed after the drain", b);
	if (!drained) {
		/* Lost operations still own their blocks and records: skip the
		 * read-back, and let destroy deliver (or discard) what is left. */
		fprintf(stderr, "stress: skipping the final read-back (lost operations)\n");
	}

	g_phase = "final read-back";
	uint64_t checked = 0;
	double t2 = now_s();
	uint64_t final_errs = drained ? final_pass(&checked) : 0;
	double t3 = now_s();
	g_phase = "destroy";
	rc = kaio_ctx_destroy(g_ctx);
	if (rc)
		note(&n_errors, "kaio_ctx_destroy = %d: %s", rc, kaio_last_error());
	g_ctx = NULL;
	for (unsigned f = 0; f < opt_files; f++)
		close(g_fds[f]);
	atomic_store(&g_watchdog_stop, true);
	pthread_join(wd, NULL);
	alarm(0);

	uint64_t wrapped = atomic_load(&n_wrapped), released = atomic_load(&n_released);
	uint64_t leaked = wrapped > released ? wrapped - released : 0;
	if (released > wrapped)
		note(&n_errors, "%" PRIu64 " more releases than wraps (a reference dropped twice)",
		     released - wrapped);

	uint64_t ops_done = 0;
	for (int k = 0; k < K_N; k++)
		ops_done += atomic_load(&n_done[k]);
	double secs = t1 - t0;
	double mib = (double)atomic_load(&n_bytes) / (1024.0 * 1024.0);
	uint64_t corrupt = atomic_load(&n_corrupt), errors = atomic_load(&n_errors);

	printf("# ops by kind:");
	for (int k = 0; k < K_N; k++)
		printf(" %s %" PRIu64, kind_name[k], (uint64_t)atomic_load(&n_done[k]));
	printf("\n# delivery: %" PRIu64 " callbacks, %" PRIu64 " events; %" PRIu64 " ops in %" PRIu64
	       " kaio_submit calls; %" PRIu64 " follow-ups submitted from callbacks (%" PRIu64
	       " refused at capacity); %" PRIu64 " -EAGAIN retries; max in flight %u of %u; %" PRIu64
	       " claim retries\n",
	       (uint64_t)atomic_load(&n_cb), (uint64_t)atomic_load(&n_ev), (uint64_t)atomic_load(&n_batched),
	       (uint64_t)atomic_load(&n_batches), (uint64_t)atomic_load(&n_followups),
	       (uint64_t)atomic_load(&n_followup_refused), (uint64_t)atomic_load(&n_eagain),
	       atomic_load(&n_max_inflight), opt_capacity, (uint64_t)atomic_load(&n_claim_retry));
	printf("# final pass: %" PRIu64 " blocks verified in %.2f s, %" PRIu64 " errors; buffers: %" PRIu64
	       " wrapped, %" PRIu64 " released\n", checked, t3 - t2, final_errs, wrapped, released);
	printf("# stress: %" PRIu64 " operations (%" PRIu64 " accepted) in %.2f s, %.0f ops/s, %.1f MiB moved "
	       "(%.1f MiB/s); corruptions %" PRIu64 ", lost %" PRIu64 ", duplicated %" PRIu64
	       ", leaked references %" PRIu64 ", errors %" PRIu64 "\n",
	       ops_done, accepted_n, secs, secs > 0 ? (double)ops_done / secs : 0.0, mib,
	       secs > 0 ? mib / secs : 0.0, corrupt, lost, dup, leaked, errors);

	kt_figure_add("stress_operations", (long long)ops_done);
	kt_figure_add("stress_corruptions", (long long)corrupt);
	kt_figure_add("stress_lost_completions", (long long)lost);
	kt_figure_add("stress_duplicated_completions", (long long)dup);
	kt_figure_add("stress_leaked_references", (long long)leaked);

	bool ok1 = errors == 0 && ops_done == accepted_n && accepted_n > 0 &&
		   checked == g_nblocks_total;
	tap(1, ok1, "%" PRIu64 " operations completed%s", ops_done,
	    ok1 ? "" : " (with errors, or not all accepted operations succeeded)");
	tap(2, corrupt == 0, "corruptions: %" PRIu64, corrupt);
	tap(3, lost == 0, "lost completions: %" PRIu64, lost);
	tap(4, dup == 0, "duplicated completions: %" PRIu64, dup);
	tap(5, leaked == 0, "leaked references: %" PRIu64, leaked);
	fflush(stdout);

	free(subs);
	free(reps);
	for (unsigned f = 0; f < opt_files; f++)
		free(g_paths[f]);
	free(g_paths);
	free(g_fds);
	free((void *)g_bstate);
	free(g_committed);
	free(g_gen_last);
	free(g_recs);
	free((void *)g_delivered);
	free((void *)g_accepted);
	return ok1 && corrupt == 0 && lost == 0 && dup == 0 && leaked == 0 ? 0 : 1;
}
