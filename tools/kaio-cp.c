/*
 * kaio-cp - copy a file or block device with O_DIRECT through libkaio.
 *
 *   kaio-cp [-q DEPTH] [-b SIZE] [--fsync] [--no-progress] SOURCE DEST
 *
 * The showcase of libkaio, written only on its public API.  The copy is a
 * pipeline of DEPTH slots.  Each slot owns one buffer and moves one block
 * at a time: its read's completion callback submits the write of the same
 * bytes, and the write's callback submits the slot's next read.  The main
 * loop only waits (kaio_wait) while the callbacks keep DEPTH operations in
 * flight, so the device always has work queued, and the data bypasses the
 * page cache.
 *
 * Exit status: 0 copied, 1 an error during the copy (DEST is then left
 * partly written, as cp leaves it), 2 a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/fs.h>     /* BLKGETSIZE64 */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kaio.h"
#include "bad-option.h"
#include "buffer-budget.h"
#include "direct-file.h"

#define DEFAULT_DEPTH 32
#define DEFAULT_BLOCK ((uint64_t)1 << 20)
/* One kernel I/O moves at most ~2 GiB (MAX_RW_COUNT); stay well below. */
#define MAX_BLOCK ((uint64_t)1 << 30)
/* No device has a smaller logical block: a block size that is not a
 * multiple of this can be refused before any file is opened. */
#define MIN_ALIGN 512

/* One stage of the pipeline: at most one operation in flight at a time. */
struct slot {
	struct copy *cp;
	kaio_buf *buf;   /* owned by the slot; each operation holds its own ref */
	uint64_t off;    /* file offset of the block being moved */
	size_t len;      /* bytes of the source in this block */
	size_t io_len;   /* len rounded up to the alignment, as O_DIRECT needs */
	size_t wlen;     /* bytes this block's kaio_write moves */
};

struct copy {
	kaio_ctx *ctx;
	const char *src_path, *dst_path;
	int src, dst;
	bool dst_is_blk;
	uint64_t size;       /* bytes to copy: the source size at the start */
	uint64_t next_off;   /* where the next read starts */
	uint64_t copied;     /* bytes written so far */
	uint32_t align;      /* direct-I/O alignment of both descriptors */
	size_t block;
	unsigned busy;       /* slots whose chain of operations is still running */
	struct slot *tail;   /* block device only: slot holding the unaligned end */
	bool failed;         /* stop submitting; in-flight operations drain */
	bool progress;
	struct timespec start, last_shown;
};

static volatile sig_atomic_t interrupted;
static bool progress_on_screen;  /* a \r line is showing: end it first */

static void complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void complain(const char *fmt, ...)
{
	va_list ap;

	if (progress_on_screen)
		fputc('\n', stderr);
	progress_on_screen = false;
	fputs("kaio-cp: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The first failure is reported; later ones are usually its echoes (every
 * in-flight block of a dying disk fails the same way), so they stay quiet. */
#define fail(cp, ...) do { \
		if (!(cp)->failed) complain(__VA_ARGS__); \
		(cp)->failed = true; \
	} while (0)

/* Why a kaio call refused: its own explanation, or at least the errno. */
static const char *why(int rc)
{
	const char *msg = kaio_last_error();
	return *msg ? msg : kaio_strerror(rc);
}

static uint64_t round_up(uint64_t n, uint64_t align)
{
	return (n + align - 1) / align * align;
}

static double seconds_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (now.tv_nsec - t->tv_nsec) / 1e9;
}

static void show_progress(struct copy *cp, bool final)
{
	if (!cp->progress || (!final && seconds_since(&cp->last_shown) < 0.25))
		return;
	clock_gettime(CLOCK_MONOTONIC, &cp->last_shown);

	double secs = seconds_since(&cp->start);
	double rate = secs > 0 ? cp->copied / secs : 0;   /* bytes per second */
	char eta[32] = "--:--";
	if (rate > 0) {
		unsigned long left = (unsigned long)((cp->size - cp->copied) / rate + 0.999);
		snprintf(eta, sizeof eta, "%lu:%02lu:%02lu",
		         left / 3600, left / 60 % 60, left % 60);
	}
	/* Trailing spaces erase what a longer previous line left behind. */
	fprintf(stderr, "\r%.1f / %.1f MiB (%.0f%%)  %.1f MiB/s  ETA %s    ",
	        cp->copied / 1048576.0, cp->size / 1048576.0,
	        cp->size ? 100.0 * cp->copied / cp->size : 100.0,
	        rate / 1048576.0, eta);
	progress_on_screen = true;
	if (final) {
		fputc('\n', stderr);
		progress_on_screen = false;
	}
}

static void on_read(const struct kaio_event *ev);
static void on_write(const struct kaio_event *ev);

/* Start the slot's next block, or retire the slot when nothing is left. */
static void start_read(struct slot *s)
{
	struct copy *cp = s->cp;

	if (cp->failed || cp->next_off >= cp->size) {
		cp->busy--;
		return;
	}
	s->off = cp->next_off;
	s->len = cp->size - s->off < cp->block ? cp->size - s->off : cp->block;
	/* An unaligned tail is read rounded up: the kernel stops at EOF and
	 * reports the short count, which is exactly the tail's length. */
	s->io_len = round_up(s->len, cp->align);
	cp->next_off += s->len;

	int rc = kaio_read(cp->ctx, cp->src, s->off, s->buf, 0, s->io_len,
	                   on_read, (uintptr_t)s);
	if (rc < 0) {
		fail(cp, "cannot read %s at offset %" PRIu64 ": %s",
		     cp->src_path, s->off, why(rc));
		cp->busy--;
	}
}

static void on_read(const struct kaio_event *ev)
{
	struct slot *s = (struct slot *)(uintptr_t)ev->user_data;
	struct copy *cp = s->cp;

	if (ev->res < 0) {
		fail(cp, "reading %s at offset %" PRIu64 ": %s",
		     cp->src_path, ev->offset, kaio_strerror((int)ev->res));
	} else if ((uint64_t)ev->res < s->len) {
		fail(cp, "reading %s at offset %" PRIu64 ": short read (%" PRId64
		     " of %zu bytes): did the source shrink?",
		     cp->src_path, ev->offset, ev->res, s->len);
	}
	if (cp->failed) {
		cp->busy--;
		return;
	}

	/* A regular file takes the rounded-up length; the bytes past the
	 * source's end go away with the final ftruncate.  A block device has
	 * no such undo (they would overwrite what lies beyond), so there only
	 * the aligned part goes through O_DIRECT: see write_device_tail(). */
	s->wlen = s->io_len;
	if (cp->dst_is_blk && s->len % cp->align) {
		s->wlen = s->len - s->len % cp->align;
		cp->tail = s;          /* the last block: the buffer stays put */
		if (s->wlen == 0) {
			cp->busy--;
			return;
		}
	}
	/* The buffer is the slot's: the read's reference goes when this
	 * callback returns, the write takes its own. */
	int rc = kaio_write(cp->ctx, cp->dst, s->off, s->buf, 0, s->wlen,
	                    on_write, ev->user_data);
	if (rc < 0) {
		fail(cp, "cannot write %s at offset %" PRIu64 ": %s",
		     cp->dst_path, s->off, why(rc));
		cp->busy--;
	}
}

static void on_write(const struct kaio_event *ev)
{
	struct slot *s = (struct slot *)(uintptr_t)ev->user_data;
	struct copy *cp = s->cp;

	if (ev->res < 0) {
		fail(cp, "writing %s at offset %" PRIu64 ": %s",
		     cp->dst_path, ev->offset, kaio_strerror((int)ev->res));
	} else if ((uint64_t)ev->res != s->wlen) {
		fail(cp, "writing %s at offset %" PRIu64 ": short write (%" PRId64
		     " of %zu bytes): is the destination full?",
		     cp->dst_path, ev->offset, ev->res, s->wlen);
	} else {
		cp->copied += s->wlen < s->len ? s->wlen : s->len;
		start_read(s);   /* the slot's next block, at the same depth */
		return;
	}
	cp->busy--;
}

/*
 * O_DIRECT moves whole logical blocks only, and a block device cannot be
 * truncated afterwards, so the last few bytes of a source whose size is not
 * a multiple of the alignment go through the page cache: a plain pwrite on
 * a second descriptor opened without O_DIRECT.  It runs after every direct
 * write has completed, so the kernel's read-modify-write of that page sees
 * the final data.  (--fsync then flushes it too: both descriptors share the
 * device's page cache.)
 */
static bool write_device_tail(struct copy *cp)
{
	struct slot *s = cp->tail;
	size_t n = s->len - s->wlen;
	const char *p = (const char *)kaio_buf_data(s->buf) + s->wlen;
	int fd = open(cp->dst_path, O_WRONLY | O_CLOEXEC);

	if (fd < 0) {
		complain("cannot open %s without O_DIRECT for its last %zu bytes: %s",
		         cp->dst_path, n, strerror(errno));
		return false;
	}
	ssize_t w = pwrite(fd, p, n, (off_t)(s->off + s->wlen));
	int err = w < 0 ? errno : 0;
	close(fd);
	if (w != (ssize_t)n) {
		complain("writing the last %zu bytes of %s: %s", n, cp->dst_path,
		         w < 0 ? strerror(err) : "short write");
		return false;
	}
	cp->copied += n;
	return true;
}

static void on_sync(const struct kaio_event *ev)
{
	struct copy *cp = (struct copy *)(uintptr_t)ev->user_data;

	if (ev->res < 0)
		fail(cp, "syncing %s: %s", cp->dst_path, kaio_strerror((int)ev->res));
	cp->busy--;
}

/* Reap until every slot's chain has ended.  Callbacks do the work. */
static void run(struct copy *cp)
{
	int timeout = cp->progress ? 250 : -1;   /* wake up to redraw */

	while (cp->busy > 0) {
		int rc = kaio_wait(cp->ctx, NULL, 1, 0, timeout);
		if (interrupted)
			fail(cp, "interrupted by signal %d", (int)interrupted);
		if (rc < 0 && rc != -EINTR) {
			/* kaio_ctx_destroy will still drain what is in flight. */
			fail(cp, "waiting for completions: %s", why(rc));
			return;
		}
		show_progress(cp, false);
	}
}

static void on_signal(int sig)
{
	interrupted = sig;
}

/* Parse "123", or with suffixes "4K", "1M", "2G" (powers of 1024).
 * 0 on error. */
static uint64_t parse_number(const char *arg, bool suffixes)
{
	char *end;
	int shift = 0;

	if (*arg < '0' || *arg > '9')    /* strtoull would accept "-1", " 1" */
		return 0;
	errno = 0;
	uint64_t v = strtoull(arg, &end, 10);
	if (errno)
		return 0;
	switch (suffixes ? *end : 0) {
	case 'K': case 'k': shift = 10; end++; break;
	case 'M': case 'm': shift = 20; end++; break;
	case 'G': case 'g': shift = 30; end++; break;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return 0;
	return v << shift;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: kaio-cp [-q DEPTH] [-b SIZE] [--fsync] [--no-progress]\n"
	        "               [-h|--help] [--version] SOURCE DEST\n"
	        "Copy a file or block device with O_DIRECT asynchronous I/O (libkaio).\n\n"
	        "  -q, --depth DEPTH  blocks in flight (1-%u, default %d)\n"
	        "  -b, --block SIZE   block size, K/M/G suffixes allowed (default 1M);\n"
	        "                     a multiple of the direct-I/O alignment\n"
	        "      --fsync        flush DEST to stable storage before exiting\n"
	        "      --no-progress  no progress line (shown only on a terminal)\n"
	        "  -h, --help         show this help\n"
	        "      --version      show the version\n\n"
	        "Exit status: 0 copied, 1 error during the copy, 2 usage error.\n",
	        KAIO_CAPACITY_MAX, DEFAULT_DEPTH);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("kaio-cp: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'kaio-cp --help' for more information.\n", stderr);
	return 2;
}

/* Size of a regular file or block device; false (and a message) otherwise. */
/* The size of a regular file or block device (open_direct refused the
 * other kinds). */
static bool file_size(int fd, const struct stat *st, const char *path, uint64_t *size)
{
	if (!S_ISBLK(st->st_mode)) {
		*size = (uint64_t)st->st_size;
		return true;
	}
	if (ioctl(fd, BLKGETSIZE64, size) == 0)
		return true;
	complain("cannot get the size of %s: %s", path, strerror(errno));
	return false;
}

static uint32_t fd_alignment(int fd, const char *path)
{
	uint32_t mem = 0, off = 0;

	int rc = kaio_fd_alignment(fd, &mem, &off);
	if (rc < 0) {
		complain("cannot learn the alignment of %s: %s (assuming 4096)",
		         path, why(rc));
		return 4096;
	}
	return mem > off ? mem : off;
}

static int open_direct(const char *path, int flags, const char *what, struct stat *st)
{
	int fd = tool_open_direct(path, flags, st);

	if (fd >= 0)
		return fd;
	if (fd == TOOL_OPEN_WRONG_KIND)
		complain("cannot copy %s '%s': it is %s; kaio-cp copies regular files and"
		         " block devices", what, path, tool_file_kind(st->st_mode));
	else
		complain("cannot open %s '%s': %s%s", what, path, strerror(errno),
		         errno == EINVAL ? " (does its filesystem support O_DIRECT?)" : "");
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "depth", required_argument, NULL, 'q' },
		{ "block", required_argument, NULL, 'b' },
		{ "fsync", no_argument, NULL, 'F' },
		{ "no-progress", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct copy cp = { .src = -1, .dst = -1, .block = DEFAULT_BLOCK };
	uint64_t depth = DEFAULT_DEPTH, block = DEFAULT_BLOCK;
	bool do_fsync = false, progress = true;
	struct slot *slots = NULL;
	unsigned nslots = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, ":q:b:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'q':
			depth = parse_number(optarg, false);
			if (depth < 1 || depth > KAIO_CAPACITY_MAX)
				return usage_error("invalid depth '%s' (1-65536)", optarg);
			break;
		case 'b':
			block = parse_number(optarg, true);
			if (block == 0 || block % MIN_ALIGN || block > MAX_BLOCK)
				return usage_error("invalid block size '%s' (a multiple of 512 up to 1G)", optarg);
			break;
		case 'F': do_fsync = true; break;
		case 'P': progress = false; break;
		case 'h': usage(stdout); return 0;
		case 'V':
			printf("kaio-cp (libkaio) %s\n", kaio_version());
			return 0;
		case ':':
			return usage_error("option '%s' needs a value", argv[optind - 1]);
		default: {
			char why[512];
			tool_bad_option(longopts, argv[optind - 1], why, sizeof why);
			return usage_error("%s", why);
		}
		}
	}
	if (argc - optind != 2)
		return usage_error("expected SOURCE and DEST, got %d operand(s)", argc - optind);
	cp.src_path = argv[optind];
	cp.dst_path = argv[optind + 1];
	cp.block = (size_t)block;
	cp.progress = progress && isatty(STDERR_FILENO);

	int status = 1;
	bool dst_created = false;
	struct stat sst, dst_st;

	/* No O_TRUNC: the destination is checked against the source first
	 * (truncating "a" before noticing it is "a" would destroy it). */
	cp.src = open_direct(cp.src_path, O_RDONLY, "source", &sst);
	if (cp.src < 0)
		goto out;
	/* Remember whether the destination is ours: a usage error found only
	 * once it is open (its alignment) must not leave an empty file. */
	cp.dst = open(cp.dst_path, O_WRONLY | O_CREAT | O_EXCL | O_DIRECT | O_CLOEXEC, 0666);
	if (cp.dst >= 0) {
		dst_created = true;
		if (fstat(cp.dst, &dst_st) < 0) {
			complain("cannot stat %s: %s", cp.dst_path, strerror(errno));
			goto out;
		}
	} else {
		cp.dst = open_direct(cp.dst_path, O_WRONLY | O_CREAT, "destination", &dst_st);
	}
	if (cp.dst < 0)
		goto out;
	if ((sst.st_dev == dst_st.st_dev && sst.st_ino == dst_st.st_ino) ||
	    (S_ISBLK(sst.st_mode) && S_ISBLK(dst_st.st_mode) && sst.st_rdev == dst_st.st_rdev)) {
		complain("%s and %s are the same file", cp.src_path, cp.dst_path);
		goto out;
	}
	if (!file_size(cp.src, &sst, cp.src_path, &cp.size))
		goto out;
	uint64_t dst_size;
	if (!file_size(cp.dst, &dst_st, cp.dst_path, &dst_size))
		goto out;
	cp.dst_is_blk = S_ISBLK(dst_st.st_mode);
	if (cp.dst_is_blk && dst_size < cp.size) {
		complain("%s is too small: %" PRIu64 " bytes for %" PRIu64,
		         cp.dst_path, dst_size, cp.size);
		goto out;
	}

	/* Both descriptors see the same offsets and buffers: use the stricter
	 * of their alignments (0 means the library could not learn one). */
	uint32_t sa = fd_alignment(cp.src, cp.src_path);
	uint32_t da = fd_alignment(cp.dst, cp.dst_path);
	cp.align = sa > da ? sa : da;
	if (cp.align == 0)
		cp.align = 4096;
	if (cp.block % cp.align) {
		complain("block size %zu is not a multiple of %" PRIu32
		         ", the direct-I/O alignment of %s and %s",
		         cp.block, cp.align, cp.src_path, cp.dst_path);
		status = 2;
		if (dst_created)
			unlink(cp.dst_path);
		goto out;
	}

	/* More slots than blocks would only waste memory (small files).  The
	 * reads fill every buffer: more than the machine can hold is refused
	 * before dest is touched. */
	uint64_t nblocks = (cp.size + cp.block - 1) / cp.block;
	nslots = nblocks < depth ? (unsigned)nblocks : (unsigned)depth;
	size_t buf_len = cp.size < cp.block ? (size_t)round_up(cp.size, cp.align) : cp.block;
	if (!tool_buffers_fit(nslots, buf_len)) {
		complain("%u buffers of %zu bytes (--depth x --block) are more than half of"
		         " this machine's memory (%" PRIu64 " MiB)",
		         nslots, buf_len, tool_buffer_budget() >> 19);
		status = 2;
		if (dst_created)
			unlink(cp.dst_path);
		goto out;
	}

	/* Size a regular destination up front: writes inside the file are
	 * truly asynchronous, while extending direct writes may be done
	 * synchronously by the filesystem (ext4 waits for them), which would
	 * collapse the pipeline to depth 1.  The exact size is set at the end. */
	if (!cp.dst_is_blk && ftruncate(cp.dst, (off_t)round_up(cp.size, cp.align)) < 0) {
		complain("cannot resize %s: %s", cp.dst_path, strerror(errno));
		goto out;
	}

	/* A slot has at most one operation in flight, and its callback submits
	 * the follow-up after the finished one stopped counting: capacity
	 * DEPTH is enough.  Only this thread ever calls in. */
	int rc = kaio_ctx_create(&cp.ctx, nslots ? nslots : 1, KAIO_CTX_SINGLE_THREAD);
	if (rc < 0) {
		complain("cannot create the I/O context: %s", why(rc));
		goto out;
	}
	slots = calloc(nslots ? nslots : 1, sizeof *slots);
	if (!slots) {
		complain("out of memory");
		goto out;
	}
	for (unsigned i = 0; i < nslots; i++) {
		slots[i].cp = &cp;
		rc = kaio_buf_alloc(&slots[i].buf, buf_len, 0);
		if (rc < 0) {
			complain("cannot allocate %u buffers of %zu bytes: %s",
			         nslots, buf_len, why(rc));
			goto out;
		}
	}

	/* SIGINT/SIGTERM make kaio_wait return -EINTR: stop cleanly, letting
	 * the in-flight operations finish instead of dying mid-write. */
	struct sigaction sa_int = { .sa_handler = on_signal };
	sigaction(SIGINT, &sa_int, NULL);
	sigaction(SIGTERM, &sa_int, NULL);

	clock_gettime(CLOCK_MONOTONIC, &cp.start);
	cp.busy = nslots;
	for (unsigned i = 0; i < nslots; i++)
		start_read(&slots[i]);
	run(&cp);
	if (cp.failed)
		goto out;

	if (cp.tail && !write_device_tail(&cp))
		goto out;
	if (!cp.dst_is_blk && ftruncate(cp.dst, (off_t)cp.size) < 0) {
		complain("cannot truncate %s to %" PRIu64 " bytes: %s",
		         cp.dst_path, cp.size, strerror(errno));
		goto out;
	}
	if (do_fsync) {
		rc = kaio_sync(cp.ctx, cp.dst, KAIO_SYNC_FULL, on_sync, (uintptr_t)&cp);
		if (rc < 0) {
			complain("cannot sync %s: %s", cp.dst_path, why(rc));
			goto out;
		}
		cp.busy = 1;
		run(&cp);
		if (cp.failed)
			goto out;
	}
	show_progress(&cp, true);
	status = 0;

out:
	/* Destroy first: after a failed kaio_wait it still waits for what is
	 * in flight and runs those callbacks, which touch the slots, so the
	 * slots go after it.  (The buffers could go at any time: every
	 * accepted operation holds its own reference.) */
	if (cp.ctx)
		kaio_ctx_destroy(cp.ctx);
	for (unsigned i = 0; slots && i < nslots; i++)
		kaio_buf_unref(slots[i].buf);
	free(slots);
	if (cp.dst >= 0 && close(cp.dst) < 0 && status == 0) {
		complain("closing %s: %s", cp.dst_path, strerror(errno));
		status = 1;
	}
	if (cp.src >= 0)
		close(cp.src);
	return status;
}
