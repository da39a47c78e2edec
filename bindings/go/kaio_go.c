/* kaio_go.c - see kaio_go.h. */
#include <errno.h>
#include <string.h>

#include "kaio_go.h"

static int keep_error(int rc, char *msg)
{
	if (rc < 0 && msg) {
		const char *e = kaio_last_error();
		size_t n = strlen(e);
		if (n >= KAIO_GO_MSG_LEN)
			n = KAIO_GO_MSG_LEN - 1;
		memcpy(msg, e, n);
		msg[n] = '\0';
	}
	return rc;
}

int kaio_go_ctx_create(kaio_ctx **out, unsigned capacity, char *msg)
{
	return keep_error(kaio_ctx_create(out, capacity, 0), msg);
}

int kaio_go_ctx_destroy(kaio_ctx *ctx, char *msg)
{
	return keep_error(kaio_ctx_destroy(ctx), msg);
}

int kaio_go_ctx_fd(kaio_ctx *ctx, char *msg)
{
	return keep_error(kaio_ctx_fd(ctx), msg);
}

int kaio_go_ctx_forget_fd(kaio_ctx *ctx, int fd, char *msg)
{
	return keep_error(kaio_ctx_forget_fd(ctx, fd), msg);
}

int kaio_go_buf_alloc(kaio_buf **out, void **data, size_t len, char *msg)
{
	int rc = kaio_buf_alloc(out, len, 0);
	if (rc >= 0)
		*data = kaio_buf_data(*out);
	return keep_error(rc, msg);
}

void kaio_go_submit(kaio_ctx *ctx, const struct kaio_op *slot_ops, const uint32_t *idx,
                    unsigned n, int *status, char *msgs)
{
	/*
	 * At most SUBMIT_MAX operations per kaio_submit (one io_submit each):
	 * a virtio disk given one large batch completes it as a burst, and
	 * the goroutines, woken together, refill it as one batch again; a few
	 * smaller calls keep it fed (+6% IOPS at depth 32 with GOMAXPROCS=2,
	 * +15% with 1, on this project's VM; see bindings/go/README.md).
	 */
	enum { CHUNK = 64, SUBMIT_MAX = 8 };
	struct kaio_op stage[CHUNK];
	unsigned done = 0;
	while (done < n) {
		unsigned k = n - done < CHUNK ? n - done : CHUNK;
		for (unsigned i = 0; i < k; i++)
			stage[i] = slot_ops[idx[done + i]];
		unsigned at = 0;
		while (at < k) {
			unsigned m = k - at < SUBMIT_MAX ? k - at : SUBMIT_MAX;
			int rc = kaio_submit(ctx, stage + at, m);
			if (rc > 0) {
				for (int i = 0; i < rc; i++)
					status[done + at + (unsigned)i] = 0;
				at += (unsigned)rc;
				continue;
			}
			if (rc == 0) /* not expected for k - at > 0 */
				rc = -EAGAIN;
			status[done + at] = keep_error(rc, msgs + stage[at].user_data * KAIO_GO_MSG_LEN);
			at++;
		}
		done += k;
	}
}

int kaio_go_poll(kaio_ctx *ctx, struct kaio_event *events, unsigned max, char *msg)
{
	int n = kaio_poll(ctx, events, max);
	for (int i = 0; i < n; i++) {
		kaio_buf_unref(events[i].buf);
		events[i].buf = NULL;
	}
	return keep_error(n, msg);
}

int kaio_go_fd_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align, char *msg)
{
	return keep_error(kaio_fd_alignment(fd, mem_align, offset_align), msg);
}
