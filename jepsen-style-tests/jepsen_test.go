// Package jepsentests holds the go test entry points of the chaos suite.
// They start real clusters, so they run only when LEASEKEEPER_JEPSEN is
// set; a plain `go test ./...` skips them in milliseconds:
//
//	LEASEKEEPER_JEPSEN=1 go test ./jepsen-style-tests/ -run Short -v -timeout 15m
//	LEASEKEEPER_JEPSEN=1 go test ./jepsen-style-tests/ -v -timeout 30m   # short run + negative controls
//
// LEASEKEEPER_JEPSEN_MODE=loopback forces the loopback network mode, and
// LEASEKEEPER_JEPSEN_DURATION overrides the short run's length.
package jepsentests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/checker"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/nemesis"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/runner"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func config(t *testing.T) runner.Config {
	t.Helper()
	if os.Getenv("LEASEKEEPER_JEPSEN") == "" {
		t.Skip("set LEASEKEEPER_JEPSEN=1 to run the chaos suite against real clusters")
	}
	cfg := runner.ShortConfig()
	if m := os.Getenv("LEASEKEEPER_JEPSEN_MODE"); m != "" {
		cfg.Mode = m
	}
	cfg.Out = testWriter{t}
	return cfg
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func run(t *testing.T, cfg runner.Config) *runner.Results {
	t.Helper()
	res, err := runner.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("run dir %s", res.RunDir)
	return res
}

func invalid(res *runner.Results, names ...string) []string {
	var out []string
	for _, n := range names {
		if c, ok := res.Checkers[n]; ok && !c.Valid {
			out = append(out, n)
		}
	}
	return out
}

// TestShort is the short run: 3 nodes, about two minutes, several fault
// kinds. Every checker must pass. Its history then serves the corrupted
// history control: with two tokens swapped, token-order must fail.
func TestShort(t *testing.T) {
	cfg := config(t)
	if d := os.Getenv("LEASEKEEPER_JEPSEN_DURATION"); d != "" {
		v, err := time.ParseDuration(d)
		if err != nil {
			t.Fatalf("LEASEKEEPER_JEPSEN_DURATION: %v", err)
		}
		cfg.Duration = v
	}
	res := run(t, cfg)
	if !res.Valid() {
		t.Errorf("%d checkers failed:\n%s", res.Failed, res.Summary())
	}
	if res.Ops == 0 || len(res.Faults) == 0 {
		t.Errorf("nothing happened: %d ops, faults %v", res.Ops, res.Faults)
	}

	t.Run("corrupted history", func(t *testing.T) {
		h, err := history.Load(filepath.Join(res.RunDir, "history.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		desc, err := runner.Corrupt(h, "swap-tokens")
		if err != nil {
			t.Fatal(err)
		}
		t.Log(desc)
		if r := checker.TokenOrder(h); r.Valid {
			t.Errorf("token-order passed a history with swapped tokens: %s", r.Summary)
		}
	})
}

// TestRollingUpgrade starts the cluster on the previous release's
// lease-node, built from its tag, and under the workload replaces the
// nodes' binary with the current tree's one at a time (followers first,
// the leader after handing over its leadership), then back to the previous
// release and forth again. Every checker must pass, and every node must
// have run the current binary.
func TestRollingUpgrade(t *testing.T) {
	cfg := config(t)
	cfg.UpgradeFrom = runner.PreviousRelease
	if ref := os.Getenv("LEASEKEEPER_UPGRADE_FROM"); ref != "" {
		cfg.UpgradeFrom = ref
	}
	cfg.Downgrade = true
	cfg.Nemesis = []string{nemesis.RollingUpgrade}
	cfg.Duration = 75 * time.Second
	cfg.QuietMin, cfg.QuietMax = 2*time.Second, 3*time.Second
	res := run(t, cfg)
	if !res.Valid() {
		t.Errorf("%d checkers failed:\n%s", res.Failed, res.Summary())
	}
	upgraded := map[string]bool{}
	for _, line := range res.FaultLog {
		t.Log(line)
		if strings.Contains(line, " ERROR: ") {
			t.Errorf("fault failed: %s", line)
		}
		if i := strings.Index(line, nemesis.RollingUpgrade+": "); i >= 0 && strings.HasSuffix(strings.SplitN(line[i:], ";", 2)[0], "-> current") {
			upgraded[strings.Fields(line[i+len(nemesis.RollingUpgrade)+2:])[0]] = true
		}
	}
	if len(upgraded) != cfg.Nodes {
		t.Errorf("nodes upgraded to the current binary: %v, want all %d", upgraded, cfg.Nodes)
	}
}

// TestNegativeClock restarts the leader with its clock three times too
// fast, far beyond the 1% drift bound: it expires holdings early, and the
// checkers must see holdings lost before their guaranteed time.
func TestNegativeClock(t *testing.T) {
	cfg := config(t)
	cfg.Duration = 40 * time.Second
	cfg.Nemesis = []string{nemesis.ClockSkewExtreme}
	cfg.QuietMin, cfg.QuietMax = time.Second, 2*time.Second
	// Proving a history illegal takes porcupine an exhaustive search; the
	// other checkers are enough to catch this one.
	cfg.LinearizabilityTimeout = 30 * time.Second
	res := run(t, cfg)
	if got := invalid(res, "lost-renewal", "mutual-exclusion", "linearizability"); len(got) == 0 {
		t.Errorf("no checker caught a leader whose clock runs 3x fast:\n%s", res.Summary())
	} else {
		t.Logf("caught by %v", got)
	}
}

// TestNegativeStaleWriter runs a client that ignores its deadline and
// keeps writing with its old token against a register whose guard accepts
// everything: the fenced-register checker must flag the register.
func TestNegativeStaleWriter(t *testing.T) {
	cfg := config(t)
	cfg.Duration = 20 * time.Second
	cfg.Nemesis = nil
	cfg.StaleWriter = true
	cfg.Guard = "broken"
	res := run(t, cfg)
	if len(invalid(res, "fenced-register")) == 0 {
		t.Errorf("fenced-register passed a broken guard fed stale tokens:\n%s", res.Summary())
	}
}

// TestNegativeServerFaults runs servers that break one safety rule each on
// purpose (lease-node --unsafe-test-fault): the checkers must catch every
// one.
func TestNegativeServerFaults(t *testing.T) {
	tests := []struct {
		fault    string
		nemesis  []string
		duration time.Duration
		caughtBy []string
		// pace, when set, paces the nemesis instead of the defaults here.
		pace func(*runner.Config)
	}{
		// The leader expires holdings at half their duration.
		{"early-expiry", nil, 30 * time.Second, []string{"lost-renewal", "mutual-exclusion", "linearizability"}, nil},
		// A new leader expires every holding at once instead of giving it
		// a fresh duration: leader kills and isolations make new leaders.
		{"no-fresh-duration", []string{nemesis.KillLeader, nemesis.PartitionIsolateLeader}, 30 * time.Second, []string{"lost-renewal", "mutual-exclusion", "linearizability"}, nil},
		// The leader renews a holding without the log while an Expire of
		// it that timed out may still commit; stalled Raft entries make
		// such Expires, and the Expire then ends the renewed holding. The
		// bug needs a lease client to renew a lapsed holding in the
		// quarter second between its Expire's timeout and the retry, with
		// that Expire already in the log: in the runs made while writing
		// this, about once a minute of stalls (3 times in 150 s). Hence
		// the longer run, nearly all of it stalled: a run without a single
		// such renewal should be rare (about 3% if it comes once a minute).
		// The leader's Expire starts no lock delay: a mutex client paused
		// past its lease on the lock with a lock delay is replaced at once
		// by another that was trying to take it.
		{"skip-lock-delay", []string{nemesis.PauseClient}, 30 * time.Second, []string{"lock-delay"}, nil},
		{"ignore-expire-doubt", []string{nemesis.StallRaft}, 180 * time.Second, []string{"lost-renewal", "mutual-exclusion", "linearizability"}, func(c *runner.Config) {
			c.QuietMin, c.QuietMax = time.Second, 2*time.Second
			c.FaultMin, c.FaultMax = 5*time.Second, 7*time.Second
		}},
	}
	for _, tc := range tests {
		t.Run(tc.fault, func(t *testing.T) {
			cfg := config(t)
			cfg.Duration = tc.duration
			cfg.Nemesis = tc.nemesis
			cfg.QuietMin, cfg.QuietMax = 2*time.Second, 4*time.Second
			if tc.pace != nil {
				tc.pace(&cfg)
			}
			cfg.Fault = tc.fault
			cfg.LinearizabilityTimeout = 30 * time.Second
			res := run(t, cfg)
			if got := invalid(res, tc.caughtBy...); len(got) == 0 {
				t.Errorf("no checker caught --unsafe-test-fault %s:\n%s", tc.fault, res.Summary())
			} else {
				t.Logf("caught by %v", got)
			}
		})
	}
}

// TestNegativeSlowRetry runs one-shot holders that wait 3 s before they
// retry a renewal that went unanswered: twice the bound of an election
// timeout plus a second, and longer than their 2 s lease. Long pauses of
// the leader leave renewals unanswered while the other two nodes stay a
// connected majority, so the renewal-retry checker must see retries that
// succeed too late and holdings lost.
func TestNegativeSlowRetry(t *testing.T) {
	cfg := config(t)
	cfg.Duration = 40 * time.Second
	cfg.Nemesis = []string{nemesis.PauseLeaderLong, nemesis.KillLeader}
	cfg.QuietMin, cfg.QuietMax = 2*time.Second, 4*time.Second
	cfg.OneShotClients = 4
	cfg.OneShotRetryDelay = 3 * time.Second
	cfg.LinearizabilityTimeout = 30 * time.Second
	res := run(t, cfg)
	if len(invalid(res, "renewal-retry")) == 0 {
		t.Errorf("renewal-retry passed one-shot holders that retry after 3 s:\n%s", res.Summary())
	}
}
