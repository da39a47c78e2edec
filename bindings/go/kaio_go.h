/*
 * kaio_go.h - the C side of the Go binding (package kaio).
 *
 * Each wrapper calls one libkaio function and, when it fails, copies
 * kaio_last_error() into the caller's buffer before returning: the message
 * is thread-local in C, and a goroutine may move to another OS thread
 * between two cgo calls, so it must be read inside the failing call.
 * msg points to KAIO_GO_MSG_LEN bytes of memory that holds no Go pointer.
 */
#ifndef KAIO_GO_H
#define KAIO_GO_H

#include <stddef.h>
#include <stdint.h>

#include "kaio.h"

#define KAIO_GO_MSG_LEN 512

int kaio_go_ctx_create(kaio_ctx **out, unsigned capacity, char *msg);
int kaio_go_ctx_destroy(kaio_ctx *ctx, char *msg);
int kaio_go_ctx_fd(kaio_ctx *ctx, char *msg);
int kaio_go_ctx_forget_fd(kaio_ctx *ctx, int fd, char *msg);
int kaio_go_buf_alloc(kaio_buf **out, void **data, size_t len, char *msg);
/*
 * Submits the operations slot_ops[idx[0..n-1]] in kaio_submit calls of
 * at most 8 operations each: status[i] is 0 when operation i was
 * accepted, else its -errno, with its message copied to
 * msgs + user_data * KAIO_GO_MSG_LEN (user_data is its slot).  An
 * operation refused does not stop the ones after it.
 */
void kaio_go_submit(kaio_ctx *ctx, const struct kaio_op *slot_ops, const uint32_t *idx,
                    unsigned n, int *status, char *msgs);
/* kaio_poll, then drops the reference each copied event carries (ev.buf). */
int kaio_go_poll(kaio_ctx *ctx, struct kaio_event *events, unsigned max, char *msg);
int kaio_go_fd_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align, char *msg);

#endif
