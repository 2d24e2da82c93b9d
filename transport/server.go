// Package transport serves the leasekeeper gRPC API. Any node answers any
// request: writes and linearizable reads run on the Raft leader, and a
// follower forwards them there; serializable reads and watches are served
// from the node's own applied state.
package transport

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/internal/callmux"
	"github.com/leasekeeper/leasekeeper/node"
)

// Node is what the server needs of a leasekeeper node.
type Node interface {
	ID() string
	Addrs() (raftAddr, grpcAddr string)
	Ready() (bool, string)
	IsLeader() bool
	Leader() (id, grpcAddr string)
	LeaderWatch() (id, grpcAddr string, changed context.Context)
	Propose(ctx context.Context, c *fsmpb.Command) (*fsm.Result, error)
	ReadBarrier(ctx context.Context) error
	RenewLocal(ctx context.Context, rs []*fsmpb.Renew) []*fsm.Lease
	Term() uint64
	Remaining(namespace, name string) (time.Duration, bool)
	SawWaiter(namespace, name, holder string, semaphore bool)
	FSM() *fsm.FSM
	Status() (node.Status, error)
	Join(ctx context.Context, id, raftAddr, grpcAddr string, nonvoter bool, version uint32) error
	RemoveMember(ctx context.Context, id string) error
	TransferLeadership(to string) error
}

// Config limits what clients may ask.
type Config struct {
	// DefaultLeaseDuration is used when an Acquire names no duration; 0
	// makes the duration required.
	DefaultLeaseDuration time.Duration
	// DefaultGracePeriod is used when an Acquire names no grace period.
	DefaultGracePeriod time.Duration
	MinLeaseDuration   time.Duration
	MaxLeaseDuration   time.Duration
	MaxGracePeriod     time.Duration
	// MaxLockDelay bounds an Acquire's lock_delay: how long a lease whose
	// holder failed may stay unavailable to everyone.
	MaxLockDelay time.Duration
	// MaxWriteLeaseDuration bounds the duration of a whole-object write
	// (Write: the Kubernetes Lease API's create, update and patch) in
	// place of MaxLeaseDuration. Its default is the Lease type's own bound
	// (leaseDurationSeconds is an int32), so every Lease that Kubernetes
	// accepts is accepted; the holding still ends after that duration.
	MaxWriteLeaseDuration time.Duration
	// MaxKeepAliveBatch is the most leases one KeepAlive message may renew.
	MaxKeepAliveBatch int
	// MaxRecvMsgSize bounds every request, in bytes.
	MaxRecvMsgSize int
	// MaxWaiters is the longest a lease's wait queue may grow (0: no
	// limit); a wait past it fails with ResourceExhausted.
	MaxWaiters int
	// MaxWatches bounds the watches (Watch, WatchBatches and the watch of a
	// waiting Acquire) the node holds open, and MaxWatchesPerIdentity those
	// of one authenticated caller (with auth off callers are not told
	// apart, and only MaxWatches applies). 0: no limit. One more is
	// refused with ResourceExhausted.
	MaxWatches            int
	MaxWatchesPerIdentity int
	// WatchWindow is how many recent events a watch may resume from;
	// WatchBuffer is each watcher's queue.
	WatchWindow int
	WatchBuffer int
	// DialOptions are used to reach the leader when forwarding (with
	// TLS, the node's client certificate or token).
	DialOptions []grpc.DialOption
	// Creds secure the server's connections (nil: plain text).
	Creds credentials.TransportCredentials
	// Auth authenticates and authorizes callers; nil runs with auth off.
	Auth *auth.Authenticator
	// HeartbeatTimeout and ElectionTimeout are the node's Raft timings
	// (node.Config). They size how long a follower waits for the leader
	// on a forwarded call, HeartbeatTimeout + ElectionTimeout, and the
	// gRPC keepalive (see forward.go and keepalive.go).
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// Reflection serves the gRPC server reflection service, so grpcurl and
	// similar tools can list and call the API without the .proto files.
	// With auth on, it answers authenticated callers only.
	Reflection bool
}

// maxStreamsPerConn bounds the streams one connection holds open at once;
// above the Kubernetes API's connection limit, whose watches share one
// connection to the node.
const maxStreamsPerConn = 2048

// DefaultConfig returns the server's defaults.
func DefaultConfig() Config {
	return Config{
		MinLeaseDuration:      10 * time.Millisecond,
		MaxLeaseDuration:      24 * time.Hour,
		MaxGracePeriod:        time.Hour,
		MaxLockDelay:          time.Minute,
		MaxKeepAliveBatch:     10000,
		MaxRecvMsgSize:        4 << 20,
		MaxWaiters:            1000,
		MaxWatches:            10000,
		MaxWatchesPerIdentity: 1000,
		WatchWindow:           100000,
		// Above one Expire batch (5000 by default), so a watcher is not
		// dropped by a single expiry storm entry.
		WatchBuffer:      16384,
		DialOptions:      []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		HeartbeatTimeout: node.DefaultConfig().HeartbeatTimeout,
		ElectionTimeout:  node.DefaultConfig().ElectionTimeout,
		// The Kubernetes Lease's largest leaseDurationSeconds.
		MaxWriteLeaseDuration: math.MaxInt32 * time.Second,
		Reflection:            true,
	}
}

// Validate checks the limits.
func (c Config) Validate() error {
	var errs []error
	if c.MinLeaseDuration <= 0 || c.MaxLeaseDuration < c.MinLeaseDuration {
		errs = append(errs, fmt.Errorf("transport: need 0 < MinLeaseDuration (%v) <= MaxLeaseDuration (%v)", c.MinLeaseDuration, c.MaxLeaseDuration))
	}
	if c.MaxWriteLeaseDuration < c.MinLeaseDuration {
		errs = append(errs, fmt.Errorf("transport: MaxWriteLeaseDuration (%v) must be at least MinLeaseDuration (%v)", c.MaxWriteLeaseDuration, c.MinLeaseDuration))
	}
	if c.MaxWaiters < 0 || c.MaxWaiters > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("transport: MaxWaiters (%d) must be within [0, %d]", c.MaxWaiters, uint32(math.MaxUint32)))
	}
	if c.MaxWatches < 0 || c.MaxWatchesPerIdentity < 0 {
		errs = append(errs, errors.New("transport: MaxWatches and MaxWatchesPerIdentity must not be negative"))
	}
	if c.MaxGracePeriod < 0 {
		errs = append(errs, errors.New("transport: MaxGracePeriod must not be negative"))
	}
	if c.MaxLockDelay < 0 {
		errs = append(errs, errors.New("transport: MaxLockDelay must not be negative"))
	}
	if c.DefaultLeaseDuration != 0 && (c.DefaultLeaseDuration < c.MinLeaseDuration || c.DefaultLeaseDuration > c.MaxLeaseDuration) {
		errs = append(errs, fmt.Errorf("transport: DefaultLeaseDuration (%v) must lie within [MinLeaseDuration, MaxLeaseDuration] = [%v, %v]", c.DefaultLeaseDuration, c.MinLeaseDuration, c.MaxLeaseDuration))
	}
	if c.DefaultGracePeriod < 0 || c.DefaultGracePeriod > c.MaxGracePeriod {
		errs = append(errs, fmt.Errorf("transport: DefaultGracePeriod (%v) must lie within [0, MaxGracePeriod = %v]", c.DefaultGracePeriod, c.MaxGracePeriod))
	}
	if c.MaxKeepAliveBatch <= 0 || c.MaxRecvMsgSize <= 0 || c.WatchWindow <= 0 || c.WatchBuffer <= 0 {
		errs = append(errs, errors.New("transport: MaxKeepAliveBatch, MaxRecvMsgSize, WatchWindow and WatchBuffer must be > 0"))
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("transport: HeartbeatTimeout (%v) and ElectionTimeout (%v) must be > 0", c.HeartbeatTimeout, c.ElectionTimeout))
	}
	return errors.Join(errs...)
}

// Server implements the Leases and Cluster services.
type Server struct {
	pb.UnimplementedLeasesServer
	pb.UnimplementedClusterServer

	cfg  Config
	node Node
	hub  *Hub
	log  hclog.Logger
	met  *Metrics

	health *health.Server

	// bound limits one forwarded attempt (see forward.go).
	bound time.Duration

	// unary is the interceptor chain of unary calls, also run for each
	// call on a Calls stream.
	unary grpc.UnaryServerInterceptor

	draining  chan struct{} // closed by Drain
	drainOnce sync.Once

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // connections to other nodes by address
	closed bool                        // Close ran: conn makes no new ones
}

// New returns a server for n. hub must be registered as a listener of n's
// FSM (see node.Deps.Listeners). met may be nil (no metrics).
func New(cfg Config, n Node, hub *Hub, log hclog.Logger, met *Metrics) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if met == nil {
		met, _ = NewMetrics(nil)
	}
	if cfg.Auth == nil {
		// The interceptors run even with auth off: forwarding relies on
		// the identity they put in the context.
		a, err := auth.New(auth.DefaultConfig(), log, nil)
		if err != nil {
			return nil, err
		}
		cfg.Auth = a
	}
	s := &Server{
		cfg: cfg, node: n, hub: hub, log: log.Named("grpc"), met: met,
		health:   health.NewServer(),
		bound:    cfg.HeartbeatTimeout + cfg.ElectionTimeout,
		draining: make(chan struct{}),
		conns:    make(map[string]*grpc.ClientConn),
	}
	s.unary = callmux.Chain(met.unary(), recoverUnary(s.log), auth.UnaryServerInterceptor(cfg.Auth))
	if hub != nil {
		hub.setLimits(cfg.MaxWatches, cfg.MaxWatchesPerIdentity, met.watches)
	}
	return s, nil
}

// Register adds the services to g.
// The standard gRPC health service answers for the whole server ("") and
// for each service name; all are SERVING while the node is ready.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterLeasesServer(g, s)
	pb.RegisterClusterServer(g, s)
	healthpb.RegisterHealthServer(g, liveHealth{Server: s.health, s: s})
	if s.cfg.Reflection {
		reflection.Register(g)
	}
	s.updateHealth()
}

// liveHealth answers Check from the node's readiness at the moment of the
// call; Watch streams the statuses that Run refreshes.
type liveHealth struct {
	*health.Server
	s *Server
}

// Check reports SERVING when the node is ready now, for every service the
// server knows (unknown services get NotFound from the embedded server).
func (h liveHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if _, err := h.Server.Check(ctx, req); err != nil {
		return nil, err
	}
	if ok, _ := h.s.node.Ready(); ok {
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}, nil
}

func (s *Server) updateHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok, _ := s.node.Ready(); ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	for _, svc := range []string{"", pb.Leases_ServiceDesc.ServiceName, pb.Cluster_ServiceDesc.ServiceName} {
		s.health.SetServingStatus(svc, st)
	}
}

// ServerOptions are the gRPC options the services expect: the request size
// limit, a panic guard and keepalive.
func (s *Server) ServerOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxRecvMsgSize),
		// Streams (watches, keepalives, long polls) a connection may hold
		// open at once; more wait for one to end.
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		// Handlers run on a pool of goroutines whose stacks have already
		// grown, instead of a new goroutine per call (stack growth was a
		// tenth of the leader's CPU under unary load). Busy workers fall
		// back to new goroutines, so long streams cannot starve calls.
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		grpc.UnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.met.stream(), recoverStream(s.log), auth.StreamServerInterceptor(s.cfg.Auth)),
	}
	opts = append(opts, s.serverKeepalive()...)
	if s.cfg.Creds != nil {
		opts = append(opts, grpc.Creds(s.cfg.Creds))
	}
	return opts
}

// Close drops the connections kept to other nodes and ends health
// watches. A call still running (a forward, a confirmation round) gets no
// new connection afterwards, so none outlives the server.
func (s *Server) Close() error {
	s.health.Shutdown()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for a, c := range s.conns {
		_ = c.Close()
		delete(s.conns, a)
	}
	return nil
}

// forwardedKey marks a request a node forwarded, so it is never forwarded
// twice (two nodes that each think the other leads would loop).
const forwardedKey = auth.MDForwardedBy

// leaderHeader names the leader in the answer to a forwarded request, so a
// client can send its next requests there directly.
const leaderHeader = "x-leasekeeper-leader"

// conn returns the connection kept to another node's gRPC API at addr.
func (s *Server) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, append(slices.Clip(s.cfg.DialOptions), s.clientKeepalive())...)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// forwardCtx marks a request as forwarded by this node and states the
// caller's identity, which the leader trusts only from a node.
func (s *Server) forwardCtx(ctx context.Context) context.Context {
	return auth.ForwardContext(ctx, s.node.ID())
}

// commit is propose with the command's own failure (the FSM's Result.Err)
// also returned as a status error, carrying the lease it names.
func (s *Server) commit(ctx context.Context, c *fsmpb.Command) (*fsm.Result, error) {
	res, err := s.propose(ctx, c)
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return res, toStatus(res.Err, res.Lease)
	}
	return res, nil
}

// propose commits c on this node, which leads, and maps errors to codes.
func (s *Server) propose(ctx context.Context, c *fsmpb.Command) (*fsm.Result, error) {
	res, err := s.node.Propose(ctx, c)
	if err != nil {
		return nil, toStatus(err, nil)
	}
	return res, nil
}

// Run keeps this node's gRPC address registered in the replicated member
// directory, so the others can forward to it once it leads and clients see
// it in Status. A leader registers itself; a follower asks the leader. It
// returns when ctx is done.
func (s *Server) Run(ctx context.Context) {
	// Often enough that the health service follows leadership changes
	// closely; both checks are cheap when nothing changed.
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		s.register(ctx)
		s.updateHealth()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) register(ctx context.Context) {
	raftAddr, grpcAddr := s.node.Addrs()
	if grpcAddr == "" || s.node.IsLeader() {
		return
	}
	if a, ok := s.node.FSM().MemberAddr(s.node.ID()); ok && a == grpcAddr && s.node.FSM().MemberVersion(s.node.ID()) == fsm.CommandVersion {
		return
	}
	if _, addr := s.node.Leader(); addr == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := forwardCluster(ctx, s, fwd{noBound: true}, func(ctx context.Context, c pb.ClusterClient) (*pb.JoinResponse, error) {
		return c.Join(ctx, &pb.JoinRequest{Id: s.node.ID(), RaftAddr: raftAddr, GrpcAddr: grpcAddr, CommandVersion: fsm.CommandVersion})
	})
	if err != nil {
		s.log.Debug("registering address with the leader", "error", err)
	}
}
