package fsm

import (
	"time"
	"unique"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// HistoryLimit is how many holdings a lease remembers, newest first.
const HistoryLimit = 10

// Lease is one lease as the FSM stores it. A stored *Lease is never changed:
// every write stores a new copy, so readers may keep the pointer without a
// lock and snapshots need only copy pointers.
type Lease struct {
	Namespace string
	Name      string
	// Holder is empty when the lease is free.
	Holder   string
	Duration time.Duration
	Grace    time.Duration
	// Wall-clock stamps (Unix nanoseconds) from the leader that proposed the
	// write; for people, never for validity.
	AcquireTime int64
	RenewTime   int64
	CreateTime  int64
	Transitions int64
	// Token is the fencing token of the current holding, or of the last one
	// when the lease is free.
	Token           uint64
	Labels          map[string]string
	ResourceVersion uint64
	CreateRevision  uint64
	// RenewIndex is the Raft index of the entry that began or last renewed
	// the holding. An Expire names it, so a renewal that won the race keeps
	// the lease.
	RenewIndex uint64
	// History holds the latest holdings, newest first, at most HistoryLimit.
	History []Holding
	// Object is the representation a whole-object writer (the Kubernetes
	// Lease API) stored, as it gave it; nil for leases written otherwise.
	Object []byte
	// LockDelay is the lock delay its acquirer asked for: after the
	// holding ends by expiry (not a release), the lease stays delayed this
	// long. Kept while the lease is free, as Token is.
	LockDelay time.Duration
	// Delayed: the lease is free but in the lock delay that the expiry of
	// the holding of Token began. Nobody is granted it, not a waiter nor a
	// new acquirer, until the leader ends the delay (EndDelay).
	Delayed bool
	// Waiters queue for the lease, first in line first. They are never
	// empty while the lease is free and not delayed: a holding that ends
	// goes to the first, and so does a lock delay that ends.
	//
	// Versions of a lease share the queue's array: a new waiter is
	// appended in place, and the first leaves by reslicing. That is safe
	// because a new version is only ever made from the stored one, and a
	// queue is shortened only at its front or by copying, so an append
	// writes only past the end of every older version that readers hold.
	Waiters []Waiter
}

// RecordLabel, set to "true" on a lease, makes it a record, as a
// Kubernetes Lease is: the leader never expires its holdings, so its
// holder stays until a write, a release or a delete ends it. It needs
// command version 3 (see CommandVersion).
const RecordLabel = "leasekeeper.io/record"

// IsRecord reports whether labels make a lease a record.
func IsRecord(labels map[string]string) bool { return labels[RecordLabel] == "true" }

// Record reports whether l is a record: the leader never expires it.
func (l *Lease) Record() bool { return IsRecord(l.Labels) }

// Waiter is a holder queued for a lease, with the terms it asked for.
type Waiter struct {
	Holder   string
	Duration time.Duration
	Grace    time.Duration
	Labels   map[string]string
	// LockDelay is the lock delay the waiter asked for, the lease's once
	// it is handed the lease.
	LockDelay time.Duration
	// Slots, for a semaphore's waiter, is the semaphore's size: it takes
	// any of the slots name-0 … name-(Slots-1). 0 for a lease's waiter.
	Slots int
}

// waiterRecord and waiterFromRecord convert a waiter for snapshots.
func waiterRecord(w Waiter) *fsmpb.WaiterRecord {
	return &fsmpb.WaiterRecord{
		Holder: w.Holder, DurationNs: int64(w.Duration), GraceNs: int64(w.Grace), Labels: w.Labels,
		LockDelayNs: int64(w.LockDelay), Slots: uint32(w.Slots),
	}
}

func waiterFromRecord(w *fsmpb.WaiterRecord) Waiter {
	return Waiter{
		Holder: internHolder(w.Holder), Duration: time.Duration(w.DurationNs), Grace: time.Duration(w.GraceNs), Labels: w.Labels,
		LockDelay: time.Duration(w.LockDelayNs), Slots: int(w.Slots),
	}
}

// WaitingPosition returns the place (1 = next) of holder in the queue, or
// 0 when it is not waiting.
func (l *Lease) WaitingPosition(holder string) int { return l.waiting(holder) }

// waiting returns the position (1 = next) of holder in the queue, or 0.
func (l *Lease) waiting(holder string) int {
	for i, w := range l.Waiters {
		if w.Holder == holder {
			return i + 1
		}
	}
	return 0
}

// withoutWaiter returns the queue without holder (a new slice).
func (l *Lease) withoutWaiter(holder string) []Waiter {
	out := make([]Waiter, 0, len(l.Waiters))
	for _, w := range l.Waiters {
		if w.Holder != holder {
			out = append(out, w)
		}
	}
	return out
}

// Holding is one past or present holding.
type Holding struct {
	Holder    string
	Token     uint64
	Start     int64
	End       int64
	EndReason string
}

// Why a holding ended.
const (
	EndReleased = "released"
	EndExpired  = "expired"
	EndDeleted  = "deleted"
	// EndReplaced: a whole-object write named another holder.
	EndReplaced = "replaced"
)

// Key returns the table key of the lease.
func (l *Lease) Key() string { return Key(l.Namespace, l.Name) }

// Held reports whether someone holds the lease.
func (l *Lease) Held() bool { return l.Holder != "" }

// TTL is how long a holding lasts without renewal before the leader expires
// it: duration plus grace.
func (l *Lease) TTL() time.Duration { return l.Duration + l.Grace }

// Key joins namespace and name. The namespace is a DNS-1123 label and the
// name a DNS-1123 subdomain; neither can contain '/', so the key is
// unambiguous.
func Key(namespace, name string) string { return namespace + "/" + name }

// internHolder returns holder as a string shared with the other leases of
// the same holder: one client often holds many leases, and every past
// holding names its holder too.
func internHolder(holder string) string {
	if holder == "" {
		return ""
	}
	return unique.Make(holder).Value()
}

func (l *Lease) clone() *Lease {
	c := *l
	return &c
}

// beginHolding records a new holding at the front of the history.
func (l *Lease) beginHolding(now int64) {
	h := make([]Holding, 0, min(len(l.History)+1, HistoryLimit))
	h = append(h, Holding{Holder: l.Holder, Token: l.Token, Start: now})
	for _, old := range l.History {
		if len(h) == HistoryLimit {
			break
		}
		h = append(h, old)
	}
	l.History = h
}

// endHolding closes the current holding in the history.
func (l *Lease) endHolding(now int64, reason string) {
	if len(l.History) == 0 || l.History[0].Token != l.Token || l.History[0].EndReason != "" {
		return
	}
	h := make([]Holding, len(l.History))
	copy(h, l.History)
	h[0].End = now
	h[0].EndReason = reason
	l.History = h
}

func (l *Lease) toRecord() *fsmpb.LeaseRecord {
	r := &fsmpb.LeaseRecord{
		Namespace:       l.Namespace,
		Name:            l.Name,
		Holder:          l.Holder,
		DurationNs:      int64(l.Duration),
		GraceNs:         int64(l.Grace),
		AcquireUnixNano: l.AcquireTime,
		RenewUnixNano:   l.RenewTime,
		CreateUnixNano:  l.CreateTime,
		Transitions:     l.Transitions,
		Token:           l.Token,
		Labels:          l.Labels,
		ResourceVersion: l.ResourceVersion,
		CreateRevision:  l.CreateRevision,
		RenewIndex:      l.RenewIndex,
		Object:          l.Object,
		LockDelayNs:     int64(l.LockDelay),
		Delayed:         l.Delayed,
	}
	for _, w := range l.Waiters {
		r.Waiters = append(r.Waiters, waiterRecord(w))
	}
	for _, h := range l.History {
		r.History = append(r.History, &fsmpb.HoldingRecord{
			Holder: h.Holder, Token: h.Token, StartUnixNano: h.Start, EndUnixNano: h.End, EndReason: h.EndReason,
		})
	}
	return r
}

func leaseFromRecord(r *fsmpb.LeaseRecord) *Lease {
	l := &Lease{
		Namespace:       r.Namespace,
		Name:            r.Name,
		Holder:          internHolder(r.Holder),
		Duration:        time.Duration(r.DurationNs),
		Grace:           time.Duration(r.GraceNs),
		AcquireTime:     r.AcquireUnixNano,
		RenewTime:       r.RenewUnixNano,
		CreateTime:      r.CreateUnixNano,
		Transitions:     r.Transitions,
		Token:           r.Token,
		Labels:          r.Labels,
		ResourceVersion: r.ResourceVersion,
		CreateRevision:  r.CreateRevision,
		RenewIndex:      r.RenewIndex,
		Object:          r.Object,
		LockDelay:       time.Duration(r.LockDelayNs),
		Delayed:         r.Delayed,
	}
	if len(r.Waiters) > 0 {
		l.Waiters = make([]Waiter, len(r.Waiters))
		for i, w := range r.Waiters {
			l.Waiters[i] = waiterFromRecord(w)
		}
	}
	if len(r.History) > 0 {
		l.History = make([]Holding, len(r.History))
		for i, h := range r.History {
			l.History[i] = Holding{
				Holder: internHolder(h.Holder), Token: h.Token, Start: h.StartUnixNano, End: h.EndUnixNano,
				EndReason: endReason(h.EndReason),
			}
		}
	}
	return l
}

// endReason returns the package's constant equal to reason, so restored
// histories do not keep a copy of it per holding.
func endReason(reason string) string {
	for _, c := range [...]string{EndReleased, EndExpired, EndDeleted, EndReplaced} {
		if reason == c {
			return c
		}
	}
	return reason
}
