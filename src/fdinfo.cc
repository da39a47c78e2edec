#include "fdinfo.h"

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <linux/fs.h>
#include <new>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "errors.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x2000U
#endif

namespace kaio {
namespace {

// glibc 2.36's struct statx predates the DIO fields; the kernel's layout
// puts stx_dio_mem_align and stx_dio_offset_align at byte 0x98 and 0x9c.
constexpr size_t kDioMemAlignOffset = 0x98;
constexpr size_t kDioOffsetAlignOffset = 0x9c;
static_assert(sizeof(struct statx) >= kDioOffsetAlignOffset + 4, "struct statx too small");

uint32_t read_u32_at(const struct statx &st, size_t off)
{
	uint32_t v;
	memcpy(&v, reinterpret_cast<const char *>(&st) + off, sizeof v);
	return v;
}

bool power_of_two(uint32_t v)
{
	return v && !(v & (v - 1));
}

// Logical block size of the block device major:minor (or of the whole
// disk when it is a partition), from sysfs; 0 if unknown.
uint32_t sysfs_logical_block_size(unsigned maj, unsigned min)
{
	for (int whole_disk = 0; whole_disk < 2; whole_disk++) {
		char path[128];
		snprintf(path, sizeof path, "/sys/dev/block/%u:%u/%squeue/logical_block_size", maj, min,
		         whole_disk ? "../" : "");
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		char text[32] = {};
		ssize_t n = read(fd, text, sizeof text - 1);
		close(fd);
		if (n > 0) {
			unsigned long v = strtoul(text, nullptr, 10);
			if (v && v <= (1u << 20) && power_of_two(static_cast<uint32_t>(v)))
				return static_cast<uint32_t>(v);
		}
	}
	return 0;
}

// Alignment for an O_DIRECT fd: statx's STATX_DIOALIGN when the kernel
// reports it, else the logical block size of the device (BLKSSZGET for a
// block device, sysfs for the device holding a regular file), else none.
void learn_alignment(int fd, const struct statx *st, unsigned maj, unsigned min, FdInfo *out)
{
	if (st && (st->stx_mask & STATX_DIOALIGN)) {
		uint32_t mem = read_u32_at(*st, kDioMemAlignOffset);
		uint32_t off = read_u32_at(*st, kDioOffsetAlignOffset);
		if (power_of_two(mem) && power_of_two(off)) {
			out->mem_align = mem;
			out->off_align = off;
			return;
		}
		// Reported as 0: this file cannot do direct I/O at all.  Enforce
		// nothing; the kernel will refuse it.
		if (mem == 0 && off == 0)
			return;
	}
	uint32_t lbs = 0;
	if (out->kind == FdKind::kBlock) {
		int size = 0;
		if (ioctl(fd, BLKSSZGET, &size) == 0 && size > 0 &&
		    power_of_two(static_cast<uint32_t>(size)))
			lbs = static_cast<uint32_t>(size);
	} else if (out->kind == FdKind::kRegular) {
		lbs = sysfs_logical_block_size(maj, min);
	}
	out->mem_align = lbs;
	out->off_align = lbs;
}

} // namespace

int learn_fd(int fd, FdInfo *out, const char *what)
{
	*out = FdInfo{};
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return fail(EBADF, "%s: fd %d is not an open file descriptor", what, fd);
	int acc = fl & O_ACCMODE;
	out->direct = (fl & O_DIRECT) != 0;
	out->readable = acc == O_RDONLY || acc == O_RDWR;
	out->writable = acc == O_WRONLY || acc == O_RDWR;
	if (fl & O_PATH)
		out->readable = out->writable = false;

	struct statx st;
	memset(&st, 0, sizeof st);
	unsigned want = STATX_TYPE | STATX_MODE;
	if (out->direct)
		want |= STATX_DIOALIGN;
	unsigned mode, maj, min;
	const bool have_statx = statx(fd, "", AT_EMPTY_PATH, want, &st) == 0;
	if (have_statx) {
		mode = st.stx_mode;
		maj = st.stx_dev_major;
		min = st.stx_dev_minor;
	} else {
		// No statx (an old kernel, a seccomp filter): fstat knows enough.
		struct stat sb;
		if (fstat(fd, &sb) != 0)
			return 0; // nothing more to learn: the kernel decides
		mode = sb.st_mode;
		maj = major(sb.st_dev);
		min = minor(sb.st_dev);
	}
	out->kind_bits = mode & S_IFMT;
	switch (out->kind_bits) {
	case S_IFREG: out->kind = FdKind::kRegular; break;
	case S_IFBLK: out->kind = FdKind::kBlock; break;
	case S_IFDIR: out->kind = FdKind::kDirectory; break;
	default: out->kind = FdKind::kOther; break;
	}
	if (out->direct)
		learn_alignment(fd, have_statx ? &st : nullptr, maj, min, out);
	return 0;
}

const char *fd_kind_name(const FdInfo &info)
{
	switch (info.kind_bits) {
	case S_IFREG: return "regular file";
	case S_IFBLK: return "block device";
	case S_IFDIR: return "directory";
	case S_IFCHR: return "character device";
	case S_IFIFO: return "pipe";
	case S_IFSOCK: return "socket";
	case S_IFLNK: return "symbolic link";
	default: return "file of unknown kind";
	}
}

// ---- cache ------------------------------------------------------------------

namespace {
unsigned log2_plus1(uint32_t v)
{
	return v ? 32u - static_cast<unsigned>(__builtin_clz(v)) : 0u;
}
uint32_t from_log2_plus1(unsigned v)
{
	return v ? 1u << (v - 1) : 0u;
}
} // namespace

FdCache::~FdCache()
{
	for (auto &c : chunks_)
		delete[] c.load(std::memory_order_relaxed);
}

uint64_t FdCache::pack(const FdInfo &info) const
{
	uint64_t v = kValid | (info.direct ? kDirect : 0) | (info.readable ? kReadable : 0) |
	             (info.writable ? kWritable : 0) | (uint64_t(info.kind) << kKindShift) |
	             (uint64_t((info.kind_bits >> 12) & 0xf) << kFmtShift) |
	             (uint64_t(log2_plus1(info.mem_align)) << kMemLogShift) |
	             (uint64_t(log2_plus1(info.off_align)) << kOffLogShift);
	const bool rw_kind = info.kind == FdKind::kRegular || info.kind == FdKind::kBlock;
	const uint32_t mem = info.direct ? info.mem_align : 0; // buffered: no alignment
	const uint32_t off = info.direct ? info.off_align : 0;
	if (rw_kind && (info.direct || allow_buffered_) && mem <= 65536 && off <= 65536) {
		v |= uint64_t(mem ? mem - 1 : 0) << kMemMaskShift;
		v |= uint64_t(off ? off - 1 : 0) << kOffMaskShift;
		if (info.readable)
			v |= kFastRead;
		if (info.writable)
			v |= kFastWrite;
	}
	return v;
}

void FdCache::unpack(uint64_t v, FdInfo *out)
{
	out->direct = v & kDirect;
	out->readable = v & kReadable;
	out->writable = v & kWritable;
	out->kind = static_cast<FdKind>((v >> kKindShift) & 0xf);
	out->kind_bits = uint32_t((v >> kFmtShift) & 0xf) << 12;
	out->mem_align = from_log2_plus1((v >> kMemLogShift) & 0xff);
	out->off_align = from_log2_plus1((v >> kOffLogShift) & 0xff);
}

std::atomic<uint64_t> *FdCache::entry(int fd, bool create)
{
	if (fd < 0 || fd >= kChunk * kChunk)
		return nullptr;
	auto &top = chunks_[fd >> kChunkBits];
	std::atomic<uint64_t> *chunk = top.load(std::memory_order_acquire);
	if (!chunk) {
		if (!create)
			return nullptr;
		auto *fresh = new (std::nothrow) std::atomic<uint64_t>[kChunk]();
		if (!fresh)
			return nullptr; // uncached: learnt every time
		if (top.compare_exchange_strong(chunk, fresh, std::memory_order_acq_rel))
			chunk = fresh;
		else
			delete[] fresh; // another thread won; chunk holds its table
	}
	return &chunk[fd & (kChunk - 1)];
}

int FdCache::refresh(int fd, FdInfo *out, const char *what)
{
	int rc = learn_fd(fd, out, what);
	std::atomic<uint64_t> *slot = entry(fd, rc == 0);
	if (slot)
		slot->store(rc == 0 ? pack(*out) : 0, std::memory_order_release);
	return rc;
}

void FdCache::forget(int fd)
{
	std::atomic<uint64_t> *slot = entry(fd, false);
	if (slot)
		slot->store(0, std::memory_order_release);
}

} // namespace kaio
