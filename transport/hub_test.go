package transport

import (
	"errors"
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
