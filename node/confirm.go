package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Peers reaches the other members of the cluster; the gRPC server
// implements it. A node without Peers renews every holding through the log.
type Peers interface {
	// Term asks the member id, serving at grpcAddr (empty when the member
	// has not registered its address), for its current Raft term.
	// leaderTerm is the asking leader's term, for the member's logs.
	Term(ctx context.Context, id, grpcAddr string, leaderTerm uint64) (uint64, error)
}

// ErrNotConfirmed: the leader could not confirm its leadership with a
// quorum in time (members unreachable or slow).
var ErrNotConfirmed = errors.New("node: leadership not confirmed by a quorum")

// errUnregistered: a round fell short while some voters had not registered
// their gRPC address yet, so it could not ask them (a new cluster's first
// moments, or a member just added).
var errUnregistered = fmt.Errorf("%w: members have not registered their addresses", ErrNotConfirmed)

// SetPeers gives the node a way to ask the other members for their term.
// Call it once, before serving.
func (n *Node) SetPeers(p Peers) {
	n.conf.mu.Lock()
	defer n.conf.mu.Unlock()
	n.conf.peers = p
}

// confirmer runs leadership confirmation rounds, one at a time. Callers
// that arrive while a round runs share the next one, which starts only
// after the one running ends, so the round a caller waits for always began
// after the caller did.
type confirmer struct {
	mu    sync.Mutex
	peers Peers
	busy  bool           // a goroutine is running rounds
	next  *round         // callers waiting for the next round; nil when none
	wg    sync.WaitGroup // the goroutine running rounds; the node's shutdown waits for it
	// answered lists the members whose answers made the last quorum,
	// first first: the next round asks them first.
	answered []string
}

// round is one confirmation; done closes once term and err are set.
type round struct {
	done chan struct{}
	term uint64 // the term a quorum confirmed
	err  error
}

// confirm returns nil once a quorum of voters was, at some moment after
// the call began, in term, the term this node leads. A vote for any other
// leader moves a voter to a later term first, so no other leader was
// elected before that moment (docs/design.md, "Renewals").
//
// This is stricter than raft.VerifyLeader, which also counts answers to
// heartbeats sent before it was called.
func (n *Node) confirm(ctx context.Context, term uint64) error {
	c := &n.conf
	c.mu.Lock()
	switch {
	case n.quitCtx.Err() != nil:
		c.mu.Unlock()
		return ErrShuttingDown
	case c.peers == nil:
		c.mu.Unlock()
		return fmt.Errorf("%w: no way to reach the members", ErrNotConfirmed)
	}
	r := c.next
	if r == nil {
		r = &round{done: make(chan struct{})}
		c.next = r
	}
	if !c.busy {
		c.busy, c.next = true, nil
		c.wg.Go(func() { n.runRounds(r) })
	}
	c.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.err != nil {
		return r.err
	}
	if r.term != term {
		return ErrNotLeader
	}
	return nil
}

// runRounds runs r and then every round that callers queued meanwhile
// (each of them joined while the round before ran, so before its own
// round starts). Each round is bounded by the heartbeat timeout and ends
// early when the node shuts down.
func (n *Node) runRounds(r *round) {
	c := &n.conf
	for r != nil {
		start := time.Now() // for the metric only
		r.term, r.err = n.confirmRound()
		n.met.confirmLatency.Observe(time.Since(start).Seconds())
		close(r.done)
		c.mu.Lock()
		r, c.next = c.next, nil
		c.busy = r != nil
		c.mu.Unlock()
	}
}

// confirmRound asks other voters for their term and returns this node's
// term once a quorum (this node included) answered with it.
func (n *Node) confirmRound() (uint64, error) {
	term := n.raft.CurrentTerm()
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, err
	}
	var others []raft.Server
	voters, self := 0, false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) == n.cfg.ID {
			self = true
			continue
		}
		others = append(others, s)
	}
	need := voters/2 + 1
	got := 0
	if self {
		got = 1 // its term was read above, after every caller of this round came
	}
	if got >= need {
		return term, nil
	}
	n.conf.mu.Lock()
	peers, prev := n.conf.peers, n.conf.answered
	n.conf.mu.Unlock()
	// Those that answered first last time go first.
	slices.SortStableFunc(others, func(a, b raft.Server) int {
		return cmp.Compare(rank(prev, string(a.ID)), rank(prev, string(b.ID)))
	})

	ctx, cancel := context.WithTimeout(n.quitCtx, n.cfg.HeartbeatTimeout)
	type answer struct {
		id           string
		term         uint64 // 0 when the call failed
		unregistered bool   // failed, and the member has no registered address
	}
	answers := make(chan answer, len(others))
	var wg sync.WaitGroup
	asked, pending, unregistered := 0, 0, 0
	ask := func(k int) { // asks up to k more members
		for ; k > 0 && asked < len(others); k-- {
			s := others[asked]
			asked++
			pending++
			addr, _ := n.fsm.MemberAddr(string(s.ID)) // "" when not registered yet
			wg.Go(func() {
				t, err := peers.Term(ctx, string(s.ID), addr, term)
				if err != nil {
					t = 0
				}
				answers <- answer{string(s.ID), t, err != nil && addr == ""}
			})
		}
	}
	defer func() {
		cancel() // the calls still out end at once
		wg.Wait()
	}()
	// Ask only as many as the quorum needs; the others only when one of
	// those fails, answers in an earlier term, or is slow.
	ask(need - got)
	hedge := time.NewTimer(n.cfg.HeartbeatTimeout / confirmHedgeDiv)
	defer hedge.Stop()
	var order []string
	for pending > 0 {
		select {
		case a := <-answers:
			pending--
			switch {
			case a.term == term:
				got++
				order = append(order, a.id)
			case a.term > term:
				return 0, fmt.Errorf("%w: a member is in term %d, after %d", ErrNotLeader, a.term, term)
			default:
				if a.unregistered {
					unregistered++
				}
				ask(len(others))
			}
		case <-hedge.C:
			ask(len(others))
		}
		if got >= need {
			n.conf.mu.Lock()
			n.conf.answered = order
			n.conf.mu.Unlock()
			return term, nil
		}
	}
	if unregistered > 0 {
		return 0, fmt.Errorf("%w: %d of them", errUnregistered, unregistered)
	}
	return 0, fmt.Errorf("%w: %d of %d voters answered in term %d", ErrNotConfirmed, got, voters, term)
}

// confirmHedgeDiv: a round asks the members it has not asked yet when the
// first ones have not answered within HeartbeatTimeout/confirmHedgeDiv,
// the leader's heartbeat interval.
const confirmHedgeDiv = 10

// rank is id's place in the last round's answers; those not in it last.
func rank(answered []string, id string) int {
	if i := slices.Index(answered, id); i >= 0 {
		return i
	}
	return len(answered)
}

// Term is this node's current Raft term, what a leader's Peers.Term asks
// for.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }
