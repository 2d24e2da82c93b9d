package node_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func acquire(t *testing.T, n *node.Node, name, holder string, d time.Duration) *fsm.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: "default", Name: name, Holder: holder, DurationNs: int64(d),
	}}})
	if err != nil || res.Err != nil || !res.Acquired {
		t.Fatalf("acquire %s by %s: err=%v res=%+v", name, holder, err, res)
	}
	return res.Lease
}

// waitHolder waits until every node's FSM shows the wanted holder.
func waitHolder(t *testing.T, c *nodetest.Cluster, name, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, n := range c.Nodes {
			l, found := n.FSM().Get("default", name)
			ok = ok && found && l.Holder == want
		}
		if ok {
			return
		}
		time.Sleep(2 * time.Millisecond) // replication has no event to await from here
	}
	t.Fatalf("lease %s: holder did not become %q on every node", name, want)
}

func TestLeaderExpiresOnlyAfterDeadline(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	l := acquire(t, leader, "db", "a", 2*time.Second)

	clk.Advance(2*time.Second - time.Millisecond)
	// A proposal would be applied within milliseconds; a renewal now must
	// still succeed, so the lease was not expired early.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: []*fsmpb.Renew{
		{Namespace: "default", Name: "db", Holder: "a", Token: l.Token},
	}}}})
	if err != nil || res.Err != nil {
		t.Fatalf("renew before the deadline: %v %v", err, res.Err)
	}
	// The renewal restarted the duration: just short of it, still held.
	clk.Advance(2*time.Second - time.Millisecond)
	waitHolder(t, c, "db", "a")
	clk.Advance(2 * time.Millisecond)
	waitHolder(t, c, "db", "")
	got, _ := leader.FSM().Get("default", "db")
	if got.History[0].EndReason != fsm.EndExpired || got.Token != l.Token {
		t.Fatalf("after expiry: %+v", got.History[0])
	}
}

func TestNewLeaderGivesFreshDuration(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	old := c.Leader(5 * time.Second)
	acquire(t, old, "db", "a", 10*time.Second)
	waitHolder(t, c, "db", "a")
	clk.Advance(9 * time.Second) // 1 s left on the old leader's table

	if err := old.TransferLeadership(""); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	var nl *node.Node
	for nl == nil || nl == old {
		nl = c.Leader(5 * time.Second)
	}
	d, ok := nl.Remaining("default", "db")
	if !ok || d != 10*time.Second {
		t.Fatalf("new leader's deadline: %v (ok=%v), want a full 10s", d, ok)
	}
	if old.Manager().Active() {
		t.Fatalf("old leader still decides expiry after losing leadership")
	}
	clk.Advance(10*time.Second - time.Millisecond)
	waitHolder(t, c, "db", "a")
	// Expired means more than duration + grace since the deadline's start.
	clk.Advance(time.Millisecond + time.Nanosecond)
	waitHolder(t, c, "db", "")
}

func TestIsolatedLeaderCannotExpire(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	old := c.Leader(5 * time.Second)
	acquire(t, old, "db", "a", 5*time.Second)
	waitHolder(t, c, "db", "a")
	c.Isolate(c.Index(old))
	// The old leader's deadline passes while it is cut off: its Expire
	// cannot commit without a quorum.
	clk.Advance(6 * time.Second)
	var nl *node.Node
	for nl == nil || nl == old {
		nl = c.Leader(5 * time.Second)
	}
	for i, n := range c.Nodes {
		if n == old {
			continue
		}
		if l, _ := n.FSM().Get("default", "db"); l.Holder != "a" {
			t.Fatalf("node %d: holding expired by a deposed leader", i)
		}
	}
	if d, _ := nl.Remaining("default", "db"); d != 5*time.Second {
		t.Fatalf("new leader's deadline %v, want a full 5s", d)
	}
	c.Heal()
}

func TestFollowerRejectsProposalsAndReads(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	for _, n := range c.Nodes {
		if n == leader {
			if err := n.ReadBarrier(context.Background()); err != nil {
				t.Errorf("leader read barrier: %v", err)
			}
			continue
		}
		if _, err := n.Propose(context.Background(), &fsmpb.Command{}); !errors.Is(err, node.ErrNotLeader) {
			t.Errorf("follower propose: got %v, want ErrNotLeader", err)
		}
		if err := n.ReadBarrier(context.Background()); !errors.Is(err, node.ErrNotLeader) {
			t.Errorf("follower read barrier: got %v, want ErrNotLeader", err)
		}
	}
}

func TestLeaderDropsWaitersThatStopCalling(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	acquire(t, leader, "m", "a", time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: "default", Name: "m", Holder: "w", DurationNs: int64(time.Second), Wait: true,
	}}})
	if err != nil || !res.Queued {
		t.Fatalf("queue: %v %+v", err, res)
	}
	// The reaper first marks the waiter seen (a fresh period), then drops
	// it once more than its duration passed without a call.
	deadline := time.Now().Add(10 * time.Second)
	for len(leader.FSM().Waiters()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("waiter still queued 10 s after it stopped calling")
		}
		clk.Advance(600 * time.Millisecond)
		time.Sleep(100 * time.Millisecond) // the reaper runs on a real one-second ticker
	}
	if l, _ := leader.FSM().Get("default", "m"); l.Holder != "a" {
		t.Fatalf("holding changed: %+v", l)
	}
}

func TestQueueChangesDoNotExtendTheHolding(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	acquire(t, leader, "m", "a", 2*time.Second)
	clk.Advance(1500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: "default", Name: "m", Holder: "w", DurationNs: int64(time.Minute), Wait: true,
	}}}); err != nil {
		t.Fatal(err)
	}
	if d, ok := leader.Remaining("default", "m"); !ok || d != 500*time.Millisecond {
		t.Fatalf("after a waiter joined: %v left (ok=%v), want the holder's own 500ms", d, ok)
	}
	// When a's holding lapses, the waiter gets the lease.
	clk.Advance(500*time.Millisecond + time.Nanosecond)
	waitHolder(t, c, "m", "w")
}

func TestRenewLocal(t *testing.T) {
	testRenewLocal(t, node.FaultNone)
}

// TestRenewLocalWithoutConfirmation is the control of TestRenewLocal: with
// the leadership confirmation switched off, a cut-off leader does renew on
// its own word.
func TestRenewLocalWithoutConfirmation(t *testing.T) {
	testRenewLocal(t, node.FaultNoConfirm)
}

func testRenewLocal(t *testing.T, fault node.Fault) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{Config: func(_ int, cfg *node.Config) { cfg.Fault = fault }})
	leader := c.Leader(5 * time.Second)
	l := acquire(t, leader, "db", "a", 2*time.Second)
	waitHolder(t, c, "db", "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	clk.Advance(1500 * time.Millisecond)
	if d, _ := leader.Remaining("default", "db"); d != 500*time.Millisecond {
		t.Fatalf("Remaining before the renewal = %v, want 500ms", d)
	}
	last := leader.Raft().LastIndex()
	got := leader.RenewLocal(ctx, []*fsmpb.Renew{
		{Namespace: "default", Name: "db", Holder: "a", Token: l.Token},
		{Namespace: "default", Name: "db", Holder: "a", Token: l.Token + 1}, // not this holding
		{Namespace: "default", Name: "db", Holder: "b", Token: l.Token},     // not this holder
		{Namespace: "default", Name: "nope", Holder: "a", Token: l.Token},   // no such lease
	})
	if got[0] == nil || got[0].Token != l.Token || got[0].RenewTime != l.RenewTime {
		t.Fatalf("renewal of the holding = %+v, want the stored lease, renewTime unchanged", got[0])
	}
	for i, x := range got[1:] {
		if x != nil {
			t.Fatalf("renewal %d of a holding that is not as asked = %+v, want nil (through the log)", i+1, x)
		}
	}
	if d, _ := leader.Remaining("default", "db"); d != 2*time.Second {
		t.Fatalf("Remaining after the renewal = %v, want the full 2s", d)
	}
	if li := leader.Raft().LastIndex(); li != last {
		t.Fatalf("log grew from %d to %d: the renewal was written", last, li)
	}

	for _, n := range c.Nodes {
		if n != leader {
			if x := n.RenewLocal(ctx, []*fsmpb.Renew{{Namespace: "default", Name: "db", Holder: "a", Token: l.Token}})[0]; x != nil {
				t.Fatalf("follower %s renewed without the log", n.ID())
			}
		}
	}

	// Cut off from the other voters, the leader cannot confirm its
	// leadership, so it may not renew on its own word.
	c.Isolate(c.Index(leader))
	defer c.Heal()
	clk.Advance(time.Second)
	x := leader.RenewLocal(ctx, []*fsmpb.Renew{{Namespace: "default", Name: "db", Holder: "a", Token: l.Token}})[0]
	if fault == node.FaultNoConfirm {
		// Raft's own leader lease steps the leader down only after
		// LeaderLeaseTimeout without a quorum; until then nothing stops it.
		switch {
		case x != nil:
		case !leader.IsLeader():
			t.Skip("the cut-off leader stepped down before the renewal: nothing shown")
		default:
			t.Fatal("with no-confirm, a cut-off leader still refused to renew")
		}
		return
	}
	if x != nil {
		t.Fatal("an isolated leader renewed without the log")
	}
	if d, ok := leader.Remaining("default", "db"); ok && d != time.Second {
		t.Fatalf("Remaining after the refused renewal = %v, want 1s", d)
	}
}

// TestRenewLocalWithOneMemberCutOff: a confirmation round asks first only
// as many members as a quorum needs (the one that answered last time) and
// the other when that one fails. Cutting off each follower in turn makes
// the member asked first fail once.
func TestRenewLocalWithOneMemberCutOff(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	l := acquire(t, leader, "db", "a", 2*time.Second)
	waitHolder(t, c, "db", "a")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range c.Nodes {
		if f == leader {
			continue
		}
		c.Isolate(c.Index(f))
		clk.Advance(time.Second)
		last := leader.Raft().LastIndex()
		if x := leader.RenewLocal(ctx, []*fsmpb.Renew{{Namespace: "default", Name: "db", Holder: "a", Token: l.Token}})[0]; x == nil {
			t.Fatalf("with only %s cut off, the leader did not renew without the log", f.ID())
		}
		if d, _ := leader.Remaining("default", "db"); d != 2*time.Second {
			t.Fatalf("Remaining after the renewal = %v, want the full 2s", d)
		}
		if li := leader.Raft().LastIndex(); li != last {
			t.Fatalf("log grew from %d to %d: the renewal was written", last, li)
		}
		c.Heal()
	}
}

// laterTerm answers every confirmation with a term after the asker's, as
// members that have voted in a later election would.
type laterTerm struct{}

func (laterTerm) Term(_ context.Context, _, _ string, leaderTerm uint64) (uint64, error) {
	return leaderTerm + 1, nil
}

// A linearizable read asks the members, not only Raft: with Raft's
// heartbeats all answered, members that report a later term still stop it.
func TestReadBarrierAsksTheMembers(t *testing.T) {
	c := nodetest.New(t, 3, clock.NewFake(time.Unix(1000, 0)), nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := leader.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on a healthy leader: %v", err)
	}
	leader.SetPeers(laterTerm{})
	if err := leader.ReadBarrier(ctx); !errors.Is(err, node.ErrNotLeader) {
		t.Fatalf("read barrier with every member in a later term: %v, want ErrNotLeader", err)
	}
	if !leader.IsLeader() {
		t.Fatal("the leader stepped down: the check above proved nothing about the barrier")
	}
}

// unregistered answers as the gRPC server does for members that have not
// registered their address: it cannot ask them.
type unregistered struct{}

func (unregistered) Term(_ context.Context, id, grpcAddr string, _ uint64) (uint64, error) {
	return 0, fmt.Errorf("member %s has not registered its address (%q)", id, grpcAddr)
}

// lateHeartbeats is a leader's link that, once cut, keeps the leader in
// the dark: its heartbeats no longer reach the other members, and each
// comes back with the answer the member gave to its last heartbeat before
// the cut, as an answer held up in the network would; Raft cannot tell it
// from a fresh one. Entries still go through, so a round that the leader
// starts through the log reaches the members and learns of their term; its
// other messages (the commit-index refreshes it sends when there is
// nothing new) do not, so that nothing else tells it of the new term.
type lateHeartbeats struct {
	*raft.InmemTransport
	peers int // the members whose answers ready waits for

	mu      sync.Mutex
	cut     bool
	answers map[raft.ServerAddress]raft.AppendEntriesResponse
	ready   chan struct{} // closed once every peer answered a heartbeat
}

func newLateHeartbeats(tr *raft.InmemTransport, peers int) *lateHeartbeats {
	return &lateHeartbeats{InmemTransport: tr, peers: peers,
		answers: make(map[raft.ServerAddress]raft.AppendEntriesResponse), ready: make(chan struct{})}
}

func (l *lateHeartbeats) isCut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut
}

func (l *lateHeartbeats) cutOff() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
}

func (l *lateHeartbeats) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	// Raft's heartbeats carry no entries and no log position.
	heartbeat := len(req.Entries) == 0 && req.PrevLogEntry == 0 && req.LeaderCommitIndex == 0
	switch {
	case !l.isCut():
	case heartbeat:
		l.mu.Lock()
		a, ok := l.answers[target]
		l.mu.Unlock()
		if !ok {
			return fmt.Errorf("no answer of %s to deliver late", id)
		}
		*resp = a
		return nil
	case len(req.Entries) == 0:
		return fmt.Errorf("cut off from %s", id)
	}
	if err := l.InmemTransport.AppendEntries(id, target, req, resp); err != nil || !heartbeat {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.cut && resp.Success {
		_, seen := l.answers[target]
		l.answers[target] = *resp
		if !seen && len(l.answers) == l.peers {
			close(l.ready)
		}
	}
	return nil
}

func (l *lateHeartbeats) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := l.InmemTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return latePipeline{AppendPipeline: p, l: l}, nil
}

// latePipeline drops what a cut lateHeartbeats does not deliver.
type latePipeline struct {
	raft.AppendPipeline
	l *lateHeartbeats
}

func (p latePipeline) AppendEntries(req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if len(req.Entries) == 0 && p.l.isCut() {
		return droppedAppend{req: req, resp: resp}, nil // never answered
	}
	return p.AppendPipeline.AppendEntries(req, resp)
}

type droppedAppend struct {
	req  *raft.AppendEntriesRequest
	resp *raft.AppendEntriesResponse
}

func (droppedAppend) Error() error                            { return nil }
func (droppedAppend) Start() time.Time                        { return time.Time{} }
func (d droppedAppend) Request() *raft.AppendEntriesRequest   { return d.req }
func (d droppedAppend) Response() *raft.AppendEntriesResponse { return d.resp }

// While voters have not registered their addresses (a new cluster's first
// moments), the leader cannot ask them for their term, and a linearizable
// read must still not be served by a leader deposed before the read began.
// Raft's VerifyLeader would serve it: it counts answers to heartbeats sent
// before it was called.
func TestReadBarrierBeforeMembersRegister(t *testing.T) {
	late := make([]*lateHeartbeats, 3)
	c := nodetest.New(t, 3, clock.NewFake(time.Unix(1000, 0)), nodetest.Options{
		GRPCAddr: func(int) string { return "" }, // nobody registers
		Transport: func(i int, tr *raft.InmemTransport) raft.Transport {
			late[i] = newLateHeartbeats(tr, 2)
			return late[i]
		},
	})
	for _, n := range c.Nodes {
		n.SetPeers(unregistered{})
	}
	old := c.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.ReadBarrier(ctx); err != nil {
		t.Fatalf("read barrier on a healthy leader: %v", err)
	}
	oi := c.Index(old)
	select {
	case <-late[oi].ready:
	case <-ctx.Done():
		t.Fatal("the members never answered the leader's heartbeats")
	}

	// The old leader's heartbeats stop reaching the others, and nothing of
	// theirs reaches it: they elect a new leader, which acknowledges a write.
	late[oi].cutOff()
	for i, tr := range c.Trans {
		if i != oi {
			tr.Disconnect(c.Trans[oi].LocalAddr())
		}
	}
	nl := otherLeader(c, old, 10*time.Second)
	if nl == nil {
		t.Fatal("the others elected no leader")
	}
	acquire(t, nl, "db", "a", time.Hour)
	if !old.IsLeader() {
		t.Fatal("the old leader stepped down: the read below would prove nothing")
	}

	err := old.ReadBarrier(ctx)
	if _, found := old.FSM().Get("default", "db"); err == nil && !found {
		t.Fatal("a deposed leader served a linearizable read that misses a write acknowledged before it")
	}
	if !errors.Is(err, node.ErrNotLeader) {
		t.Fatalf("read barrier on a deposed leader: %v, want ErrNotLeader", err)
	}
}

// TestFollowersTrackHoldings checks that a follower's expiry table follows
// every change it applies, so that on becoming leader it decides from a
// table equal to the lease table, each holding with a fresh duration.
func TestFollowersTrackHoldings(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	old := c.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tokens := map[string]uint64{}
	for i := range 30 {
		name := fmt.Sprintf("l%02d", i)
		tokens[name] = acquire(t, old, name, "a", time.Duration(5+i%3)*time.Second).Token
	}
	// Some end, one changes hands, one is renewed through the log.
	for i := range 10 {
		name := fmt.Sprintf("l%02d", i)
		if _, err := old.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Release{Release: &fsmpb.Release{
			Namespace: "default", Name: name, Holder: "a", Token: tokens[name],
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	acquire(t, old, "l00", "b", 9*time.Second)
	if _, err := old.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: []*fsmpb.Renew{{
		Namespace: "default", Name: "l20", Holder: "a", Token: tokens["l20"],
	}}}}}); err != nil {
		t.Fatal(err)
	}
	waitHolder(t, c, "l00", "b")
	waitHolder(t, c, "l09", "")
	for _, n := range c.Nodes {
		// The followers' tables, before any promotion could rebuild them.
		if got, want := n.Manager().Len(), len(n.FSM().Held()); n != old && (got != want || got != 21) {
			t.Fatalf("follower %s tracks %d holdings, its lease table has %d, want 21", n.ID(), got, want)
		}
	}
	clk.Advance(4 * time.Second)

	if err := old.TransferLeadership(""); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	var nl *node.Node
	for nl == nil || nl == old {
		nl = c.Leader(5 * time.Second)
	}
	held := nl.FSM().Held()
	if got := nl.Manager().Len(); got != len(held) || got != 21 {
		t.Fatalf("new leader's table has %d holdings, its lease table %d, want 21", got, len(held))
	}
	for _, l := range held {
		if d, ok := nl.Remaining(l.Namespace, l.Name); !ok || d != l.TTL() {
			t.Fatalf("%s: new leader's deadline %v (ok=%v), want a full %v", l.Name, d, ok, l.TTL())
		}
	}
}

// TestGivenUpExpireCannotEndALocalRenewal: the leader proposes an Expire,
// its disk stalls so the entry is taken but not committed, and the
// proposal times out. The entry may still commit, so the holding's next
// renewal must not be acknowledged without the log: a logged renewal moves
// the renew index and so voids the Expire, or comes after it and fails. In
// no order may a renewal be acknowledged and the holding then end.
func TestGivenUpExpireCannotEndALocalRenewal(t *testing.T) {
	for _, waiter := range []bool{false, true} {
		t.Run(fmt.Sprintf("waiter=%v", waiter), func(t *testing.T) {
			testGivenUpExpire(t, waiter, node.FaultNone)
		})
	}
}

// TestIgnoreExpireDoubtFault: the chaos suite's negative control breaks
// the rule above for real. With --unsafe-test-fault ignore-expire-doubt
// the leader renews the holding without the log, and the given-up Expire
// then ends it (handing it to a queued waiter, if there is one).
func TestIgnoreExpireDoubtFault(t *testing.T) {
	for _, waiter := range []bool{false, true} {
		t.Run(fmt.Sprintf("waiter=%v", waiter), func(t *testing.T) {
			testGivenUpExpire(t, waiter, node.FaultIgnoreExpireDoubt)
		})
	}
}

func testGivenUpExpire(t *testing.T, waiter bool, fault node.Fault) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{Config: func(_ int, cfg *node.Config) { cfg.Fault = fault }})
	leader := c.Leader(5 * time.Second)
	const ttl = 2 * time.Second
	l := acquire(t, leader, "db", "a", ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if waiter {
		res, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
			Namespace: "default", Name: "db", Holder: "w", DurationNs: int64(time.Hour), Wait: true,
		}}})
		if err != nil || !res.Queued {
			t.Fatalf("queueing w: %v %+v", err, res)
		}
	}
	waitHolder(t, c, "db", "a")

	// The deadline passes; the Expire reaches Raft and waits at the disk.
	blocked, release := c.StallLog(c.Index(leader))
	defer release()
	clk.Advance(ttl + time.Nanosecond)
	select {
	case <-blocked:
	case <-ctx.Done():
		t.Fatal("no log write reached the stalled disk")
	}
	// The proposal times out on the manager's clock and is given up.
	clk.Advance(node.DefaultConfig().Leasing.ProposeTimeout)
	deadline := time.Now().Add(5 * time.Second)
	for d, _ := leader.Remaining("default", "db"); d == 0; d, _ = leader.Remaining("default", "db") {
		if time.Now().After(deadline) {
			t.Fatal("the timed-out Expire was not put back in the table")
		}
		time.Sleep(time.Millisecond) // the manager settles on its own goroutine; nothing to await
	}

	renew := []*fsmpb.Renew{{Namespace: "default", Name: "db", Holder: "a", Token: l.Token}}
	local := leader.RenewLocal(ctx, renew)[0]
	// The fallback every caller of RenewLocal takes: the renewal through
	// the log, which waits behind the stalled Expire.
	logged := make(chan error, 1)
	if local == nil {
		go func() {
			res, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: renew}}})
			if err == nil {
				err = res.Err
			}
			logged <- err
		}()
	}
	release()
	renewed := local != nil
	if !renewed {
		renewed = <-logged == nil
	}
	// The Expire is now committed (or was voided); apply everything
	// proposed so far, then look at the holding.
	acquire(t, leader, "barrier", "x", time.Hour)
	got, _ := leader.FSM().Get("default", "db")
	if fault == node.FaultIgnoreExpireDoubt {
		if local == nil || got.Holder == "a" {
			t.Fatalf("with %s: renewed without the log %v, holder now %q; want a local renewal that the Expire then ends", fault, local != nil, got.Holder)
		}
		return
	}
	if renewed && got.Holder != "a" {
		t.Fatalf("renewal acknowledged (without the log: %v), then the holding ended: holder now %q", local != nil, got.Holder)
	}
	if local != nil {
		t.Fatal("renewed without the log while a given-up Expire of the holding could still commit")
	}
}

// TestCommandVersionFollowsTheMembers: the leader proposes version-2
// fields only once every member of the configuration registered a binary
// that applies them, and stops at once when one that does not joins.
func TestCommandVersionFollowsTheMembers(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitVersion := func(want uint32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for leader.CommandVersion() != want {
			if time.Now().After(deadline) {
				t.Fatalf("command version %d, want %d", leader.CommandVersion(), want)
			}
			time.Sleep(5 * time.Millisecond) // the leader refreshes it on its own loop
		}
	}
	// The followers of an in-memory cluster register nothing: version 1.
	waitVersion(1)
	a := acquire(t, leader, "db", "a", time.Hour)
	checked := func(holder string, token uint64) *fsm.Result {
		t.Helper()
		res, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Write{Write: &fsmpb.Write{
			Namespace: "default", Name: "db", Holder: holder, DurationNs: int64(time.Hour), CheckHolding: true, HoldingToken: token,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	// At version 1 the check is left out (a version-1 member would ignore
	// it): the write applies against any holding.
	if res := checked("b", a.Token+100); res.Err != nil {
		t.Fatalf("checked write at version 1: %v, want it applied unchecked", res.Err)
	}
	for _, n := range c.Nodes {
		if _, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{
			Id: n.ID(), GrpcAddr: n.ID() + ":7000", CommandVersion: fsm.CommandVersion,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitVersion(fsm.CommandVersion)
	if res := checked("c", 12345); !errors.Is(res.Err, fsm.ErrConflict) {
		t.Fatalf("checked write at version 2 against another holding: %v, want ErrConflict", res.Err)
	}
	// A member that does not say its version joins: version 1 before it
	// is in the configuration.
	if err := leader.Join(ctx, "old", "inmem-old", "", true, 0); err != nil {
		t.Fatal(err)
	}
	if v := leader.CommandVersion(); v != 1 {
		t.Fatalf("command version %d right after an old member joined, want 1", v)
	}
}

// TestLeaderWatch: a follower's watch ends as soon as it loses its leader,
// with ErrLeaderChanged, and the next watch names the new leader with a
// context that is live. A node that shuts down ends its watch.
func TestLeaderWatch(t *testing.T) {
	c := nodetest.New(t, 3, clock.New(), nodetest.Options{})
	old := c.Leader(5 * time.Second)
	f := c.Nodes[(c.Index(old)+1)%3]
	var id string
	var changed context.Context
	deadline := time.Now().Add(5 * time.Second)
	for id != old.ID() && time.Now().Before(deadline) {
		id, _, changed = f.LeaderWatch()
		time.Sleep(5 * time.Millisecond) // the follower learns of the leader from Raft
	}
	if id != old.ID() {
		t.Fatalf("follower's watch names %q, want the leader %s", id, old.ID())
	}
	if changed.Err() != nil {
		t.Fatalf("watch of a current leader ended: %v", context.Cause(changed))
	}
	c.Isolate(c.Index(old))
	defer c.Heal()
	select {
	case <-changed.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end after the leader was cut off")
	}
	if cause := context.Cause(changed); !errors.Is(cause, node.ErrLeaderChanged) {
		t.Fatalf("cause %v, want ErrLeaderChanged", cause)
	}
	nl := c.Leader(10 * time.Second)
	for nl == old {
		nl = c.Leader(10 * time.Second)
	}
	deadline = time.Now().Add(5 * time.Second)
	for id != nl.ID() && time.Now().Before(deadline) {
		id, _, changed = f.LeaderWatch()
		time.Sleep(5 * time.Millisecond)
	}
	if id != nl.ID() || changed.Err() != nil {
		t.Fatalf("watch after the election: leader %q (err %v), want %s and a live context", id, changed.Err(), nl.ID())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, changed = f.LeaderWatch(); changed.Err() == nil {
		t.Fatal("watch still live after the node shut down")
	}
}

// TestNodeStopsAtATooNewEntry: an entry that needs a newer binary halts
// every node that meets it; none reports ready with a table that no longer
// follows the log.
func TestNodeStopsAtATooNewEntry(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	data, err := proto.Marshal(&fsmpb.Command{RequiredVersion: fsm.CommandVersion + 1, Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: "default", Name: "db", Holder: "a", DurationNs: int64(time.Minute),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := leader.Raft().Apply(data, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range c.Nodes {
		for {
			ok, why := n.Ready()
			if !ok && strings.Contains(why, "upgrade this node") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ready=%v (%s), want not ready, naming the upgrade", n.ID(), ok, why)
			}
			time.Sleep(5 * time.Millisecond) // followers apply on their own
		}
		if _, ok := n.FSM().Get("default", "db"); ok {
			t.Fatalf("%s applied the entry it cannot read", n.ID())
		}
	}
}

// TestReadBarrierOnAStalledDisk: where a read falls back to a Barrier, a
// leader whose disk stalls answers the read when the read's context ends,
// not when the disk recovers.
func TestReadBarrierOnAStalledDisk(t *testing.T) {
	c := nodetest.New(t, 3, clock.NewFake(time.Unix(1000, 0)), nodetest.Options{
		GRPCAddr: func(int) string { return "" }, // nobody registers: reads use a Barrier
	})
	for _, n := range c.Nodes {
		n.SetPeers(unregistered{})
	}
	leader := c.Leader(5 * time.Second)
	blocked, release := c.StallLog(c.Index(leader))
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- leader.ReadBarrier(ctx) }()
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the read's Barrier never reached the stalled disk")
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read barrier on a stalled disk: %v, want the read's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read waited on the stalled disk past its own deadline")
	}
}
