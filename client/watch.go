package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Watch streams the changes that req selects until ctx is done or the stream
// breaks. Opening fails over between endpoints; after a break, open a new
// watch with StartRevision set to the last revision received. The events
// come in batches (WatchBatches) and Recv hands them out one at a time;
// against a node that does not serve WatchBatches, the client uses Watch
// from then on.
//
// Unless req sets its own ProgressInterval, the client asks for progress
// every Config.WatchProgressInterval and keeps the PROGRESS events to
// itself. Either way a stream that brought nothing for three intervals is
// given up: Recv fails with codes.Unavailable (ErrUnavailable), the node
// is left for the next endpoint, and the caller resumes as after any
// break.
func (c *Client) Watch(ctx context.Context, req *pb.WatchRequest) (pb.Leases_WatchClient, error) {
	return c.watch(ctx, req, -1, false)
}

// watchSilentIntervals is how many progress intervals of silence give a
// watch up: one late message is not a silent node.
const watchSilentIntervals = 3

// watch opens a watch as Watch does, not on endpoint avoid (-1: any)
// first. With progress set the caller receives the PROGRESS events.
func (c *Client) watch(ctx context.Context, req *pb.WatchRequest, avoid int, progress bool) (*watchStream, error) {
	every := req.GetProgressInterval().AsDuration()
	if req.GetProgressInterval() == nil && c.cfg.WatchProgressInterval > 0 {
		req = proto.Clone(req).(*pb.WatchRequest)
		every = c.cfg.WatchProgressInterval
		req.ProgressInterval = durationpb.New(every)
	} else if req.GetProgressInterval() != nil {
		// The caller asked for progress: it gets the events.
		progress = true
	}
	sctx, cancel := context.WithCancelCause(ctx)
	w := &watchStream{c: c, ctx: sctx, cancel: cancel, req: req, passProgress: progress, base: c.clock.Now()}
	if every > 0 {
		w.limit = watchSilentIntervals * max(every, MinWatchProgressInterval)
	}
	method := pb.Leases_WatchBatches_FullMethodName
	if c.noWatchBatches.Load() {
		method = pb.Leases_Watch_FullMethodName
	}
	err := c.retryFrom(ctx, method, false, avoid, func(a attempt) error {
		w.endpoint = a.endpoint
		return w.open(c.noWatchBatches.Load())
	})
	if err != nil {
		cancel(nil)
		return nil, err
	}
	if w.limit > 0 {
		w.done = make(chan struct{})
		go w.watchdog()
	}
	return w, nil
}

// watchStream is one watch: a WatchBatches stream whose events it hands
// out one at a time (or a Watch stream, from a node without batches), with
// a watchdog that gives it up when it has been silent too long.
type watchStream struct {
	grpc.ClientStream // the open stream's, for Header, Trailer, Context and CloseSend
	c                 *Client
	ctx               context.Context // the stream's; cancelled to give it up
	cancel            context.CancelCauseFunc
	req               *pb.WatchRequest
	endpoint          uint32
	batches           grpc.ServerStreamingClient[pb.WatchEventBatch]
	events            pb.Leases_WatchClient // after falling back to Watch
	buf               []*pb.WatchEvent
	started           bool
	passProgress      bool // hand PROGRESS events to the caller

	// limit is the silence that gives the stream up (0: never); heard is
	// when a message last came, as time since base on the client's clock.
	limit  time.Duration
	base   time.Time
	heard  atomic.Int64
	rev    atomic.Uint64 // the last revision received, for the error
	silent atomic.Bool   // the watchdog gave the stream up
	done   chan struct{} // closed when the watchdog returns; nil: none
}

// open opens the stream on w.endpoint.
func (w *watchStream) open(single bool) error {
	lc := pb.NewLeasesClient(w.c.conns[w.endpoint])
	var err error
	if single {
		w.events, err = lc.Watch(w.ctx, w.req)
		w.ClientStream = w.events
	} else {
		w.batches, err = lc.WatchBatches(w.ctx, w.req)
		w.ClientStream = w.batches
	}
	return err
}

// watchdog gives the stream up once nothing came for w.limit.
func (w *watchStream) watchdog() {
	defer close(w.done)
	t := w.c.clock.NewTimer(w.limit)
	defer t.Stop()
	for {
		select {
		case <-t.C():
		case <-w.ctx.Done():
			return
		case <-w.c.ctx.Done():
			return
		}
		quiet := w.c.clock.Since(w.base) - time.Duration(w.heard.Load())
		if quiet < w.limit {
			t.Reset(w.limit - quiet)
			continue
		}
		w.silent.Store(true)
		n := uint32(len(w.c.conns))
		w.c.cur.CompareAndSwap(w.endpoint, (w.endpoint+1)%n)
		w.cancel(&timeoutError{endpoint: w.c.endpoints[w.endpoint], after: w.limit,
			why: fmt.Sprintf("watch silent; resume from revision %d", w.rev.Load())})
		return
	}
}

func (w *watchStream) Recv() (*pb.WatchEvent, error) {
	for len(w.buf) == 0 {
		var evs []*pb.WatchEvent
		var err error
		if w.events != nil {
			var ev *pb.WatchEvent
			if ev, err = w.events.Recv(); err == nil {
				evs = []*pb.WatchEvent{ev}
			}
		} else {
			var b *pb.WatchEventBatch
			b, err = w.batches.Recv()
			if status.Code(err) == codes.Unimplemented && !w.started {
				w.c.noWatchBatches.Store(true)
				if err = w.open(true); err != nil {
					return nil, w.fail(err)
				}
				continue
			}
			evs = b.GetEvents()
		}
		if err != nil {
			return nil, w.fail(err)
		}
		w.started = true
		w.heard.Store(int64(w.c.clock.Since(w.base)))
		if len(evs) > 0 {
			w.rev.Store(evs[len(evs)-1].GetRevision())
		}
		if !w.passProgress {
			evs = slices.DeleteFunc(evs, func(ev *pb.WatchEvent) bool { return ev.GetType() == pb.WatchEvent_PROGRESS })
		}
		w.buf = evs
	}
	ev := w.buf[0]
	w.buf[0] = nil
	w.buf = w.buf[1:]
	return ev, nil
}

// fail ends the stream with err, or with the watchdog's reason when it
// gave the stream up.
func (w *watchStream) fail(err error) error {
	if w.silent.Load() {
		err = context.Cause(w.ctx)
	}
	w.cancel(nil)
	if w.done != nil {
		<-w.done
	}
	return mapStreamError(err)
}

// RecvMsg is Recv into m, which must be a *pb.WatchEvent.
func (w *watchStream) RecvMsg(m any) error {
	dst, ok := m.(*pb.WatchEvent)
	if !ok {
		return status.Errorf(codes.Internal, "client: a watch receives *WatchEvent, not %T", m)
	}
	ev, err := w.Recv()
	if err != nil {
		return err
	}
	proto.Reset(dst)
	proto.Merge(dst, ev)
	return nil
}

// follow watches what req selects until ctx is done, calling onEvent for
// every event in revision order, and heard (when set) for every message
// that comes, progress included. A broken or silent stream is opened
// again (on the next endpoint, after a backoff) from the last revision
// seen, so no event is missed or repeated. When the server no longer keeps
// that revision (OutOfRange), onReset must re-read the state and return
// the revision to watch from; follow then goes on from there. follow
// returns ctx's error, or an error that a retry cannot help (ErrInvalid,
// ErrPermission, ErrClosed).
func (c *Client) follow(ctx context.Context, req *pb.WatchRequest, onEvent func(*pb.WatchEvent), onReset func() uint64, heard func()) error {
	req = proto.Clone(req).(*pb.WatchRequest)
	// Callers watch from the revision of their own read, which may be 0 on
	// a store never written: replay makes even 0 exact.
	req.Replay = true
	if heard == nil {
		heard = func() {}
	}
	failures := 0
	avoid := -1
	for {
		ep, silent, err := c.followOnce(ctx, req, avoid, onEvent, func() { failures = 0; heard() })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrPermission), errors.Is(err, ErrClosed):
			return err
		case status.Code(err) == codes.OutOfRange:
			req.StartRevision = onReset()
		}
		avoid = -1
		if err != io.EOF && ep >= 0 {
			n := uint32(len(c.conns))
			c.cur.CompareAndSwap(uint32(ep), (uint32(ep)+1)%n)
			avoid = ep
		}
		c.log.Debug("watch broken, resuming", "revision", req.StartRevision, "error", err)
		if silent {
			// The silence was the wait; the next node may answer at once.
			continue
		}
		if err := c.sleep(ctx, c.backoff(failures)); err != nil {
			return err
		}
		failures++
	}
}

// followOnce runs one stream of follow, and returns the endpoint it was
// open on (-1: none opened), whether it was given up as silent, and why it
// ended.
func (c *Client) followOnce(ctx context.Context, req *pb.WatchRequest, avoid int, onEvent func(*pb.WatchEvent), progress func()) (int, bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.watch(ctx, req, avoid, true)
	if err != nil {
		return -1, false, err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return int(stream.endpoint), stream.silent.Load(), err
		}
		progress()
		if ev.GetType() == pb.WatchEvent_PROGRESS {
			// Every event it selects up to here has come: resume after it.
			req.StartRevision = max(req.StartRevision, ev.GetRevision())
			continue
		}
		req.StartRevision = ev.GetRevision()
		onEvent(ev)
	}
}

// frees reports whether ev leaves the lease free for a new holding.
func frees(ev *pb.WatchEvent) bool {
	switch ev.GetType() {
	case pb.WatchEvent_RELEASED, pb.WatchEvent_EXPIRED, pb.WatchEvent_DELETED:
		return true
	}
	return false
}

// holderAfter returns who holds the lease after ev ("" when free).
func holderAfter(ev *pb.WatchEvent) string {
	if frees(ev) {
		return ""
	}
	return ev.GetLease().GetHolderIdentity()
}
