package runner

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/checker"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

func acquire(p int, holder string, call, ret int64, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Workload: history.WorkloadLease, Kind: history.Acquire, Lease: "lease-0", Holder: holder,
		Duration: 100 * time.Millisecond, Call: call * 1e6, Return: ret * 1e6, Type: history.OK,
		Acquired: true, ResFound: true, ResHolder: holder, ResToken: token, ResTransitions: trans}
}

func sample() *history.History {
	return &history.History{
		Meta: history.Meta{MaxDrift: 0.01, Leases: []string{"lease-0"}},
		Ops: []history.Op{
			acquire(0, "a", 0, 5, 1, 1),
			acquire(1, "b", 200, 205, 4, 2),
			acquire(0, "a", 400, 405, 9, 3),
		},
		Faults: []history.Fault{{Kind: "kill-leader", Start: 1e6, End: 2e6, MajorityConnected: true}},
		End:    500e6,
	}
}

func TestCheckAndSummary(t *testing.T) {
	res := &Results{}
	Check(sample(), checker.DefaultOptions(), res)
	if !res.Valid() {
		t.Fatalf("a valid history failed:\n%s", res.Summary())
	}
	sum := res.Summary()
	lines := strings.Split(strings.TrimSpace(sum), "\n")
	if last := lines[len(lines)-1]; !regexp.MustCompile(`^\d+ passed, \d+ failed$`).MatchString(last) {
		t.Errorf("last summary line = %q, want \"N passed, N failed\"", last)
	}
	if res.Faults["kill-leader"] != 1 || res.Ops != 3 || res.OK != 3 {
		t.Errorf("counts wrong: %+v", res)
	}
}

func TestCorruptSwapTokens(t *testing.T) {
	h := sample()
	desc, err := Corrupt(h, "swap-tokens")
	if err != nil {
		t.Fatal(err)
	}
	if h.Ops[0].ResToken != 9 || h.Ops[2].ResToken != 1 {
		t.Fatalf("tokens not swapped (%s): %d, %d", desc, h.Ops[0].ResToken, h.Ops[2].ResToken)
	}
	res := &Results{}
	Check(h, checker.DefaultOptions(), res)
	if res.Checkers["token-order"].Valid {
		t.Errorf("token-order passed a history with swapped tokens:\n%s", res.Summary())
	}
	if _, err := Corrupt(h, "nonsense"); err == nil {
		t.Error("unknown corruption accepted")
	}
}
