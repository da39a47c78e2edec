/*
 * bench-common.h - what kaio-bench (tools/) and raw-aio (bench/) share.
 *
 * Both programs run the same workload on the same file with the same
 * buffers, offsets and clock, and differ only in the engine that moves the
 * I/O: libkaio's public API, or io_submit/io_getevents in a bare loop.  So
 * everything that is not the engine lives here, header-only (static
 * functions), and is included by exactly one translation unit per program:
 *
 *   - option parsing of the common flags (each program adds its own);
 *   - the offset generator: a seeded splitmix64 PRNG, so the same --seed
 *     gives the same sequence of offsets (and of read/write choices) in
 *     both programs;
 *   - opening the file or block device with O_DIRECT, sizing it, and saying
 *     so when a read would only hit holes;
 *   - the run state: warm-up (--ramp), the --time / --count limits, the
 *     in-flight count, and a latency histogram (log-linear, fixed size, no
 *     allocation per I/O, ~0.4% resolution);
 *   - the submission policies (single, batch, chunk, auto), as the number
 *     of pending refills at which the engine submits;
 *   - CPU accounting with getrusage, and the report: human-readable, or one
 *     line of JSON with --json.
 *
 * An engine's loop is, in this order:
 *
 *   bench_reap_begin(r); ...wait for completions...
 *   for each completion:
 *       now = bench_stamp(r);               one clock read per completion
 *       bench_complete(r, slot->t0, now);   latency, counters, time limits
 *       if (bench_issue(r)) {               may another I/O start?
 *           w = bench_next(&r->gen, &off, ...);  its offset and direction
 *           slot->t0 = now; queue it; submit once r->batch_at are queued
 *       }
 *   bench_reap_end(r); submit what is queued; stop when nothing is in flight
 *
 * One clock read per I/O serves both the completion of one request and the
 * issue time of the one replacing it.  --no-lat drops it: completions then
 * share a time refreshed every 64 of them and by bench_refresh().
 */
#ifndef KAIO_BENCH_COMMON_H
#define KAIO_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE       /* O_DIRECT */
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/fs.h>     /* BLKGETSIZE64 */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bad-option.h"
#include "buffer-budget.h"
#include "direct-file.h"

/* ---- Options ----------------------------------------------------------- */

enum bench_rw { BENCH_READ, BENCH_WRITE, BENCH_RANDREAD, BENCH_RANDWRITE, BENCH_MIXED };
enum bench_submit {
	BENCH_SUBMIT_SINGLE, BENCH_SUBMIT_BATCH, BENCH_SUBMIT_AUTO, BENCH_SUBMIT_CHUNK
};

static const char *const bench_rw_names[] = {
	"read", "write", "randread", "randwrite", "mixed"
};
static const char *const bench_submit_names[] = { "single", "batch", "auto", "chunk" };

#define BENCH_DEFAULT_BS 4096
#define BENCH_DEFAULT_DEPTH 32
#define BENCH_DEFAULT_TIME 10.0
#define BENCH_DEFAULT_SEED 0x6b61696fu              /* "kaio" */
#define BENCH_DEFAULT_CHUNK 4
#define BENCH_CREATE_SIZE ((uint64_t)1 << 30)       /* a new file: 1 GiB */
#define BENCH_MAX_DEPTH 65536                       /* KAIO_CAPACITY_MAX */
#define BENCH_MAX_BS ((uint64_t)1 << 30)            /* below MAX_RW_COUNT */
#define BENCH_MIN_ALIGN 512                         /* smallest logical block */

struct bench_opts {
	const char *file;
	enum bench_rw rw;
	unsigned rwmix_read;     /* --rw mixed: percent of reads */
	uint64_t bs;
	unsigned depth;
	uint64_t size;           /* 0 until bench_open() settles it */
	double time_s;           /* 0 with --count */
	uint64_t count;          /* 0 with --time */
	double ramp_s;
	uint64_t seed;
	enum bench_submit submit;
	unsigned chunk;          /* --submit chunk, auto: refills per submission call */
	bool chunk_given;        /* --chunk was given (auto then uses it, else 1) */
	bool json;
	bool create_holes;
	bool lat;                /* record latencies (one clock read per I/O) */
};

static const char *bench_prog = "bench";   /* for messages; set by the program */

static void bench_vcomplain(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void bench_vcomplain(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", bench_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void bench_complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bench_complain(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bench_vcomplain(fmt, ap);
	va_end(ap);
}

static int bench_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bench_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	bench_vcomplain(fmt, ap);
	va_end(ap);
	fprintf(stderr, "Try '%s --help' for more information.\n", bench_prog);
	return 2;
}

/* Parse "123", or with suffixes "4k", "1M", "2g", "1t" (powers of 1024).
 * false on error (including overflow and a sign or leading space). */
static bool bench_parse_size(const char *arg, uint64_t *out)
{
	char *end;
	int shift = 0;

	if (*arg < '0' || *arg > '9')    /* strtoull would accept "-1", " 1" */
		return false;
	errno = 0;
	uint64_t v = strtoull(arg, &end, 10);
	if (errno)
		return false;
	switch (*end) {
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	case 'T': case 't': shift = 40; end++; break;
	}
	if (*end == 'i' || *end == 'I')    /* "4KiB", "4kB" and "4k" all mean 4096 */
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end || v > (UINT64_MAX >> shift))
		return false;
	*out = v << shift;
	return true;
}

/* Parse seconds: "5", "0.5", "5s", "2m".  false on error. */
static bool bench_parse_seconds(const char *arg, double *out)
{
	char *end;

	if ((*arg < '0' || *arg > '9') && *arg != '.')
		return false;
	errno = 0;
	double v = strtod(arg, &end);
	if (errno || end == arg)
		return false;
	if (*end == 's')
		end++;
	else if (*end == 'm')
		v *= 60, end++;
	if (*end || !(v >= 0 && v < 1e7))
		return false;
	*out = v;
	return true;
}

static int bench_parse_name(const char *arg, const char *const *names, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(arg, names[i]) == 0)
			return i;
	return -1;
}

/* What a program adds to the common options: getopt_long entries (their
 * val must be >= 0x200), their help text, and a handler that returns 0, or
 * the value of bench_usage_error(). */
struct bench_extra {
	const struct option *longopts;   /* terminated by a zeroed entry */
	const char *help;
	int (*handle)(int val, const char *arg);
};

enum {
	BO_RW = 0x100, BO_RWMIX, BO_BS, BO_DEPTH, BO_SIZE, BO_TIME, BO_COUNT,
	BO_RAMP, BO_SEED, BO_SUBMIT, BO_CHUNK, BO_JSON, BO_FILE,
	BO_CREATE_HOLES, BO_NO_LAT, BO_HELP
};

static void bench_usage(FILE *f, const char *engine_line, const struct bench_extra *x)
{
	fprintf(f,
	        "Usage: %s --file PATH [OPTION]...\n"
	        "%s\n\n"
	        "Workload:\n"
	        "  --file PATH        file or block device, opened with O_DIRECT\n"
	        "  --rw MODE          read, write, randread, randwrite or mixed (random,\n"
	        "                     70%% reads unless --rwmix-read) (default randread)\n"
	        "  --rwmix-read PCT   --rw mixed: percentage of reads (default 70)\n"
	        "  --bs SIZE          block size, k/m/g suffixes (default 4k); a multiple\n"
	        "                     of the direct-I/O alignment\n"
	        "  --depth N          I/Os in flight (1-%d, default %d)\n"
	        "  --size SIZE        region of the file used, from offset 0 (default: the\n"
	        "                     file's size, or 1g for a new or empty file)\n"
	        "  --time SECONDS     run this long (default %g; \"2m\" for minutes)\n"
	        "  --count N          or run exactly N I/Os\n"
	        "  --ramp SECONDS     warm-up before measuring (default 0)\n"
	        "  --seed N           PRNG seed for offsets and mixed choices (default %u)\n"
	        "  --create-holes     extend a smaller regular file with ftruncate before\n"
	        "                     reading it: the reads hit holes (no device I/O, the\n"
	        "                     CPU-bound case)\n\n"
	        "Engine:\n"
	        "  --submit POLICY    single: one submission call per request, as its\n"
	        "                     slot is refilled; batch: all the refills of one\n"
	        "                     reap in one call, after it; chunk: calls of --chunk\n"
	        "                     refills, made as soon as that many are ready (the\n"
	        "                     rest after the reap); auto: batch after a reap that\n"
	        "                     found every I/O in flight completed without waiting\n"
	        "                     (the CPU is the limit), chunk otherwise (a device\n"
	        "                     is busy: give it work early) (default auto)\n"
	        "  --chunk N          refills per call for chunk (default %d) and auto\n"
	        "                     (default 1)\n"
	        "%s\n"
	        "Output:\n"
	        "  --json             one line of JSON instead of text\n"
	        "  --no-lat           no latency recording (no clock read per I/O)\n"
	        "  -h, --help         show this help\n\n"
	        "Exit status: 0 done, 1 an I/O or system error, 2 a usage error.\n",
	        bench_prog, engine_line, BENCH_MAX_DEPTH, BENCH_DEFAULT_DEPTH,
	        BENCH_DEFAULT_TIME, BENCH_DEFAULT_SEED, BENCH_DEFAULT_CHUNK,
	        x && x->help ? x->help : "");
}

/*
 * Parse argv into *o.  Returns 0 to run, 1 after --help (exit 0), 2 after
 * a usage error (already reported).  A single operand is taken as --file.
 */
static int bench_parse(int argc, char **argv, struct bench_opts *o,
                       const char *engine_line, const struct bench_extra *x)
{
	static const struct option common[] = {
		{ "rw", required_argument, NULL, BO_RW },
		{ "rwmix-read", required_argument, NULL, BO_RWMIX },
		{ "bs", required_argument, NULL, BO_BS },
		{ "depth", required_argument, NULL, BO_DEPTH },
		{ "iodepth", required_argument, NULL, BO_DEPTH },   /* fio's name */
		{ "size", required_argument, NULL, BO_SIZE },
		{ "time", required_argument, NULL, BO_TIME },
		{ "count", required_argument, NULL, BO_COUNT },
		{ "ramp", required_argument, NULL, BO_RAMP },
		{ "seed", required_argument, NULL, BO_SEED },
		{ "submit", required_argument, NULL, BO_SUBMIT },
		{ "chunk", required_argument, NULL, BO_CHUNK },
		{ "json", no_argument, NULL, BO_JSON },
		{ "file", required_argument, NULL, BO_FILE },
		{ "create-holes", no_argument, NULL, BO_CREATE_HOLES },
		{ "no-lat", no_argument, NULL, BO_NO_LAT },
		{ "help", no_argument, NULL, BO_HELP },
	};
	enum { NCOMMON = sizeof common / sizeof common[0], MAX_EXTRA = 16 };
	struct option all[NCOMMON + MAX_EXTRA + 1];
	size_t n = 0;
	bool have_time = false, have_count = false;
	uint64_t v;
	int opt, i;

	*o = (struct bench_opts){
		.rw = BENCH_RANDREAD, .rwmix_read = 70, .bs = BENCH_DEFAULT_BS,
		.depth = BENCH_DEFAULT_DEPTH, .time_s = BENCH_DEFAULT_TIME,
		.seed = BENCH_DEFAULT_SEED, .submit = BENCH_SUBMIT_AUTO,
		.chunk = BENCH_DEFAULT_CHUNK, .lat = true,
	};
	memcpy(all, common, sizeof common);
	n = NCOMMON;
	for (const struct option *e = x ? x->longopts : NULL;
	     e && e->name && n < NCOMMON + MAX_EXTRA; e++)
		all[n++] = *e;
	memset(&all[n], 0, sizeof all[n]);

	opterr = 0;
	while ((opt = getopt_long(argc, argv, ":h", all, NULL)) != -1) {
		switch (opt) {
		case BO_RW:
			if ((i = bench_parse_name(optarg, bench_rw_names, 5)) < 0)
				return bench_usage_error("invalid --rw '%s' (read, write, randread, randwrite, mixed)", optarg);
			o->rw = (enum bench_rw)i;
			break;
		case BO_RWMIX:
			if (!bench_parse_size(optarg, &v) || v > 100 || strpbrk(optarg, "kKmMgGtT"))
				return bench_usage_error("invalid --rwmix-read '%s' (0-100)", optarg);
			o->rwmix_read = (unsigned)v;
			break;
		case BO_BS:
			if (!bench_parse_size(optarg, &o->bs) || o->bs == 0 ||
			    o->bs % BENCH_MIN_ALIGN || o->bs > BENCH_MAX_BS)
				return bench_usage_error("invalid --bs '%s' (a multiple of 512 up to 1g)", optarg);
			break;
		case BO_DEPTH:
			if (!bench_parse_size(optarg, &v) || v < 1 || v > BENCH_MAX_DEPTH)
				return bench_usage_error("invalid --depth '%s' (1-%d)", optarg, BENCH_MAX_DEPTH);
			o->depth = (unsigned)v;
			break;
		case BO_SIZE:
			if (!bench_parse_size(optarg, &o->size) || o->size == 0)
				return bench_usage_error("invalid --size '%s'", optarg);
			break;
		case BO_TIME:
			if (!bench_parse_seconds(optarg, &o->time_s) || o->time_s <= 0)
				return bench_usage_error("invalid --time '%s' (seconds, above 0)", optarg);
			have_time = true;
			break;
		case BO_COUNT:
			if (!bench_parse_size(optarg, &o->count) || o->count == 0)
				return bench_usage_error("invalid --count '%s'", optarg);
			have_count = true;
			break;
		case BO_RAMP:
			if (!bench_parse_seconds(optarg, &o->ramp_s))
				return bench_usage_error("invalid --ramp '%s' (seconds)", optarg);
			break;
		case BO_SEED:
			errno = 0;
			{
				char *end;
				o->seed = strtoull(optarg, &end, 0);
				if (errno || end == optarg || *end || *optarg == '-')
					return bench_usage_error("invalid --seed '%s'", optarg);
			}
			break;
		case BO_SUBMIT:
			if ((i = bench_parse_name(optarg, bench_submit_names, 4)) < 0)
				return bench_usage_error("invalid --submit '%s' (single, batch, chunk, auto)", optarg);
			o->submit = (enum bench_submit)i;
			break;
		case BO_CHUNK:
			if (!bench_parse_size(optarg, &v) || v < 1 || v > BENCH_MAX_DEPTH)
				return bench_usage_error("invalid --chunk '%s' (1-%d)", optarg, BENCH_MAX_DEPTH);
			o->chunk = (unsigned)v;
			o->chunk_given = true;
			break;
		case BO_JSON: o->json = true; break;
		case BO_FILE: o->file = optarg; break;
		case BO_CREATE_HOLES: o->create_holes = true; break;
		case BO_NO_LAT: o->lat = false; break;
		case 'h':
		case BO_HELP:
			bench_usage(stdout, engine_line, x);
			return 1;
		case ':':
			return bench_usage_error("option '%s' needs a value", argv[optind - 1]);
		case '?': {
			char why[512];
			tool_bad_option(all, argv[optind - 1], why, sizeof why);
			return bench_usage_error("%s", why);
		}
		default:
			if (x && x->handle) {
				int rc = x->handle(opt, optarg);
				if (rc)
					return rc;
				break;
			}
			return bench_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (have_time && have_count)
		return bench_usage_error("--time and --count exclude each other");
	if (have_count)
		o->time_s = 0;
	if (optind < argc && !o->file)
		o->file = argv[optind++];
	if (optind < argc)
		return bench_usage_error("unexpected operand '%s'", argv[optind]);
	if (!o->file)
		return bench_usage_error("no file given (--file PATH)");
	/* One buffer per slot, every one filled: more than the machine holds
	 * would end in the OOM killer. */
	if (!tool_buffers_fit(o->depth, o->bs))
		return bench_usage_error("--depth %u buffers of --bs %" PRIu64 " bytes are more than"
		                         " half of this machine's memory (%" PRIu64 " MiB)",
		                         o->depth, o->bs, tool_buffer_budget() >> 19);
	return 0;
}

/* Does the workload write at all? */
static bool bench_writes(const struct bench_opts *o)
{
	return o->rw == BENCH_WRITE || o->rw == BENCH_RANDWRITE ||
	       (o->rw == BENCH_MIXED && o->rwmix_read < 100);
}

/* ---- The offset generator ---------------------------------------------- */

/* splitmix64 (Steele, Lea, Flood): one add and three multiply-xorshifts per
 * number, passes BigCrush, and any seed (even 0) is fine. */
static inline uint64_t bench_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* A number in [0, n) without a division (Lemire's multiply-shift; the bias
 * is below n / 2^64, nothing at file sizes). */
__extension__ typedef unsigned __int128 bench_u128;
static inline uint64_t bench_below(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((bench_u128)bench_rand(state) * n) >> 64);
}

struct bench_gen {
	uint64_t state;        /* PRNG */
	uint64_t nblocks;      /* size / bs */
	uint64_t bs;
	uint64_t next;         /* sequential: the next block */
	bool random;
	bool mixed;
	uint64_t read_below;   /* mixed: a draw below this is a read */
};

static void bench_gen_init(struct bench_gen *g, const struct bench_opts *o)
{
	*g = (struct bench_gen){
		.state = o->seed, .nblocks = o->size / o->bs, .bs = o->bs,
		.random = o->rw == BENCH_RANDREAD || o->rw == BENCH_RANDWRITE || o->rw == BENCH_MIXED,
		.mixed = o->rw == BENCH_MIXED,
		.read_below = o->rwmix_read,
	};
}

/* The next I/O: its offset (a multiple of bs within --size) in *off, and
 * true for a write.  Draws are made in the same order in every engine: the
 * offset, then (mixed only) the direction. */
static inline bool bench_next(struct bench_gen *g, uint64_t *off, bool write_default)
{
	uint64_t blk;

	if (g->random) {
		blk = bench_below(&g->state, g->nblocks);
	} else {
		blk = g->next;
		if (++g->next == g->nblocks)
			g->next = 0;     /* wrap around at the end of the region */
	}
	*off = blk * g->bs;
	if (g->mixed)
		return bench_below(&g->state, 100) >= g->read_below;
	return write_default;
}

/* The direction of every I/O that is not mixed. */
static bool bench_write_default(const struct bench_opts *o)
{
	return o->rw == BENCH_WRITE || o->rw == BENCH_RANDWRITE;
}

/* Fill a buffer with PRNG bytes: touches every page (no fault during the
 * run) and gives writes incompressible data.  Same seed, same bytes. */
static void bench_fill(void *p, size_t len, uint64_t seed)
{
	unsigned char *b = (unsigned char *)p;
	uint64_t s = seed;

	for (size_t i = 0; i < len; i += sizeof(uint64_t)) {
		uint64_t r = bench_rand(&s);
		memcpy(b + i, &r, len - i < sizeof r ? len - i : sizeof r);
	}
}

/* ---- Clock and CPU -------------------------------------------------------- */

static inline uint64_t bench_now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);   /* vDSO: ~30 ns here, no syscall */
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct bench_cpu {
	uint64_t user_us, sys_us;
};

static struct bench_cpu bench_cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (struct bench_cpu){
		.user_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec,
		.sys_us = (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec,
	};
}

/* ---- Latency histogram ------------------------------------------------------ */

/*
 * Log-linear buckets of nanoseconds (the HdrHistogram layout): values below
 * 256 ns have a bucket each; above, every power of two is cut into 128
 * equal buckets, so a bucket is at most 1/128 of its values wide and its
 * midpoint is within 0.4% of any value in it.  4608 buckets (36 KiB) reach
 * 2^42 ns (73 minutes); anything longer lands in the last one.
 */
#define BH_SUB_BITS 7
#define BH_SUB (1u << BH_SUB_BITS)
#define BH_LINEAR (2 * BH_SUB)
#define BH_MAX_SHIFT 34
#define BH_BUCKETS (BH_LINEAR + BH_MAX_SHIFT * BH_SUB)

struct bench_hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t bucket[BH_BUCKETS];
};

static inline unsigned bench_hist_index(uint64_t ns)
{
	if (ns < BH_LINEAR)
		return (unsigned)ns;
	unsigned shift = (unsigned)(63 - __builtin_clzll(ns)) - BH_SUB_BITS; /* >= 1 */
	if (shift > BH_MAX_SHIFT)
		return BH_BUCKETS - 1;
	/* ns >> shift is in [BH_SUB, 2 * BH_SUB) */
	return BH_LINEAR + (shift - 1) * BH_SUB + (unsigned)((ns >> shift) - BH_SUB);
}

/* The midpoint of bucket i, in nanoseconds. */
static double bench_hist_value(unsigned i)
{
	if (i < BH_LINEAR)
		return i;
	unsigned shift = (i - BH_LINEAR) / BH_SUB + 1;
	uint64_t low = (uint64_t)((i - BH_LINEAR) % BH_SUB + BH_SUB) << shift;
	return (double)low + ((double)((uint64_t)1 << shift) - 1) / 2;
}

static inline void bench_hist_add(struct bench_hist *h, uint64_t ns)
{
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
	h->bucket[bench_hist_index(ns)]++;
}

/* The p-quantile (0 < p <= 1), in nanoseconds: the smallest recorded
 * value with at least p of the recordings at or below it. */
static double bench_hist_quantile(const struct bench_hist *h, double p)
{
	uint64_t rank = (uint64_t)(p * (double)h->count + 0.999999), seen = 0;

	if (h->count == 0)
		return 0;
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < BH_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			double v = bench_hist_value(i);
			return v > (double)h->max_ns ? (double)h->max_ns : v;
		}
	}
	return (double)h->max_ns;
}

/* ---- The run: limits, counters, latencies ------------------------------------- */

struct bench_run {
	/* What the per-I/O path touches comes first. */
	struct bench_gen gen;
	uint64_t now;            /* the last time read */
	uint64_t deadline;       /* next ramp or time limit; UINT64_MAX: none */
	uint64_t inflight;       /* started, not yet completed */
	uint64_t completed;      /* every completion, warm-up included */
	uint64_t issued;         /* every I/O started, warm-up included */
	uint64_t issue_limit;    /* no I/O starts once issued reaches this */
	uint64_t syscalls;       /* engines that can count theirs, while measuring */
	struct bench_hist *hist; /* allocated once */
	unsigned since_clock;    /* --no-lat: completions since the last clock read */
	unsigned batch_at;       /* submit once this many refills are pending */
	bool lat;                /* o->lat, at hand */

	const struct bench_opts *o;
	uint64_t start_ns;       /* measuring since */
	uint64_t end_ns;         /* measuring until (set by bench_finish) */
	uint64_t completed0;     /* completed when measuring started */
	uint64_t ios;            /* completions while measuring (bench_finish) */
	uint64_t reap_mark;      /* completed, and inflight, when the reap began */
	uint64_t reap_inflight;
	unsigned auto_rounds;    /* --submit auto: reaps left before probing */
	bool reap_blocked;       /* this reap had to wait: nothing had completed */
	bool measuring;          /* the ramp is over */
	bool stopping;           /* no new I/O: a limit was reached, or a signal */
	bool interrupted;
	struct bench_cpu cpu0, cpu1;
};

static volatile sig_atomic_t bench_signal;

static void bench_on_signal(int sig)
{
	bench_signal = sig;
}

/* No new I/O from now on; what is in flight completes and is counted. */
static void bench_stop(struct bench_run *r)
{
	r->stopping = true;
	r->issue_limit = 0;
}

/* Measuring starts now: everything counted so far was warm-up.  The I/Os
 * still in flight will be counted when they complete, so --count N counts
 * exactly N completions (when N is at least the depth). */
static void bench_start_measuring(struct bench_run *r, uint64_t now)
{
	const struct bench_opts *o = r->o;

	r->measuring = true;
	r->start_ns = now;
	r->completed0 = r->completed;
	r->syscalls = 0;
	memset(r->hist, 0, sizeof *r->hist);
	r->deadline = o->time_s > 0 ? now + (uint64_t)(o->time_s * 1e9) : UINT64_MAX;
	if (o->count && !r->stopping)
		r->issue_limit = r->issued + (o->count > r->inflight ? o->count - r->inflight : 0);
	r->cpu0 = bench_cpu_now();
}

/* A time limit passed: the ramp ended (true: measuring just started), or
 * the run did (false). */
static bool bench_deadline(struct bench_run *r, uint64_t now)
{
	if (!r->measuring) {
		bench_start_measuring(r, now);
		return true;
	}
	bench_stop(r);
	r->deadline = UINT64_MAX;
	return false;
}

/*
 * The submission policy, as the number of pending refills that makes the
 * engine submit them (the rest always go after the reap's completions are
 * handled): 1 for single, "never" for batch, --chunk for chunk; auto
 * chooses between batch and chunk after every reap.  An engine calls
 * bench_reap_begin() before it waits and bench_reap_end() once the reap's
 * completions are handled (callbacks run inside the wait), so every engine
 * decides from the same thing: the previous reap.
 *
 * Auto's rule: submit one request per call (or in --chunk chunks), and
 * watch the reaps.  A reap that finds every I/O in flight completed
 * without having to wait (bench_probe: the engine looks before it blocks
 * and sets reap_blocked), after chunked submissions, means the CPU is the
 * limit (the kernel completed them inside io_submit, as for holes or
 * cached data, or the device is faster than this loop): batching then
 * saves syscalls and costs nothing, so the next BENCH_AUTO_ROUNDS reaps
 * batch, and then chunks probe again.  (Batches cannot judge themselves:
 * on a device they complete together, so their reaps drain everything
 * too.  Nor can a reap that waited: a virtio disk given a burst completes
 * it as a burst, and a slow loop finds everything done.)  Otherwise a
 * device holds work, and a big batch would keep it in the block layer's
 * plug until the whole io_submit returns while the device drains, and
 * come back as a burst: chunks hand it work early.
 */
#define BENCH_AUTO_ROUNDS 16
/* Auto's submissions while a device holds work: one call per request
 * (measured best on this machine's virtio disk: 125-165k IOPS at depth 32
 * against ~90k for chunks of 4), or --chunk when given. */
static unsigned bench_auto_chunk(const struct bench_opts *o)
{
	return o->chunk_given ? o->chunk : 1;
}
/* The chunk the report names: --chunk's, or auto's own. */
static unsigned bench_chunk_used(const struct bench_opts *o)
{
	return o->submit == BENCH_SUBMIT_AUTO ? bench_auto_chunk(o) : o->chunk;
}
static void bench_policy_init(struct bench_run *r)
{
	switch (r->o->submit) {
	case BENCH_SUBMIT_SINGLE: r->batch_at = 1; break;
	case BENCH_SUBMIT_BATCH: r->batch_at = UINT32_MAX; break;
	case BENCH_SUBMIT_CHUNK: r->batch_at = r->o->chunk; break;
	case BENCH_SUBMIT_AUTO: r->batch_at = bench_auto_chunk(r->o); break;
	}
}

static inline void bench_reap_begin(struct bench_run *r)
{
	r->reap_mark = r->completed;
	r->reap_inflight = r->inflight;
	r->reap_blocked = false;
}

/* Should the engine look for completions without blocking before it waits
 * (and set reap_blocked when it found none)?  Only auto between batches. */
static inline bool bench_probe(const struct bench_run *r)
{
	return r->o->submit == BENCH_SUBMIT_AUTO && r->batch_at != UINT32_MAX;
}

static inline void bench_reap_end(struct bench_run *r)
{
	if (r->o->submit != BENCH_SUBMIT_AUTO)
		return;
	if (r->batch_at != UINT32_MAX) {
		if (!r->reap_blocked && r->completed - r->reap_mark >= r->reap_inflight) {
			r->batch_at = UINT32_MAX;
			r->auto_rounds = BENCH_AUTO_ROUNDS;
		}
	} else if (--r->auto_rounds == 0) {
		r->batch_at = bench_auto_chunk(r->o);
	}
}

/* Returns false after printing why (out of memory). */
static bool bench_run_init(struct bench_run *r, const struct bench_opts *o)
{
	*r = (struct bench_run){
		.o = o, .deadline = UINT64_MAX, .issue_limit = UINT64_MAX, .lat = o->lat,
	};
	r->hist = (struct bench_hist *)calloc(1, sizeof *r->hist);
	if (!r->hist) {
		bench_complain("out of memory");
		return false;
	}
	bench_gen_init(&r->gen, o);
	bench_policy_init(r);

	/* SIGINT/SIGTERM stop the run early; the in-flight I/O drains and the
	 * results so far are reported. */
	struct sigaction sa = { .sa_handler = bench_on_signal };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	return true;
}

static void bench_run_free(struct bench_run *r)
{
	free(r->hist);
	r->hist = NULL;
}

/* Call once, right before the first I/O is issued. */
static void bench_begin(struct bench_run *r)
{
	r->now = bench_now_ns();
	if (r->o->ramp_s > 0)
		r->deadline = r->now + (uint64_t)(r->o->ramp_s * 1e9);
	else
		bench_start_measuring(r, r->now);
}

/* The time for a completion (and for the issue of its replacement). */
static inline uint64_t bench_stamp(struct bench_run *r)
{
	if (r->lat || ++r->since_clock % 64 == 0)
		r->now = bench_now_ns();
	return r->now;
}

/* A signal arrived?  Then stop (the engine's wait may also have said
 * EINTR).  Returns whether the run is stopping. */
static inline bool bench_check_signal(struct bench_run *r)
{
	if (bench_signal) {
		bench_stop(r);
		r->interrupted = true;
	}
	return r->stopping;
}

/* Refresh the time outside the per-I/O path (after a reap), checking the
 * limits.  Needed only with --no-lat; harmless otherwise. */
static inline void bench_refresh(struct bench_run *r)
{
	r->now = bench_now_ns();
	if (r->now >= r->deadline)
		bench_deadline(r, r->now);
}

/* One I/O completed successfully; it was issued at t0.  (Latencies of the
 * warm-up go into the histogram too: it is cleared when measuring starts.) */
static inline void bench_complete(struct bench_run *r, uint64_t t0, uint64_t now)
{
	r->inflight--;
	r->completed++;
	if (now >= r->deadline && bench_deadline(r, now))
		return;                  /* the last warm-up I/O */
	if (r->lat)
		bench_hist_add(r->hist, now - t0);
}

/* May another I/O start?  If so it is counted as in flight from now. */
static inline bool bench_issue(struct bench_run *r)
{
	if (r->issued >= r->issue_limit) {
		r->stopping = true;
		return false;
	}
	r->issued++;
	r->inflight++;
	return true;
}

/* Call once every I/O has completed. */
static void bench_finish(struct bench_run *r)
{
	r->end_ns = bench_now_ns();
	r->cpu1 = bench_cpu_now();
	if (r->measuring) {
		r->ios = r->completed - r->completed0;
	} else {                    /* stopped during the ramp: nothing measured */
		r->start_ns = r->end_ns;
		r->cpu0 = r->cpu1;
		memset(r->hist, 0, sizeof *r->hist); /* nor the warm-up's latencies */
	}
	if (r->interrupted)
		bench_complain("interrupted by signal %d: reporting the I/O done so far",
		               (int)bench_signal);
}

/* ---- The file -------------------------------------------------------------- */

/* tool_open_direct, saying why it failed: -1 (cannot open) or
 * TOOL_OPEN_WRONG_KIND (neither a regular file nor a block device). */
static int bench_open_direct(const char *path, int flags, struct stat *st)
{
	int fd = tool_open_direct(path, flags, st);

	if (fd >= 0)
		return fd;
	if (fd == TOOL_OPEN_WRONG_KIND) {
		bench_complain("'%s' is %s: the benchmark needs a regular file or a block device",
		               path, tool_file_kind(st->st_mode));
		return fd;
	}
	bench_complain("cannot open '%s': %s%s", path, strerror(errno),
	               errno == EINVAL ? " (does its filesystem support O_DIRECT? tmpfs does not)" : "");
	return -1;
}

/*
 * Open --file with O_DIRECT and settle --size.  Writes create the file and
 * extend a smaller regular file with ftruncate (the extension is a hole:
 * the first writes there allocate blocks).  Reads never silently read
 * holes: a file smaller than --size is refused unless --create-holes asks
 * for exactly that, and a file mostly made of holes gets a note.  Returns
 * 0 with *fd_out set, or the exit status (1 or 2) after saying why.
 */
static int bench_open(struct bench_opts *o, int *fd_out)
{
	const bool writes = bench_writes(o);
	int flags = writes || o->create_holes ? O_RDWR | O_CREAT : O_RDONLY;
	struct stat st;
	int fd = bench_open_direct(o->file, flags, &st);
	uint64_t fsize = 0;

	if (fd < 0)
		return fd == TOOL_OPEN_WRONG_KIND ? 2 : 1;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &fsize) < 0) {
			bench_complain("cannot get the size of %s: %s", o->file, strerror(errno));
			goto fail;
		}
		if (o->size == 0)
			o->size = fsize;
		if (o->size > fsize) {
			bench_complain("--size %" PRIu64 " is beyond the end of %s (%" PRIu64 " bytes)",
			               o->size, o->file, fsize);
			close(fd);
			return 2;
		}
	} else { /* a regular file */
		fsize = (uint64_t)st.st_size;
		if (o->size == 0)
			o->size = fsize ? fsize : BENCH_CREATE_SIZE;
		if (fsize < o->size && !writes && !o->create_holes) {
			bench_complain("%s has %" PRIu64 " bytes, less than the %" PRIu64
			               " to read: write it first (e.g. dd if=/dev/urandom of=%s bs=1M"
			               " count=%" PRIu64 " oflag=direct), or pass --create-holes to"
			               " read holes (no device I/O)", o->file, fsize, o->size,
			               o->file, (o->size + (1u << 20) - 1) >> 20);
			close(fd);
			return 2;
		}
		if (fsize < o->size) {
			if (ftruncate(fd, (off_t)o->size) < 0) {
				bench_complain("cannot extend %s to %" PRIu64 " bytes: %s",
				               o->file, o->size, strerror(errno));
				goto fail;
			}
			if (writes)
				bench_complain("note: %s extended to %" PRIu64 " bytes with ftruncate;"
				               " writes into the new part allocate blocks",
				               o->file, o->size);
		} else if (!writes && !o->create_holes &&
		           (uint64_t)st.st_blocks * 512 < o->size / 2) {
			bench_complain("note: %s is mostly holes (%" PRIu64 " of %" PRIu64
			               " bytes allocated): reads of holes do no device I/O",
			               o->file, (uint64_t)st.st_blocks * 512, fsize);
		}
	}
	if (o->size < o->bs) {
		bench_complain("the region of %" PRIu64 " bytes (--size, else the file's size) is"
		               " smaller than one block (--bs %" PRIu64 ")", o->size, o->bs);
		close(fd);
		return 2;
	}
	*fd_out = fd;
	return 0;

fail:
	close(fd);
	return 1;
}

/* ---- The report -------------------------------------------------------------- */

/* The length of the well-formed UTF-8 sequence at s (1-4), or 0 when the
 * bytes there are not UTF-8 (a stray continuation byte, a truncated or
 * overlong sequence, a surrogate, above U+10FFFF). */
static size_t bench_utf8_len(const unsigned char *s)
{
	unsigned c = s[0], n, min, cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, min = 0x80, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, min = 0x800, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, min = 0x10000, cp = c & 0x07;
	else
		return 0;
	for (unsigned i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* A JSON string: quotes, backslashes and control characters escaped; a
 * byte that is not UTF-8 (a file name may hold any) becomes U+FFFD, so
 * that the line stays valid JSON. */
static void bench_json_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', f);
	while (*s) {
		unsigned char c = *s;
		size_t n = bench_utf8_len(s);
		if (n == 0) {
			fputs("\\ufffd", f);
			s++;
		} else if (c == '"' || c == '\\') {
			fprintf(f, "\\%c", c);
			s++;
		} else if (c < 0x20) {
			fprintf(f, "\\u%04x", c);
			s++;
		} else {
			fwrite(s, 1, n, f);
			s += n;
		}
	}
	fputc('"', f);
}

/* What the engine adds to the report. */
struct bench_engine_info {
	const char *engine;      /* "kaio", "raw" */
	const char *api;         /* NULL: JSON null */
	const char *extra_json;  /* appended inside the object: ,"k":v... or NULL */
	const char *extra_text;  /* appended to the first text line, or NULL */
	bool syscalls_known;     /* else syscalls_per_io is null */
};

static void bench_report(const struct bench_run *r, const struct bench_engine_info *e)
{
	const struct bench_opts *o = r->o;
	const struct bench_hist *h = r->hist;
	double secs = (double)(r->end_ns - r->start_ns) / 1e9;
	double ios = (double)r->ios;
	double iops = secs > 0 ? ios / secs : 0;
	double mib_s = iops * (double)o->bs / 1048576.0;
	double user_us = (double)(r->cpu1.user_us - r->cpu0.user_us);
	double sys_us = (double)(r->cpu1.sys_us - r->cpu0.sys_us);
	double per = ios > 0 ? 1 / ios : 0;
	double mean = h->count ? (double)h->sum_ns / (double)h->count / 1e3 : 0;
	double p50 = bench_hist_quantile(h, 0.50) / 1e3;
	double p99 = bench_hist_quantile(h, 0.99) / 1e3;
	double p999 = bench_hist_quantile(h, 0.999) / 1e3;
	double pmax = (double)h->max_ns / 1e3;
	bool lat = o->lat && h->count > 0;

	if (o->json) {
		FILE *f = stdout;
		fputs("{\"engine\":", f);
		bench_json_string(f, e->engine);
		fprintf(f, ",\"rw\":\"%s\",\"bs\":%" PRIu64 ",\"depth\":%u,\"submit\":\"%s\",\"api\":",
		        bench_rw_names[o->rw], o->bs, o->depth, bench_submit_names[o->submit]);
		if (e->api)
			bench_json_string(f, e->api);
		else
			fputs("null", f);
		fputs(",\"file\":", f);
		bench_json_string(f, o->file);
		fprintf(f, ",\"ios\":%" PRIu64 ",\"seconds\":%.6f,\"iops\":%.1f,\"mib_s\":%.3f",
		        r->ios, secs, iops, mib_s);
		if (lat)
			fprintf(f, ",\"lat_us\":{\"mean\":%.3f,\"p50\":%.3f,\"p99\":%.3f,"
			        "\"p999\":%.3f,\"max\":%.3f}", mean, p50, p99, p999, pmax);
		else
			fputs(",\"lat_us\":null", f);
		fprintf(f, ",\"cpu_us_per_io\":%.4f", (user_us + sys_us) * per);
		if (e->syscalls_known)
			fprintf(f, ",\"syscalls_per_io\":%.4f", (double)r->syscalls * per);
		else
			fputs(",\"syscalls_per_io\":null", f);
		/* Beyond the fixed fields: enough to rerun and to split the CPU. */
		fprintf(f, ",\"cpu_user_us_per_io\":%.4f,\"cpu_sys_us_per_io\":%.4f"
		        ",\"size\":%" PRIu64 ",\"seed\":%" PRIu64 ",\"ramp\":%g",
		        user_us * per, sys_us * per, o->size, o->seed, o->ramp_s);
		if (o->submit == BENCH_SUBMIT_AUTO || o->submit == BENCH_SUBMIT_CHUNK)
			fprintf(f, ",\"chunk\":%u", bench_chunk_used(o));
		if (o->rw == BENCH_MIXED)
			fprintf(f, ",\"rwmix_read\":%u", o->rwmix_read);
		if (r->interrupted)
			fputs(",\"interrupted\":true", f);
		if (e->extra_json)
			fputs(e->extra_json, f);
		fputs("}\n", f);
		return;
	}

	printf("%s %s bs=%" PRIu64 " depth=%u submit=%s", e->engine,
	       bench_rw_names[o->rw], o->bs, o->depth, bench_submit_names[o->submit]);
	if (o->submit == BENCH_SUBMIT_AUTO || o->submit == BENCH_SUBMIT_CHUNK)
		printf("(%u)", bench_chunk_used(o));
	if (o->rw == BENCH_MIXED)
		printf(" rwmix-read=%u%%", o->rwmix_read);
	if (e->api)
		printf(" api=%s", e->api);
	if (e->extra_text)
		printf(" %s", e->extra_text);
	printf("\n  file %s, %" PRIu64 " bytes used\n", o->file, o->size);
	printf("  %" PRIu64 " I/Os in %.2f s: %.0f IOPS, %.1f MiB/s%s\n",
	       r->ios, secs, iops, mib_s, r->interrupted ? " (interrupted)" : "");
	if (lat)
		printf("  latency (us): mean %.2f  p50 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
		       mean, p50, p99, p999, pmax);
	printf("  cpu: %.3f us per I/O (user %.3f, sys %.3f)",
	       (user_us + sys_us) * per, user_us * per, sys_us * per);
	if (e->syscalls_known)
		printf("; %.3f syscalls per I/O", (double)r->syscalls * per);
	printf("\n");
}

#endif /* KAIO_BENCH_COMMON_H */
