package checker

import (
	"fmt"
	"sort"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// LockDelay checks the lock delay: after a holding whose lease kept a lock
// delay d ends other than by a release its holder asked for (it expired),
// no later holding of that lease starts before the old holding's
// guaranteed end plus d*(1-maxDrift).
//
// A holding is known from an OK acquire that took the lease (its token),
// and only one whose acquire answer showed the lock delay is checked (a
// cluster with an older member drops it). Its guaranteed end is the
// latest sent + duration*(1-maxDrift) of its acknowledged acquires and
// renewals, and of the deadlines its holder recorded (a "hold" deadline is
// that minus Margin): the leader expires it no earlier, and the delay
// counts from the expiry. A holding whose holder invoked a release, with
// any outcome, is skipped: it may have ended by that release, which hands
// the lease on at once. A later holding (a higher token) has started by
// the return of the first acquire that showed it; starting before the
// bound is a violation. Every estimate errs towards passing: an unseen
// renewal makes the true end later, and so the bound only stricter.
func LockDelay(h *history.History) Result {
	r := Result{Name: "lock-delay", Valid: true}
	type holding struct {
		lease     string
		token     uint64
		delay     time.Duration
		acquired  *history.Op // the first acquire that showed it taken
		guarantee int64
		released  bool
	}
	type key struct {
		lease string
		token uint64
	}
	hs := map[key]*holding{}
	get := func(lease string, token uint64) *holding {
		k := key{lease, token}
		if hs[k] == nil {
			hs[k] = &holding{lease: lease, token: token}
		}
		return hs[k]
	}
	for i := range h.Ops {
		o := &h.Ops[i]
		switch {
		case o.Kind == history.Acquire && o.Type == history.OK && o.Acquired && o.ResToken != 0:
			g := get(o.Lease, o.ResToken)
			if g.acquired == nil || o.Return < g.acquired.Return {
				g.acquired = o
			}
			g.delay = max(g.delay, o.ResLockDelay)
			if o.Duration > 0 {
				g.guarantee = max(g.guarantee, o.Call+minHold(o.Duration, h.Meta.MaxDrift))
			}
		case o.Kind == history.Renew && o.Type == history.OK && o.Token != 0 && o.Duration > 0:
			g := get(o.Lease, o.Token)
			g.guarantee = max(g.guarantee, o.Call+minHold(o.Duration, h.Meta.MaxDrift))
		case o.Kind == history.Hold && o.Token != 0 && o.Deadline != 0:
			g := get(o.Lease, o.Token)
			g.guarantee = max(g.guarantee, o.Deadline+int64(h.Meta.Margin))
		case o.Kind == history.Release && o.Token != 0:
			get(o.Lease, o.Token).released = true
		}
	}
	perLease := map[string][]*holding{}
	for _, g := range hs {
		if g.acquired != nil {
			perLease[g.lease] = append(perLease[g.lease], g)
		}
	}
	leases := make([]string, 0, len(perLease))
	for l := range perLease {
		leases = append(leases, l)
	}
	sort.Strings(leases)
	checked, delayed := 0, 0
	for _, lease := range leases {
		list := perLease[lease]
		sort.Slice(list, func(i, j int) bool { return list[i].token < list[j].token })
		// first[i] is the holding after i (by token) that was seen
		// earliest: every one of them had to wait for i's delay.
		first := make([]*holding, len(list))
		for i := len(list) - 2; i >= 0; i-- {
			first[i] = list[i+1]
			if f := first[i+1]; f != nil && f.acquired.Return < first[i].acquired.Return {
				first[i] = f
			}
		}
		for i, g := range list {
			if g.delay <= 0 {
				continue
			}
			delayed++
			if g.released || first[i] == nil {
				continue
			}
			checked++
			next := first[i]
			bound := g.guarantee + int64(float64(g.delay)*(1-h.Meta.MaxDrift))
			if next.acquired.Return < bound {
				r.violate("lease %s: holding token %d (lock delay %v, acquired by %s) was not released and was guaranteed until %s, so nobody may hold the lease before %s; but token %d was granted by %s",
					lease, g.token, g.delay, describe(g.acquired), history.Ms(g.guarantee), history.Ms(bound), next.token, describe(next.acquired))
			}
		}
	}
	r.Stats = map[string]any{"holdings_with_lock_delay": delayed, "expired_holdings_checked": checked}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d holdings with a lock delay, %d of them ended unreleased and followed by another: none followed within the delay", delayed, checked)
	} else {
		r.Summary = fmt.Sprintf("%d new holdings began within a lock delay", r.ViolationCount)
	}
	return r
}
