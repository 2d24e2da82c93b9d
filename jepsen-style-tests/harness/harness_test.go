package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestClusterSmoke starts a real 3-node cluster, cuts the leader off, kills
// and restarts a node, and checks that a leader comes back each time. It
// needs the lease-node sources, so it runs only with LEASEKEEPER_JEPSEN set
// (see the package README); LEASEKEEPER_JEPSEN_MODE picks the network mode.
func TestClusterSmoke(t *testing.T) {
	if os.Getenv("LEASEKEEPER_JEPSEN") == "" {
		t.Skip("set LEASEKEEPER_JEPSEN=1 to start real clusters")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "lease-node")
	build := exec.Command("go", "build", "-o", bin, "github.com/leasekeeper/leasekeeper/cmd/lease-node")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build lease-node: %v\n%s", err, out)
	}
	cfg := DefaultConfig()
	cfg.Binary, cfg.Dir = bin, dir
	if m := os.Getenv("LEASEKEEPER_JEPSEN_MODE"); m != "" {
		cfg.Mode = m
	}
	cfg.Logf = t.Logf
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s mode, leader %s", c.Mode(), leader)
	checkAdvertised(t, c)
	forwardingCut(t, c, leader)

	var cut [][2]string
	for _, n := range c.Nodes() {
		if n.ID != leader {
			cut = append(cut, [2]string{leader, n.ID})
		}
	}
	if err := c.Partition(cut); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := c.Leader(ctx)
		if err == nil && l != leader {
			t.Logf("after isolating %s: leader %s", leader, l)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader after isolating %s (still %q, %v)", leader, l, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(leader, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A member removed and joined again asks for its advertised
	// addresses too.
	leader, err = c.WaitLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var follower string
	for _, n := range c.Nodes() {
		if n.ID != leader {
			follower = n.ID
		}
	}
	if err := c.RemoveMember(ctx, follower); err != nil {
		t.Fatalf("remove %s: %v", follower, err)
	}
	if err := c.Rejoin(ctx, follower); err != nil {
		t.Fatalf("rejoin %s: %v", follower, err)
	}
	checkAdvertised(t, c)
	blackholeSmoke(t, c)
	stallSmoke(t, c)
	if cr := c.Crashes(); len(cr) > 0 {
		t.Fatalf("unexpected exits: %v", cr)
	}
}

// checkAdvertised waits until every node's view of the cluster has each
// member at the addresses the others must reach it at (PeerAddr and
// GRPCAddr: the proxies in loopback mode), and fails if it does not
// within 10 s. In loopback mode a member at its listen address would be
// reached round its proxies, out of the partitions' reach.
func checkAdvertised(t *testing.T, c *Cluster) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var wrong []string
		for _, n := range c.Nodes() {
			st, err := c.Status(ctx, n.ID)
			if err != nil {
				wrong = append(wrong, fmt.Sprintf("%s: %v", n.ID, err))
				continue
			}
			if len(st.GetMembers()) != len(c.Nodes()) {
				wrong = append(wrong, fmt.Sprintf("%s sees %d members", n.ID, len(st.GetMembers())))
			}
			for _, m := range st.GetMembers() {
				o := c.Node(m.GetId())
				if o == nil || m.GetRaftAddr() != o.PeerAddr || m.GetGrpcAddr() != o.GRPCAddr {
					wrong = append(wrong, fmt.Sprintf("%s has %s at raft %s, grpc %s", n.ID, m.GetId(), m.GetRaftAddr(), m.GetGrpcAddr()))
				}
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("members not at their advertised addresses: %s", strings.Join(wrong, "; "))
		}
		time.Sleep(100 * time.Millisecond) // registration has no event to wait for from outside
	}
}

// forwardingCut isolates a follower and at once asks it for a write,
// which it must forward to the leader: the cut must stop the forwarded
// call as it stops Raft, so the write fails (Unavailable once the
// follower gives up on the leader), though the follower has not yet
// noticed that it lost its leader.
func forwardingCut(t *testing.T, c *Cluster, leader string) {
	t.Helper()
	var f *Node
	for _, n := range c.Nodes() {
		if n.ID != leader {
			f = n
			break
		}
	}
	cc, err := grpc.NewClient(f.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	leases := pb.NewLeasesClient(cc)
	acquire := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := leases.Acquire(ctx, &pb.AcquireRequest{Name: name, HolderIdentity: "smoke", LeaseDuration: durationpb.New(time.Minute)})
		return err
	}
	// The follower knows the leader's address once registration is
	// done (checkAdvertised), and has a connection to it after this.
	if err := acquire("forwarded"); err != nil {
		t.Fatalf("acquire through %s before the cut: %v", f.ID, err)
	}
	var cut [][2]string
	for _, n := range c.Nodes() {
		if n != f {
			cut = append(cut, [2]string{f.ID, n.ID})
		}
	}
	if err := c.Partition(cut); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = acquire("cut-off")
	t.Logf("acquire through %s, cut off from the others: %v after %v", f.ID, err, time.Since(start).Round(time.Millisecond))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("acquire through %s, cut off from the leader: %v, want Unavailable (the forwarded call must not pass the cut)", f.ID, err)
	}
	if err := c.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// blackholeSmoke silences the leader: the others must elect another,
// and a client's call to the silenced node must get no answer at all (its
// deadline passes: nothing refuses or closes it).
func blackholeSmoke(t *testing.T, c *Cluster) {
	t.Helper()
	ctx := context.Background()
	leader, err := c.WaitLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Blackhole(leader); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Unblackhole(); err != nil {
			t.Error(err)
		}
		if err := c.WaitReady(ctx, 30*time.Second); err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l, err := c.Leader(ctx)
		if err == nil && l != leader {
			t.Logf("after blackholing %s: leader %s", leader, l)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new leader after blackholing %s (still %q, %v)", leader, l, err)
		}
		time.Sleep(100 * time.Millisecond) // the harness's view of the leader
	}
	cc, err := grpc.NewClient(c.Node(leader).GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = pb.NewLeasesClient(cc).Get(gctx, &pb.GetRequest{Name: "warm-up"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a call to the blackholed %s: %v, want no answer until its deadline", leader, err)
	}
}

// stallSmoke delays the leader's Raft entries: the leader must keep its
// leadership in the same term, and a write must take about the delay.
func stallSmoke(t *testing.T, c *Cluster) {
	ctx := context.Background()
	leader, err := c.WaitLeader(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	before, err := c.Status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(c.Node(leader).GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	leases := pb.NewLeasesClient(cc)
	acquire := func(name string) time.Duration {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := leases.Acquire(ctx, &pb.AcquireRequest{Name: name, HolderIdentity: "smoke", LeaseDuration: durationpb.New(time.Minute)}); err != nil {
			t.Fatalf("acquire %s: %v", name, err)
		}
		return time.Since(start)
	}
	acquire("warm-up")
	const delay = time.Second
	if err := c.StallRaft(leader, delay); err != nil {
		t.Fatal(err)
	}
	took := acquire("stalled")
	time.Sleep(2 * time.Second) // heartbeats alone keep the leader for this long
	held, err := c.UnstallRaft()
	if err != nil {
		t.Fatal(err)
	}
	after, err := c.Status(ctx, leader)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stalled %s: a write took %v, %d packets or reads delayed, term %d -> %d, leader %s", leader, took, held, before.GetTerm(), after.GetTerm(), after.GetLeader())
	if took < delay {
		t.Errorf("a write took %v during a stall of %v", took, delay)
	}
	if held == 0 {
		t.Error("the stall delayed nothing")
	}
	if after.GetTerm() != before.GetTerm() || after.GetLeader() != leader {
		t.Errorf("the stalled leader %s (term %d) lost its leadership: now %s in term %d", leader, before.GetTerm(), after.GetLeader(), after.GetTerm())
	}
	if took := acquire("after"); took > delay {
		t.Errorf("a write took %v after the stall ended", took)
	}
}
