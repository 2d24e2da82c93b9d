package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live, floor uint64
		base, want  int
	}{
		{8 * mib, 64 * mib, 100, 700},  // grows to the floor
		{16 * mib, 64 * mib, 100, 300}, // grows to the floor
		{32 * mib, 64 * mib, 100, 100}, // base reaches the floor
		{500 * mib, 64 * mib, 100, 100},
		{500 * mib, 64 * mib, 50, 50},           // a lower GOGC is kept above the floor
		{0, 64 * mib, 100, 100},                 // not measured yet: the collector must run
		{1, 64 * mib, 100, maxGCPercent},        // capped: never past what the runtime can hold
		{64 << 10, 64 * mib, 100, maxGCPercent}, // 1000x would be wanted
		{1 * mib, 64 * mib, 100, 6300},
	}
	for _, tt := range tests {
		if got := gcPercent(tt.live, tt.floor, tt.base); got != tt.want {
			t.Errorf("gcPercent(%d, %d, %d) = %d, want %d", tt.live, tt.floor, tt.base, got, tt.want)
		}
	}
}

// TestGCPercentTheRuntimeKeeps: whatever the live heap, the percentage
// tuneGC sets is one the runtime keeps as a positive GOGC (it stores 32
// bits; a value past them reads as "off").
func TestGCPercentTheRuntimeKeeps(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for _, live := range []uint64{0, 1, 1000, 1 << 20, 1 << 30} {
		p := gcPercent(live, 1<<40, 100)
		debug.SetGCPercent(p)
		if got := debug.SetGCPercent(100); got != p || got <= 0 {
			t.Errorf("live %d: set GOGC %d, the runtime kept %d", live, p, got)
		}
	}
}

// TestTunedCollectorRuns: with the default floor, a process that keeps
// allocating runs collections and its heap stays near the floor.
func TestTunedCollectorRuns(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const floor = 64 << 20
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tuneGC(ctx, floor)
	}()
	defer func() { cancel(); <-done }()
	read := func() (cycles, heap uint64) {
		s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/memory/classes/heap/objects:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64(), s[1].Value.Uint64()
	}
	before, _ := read()
	var peak uint64
	var keep [][]byte
	for i := 0; i < 8192; i++ { // 512 MiB in all, 1 MiB of it live
		keep = append(keep, make([]byte, 64<<10))
		if len(keep) > 16 {
			keep = keep[1:]
		}
		if _, h := read(); h > peak {
			peak = h
		}
	}
	after, _ := read()
	if after-before < 2 {
		t.Fatalf("%d collections while 512 MiB were allocated, want several", after-before)
	}
	if peak > 4*floor {
		t.Fatalf("heap peaked at %d MiB, want at most %d MiB", peak>>20, 4*floor>>20)
	}
	t.Logf("%d collections, heap peak %d MiB", after-before, peak>>20)
}

func TestRetuneGCFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	runtime.GC() // the live heap is known after a cycle
	p := retuneGC(1<<40, 100)
	if p <= 100 {
		t.Fatalf("retuneGC with a 1 TiB floor set GOGC %d, want far above 100", p)
	}
	if got := debug.SetGCPercent(100); got != p {
		t.Errorf("GOGC in force = %d, want the %d retuneGC returned", got, p)
	}
	if p := retuneGC(1, 100); p != 100 {
		t.Errorf("retuneGC with a 1-byte floor set GOGC %d, want 100", p)
	}
}

func TestTuneGCRestoresGOGC(t *testing.T) {
	t.Setenv("GOGC", "") // tuneGC tunes only when GOGC is unset
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tuneGC(ctx, 1<<40) // one round at a huge floor, then it ends
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC after tuneGC ended = %d, want 100 restored", p)
	}
}
