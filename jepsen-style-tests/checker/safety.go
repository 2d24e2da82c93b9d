package checker

import (
	"fmt"
	"sort"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// guarantee is what one acknowledged acquire or renewal promised: holder
// keeps the holding named by token at least until until.
type guarantee struct {
	op     *history.Op
	lease  string
	holder string
	token  uint64
	// from is the acknowledgement; until is sent + duration*(1-maxDrift),
	// cut short by the holder's own release.
	from, until int64
}

// LostRenewal checks that no acknowledged acquire or renewal was lost: when
// a call sent at t was acknowledged, every answer to a call invoked after
// the acknowledgement and returned before t + duration*(1-maxDrift) shows
// the same holding, unless its holder had invoked a release of it before
// that answer came. The holding shown free, or a later holding, or the
// holder's own renewal refused as stale, are violations.
func LostRenewal(h *history.History) Result {
	r := Result{Name: "lost-renewal", Valid: true}
	type key struct {
		lease, holder string
		token         uint64
	}
	// The earliest release invocation of each holding: from then on its
	// holder gave it up.
	released := map[key]int64{}
	for _, o := range h.Ops {
		if o.Kind != history.Release {
			continue
		}
		k := key{o.Lease, o.Holder, o.Token}
		if t, ok := released[k]; !ok || o.Call < t {
			released[k] = o.Call
		}
	}
	var gs []guarantee
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Type != history.OK || o.Duration <= 0 {
			continue
		}
		var token uint64
		switch {
		case o.Kind == history.Acquire && o.Acquired:
			token = o.ResToken
		case o.Kind == history.Renew:
			token = o.Token
		default:
			continue
		}
		g := guarantee{op: o, lease: o.Lease, holder: o.Holder, token: token, from: o.Return, until: o.Call + minHold(o.Duration, h.Meta.MaxDrift)}
		if t, ok := released[key{o.Lease, o.Holder, token}]; ok && t < g.until {
			g.until = t
		}
		if g.until > g.from {
			gs = append(gs, g)
		}
	}

	// Evidence: answers that show the lease's state, plus renewals refused
	// as stale (which say the holding is gone).
	type evidence struct {
		op     *history.Op
		holder string
		token  uint64
		free   bool
		stale  bool // the renewal of (op.Holder, op.Token) was refused
	}
	var ev []evidence
	for _, o := range observations(h) {
		ev = append(ev, evidence{op: o.op, holder: o.holder, token: o.token, free: o.holder == ""})
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Kind == history.Renew && o.Type == history.Fail && o.ErrClass == history.ErrStale {
			ev = append(ev, evidence{op: o, holder: o.Holder, token: o.Token, stale: true})
		}
	}
	perLease, leases := byLease(ev, func(e evidence) string { return e.op.Lease })
	gPer, _ := byLease(gs, func(g guarantee) string { return g.lease })
	checked := 0
	for _, lease := range leases {
		es := perLease[lease]
		sort.Slice(es, func(i, j int) bool { return es[i].op.Call < es[j].op.Call })
		for _, g := range gPer[lease] {
			// Answers invoked after the acknowledgement...
			i := sort.Search(len(es), func(i int) bool { return es[i].op.Call > g.from })
			for ; i < len(es) && es[i].op.Call < g.until; i++ {
				e := es[i]
				if e.op.Return >= g.until {
					continue // ...and returned before the guarantee ran out.
				}
				checked++
				lost := false
				switch {
				case e.stale:
					lost = e.holder == g.holder && e.token == g.token
				case e.token > g.token:
					lost = true
				case e.token == g.token && e.free:
					lost = true
				}
				if lost {
					r.violate("lease %s: holding of %s (token %d) acknowledged by %s was guaranteed until %s, but %s",
						lease, g.holder, g.token, describe(g.op), history.Ms(g.until), describe(e.op))
				}
			}
		}
	}
	r.Stats = map[string]any{"guarantees": len(gs), "answers_checked": checked}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d acknowledged acquires/renewals held for their guaranteed time (%d answers checked)", len(gs), checked)
	} else {
		r.Summary = fmt.Sprintf("%d answers saw an acknowledged holding lost early", r.ViolationCount)
	}
	return r
}

// belief is a stretch of time during which a mutex client believed it held
// a lock: from the acknowledgement of its acquire to its safe deadline (as
// extended by renewals and recorded "hold" observations), cut short when it
// released the lock or learnt it was lost.
type belief struct {
	process    int
	lease      string
	token      uint64
	start, end int64
	op         *history.Op
}

// Beliefs derives the mutex clients' beliefs from the mutex workload's
// operations.
func beliefs(h *history.History) []belief {
	type cur struct {
		b  belief
		ok bool
	}
	state := map[int]*cur{}
	var out []belief
	closeAt := func(c *cur, t int64) {
		if !c.ok {
			return
		}
		c.b.end = min(c.b.end, t)
		if c.b.end > c.b.start {
			out = append(out, c.b)
		}
		c.ok = false
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Workload != history.WorkloadMutex && o.Workload != history.WorkloadSemaphore {
			continue
		}
		c := state[o.Process]
		if c == nil {
			c = &cur{}
			state[o.Process] = c
		}
		switch o.Kind {
		case history.Acquire:
			if o.Type != history.OK || !o.Acquired || o.Deadline == 0 {
				continue
			}
			if c.ok && c.b.lease == o.Lease && c.b.token == o.ResToken {
				c.b.end = max(c.b.end, o.Deadline)
				continue
			}
			closeAt(c, o.Call)
			*c = cur{ok: true, b: belief{process: o.Process, lease: o.Lease, token: o.ResToken, start: o.Return, end: o.Deadline, op: o}}
		case history.Renew:
			if !c.ok || c.b.lease != o.Lease || c.b.token != o.Token {
				continue
			}
			switch {
			case o.Type == history.OK && o.Deadline != 0:
				c.b.end = max(c.b.end, o.Deadline)
			case o.Type == history.Fail && (o.ErrClass == history.ErrStale || o.ErrClass == history.ErrNotFound):
				closeAt(c, o.Return)
			}
		case history.Hold:
			if c.ok && c.b.lease == o.Lease && c.b.token == o.Token {
				c.b.end = max(c.b.end, o.Deadline)
			}
		case history.Release:
			if c.ok && c.b.lease == o.Lease && c.b.token == o.Token {
				closeAt(c, o.Call)
			}
		}
	}
	for _, c := range state {
		closeAt(c, c.b.end)
	}
	return out
}

// MutualExclusion checks that no two mutex clients believed they held the
// same lock at the same instant. A client believes it holds the lock from
// the acknowledgement of its acquire until its safe deadline, which it
// computed from its send time; a paused client's belief ends at that
// deadline too, so this is the mutual exclusion that non-paused holders
// get. (What a paused client does after waking is the fenced register's
// business.)
func MutualExclusion(h *history.History) Result {
	r := Result{Name: "mutual-exclusion", Valid: true}
	bs := beliefs(h)
	perLock, locks := byLease(bs, func(b belief) string { return b.lease })
	var held int64
	for _, lock := range locks {
		list := perLock[lock]
		sort.Slice(list, func(i, j int) bool { return list[i].start < list[j].start })
		var last *belief
		for i := range list {
			b := &list[i]
			held += b.end - b.start
			if last != nil && b.start < last.end && b.token != last.token {
				r.violate("lock %s: p%d (token %d, from %s) and p%d (token %d, %s to %s) both believed they held it for %s; grant %s",
					lock, last.process, last.token, describe(last.op), b.process, b.token, history.Ms(b.start), history.Ms(b.end),
					history.Ms(min(last.end, b.end)-b.start), describe(b.op))
			}
			if last == nil || b.end > last.end {
				last = b
			}
		}
	}
	r.Stats = map[string]any{"holdings": len(bs), "held_ms": held / 1e6}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d lock holdings (%.1fs held in total), none overlapping", len(bs), float64(held)/1e9)
	} else {
		r.Summary = fmt.Sprintf("%d overlapping lock holdings", r.ViolationCount)
	}
	return r
}
