package client

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Watch streams the changes that req selects until ctx is done or the stream
// breaks. Opening fails over between endpoints; after a break, open a new
// watch with StartRevision set to the last revision received. The events
// come in batches (WatchBatches) and Recv hands them out one at a time;
// against a node that does not serve WatchBatches, the client uses Watch
// from then on.
func (c *Client) Watch(ctx context.Context, req *pb.WatchRequest) (pb.Leases_WatchClient, error) {
	if c.noWatchBatches.Load() {
		return c.leases.Watch(ctx, req)
	}
	s, err := c.leases.WatchBatches(ctx, req)
	if err != nil {
		return nil, err
	}
	return &batchWatch{ClientStream: s, c: c, ctx: ctx, req: req, batches: s}, nil
}

// batchWatch hands out a WatchBatches stream's events one at a time.
type batchWatch struct {
	grpc.ClientStream // the open stream's, for Header, Trailer, Context and CloseSend
	c                 *Client
	ctx               context.Context
	req               *pb.WatchRequest
	batches           grpc.ServerStreamingClient[pb.WatchEventBatch]
	events            pb.Leases_WatchClient // after falling back to Watch
	buf               []*pb.WatchEvent
	started           bool
}

func (w *batchWatch) Recv() (*pb.WatchEvent, error) {
	for len(w.buf) == 0 {
		if w.events != nil {
			return w.events.Recv()
		}
		b, err := w.batches.Recv()
		if status.Code(err) == codes.Unimplemented && !w.started {
			w.c.noWatchBatches.Store(true)
			if w.events, err = w.c.leases.Watch(w.ctx, w.req); err != nil {
				return nil, err
			}
			w.ClientStream = w.events
			continue
		}
		if err != nil {
			return nil, err
		}
		w.started = true
		w.buf = b.GetEvents()
	}
	ev := w.buf[0]
	w.buf[0] = nil
	w.buf = w.buf[1:]
	return ev, nil
}

// RecvMsg is Recv into m, which must be a *pb.WatchEvent.
func (w *batchWatch) RecvMsg(m any) error {
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
// every event in revision order. A broken stream is opened again (on the
// next endpoint, after a backoff) from the last revision seen, so no event
// is missed or repeated. When the server no longer keeps that revision
// (OutOfRange), onReset must re-read the state and return the revision to
// watch from; follow then goes on from there. follow returns ctx's error,
// or an error that a retry cannot help (ErrInvalid, ErrPermission,
// ErrClosed).
func (c *Client) follow(ctx context.Context, req *pb.WatchRequest, onEvent func(*pb.WatchEvent), onReset func() uint64) error {
	req = proto.Clone(req).(*pb.WatchRequest)
	// Callers watch from the revision of their own read, which may be 0 on
	// a store never written: replay makes even 0 exact.
	req.Replay = true
	failures := 0
	for {
		err := c.followOnce(ctx, req, onEvent, func() { failures = 0 })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, ErrInvalid), errors.Is(err, ErrPermission), errors.Is(err, ErrClosed):
			return err
		case status.Code(err) == codes.OutOfRange:
			req.StartRevision = onReset()
		}
		if err != io.EOF {
			n := uint32(len(c.conns))
			i := c.cur.Load()
			c.cur.CompareAndSwap(i, (i+1)%n)
		}
		c.log.Debug("watch broken, resuming", "revision", req.StartRevision, "error", err)
		if err := c.sleep(ctx, c.backoff(failures)); err != nil {
			return err
		}
		failures++
	}
}

func (c *Client) followOnce(ctx context.Context, req *pb.WatchRequest, onEvent func(*pb.WatchEvent), progress func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Watch(ctx, req)
	if err != nil {
		return err
	}
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		req.StartRevision = ev.GetRevision()
		progress()
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
