package leasing

import "time"

// entry is one row of the deadline table. The table holds pointers so that
// moving an entry inside the heap only rewrites its index, never the map:
// Held and Ended touch the map once per call at most.
type entry struct {
	h        Holding
	deadline time.Duration // offset from Manager.base on the monotonic clock
	// index is the entry's position in the heap, or -1 while Run has popped
	// it into a proposal (the "proposing" state).
	index int
	// doubt: an Expire of this very holding and renewal was proposed in the
	// current term and its outcome is unknown (failed or timed out), so it
	// may still commit. Such a holding renews only through the log.
	doubt bool
}

// renewed records an applied event of the entry's holding. Only an event
// that moved the token or the renew index voids a pending Expire, and so
// the doubt.
func (e *entry) renewed(h Holding) {
	if h.Token != e.h.Token || h.RenewIndex != e.h.RenewIndex {
		e.doubt = false
	}
	e.h = h
}

// deadlineHeap is a min-heap of entries ordered by deadline. It is written out
// by hand instead of using container/heap because heap.Push takes an `any`,
// which costs an allocation and an interface call on the Held path.
type deadlineHeap []*entry

func (h deadlineHeap) less(i, j int) bool { return h[i].deadline < h[j].deadline }

func (h deadlineHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

// push adds e and sets its index.
func (h *deadlineHeap) push(e *entry) {
	e.index = len(*h)
	*h = append(*h, e)
	h.up(e.index)
}

// pop removes the earliest entry and marks it as out of the heap.
func (h *deadlineHeap) pop() *entry {
	return h.remove(0)
}

// remove takes out the entry at i and marks it as out of the heap.
func (h *deadlineHeap) remove(i int) *entry {
	old := *h
	n := len(old) - 1
	if i != n {
		old.swap(i, n)
	}
	e := old[n]
	old[n] = nil // let a released entry be collected
	*h = old[:n]
	if i != n && !h.down(i) {
		h.up(i)
	}
	e.index = -1
	return e
}

// fix restores the order after the deadline of the entry at i changed.
func (h deadlineHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// heapify orders a heap built by appending, in O(n); Promote uses it to load
// a whole table at once.
func (h deadlineHeap) heapify() {
	for i := range h {
		h[i].index = i
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h deadlineHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

// down sinks the entry at i0 and reports whether it moved.
func (h deadlineHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(r, l) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// countDue counts entries with a deadline before now, stopping at limit. It
// visits only due entries (children of a not-due entry are not due either),
// so it costs O(limit) rather than O(n).
func (h deadlineHeap) countDue(now time.Duration, limit int) int {
	return h.countFrom(0, now, limit)
}

func (h deadlineHeap) countFrom(i int, now time.Duration, limit int) int {
	if i >= len(h) || limit <= 0 || h[i].deadline >= now {
		return 0
	}
	n := 1
	n += h.countFrom(2*i+1, now, limit-n)
	n += h.countFrom(2*i+2, now, limit-n)
	return n
}
