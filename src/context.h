// A kernel AIO context of bounded capacity: preallocated request slots,
// submission with validation, reaping with exactly-once delivery, blocking
// waits that kaio_ctx_wake can end, and a destroy that drains.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <poll.h>
#include <sys/uio.h>

#include <libaio.h>

#include "fdinfo.h"
#include "kaio.h"

namespace kaio {

class Context;

// One operation from acceptance to delivery.
struct Slot {
	struct iocb iocb;
	uint64_t user_data;
	uint64_t offset;   // as given (reported in the event)
	kaio_cb cb;
	kaio_buf *buf;     // READ/WRITE: the operation's reference
	int32_t fd;
	uint32_t op;
	int64_t res;
	uint32_t nvec;
	uint32_t vec_cap;  // allocated length of vbufs/iov (kept for reuse)
	kaio_buf **vbufs;  // READV/WRITEV: one reference per segment
	struct iovec *iov;
	Slot *next;        // queue of undelivered events
	uint32_t next_free; // free stack: index + 1 of the slot below (0: none)
	uint32_t self1;     // this slot's index + 1
	uint8_t state;
};

// A mutex that KAIO_CTX_SINGLE_THREAD turns off.
class OptionalLock {
public:
	explicit OptionalLock(bool on) : on_(on) {}
	void lock()
	{
		if (on_)
			mu_.lock();
	}
	void unlock()
	{
		if (on_)
			mu_.unlock();
	}

private:
	std::mutex mu_;
	bool on_;
};

class Context {
public:
	static int create(Context **out, kaio_ctx *handle, unsigned capacity, unsigned flags);
	~Context();

	int submit(const struct kaio_op *ops, unsigned n);
	int submit_one(const struct kaio_op &op); // kaio_read and the like
	int poll(struct kaio_event *events, unsigned max);
	int wait(struct kaio_event *events, unsigned min, unsigned max, int timeout_ms);
	int wake();
	// Refuses submissions from now on (-ESHUTDOWN).
	void begin_shutdown() { shutting_down_.store(true, std::memory_order_seq_cst); }
	// Drains (see the contract) and tears down; the caller frees the object.
	void drain_for_destroy();
	// In a forked child: frees memory only.
	void abandon_in_child();

	int event_fd() const { return evfd_; }
	unsigned capacity() const { return capacity_; }
	unsigned inflight() const
	{
		return capacity_ - free_count(free_head_.load(std::memory_order_acquire));
	}
	void forget_fd(int fd) { fdcache_.forget(fd); }
	bool delivering_on_this_thread() const;

private:
	Context(kaio_ctx *handle, unsigned capacity, unsigned flags);

	struct Waiter {
		uint64_t start_gen;
		Waiter *next;
	};
	class DeliveryFrame;

	int submit_general(const struct kaio_op *ops, unsigned n);
	bool fast_rw(const struct kaio_op &op) const;
	void fill_rw_fast(Slot *s, const struct kaio_op &op);
	int validate(const struct kaio_op &op, FdInfo *info);
	int validate_rw(const struct kaio_op &op, FdInfo *info);
	int check_fd_for_rw(const struct kaio_op &op, uint64_t total, FdInfo *info);
	// The free slots are a lock-free stack whose head word packs the top
	// slot (index + 1, 0 when empty), the number of free slots and an ABA
	// tag.  Taking a slot is taking a unit of capacity: nullptr when full.
	// 17 bits each hold 0..KAIO_CAPACITY_MAX; the other 30 are the tag, so
	// an exchange is fooled only if a thread stalls across 2^30 others.
	static constexpr uint64_t kTopMask = (1u << 17) - 1;
	static constexpr unsigned kCountShift = 17;
	static constexpr unsigned kTagShift = 34;
	static_assert(KAIO_CAPACITY_MAX < (1u << 17), "slot index + 1 and count fit 17 bits");
	static unsigned free_count(uint64_t head) { return unsigned((head >> kCountShift) & kTopMask); }
	// The head after an exchange: its tag bumped, count free slots, top.
	static uint64_t next_head(uint64_t head, unsigned count, uint32_t top)
	{
		return (((head >> kTagShift) + 1) << kTagShift) | (uint64_t(count) << kCountShift) | top;
	}
	unsigned take_slots(Slot **out, unsigned want); // up to want; 0 when full
	Slot *take_slot(); // take_slots for one, without the walk (the kaio_read path)
	void push_free(Slot *first, Slot *last, unsigned n);
	int fill_slot(Slot *s, const struct kaio_op &op);
	void drop_slot_refs(Slot *s);
	void free_slot(Slot *s);
	// Submits iocbs[0..n) (first: io_submit's answer for them if the caller
	// already asked, else INT_MIN), retrying and handing back what the
	// kernel refuses.
	int submit_to_kernel(Slot **slots, struct iocb **iocbs, unsigned n, unsigned *accepted,
	                     int first = INT_MIN);
	int kernel_refusal(const Slot *s, int err, bool nothing_to_reap);

	// *ring_busy (when given): another thread was reading the ring.
	unsigned reap(struct kaio_event *events, unsigned max, unsigned *delivered, int *err,
	              bool *ring_busy = nullptr);
	// Slots freed during one reap, returned to the free stack together.
	struct FreeChain {
		Slot *first = nullptr;
		Slot *last = nullptr;
		unsigned n = 0;
	};
	void complete(Slot *s, struct kaio_event *events, unsigned max,
	              unsigned *copied, unsigned *delivered, FreeChain *chain, bool *queued_here);
	void free_chain(FreeChain *chain);
	void fill_event(const Slot *s, struct kaio_event *ev) const;
	void deliver_callback(Slot *s);
	void deliver_vector_callback(Slot *s);
	void deliver_event(Slot *s, struct kaio_event *ev, FreeChain *chain);
	void deliver_event_now(Slot *s, struct kaio_event *ev);
	void queue_undelivered(Slot *s);
	void drain_eventfd();
	void rearm_eventfd(); // makes the completion eventfd readable
	int take_completions(struct io_event *kev, int max, bool *drained, bool *busy);

	void register_waiter(Waiter *w);
	void unregister_waiter(Waiter *w);
	int settle_stale_wake(int remaining_ms, unsigned busy_rounds);
	int wait_for_ring(struct pollfd *wake, unsigned busy_rounds);
	static struct timespec ring_step(unsigned busy_rounds);
	void drain_wakefd(uint64_t gen);
	void signal_blocked_waiters();

	kaio_ctx *handle_;
	io_context_t kctx_ = nullptr;
	int evfd_ = -1;
	int wakefd_ = -1;
	const unsigned capacity_;
	const bool allow_buffered_;
	const bool threaded_;

	std::atomic<uint64_t> free_head_{0};
	std::atomic<unsigned> queued_{0};   // undelivered events in the queue
	std::atomic<unsigned> blocked_{0};  // kaio_wait callers in poll(2)
	std::atomic<bool> shutting_down_{false};
	// Completions are copied from the kernel's ring in user space when it
	// is usable (else io_getevents); one thread at a time owns the ring.
	bool use_ring_ = false;
	std::atomic<bool> ring_busy_{false};

	Slot *slots_ = nullptr;
	OptionalLock lock_;  // the queue of undelivered events
	Slot *queue_head_ = nullptr;
	Slot *queue_tail_ = nullptr;

	std::atomic<uint64_t> wake_gen_{0};
	std::mutex wait_mu_;
	Waiter *waiters_ = nullptr;     // under wait_mu_
	uint64_t drained_gen_ = 0;      // under wait_mu_: wake fd empty as of this
	                                // generation

	FdCache fdcache_;
};

} // namespace kaio

// The public handle: type-stable (see handles.h), pointing at the context.
struct kaio_ctx {
	std::atomic<uint32_t> magic{0};
	unsigned fork_gen = 0;
	// Atomic: a kaio_poll/kaio_wait/kaio_ctx_wake racing a destroy (allowed)
	// may read it while destroy clears it; nullptr reads as destroyed.
	std::atomic<kaio::Context *> impl{nullptr};
	// Threads inside kaio_poll, kaio_wait or kaio_ctx_wake: kaio_ctx_destroy
	// sets `closing`, wakes them and waits for the count to reach zero.
	std::atomic<unsigned> callers{0};
	std::atomic<bool> closing{false};
};
