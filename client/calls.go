package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// maxCallSize is the largest request sent on a Calls stream. A node
// refuses a message over its size limit by ending the stream, which would
// fail every call on it; a larger request goes as a unary call, whose
// refusal (ResourceExhausted) is its own.
const maxCallSize = 64 << 10

// errNoCalls means the endpoint does not serve the Calls stream.
var errNoCalls = errors.New("client: endpoint does not serve Calls")

// callsConn multiplexes calls to one endpoint.
type callsConn struct {
	c  *Client
	cc *grpc.ClientConn

	mu          sync.Mutex
	cur         *callsStream // nil, or the stream calls go to
	unsupported bool         // the node answered Unimplemented
	closed      bool
	nextID      uint64
}

// callsStream is one open Calls stream and the calls waiting on it.
type callsStream struct {
	stream pb.Leases_CallsClient
	cancel context.CancelFunc

	sendMu sync.Mutex // gRPC allows one sender at a time

	mu      sync.Mutex
	pending map[uint64]chan callResult
	err     error // set when the stream broke; no call waits then
}

type callResult struct {
	resp *pb.CallResponse
	err  error
}

// do runs req on this endpoint's stream and returns the answer, or a
// status error: Unavailable when the stream broke, the context's error
// when ctx ended first. It returns errNoCalls when the call must take the
// unary path.
func (cn *callsConn) do(ctx context.Context, req *pb.CallRequest) (*pb.CallResponse, error) {
	st, id, ch, err := cn.register()
	if err != nil {
		return nil, err
	}
	req.Id = id
	req.Timeout = nil
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			st.forget(id)
			return nil, grpcstatus.FromContextError(context.DeadlineExceeded).Err()
		}
		req.Timeout = durationpb.New(d)
	}
	if err := st.send(req); err != nil {
		st.broke(err)
		cn.drop(st)
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		if st.forget(id) {
			// Best effort: the node stops work it would answer to no one.
			_ = st.send(&pb.CallRequest{Id: id, Cancel: true})
		}
		return nil, grpcstatus.FromContextError(ctx.Err()).Err()
	}
}

// register opens the stream if none is open and enters a new call on it.
func (cn *callsConn) register() (*callsStream, uint64, chan callResult, error) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	switch {
	case cn.closed:
		return nil, 0, nil, grpcstatus.Error(codes.Canceled, ErrClosed.Error())
	case cn.unsupported:
		return nil, 0, nil, errNoCalls
	}
	if cn.cur == nil {
		if s := cn.cc.GetState(); s != connectivity.Ready {
			cn.cc.Connect()
			return nil, 0, nil, errNoCalls
		}
		ctx, cancel := context.WithCancel(cn.c.ctx)
		stream, err := pb.NewLeasesClient(cn.cc).Calls(ctx)
		if err != nil {
			cancel()
			return nil, 0, nil, err
		}
		st := &callsStream{stream: stream, cancel: cancel, pending: make(map[uint64]chan callResult)}
		cn.cur = st
		cn.c.wg.Go(func() { cn.receive(st) })
	}
	cn.nextID++
	ch := make(chan callResult, 1)
	st := cn.cur
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err != nil {
		return nil, 0, nil, st.err
	}
	st.pending[cn.nextID] = ch
	return st, cn.nextID, ch, nil
}

// receive hands each answer to its call until the stream breaks, then
// fails the calls still waiting.
func (cn *callsConn) receive(st *callsStream) {
	defer st.cancel()
	for {
		resp, err := st.stream.Recv()
		if err != nil {
			if grpcstatus.Code(err) == codes.Unimplemented {
				cn.mu.Lock()
				cn.unsupported = true
				cn.mu.Unlock()
				err = errNoCalls
			}
			st.broke(err)
			cn.drop(st)
			return
		}
		st.mu.Lock()
		ch, ok := st.pending[resp.GetId()]
		delete(st.pending, resp.GetId())
		st.mu.Unlock()
		if ok {
			ch <- callResult{resp: resp}
		}
	}
}

// drop stops sending new calls to st.
func (cn *callsConn) drop(st *callsStream) {
	cn.mu.Lock()
	if cn.cur == st {
		cn.cur = nil
	}
	cn.mu.Unlock()
	st.cancel()
}

// close keeps new streams from opening. The open one ends with the
// client's context, which Close cancels first.
func (cn *callsConn) close() {
	cn.mu.Lock()
	cn.closed = true
	cn.mu.Unlock()
}

func (st *callsStream) send(req *pb.CallRequest) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.stream.Send(req)
}

// forget removes a call that no longer waits; it reports whether the call
// was still pending.
func (st *callsStream) forget(id uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	_, ok := st.pending[id]
	delete(st.pending, id)
	return ok
}

// broke fails every waiting call. Their answers are lost, so they fail as
// a unary call whose connection broke does: Unavailable, retried on the
// next endpoint (errNoCalls: on the unary path).
func (st *callsStream) broke(err error) {
	if !errors.Is(err, errNoCalls) {
		err = grpcstatus.Errorf(codes.Unavailable, "calls stream broke: %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
	for id, ch := range st.pending {
		ch <- callResult{err: st.err}
		delete(st.pending, id)
	}
}

// viaCalls runs one call of the Leases API on the Calls streams, failing
// over between endpoints as unary calls do. unary makes the call on the
// unary path through cc; it serves the calls that the streams cannot
// carry.
func viaCalls[T comparable](ctx context.Context, c *Client, method string, req *pb.CallRequest, opts []grpc.CallOption,
	answer func(*pb.CallResponse) T, unary func(cc grpc.ClientConnInterface, opts ...grpc.CallOption) (T, error),
) (T, error) {
	if c.cfg.UnaryCalls || len(opts) > 0 || hasOutgoingMD(ctx) || proto.Size(req) > maxCallSize {
		return unary(failoverConn{c}, opts...)
	}
	var out, zero T
	err := c.retry(ctx, method, func(i uint32) error {
		resp, err := c.calls[i].do(ctx, req)
		if errors.Is(err, errNoCalls) {
			var hdr metadata.MD
			out, err = unary(c.conns[i], grpc.Header(&hdr))
			c.followLeader(hdr.Get(LeaderHeader)...)
			return err
		}
		if err != nil {
			return err
		}
		c.followLeader(resp.GetLeader())
		if e := resp.GetError(); e != nil {
			return grpcstatus.ErrorProto(&status.Status{Code: e.GetCode(), Message: e.GetMessage(), Details: e.GetDetails()})
		}
		if out = answer(resp); out == zero {
			return grpcstatus.Errorf(codes.Internal, "%s: the node answered call %d with no %s answer", method, resp.GetId(), method)
		}
		return nil
	})
	if err != nil {
		return zero, err
	}
	return out, nil
}

func hasOutgoingMD(ctx context.Context) bool {
	md, ok := metadata.FromOutgoingContext(ctx)
	return ok && md.Len() > 0
}

// leasesClient is the Leases API of a Client: the generated client on the
// failover connection, with the unary methods that the node also serves
// over Calls sent there.
type leasesClient struct {
	pb.LeasesClient
	c *Client
}

func (l leasesClient) Acquire(ctx context.Context, in *pb.AcquireRequest, opts ...grpc.CallOption) (*pb.AcquireResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Acquire_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Acquire{Acquire: in}}, opts,
		(*pb.CallResponse).GetAcquire,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.AcquireResponse, error) {
			return pb.NewLeasesClient(cc).Acquire(ctx, in, o...)
		})
}

func (l leasesClient) Renew(ctx context.Context, in *pb.RenewRequest, opts ...grpc.CallOption) (*pb.RenewResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Renew_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Renew{Renew: in}}, opts,
		(*pb.CallResponse).GetRenew,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.RenewResponse, error) {
			return pb.NewLeasesClient(cc).Renew(ctx, in, o...)
		})
}

func (l leasesClient) Release(ctx context.Context, in *pb.ReleaseRequest, opts ...grpc.CallOption) (*pb.ReleaseResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Release_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Release{Release: in}}, opts,
		(*pb.CallResponse).GetRelease,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.ReleaseResponse, error) {
			return pb.NewLeasesClient(cc).Release(ctx, in, o...)
		})
}

func (l leasesClient) Get(ctx context.Context, in *pb.GetRequest, opts ...grpc.CallOption) (*pb.GetResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Get_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Get{Get: in}}, opts,
		(*pb.CallResponse).GetGet,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.GetResponse, error) {
			return pb.NewLeasesClient(cc).Get(ctx, in, o...)
		})
}

func (l leasesClient) Delete(ctx context.Context, in *pb.DeleteRequest, opts ...grpc.CallOption) (*pb.DeleteResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Delete_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Delete{Delete: in}}, opts,
		(*pb.CallResponse).GetDelete,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.DeleteResponse, error) {
			return pb.NewLeasesClient(cc).Delete(ctx, in, o...)
		})
}

func (l leasesClient) Write(ctx context.Context, in *pb.WriteRequest, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Write_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Write{Write: in}}, opts,
		(*pb.CallResponse).GetWrite,
		func(cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.WriteResponse, error) {
			return pb.NewLeasesClient(cc).Write(ctx, in, o...)
		})
}
