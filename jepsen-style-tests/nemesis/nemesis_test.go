package nemesis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

func TestRingCut(t *testing.T) {
	ids := []string{"a", "b", "c", "d", "e"}
	cut := ringCut(ids)
	// Each of 5 nodes loses the 2 nodes two places away: 5 pairs.
	if len(cut) != 5 {
		t.Fatalf("got %d cuts %v, want 5", len(cut), cut)
	}
	reach := map[string]int{}
	isCut := map[[2]string]bool{}
	for _, p := range cut {
		isCut[p], isCut[[2]string{p[1], p[0]}] = true, true
	}
	for _, x := range ids {
		for _, y := range ids {
			if !isCut[[2]string{x, y}] {
				reach[x]++
			}
		}
	}
	for id, n := range reach {
		if n != 3 {
			t.Errorf("%s reaches %d nodes (itself included), want a majority of exactly 3", id, n)
		}
	}
	if majorityConnected(ids, nil, cut) {
		t.Errorf("a majorities ring has no fully connected majority")
	}
}

func TestMajorityConnected(t *testing.T) {
	ids := []string{"n1", "n2", "n3", "n4", "n5"}
	tests := []struct {
		name string
		down []string
		cut  [][2]string
		want bool
	}{
		{"healthy", nil, nil, true},
		{"two down", []string{"n1", "n2"}, nil, true},
		{"three down", []string{"n1", "n2", "n3"}, nil, false},
		{"halves", nil, cutBetween([]string{"n1", "n2"}, []string{"n3", "n4", "n5"}), true},
		{"bridge", nil, cutBetween([]string{"n1", "n2"}, []string{"n4", "n5"}), true},
		{"halves with a majority node down", []string{"n3"}, cutBetween([]string{"n1", "n2"}, []string{"n3", "n4", "n5"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := majorityConnected(ids, tt.down, tt.cut); got != tt.want {
				t.Errorf("majorityConnected = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMajorities(t *testing.T) {
	ids := []string{"n1", "n2", "n3", "n4", "n5"}
	tests := []struct {
		name string
		down []string
		cut  [][2]string
		want string
	}{
		{"healthy", nil, nil, "[[n1 n2 n3 n4 n5]]"},
		{"two down", []string{"n1", "n2"}, nil, "[[n3 n4 n5]]"},
		{"halves", nil, cutBetween([]string{"n1", "n2"}, []string{"n3", "n4", "n5"}), "[[n3 n4 n5]]"},
		{"bridge", nil, cutBetween([]string{"n1", "n2"}, []string{"n4", "n5"}), "[[n1 n2 n3] [n3 n4 n5]]"},
		{"isolated", nil, cutBetween([]string{"n1"}, []string{"n2", "n3", "n4", "n5"}), "[[n2 n3 n4 n5]]"},
		{"none", []string{"n1", "n2", "n3"}, nil, "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(majorities(ids, tt.down, tt.cut)); got != tt.want {
				t.Errorf("majorities = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestStallRaftNeedsDelayAboveProposeTimeout: a stall that the nodes'
// Expire proposals outlast would not attack the rule it is there for.
func TestStallRaftNeedsDelayAboveProposeTimeout(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Kinds = []string{StallRaft}
	if got := cfg.stallDelay(); got != 2*cfg.ProposeTimeout || got >= cfg.LeaseDuration {
		t.Errorf("default stall delay %v: want 2 × ProposeTimeout (%v), below a lease (%v)", got, cfg.ProposeTimeout, cfg.LeaseDuration)
	}
	if _, err := New(cfg, nil, nil, nil); err != nil {
		t.Fatalf("New with the defaults: %v", err)
	}
	cfg.StallDelay = cfg.ProposeTimeout
	if _, err := New(cfg, nil, nil, nil); err == nil {
		t.Fatal("New accepted a stall no longer than the propose timeout")
	}
	if !Known(StallRaft) || !slices.Contains(ShortKinds, StallRaft) {
		t.Error("stall-raft is not in every run and the short run")
	}
}

// TestSilentNodeFaults: the faults of a node that stops answering without
// closing its connections are in every run and in the short run.
func TestSilentNodeFaults(t *testing.T) {
	for _, k := range []string{PauseLeaderLong, Blackhole} {
		if !Known(k) || !slices.Contains(Kinds, k) || !slices.Contains(ShortKinds, k) {
			t.Errorf("%s is not in every run and the short run", k)
		}
	}
	cfg := DefaultConfig()
	cfg.Kinds = []string{Blackhole}
	// Without a cluster (no mode to look at) the kind is kept.
	n, err := New(cfg, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n.cfg.Kinds, []string{Blackhole}) {
		t.Errorf("kinds = %v", n.cfg.Kinds)
	}
}

// TestBlackholeKeepsAMajority: a black-holed node is cut from every other
// node, which leaves the rest a connected majority.
func TestBlackholeKeepsAMajority(t *testing.T) {
	ids := []string{"n1", "n2", "n3"}
	if !majorityConnected(ids, nil, cutBetween([]string{"n2"}, without(ids, "n2"))) {
		t.Error("no majority left by one black-holed node of 3")
	}
	if majorityConnected(ids, []string{"n1"}, cutBetween([]string{"n2"}, without(ids, "n2"))) {
		t.Error("a majority left with one node down and another black-holed")
	}
}

// leaderCluster is a Cluster whose leader is scripted: leaders[i] answers
// the i-th Leader call, the last one every later call.
type leaderCluster struct {
	leaders []string
	calls   int
	cuts    [][][2]string
	heals   int
}

func (c *leaderCluster) IDs() []string { return []string{"n1", "n2", "n3"} }
func (c *leaderCluster) Leader(context.Context) (string, error) {
	l := c.leaders[min(c.calls, len(c.leaders)-1)]
	c.calls++
	if l == "" {
		return "", errors.New("no leader")
	}
	return l, nil
}
func (c *leaderCluster) WaitLeader(ctx context.Context, _ time.Duration) (string, error) {
	return c.Leader(ctx)
}
func (c *leaderCluster) WaitReady(context.Context, time.Duration) error { return nil }
func (c *leaderCluster) Partition(cut [][2]string) error {
	c.cuts = append(c.cuts, cut)
	return nil
}
func (c *leaderCluster) Heal() error                   { c.heals++; return nil }
func (c *leaderCluster) Kill(string) error             { return nil }
func (c *leaderCluster) Restart(string, float64) error { return nil }
func (c *leaderCluster) Pause(string) error            { return nil }
func (c *leaderCluster) Resume(string) error           { return nil }

// TestLeaderChangeUnderIsolation: isolating the leader notes the leader
// the others elected, and with RequireLeaderChange a leader that stays is
// the fault's error.
func TestLeaderChangeUnderIsolation(t *testing.T) {
	tests := []struct {
		name       string
		leaders    []string
		require    bool
		wantDetail string
		wantErr    bool
	}{
		{"new leader", []string{"n1", "n1", "n3"}, true, "new leader n3 (was n1)", false},
		{"none, required", []string{"n1"}, true, "no new leader within", true},
		{"none, not required", []string{"n1"}, false, "no new leader within", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Kinds = []string{PartitionIsolateLeader}
			cfg.FaultMin, cfg.FaultMax = time.Millisecond, time.Millisecond
			cfg.LeaderChangeTimeout = 300 * time.Millisecond
			cfg.RequireLeaderChange = tt.require
			c := &leaderCluster{leaders: tt.leaders}
			rec := history.NewRecorder()
			n, err := New(cfg, c, rec, nil)
			if err != nil {
				t.Fatal(err)
			}
			n.Apply(context.Background(), PartitionIsolateLeader)
			h := rec.History(history.Meta{})
			if len(h.Faults) != 1 {
				t.Fatalf("%d faults recorded, want 1", len(h.Faults))
			}
			f := h.Faults[0]
			if !strings.Contains(f.Detail, tt.wantDetail) {
				t.Errorf("detail %q, want it to contain %q", f.Detail, tt.wantDetail)
			}
			if got := f.Err != ""; got != tt.wantErr {
				t.Errorf("fault error %q, want an error: %v", f.Err, tt.wantErr)
			}
			if len(c.cuts) != 1 || c.heals != 1 {
				t.Errorf("%d partitions and %d heals, want 1 each", len(c.cuts), c.heals)
			}
		})
	}
}

// TestUnsupportedKinds: a cluster without the optional abilities cannot
// be given the faults that need them.
func TestUnsupportedKinds(t *testing.T) {
	for _, k := range []string{ClockSkew, Membership, StallRaft, Blackhole} {
		cfg := DefaultConfig()
		cfg.Kinds = []string{k}
		if _, err := New(cfg, &leaderCluster{leaders: []string{"n1"}}, nil, nil); err == nil {
			t.Errorf("New accepted %s for a cluster that cannot make it", k)
		}
	}
}
