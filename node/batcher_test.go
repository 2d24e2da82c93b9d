package node

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// gatedApply blocks every entry until released, and records the sizes.
type gatedApply struct {
	gate    chan struct{}
	entries atomic.Int64
	mu      sync.Mutex
	sizes   []int
}

func (g *gatedApply) apply(c *fsmpb.Command) (*fsm.Result, error) {
	<-g.gate
	g.entries.Add(1)
	n := 1
	if b := c.GetBatch(); b != nil {
		n = len(b.Commands)
	}
	g.mu.Lock()
	g.sizes = append(g.sizes, n)
	g.mu.Unlock()
	if b := c.GetBatch(); b != nil {
		r := &fsm.Result{}
		for _, sub := range b.Commands {
			r.Batch = append(r.Batch, &fsm.Result{Lease: &fsm.Lease{Name: sub.GetAcquire().GetName()}})
		}
		return r, nil
	}
	return &fsm.Result{Lease: &fsm.Lease{Name: c.GetAcquire().GetName()}}, nil
}

func TestBatcherPacksConcurrentProposals(t *testing.T) {
	g := &gatedApply{gate: make(chan struct{})}
	b := newBatcher(g.apply)
	const n = 200
	names := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		names[i] = string(rune('a'+i%26)) + string(rune('a'+i/26))
		wg.Add(1)
		go func(name string) {
			defer wg.Done()
			res, err := b.propose(context.Background(), &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{Name: name}}})
			if err == nil && res.Lease.Name != name {
				err = errors.New("got the result of " + res.Lease.Name + " for " + name)
			}
			errs <- err
		}(names[i])
	}
	waitState(b, maxInflight, n-maxInflight) // all queued behind the first entries
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, s := range g.sizes {
		total += s
	}
	if total != n {
		t.Fatalf("entries carried %d commands, want %d", total, n)
	}
	// maxInflight single entries went out at once; the rest queued behind
	// them and leave in entries of up to maxBatch.
	if want := int64(maxInflight + 1); g.entries.Load() != want {
		t.Errorf("%d entries for %d proposals, want %d", g.entries.Load(), n, want)
	}
	t.Logf("%d proposals in %d entries", n, g.entries.Load())
}

func TestBatcherCloseFailsQueued(t *testing.T) {
	g := &gatedApply{gate: make(chan struct{})}
	b := newBatcher(g.apply)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Fill the in-flight slots, then queue one more.
	var wg sync.WaitGroup
	results := make(chan error, maxInflight+1)
	for i := 0; i < maxInflight+1; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.propose(ctx, &fsmpb.Command{})
			results <- err
		}()
	}
	// Close in the background: it fails the queued one at once and waits
	// for the entries in flight, which the gate then lets finish.
	closed := make(chan struct{})
	go func() {
		waitState(b, maxInflight, 1)
		b.close()
		close(closed)
	}()
	first := <-results
	if !errors.Is(first, ErrShuttingDown) {
		t.Fatalf("queued proposal at close: got %v, want ErrShuttingDown", first)
	}
	close(g.gate)
	<-closed
	wg.Wait()
	if _, err := b.propose(ctx, &fsmpb.Command{}); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("proposal after close: %v", err)
	}
}

// waitState spins until the batcher has inflight entries out and queued
// proposals waiting: the goroutines that propose have no other signal.
func waitState(b *batcher, inflight, queued int) {
	for {
		b.mu.Lock()
		ok := b.inflight == inflight && len(b.queue) == queued
		b.mu.Unlock()
		if ok {
			return
		}
		runtime.Gosched()
	}
}

// forever stands in for a gathering limit that never runs out, so only a
// count or close can end a gathering.
func forever(time.Duration) time.Duration { return time.Hour }

// TestBatcherGathersReturningCallers: callers that propose again as soon
// as they are answered leave together. Without gathering, the first
// caller's second proposal would miss the entry that carries everybody
// else's first, and the callers would take turns in two groups.
func TestBatcherGathersReturningCallers(t *testing.T) {
	g := &gatedApply{gate: make(chan struct{})}
	b := newBatcher(g.apply)
	b.gatherLimit = forever
	const callers = 16
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				if _, err := b.propose(context.Background(), &fsmpb.Command{}); err != nil {
					if !errors.Is(err, ErrShuttingDown) {
						t.Errorf("propose: %v", err)
					}
					return
				}
			}
		})
	}
	waitState(b, 1, callers-1) // the first went alone; the others queued
	for range 5 {
		g.gate <- struct{}{} // one entry through
	}
	closed := make(chan struct{})
	go func() {
		b.close()
		close(closed)
	}()
	close(g.gate) // whatever is in flight may finish
	<-closed
	wg.Wait()

	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sizes) < 5 {
		t.Fatalf("%d entries, want at least 5", len(g.sizes))
	}
	if g.sizes[0] != 1 {
		t.Errorf("first entry carried %d, want 1 (a lone proposal goes at once)", g.sizes[0])
	}
	for i, n := range g.sizes[1:] {
		if n != callers {
			t.Errorf("entry %d carried %d commands, want all %d callers: %v", i+1, n, callers, g.sizes)
			break
		}
	}
}

// TestBatcherLoneCallerIsNotHeld: a caller alone completes the count of a
// gathering with its own next proposal, so it never waits for the limit.
func TestBatcherLoneCallerIsNotHeld(t *testing.T) {
	g := &gatedApply{gate: make(chan struct{})}
	close(g.gate)
	b := newBatcher(g.apply)
	b.gatherLimit = forever
	defer b.close() // ends the last gathering, which nobody completes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := b.propose(ctx, &fsmpb.Command{}); err != nil {
			t.Fatalf("proposal %d: %v (held by a gathering?)", i, err)
		}
	}
}

// TestBatcherGatheringEnds: a caller that does not come back holds the
// queued proposals only until the gathering's limit.
func TestBatcherGatheringEnds(t *testing.T) {
	g := &gatedApply{gate: make(chan struct{})}
	b := newBatcher(g.apply)
	var limits atomic.Int64
	b.gatherLimit = func(time.Duration) time.Duration { limits.Add(1); return 20 * time.Millisecond }
	defer b.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := b.propose(ctx, &fsmpb.Command{})
		first <- err
	}()
	waitState(b, 1, 0)
	second := make(chan error, 1)
	go func() {
		_, err := b.propose(ctx, &fsmpb.Command{})
		second <- err
	}()
	waitState(b, 1, 1)
	close(g.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The first caller does not come back: the count (2) is never reached.
	if err := <-second; err != nil {
		t.Fatalf("queued proposal: %v", err)
	}
	if limits.Load() == 0 {
		t.Fatal("no gathering was tried")
	}
	if got := g.entries.Load(); got != 2 {
		t.Fatalf("%d entries, want 2", got)
	}
}
