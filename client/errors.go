package client

import (
	"context"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// mapError turns a gRPC status error into one that errors.Is matches
// against the package's sentinels. It is the inverse of the code table in
// transport/.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var kind error
	switch st.Code() {
	case codes.NotFound:
		kind = ErrNotFound
	case codes.FailedPrecondition:
		kind = ErrStaleToken
	case codes.InvalidArgument:
		kind = ErrInvalid
	case codes.PermissionDenied:
		kind = ErrPermission
	case codes.Unavailable:
		kind = ErrUnavailable
	case codes.DeadlineExceeded:
		kind = context.DeadlineExceeded
	case codes.Canceled:
		kind = context.Canceled
	default:
		return err
	}
	return &statusError{kind: kind, st: st}
}

// statusError is a server's answer: errors.Is sees kind, status.Code and
// status.FromError see st, and the message has both.
type statusError struct {
	kind error
	st   *status.Status
}

func (e *statusError) Error() string {
	msg := e.st.Message()
	if msg == "" || msg == e.kind.Error() {
		return e.kind.Error()
	}
	return e.kind.Error() + ": " + msg
}

func (e *statusError) Unwrap() error { return e.kind }

// GRPCStatus lets status.Code and status.FromError see the original status.
func (e *statusError) GRPCStatus() *status.Status { return e.st }

// mappedStream maps the errors of a stream like those of unary calls. io.EOF,
// the normal end of a stream, passes unchanged.
type mappedStream struct{ grpc.ClientStream }

func (s mappedStream) SendMsg(m any) error { return mapStreamError(s.ClientStream.SendMsg(m)) }
func (s mappedStream) RecvMsg(m any) error { return mapStreamError(s.ClientStream.RecvMsg(m)) }

func mapStreamError(err error) error {
	if err == io.EOF {
		return err
	}
	return mapError(err)
}
