// Package leasing is the leader-side expiry manager of leasekeeper.
//
// Only the Raft leader expires leases. After winning leadership (and a
// Barrier) the node calls Promote; from then on the FSM reports every applied
// change through Held and Ended, and the Manager keeps a min-heap of
// deadlines on the monotonic clock. When a deadline passes, Run proposes an
// Expire through Raft. Expiry is never a local delete: the FSM applies the
// Expire only if the lease is still in the holding and renewal the leader
// saw, and only in a log entry of the term the Manager was promoted for, so
// a renewal that wins the race keeps the lease.
//
// An Expire that was appended to the log is not gone when its proposal
// fails or times out: it may still commit, later in the same term. So a
// holding whose Expire was given up on is "in doubt": Extend refuses it,
// and its next renewal goes through the log, which moves its renew index
// and makes the pending Expire a no-op. A logged renewal, the holding's end,
// or Promote for a new term (whose Barrier settles every earlier entry)
// clears the doubt. docs/design.md gives the whole argument.
//
// On losing leadership the node calls Demote, which stops all deciding at
// once; the results of proposals in flight are ignored.
package leasing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasekeeper/leasekeeper/clock"
)

// ErrAlreadyRunning is returned by a second call to Run: a single loop owns
// the table's timer and proposals, so two loops would propose twice.
var ErrAlreadyRunning = errors.New("leasing: Run already called")

// Key names a lease.
type Key struct{ Namespace, Name string }

// String returns "namespace/name", the form used in logs.
func (k Key) String() string { return k.Namespace + "/" + k.Name }

// Holding is one live holding as the FSM applied it, or, with Delay set,
// one lease in its lock delay.
type Holding struct {
	Key        Key
	Token      uint64        // fencing token of the holding (for a delay: of the expired one)
	RenewIndex uint64        // Raft index of the holding's last acquire/renew
	TTL        time.Duration // lease duration + grace period (for a delay: the lock delay)
	// Delay: the lease is free but in the lock delay that the expiry of
	// the holding of Token began. Its deadline is the delay's end, and
	// the proposer ends the delay (EndDelay) instead of expiring.
	Delay bool
}

// Proposer proposes an Expire command for the given holdings through Raft and
// returns once it is committed and applied (or failed). Implemented by the node.
// For the holdings with Delay set it proposes an EndDelay instead, under the
// same term rule.
//
// term is the one given to Promote. The proposer stamps it on the command,
// and the FSM ignores an Expire that lands in a log entry of another term,
// so a proposal that outlives this leadership can never end a holding that a
// later leadership renewed without the log.
//
// The Manager cancels ctx when the proposal times out or the Manager is
// demoted; Run waits for ProposeExpire to return, so it must honour ctx. The
// holdings slice is the proposer's to keep.
type Proposer interface {
	ProposeExpire(ctx context.Context, term uint64, holdings []Holding) error
}

// never is the latest deadline: a TTL so long that now+TTL would overflow is
// clamped to it. It leaves room for the +1ns of the strict "now > deadline".
const never = time.Duration(math.MaxInt64 - 1)

// Manager decides expiry while this node leads. Held, Ended, Promote and
// Demote may be called from any goroutine; Held and Ended are on the Raft
// apply path, so they only take a mutex and do O(log n) work.
type Manager struct {
	cfg   Config
	clk   clock.Clock
	p     Proposer
	log   hclog.Logger
	met   *metrics
	base  time.Time // deadlines are durations since base, on clk's monotonic reading
	burst float64   // token bucket size, in holdings

	running atomic.Bool
	// wake tells Run that the earliest deadline moved earlier or that
	// leadership changed, so it must re-plan. Buffered 1: signals coalesce.
	wake chan struct{}
	// idleNote is poked each time Run blocks with nothing to do, so tests can
	// tell when Run has caught up without sleeping. Buffered 1, never blocks.
	idleNote chan struct{}

	mu      sync.Mutex
	active  bool
	epoch   uint64 // bumped by Promote and Demote; stamps proposals
	term    uint64 // the leadership term given to Promote
	entries map[Key]*entry
	heap    deadlineHeap
	cancel  context.CancelFunc // of the proposal in flight; nil when none
	tokens  float64            // token bucket level, used when MaxExpiryRate > 0
	filled  time.Duration      // when tokens was last topped up
	idle    bool               // Run is blocked waiting
	armed   time.Duration      // the instant Run's timer fires; -1 when it has none
}

// New returns a demoted Manager. reg may be nil, in which case the metrics
// are kept but not exported. log may be nil to discard logs.
func New(cfg Config, clk clock.Clock, p Proposer, log hclog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if clk == nil {
		return nil, errors.New("leasing: clock must not be nil")
	}
	if p == nil {
		return nil, errors.New("leasing: Proposer must not be nil")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("leasing: registering metrics: %w", err)
	}
	return &Manager{
		cfg: cfg,
		clk: clk,
		p:   p,
		log: log,
		met: met,
		// A tenth of a second of expiries (at least one): a backlog then
		// drains in proposals of up to rate/10 holdings ten times a second,
		// few enough Raft entries and no long stalls between them.
		burst:    math.Max(1, math.Floor(cfg.MaxExpiryRate/10)),
		base:     clk.Now(),
		wake:     make(chan struct{}, 1),
		idleNote: make(chan struct{}, 1),
		entries:  make(map[Key]*entry),
		armed:    -1,
	}, nil
}

// now is the monotonic time since base, the unit of every deadline.
func (m *Manager) now() time.Duration { return m.clk.Since(m.base) }

// signal wakes Run to re-plan. Called with m.mu held.
func (m *Manager) signal() {
	m.idle = false
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Promote makes the manager decide expiry for the leadership term term. It
// is called after that term's Barrier, so no Expire proposed in an earlier
// term can commit any more: every holding gets a full fresh TTL from now (a
// leader change can lengthen a holding, never shorten it), and none is in
// doubt. Held/Ended calls that arrive while Promote runs wait for it and are
// applied after.
//
// With load nil, the holdings are the ones Held and Ended tracked while the
// manager was demoted (see Track): the table is already built, so a new
// leader of a million holdings makes one pass over it instead of building
// it. Otherwise load returns every live holding and the table is rebuilt
// from it. load is called under the manager's lock, so it must not wait for
// anything that a caller of Held or Ended holds (such as an FSM lock held
// while calling Held), or the two deadlock.
func (m *Manager) Promote(term uint64, load func() []Holding) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.promoteLocked(term, load)
}

// promoteLocked is Promote with m.mu held.
func (m *Manager) promoteLocked(term uint64, load func() []Holding) {
	m.newEpoch()
	m.term = term
	if load != nil {
		m.rebuild(load())
	}
	now := m.now()
	m.heap = make(deadlineHeap, 0, len(m.entries))
	for _, e := range m.entries {
		e.deadline = deadline(now, e.h.TTL)
		e.doubt = false
		m.heap = append(m.heap, e)
	}
	m.heap.heapify()
	m.active = true
	m.signal()
	m.met.size.Set(float64(len(m.entries)))
	m.log.Info("promoted: deciding lease expiry", "holdings", len(m.entries), "rebuilt", load != nil)
}

// Track replaces the tracked holdings of a demoted manager with the ones
// load returns, for a node whose FSM was replaced wholesale (a snapshot
// installed); a promoted manager is promoted again with them, in the same
// term. From then on Held and Ended keep the table, deadlines aside, so that
// Promote finds it ready.
//
// Mid-term, an Expire proposed before the table was replaced may still be on
// its way into the log, and its result will be ignored; so every holding of
// a promoted manager starts in doubt, and renews once through the log.
func (m *Manager) Track(load func() []Holding) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active {
		m.promoteLocked(m.term, load)
		for _, e := range m.entries {
			e.doubt = true
		}
		return
	}
	m.rebuild(load())
}

// rebuild replaces the table with hs, without deadlines or heap. m.mu is
// held.
func (m *Manager) rebuild(hs []Holding) {
	m.entries = make(map[Key]*entry, len(hs))
	m.heap = nil
	// One allocation for the whole table.
	slab := make([]entry, len(hs))
	for i, h := range hs {
		if e, ok := m.entries[h.Key]; ok { // a duplicate: the later one wins
			e.h = h
			continue
		}
		slab[i].h = h
		m.entries[h.Key] = &slab[i]
	}
}

// Demote stops all deciding at once: proposals in flight are abandoned
// (their results ignored), no new ones are made until Promote. The holdings
// stay tracked, without deadlines.
func (m *Manager) Demote() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.newEpoch()
	m.heap = nil
	m.active = false
	m.signal()
	m.met.size.Set(0)
	m.log.Info("demoted: stopped deciding lease expiry", "tracked", len(m.entries))
}

// newEpoch makes the results of proposals made before it ignored, and
// cancels the one in flight, since nobody wants its answer. m.mu is held.
func (m *Manager) newEpoch() {
	m.epoch++
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
}

// Held records that a holding began or was renewed (applied by the FSM):
// deadline = now + TTL. A demoted manager only tracks the holding.
func (m *Manager) Held(h Holding) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		if e, ok := m.entries[h.Key]; ok {
			e.h = h
		} else {
			m.entries[h.Key] = &entry{h: h, index: -1}
		}
		return
	}
	d := deadline(m.now(), h.TTL)
	e, ok := m.entries[h.Key]
	switch {
	case !ok:
		e = &entry{h: h, deadline: d}
		m.entries[h.Key] = e
		m.heap.push(e)
		m.met.size.Set(float64(len(m.entries)))
	case e.index < 0:
		// Being proposed: this renewal makes that proposal stale (the FSM
		// will reject it), so the holding goes back into the table.
		e.renewed(h)
		e.deadline = d
		m.heap.push(e)
	default:
		e.renewed(h)
		e.deadline = d
		m.heap.fix(e.index)
	}
	if e.index == 0 {
		// The earliest deadline moved earlier than Run's timer may be
		// armed for. (A later one needs no wake: an early timer re-plans.)
		m.signal()
	}
}

// Delayed records that a lease is in its lock delay (applied by the FSM):
// h names the delay by the token of the holding whose expiry began it, and
// h.TTL is the lock delay. A promoted manager ends it at now + TTL on its
// monotonic clock, as it would expire a holding; Promote gives it a fresh
// full delay, so a leader change can lengthen a delay, never shorten it.
// An event of the same delay (a waiter joining the queue) does not move
// its end. A demoted manager only tracks the delay.
func (m *Manager) Delayed(h Holding) {
	h.Delay, h.RenewIndex = true, 0
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[h.Key]
	if ok && e.h == h {
		return
	}
	if !m.active {
		if ok {
			e.h, e.doubt = h, false
		} else {
			m.entries[h.Key] = &entry{h: h, index: -1}
		}
		return
	}
	d := deadline(m.now(), h.TTL)
	switch {
	case !ok:
		e = &entry{h: h, deadline: d}
		m.entries[h.Key] = e
		m.heap.push(e)
		m.met.size.Set(float64(len(m.entries)))
	case e.index < 0:
		e.h, e.doubt, e.deadline = h, false, d
		m.heap.push(e)
	default:
		e.h, e.doubt, e.deadline = h, false, d
		m.heap.fix(e.index)
	}
	if e.index == 0 {
		m.signal()
	}
}

// Extend restarts the deadline of the holding h (same key, token and renew
// index as the table has) at now + TTL, for a renewal the leader confirmed
// without a log write. It reports false, changing nothing, when the caller
// must renew through the log instead: not promoted, the holding is not the
// one in the table (the table may lag the FSM by an event), its TTL
// differs, its Expire is being proposed, or an Expire of it was given up on
// and may still commit (in both cases only a committed renewal, which moves
// the renew index, can win against it). The caller must have confirmed its
// leadership with a quorum after the renewal arrived; see docs/design.md.
// Config.UnsafeIgnoreDoubt drops the last check (negative control only).
func (m *Manager) Extend(h Holding) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return false
	}
	e, ok := m.entries[h.Key]
	if !ok || e.index < 0 || e.h != h {
		return false
	}
	if e.doubt {
		m.met.doubtful.Inc()
		if !m.cfg.UnsafeIgnoreDoubt {
			return false
		}
	}
	e.deadline = deadline(m.now(), h.TTL)
	m.heap.fix(e.index)
	return true
}

// Ended records that a lease is no longer held (released, expired,
// deleted).
func (m *Manager) Ended(k Key) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[k]
	if !ok {
		return
	}
	delete(m.entries, k)
	if !m.active {
		return
	}
	if e.index >= 0 {
		m.heap.remove(e.index)
	}
	m.met.size.Set(float64(len(m.entries)))
}

// Remaining reports the time left before the leader would expire the holding of k,
// or end its lock delay when k is delayed.
// ok is false when not promoted or k is neither held nor delayed. It is 0 once the deadline
// has passed, while the Expire (or EndDelay) is being proposed.
func (m *Manager) Remaining(k Key) (d time.Duration, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return 0, false
	}
	e, ok := m.entries[k]
	if !ok {
		return 0, false
	}
	return max(0, e.deadline-m.now()), true
}

// Active reports whether the manager is promoted.
func (m *Manager) Active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

// Len is the number of holdings in the table, counting those whose Expire is
// being proposed.
func (m *Manager) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// deadline is now+ttl, clamped so that a huge TTL cannot overflow into the
// past and expire at once.
func deadline(now, ttl time.Duration) time.Duration {
	if ttl > never-now {
		return never
	}
	return now + ttl
}
