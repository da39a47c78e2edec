package kaio

import (
	"sync/atomic"
	"time"
)

// Where an operation's time goes, for tuning the binding: built with
// -tags kaiostages, every operation is stamped at four points and the
// differences summed; in the ordinary build stagesOn is false and the
// stamping code is compiled out.

// StageTimes are sums over the operations completed since the process
// started (take two and subtract them to measure an interval). Divide the
// durations by Ops for means per operation.
type StageTimes struct {
	Ops int64 // operations whose completion reached their goroutine

	// Queue: from the goroutine queueing its operation to the start of
	// the flush that took it (the wait for a submitter, and its yield).
	Queue time.Duration
	// Submit: from the start of that flush to the return of its
	// kaio_submit calls (all of the flush's io_submits, not only the
	// operation's own).
	Submit time.Duration
	// Kernel: from there to the reaper's kaio_poll returning the
	// completion (the device, and the wake-up of the reaper). About 0,
	// or below, where operations complete inside io_submit (holes).
	Kernel time.Duration
	// Wake: from there to the goroutine running again (delivery and Go's
	// scheduler).
	Wake time.Duration

	Flushes     int64         // submitting passes (cgo calls to kaio_go_submit)
	FlushOps    int64         // operations they submitted
	Reaps       int64         // kaio_poll calls of the reaper that returned events
	ReapEvents  int64         // events they returned
	DeliverTime time.Duration // the reaper's time handing those events to their goroutines
}

// Sub returns s - t, field by field.
func (s StageTimes) Sub(t StageTimes) StageTimes {
	return StageTimes{
		Ops: s.Ops - t.Ops, Queue: s.Queue - t.Queue, Submit: s.Submit - t.Submit,
		Kernel: s.Kernel - t.Kernel, Wake: s.Wake - t.Wake,
		Flushes: s.Flushes - t.Flushes, FlushOps: s.FlushOps - t.FlushOps,
		Reaps: s.Reaps - t.Reaps, ReapEvents: s.ReapEvents - t.ReapEvents,
		DeliverTime: s.DeliverTime - t.DeliverTime,
	}
}

// DebugStages returns the sums so far, and false when the package was
// built without -tags kaiostages (then nothing is measured).
func DebugStages() (StageTimes, bool) {
	if !stagesOn {
		return StageTimes{}, false
	}
	return StageTimes{
		Ops: stageSum.ops.Load(), Queue: time.Duration(stageSum.queue.Load()),
		Submit: time.Duration(stageSum.submit.Load()),
		Kernel: time.Duration(stageSum.toReaped.Load() - stageSum.submit.Load()),
		Wake:   time.Duration(stageSum.wake.Load()), Flushes: stageSum.flushes.Load(),
		FlushOps: stageSum.flushOps.Load(), Reaps: stageSum.reaps.Load(),
		ReapEvents: stageSum.reapEvents.Load(), DeliverTime: time.Duration(stageSum.deliver.Load()),
	}, true
}

// stamps are one slot's times (ns since stageEpoch) for its operation in
// progress. The time its submission returned is not stamped (the
// operation may complete, and its goroutine read the stamps, before its
// flush returns): a flush adds its duration once per operation to the
// Submit sum instead, and Kernel is what remains of flushed to reaped.
type stamps struct {
	queued, flushed, reaped atomic.Int64
}

var stageSum struct {
	ops, queue, submit, toReaped, wake   atomic.Int64
	flushes, flushOps, reaps, reapEvents atomic.Int64
	deliver                              atomic.Int64
}

var stageEpoch = time.Now()

// stageNow is a monotonic clock in ns (only called when stagesOn).
func stageNow() int64 { return int64(time.Since(stageEpoch)) }

// stageFlushed counts a flush of n operations that took d ns.
func stageFlushed(n int, d int64) {
	stageSum.flushes.Add(1)
	stageSum.flushOps.Add(int64(n))
	stageSum.submit.Add(int64(n) * d)
}

// stageDone adds the stages of an operation whose goroutine runs again.
func (s *slot) stageDone() {
	now := stageNow()
	t := &s.st
	stageSum.ops.Add(1)
	stageSum.queue.Add(t.flushed.Load() - t.queued.Load())
	stageSum.toReaped.Add(t.reaped.Load() - t.flushed.Load())
	stageSum.wake.Add(now - t.reaped.Load())
}
