// Package checker decides whether a recorded history is correct. Each
// checker reads the whole history and returns a Result; none of them talks
// to the cluster.
//
// The checkers, and what each one catches:
//
//   - linearizability: the lease workload's calls are linearizable against a
//     model of one lease, where expiry is a spontaneous server action that
//     may happen only after the duration that the holder's last
//     acknowledged acquire or renewal guaranteed (see model.go).
//   - token-order: a fencing token names one holding (one lease, one holder,
//     one transitions count) and tokens never go back in real time.
//   - fenced-register: the fenced register never accepted a token below
//     the highest it had accepted.
//   - lost-renewal: a holding acknowledged at t_sent is still the current
//     holding at t_sent + duration*(1-maxDrift), unless its holder released
//     it.
//   - mutual-exclusion: no two mutex clients believed they held the same
//     lock at the same instant, each belief ending at the client's safe
//     deadline.
//   - lock-delay: after a holding with a lock delay ends other than by its
//     holder's release, no new holding of the lease starts before its
//     guaranteed end plus the delay.
//   - availability: the share of calls answered while a majority of nodes
//     ran and reached each other, and how long service took to come back
//     after each fault.
//   - renewal-retry: while a majority is connected, a one-shot holder
//     renewing through the followers never loses its holding, and a
//     renewal answered Unavailable or timed out succeeds on retry within
//     an election timeout plus a second.
package checker

import (
	"fmt"
	"sort"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Result is one checker's verdict.
type Result struct {
	Name  string `json:"-"`
	Valid bool   `json:"valid"`
	// Unknown is set when the checker gave up (a linearizability search
	// that ran out of time); Valid is then true, as nothing was found.
	Unknown bool   `json:"unknown,omitempty"`
	Summary string `json:"summary"`
	// Violations lists the first few problems found; ViolationCount counts
	// all of them.
	Violations     []string       `json:"violations,omitempty"`
	ViolationCount int            `json:"violation_count"`
	Stats          map[string]any `json:"stats,omitempty"`
	// Artifacts names files written for this checker (the visualisation).
	Artifacts []string `json:"artifacts,omitempty"`
}

// maxListed caps the violations listed in a Result.
const maxListed = 20

func (r *Result) violate(format string, args ...any) {
	r.Valid = false
	r.ViolationCount++
	if len(r.Violations) < maxListed {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

// Options tune the checkers.
type Options struct {
	// LinearizabilityTimeout bounds porcupine's search; 0 means no bound.
	LinearizabilityTimeout time.Duration
	// OutDir receives the porcupine visualisation when a history is not
	// linearizable; empty writes none.
	OutDir string
	// MinAvailability is the share of calls, made while a majority was
	// connected, that must be answered for the availability checker to
	// pass.
	MinAvailability float64
}

// DefaultOptions returns the options of a normal run.
func DefaultOptions() Options {
	return Options{LinearizabilityTimeout: 5 * time.Minute, MinAvailability: 0.5}
}

// All runs every checker, in a fixed order.
func All(h *history.History, opts Options) []Result {
	return []Result{
		Linearizability(h, opts),
		TokenOrder(h),
		FencedRegister(h),
		LostRenewal(h),
		MutualExclusion(h),
		SemaphoreBound(h),
		LockDelay(h),
		Availability(h, opts.MinAvailability),
		RenewalRetry(h),
	}
}

// minHold is how long a holding acknowledged for a request sent at t is
// guaranteed to last: the duration shortened by the documented drift bound.
func minHold(d time.Duration, maxDrift float64) int64 {
	return int64(float64(d) * (1 - maxDrift))
}

// observation is what one definite answer showed of a lease's state.
type observation struct {
	op     *history.Op
	lease  string
	holder string // "" when free
	token  uint64
	trans  int64
}

// observations returns the lease states that OK answers showed, from both
// workloads, in history order.
func observations(h *history.History) []observation {
	var out []observation
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Type != history.OK || !o.ResFound {
			continue
		}
		switch o.Kind {
		case history.Acquire, history.Renew, history.Release, history.Get:
			out = append(out, observation{op: o, lease: o.Lease, holder: o.ResHolder, token: o.ResToken, trans: o.ResTransitions})
		}
	}
	return out
}

func byLease[T any](xs []T, lease func(T) string) (map[string][]T, []string) {
	m := map[string][]T{}
	for _, x := range xs {
		m[lease(x)] = append(m[lease(x)], x)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return m, keys
}

func describe(o *history.Op) string {
	s := fmt.Sprintf("#%d p%d %s %s", o.Index, o.Process, o.Kind, o.Lease)
	if o.Holder != "" {
		s += " by " + o.Holder
	}
	if o.Token != 0 {
		s += fmt.Sprintf(" token %d", o.Token)
	}
	s += fmt.Sprintf(" [%s, %s] %s", history.Ms(o.Call), history.Ms(o.Return), o.Type)
	if o.ResFound {
		h := o.ResHolder
		if h == "" {
			h = "free"
		}
		s += fmt.Sprintf(" -> %s token %d transitions %d", h, o.ResToken, o.ResTransitions)
	}
	if o.ErrClass != "" {
		s += " (" + o.ErrClass + ")"
	}
	return s
}
