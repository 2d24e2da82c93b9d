package node

import (
	"context"
	"sync"
	"time"

	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// reapInterval is how often the leader looks for waiters that stopped
// calling.
const reapInterval = time.Second

type waiterKey struct {
	namespace, name, holder string
	semaphore               bool // name is a semaphore's
}

// waiters remembers, on the leader, when each queued waiter last called, so
// that a waiter that went away loses its place instead of being handed a
// lease it will never use. Like holdings, every waiter gets a fresh full
// period when a node starts leading.
type waiters struct {
	mu   sync.Mutex
	seen map[waiterKey]time.Time
}

// SawWaiter records that a queued waiter called (an Acquire with wait);
// with semaphore, a waiter of the semaphore name.
func (n *Node) SawWaiter(namespace, name, holder string, semaphore bool) {
	n.waiters.mu.Lock()
	defer n.waiters.mu.Unlock()
	n.waiters.seen[waiterKey{namespace, name, holder, semaphore}] = n.clk.Now()
}

// reapWaiters runs on the leader: it proposes a Dequeue for every waiter
// not seen for longer than its duration plus grace.
func (n *Node) reapWaiters(ctx context.Context) {
	if !n.IsLeader() || !n.mgr.Active() {
		n.waiters.mu.Lock()
		clear(n.waiters.seen)
		n.waiters.mu.Unlock()
		return
	}
	now := n.clk.Now()
	var stale []fsm.QueuedWaiter
	present := map[waiterKey]bool{}
	n.waiters.mu.Lock()
	for _, w := range n.fsm.Waiters() {
		k := waiterKey{w.Namespace, w.Name, w.Holder, w.Semaphore}
		present[k] = true
		last, ok := n.waiters.seen[k]
		if !ok {
			n.waiters.seen[k] = now // fresh on a new leader, or queued by an older one
			continue
		}
		if now.Sub(last) > w.Duration+w.Grace {
			stale = append(stale, w)
		}
	}
	for k := range n.waiters.seen {
		if !present[k] {
			delete(n.waiters.seen, k)
		}
	}
	n.waiters.mu.Unlock()
	for _, w := range stale {
		if _, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Dequeue{Dequeue: &fsmpb.Dequeue{
			Namespace: w.Namespace, Name: w.Name, Holder: w.Holder, Semaphore: w.Semaphore,
		}}}); err != nil {
			n.log.Warn("dropping a waiter that stopped calling", "lease", w.Namespace+"/"+w.Name, "holder", w.Holder, "error", err)
			return
		}
		n.log.Info("dropped a waiter that stopped calling", "lease", w.Namespace+"/"+w.Name, "holder", w.Holder)
	}
}
