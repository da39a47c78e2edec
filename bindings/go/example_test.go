package kaio_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"syscall"

	"kaio"
)

// The README's example: a Context shared by goroutines, Buffers for
// aligned I/O on a raw fd, and a File for any []byte.
func Example() {
	ctx, err := kaio.NewContext(64) // at most 64 operations in flight
	if err != nil {
		log.Fatal(err)
	}
	defer ctx.Close() // waits for operations in progress, then destroys

	// Aligned I/O on an O_DIRECT fd, in C memory.
	path := "/var/tmp/kaio-example.dat"
	defer os.Remove(path)
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_DIRECT|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	defer syscall.Close(fd)
	buf, err := kaio.NewBuffer(1 << 20) // page-aligned, zero-filled
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Free()
	copy(buf.Bytes(), "hello, kernel AIO")
	if _, err := ctx.WriteAt(fd, buf, 0); err != nil { // blocks this goroutine only
		log.Fatal(err)
	}
	if err := ctx.Fdatasync(fd); err != nil {
		log.Fatal(err)
	}

	// Many goroutines at once: each waits for its own completion; when 64
	// are in flight, the others wait for room, in order.
	var wg sync.WaitGroup
	for i := 0; i < 256; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			b, err := kaio.NewBuffer(4096)
			if err != nil {
				log.Fatal(err)
			}
			defer b.Free()
			if _, err := ctx.ReadAt(fd, b, int64(i%256)*4096); err != nil {
				log.Fatal(err)
			}
		}(i)
	}
	wg.Wait()

	// Errors carry the library's sentence and unwrap to a syscall.Errno.
	_, err = ctx.ReadAt(fd, buf, 100)
	if errors.Is(err, syscall.EINVAL) {
		fmt.Println(err) // kaio: ReadAt: read: offset 100 is not aligned to 512 bytes, ...
	}

	// A File takes any []byte at any offset (bounce buffers inside).
	f, err := kaio.OpenFile(ctx, path, os.O_RDWR, 0)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("HELLO"), 0); err != nil { // read-modify-write
		log.Fatal(err)
	}
	p := make([]byte, 17)
	if _, err := f.ReadAt(p, 0); err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(p), bytes.Equal(p[:5], []byte("HELLO")))
}
