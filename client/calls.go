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
	"github.com/leasekeeper/leasekeeper/clock"
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
	c        *Client
	cc       *grpc.ClientConn
	endpoint string

	mu          sync.Mutex
	cur         *callsStream // nil, or the stream calls go to
	unsupported bool         // the node answered Unimplemented
	closed      bool
	nextID      uint64
}

// callsStream is one open Calls stream and the calls waiting on it.
//
// A watchdog goroutine per stream enforces the calls' time limits with one
// timer, armed at the earliest limit while calls wait, so a call costs no
// timer or goroutine of its own. A call past its limit fails over. When
// the stream also answered nothing since that call was sent, and its limit
// was long enough to tell (silentAfter), the node is silent: the stream is
// given up, and every call on it fails over with it. A short limit (the
// caller's deadline was near) proves nothing about the node.
type callsStream struct {
	stream pb.Leases_CallsClient
	ctx    context.Context // ends with the stream
	cancel context.CancelFunc

	sendMu sync.Mutex // gRPC allows one sender at a time

	mu      sync.Mutex
	pending map[uint64]pendingCall
	recvs   uint64 // answers received
	err     error  // set when the stream broke; no call waits then
	timer   clock.Timer
	armed   time.Time // when timer fires; zero while it is stopped
}

// pendingCall is a call waiting for its answer.
type pendingCall struct {
	ch      chan callResult
	due     time.Time // its limit on the client's clock; zero: none
	timeout time.Duration
	recvs   uint64 // the stream's recvs when the call was sent
}

type callResult struct {
	resp *pb.CallResponse
	err  error
}

// do runs req on this endpoint's stream and returns the answer, or a
// status error: Unavailable when the stream broke or no answer came
// within timeout (0: no limit), the context's error when ctx ended first.
// It returns errNoCalls when the call must take the unary path.
func (cn *callsConn) do(ctx context.Context, req *pb.CallRequest, timeout time.Duration) (*pb.CallResponse, error) {
	st, id, ch, err := cn.register(timeout)
	if err != nil {
		return nil, err
	}
	req.Id = id
	req.Timeout = nil
	if timeout > 0 {
		// The node stops the call (or answers a long poll) at the limit.
		req.Timeout = cn.c.timeoutPB(timeout)
	}
	if err := st.send(req); err != nil {
		st.broke(err)
		cn.drop(st)
	}
	select {
	case r := <-ch:
		return r.resp, r.err
	case <-ctx.Done():
		if st.withdraw(id) {
			// Best effort: the node stops work it would answer to no one.
			_ = st.send(&pb.CallRequest{Id: id, Cancel: true})
		}
		return nil, grpcstatus.FromContextError(ctx.Err()).Err()
	}
}

// register opens the stream if none is open and enters a new call on it,
// with timeout as its limit (0: none).
func (cn *callsConn) register(timeout time.Duration) (*callsStream, uint64, chan callResult, error) {
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
		st := &callsStream{stream: stream, ctx: ctx, cancel: cancel, pending: make(map[uint64]pendingCall), timer: cn.c.clock.NewTimer(time.Hour)}
		st.timer.Stop()
		cn.cur = st
		cn.c.wg.Go(func() { cn.receive(st) })
		cn.c.wg.Go(func() { cn.watchdog(st) })
	}
	cn.nextID++
	ch := make(chan callResult, 1)
	st := cn.cur
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err != nil {
		return nil, 0, nil, st.err
	}
	p := pendingCall{ch: ch, timeout: timeout, recvs: st.recvs}
	if timeout > 0 {
		now := cn.c.clock.Now()
		p.due = now.Add(timeout)
		if st.armed.IsZero() || p.due.Before(st.armed) {
			st.timer.Reset(timeout)
			st.armed = p.due
		}
	}
	st.pending[cn.nextID] = p
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
		st.recvs++
		p, ok := st.pending[resp.GetId()]
		if ok {
			st.remove(resp.GetId())
		}
		st.mu.Unlock()
		if ok {
			p.ch <- callResult{resp: resp}
		}
	}
}

// watchdog fails the calls that outlive their limits, until the stream
// ends.
func (cn *callsConn) watchdog(st *callsStream) {
	for {
		select {
		case <-st.timer.C():
		case <-st.ctx.Done():
			st.timer.Stop()
			return
		}
		if late, ok := st.expire(cn.c.clock.Now(), cn.endpoint, cn.c.silentAfter); !ok {
			st.broke(&timeoutError{endpoint: cn.endpoint, after: late.timeout, why: "Calls stream silent, given up"})
			cn.drop(st)
			return
		}
	}
}

// expire fails the calls past their limit at now, and re-arms the timer
// for the next limit. It returns false, and the call, when a call whose
// limit was at least silentAfter heard nothing since it was sent.
func (st *callsStream) expire(now time.Time, endpoint string, silentAfter time.Duration) (pendingCall, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.armed = time.Time{}
	var next time.Time
	for id, p := range st.pending {
		switch {
		case p.due.IsZero():
		case now.Before(p.due):
			if next.IsZero() || p.due.Before(next) {
				next = p.due
			}
		case p.recvs == st.recvs && p.timeout >= silentAfter:
			return p, false
		default:
			// Slow, or too short a wait to tell. The node ends the call
			// at the same limit.
			delete(st.pending, id)
			p.ch <- callResult{err: &timeoutError{endpoint: endpoint, after: p.timeout}}
		}
	}
	if !next.IsZero() {
		st.timer.Reset(next.Sub(now))
		st.armed = next
	}
	return pendingCall{}, true
}

// remove deletes a call that no longer waits, and stops the timer when
// none waits. st.mu is held.
func (st *callsStream) remove(id uint64) {
	delete(st.pending, id)
	if len(st.pending) == 0 && !st.armed.IsZero() {
		st.timer.Stop()
		st.armed = time.Time{}
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

// withdraw is called when a call's caller has left. It reports whether
// the node should be told to drop the call: when the call is still pending
// and the node may be listening. A call with a limit on a stream that
// answered nothing since it was sent stays pending: the node ends it at
// the limit without being told, a send to a silent node could wait
// forever (flow control), and the watchdog judges the stream by it.
func (st *callsStream) withdraw(id uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	p, ok := st.pending[id]
	if !ok || !p.due.IsZero() && p.recvs == st.recvs {
		return false
	}
	st.remove(id)
	return true
}

// broke fails every waiting call. Their answers are lost, so they fail as
// a unary call whose connection broke does: Unavailable, retried on the
// next endpoint (errNoCalls: on the unary path).
func (st *callsStream) broke(err error) {
	if !errors.Is(err, errNoCalls) && !isTimeout(err) {
		err = grpcstatus.Errorf(codes.Unavailable, "calls stream broke: %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err == nil {
		st.err = err
	}
	for id, p := range st.pending {
		p.ch <- callResult{err: st.err}
		delete(st.pending, id)
	}
	st.timer.Stop()
	st.armed = time.Time{}
}

// viaCalls runs one call of the Leases API on the Calls streams, failing
// over between endpoints as unary calls do. unary makes the call on the
// unary path through cc; it serves the calls that the streams cannot
// carry. sent, when set, receives the client's clock reading taken before
// each attempt is sent.
func viaCalls[T comparable](ctx context.Context, c *Client, method string, req *pb.CallRequest, opts []grpc.CallOption, sent *time.Time,
	answer func(*pb.CallResponse) T, unary func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (T, error),
) (T, error) {
	if c.cfg.UnaryCalls || len(opts) > 0 || hasOutgoingMD(ctx) || proto.Size(req) > maxCallSize {
		return unary(ctx, failoverConn{c: c, sent: sent}, opts...)
	}
	var out, zero T
	err := c.retry(ctx, method, true, func(a attempt) error {
		if sent != nil {
			*sent = c.clock.Now()
		}
		resp, err := c.calls[a.endpoint].do(ctx, req, a.timeout)
		if errors.Is(err, errNoCalls) {
			actx, cancel := withAttemptTimeout(ctx, a.timeout)
			defer cancel()
			var hdr metadata.MD
			out, err = unary(actx, c.conns[a.endpoint], grpc.Header(&hdr))
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

// timeoutPB returns d as a message, shared for the usual limit: a message
// is only read once built, and Send encodes it before it returns.
func (c *Client) timeoutPB(d time.Duration) *durationpb.Duration {
	if d == c.cfg.AttemptTimeout && c.attemptPB != nil {
		return c.attemptPB
	}
	return durationpb.New(d)
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
	return l.c.acquire(ctx, in, nil, opts...)
}

// acquire is Acquire, with sent set as for viaCalls.
func (c *Client) acquire(ctx context.Context, in *pb.AcquireRequest, sent *time.Time, opts ...grpc.CallOption) (*pb.AcquireResponse, error) {
	return viaCalls(ctx, c, pb.Leases_Acquire_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Acquire{Acquire: in}}, opts, sent,
		(*pb.CallResponse).GetAcquire,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.AcquireResponse, error) {
			return pb.NewLeasesClient(cc).Acquire(ctx, in, o...)
		})
}

func (l leasesClient) Renew(ctx context.Context, in *pb.RenewRequest, opts ...grpc.CallOption) (*pb.RenewResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Renew_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Renew{Renew: in}}, opts, nil,
		(*pb.CallResponse).GetRenew,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.RenewResponse, error) {
			return pb.NewLeasesClient(cc).Renew(ctx, in, o...)
		})
}

func (l leasesClient) Release(ctx context.Context, in *pb.ReleaseRequest, opts ...grpc.CallOption) (*pb.ReleaseResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Release_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Release{Release: in}}, opts, nil,
		(*pb.CallResponse).GetRelease,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.ReleaseResponse, error) {
			return pb.NewLeasesClient(cc).Release(ctx, in, o...)
		})
}

func (l leasesClient) Get(ctx context.Context, in *pb.GetRequest, opts ...grpc.CallOption) (*pb.GetResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Get_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Get{Get: in}}, opts, nil,
		(*pb.CallResponse).GetGet,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.GetResponse, error) {
			return pb.NewLeasesClient(cc).Get(ctx, in, o...)
		})
}

func (l leasesClient) Delete(ctx context.Context, in *pb.DeleteRequest, opts ...grpc.CallOption) (*pb.DeleteResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Delete_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Delete{Delete: in}}, opts, nil,
		(*pb.CallResponse).GetDelete,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.DeleteResponse, error) {
			return pb.NewLeasesClient(cc).Delete(ctx, in, o...)
		})
}

func (l leasesClient) Write(ctx context.Context, in *pb.WriteRequest, opts ...grpc.CallOption) (*pb.WriteResponse, error) {
	return viaCalls(ctx, l.c, pb.Leases_Write_FullMethodName, &pb.CallRequest{Request: &pb.CallRequest_Write{Write: in}}, opts, nil,
		(*pb.CallResponse).GetWrite,
		func(ctx context.Context, cc grpc.ClientConnInterface, o ...grpc.CallOption) (*pb.WriteResponse, error) {
			return pb.NewLeasesClient(cc).Write(ctx, in, o...)
		})
}
