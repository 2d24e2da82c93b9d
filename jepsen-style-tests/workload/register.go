package workload

import (
	"sync"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Guard decides whether a fenced resource accepts a write carrying token.
// It is called with the resource's lock held, so it needs none of its own.
type Guard interface {
	Admit(token uint64) bool
}

// MonotonicGuard is the correct fencing check, as in the design: accept a
// write only if its token is at least the highest seen.
type MonotonicGuard struct{ highest uint64 }

// Admit accepts token >= the highest token admitted so far.
func (g *MonotonicGuard) Admit(token uint64) bool {
	if token < g.highest {
		return false
	}
	g.highest = token
	return true
}

// AcceptAllGuard is a deliberately broken guard for the negative control:
// it accepts every write, so a stale writer gets through and the
// fenced-register checker must say so. Never use it for anything else.
type AcceptAllGuard struct{}

// Admit accepts everything.
func (AcceptAllGuard) Admit(uint64) bool { return true }

// NewGuard returns the guard that name selects: "monotonic" (the default)
// or "broken" (AcceptAllGuard).
func NewGuard(name string) Guard {
	if name == "broken" {
		return AcceptAllGuard{}
	}
	return &MonotonicGuard{}
}

// Register is a fenced register: the resource that a lock protects, such
// as a storage server. It records every write attempt, in the order it
// applied them, with the guard's verdict.
type Register struct {
	lease string
	rec   *history.Recorder

	mu    sync.Mutex
	guard Guard
	seq   int
	value string
}

// NewRegister returns a register for lock lease, fenced by guard.
func NewRegister(lease string, guard Guard, rec *history.Recorder) *Register {
	return &Register{lease: lease, guard: guard, rec: rec}
}

// Write stores value if the guard admits token, and records the attempt.
// unchecked marks a write made without checking the lock's deadline.
func (r *Register) Write(process int, holder string, token uint64, value string, unchecked bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	ok := r.guard.Admit(token)
	if ok {
		r.value = value
	}
	now := r.rec.Now()
	op := history.Op{
		Process: process, Workload: history.WorkloadMutex, Kind: history.Write,
		Lease: r.lease, Holder: holder, Token: token, Call: now, Return: now,
		Type: history.OK, Seq: r.seq, Accepted: ok, Unchecked: unchecked,
	}
	if !ok {
		op.Type, op.ErrClass = history.Fail, history.ErrRejected
	}
	r.rec.Add(op)
	return ok
}
