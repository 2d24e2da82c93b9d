package checker

import (
	"fmt"
	"sort"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// TokenOrder checks the fencing tokens that answers showed, across both
// workloads:
//
//   - a token names one holding: one lease and one holder, cluster-wide;
//   - on one lease a token has one transitions count, and a higher token
//     has a higher count (tokens strictly increase across holdings);
//   - tokens never go back in real time: an answer to a call invoked after
//     another call returned shows a token at least as high.
func TokenOrder(h *history.History) Result {
	r := Result{Name: "token-order", Valid: true}
	obs := observations(h)

	type owner struct {
		lease, holder string
		op            *history.Op
	}
	owners := map[uint64]owner{}
	for _, o := range obs {
		if o.token == 0 {
			continue
		}
		w, seen := owners[o.token]
		switch {
		case !seen:
			owners[o.token] = owner{o.lease, o.holder, o.op}
		case w.lease != o.lease:
			r.violate("token %d names holdings of two leases: %s (%s) and %s (%s)", o.token, w.lease, describe(w.op), o.lease, describe(o.op))
		case o.holder != "" && w.holder == "":
			owners[o.token] = owner{o.lease, o.holder, o.op}
		case o.holder != "" && w.holder != o.holder:
			r.violate("token %d names holdings of two holders on %s: %s (%s) and %s (%s)", o.token, o.lease, w.holder, describe(w.op), o.holder, describe(o.op))
		}
	}

	perLease, leases := byLease(obs, func(o observation) string { return o.lease })
	for _, lease := range leases {
		os := perLease[lease]
		// Transitions agree with tokens.
		trans := map[uint64]observation{}
		for _, o := range os {
			if t, ok := trans[o.token]; ok && t.trans != o.trans {
				r.violate("lease %s token %d has transitions %d (%s) and %d (%s)", lease, o.token, t.trans, describe(t.op), o.trans, describe(o.op))
				continue
			}
			trans[o.token] = o
		}
		tokens := make([]uint64, 0, len(trans))
		for t := range trans {
			tokens = append(tokens, t)
		}
		sort.Slice(tokens, func(i, j int) bool { return tokens[i] < tokens[j] })
		for i := 1; i < len(tokens); i++ {
			a, b := trans[tokens[i-1]], trans[tokens[i]]
			if b.trans <= a.trans {
				r.violate("lease %s: token %d has transitions %d but the lower token %d has %d", lease, b.token, b.trans, a.token, a.trans)
			}
		}

		// Real-time order: sweep by invocation, keeping the highest token
		// among answers that returned before the current invocation.
		byCall := append([]observation(nil), os...)
		sort.Slice(byCall, func(i, j int) bool { return byCall[i].op.Call < byCall[j].op.Call })
		byRet := append([]observation(nil), os...)
		sort.Slice(byRet, func(i, j int) bool { return byRet[i].op.Return < byRet[j].op.Return })
		var best *observation
		j := 0
		for _, o := range byCall {
			for j < len(byRet) && byRet[j].op.Return < o.op.Call {
				if best == nil || byRet[j].token > best.token {
					b := byRet[j]
					best = &b
				}
				j++
			}
			if best != nil && o.token < best.token {
				r.violate("lease %s: token went back from %d to %d: %s returned before %s was invoked", lease, best.token, o.token, describe(best.op), describe(o.op))
			}
		}
	}
	r.Stats = map[string]any{"observations": len(obs), "tokens": len(owners)}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d tokens in %d answers: one holding each, rising in real time", len(owners), len(obs))
	} else {
		r.Summary = fmt.Sprintf("%d token order violations", r.ViolationCount)
	}
	return r
}

// FencedRegister checks the fenced registers' write logs: in the order the
// register applied them, no accepted write carried a token below the
// highest accepted before it. A register whose guard lets a stale token
// through fails here, whatever the guard claims.
func FencedRegister(h *history.History) Result {
	r := Result{Name: "fenced-register", Valid: true}
	var writes []*history.Op
	for i := range h.Ops {
		if h.Ops[i].Kind == history.Write {
			writes = append(writes, &h.Ops[i])
		}
	}
	perLease, leases := byLease(writes, func(o *history.Op) string { return o.Lease })
	accepted, rejected, unchecked, staleAttempts := 0, 0, 0, 0
	for _, lease := range leases {
		ws := perLease[lease]
		sort.Slice(ws, func(i, j int) bool { return ws[i].Seq < ws[j].Seq })
		var highest uint64
		var highOp *history.Op
		for _, w := range ws {
			if w.Unchecked {
				unchecked++
			}
			if w.Token < highest {
				staleAttempts++
			}
			if !w.Accepted {
				rejected++
				continue
			}
			accepted++
			if w.Token < highest {
				r.violate("register %s accepted stale token %d after accepting %d: %s (after %s)", lease, w.Token, highest, describe(w), describe(highOp))
				continue
			}
			highest, highOp = w.Token, w
		}
	}
	r.Stats = map[string]any{"writes": len(writes), "accepted": accepted, "rejected": rejected, "unchecked_writes": unchecked, "stale_attempts": staleAttempts}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d writes, %d accepted, %d rejected (%d carried a stale token, all rejected)", len(writes), accepted, rejected, staleAttempts)
	} else {
		r.Summary = fmt.Sprintf("register accepted %d stale writes", r.ViolationCount)
	}
	return r
}
