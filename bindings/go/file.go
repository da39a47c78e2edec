package kaio

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"syscall"
)

// File is a file opened with O_DIRECT whose I/O goes through a Context. It
// implements io.ReaderAt and io.WriterAt for any []byte, at any offset and
// length: the kernel works on aligned bounce buffers in C memory, and the
// data is copied to or from p. Its methods are safe for concurrent use.
//
// A WriteAt whose offset or length is not aligned is a read-modify-write
// of the partial blocks at its ends, done under a lock of the file's
// (aligned writes and reads share that lock, so none of them interleaves
// with a read-modify-write); the file is then truncated back to max(old
// size, off+len(p)), so its size is what os.File.WriteAt would give. That
// needs read access: open the file os.O_RDWR. Every File of the process
// open on the same file (device and inode) shares that lock, so writes
// through two of them do not undo each other; writers through other
// descriptors (os.File, other processes) are not covered.
type File struct {
	ctx        *Context
	f          *os.File
	fd         int
	align      int64 // offsets and lengths of the kernel's I/O are multiples of it
	chunk      int   // the most one bounce operation moves
	canRead    bool
	appendMode bool
	regular    bool // a regular file: an unaligned write restores its size
	gate       gate
	mu         *sync.RWMutex // exclusive for a read-modify-write; shared by the file's Files
	lockKey    fileKey
}

// fileKey names a file (device and inode) for the locks Files share.
type fileKey struct{ dev, ino uint64 }

// fileLocks holds a lock per file that Files of the process have open,
// with the number of those Files.
var fileLocks = struct {
	sync.Mutex
	m map[fileKey]*sharedLock
}{m: map[fileKey]*sharedLock{}}

type sharedLock struct {
	mu   sync.RWMutex
	refs int
}

func lockFor(k fileKey) *sync.RWMutex {
	fileLocks.Lock()
	defer fileLocks.Unlock()
	l := fileLocks.m[k]
	if l == nil {
		l = &sharedLock{}
		fileLocks.m[k] = l
	}
	l.refs++
	return &l.mu
}

func unlockFor(k fileKey) {
	fileLocks.Lock()
	defer fileLocks.Unlock()
	if l := fileLocks.m[k]; l != nil {
		if l.refs--; l.refs == 0 {
			delete(fileLocks.m, k)
		}
	}
}

var _ io.ReaderAt = (*File)(nil)
var _ io.WriterAt = (*File)(nil)

// OpenFile opens name like os.OpenFile, adding O_DIRECT and O_CLOEXEC, for
// I/O through ctx. The alignment is the one libkaio enforces for the fd
// (kaio_fd_alignment), 4096 bytes when it reports none.
func OpenFile(ctx *Context, name string, flag int, perm os.FileMode) (*File, error) {
	if ctx == nil {
		return nil, newError("OpenFile", syscall.EINVAL, "the context is nil")
	}
	// A closed context is refused before the open, which may create or
	// truncate the file.
	if !ctx.gate.enter() {
		return nil, errShutdown("OpenFile")
	}
	defer ctx.gate.leave()
	f, err := os.OpenFile(name, flag|syscall.O_DIRECT|syscall.O_CLOEXEC, perm)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Err == syscall.EINVAL {
			return nil, newError("OpenFile", syscall.EINVAL, fmt.Sprintf(
				"open %s with O_DIRECT: invalid argument (the file system may not support direct I/O, as tmpfs does not)", name))
		}
		return nil, err
	}
	fd := int(f.Fd())
	memAlign, offAlign, err := FileAlignment(fd)
	if err != nil {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	align := offAlign
	if memAlign > align {
		align = memAlign
	}
	if align <= 0 {
		align = 4096
	}
	chunk := maxBounce
	if chunk < align {
		chunk = align
	}
	chunk -= chunk % align
	var key fileKey
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		key = fileKey{uint64(st.Dev), st.Ino}
	} else {
		f.Close()
		return nil, newError("OpenFile", syscall.EINVAL, "cannot tell the device and inode of "+name)
	}
	return &File{
		ctx:        ctx,
		f:          f,
		fd:         fd,
		align:      int64(align),
		chunk:      chunk,
		canRead:    flag&syscall.O_ACCMODE != syscall.O_WRONLY,
		appendMode: flag&syscall.O_APPEND != 0,
		regular:    fi.Mode().IsRegular(),
		gate:       newGate(),
		mu:         lockFor(key),
		lockKey:    key,
	}, nil
}

// Name returns the name given to OpenFile.
func (f *File) Name() string { return f.f.Name() }

// Fd returns the file descriptor (valid until Close).
func (f *File) Fd() uintptr { return uintptr(f.fd) }

// Alignment returns the alignment of offsets and lengths the file's I/O
// is rounded to.
func (f *File) Alignment() int { return int(f.align) }

// Stat returns the file's os.FileInfo.
func (f *File) Stat() (os.FileInfo, error) { return f.f.Stat() }

// Truncate changes the file's size, like os.File.Truncate.
func (f *File) Truncate(size int64) error {
	if !f.gate.enter() {
		return errFileClosed("Truncate")
	}
	defer f.gate.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Truncate(size)
}

// Sync makes the file's data and metadata durable (Context.Fsync).
func (f *File) Sync() error {
	if !f.gate.enter() {
		return errFileClosed("Fsync")
	}
	defer f.gate.leave()
	return f.ctx.Fsync(f.fd)
}

// Datasync makes the file's data durable (Context.Fdatasync).
func (f *File) Datasync() error {
	if !f.gate.enter() {
		return errFileClosed("Fdatasync")
	}
	defer f.gate.leave()
	return f.ctx.Fdatasync(f.fd)
}

// Close waits for the file's operations in progress, tells the context to
// forget what it cached about the fd (kaio_ctx_forget_fd), and closes it.
// A second Close returns an error wrapping syscall.EBADF.
func (f *File) Close() error {
	if !f.gate.close() {
		return errFileClosed("Close")
	}
	f.gate.wait()
	f.ctx.forgetFd(f.fd)
	unlockFor(f.lockKey)
	return f.f.Close()
}

func errFileClosed(op string) *Error {
	return newError(op, syscall.EBADF, "the file is closed")
}

func (f *File) down(off int64) int64 { return off - off%f.align }

// checkRange refuses n bytes at off that pass the largest offset whose
// aligned rounding is still an int64 (os.File gets EINVAL or EFBIG there).
func (f *File) checkRange(op string, off int64, n int) error {
	if off < 0 {
		return newError(op, syscall.EINVAL, fmt.Sprintf("offset %d is negative", off))
	}
	if off > math.MaxInt64-f.align-int64(n) {
		return newError(op, syscall.EINVAL, fmt.Sprintf("%d bytes at offset %d pass the largest offset a file can have", n, off))
	}
	return nil
}

func (f *File) up(off int64) int64 {
	if r := off % f.align; r != 0 {
		return off + f.align - r
	}
	return off
}

// ReadAt reads len(p) bytes at offset off, as io.ReaderAt: when it reads
// fewer (end of file), the error is io.EOF.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if !f.gate.enter() {
		return 0, errFileClosed("ReadAt")
	}
	defer f.gate.leave()
	if err := f.checkRange("ReadAt", off, len(p)); err != nil {
		return 0, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n := 0
	for len(p) > 0 {
		start, span := f.chunkSpan(off, len(p))
		b, err := f.ctx.bounce.get(span)
		if err != nil {
			return n, err
		}
		got64, err := f.ctx.do(opRead, "ReadAt", f.fd, b, nil, 0, span, start, 0)
		if err != nil {
			f.ctx.bounce.put(b)
			return n, err
		}
		got := int(got64)
		skip := int(off - start)
		k := 0
		if got > skip {
			k = copy(p, b.data[skip:got])
		}
		f.ctx.bounce.put(b)
		n += k
		p = p[k:]
		off += int64(k)
		if got < span { // end of file inside this chunk
			if len(p) > 0 {
				return n, io.EOF
			}
			break
		}
	}
	return n, nil
}

// WriteAt writes p at offset off, as io.WriterAt. A file opened with
// O_APPEND is refused, as by os.File.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	const op = "WriteAt"
	if !f.gate.enter() {
		return 0, errFileClosed(op)
	}
	defer f.gate.leave()
	if err := f.checkRange(op, off, len(p)); err != nil {
		return 0, err
	}
	if f.appendMode {
		return 0, newError(op, syscall.EINVAL, "WriteAt on a file opened with O_APPEND")
	}
	if len(p) == 0 {
		return 0, nil
	}
	aligned := off%f.align == 0 && int64(len(p))%f.align == 0
	var oldSize int64
	if aligned {
		f.mu.RLock()
		defer f.mu.RUnlock()
	} else {
		if !f.canRead {
			return 0, newError(op, syscall.EBADF, fmt.Sprintf(
				"writing %d bytes at offset %d needs a read-modify-write of %d-byte blocks, but the file was opened O_WRONLY: open it O_RDWR",
				len(p), off, f.align))
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.regular {
			fi, err := f.f.Stat()
			if err != nil {
				return 0, err
			}
			oldSize = fi.Size()
		}
	}
	wantSize := off + int64(len(p))
	if oldSize > wantSize {
		wantSize = oldSize
	}
	n, reached, err := f.writeChunks(p, off)
	// A device has no size to restore (Stat says 0, ftruncate fails).
	if !aligned && f.regular && reached > wantSize {
		// The last block went past what os.File would leave: cut it back.
		if terr := f.f.Truncate(wantSize); terr != nil && err == nil {
			err = terr
		}
	}
	return n, err
}

// chunkSpan is the aligned range, at most one bounce chunk long, that
// covers the start of the n bytes at off.
func (f *File) chunkSpan(off int64, n int) (start int64, span int) {
	start = f.down(off)
	end := f.up(off + int64(n))
	if end-start > int64(f.chunk) {
		end = start + int64(f.chunk)
	}
	return start, int(end - start)
}

// writeChunks writes p at off through bounce buffers; it returns the user
// bytes written and the end of the last aligned range written.
func (f *File) writeChunks(p []byte, off int64) (n int, reached int64, err error) {
	al := int(f.align)
	for len(p) > 0 {
		start, span := f.chunkSpan(off, len(p))
		b, err := f.ctx.bounce.get(span)
		if err != nil {
			return n, reached, err
		}
		buf := b.data[:span]
		head := int(off - start)
		k := span - head
		if k > len(p) {
			k = len(p)
		}
		tail := head + k
		if head > 0 {
			if err := f.fillBlock(b, 0, start); err != nil {
				f.ctx.bounce.put(b)
				return n, reached, err
			}
		}
		if tail < span && (head == 0 || span > al) {
			if err := f.fillBlock(b, span-al, start+int64(span-al)); err != nil {
				f.ctx.bounce.put(b)
				return n, reached, err
			}
		}
		copy(buf[head:tail], p[:k])
		w, err := f.ctx.do(opWrite, "WriteAt", f.fd, b, nil, 0, span, start, 0)
		f.ctx.bounce.put(b)
		if err != nil {
			return n, reached, err
		}
		if int(w) < span {
			done := int(w) - head
			if done < 0 {
				done = 0
			}
			if done > k {
				done = k
			}
			if w > 0 {
				reached = start + w
			}
			return n + done, reached, io.ErrShortWrite
		}
		reached = start + int64(span)
		n += k
		p = p[k:]
		off += int64(k)
	}
	return n, reached, nil
}

// fillBlock reads the aligned block at off into b[at:at+align], zeroing
// what lies past end of file.
func (f *File) fillBlock(b *Buffer, at int, off int64) error {
	al := int(f.align)
	got, err := f.ctx.do(opRead, "WriteAt", f.fd, b, nil, at, al, off, 0)
	if err != nil {
		return err
	}
	blk := b.data[at : at+al]
	for i := int(got); i < al; i++ {
		blk[i] = 0
	}
	return nil
}

// Bounce buffers, pooled per Context by power-of-two size class.
const (
	minBounce      = 4096
	maxBounce      = 1 << 20
	bounceClasses  = 9 // 4 KiB .. 1 MiB
	bouncePerClass = 16
)

type bouncePool struct {
	mu     sync.Mutex
	closed bool
	free   [bounceClasses][]*Buffer
}

func bounceClass(n int) int {
	c := 0
	for size := minBounce; size < n; size <<= 1 {
		c++
	}
	return c
}

func (p *bouncePool) get(n int) (*Buffer, error) {
	c := bounceClass(n)
	if c >= bounceClasses {
		return NewBuffer(n)
	}
	p.mu.Lock()
	if l := len(p.free[c]); l > 0 {
		b := p.free[c][l-1]
		p.free[c] = p.free[c][:l-1]
		p.mu.Unlock()
		return b, nil
	}
	p.mu.Unlock()
	return NewBuffer(minBounce << c)
}

func (p *bouncePool) put(b *Buffer) {
	if c := bounceClass(b.n); c < bounceClasses && minBounce<<c == b.n {
		p.mu.Lock()
		if !p.closed && len(p.free[c]) < bouncePerClass {
			p.free[c] = append(p.free[c], b)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	b.Free()
}

func (p *bouncePool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.free {
		for _, b := range p.free[c] {
			b.Free()
		}
		p.free[c] = nil
	}
}
