package checker

import (
	"fmt"
	"sort"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Availability measures the lease workload's calls (one gRPC attempt each):
// the share answered (OK, or a definite refusal such as stale or not found)
// among calls invoked while a majority of nodes ran and reached each other,
// and, for every fault, how long after it began and after it healed the
// first write (acquire, renew or release) succeeded: the failover time. It
// fails only when the answered share drops below minAvailability.
func Availability(h *history.History, minAvailability float64) Result {
	r := Result{Name: "availability", Valid: true}
	noMajority := func(t int64) bool {
		for _, f := range h.Faults {
			if !f.MajorityConnected && f.Start <= t && t <= f.End {
				return true
			}
		}
		return false
	}
	var total, answered, totalAll, answeredAll, ok int
	var writes []*history.Op
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Workload != history.WorkloadLease {
			continue
		}
		ans := o.Type == history.OK || (o.Type == history.Fail && (o.ErrClass == history.ErrStale || o.ErrClass == history.ErrNotFound))
		totalAll++
		if ans {
			answeredAll++
		}
		if o.Type == history.OK {
			ok++
			if o.Mutating() {
				writes = append(writes, o)
			}
		}
		if noMajority(o.Call) {
			continue
		}
		total++
		if ans {
			answered++
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].Return < writes[j].Return })
	// firstWrite returns how long after t the first write invoked at or
	// after t succeeded, or -1.
	firstWrite := func(t int64) int64 {
		best := int64(-1)
		for _, w := range writes {
			if best >= 0 && w.Return-t >= best {
				break
			}
			if w.Call >= t && (best < 0 || w.Return-t < best) {
				best = w.Return - t
			}
		}
		return best
	}
	type worst struct {
		ms    float64
		fault string
	}
	var worstStart, worstHeal worst
	perKind := map[string]float64{}
	for _, f := range h.Faults {
		if d := firstWrite(f.Start); d >= 0 && float64(d)/1e6 > worstStart.ms {
			worstStart = worst{float64(d) / 1e6, faultName(f) + " at " + history.Ms(f.Start)}
		}
		if d := firstWrite(f.End); d >= 0 {
			ms := float64(d) / 1e6
			if ms > worstHeal.ms {
				worstHeal = worst{ms, faultName(f) + " healed at " + history.Ms(f.End)}
			}
			perKind[f.Kind] = max(perKind[f.Kind], ms)
		}
	}
	// The longest stretch without any successful write, for the record,
	// overall and for each kind of fault that overlapped it.
	var gap int64
	var gapAt int64
	gapByKind := map[string]float64{}
	for i := 1; i < len(writes); i++ {
		from, to := writes[i-1].Return, writes[i].Return
		d := to - from
		if d > gap {
			gap, gapAt = d, from
		}
		for _, f := range h.Faults {
			if f.Start <= to && from <= f.End {
				gapByKind[f.Kind] = max(gapByKind[f.Kind], float64(d)/1e6)
			}
		}
	}
	frac := 1.0
	if total > 0 {
		frac = float64(answered) / float64(total)
	}
	fracAll := 1.0
	if totalAll > 0 {
		fracAll = float64(answeredAll) / float64(totalAll)
	}
	r.Stats = map[string]any{
		"calls_with_majority":            total,
		"answered_with_majority":         answered,
		"availability":                   frac,
		"availability_all":               fracAll,
		"ok_calls":                       ok,
		"worst_failover_ms":              worstStart.ms,
		"worst_failover_fault":           worstStart.fault,
		"worst_recovery_after_heal_ms":   worstHeal.ms,
		"worst_recovery_fault":           worstHeal.fault,
		"recovery_after_heal_ms_by_kind": perKind,
		"longest_write_gap_ms":           float64(gap) / 1e6,
		"longest_write_gap_at_ms":        float64(gapAt) / 1e6,
		"longest_write_gap_ms_by_kind":   gapByKind,
	}
	failover := "no faults"
	if worstStart.fault != "" {
		failover = fmt.Sprintf("worst failover %.0fms (%s)", worstStart.ms, worstStart.fault)
	}
	r.Summary = fmt.Sprintf("%.1f%% of %d calls answered while a majority was connected (%.1f%% overall); %s; longest write gap %.0fms",
		100*frac, total, 100*fracAll, failover, float64(gap)/1e6)
	if frac < minAvailability {
		r.violate("only %.1f%% of calls answered while a majority was connected, below %.1f%%", 100*frac, 100*minAvailability)
	}
	return r
}

func faultName(f history.Fault) string {
	if f.Detail == "" {
		return f.Kind
	}
	return f.Kind + " (" + f.Detail + ")"
}
