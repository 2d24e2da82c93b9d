package transport

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasekeeper/leasekeeper/fsm"
)

// ErrTooManyWatches: the node holds as many watches as it allows, in all or
// for the caller.
var ErrTooManyWatches = errors.New("transport: too many watches")

// Hub keeps the latest events in a window and fans them out to watchers.
// It is an fsm.Listener, so every node serves watches from its own applied
// log; a watch may resume from any revision still in the window.
type Hub struct {
	mu      sync.Mutex
	window  int
	events  []fsm.Event // contiguous revisions, oldest first
	floor   uint64      // every revision <= floor is older than the window
	last    uint64      // the revision of the last event fanned out; 0: none yet
	subs    map[*watcher]struct{}
	bufSize int
	// applied is closed, and replaced by the next one asked for, when the
	// hub is told of applied events or of a restore; nil when nobody
	// waits (see at).
	applied chan struct{}

	// Limits on open watchers: in all, and per owner (the caller's
	// identity; "" for callers that are not told apart). 0: no limit.
	maxWatchers, maxPerOwner int
	owners                   map[string]int
	open                     prometheus.Gauge // the number of watchers; nil: not counted
}

// watcher is one subscription. Its queue grows as events arrive, up to the
// hub's bufSize, so an idle watcher costs a few words, not a full buffer.
type watcher struct {
	match func(*fsm.Lease) bool
	owner string
	buf   int           // the most events queued before it is dropped
	ready chan struct{} // buffered 1: events were queued, or it was closed

	mu    sync.Mutex  // guards what follows
	queue []fsm.Event // queue[head:] are the events not yet taken
	head  int
	done  bool  // closed: no more events after the queue
	err   error // why it was closed: ErrWatchOverflow, ErrCompacted, or nil
}

// NewHub returns a hub that keeps the last window events and lets every
// watcher queue up to bufSize events.
func NewHub(window, bufSize int) *Hub {
	return &Hub{window: window, bufSize: bufSize, subs: make(map[*watcher]struct{}), owners: make(map[string]int)}
}

// setLimits bounds the open watchers: total in all (0: no limit) and
// perOwner for each owner but "" (0: no limit). open, when not nil,
// follows their number.
func (h *Hub) setLimits(total, perOwner int, open prometheus.Gauge) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.maxWatchers, h.maxPerOwner, h.open = total, perOwner, open
	h.count()
}

// count sets the gauge of open watchers. h.mu is held.
func (h *Hub) count() {
	if h.open != nil {
		h.open.Set(float64(len(h.subs)))
	}
}

// Applied implements fsm.Listener.
func (h *Hub) Applied(evs []fsm.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.wakeWaiters()
	for _, ev := range evs {
		if len(h.events) == 0 && h.floor == 0 {
			h.floor = ev.Revision - 1
		}
		h.events = append(h.events, ev)
		h.last = ev.Revision
		for w := range h.subs {
			if w.match != nil && !w.match(ev.Lease) {
				continue
			}
			if !w.push(ev) {
				// A watcher that cannot keep up is dropped rather than
				// allowed to slow the apply loop; it may resume from its
				// last revision.
				h.drop(w, ErrWatchOverflow)
			}
		}
	}
	if over := len(h.events) - h.window; over > h.window/4 {
		h.floor = h.events[over-1].Revision
		h.events = append(h.events[:0:0], h.events[over:]...)
	}
}

// Restored implements fsm.Listener: the table was replaced, so the window
// no longer describes it. Watchers must start again.
func (h *Hub) Restored() {
	h.mu.Lock()
	defer h.mu.Unlock()
	defer h.wakeWaiters()
	h.events = nil
	h.floor = 0
	h.last = 0
	for w := range h.subs {
		h.drop(w, ErrCompacted)
	}
}

// drop ends w with err. h.mu is held.
func (h *Hub) drop(w *watcher, err error) {
	h.forget(w)
	w.close(err)
}

// forget removes w from the hub's books. h.mu is held.
func (h *Hub) forget(w *watcher) {
	delete(h.subs, w)
	h.count()
	if w.owner != "" {
		if h.owners[w.owner]--; h.owners[w.owner] <= 0 {
			delete(h.owners, w.owner)
		}
	}
}

// subscribe registers a watcher for owner and returns the events after
// start that match (none when start is 0). current is the FSM's revision
// when the call began; it tells a compacted start from a new one when the
// window is still empty.
func (h *Hub) subscribe(owner string, start, current uint64, replay bool, match func(*fsm.Lease) bool) (*watcher, []fsm.Event, error) {
	return h.subscribeBuf(owner, start, current, replay, match, h.bufSize)
}

// subscribeBuf is subscribe with a queue of at most buf events instead of
// the hub's default, for watchers of one lease that need only a few.
func (h *Hub) subscribeBuf(owner string, start, current uint64, replay bool, match func(*fsm.Lease) bool, buf int) (*watcher, []fsm.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.maxWatchers > 0 && len(h.subs) >= h.maxWatchers:
		return nil, nil, fmt.Errorf("%w: the node holds %d, its limit", ErrTooManyWatches, len(h.subs))
	case owner != "" && h.maxPerOwner > 0 && h.owners[owner] >= h.maxPerOwner:
		return nil, nil, fmt.Errorf("%w: %q holds %d, the limit for one caller", ErrTooManyWatches, owner, h.owners[owner])
	}
	var backlog []fsm.Event
	if start > 0 || replay {
		switch {
		case len(h.events) == 0 && start < current:
			return nil, nil, compacted(start, current)
		case len(h.events) > 0 && start < h.floor:
			return nil, nil, compacted(start, h.floor)
		}
		for _, ev := range h.events {
			if ev.Revision > start && (match == nil || match(ev.Lease)) {
				backlog = append(backlog, ev)
			}
		}
	}
	w := &watcher{match: match, owner: owner, buf: buf, ready: make(chan struct{}, 1)}
	h.subs[w] = struct{}{}
	h.count()
	if owner != "" {
		h.owners[owner]++
	}
	return w, backlog, nil
}

// revision returns the revision of the last event fanned out (0 when none
// since the hub started or was restored): every event up to it that a
// watcher matches is in the watcher's queue already, or was taken from it.
func (h *Hub) revision() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *Hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[w]; ok {
		h.forget(w)
		w.close(nil)
	}
}

// watchers reports how many watchers are open, for tests and metrics.
func (h *Hub) watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// push queues ev, and reports false when the queue is full.
func (w *watcher) push(ev fsm.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue)-w.head >= w.buf {
		return false
	}
	if w.head > 0 && w.head == len(w.queue) {
		// Everything was taken: start over at the front of the array.
		clear(w.queue)
		w.queue, w.head = w.queue[:0], 0
	}
	w.queue = append(w.queue, ev)
	w.signal()
	return true
}

func (w *watcher) close(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done, w.err = true, err
	w.signal()
}

// signal wakes the taker. w.mu is held.
func (w *watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// take appends up to max queued events to dst. closed is true once the
// queue is empty and the watcher was closed, with err saying why (nil when
// unsubscribed). A taker waits on w.ready between takes.
func (w *watcher) take(dst []fsm.Event, max int) (out []fsm.Event, closed bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := min(max, len(w.queue)-w.head)
	dst = append(dst, w.queue[w.head:w.head+n]...)
	clear(w.queue[w.head : w.head+n]) // let taken leases be collected
	w.head += n
	if w.head == len(w.queue) {
		w.queue, w.head = w.queue[:0], 0
		if cap(w.queue) > 4*w.minCap() {
			w.queue = nil // a burst is over: give its array back
		}
	} else {
		w.signal() // more left for the next take
	}
	return dst, w.done && w.head == len(w.queue), w.err
}

// minCap is the queue capacity a watcher keeps between bursts.
func (w *watcher) minCap() int { return min(w.buf, 64) }

// errNotCaughtUp: the hub has not yet been told of every event up to the
// revision asked about; the FSM applied them a moment ago.
var errNotCaughtUp = errors.New("transport: the watch window is behind the store")

// wakeWaiters tells those waiting in at that the hub changed. h.mu is held.
func (h *Hub) wakeWaiters() {
	if h.applied != nil {
		close(h.applied)
		h.applied = nil
	}
}

// at rewinds cur, the leases that match as the FSM holds them at revision
// curRev, to revision rev (rev <= curRev), by undoing the window's events
// after rev from the newest back: each event puts back the lease as it was
// before it (Event.Prev). It fails with ErrCompacted when the window does
// not reach back to rev, and with errNotCaughtUp when the hub has not yet
// received the events up to curRev; then changed is closed once it has
// been told of more. The result is sorted as FSM.List sorts.
func (h *Hub) at(rev uint64, cur []*fsm.Lease, curRev uint64, match func(*fsm.Lease) bool) (_ []*fsm.Lease, changed <-chan struct{}, _ error) {
	if rev == curRev {
		return cur, nil, nil
	}
	type key struct{ ns, name string }
	state := make(map[key]*fsm.Lease, len(cur))
	for _, l := range cur {
		state[key{l.Namespace, l.Name}] = l
	}
	h.mu.Lock()
	switch {
	case len(h.events) == 0:
		h.mu.Unlock()
		return nil, nil, compacted(rev, curRev)
	case rev < h.floor:
		floor := h.floor
		h.mu.Unlock()
		return nil, nil, compacted(rev, floor)
	case h.last < curRev:
		if h.applied == nil {
			h.applied = make(chan struct{})
		}
		changed := h.applied
		h.mu.Unlock()
		return nil, changed, errNotCaughtUp
	}
	// The window's array is only appended to past its length, and trimmed
	// by copying: the events up to its length now never change, so they
	// are read without the lock, which the apply path needs.
	evs := h.events
	h.mu.Unlock()
	for i := len(evs) - 1; i >= 0 && evs[i].Revision > rev; i-- {
		ev := evs[i]
		if ev.Revision > curRev {
			continue
		}
		k := key{ev.Lease.Namespace, ev.Lease.Name}
		switch {
		case ev.Prev == nil:
			delete(state, k)
		case match == nil || match(ev.Prev):
			state[k] = ev.Prev
		default:
			delete(state, k)
		}
	}
	out := make([]*fsm.Lease, 0, len(state))
	for _, l := range state {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *fsm.Lease) int {
		if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out, nil, nil
}

// compacted is ErrCompacted for a read or watch from rev, older than the
// window, which keeps the events after floor.
func compacted(rev, floor uint64) error {
	return fmt.Errorf("%w: revision %d; the window keeps the events after revision %d", ErrCompacted, rev, floor)
}
