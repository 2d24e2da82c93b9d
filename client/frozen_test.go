package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
)

// These tests freeze the node a client follows, through a proxy that stops
// passing bytes (see freezer): the connection stays open and nothing
// answers, as with SIGSTOP. The frozen node is a follower, so the nodes
// the client fails over to never wait on it; the cluster keeps working.

// frozenSetup starts a cluster and a proxy per node, and returns the
// proxies' addresses ordered so that a client of them follows a follower
// first, and that follower's proxy.
func frozenSetup(t *testing.T) (*lktest.Cluster, *freezer, []string) {
	t.Helper()
	cl := startCluster(t)
	fi := (cl.Index(cl.Leader(10*time.Second)) + 1) % 3
	order := []string{cl.Endpoints[fi], cl.Endpoints[(fi+1)%3], cl.Endpoints[(fi+2)%3]}
	fs, addrs := freezeProxies(t, order)
	return cl, fs[0], addrs
}

func TestFrozenNodeGet(t *testing.T) {
	cl, frozen, addrs := frozenSetup(t)
	w := lkClient(t, cl.Endpoints)
	if _, err := w.Acquire(context.Background(), "", "db", "alice", time.Minute, 0, nil); err != nil {
		t.Fatal(err)
	}
	c := lkClient(t, addrs)
	// Serializable reads, answered by the follower itself: a forwarded
	// call would name the leader, and the client would follow it.
	warm := func() {
		if _, err := c.Get(context.Background(), "", "warm-up", true); !errors.Is(err, client.ErrNotFound) {
			t.Fatal(err)
		}
	}
	warm()
	warm() // on the Calls stream now
	frozen.Freeze()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	start := time.Now()
	g, err := c.Get(ctx, "", "db", false)
	if err != nil || g.GetLease().GetHolderIdentity() != "alice" {
		t.Fatalf("Get with the followed node frozen: %v, %v", g, err)
	}
	t.Logf("Get answered %v after the followed node froze (4s deadline)", time.Since(start).Round(time.Millisecond))
}

func TestFrozenNodeLock(t *testing.T) {
	_, frozen, addrs := frozenSetup(t)
	c := lkClient(t, addrs)
	if _, err := c.Get(context.Background(), "", "warm-up", false); !errors.Is(err, client.ErrNotFound) {
		t.Fatal(err)
	}
	frozen.Freeze()
	m := mustMutex(t, c, "free", client.WithTTL(5*time.Second))
	start := time.Now()
	res := make(chan error, 1)
	go func() {
		_, err := m.Lock(context.Background()) // no deadline: the attempt limit alone
		res <- err
	}()
	if err := recvWithin(t, res, 3*time.Second, "Lock on a free lease"); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	t.Logf("Lock took %v with the followed node frozen", time.Since(start).Round(time.Millisecond))
	if err := m.Unlock(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The leading candidate's process dies (its client closes, releasing
// nothing) while the node the other candidate follows is frozen: the other
// leads within LeaseDuration + 3s.
func TestFrozenNodeElector(t *testing.T) {
	cl, frozen, addrs := frozenSetup(t)
	cfg := func(id string, started chan<- string) client.ElectorConfig {
		return client.ElectorConfig{
			Name: "frozen", Identity: id,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
			Callbacks: client.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) { started <- id; <-ctx.Done() },
				OnNewLeader: func(leader string) {
					if id == "b" && leader == "a" {
						started <- "b sees a"
					}
				},
			},
		}
	}
	started := make(chan string, 10)
	ca := lkClient(t, cl.Endpoints)
	cb := lkClient(t, addrs)
	ea, err := client.NewLeaderElector(ca, cfg("a", started))
	if err != nil {
		t.Fatal(err)
	}
	eb, err := client.NewLeaderElector(cb, cfg("b", started))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { _ = ea.Run(ctx) })
	if got := recvWithin(t, started, 10*time.Second, "a leading"); got != "a" {
		t.Fatalf("%s leads, want a", got)
	}
	wg.Go(func() { _ = eb.Run(ctx) })
	if got := recvWithin(t, started, 10*time.Second, "b seeing a lead"); got != "b sees a" {
		t.Fatalf("got %q, want b to see a lead", got)
	}
	frozen.Freeze()
	died := time.Now()
	ca.Close()
	if got := recvWithin(t, started, 3*time.Second+3*time.Second, "b leading"); got != "b" {
		t.Fatalf("%s leads, want b", got)
	}
	t.Logf("b leads %v after a died (LeaseDuration 3s), its node frozen", time.Since(died).Round(time.Millisecond))
}

// A Monitor whose node freezes keeps a renewing member Ready: its watch
// resumes on another node and sees the renewals.
func TestFrozenNodeMonitor(t *testing.T) {
	cl, frozen, addrs := frozenSetup(t)
	const ttl = 1500 * time.Millisecond
	hc := lkClient(t, cl.Endpoints)
	hb, err := client.NewHeartbeat(hc, "nodes", "n1", client.WithTTL(ttl), client.WithGrace(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	mc := lkClient(t, addrs)
	events := make(chan client.MemberEvent, 64)
	m := mustMonitor(t, mc, "nodes", client.WithMemberEvents(events))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { _ = hb.Run(ctx) })
	wg.Go(func() { _ = m.Run(ctx) })
	for ev := recvWithin(t, events, 10*time.Second, "n1 Ready"); ev.Member.State != client.StateReady; {
		ev = recvWithin(t, events, 10*time.Second, "n1 Ready")
	}
	frozen.Freeze()
	froze := time.Now()
	// Renewals seen two durations into the freeze came through another
	// node; the member was Ready all along.
	waitUntil(t, 10*time.Second, "a renewal seen through another node", func() bool {
		ms := m.Members()
		return len(ms) == 1 && ms[0].LastHeartbeat.After(froze.Add(2*ttl))
	})
	for {
		select {
		case ev := <-events:
			t.Errorf("member event during the freeze: %s %s -> %s", ev.Member.Name, ev.From, ev.Member.State)
			continue
		default:
		}
		break
	}
	if ms := m.Members(); ms[0].State != client.StateReady {
		t.Errorf("n1 is %s, want Ready", ms[0].State)
	}
}

// A watch whose node freezes resumes on another from its last revision:
// every event once, in order.
func TestFrozenNodeWatchResumes(t *testing.T) {
	cl, frozen, addrs := frozenSetup(t)
	w := lkClient(t, cl.Endpoints)
	c := lkClient(t, addrs)
	list, err := w.List(context.Background(), &pb.ListRequest{Namespace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan uint64, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() {
		_ = c.Follow(ctx, &pb.WatchRequest{Namespace: "w", StartRevision: list.GetRevision()}, func(ev *pb.WatchEvent) {
			seen <- ev.GetRevision()
		})
	})
	var want []uint64
	write := func(i int) {
		r, err := w.Acquire(context.Background(), "w", fmt.Sprintf("l%d", i), "me", time.Minute, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, r.GetLease().GetResourceVersion())
	}
	var got []uint64
	expect := func() {
		t.Helper()
		for len(got) < len(want) {
			got = append(got, recvWithin(t, seen, 10*time.Second, fmt.Sprintf("event %d", len(got)+1)))
		}
	}
	for i := range 5 {
		write(i)
	}
	expect()
	frozen.Freeze()
	for i := 5; i < 15; i++ {
		write(i)
	}
	expect()
	// Anything repeated would come now, behind the last one.
	write(15)
	expect()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("watch saw revisions %v, want %v", got, want)
	}
}

// While the Monitor's watch is silent its members' states do not move
// past what the watch last vouched for; once the node answers again, the
// silence it vouches for counts.
func TestMonitorHoldsStatesWhileItsWatchIsSilent(t *testing.T) {
	const dur, grace = 10 * time.Second, 5 * time.Second
	node := clienttest.Start(t)
	node.Put(&pb.Lease{Namespace: "nodes", Name: "n1", HolderIdentity: "n1", FencingToken: 1,
		LeaseDuration: durationpb.New(dur), GracePeriod: durationpb.New(grace)})
	c := lkClient(t, []string{node.Addr})
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	events := make(chan client.MemberEvent, 16)
	m := mustMonitor(t, c, "nodes", client.WithMonitorClock(fake), client.WithMemberEvents(events))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	if ev := recvWithin(t, events, 5*time.Second, "n1 Ready"); ev.Member.State != client.StateReady {
		t.Fatalf("n1 is %s, want Ready", ev.Member.State)
	}
	waitUntil(t, 5*time.Second, "the watch open", func() bool { return node.Calls("WatchBatches") > 0 })
	node.PauseWatches()
	// Progress already on its way may still come: time moves only once the
	// silent watch has been given up and opened again.
	opened := node.Calls("WatchBatches")
	waitUntil(t, 5*time.Second, "the silent watch opened again", func() bool { return node.Calls("WatchBatches") > opened })
	fake.Advance(dur + grace + time.Millisecond)
	if ms := m.Members(); len(ms) != 1 || ms[0].State != client.StateReady {
		t.Fatalf("members while the watch is silent: %+v, want n1 Ready", ms)
	}
	select {
	case ev := <-events:
		t.Fatalf("event while the watch is silent: %s -> %s", ev.From, ev.Member.State)
	default:
	}
	node.ResumeWatches()
	if ev := recvWithin(t, events, 5*time.Second, "n1 Unknown"); ev.Member.State != client.StateUnknown {
		t.Fatalf("after the pause n1 is %s, want Unknown", ev.Member.State)
	}
}
