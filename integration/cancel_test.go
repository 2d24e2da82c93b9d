package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// cancelStressEnv raises the cancellations per acquire path of
// TestCancelledAcquiresLeaveNothing from its short default.
const cancelStressEnv = "LEASEKEEPER_CANCEL_STRESS"

// TestCancelledAcquiresLeaveNothing cancels every acquire path 0-8ms after
// the call, on a real three-process cluster, until each path has given up
// at least n times on an acquire that was on its way (the client's
// abandoned-acquires counter: a call cancelled before it was sent does not
// count), then closes the client (which waits for its cleanups) and counts
// the leases that a gone caller still holds or waits for. There must be
// none. LEASEKEEPER_CANCEL_STRESS=400 raises n from 25.
func TestCancelledAcquiresLeaveNothing(t *testing.T) {
	n := 25
	if v := os.Getenv(cancelStressEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive count", cancelStressEnv, v)
		}
	}
	cl := startCluster(t, 3)
	cl.leader(15 * time.Second)
	bg := context.Background()
	blockers := cl.client()

	type path struct {
		name string
		// setup runs once with the path's namespace (a blocker, say).
		setup func(t *testing.T, ns string)
		// run makes one call of the path on lease i with ctx; it returns
		// the call's error (nil: it took the lease, and released it).
		run func(c *client.Client, ns string, i int, ctx context.Context) error
		// after, when set, checks what a List cannot see (a semaphore's
		// queue) and returns how many were left behind.
		after func(t *testing.T, ns string) int
	}
	var semBlocker *client.Holding
	done := func(h interface{ Release(context.Context) error }, err error) error {
		if err != nil {
			return err
		}
		return h.Release(bg)
	}
	paths := []path{
		{name: "trylock", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			m, err := client.NewMutex(c, fmt.Sprintf("l%d", i), client.WithNamespace(ns))
			if err != nil {
				return err
			}
			h, err := m.TryLock(ctx)
			return done(h, err)
		}},
		{name: "lock", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			m, err := client.NewMutex(c, fmt.Sprintf("l%d", i), client.WithNamespace(ns))
			if err != nil {
				return err
			}
			h, err := m.Lock(ctx)
			return done(h, err)
		}},
		{name: "lock-queued", setup: func(t *testing.T, ns string) {
			if _, err := blockers.Hold(bg, "l", client.WithNamespace(ns), client.WithIdentity("blocker"), client.WithTTL(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}, run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			m, err := client.NewMutex(c, "l", client.WithNamespace(ns))
			if err != nil {
				return err
			}
			h, err := m.Lock(ctx)
			return done(h, err)
		}},
		{name: "hold", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			h, err := c.Hold(ctx, fmt.Sprintf("l%d", i), client.WithNamespace(ns))
			return done(h, err)
		}},
		{name: "semaphore", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			s, err := client.NewSemaphore(c, fmt.Sprintf("s%d", i), 2, client.WithNamespace(ns))
			if err != nil {
				return err
			}
			if i%2 == 0 {
				h, err := s.TryAcquire(ctx)
				return done(h, err)
			}
			h, err := s.Acquire(ctx)
			return done(h, err)
		}},
		{name: "semaphore-queued", setup: func(t *testing.T, ns string) {
			s, err := client.NewSemaphore(blockers, "s", 1, client.WithNamespace(ns), client.WithIdentity("blocker"), client.WithTTL(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			if semBlocker, err = s.TryAcquire(bg); err != nil {
				t.Fatal(err)
			}
		}, run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			s, err := client.NewSemaphore(c, "s", 1, client.WithNamespace(ns))
			if err != nil {
				return err
			}
			h, err := s.Acquire(ctx)
			return done(h, err)
		}, after: func(t *testing.T, ns string) int {
			// The queue is not listed: free the slot, and see that it
			// goes to nobody (a waiter left in the queue would get it).
			if err := semBlocker.Release(bg); err != nil {
				t.Fatal(err)
			}
			g, err := blockers.Get(bg, ns, "s-0", false)
			if err != nil {
				t.Fatal(err)
			}
			if h := g.GetLease().GetHolderIdentity(); h != "" {
				t.Errorf("left behind: a waiter of semaphore s, handed s-0 as %q (token %d)", h, g.GetLease().GetFencingToken())
				return 1
			}
			return 0
		}},
		{name: "elector", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			le, err := client.NewLeaderElector(c, client.ElectorConfig{
				Namespace: ns, Name: fmt.Sprintf("l%d", i), Identity: client.NewIdentity(),
				LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
				ReleaseOnCancel: true,
				Callbacks:       client.LeaderCallbacks{OnStartedLeading: func(context.Context) {}},
			})
			if err != nil {
				return err
			}
			return le.Run(ctx)
		}},
		{name: "heartbeat", run: func(c *client.Client, ns string, i int, ctx context.Context) error {
			hb, err := client.NewHeartbeat(c, ns, fmt.Sprintf("n%d", i))
			if err != nil {
				return err
			}
			if err := hb.Run(ctx); err != nil {
				return err
			}
			return ctx.Err() // Run returns nil when ctx ends
		}},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			ns := "cancel-" + p.name
			if p.setup != nil {
				p.setup(t, ns)
			}
			reg := prometheus.NewRegistry()
			cfg := client.DefaultConfig()
			cfg.Endpoints = cl.endpoints()
			cfg.Registerer = reg
			c, err := client.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			cancelled, answered := 0, 0
			for i := 0; abandoned(t, reg) < n; i++ {
				if i >= 20*n {
					t.Fatalf("only %d of %d calls were given up on their way", abandoned(t, reg), i)
				}
				ctx, cancel := context.WithCancel(bg)
				time.AfterFunc(rand.N(8*time.Millisecond+1), cancel)
				err := p.run(c, ns, i, ctx)
				cancel()
				switch {
				case err == nil:
					answered++
				case errors.Is(err, context.Canceled):
					cancelled++
				default:
					t.Fatalf("call %d: %v", i, err)
				}
			}
			// Close waits for the cleanups under way.
			if err = c.Close(); err != nil {
				t.Fatal(err)
			}
			resp, err := blockers.List(bg, &pb.ListRequest{Namespace: ns})
			if err != nil {
				t.Fatal(err)
			}
			leaks := 0
			for _, l := range resp.GetLeases() {
				if h := l.GetHolderIdentity(); h != "" && h != "blocker" || len(l.GetWaiters()) > 0 {
					leaks++
					if leaks <= 5 {
						t.Errorf("left behind: %s held by %q (token %d), waiters %v", l.GetName(), h, l.GetFencingToken(), l.GetWaiters())
					}
				}
			}
			if p.after != nil {
				leaks += p.after(t, ns)
			}
			t.Logf("%s: %d calls cancelled, %d acquires given up on their way, %d answered first, %d leases left behind",
				p.name, cancelled, abandoned(t, reg), answered, leaks)
			if leaks > 0 {
				t.Fatalf("%d leases left behind after %d cancellations", leaks, cancelled)
			}
		})
	}
}

// abandoned reads the client's count of acquires given up on their way.
func abandoned(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "leasekeeper_client_abandoned_acquires_total" {
			return int(mf.GetMetric()[0].GetCounter().GetValue())
		}
	}
	return 0
}
