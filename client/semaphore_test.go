package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

// TestSemaphoreServesWaitersInOrder: waiters on a full semaphore get the
// freed slots first in line first, each release handing on exactly one
// slot, with a token above the one it replaced.
func TestSemaphoreServesWaitersInOrder(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	leader := cl.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sem := func(who string) *client.Semaphore {
		s, err := client.NewSemaphore(c, "fifo", 2, client.WithTTL(30*time.Second), client.WithIdentity(who))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var holders []*client.Holding
	for _, who := range []string{"h0", "h1"} {
		h, err := sem(who).TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		holders = append(holders, h)
	}
	type got struct {
		who string
		h   *client.Holding
		err error
	}
	results := make(chan got, 4)
	waiters := []string{"w0", "w1", "w2", "w3"}
	for i, who := range waiters {
		s := sem(who)
		go func() {
			h, err := s.Acquire(ctx)
			results <- got{who, h, err}
		}()
		// Queue one at a time, so that the order is known.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if pos, _, _ := leader.FSM().SemaphoreWait(client.DefaultNamespace, "fifo", who, 2); pos == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not queued at %d after 10s", who, i+1)
			}
			time.Sleep(5 * time.Millisecond) // the queue makes no events to wait on
		}
	}
	for _, want := range waiters {
		h := holders[0]
		holders = holders[1:]
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		g := <-results
		if g.err != nil || g.who != want {
			t.Fatalf("after %s was released: %s got %v, want %s served next", h.Name(), g.who, g.err, want)
		}
		if g.h.Name() != h.Name() || g.h.Token() <= h.Token() {
			t.Fatalf("%s got %s token %d, want %s above token %d", g.who, g.h.Name(), g.h.Token(), h.Name(), h.Token())
		}
		select {
		case extra := <-results:
			t.Fatalf("one release served two waiters: %s too", extra.who)
		case <-time.After(50 * time.Millisecond):
		}
		holders = append(holders, g.h)
	}
	for _, h := range holders {
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSemaphoreCancelledWaiterLeavesTheQueue: a waiter whose ctx ends
// while it waits in the queue leaves it (the leader keeps no place for
// it) and is never handed a slot. Each waiter's ctx is long enough for its
// first call to be answered "queued", so the enqueue has been applied when
// it gives up; an acquire given up while it is still on its way is
// TestEveryAcquirePathCleansUpAfterGivingUp's.
func TestSemaphoreCancelledWaiterLeavesTheQueue(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	leader := cl.Leader(5 * time.Second)
	ctx := context.Background()
	s, err := client.NewSemaphore(c, "gone", 1, client.WithTTL(30*time.Second), client.WithIdentity("holder"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := s.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		w, _ := client.NewSemaphore(c, "gone", 1, client.WithTTL(30*time.Second), client.WithIdentity(fmt.Sprintf("w%d", i)))
		wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		_, err := w.Acquire(wctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("w%d: %v, want DeadlineExceeded", i, err)
		}
	}
	c.WaitBackground()
	for _, w := range leader.FSM().Waiters() {
		t.Errorf("waiter %s still queued on %s after giving up", w.Holder, w.Name)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	g, err := c.Get(ctx, client.DefaultNamespace, s.Slot(0), false)
	if err != nil {
		t.Fatal(err)
	}
	if who := g.GetLease().GetHolderIdentity(); who != "" {
		t.Fatalf("the slot went to %q, a waiter that gave up", who)
	}
}

// TestContendedSemaphoreEntries: six workers share a semaphore of two
// slots, each taking a slot, holding it briefly and releasing it, for 3s.
// With the server's queue an acquisition costs about two log entries (the
// wait's enqueue, and the release that hands the slot on); racing waiters
// cost a try per waiter per release.
func TestContendedSemaphoreEntries(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	leader := cl.Leader(5 * time.Second)
	before := quietIndex(t, leader)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var mu sync.Mutex
	acquired := 0
	var wg sync.WaitGroup
	for i := range 6 {
		s, err := client.NewSemaphore(c, "busy", 2, client.WithTTL(10*time.Second), client.WithIdentity(fmt.Sprintf("w%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for ctx.Err() == nil {
				h, err := s.Acquire(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				acquired++
				mu.Unlock()
				time.Sleep(10 * time.Millisecond) // the work under the slot
				_ = h.Release(context.Background())
			}
		})
	}
	wg.Wait()
	c.WaitBackground()
	if !leader.IsLeader() {
		t.Skip("the leader changed during the test: its applied index says nothing")
	}
	entries := leader.Raft().AppliedIndex() - before
	per := float64(entries) / float64(max(acquired, 1))
	t.Logf("6 workers on a 2-slot semaphore for 3s: %d acquisitions, %d log entries, %.2f per acquisition", acquired, entries, per)
	if acquired < 10 || per > 3 {
		t.Fatalf("%d acquisitions at %.2f log entries each, want at least 10 at most 3 each", acquired, per)
	}
}

// TestNewSemaphoreChecksNames: the size, the semaphore's name (a label
// value) and the slots' names are checked when the Semaphore is made.
func TestNewSemaphoreChecksNames(t *testing.T) {
	c := lkClient(t, []string{"127.0.0.1:1"})
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		n    int
	}{{"s", 0}, {"s", 257}, {long, 1}, {"Bad_Name", 2}, {"", 1}} {
		if _, err := client.NewSemaphore(c, tc.name, tc.n); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("NewSemaphore(%q, %d): %v, want ErrInvalid", tc.name, tc.n, err)
		}
	}
	if _, err := client.NewSemaphore(c, strings.Repeat("a", 63), 256); err != nil {
		t.Errorf("a 63-character name of 256 slots: %v", err)
	}
}
