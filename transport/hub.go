package transport

import (
	"sync"

	"github.com/leasekeeper/leasekeeper/fsm"
)

// Hub keeps the latest events in a window and fans them out to watchers.
// It is an fsm.Listener, so every node serves watches from its own applied
// log; a watch may resume from any revision still in the window.
type Hub struct {
	mu      sync.Mutex
	window  int
	events  []fsm.Event // contiguous revisions, oldest first
	floor   uint64      // every revision <= floor is older than the window
	subs    map[*watcher]struct{}
	bufSize int
}

type watcher struct {
	match func(*fsm.Lease) bool
	ch    chan fsm.Event
	err   error // why ch was closed: ErrWatchOverflow or ErrCompacted
}

// NewHub returns a hub that keeps the last window events and gives every
// watcher a buffer of bufSize events.
func NewHub(window, bufSize int) *Hub {
	return &Hub{window: window, bufSize: bufSize, subs: make(map[*watcher]struct{})}
}

// Applied implements fsm.Listener.
func (h *Hub) Applied(evs []fsm.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		if len(h.events) == 0 && h.floor == 0 {
			h.floor = ev.Revision - 1
		}
		h.events = append(h.events, ev)
		for w := range h.subs {
			if w.match != nil && !w.match(ev.Lease) {
				continue
			}
			select {
			case w.ch <- ev:
			default:
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
	h.events = nil
	h.floor = 0
	for w := range h.subs {
		h.drop(w, ErrCompacted)
	}
}

func (h *Hub) drop(w *watcher, err error) {
	delete(h.subs, w)
	w.err = err
	close(w.ch)
}

// subscribe registers a watcher and returns the events after start that
// match (none when start is 0). current is the FSM's revision when the
// call began; it tells a compacted start from a new one when the window is
// still empty.
func (h *Hub) subscribe(start, current uint64, replay bool, match func(*fsm.Lease) bool) (*watcher, []fsm.Event, error) {
	return h.subscribeBuf(start, current, replay, match, h.bufSize)
}

// subscribeBuf is subscribe with a queue of buf events instead of the
// hub's default, for watchers of one lease that need only a few.
func (h *Hub) subscribeBuf(start, current uint64, replay bool, match func(*fsm.Lease) bool, buf int) (*watcher, []fsm.Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var backlog []fsm.Event
	if start > 0 || replay {
		switch {
		case len(h.events) == 0 && start < current:
			return nil, nil, ErrCompacted
		case len(h.events) > 0 && start < h.floor:
			return nil, nil, ErrCompacted
		}
		for _, ev := range h.events {
			if ev.Revision > start && (match == nil || match(ev.Lease)) {
				backlog = append(backlog, ev)
			}
		}
	}
	w := &watcher{match: match, ch: make(chan fsm.Event, buf)}
	h.subs[w] = struct{}{}
	return w, backlog, nil
}

func (h *Hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[w]; ok {
		delete(h.subs, w)
		close(w.ch)
	}
}

// watcherErr reads w.err after w.ch was closed.
func (h *Hub) watcherErr(w *watcher) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return w.err
}
