package callmux

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake serves Acquire (blocking until its holder's gate opens or the call's
// context ends) and Get (at once, or NotFound with a detail).
type fake struct {
	pb.UnimplementedLeasesServer
	mu      sync.Mutex
	gates   map[string]chan struct{}
	entered chan string // holder of each Acquire that started
	methods chan string // FullMethod seen by the interceptor, per call
	stop    chan struct{}
}

func (f *fake) Acquire(ctx context.Context, req *pb.AcquireRequest) (*pb.AcquireResponse, error) {
	f.mu.Lock()
	gate := f.gates[req.GetHolderIdentity()]
	f.mu.Unlock()
	f.entered <- req.GetHolderIdentity()
	select {
	case <-gate:
		if err := SetLeader(ctx, "leader:1"); !err {
			return nil, status.Error(codes.Internal, "no leader hint in a call's context")
		}
		return &pb.AcquireResponse{Acquired: true, Lease: &pb.Lease{HolderIdentity: req.GetHolderIdentity()}}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

func (f *fake) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	if req.GetName() == "missing" {
		st, _ := status.New(codes.NotFound, "lease default/missing not found").WithDetails(&pb.Lease{Name: "missing"})
		return nil, st.Err()
	}
	if _, ok := ctx.Deadline(); !ok {
		return nil, status.Error(codes.Internal, "the call's timeout did not reach the handler")
	}
	return &pb.GetResponse{Lease: &pb.Lease{Name: req.GetName()}}, nil
}

func (f *fake) Calls(stream pb.Leases_CallsServer) error {
	return Serve(stream, f, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		f.methods <- info.FullMethod
		return h(ctx, req)
	}, f.stop)
}

func (f *fake) open(holder string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gates[holder])
}

func start(t *testing.T, holders ...string) (*fake, pb.LeasesClient) {
	t.Helper()
	f := &fake{gates: make(map[string]chan struct{}), entered: make(chan string, 100), methods: make(chan string, 100), stop: make(chan struct{})}
	for _, h := range holders {
		f.gates[h] = make(chan struct{})
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterLeasesServer(g, f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		g.Stop()
		<-done
	})
	return f, pb.NewLeasesClient(cc)
}

func open(t *testing.T, c pb.LeasesClient) pb.Leases_CallsClient {
	t.Helper()
	// No deadline on the stream: each call's timeout is its own.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Calls(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func send(t *testing.T, s pb.Leases_CallsClient, req *pb.CallRequest) {
	t.Helper()
	if err := s.Send(req); err != nil {
		t.Fatalf("send call %d: %v", req.GetId(), err)
	}
}

func recv(t *testing.T, s pb.Leases_CallsClient) *pb.CallResponse {
	t.Helper()
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	return r
}

func acquire(id uint64, holder string) *pb.CallRequest {
	return &pb.CallRequest{Id: id, Request: &pb.CallRequest_Acquire{Acquire: &pb.AcquireRequest{Name: "db", HolderIdentity: holder}}}
}

func get(id uint64, name string) *pb.CallRequest {
	return &pb.CallRequest{Id: id, Timeout: durationpb.New(time.Minute), Request: &pb.CallRequest_Get{Get: &pb.GetRequest{Name: name}}}
}

func code(r *pb.CallResponse) codes.Code {
	if r.GetError() == nil {
		return codes.OK
	}
	return codes.Code(r.GetError().GetCode())
}

func TestCallsAnsweredAsTheyFinish(t *testing.T) {
	f, c := start(t, "slow")
	s := open(t, c)
	send(t, s, acquire(1, "slow"))
	if h := <-f.entered; h != "slow" {
		t.Fatalf("entered %q", h)
	}
	send(t, s, get(2, "db"))
	send(t, s, get(3, "missing"))
	// The Gets answer while the Acquire still waits.
	got := map[uint64]*pb.CallResponse{}
	for range 2 {
		r := recv(t, s)
		got[r.GetId()] = r
	}
	if r := got[2]; code(r) != codes.OK || r.GetGet().GetLease().GetName() != "db" {
		t.Errorf("call 2: %v", r)
	}
	r := got[3]
	if code(r) != codes.NotFound || r.GetGet() != nil {
		t.Fatalf("call 3: %v, want NotFound and no answer", r)
	}
	if d := r.GetError().GetDetails(); len(d) != 1 {
		t.Errorf("call 3 carried %d details, want the lease", len(d))
	}
	f.open("slow")
	r = recv(t, s)
	if r.GetId() != 1 || code(r) != codes.OK || !r.GetAcquire().GetAcquired() || r.GetLeader() != "leader:1" {
		t.Errorf("call 1: %v, want acquired with leader hint", r)
	}
	for _, want := range []string{pb.Leases_Acquire_FullMethodName, pb.Leases_Get_FullMethodName, pb.Leases_Get_FullMethodName} {
		if m := <-f.methods; m != want {
			t.Errorf("interceptor saw %s, want %s", m, want)
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
}

func TestCallsBadRequests(t *testing.T) {
	f, c := start(t, "a")
	s := open(t, c)
	send(t, s, acquire(1, "a"))
	<-f.entered
	send(t, s, acquire(1, "a")) // the same id while call 1 is in flight
	if r := recv(t, s); r.GetId() != 1 || code(r) != codes.InvalidArgument {
		t.Errorf("duplicate id: %v, want InvalidArgument", r)
	}
	send(t, s, &pb.CallRequest{Id: 2})
	if r := recv(t, s); r.GetId() != 2 || code(r) != codes.InvalidArgument {
		t.Errorf("no request: %v, want InvalidArgument", r)
	}
	bad := get(3, "db")
	bad.Timeout = durationpb.New(-time.Second)
	send(t, s, bad)
	if r := recv(t, s); r.GetId() != 3 || code(r) != codes.InvalidArgument {
		t.Errorf("negative timeout: %v, want InvalidArgument", r)
	}
	noTimeout := get(4, "db")
	noTimeout.Timeout = nil
	send(t, s, noTimeout) // the fake's Get insists on a deadline
	if r := recv(t, s); r.GetId() != 4 || code(r) != codes.Internal {
		t.Errorf("call without timeout: %v, want the fake's Internal", r)
	}
	f.open("a")
	if r := recv(t, s); r.GetId() != 1 || code(r) != codes.OK {
		t.Errorf("call 1: %v", r)
	}
}

func TestCancelAndTimeoutReachTheHandler(t *testing.T) {
	f, c := start(t, "a", "b")
	s := open(t, c)
	send(t, s, acquire(1, "a"))
	<-f.entered
	send(t, s, &pb.CallRequest{Id: 1, Cancel: true})
	if r := recv(t, s); r.GetId() != 1 || code(r) != codes.Canceled {
		t.Errorf("cancelled call: %v, want Canceled", r)
	}
	send(t, s, &pb.CallRequest{Id: 99, Cancel: true}) // unknown: ignored
	short := acquire(2, "b")
	short.Timeout = durationpb.New(50 * time.Millisecond)
	send(t, s, short)
	if r := recv(t, s); r.GetId() != 2 || code(r) != codes.DeadlineExceeded {
		t.Errorf("timed out call: %v, want DeadlineExceeded", r)
	}
}

func TestStopAnswersThenEndsTheStream(t *testing.T) {
	f, c := start(t, "a")
	s := open(t, c)
	send(t, s, acquire(1, "a"))
	<-f.entered
	close(f.stop)
	// Serve waits for call 1 before it ends the stream.
	f.open("a")
	if r := recv(t, s); r.GetId() != 1 || code(r) != codes.OK {
		t.Errorf("call 1: %v", r)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream end after stop: %v, want Unavailable", err)
	}
	s2 := open(t, c)
	if _, err := s2.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("a stream opened after stop: %v, want Unavailable", err)
	}
}

func TestInFlightBound(t *testing.T) {
	old := maxCallsInFlight
	maxCallsInFlight = 2
	t.Cleanup(func() { maxCallsInFlight = old })
	f, c := start(t, "a", "b", "c")
	s := open(t, c)
	for i, h := range []string{"a", "b", "c"} {
		send(t, s, acquire(uint64(i+1), h))
	}
	entered := map[string]bool{<-f.entered: true, <-f.entered: true}
	select {
	case h := <-f.entered:
		t.Fatalf("a third call (%s) started with a bound of 2", h)
	case <-time.After(100 * time.Millisecond):
	}
	first := "a"
	if !entered["a"] {
		first = "b"
	}
	f.open(first)
	if r := recv(t, s); code(r) != codes.OK {
		t.Fatalf("first answer: %v", r)
	}
	if h := <-f.entered; entered[h] {
		t.Fatalf("%s entered twice", h)
	}
	for _, h := range []string{"a", "b", "c"} {
		if h != first {
			f.open(h)
		}
	}
	for range 2 {
		if r := recv(t, s); code(r) != codes.OK {
			t.Errorf("answer: %v", r)
		}
	}
}

func TestChainOrder(t *testing.T) {
	var order []string
	ic := func(name string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			order = append(order, name+">")
			resp, err := h(ctx, req)
			order = append(order, "<"+name)
			return resp, err
		}
	}
	out, err := Chain(ic("a"), ic("b"))(context.Background(), 1, &grpc.UnaryServerInfo{}, func(_ context.Context, req any) (any, error) {
		order = append(order, "h")
		return req.(int) + 1, nil
	})
	if err != nil || out != 2 {
		t.Fatalf("chain: %v %v", out, err)
	}
	if got, want := order, []string{"a>", "b>", "h", "<b", "<a"}; !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}
