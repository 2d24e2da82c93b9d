package checker

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// SemaphoreBound checks the semaphore workload: at no moment do more
// clients believe they hold a slot of a semaphore than it has slots. A
// belief runs from the acquire's answer to the client's safe deadline as
// its acquires and holds advanced it, cut short by its release's call (as
// mutual-exclusion judges one lock; that checker also judges each slot on
// its own). Per-slot exclusion implies the bound only while one client
// holds one slot; this checker judges the count itself.
func SemaphoreBound(h *history.History) Result {
	r := Result{Name: "semaphore-bound", Valid: true}
	type edge struct {
		at    int64
		delta int
		b     *belief
	}
	bs := beliefs(h)
	edges := map[string][]edge{}
	slots := map[string]int{}
	waits := 0
	for i := range bs {
		b := &bs[i]
		if b.op.Workload != history.WorkloadSemaphore {
			continue
		}
		sem, ok := semaphoreOf(b.lease)
		if !ok || b.op.Slots < 1 {
			r.violate("belief of p%d in %q: not a slot of a semaphore of known size", b.process, b.lease)
			continue
		}
		slots[sem] = b.op.Slots
		edges[sem] = append(edges[sem], edge{b.start, +1, b}, edge{b.end, -1, b})
		waits++
	}
	most := 0
	sems := make([]string, 0, len(edges))
	for sem := range edges {
		sems = append(sems, sem)
	}
	sort.Strings(sems)
	for _, sem := range sems {
		es := edges[sem]
		// Ends before starts at one instant: a belief that ends as
		// another begins does not overlap it.
		sort.Slice(es, func(i, j int) bool {
			if es[i].at != es[j].at {
				return es[i].at < es[j].at
			}
			return es[i].delta < es[j].delta
		})
		live := map[*belief]bool{}
		for _, e := range es {
			if e.delta < 0 {
				delete(live, e.b)
				continue
			}
			live[e.b] = true
			most = max(most, len(live))
			if len(live) > slots[sem] {
				var who []string
				for b := range live {
					who = append(who, fmt.Sprintf("p%d on %s (token %d)", b.process, b.lease, b.token))
				}
				sort.Strings(who)
				r.violate("semaphore %s of %d slots: %d holders at %s: %s", sem, slots[sem], len(live), history.Ms(e.at), strings.Join(who, ", "))
			}
		}
	}
	r.Stats = map[string]any{"holdings": waits, "semaphores": len(edges), "most_at_once": most}
	if r.Valid {
		r.Summary = fmt.Sprintf("%d semaphore holdings on %d semaphores, at most %d at once, never more than the slots", waits, len(edges), most)
	} else {
		r.Summary = fmt.Sprintf("%d moments with more holders than slots", r.ViolationCount)
	}
	return r
}

// semaphoreOf returns the semaphore of a slot lease name-i.
func semaphoreOf(lease string) (string, bool) {
	i := strings.LastIndexByte(lease, '-')
	if i <= 0 {
		return "", false
	}
	if _, err := strconv.Atoi(lease[i+1:]); err != nil {
		return "", false
	}
	return lease[:i], true
}
