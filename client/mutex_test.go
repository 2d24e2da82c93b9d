package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
	"github.com/leasekeeper/leasekeeper/fence"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
	"github.com/leasekeeper/leasekeeper/node"
)

// TestMutexContention runs 8 contenders on one lock for a few seconds.
// Every new holding must carry a higher token than the one before, no
// holding may be valid (by its client's own deadline) while another is
// granted, and a fence.Guard must accept every holder's writes while it
// holds and refuse every older token afterwards.
func TestMutexContention(t *testing.T) {
	cl := startCluster(t)
	clients := []*client.Client{lkClient(t, cl.Endpoints), lkClient(t, cl.Endpoints), lkClient(t, cl.Endpoints)}
	guard := fence.NewGuard()
	var (
		mu        sync.Mutex
		lastToken uint64
		tokens    []uint64
		current   []*client.Holding
		failures  []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 8 {
		m := mustMutex(t, clients[i%len(clients)], "contended", client.WithTTL(2*time.Second), client.WithGrace(0),
			client.WithIdentity(fmt.Sprintf("worker-%d", i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				h, err := m.Lock(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail("worker %d: Lock: %v", i, err)
					}
					return
				}
				mu.Lock()
				if h.Token() <= lastToken {
					failures = append(failures, fmt.Sprintf("worker %d got token %d after %d", i, h.Token(), lastToken))
				}
				lastToken = h.Token()
				tokens = append(tokens, h.Token())
				for _, o := range current {
					if o.Valid() {
						failures = append(failures, fmt.Sprintf("worker %d granted %v while %v is valid until %v", i, h, o, o.Deadline()))
					}
				}
				current = append(current[:0], h)
				mu.Unlock()
				for range 3 {
					if err := guard.Check("contended", h.Token()); err != nil {
						fail("worker %d: guard refused a current holder: %v", i, err)
					}
				}
				if m.FencingToken() != h.Token() {
					fail("worker %d: FencingToken %d, holding %d", i, m.FencingToken(), h.Token())
				}
				if err := m.Unlock(context.Background()); err != nil {
					fail("worker %d: Unlock: %v", i, err)
				}
				if h.Valid() || h.Context().Err() == nil {
					fail("worker %d: holding still valid after Unlock", i)
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if len(tokens) < 8 {
		t.Fatalf("only %d holdings in 4s", len(tokens))
	}
	for _, tok := range tokens[:len(tokens)-1] {
		if err := guard.Check("contended", tok); !errors.Is(err, fence.ErrStale) {
			t.Fatalf("guard accepted old token %d after %d: %v", tok, guard.Highest("contended"), err)
		}
	}
	t.Logf("%d holdings, tokens %d..%d", len(tokens), tokens[0], tokens[len(tokens)-1])
}

func TestMutexTryLockAndUnlock(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx := context.Background()
	a := mustMutex(t, c, "try", client.WithTTL(5*time.Second))
	b := mustMutex(t, c, "try", client.WithTTL(5*time.Second))
	if err := a.Unlock(ctx); !errors.Is(err, client.ErrNotLocked) {
		t.Fatalf("Unlock before Lock = %v, want ErrNotLocked", err)
	}
	if a.Context().Err() == nil || a.FencingToken() != 0 {
		t.Fatal("an unlocked Mutex has a live context or a token")
	}
	ha, err := a.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock a: %v", err)
	}
	if _, err := a.TryLock(ctx); !errors.Is(err, client.ErrAlreadyLocked) {
		t.Fatalf("second TryLock a = %v, want ErrAlreadyLocked", err)
	}
	if _, err := b.TryLock(ctx); !errors.Is(err, client.ErrLocked) {
		t.Fatalf("TryLock b = %v, want ErrLocked", err)
	}
	// Lock with a deadline gives up when the lock stays held.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := b.Lock(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock b with a deadline = %v, want DeadlineExceeded", err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatalf("Unlock a: %v", err)
	}
	if ha.Context().Err() == nil {
		t.Fatal("Unlock left the holding's context live")
	}
	hb, err := b.TryLock(ctx)
	if err != nil {
		t.Fatalf("TryLock b after Unlock: %v", err)
	}
	if hb.Token() <= ha.Token() {
		t.Fatalf("b's token %d is not above a's %d", hb.Token(), ha.Token())
	}
}

// TestMutexWakesOnRelease checks that a waiter is woken by the watch, not
// by its backstop retry, which is set far beyond the test's patience.
func TestMutexWakesOnRelease(t *testing.T) {
	cl := startCluster(t)
	reg := prometheus.NewRegistry()
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.Registerer = reg })
	ctx := context.Background()
	a := mustMutex(t, c, "wake", client.WithTTL(10*time.Second))
	b := mustMutex(t, c, "wake", client.WithTTL(10*time.Second), client.WithRetryPeriod(time.Hour))
	if _, err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := b.Lock(ctx)
		got <- err
	}()
	// Release only once b was refused: its watch starts from the refused
	// revision, so whether the release comes before the watch is open does
	// not matter.
	waitUntil(t, 5*time.Second, "b to be refused", func() bool {
		return metricValue(t, reg, "leasekeeper_client_acquire_attempts_total", "held") >= 1
	})
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recvWithin(t, got, 5*time.Second, "b's Lock after the release"); err != nil {
		t.Fatalf("Lock b: %v", err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if n := metricValue(t, reg, "leasekeeper_client_lock_wait_seconds", ""); n != 2 {
		t.Errorf("lock wait observations = %v, want 2", n)
	}
}

// metricValue returns a counter's value (the sample count for a histogram)
// for the series whose only label value is label ("" for none).
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestMutexWakesOnExpiry: a holder that vanishes without releasing (its
// client closed) is replaced as soon as the server expires it.
func TestMutexWakesOnExpiry(t *testing.T) {
	cl := startCluster(t)
	ca, cb := lkClient(t, cl.Endpoints), lkClient(t, cl.Endpoints)
	ctx := context.Background()
	a := mustMutex(t, ca, "expiry", client.WithTTL(500*time.Millisecond), client.WithGrace(0))
	b := mustMutex(t, cb, "expiry", client.WithTTL(500*time.Millisecond), client.WithGrace(0), client.WithRetryPeriod(time.Hour))
	if _, err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	ca.Close()
	closedWithin(t, a.Lost(), time.Second, "a's loss on Close")
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := b.Lock(lctx); err != nil {
		t.Fatalf("Lock b after a's client closed: %v", err)
	}
}

// TestPartitionedHolderLosesFirst cuts a holder off from the cluster in two
// ways and checks that it saw Lost() before the leader granted the lock to
// another client.
func TestPartitionedHolderLosesFirst(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the holder's and the taker's clients and the
		// function that cuts the holder off.
		setup func(t *testing.T, cl *lktest.Cluster) (holder, taker *client.Client, cut func())
	}{
		{
			name: "keepalives dropped",
			setup: func(t *testing.T, cl *lktest.Cluster) (*client.Client, *client.Client, func()) {
				f := &faults{}
				holder := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.DialOptions = []grpc.DialOption{f.dialOption()} })
				return holder, lkClient(t, cl.Endpoints), func() { f.drop.Store(true) }
			},
		},
		{
			name: "leader isolated",
			setup: func(t *testing.T, cl *lktest.Cluster) (*client.Client, *client.Client, func()) {
				li := cl.Index(cl.Leader(10 * time.Second))
				var others []string
				for i, ep := range cl.Endpoints {
					if i != li {
						others = append(others, ep)
					}
				}
				holder := lkClient(t, cl.Endpoints[li:li+1])
				t.Cleanup(cl.Heal)
				return holder, lkClient(t, others), func() { cl.Isolate(li) }
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := startCluster(t)
			holder, taker, cut := tt.setup(t, cl)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			opts := []client.Option{client.WithTTL(time.Second), client.WithGrace(0), client.WithRetryPeriod(200 * time.Millisecond)}
			a := mustMutex(t, holder, "partition", opts...)
			ha, err := a.Lock(ctx)
			if err != nil {
				t.Fatalf("holder Lock: %v", err)
			}
			lostAt := make(chan time.Time, 1)
			go func() {
				<-ha.Lost()
				lostAt <- time.Now()
			}()
			cut()
			b := mustMutex(t, taker, "partition", opts...)
			hb, err := b.Lock(ctx)
			if err != nil {
				t.Fatalf("taker Lock: %v", err)
			}
			// The taker waited in the queue, so the grant happened some
			// time after it sent its last call: compare with the grant
			// itself, which the leader stamped on the holding. Every
			// node of lktest runs in this process, on this machine's
			// clock, so the two wall-clock readings are comparable here.
			grantedAt := hb.Lease().GetAcquireTime().AsTime()
			select {
			case at := <-lostAt:
				if !at.Round(0).Before(grantedAt) {
					t.Fatalf("holder saw Lost %v after the leader granted the lock to the taker", at.Round(0).Sub(grantedAt))
				}
				t.Logf("holder lost %v before the leader granted the lock to the taker", grantedAt.Sub(at.Round(0)))
			default:
				t.Fatalf("taker granted the lock (token %d) while the holder has not seen Lost (valid=%v)", hb.Token(), ha.Valid())
			}
			if !errors.Is(ha.Err(), client.ErrExpired) {
				t.Errorf("holder's Err = %v, want ErrExpired", ha.Err())
			}
			if hb.Token() <= ha.Token() {
				t.Errorf("taker's token %d is not above the holder's %d", hb.Token(), ha.Token())
			}
		})
	}
}

// TestSemaphore lets at most 2 of 5 workers in at once.
func TestSemaphore(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		inside   = map[*client.Holding]bool{}
		most     int
		failures []string
		wg       sync.WaitGroup
	)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := client.NewSemaphore(c, "pool", 2, client.WithTTL(2*time.Second), client.WithIdentity(fmt.Sprintf("w%d", i)))
			if err != nil {
				t.Error(err)
				return
			}
			for range 3 {
				h, err := s.Acquire(ctx)
				if err != nil {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("w%d: Acquire: %v", i, err))
					mu.Unlock()
					return
				}
				mu.Lock()
				n := 0
				for o := range inside {
					if o.Valid() {
						n++
					}
				}
				inside[h] = true
				most = max(most, n+1)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // the work under the slot
				if err := h.Release(context.Background()); err != nil {
					t.Errorf("w%d: Release: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	if most > 2 {
		t.Fatalf("%d holders at once in a semaphore of 2", most)
	}
	if len(inside) != 15 {
		t.Fatalf("%d acquisitions, want 15", len(inside))
	}
	s, _ := client.NewSemaphore(c, "pool", 2)
	a, err := s.TryAcquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// One slot per Semaphore, as one lock per Mutex.
	if _, err := s.TryAcquire(ctx); !errors.Is(err, client.ErrAlreadyHeld) {
		t.Fatalf("second TryAcquire of one Semaphore = %v, want ErrAlreadyHeld", err)
	}
	s2, _ := client.NewSemaphore(c, "pool", 2)
	if _, err := s2.TryAcquire(ctx); err != nil {
		t.Fatal(err)
	}
	s3, _ := client.NewSemaphore(c, "pool", 2)
	if _, err := s3.TryAcquire(ctx); !errors.Is(err, client.ErrLocked) {
		t.Fatalf("third TryAcquire = %v, want ErrLocked", err)
	}
	if a.Lease().GetLabels()[client.SemaphoreLabel] != "pool" {
		t.Fatalf("slot labels = %v", a.Lease().GetLabels())
	}
}

// TestCancelledLockLeavesNothingHeld cancels waiting Locks at every moment
// around the hand-off: whichever way each one ends, the lease must not stay
// with a waiter that gave up.
func TestCancelledLockLeavesNothingHeld(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx := context.Background()
	holder := mustMutex(t, c, "cancelled", client.WithTTL(10*time.Second))
	for round := 0; round < 5; round++ {
		if _, err := holder.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		waiter := mustMutex(t, c, "cancelled", client.WithTTL(10*time.Second))
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := waiter.Lock(wctx)
			done <- err
		}()
		// Release and cancel at nearly the same time.
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := <-done; err == nil {
			if err := waiter.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// The cleanup after a cancelled Lock runs in the background.
		c.WaitBackground()
		g, err := c.Get(ctx, client.DefaultNamespace, "cancelled", false)
		if err != nil {
			t.Fatal(err)
		}
		if h := g.GetLease().GetHolderIdentity(); h != "" {
			t.Fatalf("round %d: lease left held by %q after its waiter gave up", round, h)
		}
	}
}

// TestWaitingLockCostsFewEntries: a Lock that waits 1.5s in the queue of a
// held lock, then gives up, joins the queue once and leaves it once. Every
// call of a waiting Lock is a log entry, so a poll answered early (little
// time left) must not be followed by another at once.
func TestWaitingLockCostsFewEntries(t *testing.T) {
	cl := startCluster(t)
	reg := prometheus.NewRegistry()
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.Registerer = reg })
	ctx := context.Background()
	if _, err := c.Hold(ctx, "busy", client.WithTTL(time.Minute), client.WithIdentity("holder")); err != nil {
		t.Fatal(err)
	}
	leader := cl.Leader(5 * time.Second)
	before := quietIndex(t, leader)
	lctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, err := mustMutex(t, c, "busy", client.WithTTL(time.Minute)).Lock(lctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock = %v, want context.DeadlineExceeded", err)
	}
	c.WaitBackground() // the cleanup leaves the queue
	if !leader.IsLeader() {
		t.Skip("the leader changed during the test: its applied index says nothing")
	}
	entries := leader.Raft().AppliedIndex() - before
	t.Logf("a 1.5s Lock on a held lock: %d log entries, %v calls answered \"still queued\"", entries,
		metricValue(t, reg, "leasekeeper_client_acquire_attempts_total", "held"))
	if entries > 3 {
		t.Fatalf("a 1.5s Lock on a held lock wrote %d log entries, want at most 3", entries)
	}
}

// TestSemaphoreWatchResumesFromACurrentRevision: when the node no longer
// keeps the revision a Semaphore's watch had (OutOfRange), the watch
// starts again from the slots' current revision, never a fixed 0 (which a
// real node refuses as well), and a slot freed later still wakes the
// waiter.
func TestSemaphoreWatchResumesFromACurrentRevision(t *testing.T) {
	srv := clienttest.Start(t)
	var mu sync.Mutex
	var starts []uint64
	capture := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || (method != pb.Leases_Watch_FullMethodName && method != pb.Leases_WatchBatches_FullMethodName) {
			return s, err
		}
		return &captureStream{ClientStream: s, f: func(req *pb.WatchRequest) {
			mu.Lock()
			starts = append(starts, req.GetStartRevision())
			mu.Unlock()
		}}, nil
	})
	c := lkClient(t, []string{srv.Addr}, func(cfg *client.Config) { cfg.DialOptions = []grpc.DialOption{capture} })
	ctx := context.Background()
	if r, err := c.Acquire(ctx, client.DefaultNamespace, "sem-0", "other", time.Minute, 0, map[string]string{client.SemaphoreLabel: "sem"}); err != nil || !r.GetAcquired() {
		t.Fatalf("Acquire: %v %v", r, err)
	}
	var refused atomic.Int32
	outOfRange := func(context.Context) error {
		if refused.Add(1) == 1 {
			return status.Error(codes.OutOfRange, "test: revision compacted")
		}
		return nil
	}
	srv.Inject("Watch", outOfRange)
	srv.Inject("WatchBatches", outOfRange)
	s, err := client.NewSemaphore(c, "sem", 1, client.WithRetryPeriod(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		h, err := s.Acquire(ctx)
		if err == nil {
			err = h.Release(ctx)
		}
		got <- err
	}()
	waitUntil(t, 5*time.Second, "the watch to be opened again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(starts) >= 2
	})
	if _, err := c.Release(ctx, client.DefaultNamespace, "sem-0", "other", 1); err != nil {
		t.Fatal(err)
	}
	if err := recvWithin(t, got, 5*time.Second, "the waiter to take the freed slot"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, rev := range starts {
		if rev == 0 {
			t.Errorf("watch %d started from revision 0 (all starts: %v)", i+1, starts)
		}
	}
}

// captureStream hands every WatchRequest sent to f.
type captureStream struct {
	grpc.ClientStream
	f func(*pb.WatchRequest)
}

func (s *captureStream) SendMsg(m any) error {
	if req, ok := m.(*pb.WatchRequest); ok {
		s.f(req)
	}
	return s.ClientStream.SendMsg(m)
}

// quietIndex waits until leader's log has had no new entry for 500ms and
// returns its applied index. A new cluster writes entries of its own for a
// while (members register their addresses and versions); what follows
// then counts the test's entries alone.
func quietIndex(t *testing.T, leader *node.Node) uint64 {
	t.Helper()
	idx := leader.Raft().AppliedIndex()
	for quiet, deadline := time.Now(), time.Now().Add(10*time.Second); time.Since(quiet) < 500*time.Millisecond; {
		if time.Now().After(deadline) {
			t.Fatal("the log never went quiet for 500ms")
		}
		time.Sleep(20 * time.Millisecond) // no event tells of a quiet log
		if i := leader.Raft().AppliedIndex(); i != idx {
			idx, quiet = i, time.Now()
		}
	}
	return idx
}

// TestSemaphoreWaiterCostsNoEntries: one waiter on a full 20-slot semaphore
// for 5s writes two log entries: it joins the queue, and leaves it when it
// gives up. Its polls (one a second, a third of its 3s duration) are
// answered from the leader's table.
func TestSemaphoreWaiterCostsNoEntries(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx := context.Background()
	const n = 20
	for i := range n {
		s, err := client.NewSemaphore(c, "pool", n, client.WithIdentity(fmt.Sprintf("holder-%d", i)), client.WithTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waiter, err := client.NewSemaphore(c, "pool", n, client.WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	leader := cl.Leader(5 * time.Second)
	before := quietIndex(t, leader)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := waiter.Acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want context.DeadlineExceeded", err)
	}
	c.WaitBackground()
	if !leader.IsLeader() {
		t.Skip("the leader changed during the test: its applied index says nothing")
	}
	entries := leader.Raft().AppliedIndex() - before
	t.Logf("one waiter on a full %d-slot semaphore for 5s: %d log entries", n, entries)
	if entries > 2 {
		t.Fatalf("the waiter wrote %d log entries, want at most 2", entries)
	}
}
