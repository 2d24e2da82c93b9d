package node_test

import (
	"bytes"
	"fmt"
	"maps"
	"strconv"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// oldGRPC is the gRPC address of the node that backup backs up.
const oldGRPC = "old-cluster:7001"

// backup returns a backup of a one-node cluster, its node registered at
// oldGRPC, in which holdings leases were acquired.
func backup(t *testing.T, clk clock.Clock, holdings int) []byte {
	t.Helper()
	src := nodetest.New(t, 1, clk, nodetest.Options{GRPCAddr: func(int) string { return oldGRPC }})
	leader := src.Leader(5 * time.Second)
	waitRegistered(t, leader)
	for i := range holdings {
		acquire(t, leader, fmt.Sprintf("l%02d", i), "h", time.Hour)
	}
	var b bytes.Buffer
	if err := leader.FSM().WriteSnapshot(&b); err != nil {
		t.Fatal(err)
	}
	src.Stop()
	return b.Bytes()
}

// waitRegistered waits until n has registered its own address, the entry
// a new leader appends on its own, so that no entry races what the test
// does next.
func waitRegistered(t *testing.T, n *node.Node) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := n.FSM().MemberAddr(n.ID()); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not register its address", n.ID())
		}
		time.Sleep(2 * time.Millisecond) // the registration has no event to await from here
	}
}

// The FSM's applied index is the one Raft restored the backup at, not the
// index the FSM had before nor the one the backup was taken at in its own
// cluster.
func TestRestoreSetsTheAppliedIndex(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	data := backup(t, clk, 20)
	// A single node, as lease-node --restore seeds.
	c := nodetest.New(t, 1, clk, nodetest.Options{})
	leader := c.Leader(5 * time.Second)
	waitRegistered(t, leader)
	if err := leader.Restore(bytes.NewReader(data), 0, 5*time.Second); err != nil {
		t.Fatalf("restore: %v", err)
	}
	// Raft's own AppliedIndex is one more: Restore ends with a no-op entry,
	// which Raft does not hand to the FSM.
	want, err := strconv.ParseUint(leader.Raft().Stats()["last_snapshot_index"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if got := leader.FSM().AppliedIndex(); got != want {
		t.Errorf("FSM applied index after the restore: got %d, want the restored snapshot's %d", got, want)
	}
}

// New tokens start past the gap above the backup's counter, or past the
// operator's floor when that is higher.
func TestRestoreRaisesTheTokenCounter(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	data := backup(t, clk, 3) // tokens 1 to 3
	tests := []struct {
		name  string
		floor uint64
		want  uint64 // the first token after the restore
	}{
		{"no floor", 0, 3 + fsm.RestoreTokenGap + 1},
		{"floor under the gap", 1000, 3 + fsm.RestoreTokenGap + 1},
		{"floor over the gap", 1 << 50, 1<<50 + 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := nodetest.New(t, 1, clk, nodetest.Options{})
			leader := c.Leader(5 * time.Second)
			if err := leader.Restore(bytes.NewReader(data), tc.floor, 5*time.Second); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got := acquire(t, leader, "new", "h", time.Hour).Token; got != tc.want {
				t.Errorf("first token after the restore: got %d, want %d", got, tc.want)
			}
		})
	}
}

// The member directory says where this cluster's members answer; a
// backup's says where another cluster's did. After a restore the leader is
// still found at its own address, and no member at an old one.
func TestRestoreKeepsTheMemberDirectory(t *testing.T) {
	clk := clock.NewFake(time.Unix(1000, 0))
	data := backup(t, clk, 1)
	c := nodetest.New(t, 1, clk, nodetest.Options{}) // the same member ID, a new address
	leader := c.Leader(5 * time.Second)
	waitRegistered(t, leader)
	want := leader.FSM().Members()
	if err := leader.Restore(bytes.NewReader(data), 0, 5*time.Second); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := leader.FSM().Members(); !maps.Equal(got, want) {
		t.Errorf("member directory after the restore: got %v, want %v (the backup's was at %s)", got, want, oldGRPC)
	}
	if id, addr := leader.Leader(); addr == "" || addr == oldGRPC {
		t.Errorf("leader %s found at %q after the restore, want its own address", id, addr)
	}
}
