package client_test

import (
	"context"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/clock"
)

// TestMonitorTransitions drives a Monitor's clock by hand: the server's
// events come from raw calls, and the classification moves only when the
// test advances the monitor's fake clock.
func TestMonitorTransitions(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
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
	closedWithin(t, m.Synced(), 5*time.Second, "the first read")

	const dur, grace = 10 * time.Second, 5 * time.Second
	next := func(what string) client.MemberEvent {
		t.Helper()
		return recvWithin(t, events, 5*time.Second, what)
	}
	expect := func(ev client.MemberEvent, from, to client.MemberState) {
		t.Helper()
		if ev.Member.Name != "n1" || ev.From != from || ev.Member.State != to {
			t.Fatalf("event %s: %s -> %s, want n1: %s -> %s", ev.Member.Name, ev.From, ev.Member.State, from, to)
		}
	}

	resp, err := c.Acquire(ctx, "nodes", "n1", "n1", dur, grace, nil)
	if err != nil || !resp.Acquired {
		t.Fatalf("Acquire: %v %v", resp, err)
	}
	token := resp.Lease.FencingToken
	ev := next("Ready")
	expect(ev, client.StateUnknown, client.StateReady)
	if !ev.Member.LastHeartbeat.Equal(fake.Now()) {
		t.Errorf("LastHeartbeat = %v, want the monitor's now", ev.Member.LastHeartbeat)
	}

	// The timer of the next change is armed before the event is sent.
	fake.Advance(dur)
	if got := m.Members(); len(got) != 1 || got[0].State != client.StateReady {
		t.Fatalf("Members at exactly the duration = %+v, want n1 Ready", got)
	}
	fake.Advance(time.Millisecond)
	expect(next("NotReady"), client.StateReady, client.StateNotReady)

	fake.Advance(grace)
	expect(next("Unknown"), client.StateNotReady, client.StateUnknown)

	// A renewal observed now makes it Ready again, from the monitor's now.
	// Recorded, as Heartbeat's are: a renewal the leader confirms without
	// a log write (once the members have registered their addresses)
	// makes no event for the monitor to see.
	if _, err := c.Leases().Renew(ctx, &pb.RenewRequest{Namespace: "nodes", Name: "n1", HolderIdentity: "n1", FencingToken: token, Record: true}); err != nil {
		t.Fatal(err)
	}
	expect(next("Ready after renewal"), client.StateUnknown, client.StateReady)

	if _, err := c.Release(ctx, "nodes", "n1", "n1", token); err != nil {
		t.Fatal(err)
	}
	expect(next("Unknown after release"), client.StateReady, client.StateUnknown)

	if _, err := c.Delete(ctx, "nodes", "n1"); err != nil {
		t.Fatal(err)
	}
	ev = next("deletion")
	if !ev.Deleted || ev.Member.Name != "n1" {
		t.Fatalf("event %+v, want n1 deleted", ev)
	}
	if got := m.Members(); len(got) != 0 {
		t.Fatalf("Members after deletion = %+v, want none", got)
	}
}

// TestHeartbeat runs a real Heartbeat: a monitor sees it Ready, and
// Unknown once it stops and releases; ListMembers agrees.
func TestHeartbeat(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	events := make(chan client.MemberEvent, 16)
	m := mustMonitor(t, lkClient(t, cl.Endpoints), "", client.WithMemberEvents(events))
	ctx, cancel := context.WithCancel(context.Background())
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-mdone
	}()
	closedWithin(t, m.Synced(), 5*time.Second, "the first read")

	hb, err := client.NewHeartbeat(c, "", "worker-1", client.WithTTL(600*time.Millisecond), client.WithGrace(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	hctx, stop := context.WithCancel(ctx)
	hdone := make(chan error, 1)
	go func() { hdone <- hb.Run(hctx) }()

	ev := recvWithin(t, events, 5*time.Second, "Ready")
	if ev.Member.Name != "worker-1" || ev.Member.State != client.StateReady {
		t.Fatalf("event %+v, want worker-1 Ready", ev)
	}
	// Two durations of renewals keep it Ready without a transition.
	select {
	case ev := <-events:
		t.Fatalf("unexpected transition %s -> %s while heartbeating", ev.From, ev.Member.State)
	case <-time.After(1200 * time.Millisecond):
	}
	members, err := client.ListMembers(ctx, c, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].State != client.StateReady || members[0].Holder != "worker-1" {
		t.Fatalf("ListMembers = %+v, want worker-1 Ready", members)
	}
	if since := c.Clock().Since(members[0].LastHeartbeat); since < 0 || since > 600*time.Millisecond {
		t.Errorf("ListMembers places the last heartbeat %v ago, want within the duration", since)
	}

	stop()
	if err := recvWithin(t, hdone, 5*time.Second, "Heartbeat.Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	ev = recvWithin(t, events, 5*time.Second, "Unknown after the release")
	if ev.Member.State != client.StateUnknown || ev.From != client.StateReady {
		t.Fatalf("event %s -> %s, want Ready -> Unknown", ev.From, ev.Member.State)
	}
}

// TestHeartbeatTakesLeaseAgain deletes a heartbeat's lease: the holding is
// lost and Run takes the lease again.
func TestHeartbeatTakesLeaseAgain(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	hb, err := client.NewHeartbeat(c, "beats", "worker-2", client.WithProfile(client.TestProfile()), client.WithTTL(600*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hb.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitUntil(t, 5*time.Second, "the first holding", func() bool { return hb.Holding() != nil })
	first := hb.Holding()
	if first.Duration() != 600*time.Millisecond || first.Lease().GetGracePeriod().AsDuration() != client.TestProfile().GracePeriod {
		t.Fatalf("holding duration %v grace %v, want the TTL override and the profile's grace", first.Duration(), first.Lease().GetGracePeriod().AsDuration())
	}
	if _, err := c.Delete(ctx, "beats", "worker-2"); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, first.Lost(), 5*time.Second, "the loss of the deleted lease")
	waitUntil(t, 5*time.Second, "a new holding", func() bool {
		h := hb.Holding()
		return h != nil && h != first && h.Valid()
	})
	if h := hb.Holding(); h.Token() <= first.Token() {
		t.Fatalf("new token %d not above %d", h.Token(), first.Token())
	}
}
