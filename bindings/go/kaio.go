// Package kaio binds libkaio, Linux kernel asynchronous I/O on O_DIRECT
// files, for Go.
//
// A Context is a bounded queue of kernel I/O operations. Any number of
// goroutines may call its methods at once: each call blocks only its own
// goroutine until the kernel has finished the operation, and one reaper
// goroutine per Context, woken through the context's eventfd by Go's
// network poller, hands every completion to the goroutine waiting for it.
// No OS thread is parked per request. When the queue is full (Capacity
// operations in flight), callers wait their turn, first come first served;
// they never get EAGAIN for it. Operations that goroutines start at about
// the same time are submitted together, in one kaio_submit call.
//
// The kernel only ever reads and writes C memory: a Buffer (from NewBuffer)
// for Context.ReadAt and Context.WriteAt, or the aligned bounce buffers
// inside a File, which accepts any []byte (io.ReaderAt, io.WriterAt). No Go
// pointer is kept by C: an operation is known to C by a slot number.
//
// Errors from the library are *Error values carrying the library's own
// sentence; they unwrap to a syscall.Errno, so errors.Is(err,
// syscall.EINVAL) works.
//
// Build: cgo needs kaio.h and libkaio.so, e.g.
//
//	CGO_CFLAGS=-I/path/to/include CGO_LDFLAGS="-L/path/to/lib -Wl,-rpath,/path/to/lib" go build
package kaio

/*
#cgo LDFLAGS: -lkaio
#include <stdlib.h>
#include "kaio_go.h"
*/
import "C"

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// MaxCapacity is the largest capacity NewContext accepts (KAIO_CAPACITY_MAX).
const MaxCapacity = 65536

// Compile-time check that MaxCapacity is the header's KAIO_CAPACITY_MAX.
var (
	_ [MaxCapacity - C.KAIO_CAPACITY_MAX]struct{}
	_ [C.KAIO_CAPACITY_MAX - MaxCapacity]struct{}
)

const msgLen = int(C.KAIO_GO_MSG_LEN)

// Per-operation flags for ReadAtFlags and WriteAtFlags: the kernel's RWF_*
// values (KAIO_RWF_* in kaio.h; see kaio_submit(3)), named as in
// golang.org/x/sys/unix.
const (
	RWF_DSYNC  = 0x02 // this write is durable when it completes, as with O_DSYNC
	RWF_SYNC   = 0x04 // this write is durable when it completes, as with O_SYNC
	RWF_NOWAIT = 0x08 // do not block: an operation that would wait fails with EAGAIN
	RWF_APPEND = 0x10 // write at the end of the file; the offset is ignored
)

// Compile-time checks that the flags are the header's.
var (
	_ [RWF_DSYNC - C.KAIO_RWF_DSYNC]struct{}
	_ [C.KAIO_RWF_DSYNC - RWF_DSYNC]struct{}
	_ [RWF_SYNC - C.KAIO_RWF_SYNC]struct{}
	_ [C.KAIO_RWF_SYNC - RWF_SYNC]struct{}
	_ [RWF_NOWAIT - C.KAIO_RWF_NOWAIT]struct{}
	_ [C.KAIO_RWF_NOWAIT - RWF_NOWAIT]struct{}
	_ [RWF_APPEND - C.KAIO_RWF_APPEND]struct{}
	_ [C.KAIO_RWF_APPEND - RWF_APPEND]struct{}
)

// maxEvents bounds the events copied by one kaio_poll of the reaper.
const maxEvents = 256

// Version returns the version of the libkaio actually loaded,
// "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.kaio_version()) }

// Error is a failure reported by libkaio, or by the binding in its terms.
type Error struct {
	Op    string        // the method that failed: "ReadAt", "NewContext", ...
	Errno syscall.Errno // what it amounts to (EINVAL, EBADF, ESHUTDOWN, ...)
	Msg   string        // the library's explanation (kaio_last_error), or the binding's
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "kaio: " + e.Op + ": " + e.Errno.Error()
	}
	return "kaio: " + e.Op + ": " + e.Msg
}

// Unwrap returns the syscall.Errno, so that errors.Is(err, syscall.EBADF)
// and errors.Is(err, os.ErrNotExist)-style checks work.
func (e *Error) Unwrap() error { return e.Errno }

func newError(op string, errno syscall.Errno, msg string) *Error {
	return &Error{Op: op, Errno: errno, Msg: msg}
}

// cError builds an Error from a negative return code and the message the
// C wrapper copied into msg.
func cError(op string, rc C.int, msg *C.char) *Error {
	return newError(op, syscall.Errno(-rc), C.GoString(msg))
}

func errShutdown(op string) *Error {
	return newError(op, syscall.ESHUTDOWN, "the context is closed")
}

// msgBuf is Go memory for the message of a call off the hot path (it holds
// no Go pointer, so it may be passed to C for the duration of a call).
type msgBuf [msgLen]C.char

func (m *msgBuf) ptr() *C.char { return &m[0] }

// gate counts the callers inside an object and lets Close wait for them:
// enter fails once close has begun; wait returns when the last one left.
type gate struct {
	n       atomic.Int64
	once    sync.Once
	drained chan struct{}
}

const gateClosed = int64(1) << 62

func newGate() gate { return gate{drained: make(chan struct{})} }

func (g *gate) enter() bool {
	if g.n.Add(1)&gateClosed != 0 {
		g.leave()
		return false
	}
	return true
}

func (g *gate) leave() {
	if g.n.Add(-1) == gateClosed {
		g.once.Do(func() { close(g.drained) })
	}
}

// close makes later enters fail; false when it was already closed.
func (g *gate) close() bool {
	for {
		v := g.n.Load()
		if v&gateClosed != 0 {
			return false
		}
		if g.n.CompareAndSwap(v, v|gateClosed) {
			if v == 0 {
				g.once.Do(func() { close(g.drained) })
			}
			return true
		}
	}
}

func (g *gate) wait() { <-g.drained }

func (g *gate) closed() bool { return g.n.Load()&gateClosed != 0 }

// A slot is one unit of capacity: at most one operation in flight. Its
// index is the operation's user_data.
type slot struct {
	op     *C.struct_kaio_op         // C: the operation, filled by its goroutine
	msg    *C.char                   // C: the message of a refused submission
	buf    atomic.Pointer[Buffer]    // acquired for the submission; released by the submitter
	vbufs  atomic.Pointer[[]*Buffer] // a vectored operation's buffers, likewise
	vec    *C.struct_kaio_vec        // C: the slot's vector (vecCap entries), grown on demand
	vecCap int
	subrc  C.int      // set (with a wake-up on done) when the submission was refused
	done   chan int64 // the completion's res, from the reaper
	st     stamps     // with -tags kaiostages: where its time goes
}

// Context is a libkaio context (kaio_ctx) with a reaper goroutine. Create
// it with NewContext; all its methods are safe for concurrent use.
type Context struct {
	c        *C.kaio_ctx
	capacity int
	gate     gate
	free     chan int32 // free slot indexes; a channel's waiters are served in order
	slots    []slot
	msgs     unsafe.Pointer    // C: capacity * msgLen bytes, the slots' messages
	ops      *C.struct_kaio_op // C: capacity operations, one per slot

	// Submission: operations ready to go are queued in pending; the
	// goroutine that finds no submitter at work becomes it and submits
	// every queued operation, its own and others', in kaio_submit calls.
	subMu     sync.Mutex
	pending   []int32
	flushing  bool
	batchIdx  []C.uint32_t // C: the slots of the batch being submitted
	batchSt   []C.int      // C: their status
	batchBufs []*Buffer    // their buffers, released after the submission

	events  *C.struct_kaio_event // C: maxEv events for the reaper
	evs     []C.struct_kaio_event
	maxEv   int
	reapMsg *C.char // C: the reaper's message buffer

	evf        *os.File // a dup of the context's eventfd, in Go's poller
	stopping   atomic.Bool
	reaperDone chan struct{}

	bounce bouncePool
}

// NewContext creates a context whose queue holds at most capacity
// operations in flight (1 to MaxCapacity). It passes no flags to the
// library: file descriptors must have been opened with O_DIRECT, others are
// refused with EINVAL.
func NewContext(capacity int) (*Context, error) {
	const op = "NewContext"
	if capacity < 0 || uint64(capacity) > math.MaxUint32 {
		// Not representable as the C unsigned; the library explains the rest.
		return nil, newError(op, syscall.EINVAL,
			fmt.Sprintf("capacity %d is outside 1..%d", capacity, MaxCapacity))
	}
	var m msgBuf
	var cctx *C.kaio_ctx
	if rc := C.kaio_go_ctx_create(&cctx, C.uint(capacity), m.ptr()); rc < 0 {
		return nil, cError(op, rc, m.ptr())
	}
	destroy := func() { C.kaio_go_ctx_destroy(cctx, nil) }

	// The library owns its eventfd: the poller gets its own descriptor,
	// which shares the file description (and its O_NONBLOCK), so os.NewFile
	// registers it with the poller. It is only waited on, never read.
	rc := C.kaio_go_ctx_fd(cctx, m.ptr())
	if rc < 0 {
		destroy()
		return nil, cError(op, rc, m.ptr())
	}
	dupfd, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(rc), syscall.F_DUPFD_CLOEXEC, 0)
	if e != 0 {
		destroy()
		return nil, newError(op, e, "cannot duplicate the context's eventfd: "+e.Error())
	}
	evf := os.NewFile(dupfd, "kaio-eventfd")
	raw, err := evf.SyscallConn()
	if err != nil {
		evf.Close()
		destroy()
		return nil, newError(op, syscall.EINVAL, "cannot wait on the context's eventfd: "+err.Error())
	}

	c := &Context{
		c:          cctx,
		capacity:   capacity,
		gate:       newGate(),
		free:       make(chan int32, capacity),
		slots:      make([]slot, capacity),
		pending:    make([]int32, 0, capacity),
		batchBufs:  make([]*Buffer, 0, capacity),
		evf:        evf,
		reaperDone: make(chan struct{}),
	}
	c.maxEv = capacity
	if c.maxEv > maxEvents {
		c.maxEv = maxEvents
	}
	ok := c.allocC()
	if !ok {
		c.freeC()
		evf.Close()
		destroy()
		return nil, newError(op, syscall.ENOMEM, "out of memory for the binding's C buffers")
	}
	for i := range c.slots {
		s := &c.slots[i]
		s.op = (*C.struct_kaio_op)(unsafe.Add(unsafe.Pointer(c.ops), uintptr(i)*unsafe.Sizeof(C.struct_kaio_op{})))
		s.op.user_data = C.uint64_t(i)
		s.msg = (*C.char)(unsafe.Add(c.msgs, i*msgLen))
		s.done = make(chan int64, 1)
		c.free <- int32(i)
	}
	go c.reaper(raw)
	return c, nil
}

// cArray returns n zeroed elements of C memory, or nil.
func cArray(n int, size uintptr) unsafe.Pointer {
	return C.calloc(C.size_t(n), C.size_t(size))
}

func (c *Context) allocC() bool {
	c.msgs = cArray(c.capacity, uintptr(msgLen))
	c.ops = (*C.struct_kaio_op)(cArray(c.capacity, unsafe.Sizeof(C.struct_kaio_op{})))
	idx := (*C.uint32_t)(cArray(c.capacity, unsafe.Sizeof(C.uint32_t(0))))
	st := (*C.int)(cArray(c.capacity, unsafe.Sizeof(C.int(0))))
	c.events = (*C.struct_kaio_event)(cArray(c.maxEv, unsafe.Sizeof(C.struct_kaio_event{})))
	c.reapMsg = (*C.char)(cArray(1, uintptr(msgLen)))
	if idx != nil {
		c.batchIdx = unsafe.Slice(idx, c.capacity)
	}
	if st != nil {
		c.batchSt = unsafe.Slice(st, c.capacity)
	}
	if c.events != nil {
		c.evs = unsafe.Slice(c.events, c.maxEv)
	}
	return c.msgs != nil && c.ops != nil && idx != nil && st != nil && c.events != nil && c.reapMsg != nil
}

func (c *Context) freeC() {
	for i := range c.slots {
		C.free(unsafe.Pointer(c.slots[i].vec))
		c.slots[i].vec, c.slots[i].vecCap = nil, 0
	}
	C.free(c.msgs)
	C.free(unsafe.Pointer(c.ops))
	if c.batchIdx != nil {
		C.free(unsafe.Pointer(&c.batchIdx[0]))
	}
	if c.batchSt != nil {
		C.free(unsafe.Pointer(&c.batchSt[0]))
	}
	C.free(unsafe.Pointer(c.events))
	C.free(unsafe.Pointer(c.reapMsg))
	c.msgs, c.ops, c.batchIdx, c.batchSt, c.events, c.evs, c.reapMsg = nil, nil, nil, nil, nil, nil, nil
}

// Capacity returns the most operations the context keeps in flight at once.
func (c *Context) Capacity() int { return c.capacity }

// Inflight returns how many operations the library counts in flight now
// (0 once the context is closed).
func (c *Context) Inflight() int {
	if !c.gate.enter() {
		return 0
	}
	defer c.gate.leave()
	return int(C.kaio_ctx_inflight(c.c))
}

// Close waits for every operation in progress, including those of
// goroutines still waiting for room in the queue, stops the reaper, closes
// its eventfd copy and destroys the context. Calls that start after Close
// began, and a second Close, return an error wrapping syscall.ESHUTDOWN.
func (c *Context) Close() error {
	if !c.gate.close() {
		return errShutdown("Close")
	}
	c.gate.wait()
	c.stopping.Store(true)
	c.evf.Close() // wakes the reaper, and returns once it has left the poller
	<-c.reaperDone
	c.bounce.close()
	var m msgBuf
	rc := C.kaio_go_ctx_destroy(c.c, m.ptr())
	c.c = nil
	c.freeC()
	if rc < 0 {
		return cError("Close", rc, m.ptr())
	}
	return nil
}

// reaper hands completions to the goroutines that wait for them. It sleeps
// in Go's poller until the eventfd is readable, then calls kaio_poll until
// a call copies fewer events than it asked for (the eventfd need not signal
// again for events left queued). kaio_poll drains the eventfd before it
// reaps, so a completion after that drain makes it readable again.
func (c *Context) reaper(raw syscall.RawConn) {
	defer close(c.reaperDone)
	for !c.stopping.Load() {
		err := raw.Read(func(uintptr) bool {
			c.reap()
			return c.stopping.Load()
		})
		if err != nil && !c.stopping.Load() {
			// Not expected: the poller refused the eventfd. Keep the
			// operations flowing by polling, slowly.
			time.Sleep(time.Millisecond)
			c.reap()
		}
	}
}

func (c *Context) reap() {
	for {
		n := int(C.kaio_go_poll(c.c, c.events, C.uint(c.maxEv), c.reapMsg))
		if n < 0 {
			if syscall.Errno(-n) == syscall.EINTR {
				continue
			}
			// Only a broken kernel context fails here (io_getevents
			// EFAULT/EINVAL): nothing to do but wait for the next wake.
			return
		}
		var now int64
		if stagesOn && n > 0 {
			now = stageNow()
			for _, ev := range c.evs[:n] {
				c.slots[ev.user_data].st.reaped.Store(now)
			}
		}
		for i := 0; i < n; i++ {
			ev := &c.evs[i]
			c.slots[ev.user_data].done <- int64(ev.res)
		}
		if stagesOn && n > 0 {
			stageSum.reaps.Add(1)
			stageSum.reapEvents.Add(int64(n))
			stageSum.deliver.Add(stageNow() - now)
		}
		if n < c.maxEv {
			return
		}
	}
}

// submit queues slot idx's operation and, unless another goroutine is
// submitting already (it will take this one too), submits every queued
// operation. Before the first batch it yields once, so that goroutines
// just made runnable (by the reaper, typically) queue their operations
// into the same kaio_submit: fewer io_submit calls, as the C API's batch
// submission gives.
func (c *Context) submit(idx int32) {
	c.subMu.Lock()
	c.pending = append(c.pending, idx)
	if c.flushing {
		c.subMu.Unlock()
		return
	}
	c.flushing = true
	c.subMu.Unlock()
	runtime.Gosched()
	for {
		c.subMu.Lock()
		n := len(c.pending)
		if n == 0 {
			c.flushing = false
			c.subMu.Unlock()
			return
		}
		for i, j := range c.pending {
			c.batchIdx[i] = C.uint32_t(j)
		}
		c.pending = c.pending[:0]
		c.subMu.Unlock()
		c.flush(n)
	}
}

// flush submits the n operations of batchIdx, releases their buffers and
// wakes the goroutines of those refused.
func (c *Context) flush(n int) {
	bufs := c.batchBufs[:0]
	for _, j := range c.batchIdx[:n] {
		if b := c.slots[j].buf.Swap(nil); b != nil {
			bufs = append(bufs, b)
		}
		if vb := c.slots[j].vbufs.Swap(nil); vb != nil {
			bufs = append(bufs, *vb...)
		}
	}
	var start int64
	if stagesOn {
		start = stageNow()
		for _, j := range c.batchIdx[:n] {
			c.slots[j].st.flushed.Store(start)
		}
	}
	C.kaio_go_submit(c.c, c.ops, &c.batchIdx[0], C.uint(n), &c.batchSt[0], (*C.char)(c.msgs))
	if stagesOn {
		stageFlushed(n, stageNow()-start)
	}
	for i, b := range bufs {
		b.release()
		bufs[i] = nil
	}
	c.batchBufs = bufs[:0] // keep what vectors grew it to, cleared
	for i, st := range c.batchSt[:n] {
		if st < 0 {
			s := &c.slots[c.batchIdx[i]]
			s.subrc = st
			s.done <- 0
		}
	}
}

const (
	opRead = iota
	opWrite
	opFsync
	opFdatasync
	opReadv
	opWritev
)

var opNames = [...]string{"read", "write", "fsync", "fdatasync", "readv", "writev"}

// maxVec is the most buffers one vectored operation takes (IOV_MAX).
const maxVec = 1024

// vecFor returns the slot's C vector with room for n entries, or nil when
// out of memory.
func (s *slot) vecFor(n int) *C.struct_kaio_vec {
	if n > s.vecCap {
		v := (*C.struct_kaio_vec)(C.realloc(unsafe.Pointer(s.vec), C.size_t(n)*C.size_t(unsafe.Sizeof(C.struct_kaio_vec{}))))
		if v == nil {
			return nil
		}
		s.vec, s.vecCap = v, n
	}
	return s.vec
}

// acquireVec acquires every buffer of vec for a submission and fills the
// slot's C vector with them; on a freed (or nil) buffer it releases those
// it took and returns the error.
func (s *slot) acquireVec(name string, vec []*Buffer) error {
	held := make([]*Buffer, 0, len(vec))
	cv := unsafe.Slice(s.vec, len(vec))
	for i, b := range vec {
		if b == nil || !b.acquire() {
			for _, h := range held {
				h.release()
			}
			what := "was freed"
			if b == nil {
				what = "is nil"
			}
			return newError(name, syscall.EINVAL, fmt.Sprintf("buffer %d of the vector %s", i, what))
		}
		held = append(held, b)
		cv[i].buf, cv[i].offset, cv[i].len = b.h, 0, C.uint64_t(b.n)
	}
	s.vbufs.Store(&held)
	return nil
}

// do runs one operation and returns its result (bytes transferred). It
// waits for a free slot first: one slot per unit of capacity, handed out
// in arrival order, so the library's queue is never found full. A slot
// goes back only after its completion was delivered, when the library no
// longer counts it.
func (c *Context) do(op int, name string, fd int, b *Buffer, vec []*Buffer, bufOff, n int, off int64, flags int) (int64, error) {
	if off < 0 {
		return 0, newError(name, syscall.EINVAL, fmt.Sprintf("offset %d is negative", off))
	}
	if flags < 0 || uint64(flags) > math.MaxUint32 {
		return 0, newError(name, syscall.EINVAL, fmt.Sprintf("flags %#x is outside 32 bits (RWF_* bits)", flags))
	}
	if err := checkFd(name, fd); err != nil {
		return 0, err
	}
	if (op == opReadv || op == opWritev) && (len(vec) == 0 || len(vec) > maxVec) {
		return 0, newError(name, syscall.EINVAL, fmt.Sprintf("%d buffers: a vector takes 1 to %d (IOV_MAX)", len(vec), maxVec))
	}
	if !c.gate.enter() {
		return 0, errShutdown(name)
	}
	defer c.gate.leave()
	idx := <-c.free
	s := &c.slots[idx]
	o := s.op
	o.fd = C.int32_t(fd)
	switch op {
	case opRead, opWrite:
		o.op = C.KAIO_OP_READ
		if op == opWrite {
			o.op = C.KAIO_OP_WRITE
		}
		o.offset = C.uint64_t(off)
		o.buf_offset = C.uint64_t(bufOff)
		o.len = C.uint64_t(n)
		o.rw_flags = C.uint32_t(flags)
		o.vec, o.nvec = nil, 0
	case opReadv, opWritev:
		o.op = C.KAIO_OP_READV
		if op == opWritev {
			o.op = C.KAIO_OP_WRITEV
		}
		o.offset = C.uint64_t(off)
		o.buf_offset, o.len, o.buf = 0, 0, nil
		o.rw_flags = C.uint32_t(flags)
		if o.vec = s.vecFor(len(vec)); o.vec == nil {
			c.free <- idx
			return 0, newError(name, syscall.ENOMEM, fmt.Sprintf("out of memory for a vector of %d buffers", len(vec)))
		}
		o.nvec = C.uint32_t(len(vec))
		for _, v := range vec {
			if v != nil {
				n += v.n
			}
		}
	case opFsync, opFdatasync:
		o.op = C.KAIO_OP_FSYNC
		if op == opFdatasync {
			o.op = C.KAIO_OP_FDATASYNC
		}
		o.offset, o.buf_offset, o.len, o.buf, o.rw_flags = 0, 0, 0, nil, C.uint32_t(flags)
		o.vec, o.nvec = nil, 0
	}
	for backoff := time.Duration(0); ; {
		if b != nil {
			if !b.acquire() {
				c.free <- idx
				return 0, newError(name, syscall.EINVAL, "the buffer was freed")
			}
			o.buf = b.h
			s.buf.Store(b)
		}
		if vec != nil {
			if err := s.acquireVec(name, vec); err != nil {
				c.free <- idx
				return 0, err
			}
		}
		s.subrc = 0
		if stagesOn {
			s.st.queued.Store(stageNow())
		}
		c.submit(idx)
		res := <-s.done
		if stagesOn && s.subrc == 0 {
			s.stageDone()
		}
		if rc := s.subrc; rc < 0 {
			// Capacity never refuses us (we hold a slot), but the kernel
			// may have had no room for a moment: let others complete.
			if syscall.Errno(-rc) == syscall.EAGAIN && backoff < time.Second {
				backoff = backoff*2 + 50*time.Microsecond
				time.Sleep(backoff)
				continue
			}
			err := cError(name, rc, s.msg)
			c.free <- idx
			return 0, err
		}
		c.free <- idx
		if res < 0 {
			errno := syscall.Errno(-res)
			if errno == syscall.EAGAIN && flags&RWF_NOWAIT != 0 {
				return 0, newError(name, errno, fmt.Sprintf("the %s of %d bytes at offset %d on fd %d would have blocked (RWF_NOWAIT)",
					opNames[op], n, off, fd))
			}
			if op == opRead || op == opWrite || op == opReadv || op == opWritev {
				return 0, newError(name, errno, fmt.Sprintf("the kernel failed the %s of %d bytes at offset %d on fd %d: %s",
					opNames[op], n, off, fd, errno.Error()))
			}
			return 0, newError(name, errno, fmt.Sprintf("the kernel failed the %s of fd %d: %s", opNames[op], fd, errno.Error()))
		}
		return res, nil
	}
}

// ReadAt reads len(buf.Bytes()) bytes from fd at offset off into buf and
// returns how many it read: fewer at end of file (with a nil error), 0
// wholly past it. fd must be open with O_DIRECT; off and the buffer's
// length must meet the fd's direct-I/O alignment (see FileAlignment), else
// the error wraps syscall.EINVAL with the library's explanation. Only the
// calling goroutine blocks.
func (c *Context) ReadAt(fd int, buf *Buffer, off int64) (int, error) {
	return c.whole(opRead, "ReadAt", fd, buf, off, 0)
}

// whole runs a read or write of the whole of buf.
func (c *Context) whole(op int, name string, fd int, buf *Buffer, off int64, flags int) (int, error) {
	if buf == nil {
		return 0, newError(name, syscall.EINVAL, "the buffer is nil")
	}
	n, err := c.do(op, name, fd, buf, nil, 0, buf.n, off, flags)
	return int(n), err
}

// ReadAtFlags is ReadAt with per-operation flags: 0 or RWF_NOWAIT (an
// operation that would block fails with an error wrapping EAGAIN; a file
// that cannot honour it, with EOPNOTSUPP). Other bits are refused with
// EINVAL and the library's explanation.
func (c *Context) ReadAtFlags(fd int, buf *Buffer, off int64, flags int) (int, error) {
	return c.whole(opRead, "ReadAtFlags", fd, buf, off, flags)
}

// WriteAt writes the whole of buf to fd at offset off and returns how many
// bytes were written. The same rules as for ReadAt apply.
func (c *Context) WriteAt(fd int, buf *Buffer, off int64) (int, error) {
	return c.whole(opWrite, "WriteAt", fd, buf, off, 0)
}

// WriteAtFlags is WriteAt with per-operation flags, an OR of RWF_DSYNC or
// RWF_SYNC (the write is durable when it returns, without a separate
// Fdatasync), RWF_NOWAIT and RWF_APPEND (write at the end of the file; off
// is ignored, but must not be negative). Unknown bits are refused with
// EINVAL and the library's explanation.
func (c *Context) WriteAtFlags(fd int, buf *Buffer, off int64, flags int) (int, error) {
	return c.whole(opWrite, "WriteAtFlags", fd, buf, off, flags)
}

// ReadvAt reads from fd at offset off into the buffers of bufs, in order,
// each whole, in one vectored operation (KAIO_OP_READV, like preadv(2)),
// and returns how many bytes it read: fewer at end of file. Each buffer
// must meet the fd's direct-I/O alignment; 1 to 1024 buffers.
func (c *Context) ReadvAt(fd int, bufs []*Buffer, off int64) (int, error) {
	n, err := c.do(opReadv, "ReadvAt", fd, nil, bufs, 0, 0, off, 0)
	return int(n), err
}

// WritevAt writes the buffers of bufs, in order, to fd at offset off in one
// vectored operation (KAIO_OP_WRITEV, like pwritev(2)).
func (c *Context) WritevAt(fd int, bufs []*Buffer, off int64) (int, error) {
	n, err := c.do(opWritev, "WritevAt", fd, nil, bufs, 0, 0, off, 0)
	return int(n), err
}

// ReadvAtFlags is ReadvAt with per-operation flags (see ReadAtFlags).
func (c *Context) ReadvAtFlags(fd int, bufs []*Buffer, off int64, flags int) (int, error) {
	n, err := c.do(opReadv, "ReadvAtFlags", fd, nil, bufs, 0, 0, off, flags)
	return int(n), err
}

// WritevAtFlags is WritevAt with per-operation flags (see WriteAtFlags).
func (c *Context) WritevAtFlags(fd int, bufs []*Buffer, off int64, flags int) (int, error) {
	n, err := c.do(opWritev, "WritevAtFlags", fd, nil, bufs, 0, 0, off, flags)
	return int(n), err
}

// Fsync makes fd's data and metadata durable (an asynchronous fsync in the
// kernel; only the calling goroutine waits).
func (c *Context) Fsync(fd int) error {
	_, err := c.do(opFsync, "Fsync", fd, nil, nil, 0, 0, 0, 0)
	return err
}

// Fdatasync makes fd's data durable, like fdatasync(2).
func (c *Context) Fdatasync(fd int) error {
	_, err := c.do(opFdatasync, "Fdatasync", fd, nil, nil, 0, 0, 0, 0)
	return err
}

// checkFd refuses an fd that a C int cannot hold (a conversion would pass
// it modulo 2^32: another descriptor). Negative ones are the library's to
// refuse, with its own sentence.
func checkFd(op string, fd int) error {
	if int64(fd) < math.MinInt32 || int64(fd) > math.MaxInt32 {
		return newError(op, syscall.EBADF, fmt.Sprintf("fd %d is not a file descriptor (outside the range of a C int)", fd))
	}
	return nil
}

// FileAlignment reports the direct-I/O alignment libkaio enforces for fd:
// of memory addresses, and of file offsets and lengths (0 when none is
// known, or when fd lacks O_DIRECT).
func FileAlignment(fd int) (memAlign, offsetAlign int, err error) {
	if err := checkFd("FileAlignment", fd); err != nil {
		return 0, 0, err
	}
	var m msgBuf
	var ma, oa C.uint32_t
	if rc := C.kaio_go_fd_alignment(C.int(fd), &ma, &oa, m.ptr()); rc < 0 {
		return 0, 0, cError("FileAlignment", rc, m.ptr())
	}
	return int(ma), int(oa), nil
}

// forgetFd drops what the context cached about fd (before it is closed).
func (c *Context) forgetFd(fd int) {
	if !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	C.kaio_go_ctx_forget_fd(c.c, C.int(fd), nil)
}
