package transport_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
	"github.com/leasekeeper/leasekeeper/transport"
)

func slotReq(name, holder string, slots uint32, wait bool) *pb.AcquireSlotRequest {
	// Long enough that no holding lapses on a loaded machine before the
	// test releases it.
	return &pb.AcquireSlotRequest{Name: name, Slots: slots, HolderIdentity: holder, Wait: wait, LeaseDuration: durationpb.New(20 * time.Second)}
}

// TestSemaphoreQueueThroughFollower: a full semaphore queues its waiters
// on the leader, first in line first; a waiter's repeated polls write
// nothing to the log; a freed slot reaches the first waiter's pending
// call; a waiter that leaves is never served.
func TestSemaphoreQueueThroughFollower(t *testing.T) {
	c, f, _ := start(t)
	leader := c.Leader(10 * time.Second)
	// Semaphores need every member's binary registered (command version 4).
	waitFor(t, func() bool { return leader.CommandVersion() == fsm.CommandVersion })
	held := map[string]*pb.AcquireResponse{}
	for _, who := range []string{"a", "b"} {
		r, err := f.AcquireSlot(ctx(t), slotReq("sem", who, 2, false))
		if err != nil || !r.Acquired || r.Lease.Labels[fsm.SemaphoreLabel] != "sem" {
			t.Fatalf("%s: %v %+v", who, err, r)
		}
		held[who] = r
	}
	if held["a"].Lease.Name == held["b"].Lease.Name {
		t.Fatalf("a and b share slot %s", held["a"].Lease.Name)
	}
	// Without wait a full semaphore refuses, naming one of its slots.
	if r, err := f.AcquireSlot(ctx(t), slotReq("sem", "x", 2, false)); err != nil || r.Acquired || r.Queued || r.Lease == nil {
		t.Fatalf("try on a full semaphore: %v %+v", err, r)
	}
	poll := func(who string) *pb.AcquireResponse {
		t.Helper()
		// A short call: the server answers "queued" before its deadline.
		qctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		r, err := f.AcquireSlot(qctx, slotReq("sem", who, 2, true))
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		return r
	}
	for i, who := range []string{"c", "d", "e"} {
		if r := poll(who); !r.Queued || r.QueuePosition != int32(i+1) {
			t.Fatalf("%s: %+v, want queued at %d", who, r, i+1)
		}
	}
	// Polls of waiters that are still queued cost no log entries.
	before := leader.FSM().AppliedIndex()
	for range 3 {
		for i, who := range []string{"c", "d", "e"} {
			if r := poll(who); !r.Queued || r.QueuePosition != int32(i+1) {
				t.Fatalf("%s polling again: %+v, want queued at %d", who, r, i+1)
			}
		}
	}
	if after := leader.FSM().AppliedIndex(); after != before {
		t.Errorf("9 polls of queued waiters wrote %d log entries, want 0", after-before)
	}
	// d leaves; c's and e's calls wait for slots.
	if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "sem", HolderIdentity: "d", LeaveQueue: true, Semaphore: true}); err != nil {
		t.Fatal(err)
	}
	type got struct {
		who  string
		resp *pb.AcquireResponse
		err  error
	}
	results := make(chan got, 3)
	for _, who := range []string{"c", "e"} {
		go func() {
			for {
				r, err := f.AcquireSlot(ctx(t), slotReq("sem", who, 2, true))
				if err != nil || r.Acquired {
					results <- got{who, r, err}
					return
				}
			}
		}()
	}
	for _, pair := range [][2]string{{"a", "c"}, {"b", "e"}} {
		h := held[pair[0]].Lease
		if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: h.Name, HolderIdentity: pair[0], FencingToken: h.FencingToken}); err != nil {
			t.Fatal(err)
		}
		g := <-results
		if g.err != nil || g.who != pair[1] || g.resp.Lease.Name != h.Name || g.resp.Lease.FencingToken <= h.FencingToken {
			t.Fatalf("after %s released %s: %s got %v %+v, want %s to hold it with a higher token", pair[0], h.Name, g.who, g.err, g.resp, pair[1])
		}
	}
	// d left the queue: it holds nothing, and is not queued.
	l, err := f.List(ctx(t), &pb.ListRequest{LabelSelector: fsm.SemaphoreLabel + "=sem"})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range l.Leases {
		if x.HolderIdentity == "d" {
			t.Fatalf("d holds %s after leaving the queue", x.Name)
		}
	}
	if pos, _, _ := leader.FSM().SemaphoreWait("default", "sem", "d", 2); pos != 0 {
		t.Fatalf("d still queued at %d", pos)
	}
}

// TestSemaphoreWaiterThatLeftIsQueuedAgain: a waiter whose place was
// taken away (it left, or the leader dropped it) is queued again by its
// next poll: the poll answered from the table must not report a place it
// no longer has.
func TestSemaphoreWaiterThatLeftIsQueuedAgain(t *testing.T) {
	c, f, _ := start(t)
	leader := c.Leader(10 * time.Second)
	// Semaphores need every member's binary registered (command version 4).
	waitFor(t, func() bool { return leader.CommandVersion() == fsm.CommandVersion })
	if r, err := f.AcquireSlot(ctx(t), slotReq("s1", "a", 1, false)); err != nil || !r.Acquired {
		t.Fatalf("a: %v %+v", err, r)
	}
	for _, sem := range []bool{true, false} {
		var name string
		call := func() (*pb.AcquireResponse, error) {
			qctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if sem {
				name = "s1"
				return f.AcquireSlot(qctx, slotReq("s1", "w", 1, true))
			}
			name = "s1-0" // the slot itself, as a lease with its own queue
			r := acq("s1-0", "w", 20*time.Second)
			r.Wait = true
			return f.Acquire(qctx, r)
		}
		if r, err := call(); err != nil || !r.Queued {
			t.Fatalf("semaphore %v: %v %+v", sem, err, r)
		}
		if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: name, HolderIdentity: "w", LeaveQueue: true, Semaphore: sem}); err != nil {
			t.Fatal(err)
		}
		if r, err := call(); err != nil || !r.Queued || r.QueuePosition != 1 {
			t.Fatalf("semaphore %v, polling after leaving: %v %+v, want queued at 1", sem, err, r)
		}
		queued := false
		for _, w := range leader.FSM().Waiters() {
			queued = queued || (w.Holder == "w" && w.Semaphore == sem)
		}
		if !queued {
			t.Fatalf("semaphore %v: the poll answered queued, but the leader has no such waiter", sem)
		}
	}
}

func TestSemaphoreBadInput(t *testing.T) {
	_, f, _ := start(t)
	long := make([]byte, 250)
	for i := range long {
		long[i] = 'a'
	}
	for _, c := range []struct {
		why string
		req *pb.AcquireSlotRequest
	}{
		{"no slots", slotReq("s", "a", 0, false)},
		{"too many slots", slotReq("s", "a", fsm.MaxSlots+1, false)},
		{"slot names too long", slotReq(string(long), "a", 100, false)},
		{"name not a label value", slotReq("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g", "a", 1, false)},
		{"no holder", slotReq("s", "", 1, false)},
		{"bad name", slotReq("S_S", "a", 1, false)},
		{"label names another semaphore", func() *pb.AcquireSlotRequest {
			r := slotReq("s", "a", 1, false)
			r.Labels = map[string]string{fsm.SemaphoreLabel: "t"}
			return r
		}()},
	} {
		if _, err := f.AcquireSlot(ctx(t), c.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", c.why, err)
		}
	}
}

// TestSemaphoreQueueLimit: a semaphore's queue is bounded by MaxWaiters;
// the waiter past it gets ResourceExhausted and writes nothing.
func TestSemaphoreQueueLimit(t *testing.T) {
	c := lktest.StartWith(t, 3, clock.New(), nodetest.Options{}, func(cfg *transport.Config) { cfg.MaxWaiters = 2 })
	leader := c.Leader(10 * time.Second)
	waitFor(t, func() bool { return leader.CommandVersion() == fsm.CommandVersion })
	f := dial(t, c.Endpoints[c.Index(leader)])
	if r, err := f.AcquireSlot(ctx(t), slotReq("full", "holder", 1, false)); err != nil || !r.Acquired {
		t.Fatalf("holder: %v %+v", err, r)
	}
	poll := func(who string) (*pb.AcquireResponse, error) {
		qctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return f.AcquireSlot(qctx, slotReq("full", who, 1, true))
	}
	for _, who := range []string{"w1", "w2"} {
		if r, err := poll(who); err != nil || !r.Queued {
			t.Fatalf("%s: %v %+v", who, err, r)
		}
	}
	before := leader.FSM().AppliedIndex()
	if _, err := poll("w3"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a third waiter past a limit of 2: %v, want ResourceExhausted", err)
	}
	if after := leader.FSM().AppliedIndex(); after != before {
		t.Errorf("the refused waiter wrote %d log entries", after-before)
	}
	// A waiter already in line keeps its place at the limit.
	if r, err := poll("w2"); err != nil || !r.Queued || r.QueuePosition != 2 {
		t.Fatalf("w2 again at the limit: %v %+v", err, r)
	}
}
