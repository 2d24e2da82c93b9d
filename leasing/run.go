package leasing

import (
	"context"
	"math"
	"time"

	"github.com/leasekeeper/leasekeeper/clock"
)

// batch is one Expire proposal: the popped entries (to settle after the
// result) and the holdings as they were when popped (what the FSM checks).
type batch struct {
	epoch    uint64
	term     uint64
	entries  []*entry
	holdings []Holding
}

// Run is the expiry loop; it returns when ctx is cancelled. Exactly one Run per Manager.
// It returns nil after ctx is cancelled, or ErrAlreadyRunning if Run was
// called before.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	m.mu.Lock()
	m.tokens, m.filled = m.burst, m.now()
	m.mu.Unlock()

	var b batch
	for ctx.Err() == nil {
		m.mu.Lock()
		m.idle = false
		// A pending wake was sent before this plan, which sees its cause.
		select {
		case <-m.wake:
		default:
		}
		now := m.now()
		n, wait := m.plan(now)
		if n > 0 {
			pctx, cancel := m.pop(ctx, now, n, &b)
			m.mu.Unlock()
			m.propose(pctx, cancel, &b)
			continue
		}
		// A fresh timer per wait keeps stale fires out; the loop is idle
		// then, so the allocation does not matter. It is armed before the
		// lock is released, so that armed is when it really fires.
		var t clock.Timer
		m.idle, m.armed = true, -1
		if wait >= 0 {
			// Armed at an instant, not after a duration: the clock may
			// have moved since now was read.
			t = m.clk.NewTimerAt(m.base.Add(now + wait))
			m.armed = now + wait
		}
		m.mu.Unlock()
		select {
		case m.idleNote <- struct{}{}:
		default:
		}
		m.sleep(ctx, t)
	}
	return nil
}

// sleep blocks until t fires (when not nil), a wake, or ctx.
func (m *Manager) sleep(ctx context.Context, t clock.Timer) {
	var fired <-chan time.Time
	if t != nil {
		defer t.Stop()
		fired = t.C()
	}
	select {
	case <-ctx.Done():
	case <-m.wake:
	case <-fired:
	}
}

// plan decides, with m.mu held, what Run does next: pop n > 0 due holdings,
// or wait for a wake and, when wait >= 0, at most wait.
func (m *Manager) plan(now time.Duration) (n int, wait time.Duration) {
	if !m.active || len(m.heap) == 0 {
		return 0, -1
	}
	if top := m.heap[0].deadline; top >= now {
		// Expired means now - start > TTL (strictly), as the design says,
		// so the earliest moment to expire is 1ns after the deadline.
		return 0, top - now + 1
	}
	if m.cfg.MaxExpiryRate == 0 {
		return m.cfg.ExpiryBatchSize, 0
	}
	rate := m.cfg.MaxExpiryRate
	m.tokens = math.Min(m.burst, m.tokens+rate*(now-m.filled).Seconds())
	m.filled = now
	// Wait for tokens for a full batch (bounded by the bucket) rather than
	// proposing as soon as one token drips in: that would turn a backlog
	// into a flood of one-holding Raft entries.
	want := m.heap.countDue(now, min(m.cfg.ExpiryBatchSize, int(m.burst)))
	const slack = 1e-9 // float rounding must not cost another 1ns wait
	if short := float64(want) - m.tokens; short > slack {
		return 0, time.Duration(math.Ceil(short / rate * float64(time.Second)))
	}
	m.tokens = math.Max(0, m.tokens-float64(want))
	return want, 0
}

// pop moves up to n due holdings into b, in deadline order, and returns the
// proposal's context, which Demote and Promote cancel. Called with m.mu held.
func (m *Manager) pop(ctx context.Context, now time.Duration, n int, b *batch) (context.Context, context.CancelFunc) {
	b.epoch, b.term = m.epoch, m.term
	b.entries = b.entries[:0]
	// A fresh slice: the Proposer may keep it.
	b.holdings = make([]Holding, 0, min(n, len(m.heap)))
	for len(b.entries) < n && len(m.heap) > 0 && m.heap[0].deadline < now {
		e := m.heap.pop() // index -1: proposing
		b.entries = append(b.entries, e)
		b.holdings = append(b.holdings, e.h)
		m.met.lateness.Observe((now - e.deadline).Seconds())
	}
	m.met.proposed.Add(float64(len(b.holdings)))
	first := b.holdings[0]
	m.log.Info("proposing lease expiry", "count", len(b.holdings),
		"first", first.Key.String(), "token", first.Token)
	pctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	return pctx, cancel
}

// propose runs one Expire proposal outside the lock, bounded by
// ProposeTimeout on the manager's clock (context.WithTimeout would use the
// real clock), then settles its entries.
func (m *Manager) propose(ctx context.Context, cancel context.CancelFunc, b *batch) {
	defer cancel()
	t := m.clk.NewTimer(m.cfg.ProposeTimeout)
	defer t.Stop()
	done := make(chan error, 1)
	go func() { done <- m.p.ProposeExpire(ctx, b.term, b.holdings) }()
	var err error
	select {
	case err = <-done:
	case <-t.C():
		cancel()
		err = <-done
	}
	m.settle(b, err)
}

// settle applies a proposal's result to the entries it popped.
func (m *Manager) settle(b *batch, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer clear(b.entries) // do not keep popped entries alive until the next batch
	if err == nil {
		m.met.ok.Inc()
	} else {
		m.met.failed.Inc()
	}
	if b.epoch != m.epoch {
		// Demoted (or promoted again) meanwhile: the table was rebuilt and
		// this proposal's cancel already called; its result means nothing.
		m.log.Debug("ignoring expiry result from an earlier term", "count", len(b.entries), "error", err)
		return
	}
	m.cancel = nil // propose calls it
	if err != nil {
		m.log.Warn("lease expiry proposal failed", "count", len(b.entries),
			"retry_in", m.cfg.RetryInterval, "error", err)
	}
	retry := deadline(m.now(), m.cfg.RetryInterval)
	for _, e := range b.entries {
		if e.index >= 0 || m.entries[e.h.Key] != e {
			continue // renewed (Held) or ended meanwhile: that event wins
		}
		if err == nil {
			// Committed, yet neither Ended nor Held came: the FSM found the
			// holding stale or gone, and whatever made it so has already
			// told us. Drop it rather than propose it forever.
			delete(m.entries, e.h.Key)
			continue
		}
		// The Expire may be in the log and still commit (an error does
		// not prove that it was never appended): until a logged renewal
		// voids it, no renewal of this holding is acknowledged locally.
		e.doubt = true
		e.deadline = retry
		m.heap.push(e)
	}
	m.met.size.Set(float64(len(m.entries)))
}
