// libFuzzer harness for libkaio's public C API.
//
// Each input is read as a short program: a header byte, then up to 64
// actions (create/destroy contexts, allocate/wrap/ref/unref buffers, submit
// reads, writes, vectors, syncs and batches with random arguments, poll,
// wait, wake, forget an fd, ask alignments, swap what an fd number refers
// to).  Everything runs against one real 1 MiB file opened with O_DIRECT
// (created once under $KAIO_TEST_DIR or the working directory, then
// unlinked), the same file without O_DIRECT, a pipe, a directory,
// /dev/zero, closed and negative descriptor numbers.
//
// The harness keeps its own model of the library's state -- every accepted
// operation by user_data, every buffer reference it owns or that an
// undelivered operation holds, every context's capacity and backlog -- and
// traps (a crash libFuzzer reports) when the library departs from the
// contract in include/kaio.h and API.md:
//   * a return outside ">= 0 or a negative errno in -4095..-1";
//   * a refusal that leaves kaio_last_error() empty or unchanged, a success
//     that changes it, a failed call that writes its out-parameters;
//   * a request whose outcome the contract fixes (a valid request, a bad
//     fd, a bad buffer, misalignment, capacity, shutdown, EBUSY...) that
//     gets another answer;
//   * inflight above capacity, or different from the number of accepted,
//     undelivered operations;
//   * an operation delivered twice, never, to the wrong place, with wrong
//     event fields, or delivered although it was refused;
//   * a callback running during submission or outside poll/wait/destroy of
//     its own context; a release function running outside unref or
//     delivery;
//   * a buffer handle dying while references remain, a release function
//     that runs twice, early, or never; memory written by the kernel after
//     its release function ran;
//   * kaio_ctx_inflight() != 0 after a drain, operations with callbacks not
//     delivered by kaio_ctx_destroy, descriptors leaked by a context.
//
// Callbacks run a few nested actions of their own (follow-up submissions,
// references, polls and destroys of other contexts, and the calls that must
// return -EBUSY or -ESHUTDOWN); their arguments come from a small PRNG
// seeded from the operation, so the input stream stays linear.
//
// Also checked: kaio_submit's "resubmitting ops + k reports why ops[k] was
// refused"; that nothing passed by pointer is retained (vectors and op
// arrays are freed right after the call, under ASan); and, rarely, fork():
// the child's calls on the parent's contexts are -ECHILD and its destroy
// runs no release function.
//
// KAIO_FUZZ_TRACE=1 prints every action to stderr (for reproducing a crash).
// KAIO_FUZZ_KNOWN_BUGS="tag,..." lets a run continue past a library bug that
// is already reported (see known_bug()).
//
// The input format is this file's code: an input in tests/fuzz/regressions/
// reproduces its bug only with the harness it was found with, so re-make
// (or re-minimise) saved inputs when the format changes.
#include "kaio.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <memory>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

namespace {

// ---- limits ------------------------------------------------------------------

constexpr int kMaxActions = 64;     // top-level calls per input
constexpr int kMaxNested = 64;      // calls made from callbacks per input
constexpr int kMaxCallbackDepth = 2;
constexpr int kMaxBufs = 24;        // buffer handles created per input
constexpr int kMaxCtxs = 4;         // contexts created per input: each io_destroy
                                    // waits ~30 ms for an RCU grace period
constexpr int kMaxLiveCtxs = 4;
constexpr size_t kMaxOps = 2048;    // operation records per input
constexpr int kMaxBatch = 8;        // kaio_submit batch size
constexpr uint64_t kFileSize = 1u << 20;
constexpr uint64_t kSpan = 4u << 20;     // file offsets used for I/O
constexpr uint64_t kMaxIo = 256u << 10;  // bytes per ordinary request
constexpr int kSentinelFd = -1999999999; // never generated as an fd
constexpr unsigned char kReleasedByte = 0xEE;

// ---- failure reporting -------------------------------------------------------

char g_action[320] = "initialisation";
bool g_trace = false;

[[noreturn]] __attribute__((format(printf, 2, 3))) void violation(int line, const char *fmt, ...)
{
	fprintf(stderr, "\n==kaio-fuzz== INVARIANT VIOLATED (fuzz_api.cc:%d) during: %s\n==kaio-fuzz== ",
	        line, g_action);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	const char *m = kaio_last_error();
	fprintf(stderr, "\n==kaio-fuzz== kaio_last_error(): \"%s\"\n", m ? m : "(NULL)");
	fflush(stderr);
	__builtin_trap();
}

#define CHECK(cond, ...)                                    \
	do {                                                \
		if (__builtin_expect(!(cond), 0))           \
			violation(__LINE__, __VA_ARGS__);   \
	} while (0)

#define TRACE(...)                                          \
	do {                                                \
		if (g_trace)                                \
			fprintf(stderr, __VA_ARGS__);       \
	} while (0)

// KAIO_FUZZ_KNOWN_BUGS="tag,tag": checks for library bugs already reported
// (and saved in tests/fuzz/regressions/) that should not stop a fuzzing
// run looking for new ones.  Tags: submit-last-error.
bool known_bug(const char *tag)
{
	static const char *list = getenv("KAIO_FUZZ_KNOWN_BUGS");
	if (!list)
		return false;
	const size_t n = strlen(tag);
	for (const char *p = strstr(list, tag); p; p = strstr(p + 1, tag))
		if ((p == list || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return true;
	return false;
}

[[noreturn]] void setup_failed(const char *what)
{
	fprintf(stderr, "fuzz_api: setup failed: %s: %s\n", what, strerror(errno));
	exit(2);
}

// ---- signals ----------------------------------------------------------------
// libFuzzer's -timeout alarm (SIGALRM) is a handled signal: it legitimately
// ends a kaio_wait early (-EINTR, or its count).  Count it, then hand it on.

volatile sig_atomic_t g_signals = 0;
struct sigaction g_old_alarm;

void on_alarm(int sig, siginfo_t *si, void *uc)
{
	g_signals = g_signals + 1;
	if (g_old_alarm.sa_flags & SA_SIGINFO) {
		if (g_old_alarm.sa_sigaction)
			g_old_alarm.sa_sigaction(sig, si, uc);
	} else if (g_old_alarm.sa_handler != SIG_DFL && g_old_alarm.sa_handler != SIG_IGN) {
		g_old_alarm.sa_handler(sig);
	}
}

// Called once libFuzzer has installed its own handlers.
void hook_signals()
{
	static bool done = false;
	if (done)
		return;
	done = true;
	if (sigaction(SIGALRM, nullptr, &g_old_alarm) != 0)
		return;
	struct sigaction sa = g_old_alarm;
	sa.sa_flags |= SA_SIGINFO;
	sa.sa_sigaction = on_alarm;
	sigaction(SIGALRM, &sa, nullptr);
}

// ---- argument sources --------------------------------------------------------

class Src {
public:
	virtual ~Src() = default;
	virtual uint8_t u8() = 0;
	virtual bool exhausted() const = 0;
	uint16_t u16()
	{
		uint16_t a = u8();
		return uint16_t(a | (uint16_t(u8()) << 8));
	}
	uint32_t u32()
	{
		uint32_t a = u16();
		return a | (uint32_t(u16()) << 16);
	}
	uint64_t u64()
	{
		uint64_t a = u32();
		return a | (uint64_t(u32()) << 32);
	}
	// A value in [0, n): n <= 1 gives 0.
	uint32_t below(uint64_t n)
	{
		if (n <= 1)
			return 0;
		if (n <= 256)
			return u8() % n;
		if (n <= 65536)
			return u16() % n;
		return uint32_t(u32() % n);
	}
};

// The fuzzer's bytes, front to back; zeros once they run out.
class ByteSrc final : public Src {
public:
	ByteSrc(const uint8_t *p, size_t n) : p_(p), end_(p + n) {}
	uint8_t u8() override { return p_ < end_ ? *p_++ : 0; }
	bool exhausted() const override { return p_ >= end_; }

private:
	const uint8_t *p_, *end_;
};

// Deterministic bytes for callbacks (splitmix64).
class RandSrc final : public Src {
public:
	explicit RandSrc(uint64_t seed) : s_(seed) {}
	uint8_t u8() override
	{
		if (!left_) {
			uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
			z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
			z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
			cur_ = z ^ (z >> 31);
			left_ = 8;
		}
		left_--;
		uint8_t b = uint8_t(cur_);
		cur_ >>= 8;
		return b;
	}
	bool exhausted() const override { return false; }

private:
	uint64_t s_, cur_ = 0;
	int left_ = 0;
};

// ---- the environment: files and descriptors, set up once ----------------------

enum FdSel {
	FD_DIRECT_RW, FD_DIRECT_RO, FD_DIRECT_WO, FD_BUF_RW, FD_BUF_RO, FD_PIPE_R, FD_PIPE_W,
	FD_DIR, FD_DEVZERO, FD_MORPH, FD_CLOSED, FD_CLOSED_HIGH, FD_NEG1, FD_INT_MIN,
	FD_NEG_RANDOM, FD_NSEL
};

const char *const kFdNames[FD_NSEL] = {
	"direct-rw", "direct-ro", "direct-wo", "buffered-rw", "buffered-ro", "pipe-r", "pipe-w",
	"dir", "devzero", "morph", "closed", "closed-high", "-1", "INT_MIN", "negative"};

struct FdProps {
	bool known = false;   // false: the morph fd, whose file changes under the cache
	bool bad = false;     // negative or closed: -EBADF
	bool regular = false;
	bool direct = false;
	bool rd = false, wr = false;
	bool syncable = false;
};

enum MorphKind { M_DIRECT_RW, M_BUF_RW, M_DIRECT_RO, M_PIPE_R, M_PIPE_W, M_DIR, M_DEVZERO, M_NKINDS };

struct Env {
	bool ready = false;
	int fd[FD_NSEL];
	FdProps props[FD_NSEL];
	uint32_t mem_align = 0, off_align = 0; // what kaio_fd_alignment reports for the file
	uint64_t ga = 512;                      // the alignment requests are built with
	bool morph_fresh = true;                // morph is its own open file description
	char path[4096];
} E;

char g_sentinel[512];
alignas(64) unsigned char g_foreign[256]; // "handles" that are not handles

int free_fd_from(int n)
{
	while (fcntl(n, F_GETFD) != -1 || errno != EBADF)
		n++;
	return n;
}

int reopen_file(int flags)
{
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", E.fd[FD_BUF_RW]);
	return open(p, flags | O_CLOEXEC);
}

void morph_to(int kind)
{
	int t = -1;
	switch (kind) {
	case M_DIRECT_RW: t = reopen_file(O_RDWR | O_DIRECT); break;
	case M_BUF_RW: t = reopen_file(O_RDWR); break;
	case M_DIRECT_RO: t = reopen_file(O_RDONLY | O_DIRECT); break;
	case M_PIPE_R: t = dup(E.fd[FD_PIPE_R]); break;
	case M_PIPE_W: t = dup(E.fd[FD_PIPE_W]); break;
	case M_DIR: t = dup(E.fd[FD_DIR]); break;
	default: t = dup(E.fd[FD_DEVZERO]); break;
	}
	if (t < 0)
		return;
	if (dup2(t, E.fd[FD_MORPH]) < 0)
		setup_failed("dup2 onto the morph descriptor");
	close(t);
	E.morph_fresh = kind <= M_DIRECT_RO;
}

void env_init()
{
	g_trace = getenv("KAIO_FUZZ_TRACE") != nullptr;
	memset(g_foreign, 0x5a, sizeof g_foreign);
	const char *dir = getenv("KAIO_TEST_DIR");
	if (!dir || !*dir)
		dir = ".";
	snprintf(E.path, sizeof E.path, "%s/kaio-fuzz.XXXXXX", dir);
	int fd = mkstemp(E.path);
	if (fd < 0)
		setup_failed(E.path);
	std::vector<unsigned char> pattern(kFileSize);
	for (size_t i = 0; i < pattern.size(); i++)
		pattern[i] = static_cast<unsigned char>(i * 7 + (i >> 9) + 1);
	if (write(fd, pattern.data(), pattern.size()) != ssize_t(pattern.size()))
		setup_failed("writing the test file");
	E.fd[FD_BUF_RW] = fd;
	E.fd[FD_BUF_RO] = open(E.path, O_RDONLY | O_CLOEXEC);
	E.fd[FD_DIRECT_RW] = open(E.path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (E.fd[FD_DIRECT_RW] < 0) {
		fprintf(stderr, "fuzz_api: cannot open %s with O_DIRECT (%s): point KAIO_TEST_DIR at a "
		                "disk filesystem\n", E.path, strerror(errno));
		unlink(E.path);
		exit(2);
	}
	E.fd[FD_DIRECT_RO] = open(E.path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	E.fd[FD_DIRECT_WO] = open(E.path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	unlink(E.path);
	int ends[2];
	if (pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0)
		setup_failed("pipe2");
	E.fd[FD_PIPE_R] = ends[0];
	E.fd[FD_PIPE_W] = ends[1];
	E.fd[FD_DIR] = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	E.fd[FD_DEVZERO] = open("/dev/zero", O_RDWR | O_CLOEXEC);
	for (int s : {FD_BUF_RO, FD_DIRECT_RO, FD_DIRECT_WO, FD_DIR, FD_DEVZERO})
		if (E.fd[s] < 0)
			setup_failed(kFdNames[s]);
	// High numbers: the kernel hands out the lowest free descriptor, so
	// these stay what we make them.
	E.fd[FD_MORPH] = free_fd_from(900);
	E.fd[FD_CLOSED] = free_fd_from(E.fd[FD_MORPH] + 1);
	E.fd[FD_CLOSED_HIGH] = (1 << 20) + 17; // beyond the library's fd cache
	E.fd[FD_NEG1] = -1;
	E.fd[FD_INT_MIN] = INT_MIN;
	E.fd[FD_NEG_RANDOM] = -2;
	morph_to(M_DIRECT_RW);

	auto set = [](int s, bool regular, bool direct, bool rd, bool wr) {
		FdProps &p = E.props[s];
		p.known = true;
		p.regular = regular;
		p.direct = direct;
		p.rd = rd;
		p.wr = wr;
		p.syncable = fsync(E.fd[s]) == 0;
	};
	set(FD_DIRECT_RW, true, true, true, true);
	set(FD_DIRECT_RO, true, true, true, false);
	set(FD_DIRECT_WO, true, true, false, true);
	set(FD_BUF_RW, true, false, true, true);
	set(FD_BUF_RO, true, false, true, false);
	set(FD_PIPE_R, false, false, true, false);
	set(FD_PIPE_W, false, false, false, true);
	set(FD_DIR, false, false, true, false);
	set(FD_DEVZERO, false, false, true, true);
	for (int s : {FD_CLOSED, FD_CLOSED_HIGH, FD_NEG1, FD_INT_MIN, FD_NEG_RANDOM}) {
		E.props[s].known = true;
		E.props[s].bad = true;
	}
	if (fcntl(E.fd[FD_CLOSED_HIGH], F_GETFD) != -1)
		setup_failed("descriptor 2^20+17 is open");

	int rc = kaio_fd_alignment(E.fd[FD_DIRECT_RW], &E.mem_align, &E.off_align);
	if (rc != 0) {
		fprintf(stderr, "fuzz_api: kaio_fd_alignment on the test file: %d (%s)\n", rc,
		        kaio_last_error());
		exit(2);
	}
	E.ga = std::max<uint64_t>({512, E.mem_align, E.off_align});
	rc = kaio_fd_alignment(kSentinelFd, nullptr, nullptr);
	snprintf(g_sentinel, sizeof g_sentinel, "%s", kaio_last_error());
	if (rc >= 0 || !g_sentinel[0]) {
		fprintf(stderr, "fuzz_api: kaio_fd_alignment(%d) did not fail with a message\n",
		        kSentinelFd);
		exit(2);
	}
	fprintf(stderr, "fuzz_api: test file %s (unlinked), direct-I/O alignment: memory %u, "
	                "offset %u; libkaio %s\n", E.path, E.mem_align, E.off_align, kaio_version());
	E.ready = true;
}

// ---- the model -------------------------------------------------------------------

enum BufKind { BK_ALLOC, BK_WRAP_REL, BK_WRAP_NOREL };

struct Buf {
	kaio_buf *h = nullptr;
	BufKind kind = BK_ALLOC;
	size_t len = 0;
	void *data = nullptr;
	void *mem = nullptr; // wraps: the harness's allocation
	long hrefs = 0;      // references the harness owns
	long orefs = 0;      // references of accepted, undelivered operations
	int releases = 0;
	bool dead = false;   // the last reference went (checked); only probed since
};

struct Ctx {
	kaio_ctx *h = nullptr;
	unsigned cap = 0, flags = 0;
	bool live = false, destroying = false;
	int frames = 0;       // poll/wait/destroy calls in progress on it
	int pending_cb = 0;   // accepted, undelivered, with a callback
	int pending_ev = 0;   // accepted, undelivered, without one
	int evfd = -1;
	unsigned wakes = 0;
	unsigned callbacks = 0;
	int pending() const { return pending_cb + pending_ev; }
};

enum OpState : uint8_t { OS_REFUSED, OS_PENDING, OS_DELIVERED, OS_DISCARDED };

struct Op {
	int ctx = -1;
	uint64_t ud = 0;
	uint32_t code = 0;
	int fd = 0;
	uint64_t offset = 0;
	uint64_t len = 0; // bytes requested (0 for syncs)
	bool cb = false;
	OpState st = OS_REFUSED;
	int buf = -1;     // READ/WRITE
	std::vector<int> segs; // READV/WRITEV: one entry per segment
	uint8_t plan = 0; // seeds the callback's nested actions
};

enum FrameKind { FK_OTHER, FK_SUBMIT, FK_POLL, FK_WAIT, FK_DESTROY, FK_UNREF, FK_CALLBACK };

struct Frame {
	FrameKind kind;
	int ctx;
	int op;
};

Buf g_bufs[kMaxBufs];
int g_nbufs = 0;
Ctx g_ctxs[kMaxCtxs];
int g_nctxs = 0;
std::vector<Op> g_ops;
std::vector<Frame> g_frames;
uint64_t g_calls = 0;
int g_nested_budget = 0;
bool g_no_nested = false;

struct Stats {
	unsigned long inputs, accepted, refused, callbacks, events, releases, nested, discarded;
} g_stats;

void print_stats()
{
	if (E.ready && g_stats.inputs)
		fprintf(stderr, "fuzz_api: %lu inputs; %lu operations accepted, %lu refused; %lu "
		                "callbacks, %lu events, %lu discarded by destroy; %lu release functions; "
		                "%lu nested calls\n", g_stats.inputs, g_stats.accepted, g_stats.refused,
		        g_stats.callbacks, g_stats.events, g_stats.discarded, g_stats.releases,
		        g_stats.nested);
}

bool buf_live(int i)
{
	return i >= 0 && !g_bufs[i].dead && g_bufs[i].hrefs + g_bufs[i].orefs > 0;
}

int callback_depth()
{
	int d = 0;
	for (const Frame &f : g_frames)
		d += f.kind == FK_CALLBACK;
	return d;
}

bool in_callback()
{
	return callback_depth() > 0;
}

bool op_uses(const Op &op, int b)
{
	if (op.buf == b)
		return true;
	for (int s : op.segs)
		if (s == b)
			return true;
	return false;
}

// ---- one API call: frame, last-error sentinel, nested-call detection ---------------

struct Call {
	uint64_t start;
	explicit Call(FrameKind k, int ctx = -1)
	{
		// A known failure first: afterwards kaio_last_error() tells
		// whether the call under test set it.
		(void)kaio_fd_alignment(kSentinelFd, nullptr, nullptr);
		g_frames.push_back(Frame{k, ctx, -1});
		start = ++g_calls;
	}
	void end() { g_frames.pop_back(); }
	bool nested() const { return g_calls != start; }
};

void after_failure(long rc, const char *fn)
{
	CHECK(rc < 0 && rc >= -4095, "%s returned %ld: not a negative errno in -4095..-1", fn, rc);
	const char *m = kaio_last_error();
	CHECK(m != nullptr, "kaio_last_error() returned NULL");
	CHECK(m[0] != '\0', "%s refused (%ld, %s) but kaio_last_error() is empty", fn, rc,
	      kaio_strerror(int(rc)));
	CHECK(strcmp(m, g_sentinel) != 0, "%s refused (%ld, %s) without setting kaio_last_error()",
	      fn, rc, kaio_strerror(int(rc)));
	CHECK(!strchr(m, '\n'), "kaio_last_error() is not one line: \"%s\"", m);
}

void after_success(const Call &c, const char *fn)
{
	if (c.nested())
		return; // a callback's own failures may have set it
	const char *m = kaio_last_error();
	CHECK(m && strcmp(m, g_sentinel) == 0,
	      "%s succeeded but changed kaio_last_error() to \"%s\"", fn, m ? m : "(NULL)");
}

// A refusal of bad input must set the last error even where the function
// returns no error code (kaio_buf_ref, kaio_ctx_capacity, ...).
void after_silent_refusal(const char *fn)
{
	const char *m = kaio_last_error();
	CHECK(m && m[0] && strcmp(m, g_sentinel) != 0,
	      "%s refused a bad handle without setting kaio_last_error()", fn);
}

// ---- expectations ------------------------------------------------------------------------

struct ErrSet {
	int v[8];
	int n = 0;
	bool any = false;
	void add(int e)
	{
		for (int i = 0; i < n; i++)
			if (v[i] == e)
				return;
		if (n < 8)
			v[n++] = e;
		else
			any = true;
	}
	bool has(int e) const
	{
		if (any)
			return true;
		for (int i = 0; i < n; i++)
			if (v[i] == e)
				return true;
		return false;
	}
	void describe(char *out, size_t sz) const
	{
		if (any || n == 0) {
			snprintf(out, sz, "any errno");
			return;
		}
		size_t used = 0;
		out[0] = 0;
		for (int i = 0; i < n && used < sz; i++)
			used += size_t(snprintf(out + used, sz - used, "%s-%d", i ? "/" : "", v[i]));
	}
};

struct Verdict {
	enum Kind { ACCEPT, MAYBE_CAP, REFUSE, UNKNOWN } kind = UNKNOWN;
	ErrSet errs;
	int nprob = 0;
	const char *needle = nullptr; // text the last error must contain (sole problem kind)
	uint64_t num = 0;             // a number it must contain too (0: none)
	bool needle_set = false;

	void problem(int e, const char *nd = nullptr, uint64_t n = 0)
	{
		errs.add(e);
		note(nd, n);
	}
	void problem_any()
	{
		errs.any = true;
		note(nullptr, 0);
	}
	void note(const char *nd, uint64_t n)
	{
		if (nprob++ == 0) {
			needle = nd;
			num = n;
		} else {
			if (!nd || !needle || strcmp(nd, needle) != 0)
				needle = nullptr;
			if (n != num)
				num = 0;
		}
	}
};

// A request for one operation, before it becomes a kaio_op or a call.
struct Seg {
	kaio_buf *h = nullptr;
	int idx = -1;
	uint64_t off = 0, len = 0;
};

struct Req {
	uint32_t code = KAIO_OP_READ;
	int fdsel = FD_DIRECT_RW;
	int fd = 0;
	uint64_t offset = 0;
	kaio_buf *bh = nullptr;
	int bidx = -1;
	uint64_t boff = 0, len = 0;
	std::vector<Seg> segs;
	unsigned nvec = 0;
	bool vec_null = false;
	uint32_t rw_flags = 0, ioprio = 0, reserved32 = 0;
	uint64_t reserved[2] = {0, 0};
	bool via_sync = false; // built for kaio_sync: level decides the code
	unsigned level = 0;
	bool cb = false;
	uint8_t ud_hi = 0, plan = 0;
};

constexpr uint32_t kKnownRw = KAIO_RWF_DSYNC | KAIO_RWF_SYNC | KAIO_RWF_NOWAIT | KAIO_RWF_APPEND;

bool is_write(uint32_t c) { return c == KAIO_OP_WRITE || c == KAIO_OP_WRITEV; }
bool is_vector(uint32_t c) { return c == KAIO_OP_READV || c == KAIO_OP_WRITEV; }
bool is_sync(uint32_t c) { return c == KAIO_OP_FSYNC || c == KAIO_OP_FDATASYNC; }
bool is_rw(uint32_t c) { return c >= KAIO_OP_READ && c <= KAIO_OP_WRITEV; }

// What the contract says about the request's arguments alone.
Verdict judge(const Req &r, const Ctx *c)
{
	Verdict v;
	bool unknown = false;
	const FdProps &p = E.props[r.fdsel];
	if (r.via_sync) {
		if (r.level != KAIO_SYNC_DATA && r.level != KAIO_SYNC_FULL)
			v.problem(EINVAL);
	} else {
		if (r.reserved32 || r.reserved[0] || r.reserved[1])
			v.problem(EINVAL);
		if (r.rw_flags & ~kKnownRw)
			v.problem(EINVAL);
		if (r.ioprio > 0xffff)
			v.problem_any(); // cannot be an I/O priority
		else if (r.ioprio)
			unknown = true;  // the kernel judges it
	}
	if (is_rw(r.code)) {
		const bool wr = is_write(r.code);
		const bool append = r.rw_flags & KAIO_RWF_APPEND;
		if (append && !wr)
			v.problem(EINVAL);
		if (append && wr)
			unknown = true; // end of file may be misaligned: the kernel decides
		if (r.rw_flags & KAIO_RWF_NOWAIT)
			unknown = true;
		if (r.fd < 0)
			v.problem(EBADF);
		if (!append && r.offset > uint64_t(INT64_MAX))
			v.problem(EINVAL);
		bool bufs_ok = true;
		uint64_t total = 0;
		if (!is_vector(r.code)) {
			if (!buf_live(r.bidx)) {
				v.problem(EINVAL);
				bufs_ok = false;
			} else {
				const uint64_t blen = g_bufs[r.bidx].len;
				if (r.boff > blen || r.len > blen - r.boff) {
					v.problem(EINVAL);
					bufs_ok = false;
				}
				total = r.len;
			}
		} else if (r.nvec == 0 || r.nvec > IOV_MAX || r.vec_null) {
			v.problem(EINVAL);
			bufs_ok = false;
		} else {
			for (const Seg &s : r.segs) {
				if (!buf_live(s.idx)) {
					v.problem(EINVAL);
					bufs_ok = false;
					continue;
				}
				const uint64_t blen = g_bufs[s.idx].len;
				if (s.off > blen || s.len > blen - s.off) {
					v.problem(EINVAL);
					bufs_ok = false;
					continue;
				}
				total += s.len;
			}
		}
		if (bufs_ok && !append && r.offset <= uint64_t(INT64_MAX) &&
		    total > uint64_t(INT64_MAX) - r.offset)
			v.problem(EINVAL);
		if (r.fd >= 0) {
			if (!p.known) {
				unknown = true;
			} else if (p.bad) {
				v.problem(EBADF);
			} else if (!p.regular) {
				v.problem(EINVAL);
			} else {
				if (wr ? !p.wr : !p.rd)
					v.problem(EBADF);
				if (!p.direct) {
					if (!c || !(c->flags & KAIO_CTX_ALLOW_BUFFERED))
						v.problem(EINVAL, "O_DIRECT");
				} else if (bufs_ok) {
					const uint64_t mem = E.mem_align, off = E.off_align;
					bool mis512 = false;
					auto check_piece = [&](const void *data, uint64_t boff, uint64_t len) {
						const uintptr_t addr = reinterpret_cast<uintptr_t>(data) + boff;
						if (mem && (addr & (mem - 1)))
							v.problem(EINVAL, "aligned", mem);
						if (off && (len & (off - 1)))
							v.problem(EINVAL, "aligned", off);
						mis512 |= (addr | len) & 511;
					};
					if (off && !append && (r.offset & (off - 1)))
						v.problem(EINVAL, "aligned", off);
					mis512 |= !append && (r.offset & 511);
					if (!is_vector(r.code))
						check_piece(g_bufs[r.bidx].data, r.boff, r.len);
					else
						for (const Seg &s : r.segs)
							check_piece(g_bufs[s.idx].data, s.off, s.len);
					if ((!mem || !off) && mis512)
						unknown = true; // not learnt: the kernel decides
				}
			}
		}
	} else if (is_sync(r.code) || r.via_sync) {
		if (!r.via_sync) {
			if (r.rw_flags)
				v.problem(EINVAL); // rw_flags apply only to reads and writes
			if (r.offset != 0)
				v.problem(EINVAL);
		}
		if (r.fd < 0)
			v.problem(EBADF);
		else if (!p.known)
			unknown = true;
		else if (p.bad)
			v.problem(EBADF);
		else if (!p.syncable)
			v.problem_any(); // the kernel refuses it
	} else {
		v.problem(EINVAL); // unknown operation code
	}
	v.kind = v.nprob ? Verdict::REFUSE : unknown ? Verdict::UNKNOWN : Verdict::ACCEPT;
	return v;
}

struct CtxPick {
	kaio_ctx *h = nullptr;
	int idx = -1; // a tracked context (live or destroyed), or -1
	bool live = false;
};

// Adds what the context decides: handle validity, shutdown, capacity.
Verdict apply_ctx(Verdict v, const CtxPick &cp, int extra_pending)
{
	if (!cp.live) {
		Verdict r;
		r.kind = Verdict::REFUSE;
		r.errs.any = true;
		return r;
	}
	const Ctx &c = g_ctxs[cp.idx];
	if (c.destroying) {
		if (v.kind == Verdict::REFUSE) {
			v.errs.add(ESHUTDOWN);
		} else {
			v.errs = ErrSet();
			if (v.kind == Verdict::ACCEPT)
				v.errs.add(ESHUTDOWN);
			else
				v.errs.any = true;
		}
		v.kind = Verdict::REFUSE;
		v.needle = nullptr;
		return v;
	}
	if (v.kind == Verdict::ACCEPT) {
		if (in_callback()) {
			// Events copied by the reaping call in progress have left
			// the library's count but not yet ours.
			v.kind = Verdict::MAYBE_CAP;
		} else if (c.pending() + extra_pending >= int(c.cap)) {
			v.kind = Verdict::REFUSE;
			v.errs = ErrSet();
			v.errs.add(EAGAIN);
			v.needle = nullptr;
		}
	}
	return v;
}

bool contains_number(const char *m, uint64_t n)
{
	char num[32];
	snprintf(num, sizeof num, "%llu", static_cast<unsigned long long>(n));
	return strstr(m, num) != nullptr;
}

// Checks one refusal against the verdict (rc < 0).
void check_refusal_matches(int rc, const Verdict &v, const char *fn)
{
	char want[96];
	v.errs.describe(want, sizeof want);
	CHECK(v.errs.has(-rc), "%s refused with %d (%s) but the expected refusal is %s", fn, rc,
	      kaio_strerror(rc), want);
	const char *m = kaio_last_error();
	if (v.needle) {
		CHECK(strstr(m, v.needle), "%s: the message for this refusal should mention \"%s\"",
		      fn, v.needle);
		if (v.num)
			CHECK(contains_number(m, v.num), "%s: the message should give the number %llu", fn,
			      static_cast<unsigned long long>(v.num));
	}
}

void check_single(int rc, const Verdict &v, const CtxPick &cp, const char *fn)
{
	if (rc < 0)
		after_failure(rc, fn);
	else
		CHECK(rc == 0, "%s returned %d: expected 0 or -errno", fn, rc);
	switch (v.kind) {
	case Verdict::ACCEPT:
		CHECK(rc == 0, "%s refused a valid request: %d (%s)", fn, rc, kaio_strerror(rc));
		break;
	case Verdict::MAYBE_CAP:
		CHECK(rc == 0 || rc == -EAGAIN, "%s refused a valid request: %d (%s)", fn, rc,
		      kaio_strerror(rc));
		break;
	case Verdict::REFUSE: {
		char want[96];
		v.errs.describe(want, sizeof want);
		CHECK(rc < 0, "%s accepted a request the contract refuses (%s)", fn, want);
		check_refusal_matches(rc, v, fn);
		break;
	}
	case Verdict::UNKNOWN:
		break;
	}
	if (rc == -EAGAIN && cp.live && !in_callback() && !g_ctxs[cp.idx].destroying)
		CHECK(g_ctxs[cp.idx].pending() > 0,
		      "%s returned -EAGAIN with nothing in flight or queued to reap", fn);
}

// ---- operation records ------------------------------------------------------------------

int new_op(const Req &r, int ctx, uint64_t *ud)
{
	CHECK(g_ops.size() < kMaxOps, "harness: too many operation records");
	const int idx = int(g_ops.size());
	g_ops.emplace_back();
	Op &op = g_ops.back();
	op.ctx = ctx;
	op.ud = (uint64_t(r.ud_hi) * 0x0101010100000000ull) | uint32_t(idx);
	op.code = r.code;
	op.fd = r.fd;
	op.offset = r.offset;
	op.cb = r.cb;
	op.plan = r.plan;
	if (is_rw(r.code) && !is_vector(r.code)) {
		op.buf = r.bidx;
		op.len = r.len;
	} else if (is_vector(r.code) && !r.vec_null && r.nvec >= 1 && r.nvec <= IOV_MAX) {
		for (const Seg &s : r.segs) {
			op.segs.push_back(s.idx);
			op.len += s.len;
		}
	}
	*ud = op.ud;
	return idx;
}

void accept_op(int idx)
{
	Op &op = g_ops[size_t(idx)];
	CHECK(op.ctx >= 0 && g_ctxs[op.ctx].live, "an operation was accepted on a dead context");
	op.st = OS_PENDING;
	Ctx &c = g_ctxs[op.ctx];
	if (op.cb)
		c.pending_cb++;
	else
		c.pending_ev++;
	if (is_rw(op.code) && !is_vector(op.code)) {
		CHECK(buf_live(op.buf), "an operation was accepted with a buffer that is not live");
		g_bufs[op.buf].orefs++;
	}
	for (int s : op.segs) {
		CHECK(buf_live(s), "a vector operation was accepted with a segment that is not live");
		g_bufs[s].orefs++;
	}
	g_stats.accepted++;
}

void drop_op_refs(const Op &op)
{
	if (op.buf >= 0 && !is_vector(op.code) && is_rw(op.code))
		g_bufs[op.buf].orefs--;
	for (int s : op.segs)
		g_bufs[s].orefs--;
}

int lookup_op(uint64_t ud, const char *how)
{
	const uint32_t idx = uint32_t(ud);
	CHECK(idx < g_ops.size() && g_ops[idx].ud == ud,
	      "%s for user_data %#llx, which no submission used", how,
	      static_cast<unsigned long long>(ud));
	return int(idx);
}

void check_event_fields(const kaio_event *ev, const Op &op, const char *how)
{
	const Ctx &c = g_ctxs[op.ctx];
	CHECK(ev->ctx == c.h, "%s: event ctx %p, expected %p", how, static_cast<void *>(ev->ctx),
	      static_cast<void *>(c.h));
	CHECK(ev->fd == op.fd, "%s: event fd %d, expected %d", how, ev->fd, op.fd);
	CHECK(ev->op == op.code, "%s: event op %u, expected %u", how, ev->op, op.code);
	const uint64_t off = is_sync(op.code) ? 0 : op.offset;
	CHECK(ev->offset == off, "%s: event offset %llu, expected %llu", how,
	      static_cast<unsigned long long>(ev->offset), static_cast<unsigned long long>(off));
	CHECK(ev->reserved[0] == 0 && ev->reserved[1] == 0, "%s: event reserved words not 0", how);
	if (ev->res >= 0)
		CHECK(uint64_t(ev->res) <= op.len, "%s: res %lld exceeds the %llu bytes requested", how,
		      static_cast<long long>(ev->res), static_cast<unsigned long long>(op.len));
	else
		CHECK(ev->res >= -4095, "%s: res %lld is not a negative errno", how,
		      static_cast<long long>(ev->res));
	kaio_buf *want = (is_rw(op.code) && !is_vector(op.code)) ? g_bufs[op.buf].h : nullptr;
	CHECK(ev->buf == want, "%s: event buf %p, expected %p", how, static_cast<void *>(ev->buf),
	      static_cast<void *>(want));
}

// ---- release functions and callbacks --------------------------------------------------

bool g_in_child = false; // in act_fork's child: release functions must not run

void on_release(void *data, size_t len, void *opaque)
{
	if (g_in_child)
		_exit(40); // kaio_ctx_destroy in a forked child ran a release function
	Buf *b = static_cast<Buf *>(opaque);
	const long bi = b - g_bufs;
	CHECK(bi >= 0 && bi < g_nbufs, "release function called with an opaque we never gave");
	CHECK(b->kind == BK_WRAP_REL && data == b->data && len == b->len,
	      "release function called with data %p len %zu, wrapped %p len %zu", data, len, b->data,
	      b->len);
	b->releases++;
	g_stats.releases++;
	CHECK(b->releases == 1, "release function of buffer %ld ran %d times", bi, b->releases);
	CHECK(b->hrefs == 0, "buffer %ld released while the caller still holds %ld reference(s)", bi,
	      b->hrefs);
	CHECK(!g_frames.empty(), "release function ran outside any kaio call");
	const Frame &f = g_frames.back();
	CHECK(f.kind == FK_UNREF || f.kind == FK_POLL || f.kind == FK_WAIT || f.kind == FK_DESTROY,
	      "release function ran inside a call that drops no reference (frame kind %d)", f.kind);
	for (const Frame &fr : g_frames)
		if (fr.kind == FK_CALLBACK)
			CHECK(!op_uses(g_ops[size_t(fr.op)], int(bi)),
			      "buffer %ld released while the callback of an operation using it still runs",
			      bi);
	// An undelivered operation may hold the buffer only where the library
	// drops its reference as it delivers: a vector event being copied by
	// this very reap, or anything without a callback that destroy discards.
	for (const Op &op : g_ops) {
		if (op.st != OS_PENDING || !op_uses(op, int(bi)))
			continue;
		CHECK(!op.cb, "buffer %ld released before the callback of user_data %#llx ran", bi,
		      static_cast<unsigned long long>(op.ud));
		CHECK(op.ctx == f.ctx && (f.kind == FK_DESTROY || is_vector(op.code)),
		      "buffer %ld released while user_data %#llx (op %u, no callback) still holds it", bi,
		      static_cast<unsigned long long>(op.ud), op.code);
	}
	// While the library delivers on a context, reaping it again is -EBUSY.
	if ((f.kind == FK_POLL || f.kind == FK_WAIT || f.kind == FK_DESTROY) && f.ctx >= 0 &&
	    g_ctxs[f.ctx].live) {
		g_calls++;
		int rc = kaio_poll(g_ctxs[f.ctx].h, nullptr, 0);
		CHECK(rc == -EBUSY, "kaio_poll from a release function run during delivery returned %d",
		      rc);
	}
	// The kernel must be done with it: anything that changes this later
	// was written after the release.
	memset(data, kReleasedByte, len);
}

void run_nested(int op_idx);

void on_complete(const struct kaio_event *ev)
{
	CHECK(ev != nullptr, "callback with a NULL event");
	const int idx = lookup_op(ev->user_data, "callback");
	{
		Op &op = g_ops[size_t(idx)];
		CHECK(op.cb, "callback run for an operation submitted without one");
		CHECK(op.st != OS_REFUSED, "callback run for a refused operation");
		CHECK(op.st == OS_PENDING, "callback run twice for one operation");
		CHECK(!g_frames.empty(), "callback ran outside any kaio call");
		const Frame &f = g_frames.back();
		CHECK(f.kind == FK_POLL || f.kind == FK_WAIT || f.kind == FK_DESTROY,
		      "callback ran inside a call that must not deliver (frame kind %d: %s)", f.kind,
		      f.kind == FK_SUBMIT ? "a submission" : "another call");
		CHECK(f.ctx == op.ctx, "callback of context %d delivered by a call on context %d", op.ctx,
		      f.ctx);
		check_event_fields(ev, op, "callback");
		// The operation's references last until the callback returns.
		for (int b : op.segs.empty() ? std::vector<int>{op.buf} : op.segs) {
			if (b < 0)
				continue;
			CHECK(g_bufs[b].releases == 0 && kaio_buf_len(g_bufs[b].h) == g_bufs[b].len,
			      "buffer %d of user_data %#llx died before its callback ran", b,
			      static_cast<unsigned long long>(op.ud));
		}
		op.st = OS_DELIVERED;
		Ctx &c = g_ctxs[op.ctx];
		c.pending_cb--;
		c.callbacks++;
		const unsigned inflight = kaio_ctx_inflight(c.h);
		CHECK(inflight <= c.cap, "inflight %u above capacity %u (in a callback)", inflight, c.cap);
	}
	g_stats.callbacks++;
	g_frames.push_back(Frame{FK_CALLBACK, g_ops[size_t(idx)].ctx, idx});
	run_nested(idx);
	g_frames.pop_back();
	// The library drops the operation's references once we return.
	drop_op_refs(g_ops[size_t(idx)]);
}

// ---- picking arguments ------------------------------------------------------------------

CtxPick pick_ctx(Src &s, int prefer)
{
	CtxPick p;
	const uint32_t r = s.below(16);
	int live[kMaxCtxs], nlive = 0, dead[kMaxCtxs], ndead = 0;
	for (int i = 0; i < g_nctxs; i++) {
		if (g_ctxs[i].live)
			live[nlive++] = i;
		else
			dead[ndead++] = i;
	}
	if (r == 0)
		return p; // NULL
	if (r == 1) {
		p.h = reinterpret_cast<kaio_ctx *>(g_foreign);
		return p;
	}
	if (r == 2) {
		p.h = reinterpret_cast<kaio_ctx *>(g_foreign + 1);
		return p;
	}
	if (r == 3 && ndead) {
		p.idx = dead[s.below(uint32_t(ndead))];
		p.h = g_ctxs[p.idx].h;
		return p;
	}
	if (prefer >= 0 && g_ctxs[prefer].live && r < 12)
		p.idx = prefer;
	else if (nlive)
		p.idx = live[s.below(uint32_t(nlive))];
	else
		return p;
	p.h = g_ctxs[p.idx].h;
	p.live = true;
	return p;
}

struct BufPick {
	kaio_buf *h = nullptr;
	int idx = -1; // a tracked buffer (live or dead), or -1
};

BufPick pick_buf(Src &s)
{
	BufPick p;
	const uint32_t r = s.below(32);
	int live[kMaxBufs], nlive = 0, dead[kMaxBufs], ndead = 0;
	for (int i = 0; i < g_nbufs; i++) {
		if (buf_live(i))
			live[nlive++] = i;
		else if (g_bufs[i].dead)
			dead[ndead++] = i;
	}
	if (r == 0)
		return p;
	if (r == 1) {
		p.h = reinterpret_cast<kaio_buf *>(g_foreign + 64);
		return p;
	}
	if (r == 2) {
		p.h = reinterpret_cast<kaio_buf *>(g_foreign + 65);
		return p;
	}
	if (r == 3 && ndead) {
		p.idx = dead[s.below(uint32_t(ndead))];
		p.h = g_bufs[p.idx].h;
		return p;
	}
	if (!nlive)
		return p;
	p.idx = live[s.below(uint32_t(nlive))];
	p.h = g_bufs[p.idx].h;
	return p;
}

int pick_fd(Src &s, int *sel)
{
	static const uint8_t table[32] = {
		FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW,
		FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW,
		FD_DIRECT_RO, FD_DIRECT_RO, FD_DIRECT_WO, FD_BUF_RW, FD_BUF_RW, FD_BUF_RW, FD_BUF_RO,
		FD_PIPE_R, FD_PIPE_W, FD_DIR, FD_DEVZERO, FD_MORPH, FD_MORPH, FD_MORPH, FD_CLOSED,
		FD_CLOSED_HIGH, FD_NEG1, FD_INT_MIN, FD_NEG_RANDOM, FD_DIRECT_RW};
	*sel = table[s.below(32)];
	if (*sel == FD_NEG_RANDOM)
		return -int(2 + s.below(1000));
	return E.fd[*sel];
}

uint64_t gen_offset(Src &s)
{
	const uint64_t ga = E.ga;
	switch (s.below(16)) {
	case 0: case 1: case 2: case 3: case 4: case 5: case 6:
		return ga * s.below(kFileSize / ga);
	case 7: case 8: case 9:
		return ga * s.below(kSpan / ga);
	case 10: return kFileSize;
	case 11: return s.below(65536);
	// Extremes: refused by the library, or beyond any file size (-EFBIG).
	case 12: return uint64_t(INT64_MAX);
	case 13: return uint64_t(1) << 63;
	case 14: return UINT64_MAX;
	default: return (uint64_t(1) << 63) - ga;
	}
}

uint64_t gen_boff(Src &s, uint64_t blen)
{
	const uint64_t ga = E.ga;
	switch (s.below(16)) {
	case 0: case 1: case 2: case 3: case 4: case 5: case 6: case 7:
		return 0;
	case 8: case 9: case 10:
		return ga * s.below(blen / ga + 1);
	case 11: return blen;
	case 12: return blen + 1;
	case 13: return 1 + s.below(511);
	case 14: return UINT64_MAX;
	default: return ga / 2;
	}
}

uint64_t gen_len(Src &s, uint64_t avail)
{
	const uint64_t ga = E.ga;
	const uint64_t cap = std::min(avail, kMaxIo);
	switch (s.below(16)) {
	case 0: return 0;
	case 1: case 2: case 3: case 4: case 5: case 6:
		return cap >= ga ? ga * (1 + s.below(cap / ga)) : ga;
	case 7: return avail <= kFileSize ? avail : ga;
	case 8: return avail + 1;
	case 9: return 1 + s.below(4095);
	case 10: return UINT64_MAX;
	case 11: case 12: case 13: return ga;
	case 14: return 4096;
	default: return cap - cap % ga;
	}
}

uint32_t gen_rw_flags(Src &s)
{
	switch (s.below(32)) {
	case 22: return KAIO_RWF_DSYNC;
	case 23: return KAIO_RWF_SYNC;
	case 24: return KAIO_RWF_NOWAIT;
	case 25: return KAIO_RWF_APPEND;
	case 26: return KAIO_RWF_DSYNC | KAIO_RWF_NOWAIT;
	case 27: return s.below(16) << 1;
	case 28: return 1u << (5 + s.below(27));
	case 29: return 0x1; // RWF_HIPRI: not a kaio flag
	case 30: return KAIO_RWF_APPEND | KAIO_RWF_DSYNC;
	default: return 0;
	}
}

uint32_t gen_ioprio(Src &s)
{
	switch (s.below(16)) {
	case 12: return (2u << 13) | s.below(8);  // best effort
	case 13: return 3u << 13;                 // idle
	case 14: return (1u << 13) | s.below(8);  // real time
	case 15: return s.below(2) ? 0x10000u + s.below(100) : (7u << 13) | 3; // not a priority
	default: return 0;
	}
}

void gen_single(Src &s, Req &r)
{
	BufPick b = pick_buf(s);
	r.bh = b.h;
	r.bidx = b.idx;
	const uint64_t blen = buf_live(b.idx) ? g_bufs[b.idx].len : 4096;
	r.boff = gen_boff(s, blen);
	r.len = gen_len(s, r.boff <= blen ? blen - r.boff : 0);
}

void gen_vector(Src &s, Req &r)
{
	const uint32_t k = s.below(16);
	unsigned build;
	if (k == 0) {
		r.nvec = 0;
		build = 1;
	} else if (k == 1) {
		r.nvec = IOV_MAX + 1;
		build = 1; // the library must refuse before reading past it
	} else if (k == 2) {
		r.nvec = UINT_MAX;
		build = 1;
	} else if (k == 3) {
		r.nvec = IOV_MAX;
		build = IOV_MAX;
	} else {
		r.nvec = 1 + s.below(20);
		build = r.nvec;
	}
	r.vec_null = s.below(32) == 0;
	if (k == 3) {
		// IOV_MAX segments over one buffer, each a block or nothing.
		BufPick b = pick_buf(s);
		const uint64_t len = s.below(2) ? E.ga : 0;
		for (unsigned i = 0; i < build; i++)
			r.segs.push_back(Seg{b.h, b.idx, 0, len});
		return;
	}
	for (unsigned i = 0; i < build; i++) {
		BufPick b = pick_buf(s);
		const uint64_t blen = buf_live(b.idx) ? g_bufs[b.idx].len : 4096;
		Seg sg{b.h, b.idx, gen_boff(s, blen), 0};
		sg.len = gen_len(s, sg.off <= blen ? std::min<uint64_t>(blen - sg.off, 65536) : 0);
		r.segs.push_back(sg);
	}
}

// A live buffer, or none.
BufPick pick_live_buf(Src &s)
{
	BufPick p;
	int live[kMaxBufs], nlive = 0;
	for (int i = 0; i < g_nbufs; i++)
		if (buf_live(i))
			live[nlive++] = i;
	if (nlive) {
		p.idx = live[s.below(uint32_t(nlive))];
		p.h = g_bufs[p.idx].h;
	}
	return p;
}

// Block-aligned offset and length inside buffer b (up to maxlen bytes).
void gen_aligned_piece(Src &s, const BufPick &b, uint64_t maxlen, uint64_t *boff, uint64_t *len)
{
	const uint64_t ga = E.ga;
	const uint64_t blen = buf_live(b.idx) ? g_bufs[b.idx].len : 0;
	*boff = blen >= ga ? ga * s.below(blen / ga) : 0;
	const uint64_t avail = std::min(blen - *boff, maxlen);
	*len = avail >= ga ? ga * (1 + s.below(avail / ga)) : 0;
}

// fd, offset and buffers of a read or write: half the time a request that
// is valid whenever its buffers are (so that most inputs reach the kernel
// and the delivery paths), else anything.
void gen_rw_args(Src &s, Req &r)
{
	if (s.below(4) >= 2) {
		r.fd = pick_fd(s, &r.fdsel);
		r.offset = gen_offset(s);
		if (is_vector(r.code))
			gen_vector(s, r);
		else
			gen_single(s, r);
		return;
	}
	static const uint8_t fds[8] = {FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW, FD_DIRECT_RW,
	                               FD_DIRECT_RW, FD_BUF_RW, FD_MORPH, FD_DIRECT_RW};
	r.fdsel = fds[s.below(8)];
	r.fd = E.fd[r.fdsel];
	const uint64_t span = s.below(4) ? kFileSize : kSpan;
	r.offset = E.ga * s.below(span / E.ga);
	if (!is_vector(r.code)) {
		BufPick b = pick_live_buf(s);
		r.bh = b.h;
		r.bidx = b.idx;
		gen_aligned_piece(s, b, kMaxIo, &r.boff, &r.len);
		return;
	}
	r.nvec = 1 + s.below(20);
	for (unsigned i = 0; i < r.nvec; i++) {
		BufPick b = pick_live_buf(s);
		Seg sg{b.h, b.idx, 0, 0};
		gen_aligned_piece(s, b, 65536, &sg.off, &sg.len);
		r.segs.push_back(sg);
	}
}

void gen_common(Src &s, Req &r)
{
	r.cb = s.below(2);
	r.ud_hi = s.u8();
	r.plan = s.u8();
}

// ---- actions ------------------------------------------------------------------------------

void take_events(int ci, const kaio_event *evs, int n)
{
	for (int i = 0; i < n; i++) {
		const kaio_event *ev = &evs[i];
		const int idx = lookup_op(ev->user_data, "event");
		Op &op = g_ops[size_t(idx)];
		CHECK(!op.cb, "event copied for an operation submitted with a callback");
		CHECK(op.st != OS_REFUSED, "event copied for a refused operation");
		CHECK(op.st == OS_PENDING, "operation delivered twice (event)");
		CHECK(op.ctx == ci, "event of context %d copied by a call on context %d", op.ctx, ci);
		check_event_fields(ev, op, "event");
		op.st = OS_DELIVERED;
		g_ctxs[ci].pending_ev--;
		if (is_rw(op.code) && !is_vector(op.code)) {
			// The event carries the operation's reference to us.
			g_bufs[op.buf].orefs--;
			g_bufs[op.buf].hrefs++;
		} else {
			drop_op_refs(op);
		}
		g_stats.events++;
	}
}

// kaio_poll with explicit arguments; returns its result.
int do_poll(const CtxPick &cp, unsigned max, bool null_events)
{
	std::unique_ptr<kaio_event[]> evs;
	if (!null_events)
		evs.reset(new kaio_event[std::min<unsigned>(max, 64) + (max == 0)]);
	const int frames_before = cp.live ? g_ctxs[cp.idx].frames : 0;
	Call call(FK_POLL, cp.live ? cp.idx : -1);
	if (cp.live)
		g_ctxs[cp.idx].frames++;
	const int rc = kaio_poll(cp.h, evs.get(), max);
	if (cp.live)
		g_ctxs[cp.idx].frames--;
	call.end();
	TRACE("  kaio_poll(ctx %d, max %u%s) = %d\n", cp.idx, max, null_events ? ", NULL" : "", rc);
	if (rc < 0) {
		after_failure(rc, "kaio_poll");
		if (cp.live && frames_before > 0 && max <= INT_MAX && (evs || !max))
			CHECK(rc == -EBUSY, "kaio_poll inside delivery on the same context: %d, not -EBUSY",
			      rc);
		CHECK(!cp.live || frames_before > 0 || max > INT_MAX || (!evs && max),
		      "kaio_poll on a live context failed: %d (%s)", rc, kaio_strerror(rc));
		return rc;
	}
	CHECK(cp.live, "kaio_poll accepted an invalid context");
	CHECK(frames_before == 0, "kaio_poll worked inside delivery on the same context");
	CHECK(max <= INT_MAX, "kaio_poll accepted max %u above INT_MAX", max);
	CHECK(evs || !max, "kaio_poll accepted NULL events with max %u", max);
	CHECK(unsigned(rc) <= max, "kaio_poll returned %d events for max %u", rc, max);
	after_success(call, "kaio_poll");
	take_events(cp.idx, evs.get(), rc);
	return rc;
}

int do_wait(const CtxPick &cp, unsigned min, unsigned max, int timeout, bool null_events)
{
	std::unique_ptr<kaio_event[]> evs;
	if (!null_events)
		evs.reset(new kaio_event[std::min<unsigned>(max, 64) + (max == 0)]);
	const int frames_before = cp.live ? g_ctxs[cp.idx].frames : 0;
	const unsigned wakes_before = cp.live ? g_ctxs[cp.idx].wakes : 0;
	const unsigned cbs_before = cp.live ? g_ctxs[cp.idx].callbacks : 0;
	const sig_atomic_t signals_before = g_signals;
	Call call(FK_WAIT, cp.live ? cp.idx : -1);
	if (cp.live)
		g_ctxs[cp.idx].frames++;
	const int rc = kaio_wait(cp.h, evs.get(), min, max, timeout);
	if (cp.live)
		g_ctxs[cp.idx].frames--;
	call.end();
	TRACE("  kaio_wait(ctx %d, min %u, max %u, %d ms%s) = %d\n", cp.idx, min, max, timeout,
	      null_events ? ", NULL" : "", rc);
	const bool bad_args = max > INT_MAX || min > INT_MAX || (!evs && max) || timeout < -1;
	if (rc < 0) {
		after_failure(rc, "kaio_wait");
		if (cp.live && frames_before > 0 && !bad_args)
			CHECK(rc == -EBUSY, "kaio_wait inside delivery on the same context: %d, not -EBUSY",
			      rc);
		if (cp.live && frames_before == 0 && !(max > INT_MAX || min > INT_MAX || (!evs && max)) &&
		    timeout < -1)
			CHECK(rc == -EINVAL, "kaio_wait with timeout %d: %d, not -EINVAL", timeout, rc);
		if (rc == -EINTR && cp.live && frames_before == 0 && !bad_args) {
			CHECK(g_signals != signals_before, "kaio_wait returned -EINTR without a signal");
			return rc;
		}
		CHECK(!cp.live || frames_before > 0 || bad_args,
		      "kaio_wait on a live context failed: %d (%s)", rc, kaio_strerror(rc));
		return rc;
	}
	CHECK(cp.live, "kaio_wait accepted an invalid context");
	CHECK(frames_before == 0, "kaio_wait worked inside delivery on the same context");
	CHECK(!bad_args, "kaio_wait accepted bad arguments (min %u, max %u, events %p, timeout %d)",
	      min, max, static_cast<void *>(evs.get()), timeout);
	CHECK(unsigned(rc) <= max, "kaio_wait returned %d events for max %u", rc, max);
	after_success(call, "kaio_wait");
	take_events(cp.idx, evs.get(), rc);
	if (timeout == -1 && g_ctxs[cp.idx].wakes == wakes_before && g_signals == signals_before) {
		const unsigned delivered = unsigned(rc) + (g_ctxs[cp.idx].callbacks - cbs_before);
		CHECK(delivered >= min || (max && unsigned(rc) == max),
		      "kaio_wait without a timeout returned after %u deliveries (min %u, max %u)",
		      delivered, min, max);
	}
	return rc;
}

// Destroys; returns the result.  Updates the model on success.
int do_destroy(const CtxPick &cp)
{
	const int frames_before = cp.live ? g_ctxs[cp.idx].frames : 0;
	if (cp.live && frames_before == 0)
		g_ctxs[cp.idx].destroying = true;
	Call call(FK_DESTROY, cp.live ? cp.idx : -1);
	if (cp.live)
		g_ctxs[cp.idx].frames++;
	const int rc = kaio_ctx_destroy(cp.h);
	if (cp.live) {
		g_ctxs[cp.idx].frames--;
		if (frames_before == 0) // not an -EBUSY attempt inside the destroy
			g_ctxs[cp.idx].destroying = false;
	}
	call.end();
	TRACE("  kaio_ctx_destroy(ctx %d) = %d\n", cp.idx, rc);
	if (rc < 0) {
		after_failure(rc, "kaio_ctx_destroy");
		CHECK(!cp.live || frames_before > 0, "kaio_ctx_destroy of a live context failed: %d", rc);
		if (cp.live)
			CHECK(rc == -EBUSY, "kaio_ctx_destroy inside delivery on it: %d, not -EBUSY", rc);
		return rc;
	}
	CHECK(rc == 0, "kaio_ctx_destroy returned %d", rc);
	CHECK(cp.live, "kaio_ctx_destroy accepted an invalid or destroyed context");
	CHECK(frames_before == 0, "kaio_ctx_destroy worked inside delivery on the same context");
	after_success(call, "kaio_ctx_destroy");
	Ctx &c = g_ctxs[cp.idx];
	c.live = false;
	for (Op &op : g_ops) {
		if (op.ctx != cp.idx || op.st != OS_PENDING)
			continue;
		CHECK(!op.cb, "kaio_ctx_destroy returned without delivering the callback of user_data "
		              "%#llx", static_cast<unsigned long long>(op.ud));
		op.st = OS_DISCARDED; // no callback: waited for, references dropped
		drop_op_refs(op);
		g_stats.discarded++;
	}
	CHECK(c.pending_cb == 0, "harness: callback count out of step");
	c.pending_ev = 0;
	const unsigned inflight = kaio_ctx_inflight(c.h);
	CHECK(inflight == 0, "kaio_ctx_inflight of a destroyed context: %u", inflight);
	const int fd = kaio_ctx_fd(c.h);
	CHECK(fd < 0, "kaio_ctx_fd of a destroyed context: %d", fd);
	return rc;
}

// Reaps until nothing is pending, then checks the library agrees.
void drain(int ci)
{
	CtxPick cp;
	cp.idx = ci;
	cp.h = g_ctxs[ci].h;
	cp.live = true;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (g_ctxs[ci].live && g_ctxs[ci].pending() > 0) {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		CHECK(t.tv_sec - t0.tv_sec < 40,
		      "drain: %d operation(s) on context %d never delivered in 40 s (inflight %u)",
		      g_ctxs[ci].pending(), ci, kaio_ctx_inflight(g_ctxs[ci].h));
		do_wait(cp, 1, 64, 10, false);
	}
	if (!g_ctxs[ci].live)
		return;
	const unsigned inflight = kaio_ctx_inflight(g_ctxs[ci].h);
	CHECK(inflight == 0, "kaio_ctx_inflight is %u after a drain", inflight);
}

void act_create(Src &s)
{
	const uint32_t rc_cap = s.below(16);
	unsigned cap;
	switch (rc_cap) {
	case 0: cap = 0; break;
	case 1: cap = KAIO_CAPACITY_MAX + 1; break;
	case 2: cap = UINT_MAX; break;
	case 3: cap = KAIO_CAPACITY_MAX; break;
	case 4: cap = 1; break;
	case 5: cap = 65 + s.below(200); break;
	default: cap = 1 + s.below(64); break;
	}
	unsigned flags;
	switch (s.below(16)) {
	case 12: flags = 4u << s.below(29); break;
	case 13: flags = UINT_MAX; break;
	default: flags = s.below(4); break;
	}
	const bool null_out = s.below(32) == 0;
	int nlive = 0;
	for (int i = 0; i < g_nctxs; i++)
		nlive += g_ctxs[i].live;
	if (g_nctxs >= kMaxCtxs || nlive >= kMaxLiveCtxs)
		return;
	kaio_ctx *const marker = reinterpret_cast<kaio_ctx *>(g_foreign + 128);
	kaio_ctx *h = marker;
	Call call(FK_OTHER);
	const int rc = kaio_ctx_create(null_out ? nullptr : &h, cap, flags);
	call.end();
	TRACE("  kaio_ctx_create(cap %u, flags %#x%s) = %d\n", cap, flags, null_out ? ", NULL" : "",
	      rc);
	const bool bad = null_out || cap == 0 || cap > KAIO_CAPACITY_MAX ||
	                 (flags & ~(KAIO_CTX_ALLOW_BUFFERED | KAIO_CTX_SINGLE_THREAD));
	if (rc < 0) {
		after_failure(rc, "kaio_ctx_create");
		CHECK(h == marker, "kaio_ctx_create failed but wrote *out");
		if (!null_out && (cap == 0 || cap > KAIO_CAPACITY_MAX ||
		                  (flags & ~(KAIO_CTX_ALLOW_BUFFERED | KAIO_CTX_SINGLE_THREAD))))
			CHECK(rc == -EINVAL, "kaio_ctx_create(cap %u, flags %#x): %d, not -EINVAL", cap,
			      flags, rc);
		if (rc == -EAGAIN)
			CHECK(strstr(kaio_last_error(), "aio-max-nr"),
			      "kaio_ctx_create -EAGAIN without naming /proc/sys/fs/aio-max-nr");
		return;
	}
	CHECK(rc == 0, "kaio_ctx_create returned %d", rc);
	CHECK(!bad, "kaio_ctx_create accepted capacity %u flags %#x out %s", cap, flags,
	      null_out ? "NULL" : "ok");
	CHECK(h != marker && h != nullptr, "kaio_ctx_create succeeded without a handle");
	after_success(call, "kaio_ctx_create");
	Ctx &c = g_ctxs[g_nctxs++];
	c = Ctx();
	c.h = h;
	c.cap = cap;
	c.flags = flags;
	c.live = true;
	c.evfd = kaio_ctx_fd(h);
	CHECK(c.evfd >= 0, "kaio_ctx_fd of a new context: %d", c.evfd);
	const int fl = fcntl(c.evfd, F_GETFL), fdfl = fcntl(c.evfd, F_GETFD);
	CHECK(fl >= 0 && (fl & O_NONBLOCK) && fdfl >= 0 && (fdfl & FD_CLOEXEC),
	      "kaio_ctx_fd is not a non-blocking close-on-exec descriptor");
	CHECK(kaio_ctx_capacity(h) == cap, "kaio_ctx_capacity %u, created with %u",
	      kaio_ctx_capacity(h), cap);
	CHECK(kaio_ctx_inflight(h) == 0, "a new context has operations in flight");
}

int add_buf(kaio_buf *h, BufKind kind, void *data, size_t len, void *mem)
{
	Buf &b = g_bufs[g_nbufs];
	b = Buf();
	b.h = h;
	b.kind = kind;
	b.data = data;
	b.len = len;
	b.mem = mem;
	b.hrefs = 1;
	return g_nbufs++;
}

void act_alloc(Src &s, size_t forced_len = 0)
{
	size_t len;
	switch (forced_len ? 99 : s.below(16)) {
	case 0: len = 0; break;
	case 1: len = SIZE_MAX; break;
	case 2: len = size_t(1) << 44; break;
	case 3: len = SIZE_MAX - 100; break;
	case 4: len = 512; break;
	case 5: len = 8192; break;
	case 6: case 7: len = 65536; break;
	case 8: len = 1 + s.below(70000); break;
	case 9: len = kFileSize; break;
	case 10: len = 4096 * (1 + s.below(64)); break;
	case 99: len = forced_len; break;
	default: len = 4096; break;
	}
	unsigned flags = 0;
	switch (forced_len ? 0 : s.below(16)) {
	case 13: flags = len <= 65536 ? KAIO_BUF_LOCKED : 0; break;
	case 14: flags = 2u << s.below(30); break;
	default: break;
	}
	const bool null_out = !forced_len && s.below(64) == 0;
	if (g_nbufs >= kMaxBufs)
		return;
	kaio_buf *const marker = reinterpret_cast<kaio_buf *>(g_foreign + 192);
	kaio_buf *h = marker;
	Call call(FK_OTHER);
	const int rc = kaio_buf_alloc(null_out ? nullptr : &h, len, flags);
	call.end();
	TRACE("  kaio_buf_alloc(%zu, %#x%s) = %d\n", len, flags, null_out ? ", NULL" : "", rc);
	if (rc < 0) {
		after_failure(rc, "kaio_buf_alloc");
		CHECK(h == marker, "kaio_buf_alloc failed but wrote *out");
		CHECK(null_out || len == 0 || len > kFileSize || (flags & ~KAIO_BUF_LOCKED),
		      "kaio_buf_alloc(%zu, %#x) failed: %d (%s)", len, flags, rc, kaio_strerror(rc));
		if (!null_out && len && (flags & ~KAIO_BUF_LOCKED))
			CHECK(rc == -EINVAL, "kaio_buf_alloc with unknown flags: %d, not -EINVAL", rc);
		return;
	}
	CHECK(rc == 0 && !null_out && len && !(flags & ~KAIO_BUF_LOCKED),
	      "kaio_buf_alloc(%zu, %#x, out %s) accepted bad arguments: %d", len, flags,
	      null_out ? "NULL" : "ok", rc);
	CHECK(h != marker && h, "kaio_buf_alloc succeeded without a handle");
	after_success(call, "kaio_buf_alloc");
	void *data = kaio_buf_data(h);
	CHECK(data && (reinterpret_cast<uintptr_t>(data) & 4095) == 0,
	      "kaio_buf_alloc memory %p is not page-aligned", data);
	CHECK(kaio_buf_len(h) == len, "kaio_buf_len %zu, allocated %zu", kaio_buf_len(h), len);
	const unsigned char *p = static_cast<const unsigned char *>(data);
	const size_t head = std::min<size_t>(len, 4096);
	for (size_t i = 0; i < head; i++)
		CHECK(p[i] == 0, "kaio_buf_alloc memory not zero-filled at byte %zu", i);
	for (size_t i = len - head; i < len; i++)
		CHECK(p[i] == 0, "kaio_buf_alloc memory not zero-filled at byte %zu", i);
	add_buf(h, BK_ALLOC, data, len, nullptr);
}

void act_wrap(Src &s)
{
	const uint32_t kind = s.below(16);
	size_t len;
	switch (s.below(8)) {
	case 0: len = 512; break;
	case 1: len = 8192; break;
	case 2: len = 65536; break;
	case 3: len = 1 + s.below(20000); break;
	case 4: len = 512 * (1 + s.below(64)); break;
	default: len = 4096; break;
	}
	static const size_t mis_table[8] = {0, 0, 0, 512, 1, 8, 100, 4095};
	const size_t mis = mis_table[s.below(8)];
	const bool with_release = s.below(4) != 0;
	if (g_nbufs >= kMaxBufs)
		return;
	kaio_buf *const marker = reinterpret_cast<kaio_buf *>(g_foreign + 192);
	kaio_buf *h = marker;
	void *mem = nullptr;
	void *data;
	bool bad = false;
	if (kind == 0) {
		data = nullptr;
		bad = true;
	} else if (kind == 1) {
		data = reinterpret_cast<void *>(UINTPTR_MAX - 10); // runs past the address space
		len = 100;
		bad = true;
	} else {
		if (posix_memalign(&mem, 4096, len + 4096) != 0)
			return;
		memset(mem, 0x33, len + 4096);
		data = static_cast<char *>(mem) + mis;
		if (kind == 2) {
			len = 0;
			bad = true;
		}
	}
	const bool null_out = s.below(64) == 0;
	bad |= null_out;
	Call call(FK_OTHER);
	const int rc = kaio_buf_wrap(null_out ? nullptr : &h, data, len,
	                             with_release ? on_release : nullptr,
	                             with_release ? &g_bufs[g_nbufs] : nullptr);
	call.end();
	TRACE("  kaio_buf_wrap(%p, %zu, %s) = %d\n", data, len, with_release ? "release" : "NULL", rc);
	if (rc < 0) {
		after_failure(rc, "kaio_buf_wrap");
		CHECK(h == marker, "kaio_buf_wrap failed but wrote *out");
		CHECK(bad, "kaio_buf_wrap(%p, %zu) failed: %d (%s)", data, len, rc, kaio_strerror(rc));
		free(mem);
		return;
	}
	CHECK(!bad, "kaio_buf_wrap accepted bad arguments (data %p, len %zu, out %s)", data, len,
	      null_out ? "NULL" : "ok");
	after_success(call, "kaio_buf_wrap");
	CHECK(kaio_buf_data(h) == data && kaio_buf_len(h) == len,
	      "kaio_buf_wrap handle reports %p/%zu, wrapped %p/%zu", kaio_buf_data(h),
	      kaio_buf_len(h), data, len);
	add_buf(h, with_release ? BK_WRAP_REL : BK_WRAP_NOREL, data, len, mem);
}

void ref_buf(int bi)
{
	Call call(FK_OTHER);
	kaio_buf *r = kaio_buf_ref(g_bufs[bi].h);
	call.end();
	CHECK(r == g_bufs[bi].h, "kaio_buf_ref of a live handle returned %p, not %p",
	      static_cast<void *>(r), static_cast<void *>(g_bufs[bi].h));
	after_success(call, "kaio_buf_ref");
	g_bufs[bi].hrefs++;
}

void act_ref(Src &s)
{
	BufPick b = pick_buf(s);
	if (buf_live(b.idx)) {
		TRACE("  kaio_buf_ref(buf %d)\n", b.idx);
		ref_buf(b.idx);
		return;
	}
	Call call(FK_OTHER);
	kaio_buf *r = kaio_buf_ref(b.h);
	call.end();
	TRACE("  kaio_buf_ref(invalid %p) = %p\n", static_cast<void *>(b.h), static_cast<void *>(r));
	CHECK(r == nullptr, "kaio_buf_ref accepted an invalid handle %p", static_cast<void *>(b.h));
	after_silent_refusal("kaio_buf_ref");
}

void unref_buf(int bi)
{
	g_bufs[bi].hrefs--;
	Call call(FK_UNREF);
	kaio_buf_unref(g_bufs[bi].h);
	call.end();
	after_success(call, "kaio_buf_unref");
}

void act_unref(Src &s)
{
	const uint32_t r = s.below(8);
	int owned[kMaxBufs], n = 0;
	for (int i = 0; i < g_nbufs; i++)
		if (g_bufs[i].hrefs > 0)
			owned[n++] = i;
	if (r >= 4 && n) {
		const int bi = owned[s.below(uint32_t(n))];
		TRACE("  kaio_buf_unref(buf %d)\n", bi);
		unref_buf(bi);
		return;
	}
	kaio_buf *h = nullptr;
	if (r == 1)
		h = reinterpret_cast<kaio_buf *>(g_foreign + 64);
	else if (r == 2)
		h = reinterpret_cast<kaio_buf *>(g_foreign + 65);
	else if (r == 3)
		for (int i = 0; i < g_nbufs; i++)
			if (g_bufs[i].dead)
				h = g_bufs[i].h;
	Call call(FK_UNREF);
	kaio_buf_unref(h);
	call.end();
	TRACE("  kaio_buf_unref(invalid %p)\n", static_cast<void *>(h));
	if (h)
		after_silent_refusal("kaio_buf_unref");
	else
		after_success(call, "kaio_buf_unref(NULL)");
}

void act_probe(Src &s)
{
	BufPick b = pick_buf(s);
	Call call(FK_OTHER);
	void *d = kaio_buf_data(b.h);
	call.end();
	if (buf_live(b.idx)) {
		CHECK(d == g_bufs[b.idx].data, "kaio_buf_data of a live handle: %p, not %p", d,
		      g_bufs[b.idx].data);
		after_success(call, "kaio_buf_data");
	} else {
		CHECK(d == nullptr, "kaio_buf_data of an invalid handle: %p", d);
		after_silent_refusal("kaio_buf_data");
	}
	Call call2(FK_OTHER);
	size_t l = kaio_buf_len(b.h);
	call2.end();
	if (buf_live(b.idx)) {
		CHECK(l == g_bufs[b.idx].len, "kaio_buf_len of a live handle: %zu", l);
		after_success(call2, "kaio_buf_len");
	} else {
		CHECK(l == 0, "kaio_buf_len of an invalid handle: %zu", l);
		after_silent_refusal("kaio_buf_len");
	}
}

// One operation through kaio_read/write/readv/writev/sync.
void act_single(Src &s, uint32_t code, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	Req r;
	r.code = code;
	if (code == KAIO_OP_FSYNC) { // kaio_sync
		r.fd = pick_fd(s, &r.fdsel);
		r.via_sync = true;
		const uint32_t k = s.below(8);
		r.level = k < 3   ? unsigned(KAIO_SYNC_DATA)
		          : k < 6 ? unsigned(KAIO_SYNC_FULL)
		          : k == 6 ? 0u : 3 + s.below(100);
		r.code = r.level == KAIO_SYNC_DATA ? KAIO_OP_FDATASYNC : KAIO_OP_FSYNC;
	} else {
		gen_rw_args(s, r);
	}
	gen_common(s, r);
	if (g_ops.size() + 1 >= kMaxOps)
		return;
	const Verdict v = apply_ctx(judge(r, cp.live ? &g_ctxs[cp.idx] : nullptr), cp, 0);
	uint64_t ud;
	const int idx = new_op(r, cp.live ? cp.idx : -1, &ud);
	const kaio_cb cb = r.cb ? on_complete : nullptr;
	std::unique_ptr<kaio_vec[]> vec;
	if (is_vector(code) && !r.vec_null) {
		vec.reset(new kaio_vec[r.segs.size()]);
		for (size_t i = 0; i < r.segs.size(); i++)
			vec[i] = kaio_vec{r.segs[i].h, r.segs[i].off, r.segs[i].len};
	}
	const char *fn = "";
	Call call(FK_SUBMIT, cp.live ? cp.idx : -1);
	int rc = 0;
	switch (code) {
	case KAIO_OP_READ:
		fn = "kaio_read";
		rc = kaio_read(cp.h, r.fd, r.offset, r.bh, size_t(r.boff), size_t(r.len), cb, ud);
		break;
	case KAIO_OP_WRITE:
		fn = "kaio_write";
		rc = kaio_write(cp.h, r.fd, r.offset, r.bh, size_t(r.boff), size_t(r.len), cb, ud);
		break;
	case KAIO_OP_READV:
		fn = "kaio_readv";
		rc = kaio_readv(cp.h, r.fd, r.offset, vec.get(), r.nvec, cb, ud);
		break;
	case KAIO_OP_WRITEV:
		fn = "kaio_writev";
		rc = kaio_writev(cp.h, r.fd, r.offset, vec.get(), r.nvec, cb, ud);
		break;
	default:
		fn = "kaio_sync";
		rc = kaio_sync(cp.h, r.fd, r.level, cb, ud);
		break;
	}
	call.end();
	vec.reset(); // not retained: ASan reports any later use
	TRACE("  %s(ctx %d, fd %s %d, off %llu, buf %d+%llu len %llu, nvec %u, level %u, %s) = %d "
	      "[verdict %d]\n", fn, cp.idx, kFdNames[r.fdsel], r.fd,
	      static_cast<unsigned long long>(r.offset), r.bidx,
	      static_cast<unsigned long long>(r.boff), static_cast<unsigned long long>(r.len),
	      r.nvec, r.level, r.cb ? "cb" : "event", rc, int(v.kind));
	check_single(rc, v, cp, fn);
	if (rc == 0) {
		after_success(call, fn);
		accept_op(idx);
	} else {
		g_stats.refused++;
	}
}

void act_submit(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	const uint32_t k = s.below(16);
	unsigned n;
	bool null_ops = false;
	if (k == 0) {
		n = 0;
	} else if (k == 1) {
		n = 0x80000000u;
		null_ops = true;
	} else if (k == 2) {
		n = 1;
		null_ops = true;
	} else if (k == 3) {
		n = 60 + s.below(80); // across the library's 64-iocb submission chunks
	} else {
		n = 1 + s.below(kMaxBatch);
	}
	const unsigned build = null_ops ? 0 : n;
	if (g_ops.size() + build + 1 >= kMaxOps)
		return;
	std::vector<Req> reqs(build);
	const bool replicate = k == 3;
	for (Req &r : reqs) {
		if (replicate && &r != &reqs[0]) {
			// One request, many times (without per-write durability:
			// 100 synchronous writes under load take seconds).
			reqs[0].rw_flags &= ~(KAIO_RWF_SYNC | KAIO_RWF_DSYNC);
			r = reqs[0];
			continue;
		}
		static const uint32_t codes[32] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
		                                   3, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 0, 7, 0xffffffffu};
		r.code = codes[s.below(32)];
		if (is_rw(r.code)) {
			gen_rw_args(s, r);
		} else {
			r.fd = pick_fd(s, &r.fdsel);
			r.offset = s.below(8) == 0 ? E.ga * (1 + s.below(8)) : 0;
		}
		r.rw_flags = is_sync(r.code) && s.below(4) ? 0 : gen_rw_flags(s);
		r.ioprio = gen_ioprio(s);
		if (s.below(32) == 0) {
			switch (s.below(3)) {
			case 0: r.reserved32 = 1 + s.below(255); break;
			case 1: r.reserved[0] = 1; break;
			default: r.reserved[1] = uint64_t(1) << 63; break;
			}
		}
		gen_common(s, r);
	}
	std::vector<uint64_t> uds(build);
	std::vector<int> idxs(build);
	std::unique_ptr<kaio_op[]> ops;
	std::vector<std::unique_ptr<kaio_vec[]>> vecs(build);
	if (!null_ops) {
		ops.reset(new kaio_op[build ? build : 1]);
		for (unsigned i = 0; i < build; i++) {
			const Req &r = reqs[i];
			idxs[i] = new_op(r, cp.live ? cp.idx : -1, &uds[i]);
			kaio_op &o = ops[i];
			memset(&o, 0, sizeof o);
			o.op = r.code;
			o.fd = r.fd;
			o.offset = r.offset;
			o.buf_offset = r.boff;
			o.len = r.len;
			o.user_data = uds[i];
			o.buf = r.bh;
			if (is_vector(r.code) && !r.vec_null) {
				vecs[i].reset(new kaio_vec[r.segs.size()]);
				for (size_t j = 0; j < r.segs.size(); j++)
					vecs[i][j] = kaio_vec{r.segs[j].h, r.segs[j].off, r.segs[j].len};
				o.vec = vecs[i].get();
			}
			o.nvec = is_vector(r.code) ? r.nvec : 0;
			o.cb = r.cb ? on_complete : nullptr;
			o.rw_flags = r.rw_flags;
			o.ioprio = r.ioprio;
			o.reserved32 = r.reserved32;
			o.reserved[0] = r.reserved[0];
			o.reserved[1] = r.reserved[1];
		}
	}
	if (g_trace)
		for (unsigned i = 0; i < build; i++) {
			const Req &r = reqs[i];
			fprintf(stderr, "    op %u: code %u fd %s %d off %llu buf %d+%llu len %llu nvec %u "
			        "rw_flags %#x ioprio %#x reserved %u/%llu/%llu %s\n", i, r.code,
			        kFdNames[r.fdsel], r.fd, static_cast<unsigned long long>(r.offset), r.bidx,
			        static_cast<unsigned long long>(r.boff),
			        static_cast<unsigned long long>(r.len), r.nvec, r.rw_flags, r.ioprio,
			        r.reserved32, static_cast<unsigned long long>(r.reserved[0]),
			        static_cast<unsigned long long>(r.reserved[1]), r.cb ? "cb" : "event");
		}
	// Submits reqs[first, first + count) and checks the outcome against the
	// contract, operation by operation; returns the result.
	auto run_batch = [&](unsigned first, unsigned count) -> int {
		const Ctx *c = cp.live ? &g_ctxs[cp.idx] : nullptr;
		unsigned lo = 0, hi = 0;
		Verdict first_refusal;
		bool refused_at_lo = false;
		if (!cp.live || count > INT_MAX || null_ops) {
			refused_at_lo = count != 0 || !cp.live;
			first_refusal.kind = Verdict::REFUSE;
			first_refusal.errs.any = true;
		} else if (c->destroying) {
			if (count > 0) {
				refused_at_lo = true;
				first_refusal = apply_ctx(judge(reqs[first], c), cp, 0);
			} else {
				first_refusal.kind = Verdict::UNKNOWN; // 0, or -ESHUTDOWN
			}
		} else {
			hi = count;
			unsigned i = 0;
			for (; i < count; i++) {
				Verdict v = apply_ctx(judge(reqs[first + i], c), cp, int(i));
				if (v.kind == Verdict::ACCEPT)
					continue;
				if (v.kind == Verdict::REFUSE) {
					hi = i;
					refused_at_lo = true;
					first_refusal = v;
				}
				break;
			}
			lo = i;
		}
		Call call(FK_SUBMIT, cp.live ? cp.idx : -1);
		const int rc = kaio_submit(cp.h, ops ? ops.get() + first : nullptr, count);
		call.end();
		TRACE("  kaio_submit(ctx %d, ops+%u, n %u%s) = %d [expected %u..%u%s]\n", cp.idx, first,
		      count, null_ops ? ", NULL" : "", rc, lo, hi,
		      refused_at_lo ? ", then refusal" : "");
		if (rc < 0) {
			after_failure(rc, "kaio_submit");
			CHECK(lo == 0 && (count > 0 || (c && c->destroying) || !cp.live),
			      "kaio_submit refused (%d, %s) a batch whose first %u operation(s) are valid",
			      rc, kaio_strerror(rc), lo);
			if (refused_at_lo && first_refusal.kind == Verdict::REFUSE)
				check_refusal_matches(rc, first_refusal, "kaio_submit");
			if (rc == -EAGAIN && cp.live && !in_callback() && !c->destroying)
				CHECK(c->pending() > 0, "kaio_submit -EAGAIN with nothing in flight or queued");
			g_stats.refused += null_ops ? 0 : count;
			return rc;
		}
		CHECK(cp.live, "kaio_submit accepted operations on an invalid context");
		CHECK(unsigned(rc) <= count, "kaio_submit returned %d for %u operations", rc, count);
		CHECK(count == 0 || rc > 0, "kaio_submit returned 0 for %u operations (should be -errno)",
		      count);
		CHECK(unsigned(rc) >= lo && unsigned(rc) <= hi,
		      "kaio_submit accepted %d operation(s); the contract says %u..%u", rc, lo, hi);
		// A partial batch is a success: the refusal that ended it must not
		// show in kaio_last_error() (regressions/partial-submit-*).
		if (!(unsigned(rc) < count && known_bug("submit-last-error")))
			after_success(call, "kaio_submit");
		for (int i = 0; i < rc; i++)
			accept_op(idxs[first + unsigned(i)]);
		g_stats.refused += count - unsigned(rc);
		return rc;
	};
	const int rc = run_batch(0, n);
	// "Resubmitting ops + k reports why ops[k] was refused."
	if (rc > 0 && unsigned(rc) < n && s.below(2) == 0)
		run_batch(unsigned(rc), n - unsigned(rc));
	ops.reset(); // nothing passed by pointer is retained
	vecs.clear();
}

void act_poll(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	unsigned max;
	bool null_events = false;
	switch (s.below(16)) {
	case 0: max = 0; null_events = true; break;
	case 1: max = 1 + s.below(4); null_events = true; break;
	case 2: max = 0x80000000u + s.below(5); break;
	case 3: max = 0; break;
	default: max = 1 + s.below(64); break;
	}
	do_poll(cp, max, null_events);
}

void act_wait(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	unsigned max, min;
	bool null_events = false;
	switch (s.below(16)) {
	case 0: max = 0; null_events = true; break;
	case 1: max = 1 + s.below(4); null_events = true; break;
	case 2: max = 0x80000000u; break;
	case 3: max = 0; break;
	default: max = 1 + s.below(64); break;
	}
	switch (s.below(16)) {
	case 0: min = 0; break;
	case 1: min = 1000; break;
	case 2: min = 0x80000001u; break;
	default: min = 1 + s.below(8); break;
	}
	int timeout;
	const uint32_t t = s.below(16);
	if (t < 6)
		timeout = 0;
	else if (t < 10)
		timeout = 1;
	else if (t < 12)
		timeout = 2;
	else if (t == 12)
		timeout = 10;
	else if (t == 13)
		timeout = -1;
	else if (t == 14)
		timeout = -2;
	else
		timeout = INT_MIN;
	if (in_callback() && timeout > 2)
		timeout = 2;
	if (timeout == -1) {
		// Only where it must return: enough deliveries are certain.
		bool safe = !in_callback() && cp.live && max <= INT_MAX && min <= INT_MAX &&
		            !(null_events && max);
		if (safe) {
			const Ctx &c = g_ctxs[cp.idx];
			const unsigned reachable =
				unsigned(c.pending_cb) + std::min<unsigned>(max, unsigned(c.pending_ev));
			safe = min <= reachable;
		}
		if (!safe)
			timeout = in_callback() ? 1 : 10;
	}
	do_wait(cp, min, max, timeout, null_events);
}

void act_destroy(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	if (cp.live && !in_callback() && s.below(4) == 0)
		drain(cp.idx);
	do_destroy(cp);
}

// fork(): in the child every call on the parent's contexts is -ECHILD
// (capacity and inflight 0), destroy returns 0 and runs no release function
// and no callback.  The child reports through its exit status.
void act_fork()
{
	fflush(stderr);
	const pid_t pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		g_in_child = true;
		g_no_nested = true;
		for (int i = 0; i < g_nctxs; i++) {
			if (!g_ctxs[i].live)
				continue;
			kaio_ctx *h = g_ctxs[i].h;
			int live_buf = -1;
			for (int b = 0; b < g_nbufs; b++)
				if (buf_live(b) && g_bufs[b].len >= E.ga && g_bufs[b].kind == BK_ALLOC)
					live_buf = b;
			if (kaio_poll(h, nullptr, 0) != -ECHILD)
				_exit(10);
			if (kaio_wait(h, nullptr, 1, 0, 0) != -ECHILD)
				_exit(11);
			if (kaio_ctx_fd(h) != -ECHILD)
				_exit(12);
			if (kaio_ctx_wake(h) != -ECHILD)
				_exit(13);
			if (kaio_ctx_capacity(h) != 0 || kaio_ctx_inflight(h) != 0)
				_exit(14);
			if (live_buf >= 0 &&
			    kaio_read(h, E.fd[FD_DIRECT_RW], 0, g_bufs[live_buf].h, 0, E.ga, on_complete, 1) !=
			            -ECHILD)
				_exit(15);
			if (kaio_sync(h, E.fd[FD_DIRECT_RW], KAIO_SYNC_FULL, nullptr, 2) != -ECHILD)
				_exit(16);
			if (kaio_ctx_destroy(h) != 0)
				_exit(17);
		}
		_exit(0);
	}
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	TRACE("  fork: child exit status %#x\n", status);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "in a forked child, a call on the parent's context misbehaved (child status %#x: "
	      "exit 10-17 = poll, wait, ctx_fd, wake, capacity/inflight, read, sync, destroy; 40 = "
	      "destroy ran a release function; a signal = crash)", status);
}

void act_drain(Src &s)
{
	if (s.below(8) == 0 && !in_callback()) {
		act_fork();
		return;
	}
	CtxPick cp = pick_ctx(s, -1);
	if (cp.live)
		drain(cp.idx);
}

void act_wake(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	Call call(FK_OTHER);
	const int rc = kaio_ctx_wake(cp.h);
	call.end();
	TRACE("  kaio_ctx_wake(ctx %d) = %d\n", cp.idx, rc);
	if (cp.live && g_ctxs[cp.idx].destroying) {
		// From a callback that the destroy's drain runs: kaio_ctx_wake(3)
		// refuses while destroy runs (it wakes the waiters itself).
		CHECK(rc == -ESHUTDOWN, "kaio_ctx_wake during kaio_ctx_destroy: %d, not -ESHUTDOWN", rc);
		after_failure(rc, "kaio_ctx_wake");
	} else if (cp.live) {
		CHECK(rc == 0, "kaio_ctx_wake on a live context: %d", rc);
		after_success(call, "kaio_ctx_wake");
		g_ctxs[cp.idx].wakes++;
	} else {
		CHECK(rc < 0, "kaio_ctx_wake accepted an invalid context");
		after_failure(rc, "kaio_ctx_wake");
	}
}

void act_forget(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	int sel;
	int fd = pick_fd(s, &sel);
	if (cp.live && s.below(8) == 0)
		fd = g_ctxs[cp.idx].evfd;
	Call call(FK_OTHER);
	const int rc = kaio_ctx_forget_fd(cp.h, fd);
	call.end();
	TRACE("  kaio_ctx_forget_fd(ctx %d, %d) = %d\n", cp.idx, fd, rc);
	if (rc < 0) {
		after_failure(rc, "kaio_ctx_forget_fd");
		CHECK(!cp.live || fd < 0, "kaio_ctx_forget_fd(%d) on a live context: %d", fd, rc);
		if (cp.live)
			CHECK(rc == -EBADF, "kaio_ctx_forget_fd(%d): %d, not -EBADF", fd, rc);
	} else {
		CHECK(rc == 0 && cp.live && fd >= 0, "kaio_ctx_forget_fd(%d) returned %d", fd, rc);
		after_success(call, "kaio_ctx_forget_fd");
	}
}

void act_align(Src &s)
{
	int sel;
	const int fd = pick_fd(s, &sel);
	const uint32_t which = s.below(4);
	uint32_t mem = 0xdeadbeef, off = 0xdeadbeef;
	Call call(FK_OTHER);
	const int rc = kaio_fd_alignment(fd, which & 1 ? nullptr : &mem, which & 2 ? nullptr : &off);
	call.end();
	TRACE("  kaio_fd_alignment(%s %d) = %d (%u, %u)\n", kFdNames[sel], fd, rc, mem, off);
	const FdProps &p = E.props[sel];
	if (rc < 0) {
		after_failure(rc, "kaio_fd_alignment");
		CHECK(mem == 0xdeadbeef && off == 0xdeadbeef, "kaio_fd_alignment failed but wrote output");
		CHECK(fd < 0 || (p.known && p.bad), "kaio_fd_alignment(%d, %s) failed: %d", fd,
		      kFdNames[sel], rc);
		CHECK(rc == -EBADF, "kaio_fd_alignment(%d): %d, not -EBADF", fd, rc);
		return;
	}
	CHECK(rc == 0, "kaio_fd_alignment returned %d", rc);
	CHECK(!(p.known && p.bad), "kaio_fd_alignment accepted a bad fd %d", fd);
	after_success(call, "kaio_fd_alignment");
	uint32_t want_mem = 0, want_off = 0;
	if (p.known && p.direct) {
		want_mem = E.mem_align;
		want_off = E.off_align;
	}
	if (!p.known) {
		// the morph fd: the file with or without O_DIRECT, or not a file
		if (!(which & 1) && mem != 0)
			want_mem = E.mem_align;
		if (!(which & 2) && off != 0)
			want_off = E.off_align;
	}
	if (!(which & 1))
		CHECK(mem == want_mem, "kaio_fd_alignment(%s): memory alignment %u, expected %u",
		      kFdNames[sel], mem, want_mem);
	else
		CHECK(mem == 0xdeadbeef, "kaio_fd_alignment wrote through a NULL pointer?");
	if (!(which & 2))
		CHECK(off == want_off, "kaio_fd_alignment(%s): offset alignment %u, expected %u",
		      kFdNames[sel], off, want_off);
}

void act_info(Src &s, int prefer)
{
	CtxPick cp = pick_ctx(s, prefer);
	switch (s.below(6)) {
	case 0: {
		Call call(FK_OTHER);
		const unsigned cap = kaio_ctx_capacity(cp.h);
		call.end();
		if (cp.live) {
			CHECK(cap == g_ctxs[cp.idx].cap, "kaio_ctx_capacity %u, created with %u", cap,
			      g_ctxs[cp.idx].cap);
			after_success(call, "kaio_ctx_capacity");
		} else {
			CHECK(cap == 0, "kaio_ctx_capacity of an invalid context: %u", cap);
			after_silent_refusal("kaio_ctx_capacity");
		}
		break;
	}
	case 1: {
		Call call(FK_OTHER);
		const unsigned inf = kaio_ctx_inflight(cp.h);
		call.end();
		if (cp.live) {
			const Ctx &c = g_ctxs[cp.idx];
			CHECK(inf <= c.cap, "inflight %u above capacity %u", inf, c.cap);
			if (!in_callback())
				CHECK(inf == unsigned(c.pending()), "kaio_ctx_inflight %u, but %d accepted "
				      "operations are undelivered", inf, c.pending());
			after_success(call, "kaio_ctx_inflight");
		} else {
			CHECK(inf == 0, "kaio_ctx_inflight of an invalid context: %u", inf);
			after_silent_refusal("kaio_ctx_inflight");
		}
		break;
	}
	case 2: {
		Call call(FK_OTHER);
		const int fd = kaio_ctx_fd(cp.h);
		call.end();
		if (cp.live) {
			CHECK(fd == g_ctxs[cp.idx].evfd, "kaio_ctx_fd changed from %d to %d",
			      g_ctxs[cp.idx].evfd, fd);
			after_success(call, "kaio_ctx_fd");
		} else {
			CHECK(fd < 0, "kaio_ctx_fd of an invalid context: %d", fd);
			after_failure(fd, "kaio_ctx_fd");
		}
		break;
	}
	case 3: {
		static const int errs[] = {0, 1, -1, EINVAL, -EINVAL, INT_MIN, INT_MAX, 4095, -4096,
		                           ESHUTDOWN, -EAGAIN, 133, -134, 100000};
		int e = s.below(2) ? errs[s.below(sizeof errs / sizeof errs[0])] : int(s.u32());
		const char *t = kaio_strerror(e);
		CHECK(t && t[0], "kaio_strerror(%d) is NULL or empty", e);
		break;
	}
	case 4: {
		char want[64];
		snprintf(want, sizeof want, "%d.%d.%d", KAIO_VERSION_MAJOR, KAIO_VERSION_MINOR,
		         KAIO_VERSION_PATCH);
		CHECK(strcmp(kaio_version(), want) == 0, "kaio_version \"%s\", header says %s",
		      kaio_version(), want);
		break;
	}
	default: {
		const char *m = kaio_last_error();
		CHECK(m != nullptr, "kaio_last_error() is NULL");
		break;
	}
	}
}

void act_morph(Src &s)
{
	const uint32_t k = s.below(8);
	if (k == 7) {
		// Flip O_DIRECT behind the caches' back (own description only).
		if (!E.morph_fresh)
			return;
		const int fl = fcntl(E.fd[FD_MORPH], F_GETFL);
		if (fl >= 0)
			(void)fcntl(E.fd[FD_MORPH], F_SETFL, fl ^ O_DIRECT);
		TRACE("  morph: toggle O_DIRECT\n");
		return;
	}
	TRACE("  morph: kind %u\n", k);
	morph_to(int(k));
}

enum Act {
	A_CREATE, A_DESTROY, A_ALLOC, A_WRAP, A_REF, A_UNREF, A_READ, A_WRITE, A_READV, A_WRITEV,
	A_SYNC, A_SUBMIT, A_POLL, A_WAIT, A_WAKE, A_FORGET, A_ALIGN, A_INFO, A_MORPH, A_PROBE,
	A_DRAIN, A_REF_EVBUF
};

void run_action(Src &s, Act a, int prefer, int op_idx)
{
	switch (a) {
	case A_CREATE: act_create(s); break;
	case A_DESTROY: act_destroy(s, prefer); break;
	case A_ALLOC: act_alloc(s); break;
	case A_WRAP: act_wrap(s); break;
	case A_REF: act_ref(s); break;
	case A_UNREF: act_unref(s); break;
	case A_READ: act_single(s, KAIO_OP_READ, prefer); break;
	case A_WRITE: act_single(s, KAIO_OP_WRITE, prefer); break;
	case A_READV: act_single(s, KAIO_OP_READV, prefer); break;
	case A_WRITEV: act_single(s, KAIO_OP_WRITEV, prefer); break;
	case A_SYNC: act_single(s, KAIO_OP_FSYNC, prefer); break;
	case A_SUBMIT: act_submit(s, prefer); break;
	case A_POLL: act_poll(s, prefer); break;
	case A_WAIT: act_wait(s, prefer); break;
	case A_WAKE: act_wake(s, prefer); break;
	case A_FORGET: act_forget(s, prefer); break;
	case A_ALIGN: act_align(s); break;
	case A_INFO: act_info(s, prefer); break;
	case A_MORPH: act_morph(s); break;
	case A_PROBE: act_probe(s); break;
	case A_DRAIN: act_drain(s); break;
	case A_REF_EVBUF: {
		// Keep the delivered buffer beyond the callback.
		const Op &op = g_ops[size_t(op_idx)];
		if (is_rw(op.code) && !is_vector(op.code) && buf_live(op.buf))
			ref_buf(op.buf);
		break;
	}
	}
}

// Nested actions from a callback, seeded by the operation.
void run_nested(int op_idx)
{
	if (g_no_nested || g_nested_budget <= 0 || callback_depth() > kMaxCallbackDepth)
		return;
	const Op &op = g_ops[size_t(op_idx)];
	RandSrc rs((uint64_t(op.plan) << 32) ^ (uint64_t(op_idx) * 0x9e3779b97f4a7c15ull) ^ op.ud);
	if (op.plan < 160)
		return; // most callbacks just return
	static const Act kNested[16] = {A_REF_EVBUF, A_REF_EVBUF, A_UNREF, A_READ, A_READ,
	                                A_WRITE, A_READV, A_SUBMIT, A_SYNC, A_POLL, A_WAIT,
	                                A_DESTROY, A_WAKE, A_INFO, A_ALLOC, A_MORPH};
	const int ctx = op.ctx;
	const unsigned n = 1 + rs.below(2);
	for (unsigned i = 0; i < n && g_nested_budget > 0; i++) {
		g_nested_budget--;
		g_stats.nested++;
		const Act a = kNested[rs.below(16)];
		TRACE(" [callback of op %d, depth %d] action %d\n", op_idx, callback_depth(), int(a));
		run_action(rs, a, ctx, op_idx);
	}
}

// ---- whole-model checks -------------------------------------------------------------------

void check_world()
{
	for (int i = 0; i < g_nctxs; i++) {
		const Ctx &c = g_ctxs[i];
		if (!c.live)
			continue;
		const unsigned inf = kaio_ctx_inflight(c.h);
		CHECK(inf <= c.cap, "context %d: inflight %u above capacity %u", i, inf, c.cap);
		CHECK(inf == unsigned(c.pending()),
		      "context %d: kaio_ctx_inflight %u, but %d accepted operations are undelivered", i,
		      inf, c.pending());
	}
	for (int i = 0; i < g_nbufs; i++) {
		Buf &b = g_bufs[i];
		if (b.dead)
			continue;
		CHECK(b.hrefs >= 0 && b.orefs >= 0, "harness: negative reference count on buffer %d", i);
		const long total = b.hrefs + b.orefs;
		if (total > 0) {
			CHECK(b.releases == 0,
			      "buffer %d: release function ran while %ld reference(s) remain (%ld held by "
			      "undelivered operations)", i, total, b.orefs);
			CHECK(kaio_buf_len(b.h) == b.len && kaio_buf_data(b.h) == b.data,
			      "buffer %d died while %ld reference(s) remain (%ld held by undelivered "
			      "operations)", i, total, b.orefs);
		} else {
			if (b.kind == BK_WRAP_REL)
				CHECK(b.releases == 1,
				      "buffer %d: the last reference went but the release function ran %d "
				      "times", i, b.releases);
			CHECK(kaio_buf_data(b.h) == nullptr && kaio_buf_len(b.h) == 0,
			      "buffer %d is still live although every reference was dropped (leaked "
			      "reference)", i);
			b.dead = true;
		}
	}
}

void reset_state()
{
	// Records are reached by index and references to them live across
	// nested calls: no reallocation in the middle of an input.
	g_ops.reserve(kMaxOps);
	g_frames.reserve(256);
	g_nbufs = 0;
	g_nctxs = 0;
	g_ops.clear();
	g_frames.clear();
	g_nested_budget = kMaxNested;
	g_no_nested = false;
}

void finish(bool drain_first)
{
	snprintf(g_action, sizeof g_action, "end of input: %s and destroy every context",
	         drain_first ? "drain" : "no drain");
	g_no_nested = true;
	for (int i = 0; i < g_nctxs; i++) {
		if (!g_ctxs[i].live)
			continue;
		if (drain_first) {
			drain(i);
			for (const Op &op : g_ops)
				CHECK(op.ctx != i || op.st != OS_PENDING,
				      "user_data %#llx still undelivered after a drain",
				      static_cast<unsigned long long>(op.ud));
		}
		CtxPick cp;
		cp.idx = i;
		cp.h = g_ctxs[i].h;
		cp.live = true;
		CHECK(do_destroy(cp) == 0, "kaio_ctx_destroy failed at the end");
	}
	for (const Op &op : g_ops) {
		CHECK(op.st != OS_PENDING, "user_data %#llx neither delivered nor discarded",
		      static_cast<unsigned long long>(op.ud));
		if (op.cb && op.st != OS_REFUSED)
			CHECK(op.st == OS_DELIVERED, "callback of user_data %#llx never ran",
			      static_cast<unsigned long long>(op.ud));
	}
	snprintf(g_action, sizeof g_action, "end of input: drop the harness's references");
	for (int i = 0; i < g_nbufs; i++)
		while (g_bufs[i].hrefs > 0)
			unref_buf(i);
	check_world();
	for (int i = 0; i < g_nbufs; i++) {
		Buf &b = g_bufs[i];
		CHECK(b.dead, "buffer %d outlived the input", i);
		if (b.kind == BK_WRAP_REL) {
			CHECK(b.releases == 1, "buffer %d: release ran %d times", i, b.releases);
			const unsigned char *p = static_cast<const unsigned char *>(b.data);
			for (size_t j = 0; j < b.len; j++)
				CHECK(p[j] == kReleasedByte,
				      "buffer %d: byte %zu changed after its release function ran (the "
				      "kernel still wrote into it)", i, j);
		}
		free(b.mem);
		b.mem = nullptr;
	}
	// Put the environment back: file size, pipe contents, the morph fd.
	struct stat st;
	if (fstat(E.fd[FD_BUF_RW], &st) == 0 && uint64_t(st.st_size) != kFileSize)
		(void)ftruncate(E.fd[FD_BUF_RW], off_t(kFileSize));
	char sink[4096];
	while (read(E.fd[FD_PIPE_R], sink, sizeof sink) > 0) {
	}
	morph_to(M_DIRECT_RW);
	// Every context closed its descriptors: no eventfd (the harness has
	// none) and no sysfs file may stay open.  (libFuzzer and LeakSanitizer
	// keep descriptors of their own, so the lowest free number proves
	// nothing.)
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		const int self = dirfd(d);
		while (struct dirent *de = readdir(d)) {
			const int fd = atoi(de->d_name);
			if (de->d_name[0] == '.' || fd == self)
				continue;
			char link[64], target[256];
			snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
			const ssize_t n = readlink(link, target, sizeof target - 1);
			if (n <= 0)
				continue;
			target[n] = 0;
			CHECK(!strstr(target, "eventfd") && strncmp(target, "/sys/", 5) != 0,
			      "descriptor leak: fd %d (%s) is open after every context was destroyed", fd,
			      target);
		}
		closedir(d);
	}
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***)
{
	env_init();
	atexit(print_stats);
	return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!E.ready)
		env_init();
	hook_signals();
	g_stats.inputs++;
	reset_state();
	ByteSrc src(data, size);
	const uint8_t hdr = src.u8();
	if (!(hdr & 0x80)) {
		// A context and a buffer to start with, so most inputs do I/O.
		snprintf(g_action, sizeof g_action, "setup");
		kaio_ctx *h = nullptr;
		const unsigned cap = 1 + (hdr & 15), flags = (hdr >> 4) & 3;
		if (kaio_ctx_create(&h, cap, flags) == 0) {
			Ctx &c = g_ctxs[g_nctxs++];
			c = Ctx();
			c.h = h;
			c.cap = cap;
			c.flags = flags;
			c.live = true;
			c.evfd = kaio_ctx_fd(h);
		}
		ByteSrc none(nullptr, 0);
		act_alloc(none, 65536);
	}
	static const Act kTop[32] = {
		A_CREATE, A_CREATE, A_DESTROY, A_ALLOC, A_ALLOC, A_WRAP, A_WRAP, A_REF, A_UNREF,
		A_UNREF, A_READ, A_READ, A_READ, A_WRITE, A_WRITE, A_READV, A_WRITEV, A_SYNC,
		A_SUBMIT, A_SUBMIT, A_SUBMIT, A_POLL, A_POLL, A_WAIT, A_WAIT, A_WAKE, A_FORGET,
		A_ALIGN, A_INFO, A_MORPH, A_PROBE, A_DRAIN};
	for (int n = 0; n < kMaxActions && !src.exhausted(); n++) {
		const Act a = kTop[src.u8() % 32];
		snprintf(g_action, sizeof g_action, "action %d (kind %d)", n, int(a));
		TRACE("action %d: kind %d\n", n, int(a));
		run_action(src, a, -1, -1);
		check_world();
	}
	finish(hdr & 0x40);
	return 0;
}
