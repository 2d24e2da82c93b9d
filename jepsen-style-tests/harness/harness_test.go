package harness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
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
	if cr := c.Crashes(); len(cr) > 0 {
		t.Fatalf("unexpected exits: %v", cr)
	}
}
