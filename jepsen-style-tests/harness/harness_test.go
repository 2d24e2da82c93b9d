package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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
	stallSmoke(t, c)
	if cr := c.Crashes(); len(cr) > 0 {
		t.Fatalf("unexpected exits: %v", cr)
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
