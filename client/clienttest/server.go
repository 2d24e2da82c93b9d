// Package clienttest runs an in-process fake leasekeeper node for the tests
// of code that uses the client package or leasectl.
//
// The fake keeps a lease table in memory with the API's answers (acquire,
// renew, release, get, list, delete, watch, cluster status) but no Raft and
// no expiry: holdings last until released or deleted. Faults injected per
// method stand in for an unavailable or slow node.
//
// It lives outside client/internal so that cmd/leasectl can use it too.
package clienttest

import (
	"context"
	"net"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/internal/callmux"
	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// Fault runs before a method's handler. A non-nil error is the method's
// answer and the handler does not run.
type Fault func(ctx context.Context) error

// Unavailable answers codes.Unavailable, as a node with no known leader does.
func Unavailable(ctx context.Context) error {
	return status.Error(codes.Unavailable, "no leader known")
}

// Hang blocks until the call's context is done, as a partitioned node does.
func Hang(ctx context.Context) error {
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

// Server is a fake leasekeeper node listening on 127.0.0.1.
type Server struct {
	// Addr is the host:port to dial.
	Addr string
	// ID names the node in Status answers.
	ID string

	srv       *grpc.Server
	unary     grpc.UnaryServerInterceptor
	noCalls   atomic.Bool
	noBatches atomic.Bool
	stop      sync.Once
	done      chan struct{}

	mu     sync.Mutex
	leases map[string]*pb.Lease // by namespace/name
	rev    uint64
	token  uint64
	events []*pb.WatchEvent
	// changed is closed and replaced whenever an event is added, to wake
	// watchers.
	changed chan struct{}
	faults  map[string]Fault
	calls   map[string]int
	// viaCalls counts, by method, the calls that came on a Calls stream.
	viaCalls map[string]int
	status   *pb.StatusResponse
	// watching is closed while watches may send; PauseWatches replaces
	// it with an open channel.
	watching chan struct{}
}

// Start starts a Server on a free port and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("clienttest: listen: %v", err)
	}
	s := &Server{
		Addr:     lis.Addr().String(),
		ID:       "node-" + lis.Addr().String(),
		done:     make(chan struct{}),
		leases:   make(map[string]*pb.Lease),
		changed:  make(chan struct{}),
		faults:   make(map[string]Fault),
		calls:    make(map[string]int),
		viaCalls: make(map[string]int),
		watching: make(chan struct{}),
	}
	close(s.watching)
	s.unary = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if m, _ := grpc.Method(ctx); m == pb.Leases_Calls_FullMethodName {
			s.mu.Lock()
			s.viaCalls[path.Base(info.FullMethod)]++
			s.mu.Unlock()
		}
		if err := s.enter(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	s.srv = grpc.NewServer(
		grpc.UnaryInterceptor(s.unary),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			// A call on the Calls stream meets its method's fault, as a
			// unary call does; the stream itself meets none.
			if info.FullMethod == pb.Leases_Calls_FullMethodName {
				s.mu.Lock()
				s.calls["Calls"]++
				s.mu.Unlock()
			} else if err := s.enter(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	pb.RegisterLeasesServer(s.srv, leases{s: s})
	pb.RegisterClusterServer(s.srv, cluster{s: s})
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.srv.Serve(lis)
	}()
	tb.Cleanup(func() {
		s.Stop()
		<-served
	})
	return s
}

// Stop closes every connection and stream and stops listening.
func (s *Server) Stop() {
	s.stop.Do(func() {
		close(s.done)
		s.srv.Stop()
	})
}

// Inject makes method ("Acquire", "Status", ...; "" for every method) run f
// first. A nil f removes the fault.
func (s *Server) Inject(method string, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f == nil {
		delete(s.faults, method)
		return
	}
	s.faults[method] = f
}

// PauseWatches makes every watch, open or new, send nothing (no event,
// no progress) until ResumeWatches, as a node that stopped answering.
func (s *Server) PauseWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.watching:
		s.watching = make(chan struct{})
	default:
	}
}

// ResumeWatches lets the watches send again.
func (s *Server) ResumeWatches() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.watching:
	default:
		close(s.watching)
	}
}

// DisableWatchBatches makes the server answer WatchBatches with
// Unimplemented, as a node that does not serve it does.
func (s *Server) DisableWatchBatches() { s.noBatches.Store(true) }

// DisableCalls makes the server answer the Calls stream with
// Unimplemented, as a node that does not serve it does.
func (s *Server) DisableCalls() { s.noCalls.Store(true) }

// Calls reports how many times method was called, faults included, on
// either path ("Calls" counts the Calls streams opened).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// ViaCalls reports how many of method's calls came on a Calls stream.
func (s *Server) ViaCalls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viaCalls[method]
}

// SetStatus sets the answer to Cluster.Status; without it the node reports
// itself as the leader of a one-member cluster.
func (s *Server) SetStatus(st *pb.StatusResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = proto.Clone(st).(*pb.StatusResponse)
}

// Put stores l as it is (defaulting its namespace and stamping a resource
// version) and emits an ADDED event, to seed the table.
func (s *Server) Put(l *pb.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l = proto.Clone(l).(*pb.Lease)
	if l.Namespace == "" {
		l.Namespace = "default"
	}
	if l.FencingToken > s.token {
		s.token = l.FencingToken
	}
	s.write(pb.WatchEvent_ADDED, l)
}

// Emit records an event of type t for the stored lease namespace/name, as
// if the server had applied such a change, and returns its revision.
func (s *Server) Emit(t pb.WatchEvent_Type, namespace, name string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[key(namespace, name)]
	if !ok {
		l = &pb.Lease{Namespace: namespace, Name: name}
	}
	return s.write(t, l)
}

func (s *Server) enter(ctx context.Context, fullMethod string) error {
	method := path.Base(fullMethod)
	s.mu.Lock()
	s.calls[method]++
	f := s.faults[method]
	if f == nil {
		f = s.faults[""]
	}
	s.mu.Unlock()
	if f != nil {
		return f(ctx)
	}
	return nil
}

// write stores l under a new revision and records the event. s.mu is held.
func (s *Server) write(t pb.WatchEvent_Type, l *pb.Lease) uint64 {
	s.rev++
	l.ResourceVersion = s.rev
	if t == pb.WatchEvent_DELETED {
		delete(s.leases, key(l.Namespace, l.Name))
	} else {
		s.leases[key(l.Namespace, l.Name)] = l
	}
	s.events = append(s.events, &pb.WatchEvent{Type: t, Lease: proto.Clone(l).(*pb.Lease), Revision: s.rev})
	close(s.changed)
	s.changed = make(chan struct{})
	return s.rev
}

func key(namespace, name string) string { return namespace + "/" + name }

func defaultNS(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

func (s *Server) lookup(namespace, name string) (*pb.Lease, error) {
	if name == "" {
		return nil, status.Error(codes.InvalidArgument, "lease name is empty")
	}
	l, ok := s.leases[key(namespace, name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "lease %s/%s not found", namespace, name)
	}
	return l, nil
}

type leases struct {
	pb.UnimplementedLeasesServer
	s *Server
}

// Calls serves the multiplexed unary calls, each through the fault
// injection of its own method, unless DisableCalls was called.
func (x leases) Calls(stream pb.Leases_CallsServer) error {
	if x.s.noCalls.Load() {
		return status.Error(codes.Unimplemented, "unknown method Calls")
	}
	return callmux.Serve(stream, x, x.s.unary, x.s.done)
}

func (x leases) Acquire(_ context.Context, req *pb.AcquireRequest) (*pb.AcquireResponse, error) {
	s := x.s
	ns := defaultNS(req.Namespace)
	switch {
	case req.Name == "":
		return nil, status.Error(codes.InvalidArgument, "lease name is empty")
	case req.HolderIdentity == "":
		return nil, status.Error(codes.InvalidArgument, "holder identity is empty")
	case req.GetLeaseDuration().AsDuration() <= 0:
		return nil, status.Error(codes.InvalidArgument, "lease duration must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := timestamppb.Now()
	l, ok := s.leases[key(ns, req.Name)]
	if !ok {
		l = &pb.Lease{Namespace: ns, Name: req.Name, CreateRevision: s.rev + 1, CreateTime: now}
	} else {
		l = proto.Clone(l).(*pb.Lease)
	}
	switch l.HolderIdentity {
	case req.HolderIdentity:
		l.RenewTime = now
		l.LeaseDuration = req.LeaseDuration
		s.write(pb.WatchEvent_RENEWED, l)
		return &pb.AcquireResponse{Acquired: true, Renewed: true, Lease: written(l), Remaining: remaining(l)}, nil
	case "":
		s.token++
		l.HolderIdentity = req.HolderIdentity
		l.FencingToken = s.token
		l.LeaseTransitions++
		l.LeaseDuration = req.LeaseDuration
		l.GracePeriod = req.GracePeriod
		l.AcquireTime, l.RenewTime = now, now
		if len(req.Labels) > 0 {
			l.Labels = req.Labels
		}
		l.History = append([]*pb.Holding{{HolderIdentity: req.HolderIdentity, FencingToken: s.token, StartTime: now}}, l.History...)
		t := pb.WatchEvent_ACQUIRED
		if !ok {
			t = pb.WatchEvent_ADDED
		}
		s.write(t, l)
		return &pb.AcquireResponse{Acquired: true, Lease: written(l), Remaining: remaining(l)}, nil
	default:
		return &pb.AcquireResponse{Lease: written(l), Remaining: remaining(l)}, nil
	}
}

// written is l as the answer to a write carries it: without its history,
// as the server leaves it out.
func written(l *pb.Lease) *pb.Lease {
	out := proto.Clone(l).(*pb.Lease)
	out.History = nil
	return out
}

// remaining is what the fake reports as time left: a full duration plus
// grace, since it never expires anything.
func remaining(l *pb.Lease) *durationpb.Duration {
	if l.HolderIdentity == "" {
		return nil
	}
	return durationpb.New(l.GetLeaseDuration().AsDuration() + l.GetGracePeriod().AsDuration())
}

func (x leases) holding(namespace, name, holder string, token uint64) (*pb.Lease, error) {
	l, err := x.s.lookup(namespace, name)
	if err != nil {
		return nil, err
	}
	if l.HolderIdentity != holder || l.FencingToken != token {
		return nil, status.Errorf(codes.FailedPrecondition, "lease %s/%s is not held by %q with token %d", namespace, name, holder, token)
	}
	return proto.Clone(l).(*pb.Lease), nil
}

func (x leases) Renew(_ context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := x.holding(defaultNS(req.Namespace), req.Name, req.HolderIdentity, req.FencingToken)
	if err != nil {
		return nil, err
	}
	if !req.Record {
		// As a leader that confirms the renewal without a log write: the
		// stored lease stays as it was.
		return &pb.RenewResponse{Lease: l}, nil
	}
	l.RenewTime = timestamppb.Now()
	s.write(pb.WatchEvent_RENEWED, l)
	return &pb.RenewResponse{Lease: written(l)}, nil
}

func (x leases) Release(_ context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := x.holding(defaultNS(req.Namespace), req.Name, req.HolderIdentity, req.FencingToken)
	if err != nil {
		return nil, err
	}
	l.HolderIdentity = ""
	if len(l.History) > 0 {
		l.History[0].EndTime = timestamppb.Now()
		l.History[0].EndReason = "released"
	}
	s.write(pb.WatchEvent_RELEASED, l)
	return &pb.ReleaseResponse{Lease: written(l)}, nil
}

func (x leases) Get(_ context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.lookup(defaultNS(req.Namespace), req.Name)
	if err != nil {
		return nil, err
	}
	resp := &pb.GetResponse{Lease: proto.Clone(l).(*pb.Lease)}
	if !req.Serializable {
		resp.Remaining = remaining(l)
	}
	return resp, nil
}

func (x leases) List(_ context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	sel, err := parseSelector(req.LabelSelector)
	if err != nil {
		return nil, err
	}
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &pb.ListResponse{Revision: s.rev}
	for _, l := range s.leases {
		if (req.AllNamespaces || l.Namespace == defaultNS(req.Namespace)) && sel.Matches(l.Labels) {
			resp.Leases = append(resp.Leases, proto.Clone(l).(*pb.Lease))
			if r := remaining(l); r != nil && req.WithRemaining && !req.Serializable {
				if resp.Remaining == nil {
					resp.Remaining = make(map[string]*durationpb.Duration)
				}
				resp.Remaining[key(l.Namespace, l.Name)] = r
			}
		}
	}
	sort.Slice(resp.Leases, func(i, j int) bool {
		return key(resp.Leases[i].Namespace, resp.Leases[i].Name) < key(resp.Leases[j].Namespace, resp.Leases[j].Name)
	})
	return resp, nil
}

func (x leases) Delete(_ context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.lookup(defaultNS(req.Namespace), req.Name)
	if err != nil {
		return nil, err
	}
	l = proto.Clone(l).(*pb.Lease)
	s.write(pb.WatchEvent_DELETED, l)
	return &pb.DeleteResponse{Lease: written(l)}, nil
}

// Watch replays the recorded events after StartRevision (all of them when
// it is zero, unlike the real server), then follows new ones.
func (x leases) Watch(req *pb.WatchRequest, stream pb.Leases_WatchServer) error {
	return x.watch(stream.Context(), req, func(evs []*pb.WatchEvent) error {
		for _, ev := range evs {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		return nil
	})
}

// WatchBatches sends the events that came together in one message, unless
// DisableWatchBatches was called.
func (x leases) WatchBatches(req *pb.WatchRequest, stream pb.Leases_WatchBatchesServer) error {
	if x.s.noBatches.Load() {
		return status.Error(codes.Unimplemented, "unknown method WatchBatches")
	}
	return x.watch(stream.Context(), req, func(evs []*pb.WatchEvent) error {
		return stream.Send(&pb.WatchEventBatch{Events: evs})
	})
}

// watch sends the events after req's start that it selects and, when
// req asks for progress, a PROGRESS event with the fake's revision after
// every interval in which it sent nothing, as the real node does.
func (x leases) watch(ctx context.Context, req *pb.WatchRequest, send func([]*pb.WatchEvent) error) error {
	sel, err := parseSelector(req.LabelSelector)
	if err != nil {
		return err
	}
	var tick <-chan time.Time
	var timer *time.Timer
	every := req.GetProgressInterval().AsDuration()
	if every > 0 {
		timer = time.NewTimer(every)
		defer timer.Stop()
		tick = timer.C
	}
	s := x.s
	// send waits while the watches are paused.
	send = func(send func([]*pb.WatchEvent) error) func([]*pb.WatchEvent) error {
		return func(evs []*pb.WatchEvent) error {
			s.mu.Lock()
			watching := s.watching
			s.mu.Unlock()
			select {
			case <-watching:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-s.done:
				return status.Error(codes.Unavailable, "server stopped")
			}
			return send(evs)
		}
	}(send)
	next := 0
	for {
		s.mu.Lock()
		events := s.events[next:]
		next = len(s.events)
		rev := s.rev
		changed := s.changed
		s.mu.Unlock()
		var out []*pb.WatchEvent
		for _, ev := range events {
			l := ev.Lease
			if ev.Revision <= req.StartRevision ||
				(!req.AllNamespaces && l.Namespace != defaultNS(req.Namespace)) ||
				(req.Name != "" && l.Name != req.Name) ||
				!sel.Matches(l.Labels) {
				continue
			}
			out = append(out, ev)
		}
		if len(out) > 0 {
			if err := send(out); err != nil {
				return err
			}
			if timer != nil {
				timer.Reset(every)
			}
		}
		select {
		case <-changed:
		case <-tick:
			if err := send([]*pb.WatchEvent{{Type: pb.WatchEvent_PROGRESS, Revision: max(rev, req.StartRevision)}}); err != nil {
				return err
			}
			timer.Reset(every)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.done:
			return status.Error(codes.Unavailable, "server stopped")
		}
	}
}

type cluster struct {
	pb.UnimplementedClusterServer
	s *Server
}

func (x cluster) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := x.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != nil {
		return proto.Clone(s.status).(*pb.StatusResponse), nil
	}
	return &pb.StatusResponse{
		Id: s.ID, Leader: s.ID, LeaderGrpcAddr: s.Addr, Term: 1,
		CommitIndex: s.rev, AppliedIndex: s.rev, State: "leader", Revision: s.rev,
		Leases:  int64(len(s.leases)),
		Members: []*pb.Member{{Id: s.ID, RaftAddr: "127.0.0.1:0", GrpcAddr: s.Addr, Suffrage: "voter", State: "leader"}},
	}, nil
}

// parseSelector reads a selector as the real server does, with the
// server's error code.
func parseSelector(s string) (labels.Selector, error) {
	sel, err := labels.ParseSelector(s)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return sel, nil
}
