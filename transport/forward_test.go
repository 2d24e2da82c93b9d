package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/node"
)

// The tests here run one follower (a real Server on loopback, over a fake
// node whose leader the test sets) in front of fake leaders: gRPC servers
// that answer at once, or take every call and never answer, as a paused
// process or a dropped-packet partition would.

// testTimings make the forward bound 300 ms (HeartbeatTimeout +
// ElectionTimeout); the same bound caps the wait for a next leader.
const (
	testHeartbeat = 100 * time.Millisecond
	testElection  = 200 * time.Millisecond
	testBound     = testHeartbeat + testElection
	// slack is what a loaded machine (two cores, -race) may add to a wait.
	slack = time.Second
)

// fakeNode is a follower whose leader the test sets.
type fakeNode struct {
	Node // not called on the forwarding path

	mu      sync.Mutex
	id      string
	addr    string
	changed context.Context
	cancel  context.CancelCauseFunc
}

func newFakeNode() *fakeNode {
	n := &fakeNode{}
	n.changed, n.cancel = context.WithCancelCause(context.Background())
	return n
}

func (n *fakeNode) ID() string              { return "follower" }
func (n *fakeNode) IsLeader() bool          { return false }
func (n *fakeNode) Ready() (bool, string)   { return true, "" }
func (n *fakeNode) Addrs() (string, string) { return "", "" }

func (n *fakeNode) Leader() (string, string) {
	id, addr, _ := n.LeaderWatch()
	return id, addr
}

func (n *fakeNode) LeaderWatch() (string, string, context.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id, n.addr, n.changed
}

// setLeader changes the leader the node sees, as its Raft observer would.
func (n *fakeNode) setLeader(id, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cancel(node.ErrLeaderChanged)
	n.id, n.addr = id, addr
	n.changed, n.cancel = context.WithCancelCause(context.Background())
}

// stubLeader is a fake leader's Leases service. A silent one takes every
// call and never answers; the others answer at once.
type stubLeader struct {
	pb.UnimplementedLeasesServer
	name   string
	silent bool
	addr   string

	calls    atomic.Int32 // unary calls received
	messages atomic.Int32 // KeepAlive messages received
	// deadline is how long the last unary call had left when it came.
	deadline atomic.Int64
}

func (l *stubLeader) hold(ctx context.Context) error {
	l.calls.Add(1)
	if dl, ok := ctx.Deadline(); ok {
		l.deadline.Store(int64(time.Until(dl)))
	}
	if l.silent {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (l *stubLeader) lease() *pb.Lease {
	return &pb.Lease{Name: "db", HolderIdentity: "a", FencingToken: 7, Labels: map[string]string{"answered-by": l.name}}
}

func (l *stubLeader) Renew(ctx context.Context, _ *pb.RenewRequest) (*pb.RenewResponse, error) {
	if err := l.hold(ctx); err != nil {
		return nil, err
	}
	return &pb.RenewResponse{Lease: l.lease()}, nil
}

func (l *stubLeader) Acquire(ctx context.Context, _ *pb.AcquireRequest) (*pb.AcquireResponse, error) {
	if err := l.hold(ctx); err != nil {
		return nil, err
	}
	return &pb.AcquireResponse{Acquired: true, Lease: l.lease()}, nil
}

func (l *stubLeader) Write(ctx context.Context, _ *pb.WriteRequest) (*pb.WriteResponse, error) {
	if err := l.hold(ctx); err != nil {
		return nil, err
	}
	return &pb.WriteResponse{Lease: l.lease()}, nil
}

func (l *stubLeader) KeepAlive(stream pb.Leases_KeepAliveServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		l.messages.Add(1)
		if l.silent {
			continue
		}
		if err := stream.Send(&pb.KeepAliveResponse{Id: req.Id, Results: []*pb.KeepAliveResult{{Name: l.name}}}); err != nil {
			return err
		}
	}
}

// serve runs a gRPC server on loopback until the test ends.
func serve(t *testing.T, g *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

func startStub(t *testing.T, name string, silent bool) *stubLeader {
	t.Helper()
	l := &stubLeader{name: name, silent: silent}
	g := grpc.NewServer()
	pb.RegisterLeasesServer(g, l)
	l.addr = serve(t, g)
	return l
}

// deafListener accepts connections and never reads from them: a peer whose
// kernel completes the handshake while the process is stopped.
func deafListener(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = lis.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return lis.Addr().String()
}

type follower struct {
	node *fakeNode
	srv  *Server
	cc   *grpc.ClientConn
	pb.LeasesClient
}

// startFollower runs the follower's gRPC server and a client of it.
func startFollower(t *testing.T) *follower {
	t.Helper()
	n := newFakeNode()
	cfg := DefaultConfig()
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = testHeartbeat, testElection
	srv, err := New(cfg, n, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)
	addr := serve(t, g)
	t.Cleanup(func() { _ = srv.Close() }) // after the server stopped: cleanups run last first
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return &follower{node: n, srv: srv, cc: cc, LeasesClient: pb.NewLeasesClient(cc)}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func renewReq() *pb.RenewRequest {
	return &pb.RenewRequest{Name: "db", HolderIdentity: "a", FencingToken: 7}
}

func writeReq() *pb.WriteRequest {
	return &pb.WriteRequest{Name: "db", HolderIdentity: "a", LeaseDuration: durationpb.New(time.Second)}
}

// after runs f after d, in a goroutine the test waits for.
func after(t *testing.T, d time.Duration, f func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		time.Sleep(d) // the moment of a change in the cluster, as a test step
		f()
	})
	t.Cleanup(wg.Wait)
}

func within(t *testing.T, what string, took, lo, hi time.Duration) {
	t.Helper()
	if took < lo || took > hi {
		t.Errorf("%s took %v, want within [%v, %v]", what, took.Round(time.Millisecond), lo, hi)
	}
}

func wantUnavailable(t *testing.T, err error, why error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), why.Error()) {
		t.Fatalf("got %v, want Unavailable: %v", err, why)
	}
}

func answeredBy(l *pb.Lease) string { return l.GetLabels()["answered-by"] }

// TestForwardToSilentLeaderIsBounded: a leader that takes a call and
// never answers holds it for the forward bound, not for the caller's
// deadline; a call that is safe to repeat waits one bound more for a next
// leader. Neither is sent a second time to the silent node, and the answer
// does not send the caller there either.
func TestForwardToSilentLeaderIsBounded(t *testing.T) {
	f := startFollower(t)
	l := startStub(t, "silent", true)
	deaf := deafListener(t)
	tests := []struct {
		name  string
		addr  string
		call  func(ctx context.Context, opts ...grpc.CallOption) error
		stub  *stubLeader
		lo    time.Duration
		retry bool
	}{
		{"write, not retried", l.addr, func(ctx context.Context, opts ...grpc.CallOption) error {
			_, err := f.Write(ctx, writeReq(), opts...)
			return err
		}, l, testBound, false},
		{"renew, no next leader", l.addr, func(ctx context.Context, opts ...grpc.CallOption) error {
			_, err := f.Renew(ctx, renewReq(), opts...)
			return err
		}, l, 2 * testBound, true},
		{"renew, leader that never reads", deaf, func(ctx context.Context, opts ...grpc.CallOption) error {
			_, err := f.Renew(ctx, renewReq(), opts...)
			return err
		}, nil, 2 * testBound, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.node.setLeader("n1", tc.addr)
			before := int32(0)
			if tc.stub != nil {
				before = tc.stub.calls.Load()
			}
			var hdr metadata.MD
			start := time.Now()
			err := tc.call(callCtx(t), grpc.Header(&hdr))
			within(t, "the forwarded call", time.Since(start), tc.lo, tc.lo+slack)
			wantUnavailable(t, err, ErrLeaderSilent)
			if tc.stub != nil {
				if n := tc.stub.calls.Load() - before; n != 1 {
					t.Errorf("the silent leader got the call %d times, want once", n)
				}
			}
			if got := hdr.Get(leaderHeader); len(got) != 0 {
				t.Errorf("leader hint %v, want none: the only leader known is silent", got)
			}
		})
	}
}

// TestForwardEndsWhenTheLeaderChanges: the moment the follower sees
// another leader, or none, a call that is not safe to repeat ends with
// Unavailable naming the new leader, without waiting for the bound and
// without going to the new leader.
func TestForwardEndsWhenTheLeaderChanges(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	next := startStub(t, "next", false)
	tests := []struct {
		name     string
		id, addr string
		hint     []string
	}{
		{"new leader", "n2", next.addr, []string{next.addr}},
		{"leader lost", "", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.node.setLeader("n1", old.addr)
			after(t, 100*time.Millisecond, func() { f.node.setLeader(tc.id, tc.addr) })
			var hdr metadata.MD
			start := time.Now()
			_, err := f.Write(callCtx(t), writeReq(), grpc.Header(&hdr))
			within(t, "the forwarded write", time.Since(start), 80*time.Millisecond, testBound)
			wantUnavailable(t, err, node.ErrLeaderChanged)
			if got := hdr.Get(leaderHeader); len(got) != len(tc.hint) || (len(got) > 0 && got[0] != tc.hint[0]) {
				t.Errorf("leader hint %v, want %v", got, tc.hint)
			}
			if n := next.calls.Load(); n != 0 {
				t.Errorf("the write went to the new leader %d times, want none", n)
			}
		})
	}
}

// TestForwardRetriesOnTheNextLeader: a call that is safe to repeat goes
// once more, to the next leader, whether the old one was left at a leader
// change or at the bound, on a unary call or on a Calls stream; the
// answer names the leader that gave it.
func TestForwardRetriesOnTheNextLeader(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	next := startStub(t, "next", false)
	tests := []struct {
		name   string
		change time.Duration // when the follower sees the next leader
		calls  bool          // on a Calls stream
	}{
		{"change while waiting", 100 * time.Millisecond, false},
		{"change after the bound", testBound + 100*time.Millisecond, false},
		{"change while waiting, calls stream", 100 * time.Millisecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.node.setLeader("n1", old.addr)
			oldCalls, nextCalls := old.calls.Load(), next.calls.Load()
			after(t, tc.change, func() { f.node.setLeader("n2", next.addr) })
			start := time.Now()
			var lease *pb.Lease
			var hint []string
			if tc.calls {
				s, err := f.Calls(callCtx(t))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Send(&pb.CallRequest{Id: 1, Timeout: durationpb.New(10 * time.Second),
					Request: &pb.CallRequest_Renew{Renew: renewReq()}}); err != nil {
					t.Fatal(err)
				}
				r, err := s.Recv()
				if err != nil || r.Error != nil {
					t.Fatalf("renew on the calls stream: %v %v", err, r.GetError())
				}
				lease, hint = r.GetRenew().GetLease(), []string{r.Leader}
				_ = s.CloseSend()
			} else {
				var hdr metadata.MD
				r, err := f.Renew(callCtx(t), renewReq(), grpc.Header(&hdr))
				if err != nil {
					t.Fatalf("renew: %v", err)
				}
				lease, hint = r.Lease, hdr.Get(leaderHeader)
			}
			within(t, "the renewal", time.Since(start), tc.change-20*time.Millisecond, tc.change+slack)
			if answeredBy(lease) != "next" {
				t.Errorf("answered by %q, want the next leader", answeredBy(lease))
			}
			if len(hint) != 1 || hint[0] != next.addr {
				t.Errorf("leader hint %v, want [%s]", hint, next.addr)
			}
			if o, n := old.calls.Load()-oldCalls, next.calls.Load()-nextCalls; o != 1 || n != 1 {
				t.Errorf("calls: %d to the silent leader and %d to the next, want one each", o, n)
			}
		})
	}
}

// TestForwardNeverRetriesOnTheSilentNode: when the leader the follower
// sees after losing the silent one is the silent one again, the call is
// not sent there a second time.
func TestForwardNeverRetriesOnTheSilentNode(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	f.node.setLeader("n1", old.addr)
	after(t, 50*time.Millisecond, func() { f.node.setLeader("", "") })
	after(t, 100*time.Millisecond, func() { f.node.setLeader("n1", old.addr) })
	start := time.Now()
	_, err := f.Renew(callCtx(t), renewReq())
	within(t, "the renewal", time.Since(start), testBound, testBound+slack)
	wantUnavailable(t, err, node.ErrLeaderChanged)
	if n := old.calls.Load(); n != 1 {
		t.Errorf("the silent leader got the renewal %d times, want once", n)
	}
}

// TestForwardRetryNeedsTime: no retry when the caller's deadline leaves
// no time for one; the caller hears why before its deadline.
func TestForwardRetryNeedsTime(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	next := startStub(t, "next", false)
	f.node.setLeader("n1", old.addr)
	after(t, 150*time.Millisecond, func() { f.node.setLeader("n2", next.addr) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := f.Renew(ctx, renewReq())
	if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
		t.Fatalf("renew: %v, want Unavailable or DeadlineExceeded", err)
	}
	if n := next.calls.Load(); n != 0 {
		t.Errorf("the renewal went to the next leader %d times with 50 ms left, want none", n)
	}
}

// TestForwardedLongPoll: an Acquire with wait may be held by the leader
// for a third of the duration; the bound leaves it that, and the leader
// sees a deadline that lets it answer in time. A leader change still ends
// it at once and it goes to the next leader.
func TestForwardedLongPoll(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	next := startStub(t, "next", false)
	f.node.setLeader("n1", old.addr)
	const dur = 3 * time.Second
	req := &pb.AcquireRequest{Name: "db", HolderIdentity: "a", LeaseDuration: durationpb.New(dur), Wait: true}
	after(t, dur/3+100*time.Millisecond, func() { f.node.setLeader("n2", next.addr) })
	start := time.Now()
	r, err := f.Acquire(callCtx(t), req)
	if err != nil || answeredBy(r.Lease) != "next" {
		t.Fatalf("acquire: %v, answered by %q; want the next leader's answer", err, answeredBy(r.GetLease()))
	}
	within(t, "the acquire", time.Since(start), dur/3, dur/3+slack)
	if got := time.Duration(old.deadline.Load()); got < dur/3+testBound-100*time.Millisecond || got > dur/3+testBound {
		t.Errorf("the leader saw %v left, want about %v (the long poll and the bound)", got, dur/3+testBound)
	}
}

// TestRelayedKeepAliveMovesToTheNextLeader: a KeepAlive stream relayed by
// a follower survives a leader change: the message the silent leader did
// not answer goes to the next leader, and later ones follow it there.
func TestRelayedKeepAliveMovesToTheNextLeader(t *testing.T) {
	f := startFollower(t)
	old := startStub(t, "old", true)
	next := startStub(t, "next", false)
	f.node.setLeader("n1", old.addr)
	s, err := f.KeepAlive(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	ref := []*pb.LeaseRef{{Name: "db", HolderIdentity: "a", FencingToken: 7}}
	if err := s.Send(&pb.KeepAliveRequest{Id: 1, Leases: ref}); err != nil {
		t.Fatal(err)
	}
	after(t, 100*time.Millisecond, func() { f.node.setLeader("n2", next.addr) })
	start := time.Now()
	r, err := s.Recv()
	if err != nil || r.Id != 1 || r.Results[0].Name != "next" {
		t.Fatalf("answer to message 1: %v %v, want the next leader's", r, err)
	}
	within(t, "the answer", time.Since(start), 80*time.Millisecond, 100*time.Millisecond+slack)
	if err := s.Send(&pb.KeepAliveRequest{Id: 2, Leases: ref}); err != nil {
		t.Fatal(err)
	}
	if r, err = s.Recv(); err != nil || r.Id != 2 || r.Results[0].Name != "next" {
		t.Fatalf("answer to message 2: %v %v, want the next leader's", r, err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v, want EOF", err)
	}
	if o, n := old.messages.Load(), next.messages.Load(); o != 1 || n != 2 {
		t.Errorf("messages: %d to the silent leader and %d to the next, want 1 and 2", o, n)
	}
}

// TestRelayedKeepAliveGivesUp: with no next leader the stream ends with
// Unavailable after the bound and the wait for one; and a message is sent
// to two leaders at most.
func TestRelayedKeepAliveGivesUp(t *testing.T) {
	f := startFollower(t)
	first := startStub(t, "first", true)
	second := startStub(t, "second", true)
	third := startStub(t, "third", false)
	ref := []*pb.LeaseRef{{Name: "db", HolderIdentity: "a", FencingToken: 7}}
	open := func(t *testing.T) pb.Leases_KeepAliveClient {
		s, err := f.KeepAlive(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.KeepAliveRequest{Id: 1, Leases: ref}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("no next leader", func(t *testing.T) {
		f.node.setLeader("n1", first.addr)
		s := open(t)
		start := time.Now()
		_, err := s.Recv()
		within(t, "the stream", time.Since(start), 2*testBound, 2*testBound+slack)
		wantUnavailable(t, err, ErrLeaderSilent)
	})
	t.Run("two silent leaders", func(t *testing.T) {
		f.node.setLeader("n1", first.addr)
		s := open(t)
		after(t, 100*time.Millisecond, func() { f.node.setLeader("n2", second.addr) })
		after(t, 200*time.Millisecond, func() { f.node.setLeader("n3", third.addr) })
		_, err := s.Recv()
		wantUnavailable(t, err, node.ErrLeaderChanged)
		if n := third.messages.Load(); n != 0 {
			t.Errorf("the message went to a third leader %d times", n)
		}
		if trailer := s.Trailer().Get(leaderHeader); len(trailer) != 1 || trailer[0] != third.addr {
			t.Errorf("trailer names %v, want the current leader %s", trailer, third.addr)
		}
	})
}

// stubSnapshots is a fake leader's Cluster service whose backup sends one
// chunk and then nothing, as a leader paused mid-stream would.
type stubSnapshots struct {
	pb.UnimplementedClusterServer
}

func (stubSnapshots) Snapshot(_ *pb.SnapshotRequest, stream pb.Cluster_SnapshotServer) error {
	if err := stream.Send(&pb.SnapshotChunk{Data: []byte("first")}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestRelayedSnapshotFromASilentLeader: a follower relaying a backup ends
// the stream with Unavailable when the leader stops sending for the
// forward bound, or when the follower sees another leader, not at the
// caller's deadline.
func TestRelayedSnapshotFromASilentLeader(t *testing.T) {
	g := grpc.NewServer()
	pb.RegisterClusterServer(g, stubSnapshots{})
	addr := serve(t, g)
	for _, tc := range []struct {
		name   string
		change bool
		why    error
	}{
		{"silent", false, ErrLeaderSilent},
		{"leader changes", true, node.ErrLeaderChanged},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFollower(t)
			f.node.setLeader("paused", addr)
			start := time.Now()
			stream, err := pb.NewClusterClient(f.cc).Snapshot(callCtx(t), &pb.SnapshotRequest{})
			if err != nil {
				t.Fatal(err)
			}
			chunk, err := stream.Recv()
			if err != nil || string(chunk.GetData()) != "first" {
				t.Fatalf("first chunk: %v %q", err, chunk.GetData())
			}
			if tc.change {
				f.node.setLeader("next", deafListener(t))
			}
			_, err = stream.Recv()
			took := time.Since(start)
			wantUnavailable(t, err, tc.why)
			if tc.change {
				within(t, "a relayed snapshot after a leader change", took, 0, slack)
			} else {
				within(t, "a relayed snapshot from a silent leader", took, testBound, testBound+slack)
			}
		})
	}
}
