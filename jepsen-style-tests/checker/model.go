package checker

import (
	"fmt"
	"hash/fnv"
	"path/filepath"

	"github.com/anishathalye/porcupine"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// The lease model.
//
// One lease is a small state machine: absent, or present with a holder
// (empty when free), the token of the current or last holding, and the
// transitions count. Acquire, Renew, Release and Get move it exactly as the
// FSM does. Two things make it more than a register:
//
//  1. Expiry is a spontaneous server action, not an operation in the
//     history. The model is a porcupine NondeterministicModel: before any
//     operation, a held lease may also have expired, but only if that
//     operation returned after the holding's guaranteed lifetime, minExpiry
//     = (invocation of the last acquire or renewal of the holding) +
//     duration*(1-maxDrift). Times are on the test's clock, which the
//     history carries in each input. Once an expiry happened at time >= m,
//     every operation placed after it must have returned after m (floor),
//     so an expiry cannot be slid in front of an operation that finished
//     earlier. A lease that should have expired but did not is fine: only
//     safety is checked.
//  2. Operations with an unknown outcome (info: timeouts, lost replies) may
//     or may not have happened. Their return time is set to the end of the
//     history, and the model offers both successors: unchanged, and the
//     effect they would have had. An acquire that may have taken a free
//     lease gives a holding whose token is unknown; the state keeps only a
//     lower bound until a later answer shows the token.
//
// Answers that the client retried are not in this history: the lease
// workload makes one gRPC attempt per operation. The "renewed" flag of
// Acquire is not checked, so the model needs no knowledge of retries.

type lInput struct {
	Kind   string
	Holder string
	Token  uint64
	// Call and Return are the operation's times; Return is the end of the
	// history for info operations.
	Call, Return int64
	// Hold is duration*(1-maxDrift) in nanoseconds.
	Hold int64
}

type lOutput struct {
	Info bool
	// Class is "" for a plain OK answer, or history.ErrStale,
	// history.ErrNotFound or history.ErrNotAcquired.
	Class    string
	Acquired bool
	Found    bool
	Holder   string
	Token    uint64
	Trans    int64
}

type lState struct {
	Exists bool
	Holder string
	// Token is the token of the current or last holding when TokenKnown,
	// else a strict lower bound of it.
	Token      uint64
	TokenKnown bool
	Trans      int64
	// MinExpiry is the earliest test time at which the current holding
	// may expire.
	MinExpiry int64
	// Floor is the latest expiry time lower bound passed so far: every
	// later operation must return after it.
	Floor int64
	// LastHolder and Released describe how the last holding ended, which
	// decides whether a retried Release succeeds.
	LastHolder string
	Released   bool
}

func (s lState) String() string {
	if !s.Exists {
		return "absent"
	}
	tok := fmt.Sprintf("%d", s.Token)
	if !s.TokenKnown {
		tok = fmt.Sprintf(">%d", s.Token)
	}
	h := s.Holder
	if h == "" {
		h = "free"
		if s.LastHolder != "" {
			how := "expired"
			if s.Released {
				how = "released"
			}
			h += "(" + s.LastHolder + " " + how + ")"
		}
	}
	return fmt.Sprintf("%s t%s x%d", h, tok, s.Trans)
}

// matchToken returns s with its token pinned to t, and whether t can be the
// token of s.
func matchToken(s lState, t uint64) (lState, bool) {
	if s.TokenKnown {
		return s, s.Token == t
	}
	if t > s.Token {
		s.Token, s.TokenKnown = t, true
		return s, true
	}
	return s, false
}

func expire(s lState) lState {
	s.LastHolder, s.Released = s.Holder, false
	s.Holder = ""
	s.Floor = max(s.Floor, s.MinExpiry)
	s.MinExpiry = 0
	return s
}

// newHolding begins a holding of in.Holder on a free or absent lease, with
// token tok when known, or an unknown token above the current one.
func newHolding(s lState, in lInput, tok uint64, known bool) lState {
	n := s
	n.Exists = true
	n.Holder = in.Holder
	n.Trans = s.Trans + 1
	n.MinExpiry = in.Call + in.Hold
	if known {
		n.Token, n.TokenKnown = tok, true
	} else {
		// Token stays as the lower bound: the new one is above it.
		n.TokenKnown = false
	}
	return n
}

func renewed(s lState, in lInput) lState {
	s.MinExpiry = max(s.MinExpiry, in.Call+in.Hold)
	return s
}

func release(s lState) lState {
	s.LastHolder, s.Released = s.Holder, true
	s.Holder = ""
	s.MinExpiry = 0
	return s
}

func stepLease(s lState, in lInput, out lOutput) []lState {
	cands := []lState{s}
	if s.Holder != "" && in.Return > s.MinExpiry {
		cands = append(cands, expire(s))
	}
	var next []lState
	for _, c := range cands {
		if in.Return < c.Floor {
			continue
		}
		next = append(next, applyLease(c, in, out)...)
	}
	return next
}

func applyLease(s lState, in lInput, out lOutput) []lState {
	free := !s.Exists || s.Holder == ""
	mine := s.Exists && s.Holder == in.Holder
	switch in.Kind {
	case history.Acquire:
		if out.Info {
			res := []lState{s}
			switch {
			case free:
				res = append(res, newHolding(s, in, 0, false))
			case mine:
				res = append(res, renewed(s, in))
			}
			return res
		}
		if !out.Acquired {
			if free || mine || out.Holder != s.Holder || out.Trans != s.Trans {
				return nil
			}
			if n, ok := matchToken(s, out.Token); ok {
				return []lState{n}
			}
			return nil
		}
		if out.Holder != in.Holder {
			return nil
		}
		if free {
			if out.Token <= s.Token || out.Trans != s.Trans+1 {
				return nil
			}
			return []lState{newHolding(s, in, out.Token, true)}
		}
		if mine && out.Trans == s.Trans {
			if n, ok := matchToken(s, out.Token); ok {
				return []lState{renewed(n, in)}
			}
		}
		return nil

	case history.Renew:
		if out.Info {
			res := []lState{s}
			if mine {
				if n, ok := matchToken(s, in.Token); ok {
					res = append(res, renewed(n, in))
				}
			}
			return res
		}
		switch out.Class {
		case "":
			if !mine || (out.Found && (out.Holder != in.Holder || out.Token != in.Token || out.Trans != s.Trans)) {
				return nil
			}
			if n, ok := matchToken(s, in.Token); ok {
				return []lState{renewed(n, in)}
			}
			return nil
		case history.ErrStale:
			if !s.Exists || (mine && s.TokenKnown && s.Token == in.Token) {
				return nil
			}
			return []lState{s}
		case history.ErrNotFound:
			if s.Exists {
				return nil
			}
			return []lState{s}
		}
		return nil

	case history.Release:
		var ok []lState
		if mine {
			if n, m := matchToken(s, in.Token); m {
				ok = append(ok, release(n))
			}
		}
		if s.Exists && s.Holder == "" && s.LastHolder == in.Holder && s.Released {
			if n, m := matchToken(s, in.Token); m {
				ok = append(ok, n)
			}
		}
		if out.Info {
			return append([]lState{s}, ok...)
		}
		switch out.Class {
		case "":
			if out.Found && (out.Holder != "" || out.Token != in.Token) {
				return nil
			}
			return ok
		case history.ErrStale:
			if !s.Exists {
				return nil
			}
			// Stale unless the release certainly matched.
			if len(ok) > 0 && s.TokenKnown {
				return nil
			}
			return []lState{s}
		case history.ErrNotFound:
			if s.Exists {
				return nil
			}
			return []lState{s}
		}
		return nil

	case history.Get:
		if out.Class == history.ErrNotFound {
			if s.Exists {
				return nil
			}
			return []lState{s}
		}
		if !s.Exists || out.Holder != s.Holder || out.Trans != s.Trans {
			return nil
		}
		if n, ok := matchToken(s, out.Token); ok {
			return []lState{n}
		}
		return nil
	}
	return nil
}

func hashLease(st any) uint64 {
	s := st.(lState)
	h := fnv.New64a()
	fmt.Fprintf(h, "%t|%s|%d|%t|%d|%d|%d|%s|%t", s.Exists, s.Holder, s.Token, s.TokenKnown, s.Trans, s.MinExpiry, s.Floor, s.LastHolder, s.Released)
	return h.Sum64()
}

// LeaseModel returns the porcupine model of one lease, partitioned by lease
// name.
func LeaseModel() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
			m := map[string][]porcupine.Operation{}
			var keys []string
			for _, o := range ops {
				k := o.Metadata.(opMeta).lease
				if _, ok := m[k]; !ok {
					keys = append(keys, k)
				}
				m[k] = append(m[k], o)
			}
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, m[k])
			}
			return out
		},
		Init: func() []any { return []any{lState{}} },
		Step: func(state, input, output any) []any {
			next := stepLease(state.(lState), input.(lInput), output.(lOutput))
			out := make([]any, len(next))
			for i, n := range next {
				out[i] = n
			}
			return out
		},
		Hash: hashLease,
		DescribeOperation: func(input, output any) string {
			in, out := input.(lInput), output.(lOutput)
			s := in.Kind + "(" + in.Holder
			if in.Token != 0 {
				s += fmt.Sprintf(", t%d", in.Token)
			}
			s += ") -> "
			switch {
			case out.Info:
				return s + "?"
			case out.Class != "" && out.Class != history.ErrNotAcquired:
				return s + out.Class
			}
			h := out.Holder
			if h == "" {
				h = "free"
			}
			return s + fmt.Sprintf("%s t%d x%d", h, out.Token, out.Trans)
		},
		DescribeState: func(state any) string { return state.(lState).String() },
	}
	m := nm.ToModel()
	m.DescribeOperationMetadata = func(info any) string {
		if info == nil {
			return ""
		}
		return info.(opMeta).desc
	}
	return m
}

type opMeta struct {
	lease string
	desc  string
}

// LeaseOperations turns the lease workload's operations into porcupine
// operations. Failed reads and calls that were never sent are dropped (they
// changed nothing and showed nothing); info operations end at the end of
// the history.
func LeaseOperations(h *history.History) []porcupine.Operation {
	end := h.End
	for _, o := range h.Ops {
		end = max(end, o.Return)
	}
	leases := map[string]bool{}
	for _, l := range h.Meta.Leases {
		leases[l] = true
	}
	var ops []porcupine.Operation
	for i := range h.Ops {
		o := &h.Ops[i]
		if o.Workload != history.WorkloadLease || (len(leases) > 0 && !leases[o.Lease]) {
			continue
		}
		switch o.Kind {
		case history.Acquire, history.Renew, history.Release, history.Get:
		default:
			continue
		}
		in := lInput{Kind: o.Kind, Holder: o.Holder, Token: o.Token, Call: o.Call, Return: o.Return, Hold: minHold(o.Duration, h.Meta.MaxDrift)}
		out := lOutput{Acquired: o.Acquired, Found: o.ResFound, Holder: o.ResHolder, Token: o.ResToken, Trans: o.ResTransitions}
		switch o.Type {
		case history.Info:
			if !o.Mutating() {
				continue
			}
			out = lOutput{Info: true}
			in.Return = end + 1
		case history.Fail:
			if o.ErrClass != history.ErrStale && o.ErrClass != history.ErrNotFound {
				continue
			}
			out.Class = o.ErrClass
		case history.OK:
			if o.Kind == history.Acquire && !o.Acquired {
				out.Class = history.ErrNotAcquired
			}
		}
		ops = append(ops, porcupine.Operation{
			ClientId: o.Process,
			Input:    in,
			Call:     o.Call,
			Output:   out,
			Return:   in.Return,
			Metadata: opMeta{lease: o.Lease, desc: describe(o)},
		})
	}
	return ops
}

// Linearizability checks the lease workload against LeaseModel with
// porcupine, and writes porcupine's HTML visualisation to
// opts.OutDir/linearizability.html when the history is not linearizable.
func Linearizability(h *history.History, opts Options) Result {
	r := Result{Name: "linearizability", Valid: true}
	ops := LeaseOperations(h)
	info := 0
	for _, o := range ops {
		if o.Output.(lOutput).Info {
			info++
		}
	}
	model := LeaseModel()
	res, lin := porcupine.CheckOperationsVerbose(model, ops, opts.LinearizabilityTimeout)
	r.Stats = map[string]any{"operations": len(ops), "info": info, "result": string(res)}
	switch res {
	case porcupine.Ok:
		r.Summary = fmt.Sprintf("linearizable (%d operations, %d with unknown outcome)", len(ops), info)
	case porcupine.Unknown:
		r.Unknown = true
		r.Summary = fmt.Sprintf("unknown: search timed out after %v (%d operations)", opts.LinearizabilityTimeout, len(ops))
	case porcupine.Illegal:
		r.Valid = false
		for _, part := range lin.PartialLinearizationsOperations() {
			// Name the longest partial linearization's last operation of
			// each failing partition: where the search got stuck.
			longest := []porcupine.Operation(nil)
			for _, p := range part {
				if len(p) > len(longest) {
					longest = p
				}
			}
			if len(longest) > 0 && len(longest) < countLease(ops, longest[0]) {
				r.violate("lease %s: longest linearizable prefix has %d of %d operations, ending at %s",
					longest[0].Metadata.(opMeta).lease, len(longest), countLease(ops, longest[0]), longest[len(longest)-1].Metadata.(opMeta).desc)
			}
		}
		if r.ViolationCount == 0 {
			r.violate("history of %d operations is not linearizable", len(ops))
		}
		r.Summary = fmt.Sprintf("NOT linearizable (%d operations)", len(ops))
		if opts.OutDir != "" {
			path := filepath.Join(opts.OutDir, "linearizability.html")
			if err := porcupine.VisualizePath(model, lin, path); err != nil {
				r.Summary += fmt.Sprintf(" (visualisation failed: %v)", err)
			} else {
				r.Artifacts = append(r.Artifacts, path)
				r.Summary += ", see " + path
			}
		}
	}
	return r
}

func countLease(ops []porcupine.Operation, o porcupine.Operation) int {
	n := 0
	l := o.Metadata.(opMeta).lease
	for _, x := range ops {
		if x.Metadata.(opMeta).lease == l {
			n++
		}
	}
	return n
}
