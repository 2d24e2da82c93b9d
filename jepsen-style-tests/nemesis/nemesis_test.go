package nemesis

import (
	"fmt"
	"slices"
	"testing"
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
