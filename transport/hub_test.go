package transport

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/leasekeeper/leasekeeper/fsm"
)

func events(from, n int) []fsm.Event {
	out := make([]fsm.Event, n)
	for i := range out {
		out[i] = fsm.Event{Type: fsm.EventAcquired, Revision: uint64(from + i), Lease: &fsm.Lease{Namespace: "default", Name: "x"}}
	}
	return out
}

// TestWatcherQueueGrowsOnDemand: an idle watcher holds no queue; a burst
// is queued up to the buffer and taken in order, and its array is given
// back once the burst is over.
func TestWatcherQueueGrowsOnDemand(t *testing.T) {
	h := NewHub(1000, 500)
	w, _, err := h.subscribe("", 0, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cap(w.queue) != 0 {
		t.Fatalf("an idle watcher holds a queue of %d events", cap(w.queue))
	}
	h.Applied(events(1, 400))
	<-w.ready
	got, closed, _ := w.take(nil, 300)
	if len(got) != 300 || got[0].Revision != 1 || got[299].Revision != 300 || closed {
		t.Fatalf("first take: %d events from %d, closed %v", len(got), got[0].Revision, closed)
	}
	<-w.ready // the rest is signalled again
	got, _, _ = w.take(got[:0], 300)
	if len(got) != 100 || got[0].Revision != 301 {
		t.Fatalf("second take: %d events from %d, want 100 from 301", len(got), got[0].Revision)
	}
	if cap(w.queue) != 0 {
		t.Fatalf("after the burst the watcher keeps a queue of %d events", cap(w.queue))
	}
	h.unsubscribe(w)
}

// TestWatcherOverflowIsDropped: a watcher that falls a whole buffer
// behind is closed with ErrWatchOverflow after the events it queued.
func TestWatcherOverflowIsDropped(t *testing.T) {
	h := NewHub(1000, 10)
	w, _, err := h.subscribe("", 0, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Applied(events(1, 11))
	got, closed, werr := w.take(nil, 100)
	if len(got) != 10 || !closed || !errors.Is(werr, ErrWatchOverflow) {
		t.Fatalf("take after overflow: %d events, closed %v, err %v; want 10, closed, ErrWatchOverflow", len(got), closed, werr)
	}
	if n := h.watchers(); n != 0 {
		t.Fatalf("%d watchers left after the overflow", n)
	}
}

// TestWatchLimits: past the node's limit, or one caller's, a watch is
// refused; one that ends frees its place.
func TestWatchLimits(t *testing.T) {
	h := NewHub(1000, 10)
	h.setLimits(3, 2, nil)
	sub := func(owner string) (*watcher, error) {
		w, _, err := h.subscribe(owner, 0, 0, false, nil)
		return w, err
	}
	a1, _ := sub("alice")
	if _, err := sub("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := sub("alice"); !errors.Is(err, ErrTooManyWatches) {
		t.Fatalf("alice's third watch: %v, want ErrTooManyWatches", err)
	}
	if _, err := sub("bob"); err != nil {
		t.Fatalf("bob's first watch: %v", err)
	}
	if _, err := sub(""); !errors.Is(err, ErrTooManyWatches) {
		t.Fatalf("a fourth watch on the node: %v, want ErrTooManyWatches", err)
	}
	h.unsubscribe(a1)
	if _, err := sub("alice"); err != nil {
		t.Fatalf("alice's watch after one ended: %v", err)
	}
}

// TestHubAt: the window read backwards gives the table at an earlier
// revision, label changes and deletions included; a revision older than
// the window is ErrCompacted, and a table newer than the window waits.
func TestHubAt(t *testing.T) {
	lease := func(name string, rv uint64, x string) *fsm.Lease {
		return &fsm.Lease{Namespace: "default", Name: name, ResourceVersion: rv, Labels: map[string]string{"x": x}}
	}
	a1, b2, a3, c5 := lease("a", 1, "1"), lease("b", 2, "1"), lease("a", 3, "2"), lease("c", 5, "1")
	h := NewHub(1000, 10)
	h.Applied([]fsm.Event{
		{Type: fsm.EventAdded, Lease: a1, Revision: 1},
		{Type: fsm.EventAdded, Lease: b2, Revision: 2},
		{Type: fsm.EventModified, Lease: a3, Prev: a1, Revision: 3},
		{Type: fsm.EventDeleted, Lease: b2, Prev: b2, Revision: 4},
		{Type: fsm.EventAdded, Lease: c5, Revision: 5},
	})
	x1 := func(l *fsm.Lease) bool { return l.Labels["x"] == "1" }
	names := func(ls []*fsm.Lease) []uint64 {
		var out []uint64
		for _, l := range ls {
			out = append(out, l.ResourceVersion)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		rev   uint64
		match func(*fsm.Lease) bool
		want  []uint64 // resourceVersions, in name order
	}{
		{"now", 5, nil, []uint64{3, 5}},
		{"before c", 4, nil, []uint64{3}},
		{"before the delete", 3, nil, []uint64{3, 2}},
		{"before the change", 2, nil, []uint64{1, 2}},
		{"first", 1, nil, []uint64{1}},
		{"empty", 0, nil, nil},
		{"label as it was", 2, x1, []uint64{1, 2}},
		{"label as it is", 3, x1, []uint64{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cur []*fsm.Lease
			for _, l := range []*fsm.Lease{a3, c5} {
				if tc.match == nil || tc.match(l) {
					cur = append(cur, l)
				}
			}
			got, _, err := h.at(tc.rev, cur, 5, tc.match)
			if err != nil {
				t.Fatal(err)
			}
			if g := names(got); !slices.Equal(g, tc.want) {
				t.Fatalf("at %d: got resourceVersions %v, want %v", tc.rev, g, tc.want)
			}
		})
	}
	_, changed, err := h.at(4, nil, 6, nil)
	if !errors.Is(err, errNotCaughtUp) || changed == nil {
		t.Fatalf("a table ahead of the window: got %v, want errNotCaughtUp and a channel", err)
	}
	select {
	case <-changed:
		t.Fatal("told of a change before any")
	default:
	}
	h.Applied([]fsm.Event{{Type: fsm.EventAdded, Lease: lease("d", 6, "1"), Revision: 6}})
	<-changed // closed by Applied; a test timeout if not
	if _, _, err := h.at(4, []*fsm.Lease{a3, c5, lease("d", 6, "1")}, 6, nil); err != nil {
		t.Fatalf("once the window caught up: %v", err)
	}

	small := NewHub(4, 10)
	small.Applied(events(1, 10)) // keeps 6..10 or more, never 1
	if _, _, err := small.at(1, nil, 10, nil); !errors.Is(err, ErrCompacted) {
		t.Fatalf("a revision older than the window: got %v, want ErrCompacted", err)
	}
	if _, _, err := NewHub(4, 10).at(1, nil, 3, nil); !errors.Is(err, ErrCompacted) {
		t.Fatalf("an empty window: got %v, want ErrCompacted", err)
	}
}

// BenchmarkHubAt: the cost of reading 10000 leases back across a full
// window of 100000 renewals, the worst an Exact list or a later page
// pays with the default window.
func BenchmarkHubAt(b *testing.B) {
	const leases, window = 10000, 100000
	h := NewHub(window, 10)
	cur := make([]*fsm.Lease, leases)
	rev := uint64(0)
	for i := range cur {
		rev++
		cur[i] = &fsm.Lease{Namespace: "default", Name: fmt.Sprintf("l%05d", i), ResourceVersion: rev}
		h.Applied([]fsm.Event{{Type: fsm.EventAdded, Lease: cur[i], Revision: rev}})
	}
	start := rev
	for i := 0; i < window-leases; i++ {
		rev++
		k := i % leases
		next := &fsm.Lease{Namespace: "default", Name: cur[k].Name, ResourceVersion: rev}
		h.Applied([]fsm.Event{{Type: fsm.EventRenewed, Lease: next, Prev: cur[k], Revision: rev}})
		cur[k] = next
	}
	b.ResetTimer()
	for b.Loop() {
		got, _, err := h.at(start, cur, rev, nil)
		if err != nil || len(got) != leases {
			b.Fatalf("%d leases, %v", len(got), err)
		}
	}
}

// TestHubAtWhileApplying: reads of the window outside the hub's lock race
// with no append or trim of it (run with -race), and give the state of
// the revision asked for.
func TestHubAtWhileApplying(t *testing.T) {
	h := NewHub(64, 10)
	const n = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		var prev *fsm.Lease
		for rev := uint64(1); rev <= n; rev++ {
			l := &fsm.Lease{Namespace: "default", Name: "x", ResourceVersion: rev}
			h.Applied([]fsm.Event{{Type: fsm.EventRenewed, Lease: l, Prev: prev, Revision: rev}})
			prev = l
		}
	}()
	for reads := 0; ; reads++ {
		h.mu.Lock()
		last := h.last
		h.mu.Unlock()
		if last >= 2 {
			// The table at last is lease x at last; read back one step.
			got, _, err := h.at(last-1, []*fsm.Lease{{Namespace: "default", Name: "x", ResourceVersion: last}}, last, nil)
			if err == nil && (len(got) != 1 || got[0].ResourceVersion != last-1) {
				t.Fatalf("at %d: got %+v", last-1, got)
			}
			if err != nil && !errors.Is(err, ErrCompacted) {
				t.Fatal(err)
			}
		}
		select {
		case <-done:
			return
		default:
		}
	}
}
