package kaio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// Test files live on a file system that accepts O_DIRECT, never in tmpfs
// by default: a directory made under $KAIO_TEST_DIR if set, else under
// /var/tmp, else under the package directory.
var (
	testDir    string
	skipReason string
)

func TestMain(m *testing.M) {
	testDir, skipReason = pickTestDir()
	code := m.Run()
	if testDir != "" {
		os.RemoveAll(testDir)
	}
	os.Exit(code)
}

func pickTestDir() (string, string) {
	var bases []string
	if d := os.Getenv("KAIO_TEST_DIR"); d != "" {
		bases = []string{d}
	} else {
		bases = []string{"/var/tmp", "."}
	}
	var why []string
	for _, base := range bases {
		dir, err := os.MkdirTemp(base, "kaio-go-test-")
		if err != nil {
			why = append(why, fmt.Sprintf("%s: %v", base, err))
			continue
		}
		probe := filepath.Join(dir, "probe")
		fd, err := syscall.Open(probe, syscall.O_CREAT|syscall.O_RDWR|syscall.O_DIRECT|syscall.O_CLOEXEC, 0o644)
		if err != nil {
			os.RemoveAll(dir)
			why = append(why, fmt.Sprintf("%s refuses O_DIRECT (%v)", base, err))
			continue
		}
		syscall.Close(fd)
		os.Remove(probe)
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		return dir, ""
	}
	return "", "no directory for O_DIRECT test files: " + strings.Join(why, "; ") +
		" (set KAIO_TEST_DIR to a directory on a disk file system)"
}

func needDir(t testing.TB) string {
	t.Helper()
	if testDir == "" {
		t.Skip(skipReason)
	}
	return testDir
}

var fileSeq atomic.Int64

// tempPath returns a new file name in the test directory.
func tempPath(t testing.TB) string {
	dir := needDir(t)
	p := filepath.Join(dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "_"), fileSeq.Add(1)))
	t.Cleanup(func() { os.Remove(p) })
	return p
}

// pattern returns the expected bytes at [off, off+n) of a pattern file.
func pattern(off int64, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		x := off + int64(i)
		p[i] = byte(x*7 + x>>12*13 + x>>20)
	}
	return p
}

// patternFile creates a file of size bytes of pattern (written through the
// page cache; O_DIRECT reads see it).
func patternFile(t testing.TB, size int) string {
	t.Helper()
	p := tempPath(t)
	if err := os.WriteFile(p, pattern(0, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// openDirect opens path with O_DIRECT (plus flags), closed at cleanup.
func openDirect(t testing.TB, path string, flags int) int {
	t.Helper()
	fd, err := syscall.Open(path, flags|syscall.O_DIRECT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("open %s with O_DIRECT: %v", path, err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}

func newCtx(t testing.TB, capacity int) *Context {
	t.Helper()
	ctx, err := NewContext(capacity)
	if err != nil {
		t.Fatalf("NewContext(%d): %v", capacity, err)
	}
	t.Cleanup(func() { ctx.Close() })
	return ctx
}

func newBuf(t testing.TB, n int) *Buffer {
	t.Helper()
	b, err := NewBuffer(n)
	if err != nil {
		t.Fatalf("NewBuffer(%d): %v", n, err)
	}
	t.Cleanup(b.Free)
	return b
}

// wantErr checks that err is a *Error for op wrapping errno, whose message
// contains each of words.
func wantErr(t testing.TB, err error, op string, errno syscall.Errno, words ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", op, errno)
	}
	if !errors.Is(err, errno) {
		t.Fatalf("%s: error %q is not %v", op, err, errno)
	}
	var ke *Error
	if !errors.As(err, &ke) {
		t.Fatalf("%s: error %T %q is not a *kaio.Error", op, err, err)
	}
	if ke.Op != op || ke.Errno != errno || ke.Msg == "" {
		t.Fatalf("error %#v: want Op %q, Errno %v and a message", ke, op, errno)
	}
	if !strings.HasPrefix(err.Error(), "kaio: "+op+": ") {
		t.Fatalf("error text %q lacks the prefix %q", err, "kaio: "+op+": ")
	}
	for _, w := range words {
		if !strings.Contains(ke.Msg, w) {
			t.Fatalf("%s: message %q does not contain %q", op, ke.Msg, w)
		}
	}
}

// ---- context and buffers ---------------------------------------------------

func TestVersion(t *testing.T) {
	v := Version()
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(v) {
		t.Fatalf("Version() = %q", v)
	}
}

func TestNewContext(t *testing.T) {
	ctx := newCtx(t, 8)
	if ctx.Capacity() != 8 {
		t.Fatalf("Capacity() = %d", ctx.Capacity())
	}
	if n := ctx.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d on a new context", n)
	}
	if err := ctx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestNewContextErrors(t *testing.T) {
	_, err := NewContext(0)
	wantErr(t, err, "NewContext", syscall.EINVAL, "capacity 0") // the library's sentence
	_, err = NewContext(MaxCapacity + 1)
	wantErr(t, err, "NewContext", syscall.EINVAL, strconv.Itoa(MaxCapacity+1))
	_, err = NewContext(-1)
	wantErr(t, err, "NewContext", syscall.EINVAL, "-1")
}

func TestBuffer(t *testing.T) {
	b := newBuf(t, 1<<20)
	if b.Len() != 1<<20 || len(b.Bytes()) != 1<<20 {
		t.Fatalf("Len %d, len(Bytes) %d", b.Len(), len(b.Bytes()))
	}
	p := b.Bytes()
	if addr := uintptr(unsafe.Pointer(&p[0])); addr%4096 != 0 {
		t.Fatalf("buffer at %#x is not page-aligned", addr)
	}
	for i, c := range p {
		if c != 0 {
			t.Fatalf("byte %d of a new buffer is %d", i, c)
		}
	}
	copy(p, "abcd")
	if string(b.Bytes()[:4]) != "abcd" {
		t.Fatal("buffer not writable")
	}
	b.Free()
	b.Free() // idempotent
	if b.Bytes() != nil || b.Len() != 0 {
		t.Fatal("Bytes/Len after Free")
	}
	var nilBuf *Buffer
	nilBuf.Free()

	_, err := NewBuffer(0)
	wantErr(t, err, "NewBuffer", syscall.EINVAL, "length 0")
	_, err = NewBuffer(-5)
	wantErr(t, err, "NewBuffer", syscall.EINVAL, "-5")
}

// ---- Context I/O -------------------------------------------------------------

func TestReadWriteFsync(t *testing.T) {
	ctx := newCtx(t, 4)
	fd := openDirect(t, tempPath(t), syscall.O_CREAT|syscall.O_RDWR)
	w := newBuf(t, 64<<10)
	for half := int64(0); half < 2; half++ {
		copy(w.Bytes(), pattern(half<<16, 64<<10))
		n, err := ctx.WriteAt(fd, w, half<<16)
		if err != nil || n != 64<<10 {
			t.Fatalf("WriteAt: %d, %v", n, err)
		}
	}
	if err := ctx.Fsync(fd); err != nil {
		t.Fatalf("Fsync: %v", err)
	}
	if err := ctx.Fdatasync(fd); err != nil {
		t.Fatalf("Fdatasync: %v", err)
	}
	r := newBuf(t, 128<<10)
	n, err := ctx.ReadAt(fd, r, 0)
	if err != nil || n != 128<<10 {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	if !bytes.Equal(r.Bytes(), pattern(0, 128<<10)) {
		t.Fatal("read data differs from written data")
	}
	var st syscall.Stat_t
	syscall.Fstat(fd, &st)
	if st.Size != 128<<10 {
		t.Fatalf("size %d", st.Size)
	}
}

func TestRWFlags(t *testing.T) {
	ctx := newCtx(t, 1) // one slot: flags must not stick to it
	fd := openDirect(t, tempPath(t), syscall.O_CREAT|syscall.O_RDWR)
	b := newBuf(t, 4096)
	size := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return st.Size
	}
	copy(b.Bytes(), pattern(0, 4096))
	if n, err := ctx.WriteAtFlags(fd, b, 0, RWF_DSYNC); err != nil || n != 4096 {
		t.Fatalf("WriteAtFlags(RWF_DSYNC): %d, %v", n, err)
	}
	if n, err := ctx.WriteAtFlags(fd, b, 4096, RWF_SYNC|RWF_DSYNC); err != nil || n != 4096 {
		t.Fatalf("WriteAtFlags(RWF_SYNC|RWF_DSYNC): %d, %v", n, err)
	}
	copy(b.Bytes(), pattern(8192, 4096))
	if n, err := ctx.WriteAtFlags(fd, b, 0, RWF_APPEND); err != nil || n != 4096 { // off ignored
		t.Fatalf("WriteAtFlags(RWF_APPEND): %d, %v", n, err)
	}
	if s := size(); s != 3*4096 {
		t.Fatalf("size %d after an appending write, want %d", s, 3*4096)
	}
	copy(b.Bytes(), pattern(0, 4096))
	if n, err := ctx.WriteAt(fd, b, 0); err != nil || n != 4096 { // at 0 again: not appended
		t.Fatalf("WriteAt after RWF_APPEND: %d, %v", n, err)
	}
	if s := size(); s != 3*4096 {
		t.Fatalf("size %d: a plain WriteAt after RWF_APPEND appended", s)
	}
	r := newBuf(t, 3*4096)
	if n, err := ctx.ReadAt(fd, r, 0); err != nil || n != 3*4096 {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	want := append(pattern(0, 4096), pattern(0, 4096)...)
	want = append(want, pattern(8192, 4096)...)
	if !bytes.Equal(r.Bytes(), want) {
		t.Fatal("data differs")
	}
	// RWF_NOWAIT: done, or declined (EAGAIN), or not supported by the file.
	n, err := ctx.ReadAtFlags(fd, r, 0, RWF_NOWAIT)
	if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("ReadAtFlags(RWF_NOWAIT): %v", err)
	}
	if err == nil && n != 3*4096 {
		t.Fatalf("ReadAtFlags(RWF_NOWAIT): %d bytes", n)
	}

	_, err = ctx.ReadAtFlags(fd, r, 0, RWF_APPEND)
	wantErr(t, err, "ReadAtFlags", syscall.EINVAL, "KAIO_RWF_APPEND", "writes")
	_, err = ctx.WriteAtFlags(fd, b, 0, 1<<20)
	wantErr(t, err, "WriteAtFlags", syscall.EINVAL, "unknown rw_flags")
	_, err = ctx.WriteAtFlags(fd, b, 0, -1)
	wantErr(t, err, "WriteAtFlags", syscall.EINVAL, "32 bits")
	if big := int64(1) << 33; int64(int(big)) == big { // 64-bit int only
		_, err = ctx.WriteAtFlags(fd, b, 0, int(big))
		wantErr(t, err, "WriteAtFlags", syscall.EINVAL, "32 bits")
	}
	_, err = ctx.WriteAtFlags(fd, nil, 0, 0)
	wantErr(t, err, "WriteAtFlags", syscall.EINVAL, "nil")
	_, err = ctx.ReadAtFlags(fd, nil, 0, 0)
	wantErr(t, err, "ReadAtFlags", syscall.EINVAL, "nil")
	if s := size(); s != 3*4096 {
		t.Fatalf("size %d: a refused write changed the file", s)
	}
	if n := ctx.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d after refusals", n)
	}
}

func TestReadvWritev(t *testing.T) {
	ctx := newCtx(t, 1) // one slot: a vector must not stick to it
	fd := openDirect(t, tempPath(t), syscall.O_CREAT|syscall.O_RDWR)
	a, b, c := newBuf(t, 4096), newBuf(t, 8192), newBuf(t, 4096)
	copy(a.Bytes(), pattern(0, 4096))
	copy(b.Bytes(), pattern(4096, 8192))
	copy(c.Bytes(), pattern(12288, 4096))
	if n, err := ctx.WritevAt(fd, []*Buffer{a, b, c}, 0); err != nil || n != 16384 {
		t.Fatalf("WritevAt: %d, %v", n, err)
	}
	if n, err := ctx.WritevAtFlags(fd, []*Buffer{c}, 16384, RWF_DSYNC); err != nil || n != 4096 {
		t.Fatalf("WritevAtFlags: %d, %v", n, err)
	}
	// A plain read on the same slot after the vectors.
	whole := newBuf(t, 20480)
	if n, err := ctx.ReadAt(fd, whole, 0); err != nil || n != 20480 {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	want := append(pattern(0, 16384), pattern(12288, 4096)...)
	if !bytes.Equal(whole.Bytes(), want) {
		t.Fatal("WritevAt wrote other data")
	}
	x, y := newBuf(t, 12288), newBuf(t, 12288)
	if n, err := ctx.ReadvAt(fd, []*Buffer{x, y}, 0); err != nil || n != 20480 { // short at EOF
		t.Fatalf("ReadvAt: %d, %v; want 20480", n, err)
	}
	if !bytes.Equal(append(append([]byte{}, x.Bytes()...), y.Bytes()[:8192]...), want) {
		t.Fatal("ReadvAt read other data")
	}
	if n, err := ctx.ReadvAtFlags(fd, []*Buffer{x}, 4096, 0); err != nil || n != 12288 {
		t.Fatalf("ReadvAtFlags: %d, %v", n, err)
	}

	_, err := ctx.ReadvAt(fd, nil, 0)
	wantErr(t, err, "ReadvAt", syscall.EINVAL, "1 to 1024")
	_, err = ctx.ReadvAt(fd, make([]*Buffer, 1025), 0)
	wantErr(t, err, "ReadvAt", syscall.EINVAL, "1 to 1024")
	_, err = ctx.WritevAt(fd, []*Buffer{a, nil}, 0)
	wantErr(t, err, "WritevAt", syscall.EINVAL, "buffer 1", "nil")
	freed := newBuf(t, 4096)
	freed.Free()
	_, err = ctx.WritevAt(fd, []*Buffer{a, b, freed}, 0)
	wantErr(t, err, "WritevAt", syscall.EINVAL, "buffer 2", "freed")
	odd := newBuf(t, 100)
	_, err = ctx.ReadvAt(fd, []*Buffer{a, odd}, 0)
	wantErr(t, err, "ReadvAt", syscall.EINVAL, "align")
	_, err = ctx.ReadvAtFlags(fd, []*Buffer{a}, 0, RWF_APPEND)
	wantErr(t, err, "ReadvAtFlags", syscall.EINVAL, "KAIO_RWF_APPEND")
	_, err = ctx.ReadvAt(fd, []*Buffer{a}, -1)
	wantErr(t, err, "ReadvAt", syscall.EINVAL, "negative")
	// The refusals took nothing: the buffers are not held, Free drops them.
	for _, h := range []*Buffer{a, b, odd} {
		if st := h.state.Load(); st != 0 {
			t.Fatalf("a buffer of a refused vector is still held (state %#x)", st)
		}
	}
	if n := ctx.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d after refusals", n)
	}
	if n, err := ctx.ReadAt(fd, a, 0); err != nil || n != 4096 {
		t.Fatalf("ReadAt after refusals: %d, %v", n, err)
	}
}

// Buffers freed while a vectored read is in flight stay valid for the
// kernel (each operation holds its own reference).
func TestReadvFreeDuringIO(t *testing.T) {
	ctx := newCtx(t, 8)
	fd := openDirect(t, patternFile(t, 1<<20), syscall.O_RDONLY)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				bufs := make([]*Buffer, 3)
				for k := range bufs {
					b, err := NewBuffer(4096)
					if err != nil {
						t.Error(err)
						return
					}
					bufs[k] = b
				}
				done := make(chan struct{})
				go func() { // free them while the read may be in flight
					for _, b := range bufs {
						b.Free()
					}
					close(done)
				}()
				off := int64((g*20+i)%80) * 12288
				_, err := ctx.ReadvAt(fd, bufs, off)
				<-done
				if err != nil && !errors.Is(err, syscall.EINVAL) { // EINVAL: freed before
					t.Error(err)
				}
			}
		}(g)
	}
	wg.Wait()
}

func TestShortReadAtEOF(t *testing.T) {
	ctx := newCtx(t, 4)
	fd := openDirect(t, patternFile(t, 4096+100), syscall.O_RDONLY)
	b := newBuf(t, 8192)
	n, err := ctx.ReadAt(fd, b, 0)
	if err != nil || n != 4196 {
		t.Fatalf("ReadAt across EOF: %d, %v; want 4196, nil", n, err)
	}
	if !bytes.Equal(b.Bytes()[:n], pattern(0, n)) {
		t.Fatal("data differs")
	}
	n, err = ctx.ReadAt(fd, b, 4096)
	if err != nil || n != 100 {
		t.Fatalf("ReadAt at 4096: %d, %v; want 100, nil", n, err)
	}
	n, err = ctx.ReadAt(fd, b, 1<<20)
	if err != nil || n != 0 {
		t.Fatalf("ReadAt past EOF: %d, %v; want 0, nil", n, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := newCtx(t, 4)
	path := patternFile(t, 1<<16)
	fd := openDirect(t, path, syscall.O_RDONLY)
	b := newBuf(t, 4096)

	_, err := ctx.ReadAt(-1, b, 0)
	wantErr(t, err, "ReadAt", syscall.EBADF, "-1")
	_, err = ctx.WriteAt(-1, b, 0)
	wantErr(t, err, "WriteAt", syscall.EBADF)

	closed, _ := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECT, 0)
	syscall.Close(closed)
	_, err = ctx.ReadAt(closed, b, 0)
	wantErr(t, err, "ReadAt", syscall.EBADF)

	_, err = ctx.ReadAt(fd, b, 100)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "aligned", "100")

	odd := newBuf(t, 100)
	_, err = ctx.ReadAt(fd, odd, 0)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "aligned")

	plain, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(plain)
	_, err = ctx.ReadAt(plain, b, 0)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "O_DIRECT")

	_, err = ctx.WriteAt(fd, b, 0) // read-only fd
	wantErr(t, err, "WriteAt", syscall.EBADF)

	// An fd a C int cannot hold is refused, not passed modulo 2^32 (which
	// would be fd itself here).
	if big := int64(fd) + 1<<32; int64(int(big)) == big { // 64-bit int only
		_, err = ctx.ReadAt(int(big), b, 0)
		wantErr(t, err, "ReadAt", syscall.EBADF, "C int")
		wantErr(t, ctx.Fsync(int(big)), "Fsync", syscall.EBADF, "C int")
		_, _, err = FileAlignment(int(big))
		wantErr(t, err, "FileAlignment", syscall.EBADF, "C int")
	}

	_, err = ctx.ReadAt(fd, b, -4096)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "negative")
	_, err = ctx.ReadAt(fd, nil, 0)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "nil")
	freed := newBuf(t, 4096)
	freed.Free()
	_, err = ctx.ReadAt(fd, freed, 0)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "freed")

	wantErr(t, ctx.Fsync(-1), "Fsync", syscall.EBADF)
	wantErr(t, ctx.Fdatasync(-1), "Fdatasync", syscall.EBADF)

	// A refusal takes nothing: the context still works.
	if n, err := ctx.ReadAt(fd, b, 4096); err != nil || n != 4096 {
		t.Fatalf("ReadAt after refusals: %d, %v", n, err)
	}
	if n := ctx.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d after refusals", n)
	}

	// Errors wrap syscall.Errno, EAGAIN included.
	e := error(&Error{Op: "ReadAt", Errno: syscall.EAGAIN, Msg: "x"})
	if !errors.Is(e, syscall.EAGAIN) || errors.Is(e, syscall.EINVAL) {
		t.Fatal("errors.Is on *Error")
	}
	if (&Error{Op: "Fsync", Errno: syscall.EIO}).Error() != "kaio: Fsync: "+syscall.EIO.Error() {
		t.Fatal("Error() without a message")
	}
}

func TestFileAlignment(t *testing.T) {
	path := patternFile(t, 8192)
	fd := openDirect(t, path, syscall.O_RDONLY)
	mem, off, err := FileAlignment(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("direct-I/O alignment of %s: memory %d, offset %d", path, mem, off)
	if off&(off-1) != 0 || mem&(mem-1) != 0 {
		t.Fatalf("alignment not a power of two: %d, %d", mem, off)
	}
	plain, _ := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	defer syscall.Close(plain)
	if mem, off, err := FileAlignment(plain); err != nil || mem != 0 || off != 0 {
		t.Fatalf("FileAlignment without O_DIRECT: %d, %d, %v", mem, off, err)
	}
	_, _, err = FileAlignment(-1)
	wantErr(t, err, "FileAlignment", syscall.EBADF)
}

// More goroutines than capacity: they wait for room, none fails, and the
// library never has more than capacity operations in flight.
func TestCapacityWaiting(t *testing.T) {
	const capacity, workers, reads, blocks = 2, 64, 20, 256
	ctx := newCtx(t, capacity)
	fd := openDirect(t, patternFile(t, blocks*4096), syscall.O_RDONLY)
	stop := make(chan struct{})
	var maxSeen atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(ctx.Inflight()); n > maxSeen.Load() {
				maxSeen.Store(n)
			}
			// Sleep, not spin: a goroutine that never lets its P go idle
			// delays the poller, and so the completions (see the README).
			time.Sleep(20 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			b, err := NewBuffer(4096)
			if err != nil {
				errs <- err
				return
			}
			defer b.Free()
			for i := 0; i < reads; i++ {
				blk := int64((w*reads + i) % blocks)
				n, err := ctx.ReadAt(fd, b, blk*4096)
				if err != nil || n != 4096 {
					errs <- fmt.Errorf("ReadAt block %d: %d, %v", blk, n, err)
					return
				}
				if !bytes.Equal(b.Bytes(), pattern(blk*4096, 4096)) {
					errs <- fmt.Errorf("block %d: wrong data", blk)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := maxSeen.Load(); m > capacity {
		t.Fatalf("%d operations in flight on a context of capacity %d", m, capacity)
	}
}

// Goroutines waiting for room are served in arrival order.
func TestCapacityWaitIsFIFO(t *testing.T) {
	ctx := newCtx(t, 1)
	// Hold the only slot by hand while goroutines queue up one by one.
	idx := <-ctx.free
	const waiters = 8
	// Each goroutine appends a block of its own number: with one slot the
	// appends run one after another, so the file records the order in
	// which the goroutines were served (what they did after their call
	// returned would not: a goroutine served later may return first).
	fd := openDirect(t, tempPath(t), syscall.O_CREAT|syscall.O_RDWR)
	var wg sync.WaitGroup
	for i := 0; i < waiters; i++ {
		b := newBuf(t, 4096)
		for j := range b.Bytes() {
			b.Bytes()[j] = byte(i)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := ctx.WriteAtFlags(fd, b, 0, RWF_APPEND); err != nil {
				t.Error(err)
			}
		}(i)
		// Wait until goroutine i is parked on the queue before starting i+1.
		deadline := time.Now().Add(5 * time.Second)
		for !waitingOnFree(ctx, i+1) {
			if time.Now().After(deadline) {
				t.Fatal("goroutine did not start waiting")
			}
			time.Sleep(time.Millisecond)
		}
	}
	ctx.free <- idx
	wg.Wait()
	r := newBuf(t, waiters*4096)
	if n, err := ctx.ReadAt(fd, r, 0); err != nil || n != waiters*4096 {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	for pos := 0; pos < waiters; pos++ {
		if got := int(r.Bytes()[pos*4096]); got != pos {
			t.Fatalf("goroutine %d was served at position %d", got, pos)
		}
	}
}

// waitingOnFree reports whether at least n goroutines are parked in
// Context.do on a channel receive: waiting for a slot, in the tests that
// hold every slot by hand.
func waitingOnFree(ctx *Context, n int) bool {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	count := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		lines := strings.SplitN(g, "\n", 3)
		if len(lines) >= 2 && strings.Contains(lines[0], "[chan receive") &&
			strings.HasPrefix(lines[1], "kaio.(*Context).do(") {
			count++
		}
	}
	return count >= n
}

func TestCloseSemantics(t *testing.T) {
	ctx, err := NewContext(4)
	if err != nil {
		t.Fatal(err)
	}
	fd := openDirect(t, patternFile(t, 64*4096), syscall.O_RDONLY)
	const workers = 200
	var wg sync.WaitGroup
	var ok, shut, inside atomic.Int64
	other := make(chan error, workers)
	start := make(chan struct{})
	for w := 0; w < workers; w++ {
		b := newBuf(t, 4096)
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			<-start
			inside.Add(1)
			n, err := ctx.ReadAt(fd, b, int64(w%64)*4096)
			inside.Add(-1)
			switch {
			case err == nil && n == 4096:
				ok.Add(1)
			case errors.Is(err, syscall.ESHUTDOWN):
				shut.Add(1)
			default:
				other <- fmt.Errorf("ReadAt: %d, %v", n, err)
			}
		}(w)
	}
	close(start)
	for ok.Load() == 0 {
		time.Sleep(100 * time.Microsecond)
	}
	if err := ctx.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	close(other)
	for err := range other {
		t.Fatal(err)
	}
	if ok.Load()+shut.Load() != workers {
		t.Fatalf("%d ok + %d ESHUTDOWN != %d", ok.Load(), shut.Load(), workers)
	}
	t.Logf("Close during a run: %d reads completed, %d refused with ESHUTDOWN", ok.Load(), shut.Load())

	b := newBuf(t, 4096)
	_, err = ctx.ReadAt(fd, b, 0)
	wantErr(t, err, "ReadAt", syscall.ESHUTDOWN)
	_, err = ctx.WriteAt(fd, b, 0)
	wantErr(t, err, "WriteAt", syscall.ESHUTDOWN)
	wantErr(t, ctx.Fsync(fd), "Fsync", syscall.ESHUTDOWN)
	wantErr(t, ctx.Fdatasync(fd), "Fdatasync", syscall.ESHUTDOWN)
	wantErr(t, ctx.Close(), "Close", syscall.ESHUTDOWN)
	if ctx.Inflight() != 0 {
		t.Fatal("Inflight after Close")
	}
}

// Close waits for a goroutine that is waiting for room in a full queue.
func TestCloseWaitsForQueuedGoroutines(t *testing.T) {
	ctx, err := NewContext(1)
	if err != nil {
		t.Fatal(err)
	}
	fd := openDirect(t, patternFile(t, 4096), syscall.O_RDONLY)
	idx := <-ctx.free // the queue is full
	b := newBuf(t, 4096)
	res := make(chan error, 1)
	go func() {
		_, err := ctx.ReadAt(fd, b, 0)
		res <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !waitingOnFree(ctx, 1) {
		if time.Now().After(deadline) {
			t.Fatal("goroutine did not start waiting")
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- ctx.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a goroutine waited for room", err)
	case <-time.After(50 * time.Millisecond):
	}
	ctx.free <- idx // room again: the waiter runs, then Close finishes
	if err := <-res; err != nil {
		t.Fatalf("the waiting ReadAt: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestBufferFreeDuringIO(t *testing.T) {
	ctx := newCtx(t, 8)
	fd := openDirect(t, patternFile(t, 4<<20), syscall.O_RDONLY)
	for i := 0; i < 50; i++ {
		b, err := NewBuffer(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := ctx.ReadAt(fd, b, int64(i%4)<<20)
			done <- err
		}()
		if i%2 == 0 {
			runtime.Gosched()
		}
		b.Free() // never blocks; an operation in flight keeps its own reference
		if err := <-done; err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("ReadAt with a buffer freed meanwhile: %v", err)
		}
		b.Free()
	}
	if n := ctx.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d", n)
	}
}

// ---- File --------------------------------------------------------------------

func openFile(t testing.TB, ctx *Context, path string, flag int) *File {
	t.Helper()
	f, err := OpenFile(ctx, path, flag, 0o644)
	if err != nil {
		t.Fatalf("OpenFile %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFileUnalignedReadWrite(t *testing.T) {
	t.Run("fd-alignment", func(t *testing.T) { testFileUnaligned(t, 0) })
	// A coarser alignment than the file system's is valid too: it checks
	// the block arithmetic with 4096-byte blocks where the disk has 512.
	t.Run("align-4096", func(t *testing.T) { testFileUnaligned(t, 4096) })
}

func testFileUnaligned(t *testing.T, align int) {
	ctx := newCtx(t, 8)
	path := tempPath(t)
	f := openFile(t, ctx, path, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if f.Alignment() <= 0 || f.Name() != path {
		t.Fatalf("Alignment %d, Name %q", f.Alignment(), f.Name())
	}
	if align > f.Alignment() {
		f.align = int64(align)
	}
	t.Logf("blocks of %d bytes", f.Alignment())
	rng := rand.New(rand.NewSource(5))
	var model []byte
	write := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		rng.Read(p)
		got, err := f.WriteAt(p, off)
		if err != nil || got != n {
			t.Fatalf("WriteAt(%d bytes, %d): %d, %v", n, off, got, err)
		}
		if end := off + int64(n); end > int64(len(model)) {
			model = append(model, make([]byte, end-int64(len(model)))...)
		}
		copy(model[off:], p)
		fi, err := f.Stat()
		if err != nil || fi.Size() != int64(len(model)) {
			t.Fatalf("after WriteAt(%d bytes, %d): size %d, want %d (%v)", n, off, fi.Size(), len(model), err)
		}
	}
	write(0, 1)                // inside one block, past EOF
	write(100, 50)             // inside the same block
	write(5000, 3)             // a hole before it
	write(4090, 20)            // across a block boundary
	write(8192, 4096)          // aligned
	write(3*(1<<20)+17, 1000)  // far, extends
	write(12345, 2*(1<<20)+99) // several chunks, unaligned both ends
	write(0, 300)              // start again, no growth
	for i := 0; i < 200; i++ {
		write(rng.Int63n(int64(len(model))+10000), 1+rng.Intn(20000))
	}
	for i := 0; i < 200; i++ {
		off := rng.Int63n(int64(len(model)))
		n := 1 + rng.Intn(30000)
		p := make([]byte, n)
		got, err := f.ReadAt(p, off)
		want := model[off:]
		if len(want) > n {
			want = want[:n]
		}
		if got != len(want) || !bytes.Equal(p[:got], want) {
			t.Fatalf("ReadAt(%d bytes, %d): %d bytes, want %d (data equal: %v)", n, off, got, len(want), bytes.Equal(p[:got], want))
		}
		if got < n && err != io.EOF || got == n && err != nil {
			t.Fatalf("ReadAt(%d bytes, %d) returned %d, %v", n, off, got, err)
		}
	}
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, model) {
		t.Fatalf("file content differs from the model (%d vs %d bytes)", len(onDisk), len(model))
	}
}

func TestFileReadAtEOF(t *testing.T) {
	ctx := newCtx(t, 4)
	f := openFile(t, ctx, patternFile(t, 10000), os.O_RDONLY)
	p := make([]byte, 100)
	if n, err := f.ReadAt(p, 9950); n != 50 || err != io.EOF || !bytes.Equal(p[:50], pattern(9950, 50)) {
		t.Fatalf("ReadAt across EOF: %d, %v", n, err)
	}
	if n, err := f.ReadAt(p, 9900); n != 100 || err != nil || !bytes.Equal(p, pattern(9900, 100)) {
		t.Fatalf("ReadAt ending at EOF: %d, %v", n, err)
	}
	if n, err := f.ReadAt(p, 10000); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt at EOF: %d, %v", n, err)
	}
	if n, err := f.ReadAt(p, 1<<30); n != 0 || err != io.EOF {
		t.Fatalf("ReadAt past EOF: %d, %v", n, err)
	}
	if n, err := f.ReadAt(nil, 5); n != 0 || err != nil {
		t.Fatalf("ReadAt of nothing: %d, %v", n, err)
	}
	_, err := f.ReadAt(p, -1)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "negative")
	// io.SectionReader works on it.
	all, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil || !bytes.Equal(all, pattern(0, 10000)) {
		t.Fatalf("io.SectionReader: %d bytes, %v", len(all), err)
	}
}

// Unaligned writes to neighbouring records that share blocks, from 64
// goroutines at once through two Files on the same path: the read-modify-
// writes must not lose each other (the Files share the file's lock; each
// one's read-modify-write and truncate-back would otherwise undo the
// other's writes).
func TestFileConcurrentUnalignedWriters(t *testing.T) {
	ctx := newCtx(t, 16)
	path := tempPath(t)
	files := []*File{openFile(t, ctx, path, os.O_RDWR|os.O_CREATE), openFile(t, ctx, path, os.O_RDWR)}
	const writers, rec = 64, 100
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte('A' + w%26)}, rec)
			if n, err := files[w%2].WriteAt(p, int64(w*rec)); n != rec || err != nil {
				t.Errorf("writer %d: %d, %v", w, n, err)
			}
		}(w)
	}
	wg.Wait()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*rec {
		t.Fatalf("size %d, want %d", len(got), writers*rec)
	}
	for w := 0; w < writers; w++ {
		if want := bytes.Repeat([]byte{byte('A' + w%26)}, rec); !bytes.Equal(got[w*rec:(w+1)*rec], want) {
			t.Fatalf("record %d was lost", w)
		}
	}
}

// The lock Files share is the file's, and goes when its last File closes.
func TestFileSharedLock(t *testing.T) {
	ctx := newCtx(t, 4)
	path, other := tempPath(t), tempPath(t)
	a, err := OpenFile(ctx, path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenFile(ctx, path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := OpenFile(ctx, other, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if a.mu != b.mu || a.mu == c.mu {
		t.Fatal("Files on one file must share its lock, and only those")
	}
	count := func(k fileKey) int {
		fileLocks.Lock()
		defer fileLocks.Unlock()
		if l := fileLocks.m[k]; l != nil {
			return l.refs
		}
		return 0
	}
	if n := count(a.lockKey); n != 2 {
		t.Fatalf("%d Files counted on the file, want 2", n)
	}
	a.Close()
	a.Close() // a second Close must not drop b's share
	if n := count(b.lockKey); n != 1 {
		t.Fatalf("%d Files counted after one closed (twice), want 1", n)
	}
	b.Close()
	c.Close()
	if n := count(b.lockKey) + count(c.lockKey); n != 0 {
		t.Fatalf("locks left after every File closed: %d", n)
	}
}

func TestFileSyncTruncateStat(t *testing.T) {
	ctx := newCtx(t, 4)
	f := openFile(t, ctx, tempPath(t), os.O_RDWR|os.O_CREATE)
	if _, err := f.WriteAt([]byte("hello"), 3); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if err := f.Datasync(); err != nil {
		t.Fatalf("Datasync: %v", err)
	}
	if err := f.Truncate(4); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() != 4 {
		t.Fatalf("Stat: %v, %v", fi, err)
	}
	p := make([]byte, 10)
	if n, err := f.ReadAt(p, 0); n != 4 || err != io.EOF || string(p[:4]) != "\x00\x00\x00h" {
		t.Fatalf("ReadAt: %d, %v, %q", n, err, p[:n])
	}
	if f.Fd() == 0 {
		t.Fatal("Fd")
	}
}

func TestFileWriteModes(t *testing.T) {
	ctx := newCtx(t, 4)
	path := tempPath(t)
	wo := openFile(t, ctx, path, os.O_WRONLY|os.O_CREATE)
	block := bytes.Repeat([]byte{'x'}, wo.Alignment())
	if n, err := wo.WriteAt(block, 0); n != len(block) || err != nil {
		t.Fatalf("aligned WriteAt on O_WRONLY: %d, %v", n, err)
	}
	_, err := wo.WriteAt([]byte("abc"), 1)
	wantErr(t, err, "WriteAt", syscall.EBADF, "O_RDWR")
	_, err = wo.WriteAt([]byte("abc"), -3)
	wantErr(t, err, "WriteAt", syscall.EINVAL, "negative")
	if n, err := wo.WriteAt(nil, 7); n != 0 || err != nil {
		t.Fatalf("WriteAt of nothing: %d, %v", n, err)
	}

	ap := openFile(t, ctx, path, os.O_RDWR|os.O_APPEND)
	_, err = ap.WriteAt(block, 0)
	wantErr(t, err, "WriteAt", syscall.EINVAL, "O_APPEND")
}

func TestFileOpenErrors(t *testing.T) {
	ctx := newCtx(t, 4)
	_, err := OpenFile(ctx, filepath.Join(needDir(t), "does-not-exist"), os.O_RDONLY, 0)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenFile of a missing file: %v", err)
	}
	_, err = OpenFile(nil, tempPath(t), os.O_RDWR|os.O_CREATE, 0o644)
	wantErr(t, err, "OpenFile", syscall.EINVAL, "nil")

	// A closed context is refused before the open: O_TRUNC empties
	// nothing, O_CREATE creates nothing.
	closed, err := NewContext(4)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	path := patternFile(t, 4096)
	_, err = OpenFile(closed, path, os.O_RDWR|os.O_TRUNC, 0)
	wantErr(t, err, "OpenFile", syscall.ESHUTDOWN)
	if fi, err := os.Stat(path); err != nil || fi.Size() != 4096 {
		t.Fatalf("OpenFile on a closed context changed the file: %v, %v", fi, err)
	}
	fresh := tempPath(t)
	_, err = OpenFile(closed, fresh, os.O_RDWR|os.O_CREATE, 0o644)
	wantErr(t, err, "OpenFile", syscall.ESHUTDOWN)
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenFile on a closed context created the file: %v", err)
	}
}

// I/O whose end passes the largest offset is refused, and changes nothing
// (an unaligned write there used to write its first chunks, then cut the
// file back to its old size: bytes reported written were lost).
func TestFileOffsetLimit(t *testing.T) {
	ctx := newCtx(t, 4)
	path := tempPath(t)
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(ctx, path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const maxOff = int64(^uint64(0) >> 1)
	n, err := f.WriteAt(make([]byte, 3<<20), maxOff-3<<20+99)
	if n != 0 {
		t.Fatalf("WriteAt past the largest offset wrote %d bytes", n)
	}
	wantErr(t, err, "WriteAt", syscall.EINVAL, "largest offset")
	_, err = f.WriteAt([]byte("x"), maxOff)
	wantErr(t, err, "WriteAt", syscall.EINVAL, "largest offset")
	_, err = f.ReadAt(make([]byte, 1), maxOff-10)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "largest offset")
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("the file is now %q (%v)", b, err)
	}
}

// On a block device an unaligned WriteAt has no size to restore: it
// succeeds (it used to report ftruncate's EINVAL after writing).
func TestFileBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if v := os.Getenv("KAIO_TEST_NO_LOOP"); v != "" && v != "0" {
		t.Skip("KAIO_TEST_NO_LOOP is set")
	}
	img := tempPath(t)
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		t.Skipf("no loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	ctx := newCtx(t, 4)
	f, err := OpenFile(ctx, dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := f.WriteAt([]byte("hello"), 10); err != nil || n != 5 {
		t.Fatalf("unaligned WriteAt on %s: %d, %v", dev, n, err)
	}
	p := make([]byte, 5)
	if n, err := f.ReadAt(p, 10); err != nil || n != 5 || string(p) != "hello" {
		t.Fatalf("ReadAt on %s: %d, %v, %q", dev, n, err, p)
	}
}

func TestFileClose(t *testing.T) {
	ctx := newCtx(t, 4)
	path := patternFile(t, 8192)
	f, err := OpenFile(ctx, path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := f.ReadAt(p, 5); err != nil { // the context learns the fd
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantErr(t, f.Close(), "Close", syscall.EBADF, "closed")
	_, err = f.ReadAt(p, 0)
	wantErr(t, err, "ReadAt", syscall.EBADF, "closed")
	_, err = f.WriteAt(p, 0)
	wantErr(t, err, "WriteAt", syscall.EBADF, "closed")
	wantErr(t, f.Sync(), "Fsync", syscall.EBADF, "closed")

	// Close made the context forget the fd: the same number, now without
	// O_DIRECT, is refused instead of being trusted from the cache.
	plain, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(plain)
	if plain != fd {
		t.Skipf("fd %d was not reused (got %d); cannot check kaio_ctx_forget_fd", fd, plain)
	}
	b := newBuf(t, 4096)
	_, err = ctx.ReadAt(plain, b, 0)
	wantErr(t, err, "ReadAt", syscall.EINVAL, "O_DIRECT")
}

func TestFileAfterContextClose(t *testing.T) {
	ctx, err := NewContext(2)
	if err != nil {
		t.Fatal(err)
	}
	f := openFile(t, ctx, patternFile(t, 4096), os.O_RDWR)
	if err := ctx.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadAt(make([]byte, 10), 0)
	wantErr(t, err, "ReadAt", syscall.ESHUTDOWN)
	_, err = f.WriteAt(make([]byte, 10), 0)
	wantErr(t, err, "WriteAt", syscall.ESHUTDOWN)
	if err := f.Close(); err != nil {
		t.Fatalf("File.Close after Context.Close: %v", err)
	}
}

// ---- many goroutines -----------------------------------------------------------

// 1000 goroutines read and verify at once, through Context.ReadAt into
// their own Buffers and through File.ReadAt at unaligned places.
func TestConcurrent1000Readers(t *testing.T) {
	const goroutines, reads, blocks = 1000, 8, 1024
	ctx := newCtx(t, 32)
	path := patternFile(t, blocks*4096)
	fd := openDirect(t, path, syscall.O_RDONLY)
	f := openFile(t, ctx, path, os.O_RDONLY)
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := make(chan struct{})
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(g)))
			b, err := NewBuffer(4096)
			if err != nil {
				t.Error(err)
				failed.Add(1)
				return
			}
			defer b.Free()
			p := make([]byte, 5000)
			<-start
			for i := 0; i < reads; i++ {
				if g%2 == 0 {
					blk := rng.Int63n(blocks)
					n, err := ctx.ReadAt(fd, b, blk*4096)
					if err != nil || n != 4096 || !bytes.Equal(b.Bytes(), pattern(blk*4096, 4096)) {
						t.Errorf("goroutine %d: ReadAt block %d: %d, %v", g, blk, n, err)
						failed.Add(1)
						return
					}
				} else {
					off := rng.Int63n(blocks*4096 - 5000)
					n, err := f.ReadAt(p, off)
					if err != nil || n != len(p) || !bytes.Equal(p, pattern(off, len(p))) {
						t.Errorf("goroutine %d: File.ReadAt %d: %d, %v", g, off, n, err)
						failed.Add(1)
						return
					}
				}
			}
		}(g)
	}
	close(start)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d goroutines failed", failed.Load())
	}
}

func osThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			n, _ := strconv.Atoi(strings.TrimSpace(line[len("Threads:"):]))
			return n
		}
	}
	return -1
}

// 20 000 reads at once must not cost an OS thread each: they wait as
// goroutines (for room, then for their completion), and one reaper
// goroutine woken by the poller completes them.
func TestThreads20000ConcurrentReads(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allows at most 8128 live goroutines")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	const n, blocks = 20000, 256
	ctx := newCtx(t, 64)
	fd := openDirect(t, patternFile(t, blocks*4096), syscall.O_RDONLY)
	bufs := make([]*Buffer, n)
	for i := range bufs {
		bufs[i] = newBuf(t, 4096)
	}
	before := osThreads()
	var wg sync.WaitGroup
	var bad atomic.Int64
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			blk := int64(i % blocks)
			if n, err := ctx.ReadAt(fd, bufs[i], blk*4096); err != nil || n != 4096 ||
				!bytes.Equal(bufs[i].Bytes(), pattern(blk*4096, 4096)) {
				bad.Add(1)
			}
		}(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	close(start)
	peak := before
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(time.Millisecond):
		}
		if th := osThreads(); th > peak {
			peak = th
		}
	}
	if bad.Load() > 0 {
		t.Fatalf("%d reads failed", bad.Load())
	}
	t.Logf("OS threads: %d before, at most %d during %d concurrent reads (GOMAXPROCS %d)",
		before, peak, n, runtime.GOMAXPROCS(0))
	if limit := before + 2*runtime.GOMAXPROCS(0) + 8; peak > limit {
		t.Fatalf("%d OS threads for %d concurrent reads (from %d): more than %d", peak, n, before, limit)
	}
}
