package leasing

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/clock"
)

// checkHeap verifies the heap order and that every entry knows its index.
func checkHeap(t *testing.T, h deadlineHeap) {
	t.Helper()
	for i, e := range h {
		if e.index != i {
			t.Fatalf("entry at %d has index %d", i, e.index)
		}
		if i > 0 && h[(i-1)/2].deadline > e.deadline {
			t.Fatalf("heap order broken at %d: parent %v > child %v", i, h[(i-1)/2].deadline, e.deadline)
		}
	}
}

// TestHeapRandom runs random push, update, remove and pop operations against
// a plain set of entries and checks the heap after each one.
func TestHeapRandom(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		var h deadlineHeap
		live := map[*entry]bool{}
		pick := func() *entry { // a random live entry, via the heap's slice
			return h[rng.IntN(len(h))]
		}
		for op := 0; op < 3000; op++ {
			// Small deadline range so that ties are common.
			d := time.Duration(rng.IntN(200))
			switch r := rng.IntN(10); {
			case r < 4 || len(h) == 0:
				e := &entry{deadline: d}
				h.push(e)
				live[e] = true
			case r < 7:
				e := pick()
				e.deadline = d
				h.fix(e.index)
			case r < 9:
				e := pick()
				if got := h.remove(e.index); got != e || e.index != -1 {
					t.Fatalf("seed %d op %d: remove returned %p (index %d), want %p with index -1", seed, op, got, e.index, e)
				}
				delete(live, e)
			default:
				lo := time.Duration(1 << 62)
				for e := range live {
					lo = min(lo, e.deadline)
				}
				e := h.pop()
				if e.deadline != lo || e.index != -1 {
					t.Fatalf("seed %d op %d: pop = %v (index %d), want the minimum %v", seed, op, e.deadline, e.index, lo)
				}
				delete(live, e)
			}
			if len(h) != len(live) {
				t.Fatalf("seed %d op %d: heap has %d entries, want %d", seed, op, len(h), len(live))
			}
			checkHeap(t, h)
			now, limit := time.Duration(rng.IntN(220)), rng.IntN(40)
			want := 0
			for e := range live {
				if e.deadline < now {
					want++
				}
			}
			if got := h.countDue(now, limit); got != min(want, limit) {
				t.Fatalf("seed %d op %d: countDue(%v, %d) = %d, want %d", seed, op, now, limit, got, min(want, limit))
			}
		}
	}
}

func TestHeapify(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := make(deadlineHeap, 1000)
	for i := range h {
		h[i] = &entry{deadline: time.Duration(rng.IntN(100)), index: -1}
	}
	h.heapify()
	checkHeap(t, h)
	prev := time.Duration(-1)
	for len(h) > 0 {
		e := h.pop()
		if e.deadline < prev {
			t.Fatalf("pop order: %v after %v", e.deadline, prev)
		}
		prev = e.deadline
		checkHeap(t, h)
	}
}

// BenchmarkHeldUpdate measures the Raft apply path with a million holdings
// in the table: renewing one (update), a new holding replacing an ended one
// (push), and taking the earliest out and holding it again (pop).
func BenchmarkHeldUpdate(b *testing.B) {
	const n = 1_000_000
	clk := clock.NewFake(start)
	m, err := New(DefaultConfig(), clk, &fakeProposer{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	hs := make([]Holding, n)
	for i := range hs {
		hs[i] = Holding{Key: keyN(i), Token: uint64(i), RenewIndex: uint64(i), TTL: 10*time.Second + time.Duration(rng.IntN(int(time.Second)))}
	}
	m.Promote(testTerm, func() []Holding { return hs })
	// Pre-drawn so that the loops measure the table, not the random source.
	const mask = 1<<16 - 1
	idx := make([]int, mask+1)
	ttl := make([]time.Duration, mask+1)
	for i := range idx {
		idx[i] = rng.IntN(n)
		ttl[i] = 10*time.Second + time.Duration(rng.IntN(int(time.Second)))
	}

	b.Run("update", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			h := hs[idx[i&mask]]
			h.TTL = ttl[i&mask]
			m.Held(h)
			i++
		}
	})
	b.Run("push", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			h := hs[idx[i&mask]]
			m.Ended(h.Key)
			h.TTL = ttl[i&mask]
			m.Held(h)
			i++
		}
	})
	b.Run("pop", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			m.mu.Lock()
			e := m.heap.pop()
			m.mu.Unlock()
			h := e.h
			h.TTL = ttl[i&mask]
			m.Held(h) // back from "proposing" into the heap
			i++
		}
	})
	if m.Len() != n {
		b.Fatalf("Len() = %d, want %d", m.Len(), n)
	}
}

// BenchmarkPromote1M measures a new leader's start with a million
// holdings: building the table from the FSM's list (rebuild), or one pass
// over the table it tracked as a follower (tracked).
func BenchmarkPromote1M(b *testing.B) {
	const n = 1_000_000
	hs := make([]Holding, n)
	for i := range hs {
		hs[i] = Holding{Key: keyN(i), Token: uint64(i), RenewIndex: uint64(i), TTL: 10 * time.Second}
	}
	for _, bc := range []struct {
		name string
		load func() []Holding
	}{
		{"rebuild", func() []Holding { return hs }},
		{"tracked", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m, err := New(DefaultConfig(), clock.NewFake(start), &fakeProposer{}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			m.Track(func() []Holding { return hs })
			b.ReportAllocs()
			for b.Loop() {
				m.Promote(testTerm, bc.load)
				if m.Len() != n {
					b.Fatalf("Len() = %d after Promote, want %d", m.Len(), n)
				}
				m.Demote()
			}
		})
	}
}
