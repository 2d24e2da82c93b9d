package transport

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/node"
)

// relayKeepAlive pipes a follower's KeepAlive stream to the leader.
//
// The leader answers a stream's messages in order, so the relay keeps the
// messages it sent up and has no answer for yet, oldest first. When this
// node sees another leader (or none), when the oldest message waits past
// the forward bound, or when the upstream breaks with Unavailable, the
// relay moves to the next leader, never the one it left, and sends the
// unanswered messages again: renewals are safe to repeat. A message that
// was sent twice already is not sent a third time; the stream then ends
// with Unavailable, and the client opens a new one.
func (s *Server) relayKeepAlive(stream pb.Leases_KeepAliveServer) error {
	ctx := stream.Context()
	ld, err := s.leader(ctx)
	if err != nil {
		return err
	}
	s.hint(ctx, ld.addr) // in the header, before any answer
	r := &relay{s: s, ctx: ctx, down: stream, quiet: time.NewTimer(time.Hour)}
	r.quiet.Stop()
	defer r.quiet.Stop()
	if err := r.open(ld); err != nil {
		return err
	}
	defer r.close()
	// The receiver is owned by the handler: it ends when Recv fails, which
	// happens at the latest when the handler returns and gRPC ends the
	// stream.
	reqs := make(chan *pb.KeepAliveRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case req := <-reqs:
			r.pending = append(r.pending, relayed{req: req})
			if len(r.pending) == 1 {
				r.quiet.Reset(s.bound)
			}
			// A failed send shows as the upstream's error, below.
			_ = r.up.Send(req)
		case err := <-recvErr:
			if !errors.Is(err, io.EOF) {
				return err
			}
			// The client is done sending: let the leader answer what is in
			// flight, then end.
			r.sendDone = true
			_ = r.up.CloseSend()
		case a := <-r.answers:
			if a.err == nil {
				if len(r.pending) == 0 {
					return status.Error(codes.Internal, "relay: the leader answered a KeepAlive message that was not sent")
				}
				r.pending = r.pending[1:]
				if len(r.pending) > 0 {
					r.quiet.Reset(s.bound)
				} else {
					r.quiet.Stop()
				}
				if err := stream.Send(a.resp); err != nil {
					return err
				}
				continue
			}
			if errors.Is(a.err, io.EOF) && r.sendDone && len(r.pending) == 0 {
				return nil
			}
			out := r.outcome(a.err)
			if out == answered {
				return a.err // the leader's own answer, such as InvalidArgument
			}
			if err := r.move(out, a.err); err != nil {
				return err
			}
		case <-r.upCtx.Done():
			// Ended by a leader change or the bound (the reader may stop
			// without reporting it).
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			if err := r.move(r.outcome(nil), context.Cause(r.upCtx)); err != nil {
				return err
			}
		case <-r.quiet.C:
			r.cancel(ErrLeaderSilent)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// relay is the state of one relayed KeepAlive stream, kept by its handler.
type relay struct {
	s        *Server
	ctx      context.Context
	down     pb.Leases_KeepAliveServer
	pending  []relayed   // sent up, unanswered, oldest first
	quiet    *time.Timer // runs while a message waits: the forward bound
	sendDone bool        // the client closed its side

	// The upstream, to ld.
	ld      leader
	up      pb.Leases_KeepAliveClient
	upCtx   context.Context
	cancel  context.CancelCauseFunc
	answers chan answer   // from the upstream's reader
	read    chan struct{} // closed when the reader has ended
}

// relayed is a message sent up; resent when it went to a second leader.
type relayed struct {
	req    *pb.KeepAliveRequest
	resent bool
}

type answer struct {
	resp *pb.KeepAliveResponse
	err  error
}

// open starts the upstream to ld and its reader. The upstream ends when
// the node sees another leader; opening it ends after the forward bound.
func (r *relay) open(ld leader) error {
	c, err := r.s.conn(ld.addr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "leader %s at %s: %v", ld.id, ld.addr, err)
	}
	ctx, cancel := context.WithCancelCause(r.ctx)
	stop := context.AfterFunc(ld.changed, func() { cancel(node.ErrLeaderChanged) })
	slow := time.AfterFunc(r.s.bound, func() { cancel(ErrLeaderSilent) })
	up, err := pb.NewLeasesClient(c).KeepAlive(r.s.forwardCtx(ctx))
	slow.Stop()
	if err != nil {
		stop()
		cancel(nil)
		if r.ctx.Err() == nil && ctx.Err() != nil {
			err = status.Errorf(codes.Unavailable, "%v: opening the relay to %s at %s", context.Cause(ctx), ld.id, ld.addr)
		}
		return err
	}
	answers, read := make(chan answer), make(chan struct{})
	go func() {
		defer close(read)
		for {
			resp, err := up.Recv()
			select {
			case answers <- answer{resp, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	r.ld, r.up, r.upCtx, r.answers, r.read = ld, up, ctx, answers, read
	r.cancel = func(cause error) {
		stop()
		cancel(cause)
	}
	return nil
}

// close ends the upstream and waits for its reader.
func (r *relay) close() {
	r.cancel(nil)
	<-r.read
}

// outcome classifies the upstream's end: answered means the leader ended
// the stream with an answer of its own, to pass on.
func (r *relay) outcome(err error) outcome {
	if r.upCtx.Err() != nil {
		if context.Cause(r.upCtx) == ErrLeaderSilent {
			return silent
		}
		return changed
	}
	if errors.Is(err, io.EOF) || status.Code(err) == codes.Unavailable {
		// The leader ends a stream only after the relay's CloseSend, so an
		// early end is a failure too.
		return failed
	}
	return answered
}

// move takes the stream to the next leader after the upstream ended
// without answering, and sends the unanswered messages there.
func (r *relay) move(out outcome, err error) error {
	gone := r.ld
	r.close()
	retry := true
	for _, p := range r.pending {
		retry = retry && !p.resent
	}
	next, ok := leader{}, false
	if retry {
		next, ok = r.s.nextLeader(r.ctx, gone, out != failed)
	}
	if !ok {
		r.s.met.forwardCut.WithLabelValues(outcomeLabels[out], "gave_up").Inc()
		hint, err := r.s.gaveUp(gone, out, err)
		if hint != "" {
			// The header went out with the first answer, or holds the
			// leader the stream began with: name this one in the trailer.
			r.down.SetTrailer(metadata.Pairs(leaderHeader, hint))
		}
		return err
	}
	if len(r.pending) > 0 {
		r.s.met.forwardCut.WithLabelValues(outcomeLabels[out], "retried").Inc()
	}
	if err := r.open(next); err != nil {
		return err
	}
	for i := range r.pending {
		r.pending[i].resent = true
		_ = r.up.Send(r.pending[i].req)
	}
	if r.sendDone {
		_ = r.up.CloseSend()
	}
	if len(r.pending) > 0 {
		r.quiet.Reset(r.s.bound)
	}
	return nil
}
