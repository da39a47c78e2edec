// kaio-gobench measures the Go binding: random reads (or writes) of --bs
// bytes on one file opened with O_DIRECT, by --depth goroutines sharing one
// Context of capacity --depth, each keeping one I/O in flight
// (Context.ReadAt or WriteAt with its own Buffer), for --time seconds after
// --ramp seconds of warm-up. It prints the I/O rate, or with --json one
// line:
//
//	{"engine":"go","rw":"randread","depth":32,"bs":4096,"seconds":10.0,"ios":...,"iops":...,"cpu_us_per_io":...,"threads":...,"gomaxprocs":2,"version":"1.0.0"}
//
// threads is the most OS threads the process had (sampled every 50 ms).
// --stages, with the binding built with -tags kaiostages
// (KAIO_GO_TAGS=kaiostages build-bench.sh OUTPUT), adds where an I/O's
// time goes, as means per I/O (see kaio.StageTimes): queued for a
// submitter, in its flush, in the kernel, and back to its goroutine.
// Compare with the C path on the same file: tools/kaio-bench --file F
// --rw randread --bs 4k --depth 32 --time 10.
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"kaio"
)

func main() {
	var (
		path    = flag.String("file", "", "file to use (opened with O_DIRECT; at least bs bytes)")
		rw      = flag.String("rw", "randread", "randread or randwrite (randwrite overwrites the file's data)")
		depth   = flag.Int("depth", 32, "goroutines, each with one I/O in flight (and the context's capacity)")
		bs      = flag.Int("bs", 4096, "I/O size in bytes (a multiple of the direct-I/O alignment)")
		size    = flag.Int64("size", 0, "region used, from offset 0 (default: the file's size)")
		seconds = flag.Float64("time", 10, "seconds to measure")
		ramp    = flag.Float64("ramp", 0, "seconds of warm-up before measuring")
		seed    = flag.Int64("seed", 1, "seed of the offsets")
		asJSON  = flag.Bool("json", false, "print one line of JSON")
		stages  = flag.Bool("stages", false, "also print where an I/O's time goes (needs a build with -tags kaiostages)")
	)
	flag.Parse()
	if *path == "" || *depth < 1 || *bs < 1 || *seconds <= 0 || *ramp < 0 || (*rw != "randread" && *rw != "randwrite") {
		fmt.Fprintln(os.Stderr, "usage: kaio-gobench --file PATH [--rw randread|randwrite] [--depth 32] [--bs 4096] [--time 10] [--ramp 0] [--json]")
		os.Exit(2)
	}
	cfg := config{path: *path, write: *rw == "randwrite", depth: *depth, bs: *bs, size: *size,
		seconds: *seconds, ramp: *ramp, seed: *seed, json: *asJSON, stages: *stages}
	if _, ok := kaio.DebugStages(); cfg.stages && !ok {
		fmt.Fprintln(os.Stderr, "kaio-gobench: --stages needs the binding built with -tags kaiostages (KAIO_GO_TAGS=kaiostages build-bench.sh ...)")
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "kaio-gobench:", err)
		os.Exit(1)
	}
}

type config struct {
	path          string
	write         bool
	depth, bs     int
	size          int64
	seconds, ramp float64
	seed          int64
	json, stages  bool
}

type sample struct {
	t   time.Time
	ios int64
	cpu int64 // microseconds, user + system
}

func snap(ios *atomic.Int64) sample {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return sample{time.Now(), ios.Load(), tvus(ru.Utime) + tvus(ru.Stime)}
}

func run(c config) error {
	mode := syscall.O_RDONLY
	if c.write {
		mode = syscall.O_RDWR
	}
	fd, err := syscall.Open(c.path, mode|syscall.O_DIRECT|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s with O_DIRECT: %w", c.path, err)
	}
	defer syscall.Close(fd)
	region := c.size
	if region == 0 {
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			return err
		}
		region = st.Size
	}
	blocks := region / int64(c.bs)
	if blocks < 1 {
		return fmt.Errorf("%s: a region of %d bytes holds no block of %d bytes", c.path, region, c.bs)
	}
	ctx, err := kaio.NewContext(c.depth)
	if err != nil {
		return err
	}
	defer ctx.Close()

	var stop atomic.Bool
	var ios atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	go func() { <-sig; stop.Store(true) }()

	for g := 0; g < c.depth; g++ {
		buf, err := kaio.NewBuffer(c.bs)
		if err != nil {
			return err
		}
		for i := range buf.Bytes() {
			buf.Bytes()[i] = byte(i*7 + g)
		}
		wg.Add(1)
		go func(g int, buf *kaio.Buffer) {
			defer wg.Done()
			defer buf.Free()
			rng := rand.New(rand.NewSource(c.seed + int64(g)*7919))
			for !stop.Load() {
				off := rng.Int63n(blocks) * int64(c.bs)
				var err error
				if c.write {
					_, err = ctx.WriteAt(fd, buf, off)
				} else {
					_, err = ctx.ReadAt(fd, buf, off)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					stop.Store(true)
					break
				}
				ios.Add(1)
			}
		}(g, buf)
	}
	threads := 0
	wait := func(seconds float64) {
		end := time.Now().Add(time.Duration(seconds * float64(time.Second)))
		for !stop.Load() && time.Now().Before(end) {
			d := time.Until(end)
			if d > 50*time.Millisecond {
				d = 50 * time.Millisecond
			}
			time.Sleep(d)
			if t := countThreads(); t > threads {
				threads = t
			}
		}
	}
	wait(c.ramp)
	s0 := snap(&ios)
	st0, _ := kaio.DebugStages()
	wait(c.seconds)
	s1 := snap(&ios)
	st1, _ := kaio.DebugStages()
	stop.Store(true)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return e.(error)
	}
	elapsed := s1.t.Sub(s0.t).Seconds()
	n := s1.ios - s0.ios
	iops := float64(n) / elapsed
	perIO := 0.0
	if n > 0 {
		perIO = float64(s1.cpu-s0.cpu) / float64(n)
	}
	rwName := "randread"
	if c.write {
		rwName = "randwrite"
	}
	stagesJSON, stagesText := "", ""
	if c.stages {
		stagesJSON, stagesText = describeStages(st1.Sub(st0))
	}
	if c.json {
		fmt.Printf("{\"engine\":\"go\",\"rw\":\"%s\",\"depth\":%d,\"bs\":%d,\"seconds\":%.3f,\"ios\":%d,\"iops\":%.0f,\"cpu_us_per_io\":%.2f,\"threads\":%d,\"gomaxprocs\":%d,%s\"version\":\"%s\"}\n",
			rwName, c.depth, c.bs, elapsed, n, iops, perIO, threads, runtime.GOMAXPROCS(0), stagesJSON, kaio.Version())
	} else {
		fmt.Printf("go binding: %s bs=%d depth=%d: %d I/Os in %.2f s = %.0f IOPS, %.2f us CPU per I/O, at most %d OS threads\n%s",
			rwName, c.bs, c.depth, n, elapsed, iops, perIO, threads, stagesText)
	}
	return nil
}

// describeStages gives the means per I/O of st as a JSON member (with its
// trailing comma) and as text lines.
func describeStages(st kaio.StageTimes) (string, string) {
	if st.Ops == 0 || st.Flushes == 0 || st.Reaps == 0 {
		return "", "stages: nothing measured\n"
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(st.Ops) / 1e3 }
	q, s, k, w := us(st.Queue), us(st.Submit), us(st.Kernel), us(st.Wake)
	perFlush := float64(st.FlushOps) / float64(st.Flushes)
	perReap := float64(st.ReapEvents) / float64(st.Reaps)
	deliver := float64(st.DeliverTime) / float64(st.Reaps) / 1e3
	j := fmt.Sprintf("\"stages_us\":{\"queue\":%.1f,\"submit\":%.1f,\"kernel\":%.1f,\"wake\":%.1f},\"ops_per_flush\":%.1f,\"events_per_reap\":%.1f,\"deliver_us_per_reap\":%.1f,",
		q, s, k, w, perFlush, perReap, deliver)
	t := fmt.Sprintf("stages, mean us per I/O: queue %.1f, submit %.1f, kernel %.1f, wake %.1f (total %.1f)\n"+
		"%.1f I/Os per flush; %.1f events per reap, delivered in %.1f us\n",
		q, s, k, w, q+s+k+w, perFlush, perReap, deliver)
	return j, t
}

func tvus(tv syscall.Timeval) int64 { return tv.Sec*1e6 + tv.Usec }

// countThreads returns the process's OS threads (Linux), 0 if unknown.
func countThreads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			var n int
			fmt.Sscanf(strings.TrimSpace(line[len("Threads:"):]), "%d", &n)
			return n
		}
	}
	return 0
}
