package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// waitLease waits until every node's FSM shows lease name as ok wants.
func waitLease(t *testing.T, c *nodetest.Cluster, name, what string, ok func(*fsm.Lease) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		all := true
		for _, n := range c.Nodes {
			l, found := n.FSM().Get("default", name)
			all = all && found && ok(l)
		}
		if all {
			return
		}
		time.Sleep(2 * time.Millisecond) // replication has no event to await from here
	}
	t.Fatalf("lease %s: not %s on every node", name, what)
}

func acquireDelay(t *testing.T, n *node.Node, name, holder string, d, delay time.Duration, wait bool) *fsm.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: "default", Name: name, Holder: holder, DurationNs: int64(d), LockDelayNs: int64(delay), Wait: wait,
	}}})
	if err != nil || res.Err != nil {
		t.Fatalf("acquire %s by %s: err=%v res=%+v", name, holder, err, res)
	}
	return res
}

// TestLockDelayOnRealRaft: on real Raft with a fake clock, a lock delay
// is off while a member may not apply it; once every member runs version
// 3, an expired holding leaves its lease delayed on every node, nobody
// gets it, a new leader gives the delay a fresh full length (from the
// table it kept as a follower), and only then does the waiter get it.
func TestLockDelayOnRealRaft(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	c := nodetest.New(t, 3, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The followers of an in-memory cluster register nothing: version 1,
	// and the lock delay is dropped.
	if l := acquireDelay(t, leader, "old", "a", time.Second, time.Minute, false).Lease; l.LockDelay != 0 {
		t.Fatalf("lock delay %v kept at version %d, want dropped", l.LockDelay, leader.CommandVersion())
	}
	for _, n := range c.Nodes {
		if _, err := leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{
			Id: n.ID(), GrpcAddr: n.ID() + ":7000", CommandVersion: fsm.CommandVersion,
		}}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for leader.CommandVersion() != fsm.CommandVersion {
		if time.Now().After(deadline) {
			t.Fatalf("command version %d, want %d", leader.CommandVersion(), fsm.CommandVersion)
		}
		time.Sleep(5 * time.Millisecond) // the leader refreshes it on its own loop
	}

	a := acquireDelay(t, leader, "db", "a", 2*time.Second, 3*time.Second, false).Lease
	if a.LockDelay != 3*time.Second {
		t.Fatalf("lock delay %v, want 3s", a.LockDelay)
	}
	acquireDelay(t, leader, "db", "w", time.Minute, 0, true)
	acquireDelay(t, leader, "plain", "p", 1500*time.Millisecond, 0, false)
	clk.Advance(1500*time.Millisecond + time.Nanosecond)
	waitLease(t, c, "plain", "free at once (no lock delay)", func(l *fsm.Lease) bool { return l.Holder == "" && !l.Delayed })
	clk.Advance(500 * time.Millisecond)
	waitLease(t, c, "db", "delayed after the expiry", func(l *fsm.Lease) bool {
		return l.Delayed && l.Holder == "" && l.Token == a.Token && len(l.Waiters) == 1
	})
	if r := acquireDelay(t, leader, "db", "b", time.Minute, 0, false); r.Acquired {
		t.Fatalf("acquire during the delay granted: %+v", r.Lease)
	}

	clk.Advance(2 * time.Second) // 1 s of the delay left on the old leader
	if d, ok := leader.Remaining("default", "db"); !ok || d != time.Second {
		t.Fatalf("old leader's delay left: %v (ok=%v), want 1s", d, ok)
	}
	if err := leader.TransferLeadership(""); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	var nl *node.Node
	for nl == nil || nl == leader {
		nl = c.Leader(5 * time.Second)
	}
	if d, ok := nl.Remaining("default", "db"); !ok || d != 3*time.Second {
		t.Fatalf("new leader's delay: %v (ok=%v), want a fresh full 3s", d, ok)
	}
	clk.Advance(3*time.Second - time.Millisecond) // past the old leader's end
	if d, ok := nl.Remaining("default", "db"); !ok || d != time.Millisecond {
		t.Fatalf("new leader's delay left: %v (ok=%v), want 1ms", d, ok)
	}
	for _, n := range c.Nodes {
		if l, _ := n.FSM().Get("default", "db"); !l.Delayed || l.Holder != "" {
			t.Fatalf("node %s: delay ended before its end: %+v", n.ID(), l)
		}
	}
	clk.Advance(time.Millisecond + time.Nanosecond)
	waitLease(t, c, "db", "held by the waiter", func(l *fsm.Lease) bool {
		return !l.Delayed && l.Holder == "w" && l.Token > a.Token
	})

	// In the log: the Expire of db started a delay and needs version 3;
	// the earlier one of plain (and old), without a delay, stays readable by an older
	// binary (a downgrade); the EndDelay needs 3.
	expires := map[string]*fsmpb.Command{}
	var endDelay *fsmpb.Command
	log := c.Log(c.Index(nl))
	first, _ := log.FirstIndex()
	last, _ := log.LastIndex()
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := log.GetLog(i, &e); err != nil || e.Type != raft.LogCommand {
			continue
		}
		var top fsmpb.Command
		if err := proto.Unmarshal(e.Data, &top); err != nil {
			t.Fatal(err)
		}
		cmds := []*fsmpb.Command{&top}
		if b := top.GetBatch(); b != nil {
			cmds = b.Commands
		}
		for _, cmd := range cmds {
			if ex := cmd.GetExpire(); ex != nil {
				for _, en := range ex.Entries {
					expires[en.Name] = cmd
				}
			}
			if cmd.GetEndDelay() != nil {
				endDelay = cmd
			}
		}
	}
	if ex := expires["db"]; ex == nil || !ex.GetExpire().LockDelays || ex.RequiredVersion != 3 {
		t.Errorf("Expire of db: %v, want lock_delays and version 3", ex)
	}
	if ex := expires["plain"]; ex == nil || ex == expires["db"] || ex.GetExpire().LockDelays || ex.RequiredVersion > 2 {
		t.Errorf("Expire of plain (and old), without db: %v, want no lock_delays and version 2 at most", ex)
	}
	if endDelay == nil || endDelay.RequiredVersion != 3 {
		t.Errorf("EndDelay: %v, want version 3", endDelay)
	}
}
