package kaio

import (
	"sync"
	"syscall"
	"testing"
)

// TestDebugStages: in the ordinary build nothing is measured; built with
// -tags kaiostages (run-tests.sh runs this test so), reads are counted and
// their stages add up to no less than zero each.
func TestDebugStages(t *testing.T) {
	before, ok := DebugStages()
	if ok != stagesOn {
		t.Fatalf("DebugStages ok = %v in a build with stagesOn = %v", ok, stagesOn)
	}
	ctx := newCtx(t, 8)
	fd := openDirect(t, patternFile(t, 64<<10), syscall.O_RDONLY)
	const readers, reads = 8, 20
	var wg sync.WaitGroup
	for g := 0; g < readers; g++ {
		b := newBuf(t, 4096)
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < reads; i++ {
				if _, err := ctx.ReadAt(fd, b, int64((g+i)%16)*4096); err != nil {
					t.Errorf("ReadAt: %v", err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	after, _ := DebugStages()
	d := after.Sub(before)
	if !stagesOn {
		if d != (StageTimes{}) {
			t.Fatalf("measured without -tags kaiostages: %+v", d)
		}
		return
	}
	// Other tests may run at the same time: at least ours were counted.
	if d.Ops < readers*reads || d.Flushes < 1 || d.FlushOps < d.Flushes || d.Reaps < 1 || d.ReapEvents < d.Reaps {
		t.Fatalf("counts: %+v", d)
	}
	if d.Queue < 0 || d.Submit <= 0 || d.Wake < 0 || d.DeliverTime < 0 {
		t.Fatalf("stage sums: %+v", d)
	}
	t.Logf("per read: queue %v, submit %v, kernel %v, wake %v", d.Queue/readers/reads,
		d.Submit/readers/reads, d.Kernel/readers/reads, d.Wake/readers/reads)
}
