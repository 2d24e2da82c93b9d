package node_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// gone is a crash probe that reports the addresses marked dead.
type gone struct {
	mu   sync.Mutex
	dead map[string]bool
}

func (g *gone) probe(_ context.Context, addr string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dead[addr]
}

func (g *gone) kill(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.dead[addr] = true
}

// crashCluster has a heartbeat timeout far longer than the crash probe's
// trigger (LeaderLeaseTimeout plus the rank stagger), so an election
// within crashWithin can only have come from the probe. The gap between
// the trigger and crashWithin is room for a loaded machine: with 1.5s of
// 2s it was too little on two shared cores.
const (
	crashHeartbeat = 3 * time.Second
	crashWithin    = 2250 * time.Millisecond
)

func crashCluster(t *testing.T, probe node.LeaderGoneFunc) (*nodetest.Cluster, *node.Node) {
	c := nodetest.New(t, 3, clock.NewFake(time.Unix(1000, 0)), nodetest.Options{
		LeaderGone: probe,
		Config: func(_ int, cfg *node.Config) {
			cfg.HeartbeatTimeout = crashHeartbeat
			cfg.ElectionTimeout = crashHeartbeat
		},
	})
	return c, c.Leader(4 * crashHeartbeat)
}

// otherLeader waits up to within for a ready leader other than old.
func otherLeader(c *nodetest.Cluster, old *node.Node, within time.Duration) *node.Node {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if n != old && n.IsLeader() && n.Manager().Active() {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond) // polling Raft state: no event to wait on
	}
	return nil
}

func TestCrashedLeaderIsReplacedBeforeTheHeartbeatTimeout(t *testing.T) {
	g := &gone{dead: map[string]bool{}}
	c, leader := crashCluster(t, g.probe)
	raftAddr, _ := leader.Addrs()
	g.kill(raftAddr)
	c.Isolate(c.Index(leader))
	start := time.Now()
	next := otherLeader(c, leader, crashWithin)
	if next == nil {
		t.Fatalf("no new leader within %v of the crash (heartbeat timeout %v)", crashWithin, crashHeartbeat)
	}
	t.Logf("%s leads %v after the crash", next.ID(), time.Since(start).Round(time.Millisecond))
	c.Heal()
}

// The control: a leader that is silent but whose port does not refuse is
// waited out for the whole heartbeat timeout.
func TestSilentLeaderIsWaitedOut(t *testing.T) {
	g := &gone{dead: map[string]bool{}}
	c, leader := crashCluster(t, g.probe)
	c.Isolate(c.Index(leader))
	if next := otherLeader(c, leader, crashWithin); next != nil {
		t.Fatalf("%s took over from a silent leader whose port did not refuse, before the heartbeat timeout", next.ID())
	}
	if otherLeader(c, leader, 4*crashHeartbeat) == nil {
		t.Fatal("no new leader after the heartbeat timeout")
	}
	c.Heal()
}
