package transport

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/node"
)

// Errors of the transport, besides those it maps from fsm and node.
var (
	// ErrCompacted: a watch asked to resume from a revision whose events
	// are no longer kept.
	ErrCompacted = errors.New("transport: watch revision compacted")
	// ErrWatchOverflow: a watcher fell too far behind and was dropped.
	ErrWatchOverflow = errors.New("transport: watch fell behind")
	// ErrNoLeader: no leader is known to forward to.
	ErrNoLeader = errors.New("transport: no leader known")
	// ErrClosed: the server is closed and reaches no other node.
	ErrClosed = errors.New("transport: server closed")
	// ErrLeaderSilent: the leader did not answer a forwarded call within
	// the forward bound.
	ErrLeaderSilent = errors.New("transport: the leader did not answer in time")
)

// codeTable maps every sentinel to its gRPC code: the one place where
// errors become codes.
var codeTable = []struct {
	err  error
	code codes.Code
}{
	{fsm.ErrNotFound, codes.NotFound},
	{fsm.ErrNotHolder, codes.FailedPrecondition},
	{fsm.ErrConflict, codes.Aborted},
	{fsm.ErrExists, codes.AlreadyExists},
	{fsm.ErrQueueFull, codes.ResourceExhausted},
	// Not Aborted: a fresh read and a retry do not help before the
	// delay ends, so writers that retry conflicts must not spin on it.
	{fsm.ErrLockDelayed, codes.FailedPrecondition},
	{fsm.ErrBadCommand, codes.Internal},
	{fsm.ErrClusterTooOld, codes.FailedPrecondition},
	{node.ErrNotLeader, codes.Unavailable},
	{node.ErrNotReady, codes.Unavailable},
	{node.ErrShuttingDown, codes.Unavailable},
	{ErrClosed, codes.Unavailable},
	{node.ErrUnknownMember, codes.NotFound},
	{ErrNoLeader, codes.Unavailable},
	{ErrLeaderSilent, codes.Unavailable},
	{node.ErrLeaderChanged, codes.Unavailable},
	{ErrCompacted, codes.OutOfRange},
	{ErrWatchOverflow, codes.ResourceExhausted},
	{ErrTooManyWatches, codes.ResourceExhausted},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// toStatus turns err into a gRPC status error. Errors that already carry a
// status pass through. lease, when not nil, rides along as a detail, so a
// refused renewal tells the caller who holds the lease now.
func toStatus(err error, lease *fsm.Lease) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	for _, e := range codeTable {
		if errors.Is(err, e.err) {
			code = e.code
			break
		}
	}
	st := status.New(code, err.Error())
	if lease != nil {
		if withLease, derr := st.WithDetails(writtenPB(lease)); derr == nil {
			st = withLease
		}
	}
	return st.Err()
}

func invalid(format string, args ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, args...))
}

func invalidErr(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.InvalidArgument, err.Error())
}
