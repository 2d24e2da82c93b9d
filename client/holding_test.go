package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/clock"
)

// fakeClient is a client on a fake clock with the faults interceptor, so a
// test decides when renewals happen.
func fakeClient(t *testing.T, endpoints []string) (*client.Client, *clock.Fake, *faults) {
	t.Helper()
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	f := &faults{}
	c := lkClient(t, endpoints, func(cfg *client.Config) {
		cfg.Clock = fake
		cfg.DialOptions = []grpc.DialOption{f.dialOption()}
	})
	return c, fake, f
}

// advanceArmed advances fake by d once the renewal engine's timer is armed.
func advanceArmed(t *testing.T, fake *clock.Fake, d time.Duration) {
	t.Helper()
	closedWithin(t, fake.WaitForTimers(1, nil), 5*time.Second, "the renewal engine's timer")
	fake.Advance(d)
}

func TestLocalDeadline(t *testing.T) {
	cl := startCluster(t)
	c, fake, f := fakeClient(t, cl.Endpoints)
	ctx := context.Background()
	start := fake.Now()

	h, err := c.Hold(ctx, "deadline", client.WithTTL(10*time.Second), client.WithIdentity("alice"))
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	// sent + duration*(1-MaxDrift) - Margin, with sent read before sending.
	want := start.Add(9900*time.Millisecond - client.DefaultMargin)
	if got := h.Deadline(); !got.Equal(want) {
		t.Fatalf("Deadline = %v after start, want %v", got.Sub(start), want.Sub(start))
	}
	if !h.Valid() || h.Token() == 0 || h.Holder() != "alice" {
		t.Fatalf("holding = %v valid=%v, want a valid holding of alice", h, h.Valid())
	}

	// The first renewal is due at a third of the duration; the engine
	// sends it a quarter of its interval early (2.5s) and moves the
	// deadline to that send time's.
	advanceArmed(t, fake, 2500*time.Millisecond)
	renewed := start.Add(2500*time.Millisecond + 9900*time.Millisecond - client.DefaultMargin)
	waitUntil(t, 5*time.Second, "the renewal", func() bool { return h.Deadline().Equal(renewed) })
	if got := h.LastRenewal(); !got.Equal(start.Add(2500 * time.Millisecond)) {
		t.Errorf("LastRenewal = %v after start, want 2.5s", got.Sub(start))
	}

	// From now on no renewal reaches the server and no answer comes: the
	// holding is valid up to its deadline and lost at it, by the local
	// timer alone.
	f.drop.Store(true)
	fake.Advance(renewed.Sub(fake.Now()) - time.Millisecond)
	if !h.Valid() {
		t.Fatal("holding invalid 1ms before its deadline")
	}
	select {
	case <-h.Lost():
		t.Fatalf("Lost closed before the deadline: %v", h.Err())
	default:
	}
	fake.Advance(time.Millisecond)
	if h.Valid() {
		t.Fatal("holding valid at its deadline")
	}
	closedWithin(t, h.Lost(), 5*time.Second, "Lost at the deadline")
	if err := h.Err(); !errors.Is(err, client.ErrLost) || !errors.Is(err, client.ErrExpired) {
		t.Fatalf("Err = %v, want ErrLost and ErrExpired", err)
	}
	if cause := context.Cause(h.Context()); !errors.Is(cause, client.ErrExpired) {
		t.Fatalf("context cause = %v, want ErrExpired", cause)
	}
	<-h.Done()
}

func TestHoldRefusesDurationWithoutRoomToRenew(t *testing.T) {
	c := lkClient(t, []string{"127.0.0.1:1"}, func(cfg *client.Config) { cfg.Margin = time.Second })
	_, err := c.Hold(context.Background(), "x", client.WithTTL(1200*time.Millisecond))
	if !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("Hold with a 1.2s duration and a 1s margin = %v, want ErrInvalid", err)
	}
}

func TestHoldHeldByOther(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	ctx := context.Background()
	a, err := c.Hold(ctx, "busy", client.WithIdentity("a"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Hold(ctx, "busy", client.WithIdentity("b"))
	var held *client.HeldError
	if !errors.Is(err, client.ErrLocked) || !errors.As(err, &held) {
		t.Fatalf("Hold by b = %v, want a HeldError", err)
	}
	if held.Lease.GetHolderIdentity() != "a" || held.Lease.GetFencingToken() != a.Token() || held.Remaining <= 0 {
		t.Fatalf("HeldError names %v remaining %v, want a's holding", held.Lease, held.Remaining)
	}
	if _, err := c.Hold(ctx, "busy", client.WithIdentity("a")); !errors.Is(err, client.ErrAlreadyHeld) {
		t.Fatalf("second Hold by a in the same client = %v, want ErrAlreadyHeld", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if !errors.Is(a.Err(), client.ErrReleased) {
		t.Fatalf("Err after Release = %v, want ErrReleased", a.Err())
	}
	select {
	case <-a.Lost():
		t.Fatal("Lost closed by a release")
	default:
	}
	b, err := c.Hold(ctx, "busy", client.WithIdentity("b"))
	if err != nil {
		t.Fatalf("Hold by b after the release: %v", err)
	}
	if b.Token() <= a.Token() {
		t.Fatalf("b's token %d is not above a's %d", b.Token(), a.Token())
	}
}

// TestRenewalAnswers checks that the engine loses a holding at once on the
// answers that say it is gone, and stops on PermissionDenied.
func TestRenewalAnswers(t *testing.T) {
	cl := startCluster(t)
	other := lkClient(t, cl.Endpoints)
	tests := []struct {
		name    string
		act     func(t *testing.T, f *faults, name string)
		wantErr error
	}{
		{
			name: "deleted",
			act: func(t *testing.T, _ *faults, name string) {
				if _, err := other.Delete(context.Background(), "default", name); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: client.ErrNotFound,
		},
		{
			name: "taken by another",
			act: func(t *testing.T, _ *faults, name string) {
				ctx := context.Background()
				if _, err := other.Delete(ctx, "default", name); err != nil {
					t.Fatal(err)
				}
				if r, err := other.Acquire(ctx, "default", name, "bob", time.Minute, 0, nil); err != nil || !r.Acquired {
					t.Fatalf("Acquire by bob = %v, %v", r, err)
				}
			},
			wantErr: client.ErrStaleToken,
		},
		{
			name: "permission denied",
			act: func(t *testing.T, f *faults, _ string) {
				f.setRefuse(func(string) error { return status.Error(codes.PermissionDenied, "not you") })
			},
			wantErr: client.ErrPermission,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, fake, f := fakeClient(t, cl.Endpoints)
			name := fmt.Sprintf("answers-%d", i)
			h, err := c.Hold(context.Background(), name, client.WithTTL(10*time.Second), client.WithIdentity("alice"))
			if err != nil {
				t.Fatal(err)
			}
			tt.act(t, f, name)
			advanceArmed(t, fake, 2500*time.Millisecond)
			closedWithin(t, h.Lost(), 5*time.Second, "Lost")
			if err := h.Err(); !errors.Is(err, client.ErrLost) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Err = %v, want ErrLost and %v", err, tt.wantErr)
			}
			if !fake.Now().Before(h.Deadline()) {
				t.Fatal("lost by the deadline, want lost by the answer")
			}
			if got := f.opens.Load(); got != 1 {
				t.Errorf("KeepAlive streams opened = %d, want 1 (no retry)", got)
			}
		})
	}
}

// TestRenewalFailsOver refuses the KeepAlive stream on the first endpoint:
// renewals move to another endpoint and the holding lives on.
func TestRenewalFailsOver(t *testing.T) {
	cl := startCluster(t)
	f := &faults{}
	var mu sync.Mutex
	refused := 0
	// Refuse the leader's endpoint: the client goes there first, since the
	// nodes that forward name it.
	down := cl.Endpoints[cl.Index(cl.Leader(10*time.Second))]
	f.setRefuse(func(target string) error {
		if target == down {
			mu.Lock()
			refused++
			mu.Unlock()
			return status.Error(codes.Unavailable, "down")
		}
		return nil
	})
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.DialOptions = []grpc.DialOption{f.dialOption()} })
	h, err := c.Hold(context.Background(), "failover", client.WithTTL(600*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.Lost():
		t.Fatalf("holding lost: %v", h.Err())
	case <-time.After(1500 * time.Millisecond): // 2.5 durations, 7 renewals
	}
	mu.Lock()
	defer mu.Unlock()
	if refused == 0 {
		t.Error("the leader's endpoint was never tried")
	}
	if len(f.sizes()) < 4 {
		t.Errorf("%d renewals went out, want at least 4", len(f.sizes()))
	}
}

// TestRenewalBatches holds many leases in one client: their renewals share
// KeepAlive messages.
func TestRenewalBatches(t *testing.T) {
	cl := startCluster(t)
	f := &faults{}
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.DialOptions = []grpc.DialOption{f.dialOption()} })
	const n = 40
	var wg sync.WaitGroup
	hs := make([]*client.Holding, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs[i], errs[i] = c.Hold(context.Background(), fmt.Sprintf("batch-%d", i), client.WithTTL(time.Second))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Hold %d: %v", i, err)
		}
	}
	waitUntil(t, 5*time.Second, "two renewals of every holding", func() bool {
		total := 0
		for _, s := range f.sizes() {
			total += s
		}
		return total >= 2*n
	})
	sizes := f.sizes()
	biggest := 0
	for _, s := range sizes {
		biggest = max(biggest, s)
	}
	if biggest < n/4 || len(sizes) > n {
		t.Fatalf("batch sizes %v: want few messages carrying many holdings", sizes)
	}
	for _, h := range hs {
		if !h.Valid() {
			t.Fatalf("%v lost: %v", h, h.Err())
		}
	}
}

// TestCloseReleasesHoldings: Close ends the holdings it keeps and frees
// them on the server, unless the client was built to abandon them.
func TestCloseReleasesHoldings(t *testing.T) {
	cl := startCluster(t)
	other := lkClient(t, cl.Endpoints)
	for _, abandon := range []bool{false, true} {
		t.Run(fmt.Sprintf("AbandonOnClose=%v", abandon), func(t *testing.T) {
			name := fmt.Sprintf("closing-%v", abandon)
			c := lkClient(t, cl.Endpoints, func(cfg *client.Config) { cfg.AbandonOnClose = abandon })
			h, err := c.Hold(context.Background(), name, client.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			m := mustMutex(t, c, name+"-mutex", client.WithTTL(time.Minute))
			if _, err := m.Lock(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			closedWithin(t, h.Lost(), time.Second, "Lost after Close")
			if !errors.Is(h.Err(), client.ErrClosed) {
				t.Fatalf("Err = %v, want ErrClosed", h.Err())
			}
			for _, lease := range []string{name, name + "-mutex"} {
				got, err := other.Get(context.Background(), "default", lease, false)
				if err != nil {
					t.Fatal(err)
				}
				holder := got.GetLease().GetHolderIdentity()
				if abandon && holder == "" {
					t.Errorf("%s: released at Close with AbandonOnClose", lease)
				}
				if !abandon && holder != "" {
					t.Errorf("%s: still held by %q after Close", lease, holder)
				}
			}
		})
	}
}

// TestUnlockWithEndedContextReleases is the `defer m.Unlock(ctx)` of a
// request whose context has ended by then: the lock is freed all the same.
func TestUnlockWithEndedContextReleases(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	other := lkClient(t, cl.Endpoints)
	ctx, cancel := context.WithCancel(context.Background())
	m := mustMutex(t, c, "deferred", client.WithTTL(time.Minute))
	func() {
		if _, err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() {
			// Whether it waited for the server or not, the release goes on.
			if err := m.Unlock(ctx); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Unlock: %v", err)
			}
		}()
		cancel() // the request ends while the lock is held
	}()
	if m.Holding() != nil {
		t.Fatal("the Mutex still keeps its holding after Unlock")
	}
	// A new Lock of the same Mutex waits for the release under way.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	waitUntil(t, 5*time.Second, "the lease to be free", func() bool {
		got, err := other.Get(ctx2, "default", "deferred", false)
		return err == nil && got.GetLease().GetHolderIdentity() == ""
	})
	h, err := mustMutex(t, other, "deferred").TryLock(ctx2)
	if err != nil {
		t.Fatalf("another Mutex cannot take the lock after the deferred Unlock: %v", err)
	}
	if err := h.Release(ctx2); err != nil {
		t.Fatal(err)
	}
}

// TestRelockAfterUnlockWithEndedContext: the release that an Unlock with
// an ended context leaves running must not end the next holding of the
// same Mutex (an acquire by the current holder is a renewal of the same
// holding, so a late release would end it): the new Lock waits for it.
func TestRelockAfterUnlockWithEndedContext(t *testing.T) {
	cl := startCluster(t)
	// Releases reach the server late, as over a slow link: without the
	// wait, the new Lock's acquire would come first.
	slow := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*pb.ReleaseRequest); ok && r.GetName() == "relock" && !r.GetLeaveQueue() {
			time.Sleep(100 * time.Millisecond)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) {
		cfg.UnaryCalls = true // the interceptor sees every call
		cfg.DialOptions = []grpc.DialOption{slow}
	})
	ctx := context.Background()
	m := mustMutex(t, c, "relock", client.WithTTL(time.Minute))
	for round := range 5 {
		if _, err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		ended, cancel := context.WithCancel(ctx)
		cancel()
		_ = m.Unlock(ended) // returns at once; the release goes on
		h, err := m.Lock(ctx)
		if err != nil {
			t.Fatalf("round %d: Lock after Unlock: %v", round, err)
		}
		c.WaitBackground()
		got, err := c.Get(ctx, "default", "relock", false)
		if err != nil {
			t.Fatal(err)
		}
		if l := got.GetLease(); l.GetHolderIdentity() != m.Identity() || l.GetFencingToken() != h.Token() || h.Err() != nil {
			t.Fatalf("round %d: the new holding (token %d, err %v) was ended by the earlier release: lease %v", round, h.Token(), h.Err(), l)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMetricsShareRegisterer builds two clients on one registry: both
// count into the same collectors.
func TestMetricsShareRegisterer(t *testing.T) {
	cl := startCluster(t)
	reg := prometheus.NewRegistry()
	share := func(cfg *client.Config) { cfg.Registerer = reg }
	a, b := lkClient(t, cl.Endpoints, share), lkClient(t, cl.Endpoints, share)
	ctx := context.Background()
	ha, err := a.Hold(ctx, "metrics", client.WithTTL(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Hold(ctx, "metrics", client.WithTTL(time.Minute)); !errors.Is(err, client.ErrLocked) {
		t.Fatalf("Hold by b = %v, want ErrLocked", err)
	}
	if got := metricValue(t, reg, "leasekeeper_client_acquire_attempts_total", "acquired"); got != 1 {
		t.Errorf("acquired attempts = %v, want 1", got)
	}
	if got := metricValue(t, reg, "leasekeeper_client_acquire_attempts_total", "held"); got != 1 {
		t.Errorf("held attempts = %v, want 1", got)
	}
	a.Close()
	<-ha.Lost()
	if got := metricValue(t, reg, "leasekeeper_client_holdings_lost_total", "closed"); got != 1 {
		t.Errorf("holdings lost on close = %v, want 1", got)
	}
}

// TestConstructorsValidateOptions: a bad option is refused when the
// Semaphore or Heartbeat is made, not at its first use, and options that
// a constructor would ignore are refused too.
func TestConstructorsValidateOptions(t *testing.T) {
	c := lkClient(t, []string{"127.0.0.1:1"})
	tests := []struct {
		name string
		make func() error
	}{
		{name: "semaphore with a negative TTL", make: func() error {
			_, err := client.NewSemaphore(c, "s", 2, client.WithTTL(-time.Second))
			return err
		}},
		{name: "semaphore with no retry period", make: func() error {
			_, err := client.NewSemaphore(c, "s", 2, client.WithRetryPeriod(0))
			return err
		}},
		{name: "heartbeat with an identity option", make: func() error {
			_, err := client.NewHeartbeat(c, "nodes", "n1", client.WithIdentity("someone-else"))
			return err
		}},
		{name: "heartbeat with a namespace option", make: func() error {
			_, err := client.NewHeartbeat(c, "nodes", "n1", client.WithNamespace("other"))
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.make(); !errors.Is(err, client.ErrInvalid) {
				t.Fatalf("got %v, want an error matching ErrInvalid", err)
			}
		})
	}
	if _, err := client.NewSemaphore(c, "s", 2, client.WithTTL(time.Second)); err != nil {
		t.Fatalf("a valid semaphore refused: %v", err)
	}
}
