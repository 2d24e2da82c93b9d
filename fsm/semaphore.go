package fsm

import (
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// A semaphore of n slots is the n leases name-0 … name-(n-1), ordinary
// leases each with its own holdings and fencing tokens, and one queue of
// waiters that the FSM keeps for the semaphore (table.sems). The queue is
// what makes waiting cheap and fair: a waiter is queued once, and the
// first slot to be freed (released, expired, its lock delay ended,
// deleted) goes to the first waiter in line in the same entry that freed
// it, as a lease's own queue does (ended). The queue is changed only by
// semaphore commands (Acquire.slots, Dequeue.semaphore: command version
// 4) and by the ends of slot holdings, which every FSM of that version
// applies alike.

// SemaphoreLabel marks a semaphore's slot leases; its value is the
// semaphore's name. The FSM sets it on every slot it grants, and finds a
// freed slot's semaphore by it.
const SemaphoreLabel = "leasekeeper.io/semaphore"

// MaxSlots is the most slots a semaphore acquire may name: every acquire
// looks at each slot.
const MaxSlots = 256

// SlotName returns the lease name of slot i of the semaphore name.
func SlotName(name string, i int) string { return name + "-" + strconv.Itoa(i) }

// slotIndex returns i when lease is slot i of the semaphore name, else -1.
func slotIndex(name, lease string) int {
	rest, ok := strings.CutPrefix(lease, name+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 || i >= MaxSlots || strconv.Itoa(i) != rest {
		return -1
	}
	return i
}

// slotFree reports whether l, a slot lease or nil, may be granted now: it
// does not exist, or is free, out of its lock delay and with no waiters of
// its own.
func slotFree(l *Lease) bool {
	return l == nil || (l.Holder == "" && !l.Delayed && len(l.Waiters) == 0)
}

// semPosition returns the place (1 = next) of holder in the queue of the
// semaphore k, or 0.
func (t *table) semPosition(k leaseKey, holder string) int {
	for i, w := range t.sems[k] {
		if w.Holder == holder {
			return i + 1
		}
	}
	return 0
}

// setSem stores q as the queue of k. Like Lease.Waiters, a queue grows by
// appending in place and shrinks at its front or by copying, so a copy of
// the slice (a snapshot) keeps seeing what it saw.
func (t *table) setSem(k leaseKey, q []Waiter) {
	if len(q) == 0 {
		delete(t.sems, k)
		return
	}
	t.sems[k] = q
}

// withoutWaiterAt returns q without its i-th waiter, as a new slice: the
// old one may be shared with a snapshot (see setSem).
func withoutWaiterAt(q []Waiter, i int) []Waiter {
	rest := make([]Waiter, 0, len(q)-1)
	return append(append(rest, q[:i]...), q[i+1:]...)
}

// slotCommand is the Acquire of slot i that gives it to w.
func slotCommand(namespace, name string, i int, w Waiter) *fsmpb.Acquire {
	labels := maps.Clone(w.Labels)
	if labels == nil {
		labels = make(map[string]string, 1)
	}
	labels[SemaphoreLabel] = name
	return &fsmpb.Acquire{
		Namespace: namespace, Name: SlotName(name, i), Holder: w.Holder,
		DurationNs: int64(w.Duration), GraceNs: int64(w.Grace), Labels: labels, LockDelayNs: int64(w.LockDelay),
	}
}

// fillSlots hands free slots of the semaphore namespace/name to its
// waiters, first in line first: each free slot, lowest first, goes to the
// first waiter whose semaphore has that slot. It returns the holders it
// granted.
func (f *FSM) fillSlots(namespace, name string, index uint64, now int64) []string {
	k := leaseKey{namespace, name}
	var granted []string
	for len(f.leases.sems[k]) > 0 {
		q := f.leases.sems[k]
		most := 0
		for _, w := range q {
			most = max(most, w.Slots)
		}
		slot, who := -1, -1
		for i := 0; i < most && who < 0; i++ {
			if !slotFree(f.leases.get(namespace, SlotName(name, i))) {
				continue
			}
			for j, w := range q {
				if w.Slots > i {
					slot, who = i, j
					break
				}
			}
		}
		if who < 0 {
			return granted
		}
		w := q[who]
		if who == 0 {
			f.leases.setSem(k, q[1:])
		} else {
			f.leases.setSem(k, withoutWaiterAt(q, who))
		}
		f.acquire(slotCommand(namespace, name, slot, w), index, now)
		granted = append(granted, w.Holder)
	}
	return granted
}

// slotFreed hands l, a lease that was just freed or deleted, to its
// semaphore's first waiter when l is a slot of a semaphore with waiters.
func (f *FSM) slotFreed(l *Lease, index uint64, now int64) {
	sem := l.Labels[SemaphoreLabel]
	if sem == "" || len(f.leases.sems[leaseKey{l.Namespace, sem}]) == 0 || slotIndex(sem, l.Name) < 0 {
		return
	}
	f.fillSlots(l.Namespace, sem, index, now)
}

// acquireSlot is a semaphore's Acquire (a.Slots > 0).
func (f *FSM) acquireSlot(a *fsmpb.Acquire, index uint64, now int64) *Result {
	n := int(a.Slots)
	if a.Name == "" || a.Holder == "" || n > MaxSlots {
		return &Result{Err: fmt.Errorf("%w: a semaphore acquire needs a name, a holder and 1 to %d slots", ErrBadCommand, MaxSlots)}
	}
	ns, name := a.Namespace, a.Name
	k := leaseKey{ns, name}
	// Slots already free go to those in line before the caller.
	granted := f.fillSlots(ns, name, index, now)
	held := -1
	for i := 0; i < n && held < 0; i++ {
		if l := f.leases.get(ns, SlotName(name, i)); l != nil && l.Holder == a.Holder {
			held = i
		}
	}
	w := Waiter{
		Holder: a.Holder, Duration: time.Duration(a.DurationNs), Grace: time.Duration(a.GraceNs),
		Labels: a.Labels, LockDelay: time.Duration(a.LockDelayNs), Slots: n,
	}
	if held >= 0 {
		l := f.leases.get(ns, SlotName(name, held))
		for _, h := range granted {
			if h == a.Holder {
				// Its turn came in this very entry.
				return &Result{Lease: l, Acquired: true}
			}
		}
		// A holder asking again renews its slot, as with a lease.
		return f.acquire(slotCommand(ns, name, held, w), index, now)
	}
	if pos := f.leases.semPosition(k, a.Holder); pos > 0 {
		return &Result{Lease: f.someSlot(ns, name, n), Queued: true, Position: pos}
	}
	for i := 0; i < n; i++ {
		if slotFree(f.leases.get(ns, SlotName(name, i))) {
			return f.acquire(slotCommand(ns, name, i, w), index, now)
		}
	}
	if !a.Wait {
		return &Result{Lease: f.someSlot(ns, name, n)}
	}
	q := f.leases.sems[k]
	if a.MaxWaiters > 0 && len(q) >= int(a.MaxWaiters) {
		return &Result{Lease: f.someSlot(ns, name, n), Err: fmt.Errorf("%w: %d waiters on semaphore %s/%s", ErrQueueFull, len(q), ns, name)}
	}
	w.Holder = internHolder(w.Holder)
	f.leases.setSem(k, append(q, w))
	return &Result{Lease: f.someSlot(ns, name, n), Queued: true, Position: len(q) + 1}
}

// someSlot is the slot a refused or queued semaphore acquire reports: the
// one whose holding was renewed longest ago (the likeliest to end first).
// Every slot exists when none is free.
func (f *FSM) someSlot(namespace, name string, n int) *Lease {
	var out *Lease
	for i := 0; i < n; i++ {
		l := f.leases.get(namespace, SlotName(name, i))
		if l != nil && (out == nil || l.RenewTime < out.RenewTime) {
			out = l
		}
	}
	return out
}

// dequeueSlot takes a waiter out of a semaphore's queue.
func (f *FSM) dequeueSlot(d *fsmpb.Dequeue) *Result {
	k := leaseKey{d.Namespace, d.Name}
	pos := f.leases.semPosition(k, d.Holder)
	if pos == 0 {
		return &Result{}
	}
	q := f.leases.sems[k]
	f.leases.setSem(k, withoutWaiterAt(q, pos-1))
	return &Result{}
}

// SemaphoreWait reports, for a long poll of a semaphore's waiter, the
// place of holder in the queue of namespace/name (1 = next; 0 when it is
// not queued), whether one of the first slots is free to be handed out
// now, and the slot a queued answer reports (nil when some slot does not
// exist).
func (f *FSM) SemaphoreWait(namespace, name, holder string, slots int) (position int, slotFreeNow bool, slot *Lease) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	slots = min(slots, MaxSlots)
	for i := 0; i < slots; i++ {
		if slotFree(f.leases.get(namespace, SlotName(name, i))) {
			slotFreeNow = true
			break
		}
	}
	return f.leases.semPosition(leaseKey{namespace, name}, holder), slotFreeNow, f.someSlot(namespace, name, slots)
}

// SlotOf returns i when lease is slot i of the semaphore name, else -1.
func SlotOf(name, lease string) int { return slotIndex(name, lease) }

// SemaphoreQueueLen returns how many wait in the queue of the semaphore
// namespace/name.
func (f *FSM) SemaphoreQueueLen(namespace, name string) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.leases.sems[leaseKey{namespace, name}])
}
