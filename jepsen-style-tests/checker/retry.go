package checker

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// RetryBound is how soon after a renewal went unanswered a retry of it
// must have succeeded, while a majority is connected: one election
// timeout (the cluster knows by then that its leader is gone and has
// elected another) plus a second.
func RetryBound(electionTimeout time.Duration) time.Duration { return electionTimeout + time.Second }

// RenewalRetry checks the one-shot holders (history.WorkloadOneShot),
// which renew a lease of their own through the followers and retry a
// renewal until it is answered. While a majority of nodes runs and is
// connected (no fault with MajorityConnected false) and the holder
// renews through it (no attempt in the window went to a node a fault put
// outside the majority, Fault.Outside):
//
//   - an attempt answered Unavailable or timed out is followed by a
//     successful attempt of the same renewal within RetryBound of its
//     answer;
//   - the holder never loses its holding: no renewal is refused as stale
//     or not found when everything from the holding's last acknowledged
//     acquire or renewal (from its invocation) to that refusal happened
//     with a majority connected.
//
// A window that runs past the last answer of the run is not judged, nor
// is a history that does not give the election timeout.
func RenewalRetry(h *history.History) Result {
	r := Result{Name: "renewal-retry", Valid: true}
	if h.Meta.ElectionTimeout <= 0 {
		r.Unknown = true
		r.Summary = "not checked: the history does not give the nodes' election timeout"
		return r
	}
	bound := int64(RetryBound(h.Meta.ElectionTimeout))
	var end int64 // the last answer of the run: the workload ran until then
	for _, o := range h.Ops {
		end = max(end, o.Return)
	}
	majority := func(from, to int64) bool {
		if to > end {
			return false
		}
		for _, f := range h.Faults {
			if !f.MajorityConnected && f.Start <= to && from <= f.End {
				return false
			}
		}
		return true
	}
	// through reports whether o went to a node that a fault in force put
	// outside the connected majority.
	outside := func(o *history.Op) bool {
		id := h.Meta.NodeIDs[o.Node]
		for _, f := range h.Faults {
			if f.Start <= o.Call && o.Call <= f.End && slices.Contains(f.Outside, id) {
				return true
			}
		}
		return false
	}
	// viaMinority reports whether any of the holder's attempts invoked in
	// [from, to] went to a node outside the majority.
	viaMinority := func(ops []*history.Op, from, to int64) bool {
		for _, a := range ops {
			if a.Call >= from && a.Call <= to && outside(a) {
				return true
			}
		}
		return false
	}
	chains := map[int64][]*history.Op{}
	byHolder := map[string][]*history.Op{}
	holders := map[string]bool{}
	var refused []*history.Op
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Workload != history.WorkloadOneShot {
			continue
		}
		holders[o.Holder] = true
		byHolder[o.Holder] = append(byHolder[o.Holder], o)
		if o.Kind == history.Renew && o.Chain != 0 {
			chains[o.Chain] = append(chains[o.Chain], o)
		}
		if o.Kind == history.Renew && o.Type == history.Fail && (o.ErrClass == history.ErrStale || o.ErrClass == history.ErrNotFound) {
			refused = append(refused, o)
		}
	}
	ids := make([]int64, 0, len(chains))
	for id := range chains {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var unanswered, judged, minority int
	var worst int64
	for _, id := range ids {
		ops := chains[id]
		sort.Slice(ops, func(i, j int) bool { return ops[i].Attempt < ops[j].Attempt })
		for i, o := range ops {
			if o.ErrClass != history.ErrUnavailable && o.ErrClass != history.ErrTimeout && o.ErrClass != history.ErrNotSent {
				continue
			}
			unanswered++
			if !majority(o.Return, o.Return+bound) {
				continue
			}
			if viaMinority(ops[i+1:], o.Return, o.Return+bound) {
				minority++
				continue
			}
			judged++
			var ok *history.Op
			for _, later := range ops[i+1:] {
				if later.Type == history.OK {
					ok = later
					break
				}
			}
			switch {
			case ok == nil:
				r.violate("renewal (chain %d, %d attempts) went unanswered at %s with a majority connected and never succeeded on retry: %s", id, len(ops), history.Ms(o.Return), describe(o))
			case ok.Return-o.Return > bound:
				r.violate("renewal (chain %d) went unanswered at %s with a majority connected; its retry succeeded only %s later, past %v: %s, then %s",
					id, history.Ms(o.Return), history.Ms(ok.Return-o.Return), time.Duration(bound), describe(o), describe(ok))
			}
			if ok != nil {
				worst = max(worst, ok.Return-o.Return)
			}
		}
	}
	// A refused renewal: find the holding's last acknowledgement.
	lost := 0
	for _, o := range refused {
		var ack *history.Op
		for i := range h.Ops {
			a := &h.Ops[i]
			if a.Call >= o.Call {
				break
			}
			if a.Holder != o.Holder || a.Lease != o.Lease || a.Type != history.OK {
				continue
			}
			if (a.Kind == history.Renew && a.Token == o.Token) || (a.Kind == history.Acquire && a.Acquired && a.ResToken == o.Token) {
				ack = a
			}
		}
		if ack == nil {
			continue // a holding the holder never had acknowledged
		}
		lost++
		if majority(ack.Call, o.Return) && !viaMinority(byHolder[o.Holder], ack.Call, o.Return) {
			r.violate("holder %s lost its holding of %s (token %d) with a majority connected since its last acknowledged renewal at %s: %s",
				o.Holder, o.Lease, o.Token, history.Ms(ack.Call), describe(o))
		}
	}
	r.Stats = map[string]any{
		"holders":              len(holders),
		"renewals":             len(chains),
		"unanswered_attempts":  unanswered,
		"judged_with_majority": judged,
		"retried_via_minority": minority,
		"worst_retry_ms":       float64(worst) / 1e6,
		"bound_ms":             float64(bound) / 1e6,
		"holdings_lost":        lost,
	}
	r.Summary = fmt.Sprintf("%d renewals by %d one-shot holders through followers; %d attempts unanswered, %d of them judged (majority connected, retried through it; %d more retried through a node outside it), retried successfully within %.0fms at worst (bound %v); %d holdings lost",
		len(chains), len(holders), unanswered, judged, minority, float64(worst)/1e6, time.Duration(bound), lost)
	return r
}
