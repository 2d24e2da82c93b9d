package main

import (
	"context"
	"runtime"
	"runtime/debug"
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
		{500 * mib, 64 * mib, 50, 50}, // a lower GOGC is kept above the floor
		{0, 64 * mib, 100, 64*mib*100 - 100},
	}
	for _, tt := range tests {
		if got := gcPercent(tt.live, tt.floor, tt.base); got != tt.want {
			t.Errorf("gcPercent(%d, %d, %d) = %d, want %d", tt.live, tt.floor, tt.base, got, tt.want)
		}
	}
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
