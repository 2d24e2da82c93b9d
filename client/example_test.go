package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/fence"
)

// This example takes a lease, uses its fencing token and releases it. It
// needs a running cluster, so it is compiled but not run.
func ExampleClient_Acquire() {
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}
	c, err := client.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Acquire(ctx, "default", "db-primary", "worker-1", 10*time.Second, 2*time.Second, nil)
	if err != nil {
		log.Fatal(err)
	}
	if !resp.Acquired {
		fmt.Printf("held by %s for up to %v\n", resp.Lease.HolderIdentity, resp.Remaining.AsDuration())
		return
	}
	token := resp.Lease.FencingToken
	fmt.Println("writing with fencing token", token)

	if _, err := c.Release(ctx, "default", "db-primary", "worker-1", token); errors.Is(err, client.ErrStaleToken) {
		fmt.Println("the holding was lost before the release")
	}
}

// newExampleClient connects to the examples' in-process cluster.
func newExampleClient() *client.Client {
	cfg := client.DefaultConfig()
	cfg.Endpoints = exampleEndpoints()
	c, err := client.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// This example takes a fenced lock, writes to a resource that checks the
// fencing token, and unlocks.
func ExampleMutex() {
	c := newExampleClient()
	defer c.Close()
	ctx := context.Background()

	// The protected resource keeps its own guard; here it is local.
	orders := fence.NewGuard()

	// NewMutex checks the name and the options at once, offline.
	m, err := client.NewMutex(c, "example-mutex", client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	h, err := m.Lock(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Do the work under m.Context(), which is cancelled if the lock is lost,
	// and send the token with every write.
	if err := orders.Check("orders", h.Token()); err == nil {
		fmt.Println("write accepted")
	}
	fmt.Println("valid while locked:", h.Valid(), m.Context().Err() == nil)

	if err := m.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("valid after unlock:", h.Valid(), m.Context().Err() == nil)
	// Output:
	// write accepted
	// valid while locked: true true
	// valid after unlock: false false
}

// This example campaigns, leads once and steps down, releasing the lease.
func ExampleLeaderElector() {
	c := newExampleClient()
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	le, err := client.NewLeaderElector(c, client.ElectorConfig{
		Name:            "example-election",
		Identity:        "alice",
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Callbacks: client.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				fmt.Println("alice leads")
				cancel() // the work is done: step down
			},
			OnStoppedLeading: func() { fmt.Println("alice stopped leading") },
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	err = le.Run(ctx)
	fmt.Println("Run:", err)

	e, err := client.NewElection(c, "example-election")
	if err != nil {
		log.Fatal(err)
	}
	leader, err := e.Leader(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader now: %q\n", leader)
	// Output:
	// alice leads
	// alice stopped leading
	// Run: context canceled
	// leader now: ""
}

// This example heartbeats for a node while a Monitor watches the
// namespace.
func ExampleHeartbeat() {
	c := newExampleClient()
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	events := make(chan client.MemberEvent, 8)
	mon, err := client.NewMonitor(c, "example-nodes", client.WithMemberEvents(events))
	if err != nil {
		log.Fatal(err)
	}
	monDone := make(chan error, 1)
	go func() { monDone <- mon.Run(ctx) }()
	<-mon.Synced()

	hb, err := client.NewHeartbeat(c, "example-nodes", "node-a", client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	hbDone := make(chan error, 1)
	go func() { hbDone <- hb.Run(hbCtx) }()

	ev := <-events
	fmt.Println(ev.Member.Name, ev.From, "->", ev.Member.State)

	stopHeartbeat() // Run releases the lease on its way out
	if err := <-hbDone; err != nil {
		log.Fatal(err)
	}
	ev = <-events
	fmt.Println(ev.Member.Name, ev.From, "->", ev.Member.State)

	cancel()
	<-monDone
	// Output:
	// node-a Unknown -> Ready
	// node-a Ready -> Unknown
}

// This example holds a lease for as long as the process needs it, without
// waiting when someone else has it.
func ExampleClient_Hold() {
	c := newExampleClient()
	defer c.Close()
	ctx := context.Background()

	h, err := c.Hold(ctx, "example-hold", client.WithIdentity("worker-1"), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("held by", h.Holder(), "with a token:", h.Token() > 0)

	// A second holder is refused at once, and told who holds the lease.
	_, err = c.Hold(ctx, "example-hold", client.WithIdentity("worker-2"), client.WithTTL(5*time.Second))
	var held *client.HeldError
	if errors.As(err, &held) {
		fmt.Println("worker-2 refused: held by", held.Lease.GetHolderIdentity())
	}

	// The work runs under h.Context(), cancelled if the holding is lost.
	if err := h.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("after release:", h.Err())
	// Output:
	// held by worker-1 with a token: true
	// worker-2 refused: held by worker-1
	// after release: client: holding released
}

// This example lets two holders in at once; a third waits for a slot.
func ExampleSemaphore() {
	c := newExampleClient()
	defer c.Close()
	ctx := context.Background()

	var slots []*client.Holding
	for _, id := range []string{"a", "b"} {
		s, err := client.NewSemaphore(c, "example-pool", 2, client.WithIdentity(id), client.WithTTL(5*time.Second))
		if err != nil {
			log.Fatal(err)
		}
		h, err := s.Acquire(ctx)
		if err != nil {
			log.Fatal(err)
		}
		slots = append(slots, h)
	}
	third, err := client.NewSemaphore(c, "example-pool", 2, client.WithIdentity("c"), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := third.TryAcquire(ctx); errors.Is(err, client.ErrLocked) {
		fmt.Println("c: both slots are taken")
	}
	if err := slots[0].Release(ctx); err != nil {
		log.Fatal(err)
	}
	h, err := third.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Each slot is a lease of its own, with its own fencing token.
	fmt.Println("c got the slot that a freed:", h.Name() == slots[0].Name())
	for _, h := range []*client.Holding{h, slots[1]} {
		if err := h.Release(ctx); err != nil {
			log.Fatal(err)
		}
	}
	// Output:
	// c: both slots are taken
	// c got the slot that a freed: true
}

// This example follows who leads an election without taking part in it.
func ExampleElection_Observe() {
	c := newExampleClient()
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	e, err := client.NewElection(c, "example-observed")
	if err != nil {
		log.Fatal(err)
	}
	leaders := e.Observe(ctx)
	fmt.Printf("leader: %q\n", <-leaders)

	h, err := c.Hold(ctx, "example-observed", client.WithIdentity("alice"), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader: %q\n", <-leaders)
	if err := h.Release(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leader: %q\n", <-leaders)
	// Output:
	// leader: ""
	// leader: "alice"
	// leader: ""
}

// This example lists the members of a heartbeat namespace as a Monitor
// sees them.
func ExampleMonitor() {
	c := newExampleClient()
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	events := make(chan client.MemberEvent, 8)
	mon, err := client.NewMonitor(c, "example-fleet", client.WithMemberEvents(events))
	if err != nil {
		log.Fatal(err)
	}
	monDone := make(chan error, 1)
	go func() { monDone <- mon.Run(ctx) }()
	<-mon.Synced()

	var heartbeats sync.WaitGroup
	for _, node := range []string{"node-1", "node-2"} {
		hb, err := client.NewHeartbeat(c, "example-fleet", node, client.WithTTL(5*time.Second))
		if err != nil {
			log.Fatal(err)
		}
		heartbeats.Add(1)
		go func() {
			defer heartbeats.Done()
			_ = hb.Run(ctx)
		}()
		<-events // the member became Ready
	}
	for _, m := range mon.Members() {
		fmt.Println(m.Name, m.State)
	}
	cancel()
	heartbeats.Wait()
	<-monDone
	// Output:
	// node-1 Ready
	// node-2 Ready
}

// This example uses a lease as a sync.Locker, for code written against
// that interface.
func ExampleNewLocker() {
	c := newExampleClient()
	defer c.Close()

	l, err := client.NewLocker(c, "example-locker", client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	l.Lock()
	fmt.Println("locked")
	l.Unlock()
	fmt.Println("unlocked")
	// Output:
	// locked
	// unlocked
}

// This example campaigns in the manner of etcd's Election: lead with a
// value, change it, and resign.
func ExampleElection() {
	c := newExampleClient()
	defer c.Close()
	ctx := context.Background()

	e, err := client.NewElection(c, "example-etcd-style", client.WithIdentity("alice"), client.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	h, err := e.Campaign(ctx, "primary-a")
	if err != nil {
		log.Fatal(err)
	}
	// h.Context() is cancelled if the leadership is lost; h.Token() fences
	// the leader's writes.
	if err := e.Proclaim(ctx, "primary-b"); err != nil {
		log.Fatal(err)
	}
	leader, _ := e.Leader(ctx)
	value, _ := e.Value(ctx)
	fmt.Println(leader, value, h.Valid())
	if err := e.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	leader, _ = e.Leader(ctx)
	fmt.Printf("after Resign: %q\n", leader)
	// Output:
	// alice primary-b true
	// after Resign: ""
}
