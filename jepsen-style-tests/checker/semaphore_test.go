package checker

import (
	"testing"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// slot makes o an operation of the semaphore workload on slot of a
// semaphore of 2 slots, believed until deadline.
func slot(o history.Op, slot string, deadline int64) history.Op {
	o.Workload = history.WorkloadSemaphore
	o.Lease = slot
	o.Slots = 2
	o.Deadline = deadline
	return o
}

func TestSemaphoreBound(t *testing.T) {
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"two holders on two slots", []history.Op{
			slot(acq(0, "a", 0, 5, 1, 1), "s-0", 90),
			slot(acq(1, "b", 10, 15, 2, 1), "s-1", 90),
		}, true},
		{"a third after a release", []history.Op{
			slot(acq(0, "a", 0, 5, 1, 1), "s-0", 90),
			slot(acq(1, "b", 10, 15, 2, 1), "s-1", 90),
			slot(rel(0, "a", 40, 45, 1, 1), "s-0", 0),
			slot(acq(2, "c", 20, 46, 3, 2), "s-0", 130),
		}, true},
		{"a third while two hold", []history.Op{
			slot(acq(0, "a", 0, 5, 1, 1), "s-0", 90),
			slot(acq(1, "b", 10, 15, 2, 1), "s-1", 90),
			slot(acq(2, "c", 20, 30, 3, 1), "s-2", 130),
		}, false},
		{"a third after a deadline", []history.Op{
			slot(acq(0, "a", 0, 5, 1, 1), "s-0", 90),
			slot(acq(1, "b", 10, 15, 2, 1), "s-1", 90),
			slot(acq(2, "c", 80, 95, 3, 2), "s-0", 180),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bb := newB()
			for _, o := range tt.ops {
				bb.op(o)
			}
			r := SemaphoreBound(&bb.h)
			if r.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", r.Valid, tt.valid, r.Summary, r.Violations)
			}
		})
	}
}

func TestSemaphoreOf(t *testing.T) {
	for lease, want := range map[string]string{"s-0": "s", "a-b-12": "a-b", "s": "", "s-x": "", "-1": ""} {
		got, ok := semaphoreOf(lease)
		if got != want || ok != (want != "") {
			t.Errorf("semaphoreOf(%q) = %q, %v; want %q", lease, got, ok, want)
		}
	}
}
