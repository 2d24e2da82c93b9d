package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcEvery is how often tuneGC looks at the live heap.
const gcEvery = 500 * time.Millisecond

// maxGCPercent caps the GOGC that tuneGC sets. The runtime keeps GOGC in
// 32 bits and reads a value that overflows them as "off", so an uncapped
// percentage for a tiny live heap would switch the collector off for good.
// At the cap, a live heap under floor/100 grows to 100 times its size
// rather than to floor.
const maxGCPercent = 10000

// gcPercent is the GOGC that lets a heap of live bytes grow to the larger
// of what base allows (live * (1 + base/100)) and floor, at most
// maxGCPercent. A live heap of 0 means the runtime has not measured it yet
// (no cycle has ended): base holds until the first cycle does.
func gcPercent(live, floor uint64, base int) int {
	if live == 0 {
		return base
	}
	goal := live + live*uint64(base)/100
	if goal >= floor {
		return base
	}
	return int(min((floor-live)*100/live, maxGCPercent))
}

// tuneGC keeps the collector from running on a small heap more often than
// on a heap of floor bytes: with the default GOGC of 100 a node holding a
// few MiB of leases collects after every few MiB allocated, and on a busy
// node that is a tenth of its CPU. Once the live heap passes floor/2 the
// collector runs as GOGC says. The soft memory limit (--memory-limit)
// still bounds the heap. It does nothing when floor is 0 or GOGC is set in
// the environment, and ends when ctx does, restoring the GOGC it found.
func tuneGC(ctx context.Context, floor uint64) {
	if floor == 0 || os.Getenv("GOGC") != "" {
		return
	}
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)
	t := time.NewTicker(gcEvery)
	defer t.Stop()
	for {
		retuneGC(floor, base)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// retuneGC sets the GOGC that gcPercent gives for the live heap now, and
// returns it (-1 when the runtime does not report the live heap).
func retuneGC(floor uint64, base int) int {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() != metrics.KindUint64 {
		return -1
	}
	p := gcPercent(sample[0].Value.Uint64(), floor, base)
	debug.SetGCPercent(p)
	return p
}
