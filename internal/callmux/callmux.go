// Package callmux serves the Calls stream of the Leases API: unary calls
// multiplexed over one gRPC stream, each run through the server's unary
// interceptors and handler as if it had come as a call of its own.
package callmux

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// maxCallsInFlight bounds the calls one Calls stream runs at once. Past it
// the stream stops reading, and HTTP/2 flow control holds the client back.
// A variable for the tests.
var maxCallsInFlight = 1024

// Serve runs the calls that arrive on stream, each in its own goroutine
// through unary and srv's handler for its method; answers go out
// as calls finish. It returns when the client ends the stream (after the
// calls in flight are answered), when the stream breaks, or when stop is
// closed (codes.Unavailable, after answering the calls received so far).
func Serve(stream pb.Leases_CallsServer, srv pb.LeasesServer, unary grpc.UnaryServerInterceptor, stop <-chan struct{}) error {
	select {
	case <-stop:
		return errStopping
	default:
	}
	ctx := stream.Context()
	cs := &callStream{srv: srv, unary: unary, stream: stream, inflight: make(map[uint64]context.CancelFunc)}
	defer cs.wg.Wait()

	// The receiver is owned by Serve: it ends when Recv fails, which
	// happens at the latest when the handler returns and gRPC ends the
	// stream.
	reqs := make(chan *pb.CallRequest)
	recvErr := make(chan error, 1)
	slots := make(chan struct{}, maxCallsInFlight)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			if !req.GetCancel() {
				select { // a slot per call: the bound on calls in flight
				case slots <- struct{}{}:
				case <-ctx.Done():
					return
				}
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
			if req.GetCancel() {
				cs.cancel(req.GetId())
				continue
			}
			cs.start(ctx, req, func() { <-slots })
		case err := <-recvErr:
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			if err == io.EOF {
				// The client sent its last call: answer the calls in
				// flight (the deferred Wait) and end the stream.
				return nil
			}
			return err
		case <-stop:
			return errStopping
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

var errStopping = status.Error(codes.Unavailable, "node is shutting down")

// callStream is the state of one Calls stream.
type callStream struct {
	srv    pb.LeasesServer
	unary  grpc.UnaryServerInterceptor
	stream pb.Leases_CallsServer
	wg     sync.WaitGroup

	sendMu sync.Mutex // gRPC allows one sender at a time

	mu       sync.Mutex
	inflight map[uint64]context.CancelFunc
}

// start runs one call; done is called when it is answered.
func (cs *callStream) start(ctx context.Context, req *pb.CallRequest, done func()) {
	id := req.GetId()
	fail := func(err error) {
		defer done()
		cs.send(&pb.CallResponse{Id: id, Error: callError(err)})
	}
	var cancel context.CancelFunc
	if t := req.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 {
			fail(status.Errorf(codes.InvalidArgument, "call %d: timeout must be a positive duration", id))
			return
		}
		ctx, cancel = context.WithTimeout(ctx, t.AsDuration())
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	cs.mu.Lock()
	if _, dup := cs.inflight[id]; dup {
		cs.mu.Unlock()
		cancel()
		fail(status.Errorf(codes.InvalidArgument, "call %d is already in flight on this stream", id))
		return
	}
	cs.inflight[id] = cancel
	cs.mu.Unlock()

	cs.wg.Go(func() {
		defer done()
		resp := cs.dispatch(ctx, req)
		cs.mu.Lock()
		delete(cs.inflight, id)
		cs.mu.Unlock()
		cancel()
		cs.send(resp)
	})
}

// cancel withdraws a call in flight; an unknown id (a call already
// answered) is ignored.
func (cs *callStream) cancel(id uint64) {
	cs.mu.Lock()
	c := cs.inflight[id]
	cs.mu.Unlock()
	if c != nil {
		c()
	}
}

// send answers one call. A failed send means the stream is gone, and
// with it the client's wait for the answer, so the error is dropped.
func (cs *callStream) send(resp *pb.CallResponse) {
	cs.sendMu.Lock()
	defer cs.sendMu.Unlock()
	_ = cs.stream.Send(resp)
}

// callError is a status error as the Calls stream carries it.
func callError(err error) *pb.CallError {
	p := status.Convert(err).Proto()
	return &pb.CallError{Code: p.GetCode(), Message: p.GetMessage(), Details: p.GetDetails()}
}

// leaderKey holds, in a call's context, where SetLeader records the
// leader's address: a Calls stream has no per-call header.
type leaderKey struct{}

// SetLeader names the leader's gRPC address in the answer of the call that
// ctx belongs to, for a node that forwarded the call. It reports false when
// ctx is not a call on a Calls stream (set a header then).
func SetLeader(ctx context.Context, addr string) bool {
	p, ok := ctx.Value(leaderKey{}).(*string)
	if ok {
		*p = addr
	}
	return ok
}

// dispatch runs one multiplexed call and returns its answer.
func (cs *callStream) dispatch(ctx context.Context, req *pb.CallRequest) *pb.CallResponse {
	resp := &pb.CallResponse{Id: req.GetId()}
	ctx = context.WithValue(ctx, leaderKey{}, &resp.Leader)
	u, srv := cs.unary, cs.srv
	var err error
	switch r := req.GetRequest().(type) {
	case *pb.CallRequest_Acquire:
		a := &pb.CallResponse_Acquire{}
		a.Acquire, err = call(ctx, u, pb.Leases_Acquire_FullMethodName, r.Acquire, srv.Acquire)
		resp.Response = a
	case *pb.CallRequest_Renew:
		a := &pb.CallResponse_Renew{}
		a.Renew, err = call(ctx, u, pb.Leases_Renew_FullMethodName, r.Renew, srv.Renew)
		resp.Response = a
	case *pb.CallRequest_Release:
		a := &pb.CallResponse_Release{}
		a.Release, err = call(ctx, u, pb.Leases_Release_FullMethodName, r.Release, srv.Release)
		resp.Response = a
	case *pb.CallRequest_Get:
		a := &pb.CallResponse_Get{}
		a.Get, err = call(ctx, u, pb.Leases_Get_FullMethodName, r.Get, srv.Get)
		resp.Response = a
	case *pb.CallRequest_Delete:
		a := &pb.CallResponse_Delete{}
		a.Delete, err = call(ctx, u, pb.Leases_Delete_FullMethodName, r.Delete, srv.Delete)
		resp.Response = a
	case *pb.CallRequest_Write:
		a := &pb.CallResponse_Write{}
		a.Write, err = call(ctx, u, pb.Leases_Write_FullMethodName, r.Write, srv.Write)
		resp.Response = a
	default:
		err = status.Errorf(codes.InvalidArgument, "call %d names no request", req.GetId())
	}
	if err != nil {
		resp.Response = nil
		resp.Error = callError(err)
	}
	return resp
}

// call runs handler h for method through unary, as gRPC would for a
// unary call.
func call[Req, Resp any](ctx context.Context, unary grpc.UnaryServerInterceptor, method string, req Req, h func(context.Context, Req) (Resp, error)) (Resp, error) {
	var zero Resp
	out, err := unary(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		return h(ctx, r.(Req))
	})
	if err != nil {
		return zero, err
	}
	resp, ok := out.(Resp)
	if !ok {
		return zero, status.Errorf(codes.Internal, "%s answered %T", method, out)
	}
	return resp, nil
}

// Chain composes interceptors the way grpc.ChainUnaryInterceptor does:
// the first one is outermost.
func Chain(ics ...grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		next := h
		for i := len(ics) - 1; i >= 0; i-- {
			ic, inner := ics[i], next
			next = func(ctx context.Context, req any) (any, error) { return ic(ctx, req, info, inner) }
		}
		return next(ctx, req)
	}
}
