package client_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// giveUp is a test interceptor that lets the next Acquire of one lease
// reach the server and then cancels the caller's context, as a caller
// that gives up while the answer is on its way: the server has applied
// the acquire, the caller never learns how.
type giveUp struct {
	mu     sync.Mutex
	lease  string
	cancel context.CancelFunc
	// reached, when set, tells when the acquire has reached the server
	// (for a waiting acquire, which the server answers only later);
	// without it the interceptor cancels once the server has answered.
	reached func() bool
	fired   chan struct{}
}

func (g *giveUp) arm(lease string, cancel context.CancelFunc, reached func() bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.lease, g.cancel, g.reached, g.fired = lease, cancel, reached, make(chan struct{})
}

func (g *giveUp) dialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		g.mu.Lock()
		var name string
		switch a := req.(type) {
		case *pb.AcquireRequest:
			name = a.GetName()
		case *pb.AcquireSlotRequest:
			name = a.GetName() // the semaphore's
		}
		armed := (method == pb.Leases_Acquire_FullMethodName || method == pb.Leases_AcquireSlot_FullMethodName) && g.cancel != nil && name != "" && name == g.lease
		cancel, reached, fired := g.cancel, g.reached, g.fired
		if armed {
			g.cancel = nil
		}
		g.mu.Unlock()
		if !armed {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		defer close(fired)
		if reached == nil {
			err := invoker(ctx, method, req, reply, cc, opts...)
			cancel()
			if err != nil {
				return err
			}
			return status.Error(codes.Canceled, "test: the caller gave up as the answer came")
		}
		done := make(chan error, 1)
		go func() { done <- invoker(ctx, method, req, reply, cc, opts...) }()
		deadline := time.Now().Add(5 * time.Second)
		for !reached() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // the server state offers no event to wait on
		}
		cancel()
		return <-done
	})
}

// TestEveryAcquirePathCleansUpAfterGivingUp gives up on one Acquire of each
// acquire path after the server applied it: whatever the path, the lease is
// neither held nor waited for by the caller afterwards.
func TestEveryAcquirePathCleansUpAfterGivingUp(t *testing.T) {
	cl := startCluster(t)
	g := &giveUp{}
	c := lkClient(t, cl.Endpoints, func(cfg *client.Config) {
		cfg.UnaryCalls = true // the interceptor sees every call
		// The cleanup looks once more after an attempt's limit.
		cfg.AttemptTimeout = 300 * time.Millisecond
		cfg.DialOptions = []grpc.DialOption{g.dialOption()}
	})
	other := lkClient(t, cl.Endpoints)
	bg := context.Background()

	lease := func(t *testing.T, name string) *pb.Lease {
		t.Helper()
		resp, err := other.Get(bg, client.DefaultNamespace, name, false)
		if errors.Is(err, client.ErrNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetLease()
	}
	queued := func(name, id string) func() bool {
		return func() bool {
			resp, err := other.Get(bg, client.DefaultNamespace, name, false)
			return err == nil && slices.Contains(resp.GetLease().GetWaiters(), id)
		}
	}

	tests := []struct {
		name  string
		lease string
		// held, when set, makes another holder hold the lease first
		// (the path waits in the queue).
		held bool
		// run runs the path with ctx, armed to be given up.
		run func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error
	}{
		{name: "TryLock", lease: "gu-trylock", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			g.arm("gu-trylock", cancel, nil)
			_, err := mustMutex(t, c, "gu-trylock", client.WithIdentity(id)).TryLock(ctx)
			return err
		}},
		{name: "Lock free", lease: "gu-lock", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			g.arm("gu-lock", cancel, nil)
			_, err := mustMutex(t, c, "gu-lock", client.WithIdentity(id)).Lock(ctx)
			return err
		}},
		{name: "Lock queued", lease: "gu-lockq", held: true, run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			g.arm("gu-lockq", cancel, queued("gu-lockq", id))
			_, err := mustMutex(t, c, "gu-lockq", client.WithIdentity(id)).Lock(ctx)
			return err
		}},
		{name: "Hold", lease: "gu-hold", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			g.arm("gu-hold", cancel, nil)
			_, err := c.Hold(ctx, "gu-hold", client.WithIdentity(id))
			return err
		}},
		{name: "Semaphore", lease: "gu-sem-0", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			s, err := client.NewSemaphore(c, "gu-sem", 1, client.WithIdentity(id))
			if err != nil {
				t.Fatal(err)
			}
			g.arm("gu-sem", cancel, nil)
			_, err = s.Acquire(ctx)
			return err
		}},
		{name: "Semaphore queued", lease: "gu-semq-0", held: true, run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			s, err := client.NewSemaphore(c, "gu-semq", 1, client.WithIdentity(id))
			if err != nil {
				t.Fatal(err)
			}
			g.arm("gu-semq", cancel, func() bool {
				pos, _, _ := cl.Leader(time.Second).FSM().SemaphoreWait(client.DefaultNamespace, "gu-semq", id, 1)
				return pos > 0
			})
			_, err = s.Acquire(ctx)
			return err
		}},
		{name: "LeaderElector", lease: "gu-elect", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			le, err := client.NewLeaderElector(c, client.ElectorConfig{
				Name: "gu-elect", Identity: id,
				LeaseDuration: 10 * time.Second, RenewDeadline: 5 * time.Second, RetryPeriod: time.Second,
				Callbacks: client.LeaderCallbacks{OnStartedLeading: func(context.Context) { t.Error("led after giving up") }},
			})
			if err != nil {
				t.Fatal(err)
			}
			g.arm("gu-elect", cancel, nil)
			return le.Run(ctx)
		}},
		{name: "Heartbeat", lease: "gu-node", run: func(t *testing.T, ctx context.Context, cancel context.CancelFunc, id string) error {
			hb, err := client.NewHeartbeat(c, client.DefaultNamespace, "gu-node")
			if err != nil {
				t.Fatal(err)
			}
			g.arm("gu-node", cancel, nil)
			if err := hb.Run(ctx); err != nil {
				return err
			}
			return ctx.Err()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "giver-" + tt.lease
			if tt.name == "Heartbeat" {
				id = "gu-node"
			}
			var blocker *client.Holding
			if tt.held {
				h, err := other.Hold(bg, tt.lease, client.WithIdentity("blocker"))
				if err != nil {
					t.Fatal(err)
				}
				blocker = h
			}
			ctx, cancel := context.WithCancel(bg)
			defer cancel()
			err := tt.run(t, ctx, cancel, id)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v, want context.Canceled", err)
			}
			g.mu.Lock()
			fired := g.fired
			g.mu.Unlock()
			closedWithin(t, fired, 5*time.Second, "the interceptor to give up")
			c.WaitBackground()
			l := lease(t, tt.lease)
			if got := l.GetHolderIdentity(); got == id {
				t.Errorf("lease %s still held by %s (token %d) after it gave up", tt.lease, id, l.GetFencingToken())
			}
			if slices.Contains(l.GetWaiters(), id) {
				t.Errorf("lease %s still has %s in its queue %v after it gave up", tt.lease, id, l.GetWaiters())
			}
			for _, w := range cl.Leader(time.Second).FSM().Waiters() {
				if w.Holder == id {
					t.Errorf("%s still waits for %s after it gave up", id, w.Name)
				}
			}
			if blocker != nil {
				if got := l.GetHolderIdentity(); got != "blocker" {
					t.Errorf("lease %s holder = %q, want the blocker's holding untouched", tt.lease, got)
				}
				if err := blocker.Release(bg); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
