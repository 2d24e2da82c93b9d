package checker

import (
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// oneShot makes op a one-shot holder's attempt of renewal chain, with
// the given outcome class ("" for OK).
func oneShot(o history.Op, chain int64, attempt int, class string) history.Op {
	o.Workload, o.Lease, o.Chain, o.Attempt = history.WorkloadOneShot, "oneshot-0", chain, attempt
	switch class {
	case "":
	case history.ErrStale, history.ErrNotFound, history.ErrNotSent:
		o.Type, o.ErrClass, o.ResFound = history.Fail, class, false
	default:
		o.Type, o.ErrClass, o.ResFound = history.Info, class, false
	}
	return o
}

func TestRenewalRetry(t *testing.T) {
	// Times in ms; the bound is 500ms + 1s = 1500ms.
	hold := func(b *b) *b {
		a := acq(20, "o20", 0, 5, 7, 1)
		a.Workload, a.Lease = history.WorkloadOneShot, "oneshot-0"
		return b.op(a)
	}
	r := func(call, ret int64, chain int64, attempt int, class string) history.Op {
		return oneShot(renew(20, "o20", call, ret, 7, 1), chain, attempt, class)
	}
	rAt := func(call, ret int64, chain int64, attempt int, class, node string) history.Op {
		o := r(call, ret, chain, attempt, class)
		o.Node = node
		return o
	}
	noMajority := []history.Fault{{Kind: "partition-all", Start: 900 * ms, End: 5000 * ms, MajorityConnected: false}}
	tests := []struct {
		name   string
		ops    []history.Op
		faults []history.Fault
		valid  bool
	}{
		{"retried at once", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), r(1450, 1480, 1, 2, ""), r(1800, 1810, 2, 1, "")}, nil, true},
		{"retried after a refusal and an unavailable", []history.Op{
			r(400, 401, 1, 1, history.ErrNotSent), r(450, 1450, 1, 2, history.ErrUnavailable), r(1500, 1900, 1, 3, ""), r(2000, 2010, 2, 1, "")}, nil, true},
		{"retry succeeded too late", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), r(4000, 4010, 1, 2, ""), r(4400, 4410, 2, 1, "")}, nil, false},
		{"never succeeded", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), r(1450, 2450, 1, 2, history.ErrTimeout), r(2500, 3500, 1, 3, history.ErrTimeout), r(5000, 5010, 2, 1, "")}, nil, false},
		{"too late, but no majority", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), r(4000, 4010, 1, 2, ""), r(6600, 6610, 2, 1, "")}, noMajority, true},
		{"lost with a majority", []history.Op{r(400, 410, 1, 1, ""), r(800, 810, 2, 1, history.ErrStale), r(3000, 3010, 3, 1, "")}, nil, false},
		{"lost without a majority", []history.Op{r(400, 410, 1, 1, ""), r(6000, 6010, 2, 1, history.ErrStale), r(6500, 6510, 3, 1, "")}, noMajority, true},
		{"too late, retried through a node cut off", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), rAt(1450, 2450, 1, 2, history.ErrTimeout, "b"), r(2500, 3100, 1, 3, ""), r(3200, 3210, 2, 1, "")},
			[]history.Fault{{Kind: "partition-halves", Start: 300 * ms, End: 2600 * ms, MajorityConnected: true, Outside: []string{"n2"}}}, true},
		{"too late, retried through the majority", []history.Op{r(400, 1400, 1, 1, history.ErrTimeout), rAt(1450, 2450, 1, 2, history.ErrTimeout, "a"), r(2500, 3100, 1, 3, ""), r(3200, 3210, 2, 1, "")},
			[]history.Fault{{Kind: "partition-halves", Start: 300 * ms, End: 2600 * ms, MajorityConnected: true, Outside: []string{"n2"}}}, false},
		{"window past the run's end", []history.Op{r(400, 410, 1, 1, ""), r(800, 1800, 2, 1, history.ErrTimeout)}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := hold(newB())
			bb.h.Meta.ElectionTimeout = 500 * time.Millisecond
			bb.h.Meta.NodeIDs = map[string]string{"a": "n1", "b": "n2"}
			for _, o := range tt.ops {
				bb.op(o)
			}
			bb.h.Faults = tt.faults
			bb.h.Sort()
			res := RenewalRetry(&bb.h)
			if res.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", res.Valid, tt.valid, res.Summary, res.Violations)
			}
		})
	}
	t.Run("no election timeout", func(t *testing.T) {
		bb := hold(newB())
		bb.op(r(400, 1400, 1, 1, history.ErrTimeout))
		if res := RenewalRetry(&bb.h); !res.Valid || !res.Unknown {
			t.Fatalf("without the election timeout: valid %v unknown %v, want a pass marked unknown", res.Valid, res.Unknown)
		}
	})
}
