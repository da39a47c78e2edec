package kaio

/*
#include "kaio_go.h"
*/
import "C"

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Buffer is memory the kernel may read and write: a kaio_buf from
// kaio_buf_alloc, zero-filled, page-aligned, outside the Go heap. Create
// it with NewBuffer and give it back with Free; there is no finalizer,
// since a slice from Bytes would then dangle.
//
// An operation holds its own reference to the buffer until the kernel is
// done with it, so Free during an operation in progress is safe for the
// kernel (the memory goes away when the operation completes). Bytes must
// not be used after Free.
type Buffer struct {
	h    *C.kaio_buf // the caller's reference, dropped once when freed and unused
	n    int
	data []byte // over the C memory

	// Submitters in progress (low bits), bufFreed once Free was called,
	// bufDropped once the reference was dropped.
	state atomic.Int64
}

const (
	bufFreed   = int64(1) << 61
	bufDropped = int64(1) << 62
)

// NewBuffer allocates a buffer of n bytes (n > 0).
func NewBuffer(n int) (*Buffer, error) {
	if n < 0 {
		return nil, newError("NewBuffer", syscall.EINVAL, fmt.Sprintf("length %d is negative", n))
	}
	var m msgBuf
	var h *C.kaio_buf
	var data unsafe.Pointer
	if rc := C.kaio_go_buf_alloc(&h, &data, C.size_t(n), m.ptr()); rc < 0 {
		return nil, cError("NewBuffer", rc, m.ptr())
	}
	return &Buffer{h: h, n: n, data: unsafe.Slice((*byte)(data), n)}, nil
}

// Bytes returns the buffer's memory (nil after Free). Do not touch it while
// an operation on the buffer is in progress in another goroutine.
func (b *Buffer) Bytes() []byte {
	if b.state.Load()&bufFreed != 0 {
		return nil
	}
	return b.data
}

// Len returns the buffer's length in bytes (0 after Free).
func (b *Buffer) Len() int {
	if b.state.Load()&bufFreed != 0 {
		return 0
	}
	return b.n
}

// Free drops the caller's reference to the buffer. It may be called more
// than once (and on a nil *Buffer), and never blocks. Operations in
// progress keep the memory until the kernel is done with it (each holds
// its own reference in the library); operations started after Free fail
// with EINVAL.
func (b *Buffer) Free() {
	if b == nil {
		return
	}
	for {
		v := b.state.Load()
		if v&bufFreed != 0 {
			return
		}
		if b.state.CompareAndSwap(v, v|bufFreed) {
			if v == 0 {
				b.drop()
			}
			return
		}
	}
}

// acquire keeps b.h valid for a submission; false once freed.
func (b *Buffer) acquire() bool {
	if b.state.Add(1)&bufFreed != 0 {
		b.release()
		return false
	}
	return true
}

// release ends a submission; the last one after Free drops the reference.
func (b *Buffer) release() {
	if b.state.Add(-1) == bufFreed {
		b.drop()
	}
}

func (b *Buffer) drop() {
	if b.state.CompareAndSwap(bufFreed, bufFreed|bufDropped) {
		C.kaio_buf_unref(b.h)
	}
}
