package client

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

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
