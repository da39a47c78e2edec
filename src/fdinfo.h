// What the library needs to know about a file descriptor before handing it
// to kernel AIO (its O_DIRECT flag, kind, access mode and direct-I/O
// alignment), learnt with a few syscalls and cached per context in a
// lock-free table so the submit path pays one atomic load.
#pragma once

#include <atomic>
#include <cstdint>

#include "kaio.h"

namespace kaio {

enum class FdKind : uint8_t { kOther = 0, kRegular, kBlock, kDirectory };

struct FdInfo {
	bool direct = false;    // opened with O_DIRECT
	bool readable = false;
	bool writable = false;
	FdKind kind = FdKind::kOther;
	uint32_t mem_align = 0; // 0: unknown (the kernel decides)
	uint32_t off_align = 0;
	uint32_t kind_bits = 0; // st_mode & S_IFMT, for messages
};

// Learns fd's properties: 0, or -EBADF (last error set, its sentence begun
// with what: the caller's function or operation) for a bad fd.
int learn_fd(int fd, FdInfo *out, const char *what);

// "regular file", "pipe", "socket", ... for messages.
const char *fd_kind_name(const FdInfo &info);

// Per-context cache, indexed by fd number: two levels of 1024 entries,
// covering fds below 2^20 (others are learnt on every call).
class FdCache {
public:
	FdCache() = default;
	~FdCache();
	FdCache(const FdCache &) = delete;
	FdCache &operator=(const FdCache &) = delete;

	// Cached info for fd, or learns and caches it.  0 or -errno (what names
	// the operation in the message).
	int get(int fd, FdInfo *out, const char *what)
	{
		const uint64_t v = peek(fd);
		if (v & kValid) {
			unpack(v, out);
			return 0;
		}
		return refresh(fd, out, what);
	}

	// The packed cached word for fd (see pack()), or 0 when not cached.
	// For the submit fast path: a word is only ever used to accept.
	uint64_t peek(int fd) const
	{
		if (static_cast<unsigned>(fd) >= unsigned(kChunk * kChunk))
			return 0;
		const std::atomic<uint64_t> *chunk =
			chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
		return chunk ? chunk[fd & (kChunk - 1)].load(std::memory_order_acquire) : 0;
	}
	// The packed word's layout.  kFastRead/kFastWrite (bits KAIO_OP_READ
	// and KAIO_OP_WRITE) say that a read/write on the fd needs only the
	// alignment masks checked (a regular file or block device, open for
	// that, O_DIRECT or buffered I/O allowed, alignments <= 64 KiB).
	static constexpr uint64_t kValid = 1, kFastRead = 2, kFastWrite = 4, kDirect = 8,
	                          kReadable = 16, kWritable = 32;
	static constexpr unsigned kKindShift = 6;      // 4 bits: FdKind
	static constexpr unsigned kFmtShift = 10;      // 4 bits: st_mode >> 12
	static constexpr unsigned kMemMaskShift = 16;  // 16 bits: fast-path masks
	static constexpr unsigned kOffMaskShift = 32;
	static constexpr unsigned kMemLogShift = 48;   // 8 bits each: log2 + 1
	static constexpr unsigned kOffLogShift = 56;
	static_assert(KAIO_OP_READ == 1 && KAIO_OP_WRITE == 2, "fast bits are 1 << op");

	// Whether buffered (non-O_DIRECT) fds are accepted: set once, before use.
	void set_allow_buffered(bool allow) { allow_buffered_ = allow; }

	// Re-learns fd (never trusting the cache) and caches the answer.
	int refresh(int fd, FdInfo *out, const char *what);
	void forget(int fd);

private:
	static constexpr int kChunkBits = 10;
	static constexpr int kChunk = 1 << kChunkBits;

	std::atomic<uint64_t> *entry(int fd, bool create);
	static void unpack(uint64_t v, FdInfo *out);

	uint64_t pack(const FdInfo &info) const;
	std::atomic<std::atomic<uint64_t> *> chunks_[kChunk] = {};
	bool allow_buffered_ = false;
};

} // namespace kaio
