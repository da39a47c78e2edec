/*
 * kaio.h - libkaio: kernel asynchronous I/O on O_DIRECT files, made safe.
 *
 * The one public header of libkaio.  Plain C (C99 and later), usable from
 * C++, and from any FFI (ctypes, cgo): no static inline functions, no enum
 * type in a signature, structs of fixed-width fields with reserved words.
 *
 * Every function that can fail returns an int: >= 0 on success, -errno on
 * failure; kaio_last_error() then explains the failure in one sentence.
 * A failed call changes nothing.  See kaio(7) and the man3 pages.
 */
#ifndef KAIO_H
#define KAIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#if defined(KAIO_BUILDING_LIBRARY) && defined(__GNUC__)
#define KAIO_EXPORT __attribute__((visibility("default")))
#else
#define KAIO_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define KAIO_VERSION_MAJOR 1
#define KAIO_VERSION_MINOR 0
#define KAIO_VERSION_PATCH 0

/* ---- Errors and version ------------------------------------------------ */

/* Text for err (negative or positive errno, or 0).  Never NULL. */
KAIO_EXPORT const char *kaio_strerror(int err);
/* The calling thread's explanation of the last failure of a kaio function,
 * or "" when there was none.  Valid until the thread's next kaio call. */
KAIO_EXPORT const char *kaio_last_error(void);
/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
KAIO_EXPORT const char *kaio_version(void);

/* ---- Context: a bounded submission queue -------------------------------- */

typedef struct kaio_ctx kaio_ctx;

/* kaio_ctx_create flags */
#define KAIO_CTX_ALLOW_BUFFERED 0x1u /* accept fds opened without O_DIRECT */
#define KAIO_CTX_SINGLE_THREAD  0x2u /* one thread at a time calls in     */

#define KAIO_CAPACITY_MAX 65536u

KAIO_EXPORT int kaio_ctx_create(kaio_ctx **out, unsigned capacity,
                                unsigned flags);
/* Destroy must be the last call on a context, with one allowance: threads
 * still inside kaio_poll, kaio_wait or kaio_ctx_wake are made to return
 * (a wait with what it has copied, possibly 0) and waited for before the
 * drain; such calls made while destroy runs return -ESHUTDOWN. */
KAIO_EXPORT int kaio_ctx_destroy(kaio_ctx *ctx);
KAIO_EXPORT int kaio_ctx_fd(const kaio_ctx *ctx);
KAIO_EXPORT int kaio_ctx_wake(kaio_ctx *ctx);
KAIO_EXPORT int kaio_ctx_forget_fd(kaio_ctx *ctx, int fd);
KAIO_EXPORT unsigned kaio_ctx_capacity(const kaio_ctx *ctx);
KAIO_EXPORT unsigned kaio_ctx_inflight(const kaio_ctx *ctx);

/* ---- Buffers: refcounted handles with release callbacks ----------------- */

typedef struct kaio_buf kaio_buf;
typedef void (*kaio_release_fn)(void *data, size_t len, void *opaque);

/* kaio_buf_alloc flags */
#define KAIO_BUF_LOCKED 0x1u /* mlock the memory */

KAIO_EXPORT int kaio_buf_alloc(kaio_buf **out, size_t len, unsigned flags);
KAIO_EXPORT int kaio_buf_wrap(kaio_buf **out, void *data, size_t len,
                              kaio_release_fn release, void *opaque);
KAIO_EXPORT kaio_buf *kaio_buf_ref(kaio_buf *buf);
KAIO_EXPORT void kaio_buf_unref(kaio_buf *buf);
KAIO_EXPORT void *kaio_buf_data(const kaio_buf *buf);
KAIO_EXPORT size_t kaio_buf_len(const kaio_buf *buf);

/* ---- Operations ---------------------------------------------------------- */

enum kaio_op_code {
	KAIO_OP_READ = 1,
	KAIO_OP_WRITE,
	KAIO_OP_READV,
	KAIO_OP_WRITEV,
	KAIO_OP_FSYNC,
	KAIO_OP_FDATASYNC
};

enum kaio_sync_level {
	KAIO_SYNC_DATA = 1, /* fdatasync */
	KAIO_SYNC_FULL = 2  /* fsync */
};

/* Per-operation flags for kaio_op.rw_flags: the kernel's RWF_* values. */
#define KAIO_RWF_DSYNC  0x02u /* this write is durable like O_DSYNC   */
#define KAIO_RWF_SYNC   0x04u /* this write is durable like O_SYNC    */
#define KAIO_RWF_NOWAIT 0x08u /* complete with -EAGAIN instead of blocking */
#define KAIO_RWF_APPEND 0x10u /* write at end of file; offset ignored */

struct kaio_event {
	uint64_t user_data; /* as given at submission */
	int64_t res;        /* bytes transferred (>= 0) or -errno */
	uint64_t offset;    /* file offset of the operation (0 for syncs) */
	kaio_ctx *ctx;
	kaio_buf *buf;      /* READ/WRITE: the buffer; otherwise NULL */
	int32_t fd;
	uint32_t op;        /* enum kaio_op_code */
	uint64_t reserved[2];
};

typedef void (*kaio_cb)(const struct kaio_event *ev);

struct kaio_vec {
	kaio_buf *buf;
	uint64_t offset; /* within buf */
	uint64_t len;
};

KAIO_EXPORT int kaio_read(kaio_ctx *ctx, int fd, uint64_t offset,
                          kaio_buf *buf, size_t buf_offset, size_t len,
                          kaio_cb cb, uint64_t user_data);
KAIO_EXPORT int kaio_write(kaio_ctx *ctx, int fd, uint64_t offset,
                           kaio_buf *buf, size_t buf_offset, size_t len,
                           kaio_cb cb, uint64_t user_data);
KAIO_EXPORT int kaio_readv(kaio_ctx *ctx, int fd, uint64_t offset,
                           const struct kaio_vec *vec, unsigned nvec,
                           kaio_cb cb, uint64_t user_data);
KAIO_EXPORT int kaio_writev(kaio_ctx *ctx, int fd, uint64_t offset,
                            const struct kaio_vec *vec, unsigned nvec,
                            kaio_cb cb, uint64_t user_data);
KAIO_EXPORT int kaio_sync(kaio_ctx *ctx, int fd, unsigned level,
                          kaio_cb cb, uint64_t user_data);

struct kaio_op {
	uint32_t op;          /* enum kaio_op_code */
	int32_t fd;
	uint64_t offset;
	uint64_t buf_offset;  /* READ/WRITE */
	uint64_t len;         /* READ/WRITE */
	uint64_t user_data;
	kaio_buf *buf;        /* READ/WRITE */
	const struct kaio_vec *vec; /* READV/WRITEV */
	kaio_cb cb;
	uint32_t nvec;        /* READV/WRITEV */
	uint32_t rw_flags;    /* KAIO_RWF_* */
	uint32_t ioprio;      /* 0, or an I/O priority (IOCB_FLAG_IOPRIO) */
	uint32_t reserved32;  /* must be 0 */
	uint64_t reserved[2]; /* must be 0 */
};

/* Returns how many leading operations were accepted (0..n), or -errno when
 * the first one was refused. */
KAIO_EXPORT int kaio_submit(kaio_ctx *ctx, const struct kaio_op *ops,
                            unsigned n);

/* ---- Completions ---------------------------------------------------------- */

KAIO_EXPORT int kaio_poll(kaio_ctx *ctx, struct kaio_event *events,
                          unsigned max);
KAIO_EXPORT int kaio_wait(kaio_ctx *ctx, struct kaio_event *events,
                          unsigned min, unsigned max, int timeout_ms);

/* ---- Alignment ------------------------------------------------------------ */

/* The direct-I/O alignment libkaio enforces for fd (0: none known, or fd
 * without O_DIRECT).  Either pointer may be NULL. */
KAIO_EXPORT int kaio_fd_alignment(int fd, uint32_t *mem_align,
                                  uint32_t *offset_align);

#ifdef __cplusplus
}
#endif

#endif /* KAIO_H */
