package checker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

const ms = int64(time.Millisecond)

// b builds hand-made histories. Times are in milliseconds.
type b struct{ h history.History }

func newB() *b {
	return &b{h: history.History{Meta: history.Meta{MaxDrift: 0.01, Leases: []string{"l"}, Locks: []string{"m"}}}}
}

func (b *b) op(o history.Op) *b {
	o.Call *= ms
	o.Return *= ms
	o.Deadline *= ms
	if o.Workload == "" {
		o.Workload = history.WorkloadLease
	}
	if o.Lease == "" {
		o.Lease = "l"
	}
	if o.Type == "" {
		o.Type = history.OK
	}
	b.h.Ops = append(b.h.Ops, o)
	b.h.End = max(b.h.End, o.Return)
	return b
}

const dur = 100 * time.Millisecond

// acq is an acquire by holder answered "acquired" with token and trans.
func acq(p int, holder string, call, ret int64, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Kind: history.Acquire, Holder: holder, Duration: dur, Call: call, Return: ret,
		Acquired: true, ResFound: true, ResHolder: holder, ResToken: token, ResTransitions: trans}
}

// busy is an acquire by holder answered "held by other".
func busy(p int, holder string, call, ret int64, other string, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Kind: history.Acquire, Holder: holder, Duration: dur, Call: call, Return: ret,
		ResFound: true, ResHolder: other, ResToken: token, ResTransitions: trans}
}

func renew(p int, holder string, call, ret int64, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Kind: history.Renew, Holder: holder, Token: token, Duration: dur, Call: call, Return: ret,
		ResFound: true, ResHolder: holder, ResToken: token, ResTransitions: trans}
}

func rel(p int, holder string, call, ret int64, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Kind: history.Release, Holder: holder, Token: token, Call: call, Return: ret,
		ResFound: true, ResToken: token, ResTransitions: trans}
}

func get(p int, call, ret int64, holder string, token uint64, trans int64) history.Op {
	return history.Op{Process: p, Kind: history.Get, Call: call, Return: ret, ResFound: true, ResHolder: holder, ResToken: token, ResTransitions: trans}
}

func info(o history.Op) history.Op {
	o.Type = history.Info
	o.ErrClass = history.ErrTimeout
	o.Acquired, o.ResFound, o.ResHolder, o.ResToken, o.ResTransitions = false, false, "", 0, 0
	return o
}

func fail(o history.Op, class string) history.Op {
	o.Type = history.Fail
	o.ErrClass = class
	o.Acquired, o.ResFound, o.ResHolder, o.ResToken, o.ResTransitions = false, false, "", 0, 0
	return o
}

func TestLinearizability(t *testing.T) {
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"acquire renew release acquire", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			get(1, 6, 8, "a", 1, 1),
			busy(1, "b", 9, 10, "a", 1, 1),
			renew(0, "a", 11, 12, 1, 1),
			rel(0, "a", 13, 14, 1, 1),
			rel(0, "a", 15, 16, 1, 1), // a retried release succeeds
			acq(1, "b", 17, 18, 2, 2),
			fail(renew(0, "a", 19, 20, 1, 1), history.ErrStale),
		}, true},
		{"absent lease", []history.Op{
			fail(get(0, 0, 1, "", 0, 0), history.ErrNotFound),
			fail(renew(0, "a", 2, 3, 7, 0), history.ErrNotFound),
			acq(0, "a", 4, 5, 7, 1),
		}, true},
		{"expiry after the guaranteed time", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			get(1, 120, 121, "", 1, 1),
			acq(1, "b", 130, 131, 4, 2),
			fail(renew(0, "a", 132, 133, 1, 1), history.ErrStale),
			fail(rel(0, "a", 134, 135, 1, 1), history.ErrStale), // expired, not released
		}, true},
		{"expiry before the guaranteed time", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			acq(1, "b", 50, 51, 4, 2),
		}, false},
		{"renewal extends the guarantee", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			renew(0, "a", 80, 85, 1, 1),
			acq(1, "b", 150, 151, 4, 2), // 150 < 80+99
		}, false},
		{"concurrent renewal may have lost the race", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			fail(renew(0, "a", 90, 200, 1, 1), history.ErrStale),
			acq(1, "b", 110, 120, 4, 2),
		}, true},
		{"info acquire may have happened", []history.Op{
			info(acq(0, "a", 0, 5, 0, 0)),
			get(1, 10, 11, "a", 3, 1),
			busy(1, "b", 12, 13, "a", 3, 1),
		}, true},
		{"info acquire may not have happened", []history.Op{
			info(acq(0, "a", 0, 5, 0, 0)),
			fail(get(1, 10, 11, "", 0, 0), history.ErrNotFound),
			acq(1, "b", 12, 13, 3, 1),
		}, true},
		{"nobody acquired for b", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			get(1, 300, 301, "b", 2, 2),
		}, false},
		{"token went back", []history.Op{
			acq(0, "a", 0, 5, 5, 1),
			acq(1, "b", 200, 201, 3, 2),
		}, false},
		{"stale renewal of a held lease", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			fail(renew(0, "a", 10, 11, 1, 1), history.ErrStale),
		}, false},
		{"read of an older state", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			rel(0, "a", 6, 7, 1, 1),
			get(1, 8, 9, "a", 1, 1),
		}, false},
		// The expiry cannot be slid in front of an info acquire when an
		// operation placed after it finished before the guaranteed time.
		{"expiry floor", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			info(acq(1, "b", 20, 25, 0, 0)),
			get(2, 30, 40, "b", 2, 2),
		}, false},
		{"expiry floor satisfied", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			info(acq(1, "b", 20, 25, 0, 0)),
			get(2, 30, 140, "b", 2, 2),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			dir := t.TempDir()
			r := Linearizability(&bb.h, Options{OutDir: dir, LinearizabilityTimeout: 10 * time.Second})
			if r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
			if !tt.valid {
				if _, err := os.Stat(filepath.Join(dir, "linearizability.html")); err != nil {
					t.Errorf("no visualisation written: %v", err)
				}
			}
		})
	}
}

func TestTokenOrder(t *testing.T) {
	valid := []history.Op{
		acq(0, "a", 0, 5, 1, 1),
		rel(0, "a", 6, 7, 1, 1),
		acq(1, "b", 8, 9, 4, 2),
		get(2, 10, 11, "b", 4, 2),
		{Process: 3, Kind: history.Acquire, Lease: "other", Holder: "c", Duration: dur, Call: 10, Return: 11, Acquired: true, ResFound: true, ResHolder: "c", ResToken: 5, ResTransitions: 1},
	}
	swapped := append([]history.Op(nil), valid...)
	swapped[0].ResToken, swapped[2].ResToken = swapped[2].ResToken, swapped[0].ResToken
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"rising tokens", valid, true},
		{"swapped tokens", swapped, false},
		{"token on two leases", append(append([]history.Op(nil), valid...),
			history.Op{Process: 3, Kind: history.Get, Lease: "other", Call: 20, Return: 21, ResFound: true, ResHolder: "b", ResToken: 4, ResTransitions: 2}), false},
		{"transitions disagree", []history.Op{acq(0, "a", 0, 5, 1, 1), get(1, 6, 7, "a", 1, 2)}, false},
		{"concurrent answers may disagree", []history.Op{acq(0, "a", 0, 5, 1, 1), get(1, 1, 4, "", 0, 0)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			if r := TokenOrder(&bb.h); r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
		})
	}
}

func write(p, seq int, token uint64, accepted bool) history.Op {
	return history.Op{Process: p, Workload: history.WorkloadMutex, Kind: history.Write, Lease: "m", Token: token, Seq: seq, Accepted: accepted, Call: int64(seq), Return: int64(seq)}
}

func TestFencedRegister(t *testing.T) {
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"rising", []history.Op{write(0, 1, 3, true), write(0, 2, 3, true), write(1, 3, 5, true)}, true},
		{"stale rejected", []history.Op{write(0, 1, 3, true), write(1, 2, 5, true), write(0, 3, 3, false)}, true},
		{"stale accepted", []history.Op{write(0, 1, 3, true), write(1, 2, 5, true), write(0, 3, 3, true)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			if r := FencedRegister(&bb.h); r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
		})
	}
}

func TestLostRenewal(t *testing.T) {
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"held through the guarantee", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			get(1, 50, 51, "a", 1, 1),
			acq(1, "b", 120, 121, 2, 2),
		}, true},
		{"granted to another before the guarantee", []history.Op{
			renew(0, "a", 0, 5, 1, 1),
			acq(1, "b", 50, 51, 2, 2),
		}, false},
		{"shown free before the guarantee", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			get(1, 50, 51, "", 1, 1),
		}, false},
		{"own renewal refused before the guarantee", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			fail(renew(0, "a", 20, 30, 1, 1), history.ErrStale),
		}, false},
		{"released by its holder", []history.Op{
			acq(0, "a", 0, 5, 1, 1),
			info(rel(0, "a", 10, 11, 1, 1)),
			acq(1, "b", 50, 51, 2, 2),
		}, true},
		{"answer concurrent with the acknowledgement", []history.Op{
			acq(0, "a", 0, 50, 1, 1),
			get(1, 40, 60, "", 0, 0),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			if r := LostRenewal(&bb.h); r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
		})
	}
}

func mutex(o history.Op, deadline int64) history.Op {
	o.Workload = history.WorkloadMutex
	o.Lease = "m"
	o.Deadline = deadline
	return o
}

func TestMutualExclusion(t *testing.T) {
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"one after the other", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(rel(0, "a", 40, 45, 1, 1), 0),
			mutex(acq(1, "b", 41, 50, 2, 2), 130),
		}, true},
		{"deadline ends the belief", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(acq(1, "b", 95, 100, 2, 2), 180),
		}, true},
		{"renewal extends the belief", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(renew(0, "a", 60, 65, 1, 1), 150),
			mutex(acq(1, "b", 95, 100, 2, 2), 180),
		}, false},
		{"overlap", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(acq(1, "b", 30, 40, 2, 2), 130),
		}, false},
		{"observed deadline extends the belief", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(history.Op{Process: 0, Kind: history.Hold, Holder: "a", Token: 1, Call: 60, Return: 60}, 150),
			mutex(acq(1, "b", 95, 100, 2, 2), 180),
		}, false},
		{"stale renewal ends the belief", []history.Op{
			mutex(acq(0, "a", 0, 5, 1, 1), 90),
			mutex(fail(renew(0, "a", 20, 25, 1, 1), history.ErrStale), 0),
			mutex(acq(1, "b", 30, 40, 2, 2), 130),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			if r := MutualExclusion(&bb.h); r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
		})
	}
}

func TestAvailability(t *testing.T) {
	bb := newB()
	bb.op(acq(0, "a", 0, 5, 1, 1))
	bb.op(info(renew(0, "a", 10, 1010, 1, 1)))
	bb.op(renew(0, "a", 1100, 1110, 1, 1))
	bb.op(info(renew(0, "a", 2000, 3000, 1, 1)))
	bb.h.Faults = []history.Fault{
		{Kind: "kill-leader", Start: 8 * ms, End: 500 * ms, MajorityConnected: true},
		{Kind: "partition-all", Start: 1900 * ms, End: 3100 * ms, MajorityConnected: false},
	}
	r := Availability(&bb.h, 0.7)
	if r.Valid {
		t.Fatalf("valid with 2 of 3 answered below 0.7: %s", r.Summary)
	}
	if got := r.Stats["availability"].(float64); got < 0.66 || got > 0.67 {
		t.Errorf("availability = %v, want 2/3 (the call without a majority excluded)", got)
	}
	if got := r.Stats["worst_failover_ms"].(float64); got != 1102 {
		t.Errorf("worst failover = %vms, want 1102ms", got)
	}
	if got := r.Stats["longest_write_gap_ms_by_kind"].(map[string]float64); got["kill-leader"] != 1105 || got["partition-all"] != 0 {
		t.Errorf("longest write gap by fault kind = %v, want kill-leader 1105ms and none under partition-all", got)
	}
	if !strings.Contains(r.Summary, "kill-leader") {
		t.Errorf("summary does not name the fault: %s", r.Summary)
	}
}

func TestHistoryRoundTrip(t *testing.T) {
	bb := newB()
	bb.op(acq(0, "a", 0, 5, 1, 1))
	bb.h.Faults = []history.Fault{{Kind: "pause-node", Start: 1, End: 2, Nodes: []string{"n1"}}}
	path := filepath.Join(t.TempDir(), "history.jsonl")
	if err := bb.h.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := history.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Ops) != 1 || got.Ops[0].ResToken != 1 || len(got.Faults) != 1 || got.Meta.MaxDrift != 0.01 {
		t.Fatalf("round trip lost data: %+v", got)
	}
}
