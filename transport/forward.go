package transport

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/internal/callmux"
	"github.com/leasekeeper/leasekeeper/node"
)

// A follower forwards writes and linearizable reads to the leader. A
// leader that stops answering without closing its connections (a paused
// process, a partition that drops packets) must not hold the caller until
// its deadline, so every forwarded attempt
//
//   - ends the moment this node sees another leader, or none
//     (node.LeaderWatch), and
//   - ends after the forward bound, HeartbeatTimeout + ElectionTimeout
//     (plus the leader's own wait for a long poll): by then a follower
//     has declared a silent leader gone (one to two heartbeat timeouts)
//     and the others have had an election timeout to pick the next.
//
// A call that is safe to repeat (docs/design.md, "When the leader goes
// silent") is then sent once more, to the next leader, if one is known
// within another bound and the caller's deadline leaves time; never to
// the node that just went silent. Any other call gets Unavailable naming
// the next leader, when known.

// fwd says how a call may be forwarded.
type fwd struct {
	// retry: running the call twice has the effect of running it once,
	// so it may go to the next leader when the first gave no answer.
	retry bool
	// wait is how long the leader itself may hold the call before it
	// answers (the long poll of Acquire with wait); it adds to the bound.
	wait time.Duration
	// noBound: no time bound, only the leader watch (membership changes,
	// which the leader may take long to carry out).
	noBound bool
	// noWatch: a leader change does not end the call (TransferLeadership,
	// whose success is a change of leader).
	noWatch bool
}

// outcome is how a forwarded attempt ended.
type outcome int

const (
	// answered: the leader answered, or the caller's own context ended.
	answered outcome = iota
	// failed: the call failed with Unavailable, from the connection or
	// from a node that no longer leads.
	failed
	// changed: this node saw another leader, or none, while waiting.
	changed
	// silent: no answer within the forward bound.
	silent
)

var outcomeLabels = [...]string{answered: "answered", failed: "failed", changed: "leader_changed", silent: "leader_silent"}

// leader is a leader to forward to, as the node saw it, with the context
// that ends when the node sees another.
type leader struct {
	id, addr string
	changed  context.Context
}

// leader returns the leader to forward a call to.
func (s *Server) leader(ctx context.Context) (leader, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return leader{}, status.Errorf(codes.Unavailable, "node %s is not the leader (request forwarded by %s)", s.node.ID(), md.Get(forwardedKey)[0])
	}
	id, addr, changed := s.node.LeaderWatch()
	if addr == "" {
		if id != "" {
			return leader{}, status.Errorf(codes.Unavailable, "%v: leader %s has not registered its address yet", ErrNoLeader, id)
		}
		return leader{}, status.Errorf(codes.Unavailable, "%v: node %s knows no leader", ErrNoLeader, s.node.ID())
	}
	return leader{id: id, addr: addr, changed: changed}, nil
}

// hint names the leader in the answer to a forwarded call, once per call:
// a unary call's header values add up, and a client takes the first.
func (s *Server) hint(ctx context.Context, addr string) {
	if addr == "" {
		return
	}
	if !callmux.SetLeader(ctx, addr) {
		_ = grpc.SetHeader(ctx, metadata.Pairs(leaderHeader, addr)) // fails harmlessly on streams already answered
	}
}

// forward runs call against the leader's Leases service.
func forward[T any](ctx context.Context, s *Server, o fwd, call func(context.Context, pb.LeasesClient) (T, error)) (T, error) {
	return forwardTo(ctx, s, o, func(ctx context.Context, c *grpc.ClientConn) (T, error) {
		return call(ctx, pb.NewLeasesClient(c))
	})
}

func forwardCluster[T any](ctx context.Context, s *Server, o fwd, call func(context.Context, pb.ClusterClient) (T, error)) (T, error) {
	return forwardTo(ctx, s, o, func(ctx context.Context, c *grpc.ClientConn) (T, error) {
		return call(ctx, pb.NewClusterClient(c))
	})
}

// forwardTo runs call against the leader, and once more against the next
// leader when the first gave no answer and o allows a retry.
func forwardTo[T any](ctx context.Context, s *Server, o fwd, call func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	ld, err := s.leader(ctx)
	if err != nil {
		return zero, err
	}
	res, out, err := attempt(ctx, s, ld, o, call)
	if out == answered {
		s.hint(ctx, ld.addr)
		return res, err
	}
	if o.retry {
		// After a plain failure only a leader known already is tried: the
		// one that failed may simply not be ready yet.
		if next, ok := s.nextLeader(ctx, ld, out != failed); ok {
			s.met.forwardCut.WithLabelValues(outcomeLabels[out], "retried").Inc()
			ld = next
			res, out, err = attempt(ctx, s, ld, o, call)
			if out == answered {
				s.hint(ctx, ld.addr)
				return res, err
			}
		}
	}
	s.met.forwardCut.WithLabelValues(outcomeLabels[out], "gave_up").Inc()
	hint, err := s.gaveUp(ld, out, err)
	s.hint(ctx, hint)
	return zero, err
}

// attempt runs call once against ld, bounded as o says.
func attempt[T any](ctx context.Context, s *Server, ld leader, o fwd, call func(context.Context, *grpc.ClientConn) (T, error)) (T, outcome, error) {
	var zero T
	c, err := s.conn(ld.addr)
	if err != nil {
		return zero, answered, status.Errorf(codes.Unavailable, "leader %s at %s: %v", ld.id, ld.addr, err)
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !o.noWatch {
		stop := context.AfterFunc(ld.changed, func() { cancel(node.ErrLeaderChanged) })
		defer stop()
	}
	if !o.noBound {
		var cancelT context.CancelFunc
		actx, cancelT = context.WithTimeoutCause(actx, s.bound+o.wait, ErrLeaderSilent)
		defer cancelT()
	}
	res, err := call(s.forwardCtx(actx), c)
	if err != nil && actx.Err() == nil && status.Code(err) == codes.DeadlineExceeded {
		if dl, ok := actx.Deadline(); ok && time.Until(dl) < deadlineSkew {
			// The leader's copy of the deadline (rounded down on the
			// wire) ended the call a moment before ours did.
			<-actx.Done()
		}
	}
	switch {
	case err == nil || ctx.Err() != nil:
		return res, answered, err
	case actx.Err() != nil:
		if context.Cause(actx) == ErrLeaderSilent {
			return zero, silent, err
		}
		return zero, changed, err
	case status.Code(err) == codes.Unavailable:
		return zero, failed, err
	}
	return res, answered, err
}

// deadlineSkew is how much earlier the leader's copy of a deadline may
// end a call than the deadline here.
const deadlineSkew = 50 * time.Millisecond

// nextLeader returns a leader other than gone to retry a call on. With
// wait it waits for one, for up to the forward bound (an election after
// the followers gave up on gone), and stops pollMargin before the
// caller's deadline so the caller still hears why.
func (s *Server) nextLeader(ctx context.Context, gone leader, wait bool) (leader, bool) {
	limit := s.bound
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl)-pollMargin)
	}
	if limit <= 0 {
		return leader{}, false
	}
	if !wait {
		limit = 0
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	// A leader whose address is not registered yet is looked at again.
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		id, addr, changed := s.node.LeaderWatch()
		if id != "" && addr != "" && id != gone.id && addr != gone.addr {
			return leader{id: id, addr: addr, changed: changed}, true
		}
		select {
		case <-changed.Done():
		case <-poll.C:
		case <-timer.C:
			return leader{}, false
		case <-ctx.Done():
			return leader{}, false
		}
	}
}

// gaveUp is the error of a forwarded call that got no answer from ld, and
// the leader to name in the answer: the current one, unless that is still
// ld (which is named only after a plain failure, as before forwarding
// was bounded).
func (s *Server) gaveUp(ld leader, out outcome, err error) (string, error) {
	id, addr, _ := s.node.LeaderWatch()
	if id == ld.id || addr == ld.addr {
		id, addr = "", ""
	}
	if out == failed {
		if addr == "" {
			addr = ld.addr
		}
		return addr, err
	}
	why := node.ErrLeaderChanged
	if out == silent {
		why = ErrLeaderSilent
	}
	next := "no leader known yet"
	if id != "" {
		next = "leader now " + id + " at " + addr
	}
	return addr, status.Errorf(codes.Unavailable, "%v: forwarded to %s at %s, %s; a write may or may not have taken effect", why, ld.id, ld.addr, next)
}
