package checker

import (
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// delayed is a mutex acquire of lock m whose answer showed lock delay d.
func delayed(p int, holder string, call, ret int64, token uint64, trans int64, d time.Duration) history.Op {
	o := acq(p, holder, call, ret, token, trans)
	o.Workload, o.Lease, o.ResLockDelay = history.WorkloadMutex, "m", d
	return o
}

// TestLockDelayChecker: with a 300 ms lock delay on m and 100 ms leases, a
// holding that was not released (acquired at 0 ms: guaranteed until 99 ms)
// keeps m from everyone until 99 + 297 = 396 ms.
func TestLockDelayChecker(t *testing.T) {
	const d = 300 * time.Millisecond
	hold := func(token uint64, at, deadline int64) history.Op {
		return history.Op{Process: 1, Workload: history.WorkloadMutex, Kind: history.Hold, Lease: "m", Token: token,
			Call: at, Return: at, Deadline: deadline}
	}
	release := func(token uint64, at int64) history.Op {
		o := rel(1, "a", at, at+1, token, 1)
		o.Workload, o.Lease = history.WorkloadMutex, "m"
		return o
	}
	tests := []struct {
		name  string
		ops   []history.Op
		valid bool
	}{
		{"granted after the delay", []history.Op{
			delayed(1, "a", 0, 5, 1, 1, d), delayed(2, "b", 390, 400, 2, 2, d),
		}, true},
		{"granted within the delay", []history.Op{
			delayed(1, "a", 0, 5, 1, 1, d), delayed(2, "b", 150, 160, 2, 2, d),
		}, false},
		{"a renewal moves the bound", []history.Op{
			// The holder's recorded deadline at 200 ms means its holding
			// was guaranteed until 200 + margin: 500+ ms is needed.
			delayed(1, "a", 0, 5, 1, 1, d), hold(1, 100, 200), delayed(2, "b", 420, 430, 2, 2, d),
		}, false},
		{"a later holding also waits", []history.Op{
			// Token 3 is seen first (token 2 unseen until later): it too
			// came after token 1's delay, or the lease was granted early.
			delayed(1, "a", 0, 5, 1, 1, d), delayed(3, "c", 200, 210, 3, 3, d), delayed(2, "b", 500, 510, 2, 2, d),
		}, false},
		{"released: handed on at once", []history.Op{
			delayed(1, "a", 0, 5, 1, 1, d), release(1, 50), delayed(2, "b", 52, 60, 2, 2, d),
		}, true},
		{"release with an unknown outcome counts", []history.Op{
			delayed(1, "a", 0, 5, 1, 1, d),
			func() history.Op {
				o := release(1, 50)
				o.Type, o.ErrClass = history.Info, history.ErrTimeout
				return o
			}(),
			delayed(2, "b", 52, 60, 2, 2, d),
		}, true},
		{"the server dropped the delay (an older member)", []history.Op{
			delayed(1, "a", 0, 5, 1, 1, 0), delayed(2, "b", 150, 160, 2, 2, 0),
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bl := newB()
			bl.h.Meta.Margin = 50 * time.Millisecond
			for _, o := range tt.ops {
				bl.op(o)
			}
			res := LockDelay(&bl.h)
			if res.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v: %s %v", res.Valid, tt.valid, res.Summary, res.Violations)
			}
		})
	}
}
