package node

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

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
