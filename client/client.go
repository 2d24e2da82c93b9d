// Package client is the Go client of leasekeeper.
//
// # Connections
//
// A Client holds one lazily dialled gRPC connection per endpoint. Unary calls
// go to the endpoint that last answered; when it is unreachable or answers
// codes.Unavailable (no leader known), the call moves to the next endpoint
// after a jittered exponential backoff, until its context is done. Every
// lease operation is idempotent for the same holder and token on the server
// side, so a retry after a lost reply does no harm.
//
// # Silent nodes
//
// A node can stop answering without closing its connections (a process
// stopped by SIGSTOP, a host that froze): nothing fails, nothing answers.
// So every attempt of a call of the lease API (and of Status) has a time
// limit of its own, Config.AttemptTimeout, cut to a third of the time left
// to the call's deadline when other endpoints could still be tried (never
// below 100ms), as the renewal engine bounds a KeepAlive message. An
// attempt that gets no answer in time fails like an unreachable node
// (codes.Unavailable), and the call moves on to the next endpoint at once,
// never first to the one that just went silent. The node learns the limit
// with the call and stops its own work then. A long poll (Mutex.Lock's
// wait in the queue) is one attempt like any other: the node answers
// "still queued" just before the limit, and the Mutex polls again. Cluster
// membership changes (Join, RemoveMember, TransferLeadership) are not
// idempotent and keep the whole deadline on one endpoint.
//
// Watches have no answer to wait for, so the client asks the node for a
// progress message after every Config.WatchProgressInterval without events
// (WatchRequest.progress_interval), and gives up a watch that has been
// silent for three intervals: Watch's Recv fails with codes.Unavailable,
// and the Mutex, LeaderElector, Semaphore, Observe and Monitor watches
// resume on the next endpoint from the last revision they saw.
//
// Errors answered by the server come back as the sentinels below, so callers
// test them with errors.Is, while status.Code still reports the gRPC code and
// the message keeps the server's text.
//
// # Holdings and the local deadline
//
// Hold, Mutex, LeaderElector and Heartbeat all take a lease and keep it as a
// Holding. The client reads its clock before it sends each acquire or
// renewal (sent) and believes the holding only until
//
//	sent + duration*(1-Config.MaxDrift) - Config.Margin
//
// The server expires a holding only when more than duration+grace passed
// since it applied the last renewal (after sent), and a new leader restarts
// every holding's full duration (see docs/design.md), so the client stops
// believing first. MaxDrift (default 1%) bounds the difference in clock
// rates; Margin (default 50ms) covers the latency between the deadline and
// the holder's code noticing it. A holding reports its end through Done,
// Lost, Err and a cancelled Context; Lost closes at the local deadline from
// a timer on the client's clock even if the server never answers. Fencing
// tokens (package fence) cover pauses that no clock can.
//
// # Renewal engine
//
// One engine per Client renews every holding through one KeepAlive stream,
// many holdings per message, at Config.RenewFraction (default 1/3) of each
// duration unless the holding sets its own interval. A holding is renewed a
// quarter of its interval early when a message goes out anyway, so holdings
// with similar timings share messages. An unanswered message (no answer
// within a third of the time left to the earliest deadline in it) or a broken
// stream moves the engine to the next endpoint after a short backoff, until
// the deadline. NotFound and FailedPrecondition lose the holding at once;
// PermissionDenied loses it without retrying.
//
// # Calls streams
//
// Acquire, Renew, Release, Get, Delete and Write go to a node over one
// Calls stream per endpoint rather than as one gRPC call each: a call is a
// message out and a message back, which costs the client and the node far
// less than opening and closing an HTTP/2 stream per call. A call takes the
// unary path instead when the connection is not ready yet (the unary path
// waits for it within the call's deadline), when it carries call options or
// outgoing metadata (a message on a shared stream carries neither), when
// Config.UnaryCalls is set, and against a node that does not serve Calls.
// A broken stream fails its calls in flight with codes.Unavailable, which
// the failover retries on the next endpoint, as for a unary call whose
// answer was lost. A stream keeps the credentials it was opened with.
//
// # Cleanup and release
//
// Every acquire path (Hold, Mutex.TryLock and Lock, Semaphore,
// LeaderElector, Heartbeat) follows one rule: when the caller gives up on
// an Acquire whose outcome it does not know (its context ended while the
// call was on its way, or no node answered), the server may have granted
// it, or queued it, all the same. The client then finds out and undoes it
// in the background: it leaves the lease's queue, a log entry that the
// leader orders after the acquire, and releases the holding that the
// answer names if it is the caller's. Paths that try again (Lock, LeaderElector, Heartbeat) learn
// the outcome from their next attempt, which adopts a granted holding, and
// clean up when they give up between attempts.
//
// Releases (Holding.Release, Mutex.Unlock, the LeaderElector's
// ReleaseOnCancel, Election.Resign) use the caller's context only to wait:
// the release runs on a context of its own, bounded by
// Config.ReleaseTimeout, so a `defer m.Unlock(ctx)` with a context that
// has ended frees the lock. The client owns that work: a new acquire of
// the same lease by the same holder waits for it, and Close waits for all
// of it. Close also releases every holding the client still keeps, unless
// Config.AbandonOnClose asks to leave them to expire.
//
// # Queues and lock delay
//
// Mutex and Semaphore waiters queue on the server (AcquireRequest.wait,
// AcquireSlot), first come, first served: the leader hands a released or
// expired lease, or semaphore slot, to the first waiter in the same Raft
// entry (see Mutex and Semaphore), and answers a waiter's polls without a
// log entry while it is still in line. Against a cluster too old for
// semaphore queues, Semaphore waiters race for freed slots instead.
//
// A lock delay (WithLockDelay; Consul's and Chubby's lock-delay) is
// enforced by the leader: after a holding expires, nobody gets the lease
// until the delay is over.
//
// # Metrics
//
// With Config.Registerer set the client registers leasekeeper_client_*
// collectors: renewals by result, KeepAlive messages and stream failures,
// holdings kept and lost (by reason), acquire attempts and lock wait time.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
)

// Errors that the client returns. Server answers map to them by gRPC code:
// NotFound to ErrNotFound, FailedPrecondition to ErrStaleToken,
// InvalidArgument to ErrInvalid, PermissionDenied to ErrPermission and
// Unavailable to ErrUnavailable. DeadlineExceeded and Canceled map to
// context.DeadlineExceeded and context.Canceled. Other codes come back as
// plain gRPC status errors.
var (
	// ErrNotFound means the lease (or the member) does not exist.
	ErrNotFound = errors.New("client: not found")
	// ErrStaleToken means the holder or fencing token no longer names the
	// lease's current holding.
	ErrStaleToken = errors.New("client: stale or wrong fencing token")
	// ErrInvalid means an argument was refused (a name, a duration, an
	// option): by a constructor, which checks what it can without the
	// cluster, or by the server.
	ErrInvalid = errors.New("client: invalid argument")
	// ErrPermission means the server refused the caller.
	ErrPermission = errors.New("client: permission denied")
	// ErrUnavailable means no endpoint could serve the call, usually because
	// none is reachable or the cluster has no leader.
	ErrUnavailable = errors.New("client: cluster unavailable")
	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("client: closed")

	// ErrLocked means another holder holds the lease (TryLock, Hold). The
	// error is a *HeldError that names the holding.
	ErrLocked = errors.New("client: lease held by another holder")
	// ErrLost is wrapped by the error of every holding that ended without
	// the caller asking: Holding.Err matches it and the cause (ErrExpired,
	// ErrNotFound, ErrStaleToken, ErrPermission, ErrInvalid, ErrClosed).
	ErrLost = errors.New("client: holding lost")
	// ErrExpired means a holding's local deadline passed without a
	// successful renewal; the server may expire it at any moment after.
	ErrExpired = errors.New("client: local deadline passed without a renewal")
	// ErrReleased is the Err of a holding that the caller released.
	ErrReleased = errors.New("client: holding released")
	// ErrAbandoned is the Err of a holding that the caller stopped renewing
	// without releasing it.
	ErrAbandoned = errors.New("client: holding abandoned")
	// ErrNotLocked means Unlock found no holding to release.
	ErrNotLocked = errors.New("client: mutex not locked")
	// ErrAlreadyLocked means Lock or TryLock was called on a Mutex that
	// holds its lock already.
	ErrAlreadyLocked = errors.New("client: mutex already locked")
	// ErrNotLeader means Election.Proclaim was called by a candidate that
	// does not lead.
	ErrNotLeader = errors.New("client: election: not the leader")
	// ErrAlreadyHeld means this client already keeps a holding of the lease
	// for the same holder identity; two local holdings of one server
	// holding would end each other.
	ErrAlreadyHeld = errors.New("client: lease already held by this client for this holder")
)

// DefaultEndpoints are the gRPC addresses of a local three-node cluster.
var DefaultEndpoints = []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}

// Config configures a Client. Start from DefaultConfig.
type Config struct {
	// Endpoints are the host:port gRPC addresses of any cluster nodes. Any
	// node answers any request.
	Endpoints []string
	// DialTimeout bounds one attempt to connect to an endpoint; a call that
	// meets a slower endpoint fails over to the next one.
	DialTimeout time.Duration
	// TLS, when set, secures the connections; nil means plaintext.
	TLS *tls.Config
	// Logger receives retries at debug level; nil discards them.
	Logger hclog.Logger
	// Clock times the backoff between retries; nil means the real clock.
	Clock clock.Clock
	// MaxRetries caps the retries of a call whose context has no deadline.
	// A call with a deadline retries until the deadline.
	MaxRetries int
	// BackoffBase is the wait before the first retry; it doubles on every
	// retry up to BackoffMax. Each wait is jittered to between half and all
	// of its value. The same bounds pace reconnection to a lost endpoint.
	BackoffBase time.Duration
	// BackoffMax caps the wait between retries.
	BackoffMax time.Duration

	// MaxDrift is the documented bound on the difference in clock rate
	// between this machine and the cluster's leader, as a fraction (0.01 is
	// 1%). The client believes a holding only until
	// sent + duration*(1-MaxDrift) - Margin, where sent is its own clock
	// reading taken before the acquire or renew request was sent.
	MaxDrift float64
	// Margin is subtracted from every local deadline. It covers what the
	// drift bound does not: the delay between the deadline and the moment
	// the holder's code notices it (timer latency, scheduling, a short GC
	// pause). The default of 50ms suits a process without long pauses;
	// fencing tokens cover the rest. A holding whose duration leaves no room
	// to renew before its local deadline is refused (ErrInvalid).
	Margin time.Duration
	// RenewFraction is how far into a holding's duration the renewal engine
	// renews it, unless the holding sets its own interval (WithRenewInterval,
	// a Profile, the LeaderElector's RetryPeriod). 1/3 renews three times per
	// duration.
	RenewFraction float64
	// Registerer, when set, receives the client's metrics
	// (leasekeeper_client_*). Several clients may share one Registerer: they
	// then share the collectors.
	Registerer prometheus.Registerer
	// DialOptions are added to the client's own when dialling; tests use
	// them to inject interceptors.
	DialOptions []grpc.DialOption
	// UnaryCalls sends every call as a gRPC call of its own instead of a
	// message on the endpoint's Calls stream (see "Calls streams"), for
	// nodes behind a proxy that inspects unary calls, or interceptors that
	// must see every call.
	UnaryCalls bool
	// AttemptTimeout bounds how long one attempt of a call waits for its
	// node's answer before the call moves to the next endpoint (see
	// "Silent nodes"); with a deadline on the call, an attempt also gets
	// at most a third of the time left while other endpoints remain. 0
	// lets an attempt use the call's whole deadline, as on a single node.
	AttemptTimeout time.Duration
	// WatchProgressInterval is how often a node sends an idle watch a
	// progress message; a watch silent for three intervals is given up and
	// resumed elsewhere. 0 asks for none and never gives a watch up.
	WatchProgressInterval time.Duration
	// ReleaseTimeout bounds the work that a release or a cleanup does on
	// the server on its own context, after the caller stopped waiting (see
	// "Cleanup and release"). Close waits for that work, so it also bounds
	// Close.
	ReleaseTimeout time.Duration
	// AbandonOnClose makes Close leave the holdings that the client still
	// keeps to expire on the server after their duration and grace, as a
	// crashed process would, instead of releasing them.
	AbandonOnClose bool
}

// Defaults of the holding-related Config fields.
const (
	DefaultMaxDrift      = 0.01
	DefaultMargin        = 50 * time.Millisecond
	DefaultRenewFraction = 1.0 / 3
)

// Defaults of the silent-node limits. A healthy node answers in
// milliseconds, and a node without a leader answers Unavailable at once;
// 2s also covers a commit held up by an election (about a second with
// Raft's default timeouts). It is below what the renewal engine allows a
// KeepAlive message of a default holding (a third of the time left at the
// renewal, about 3.3s of a 15s lease), so a call never waits on a silent
// node longer than the engine does. Progress every second gives a watch
// up after 3s of silence, the time a call to that node would have taken
// to fail over, for one small message a second per idle watch.
const (
	DefaultAttemptTimeout        = 2 * time.Second
	DefaultWatchProgressInterval = time.Second
	// DefaultReleaseTimeout leaves a release time for a failover and an
	// election (about a second with Raft's defaults).
	DefaultReleaseTimeout = 5 * time.Second
	// MinWatchProgressInterval is the shortest interval a node honours.
	MinWatchProgressInterval = 50 * time.Millisecond
)

// DefaultConfig returns a Config for a local three-node cluster.
func DefaultConfig() Config {
	return Config{
		Endpoints:   append([]string(nil), DefaultEndpoints...),
		DialTimeout: 5 * time.Second,
		MaxRetries:  10,
		BackoffBase: 50 * time.Millisecond,
		BackoffMax:  2 * time.Second,

		MaxDrift:      DefaultMaxDrift,
		Margin:        DefaultMargin,
		RenewFraction: DefaultRenewFraction,

		AttemptTimeout:        DefaultAttemptTimeout,
		WatchProgressInterval: DefaultWatchProgressInterval,
		ReleaseTimeout:        DefaultReleaseTimeout,
	}
}

// Validate reports the first problem with c, naming the field.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("client: Config.Endpoints is empty")
	}
	for _, ep := range c.Endpoints {
		host, port, err := net.SplitHostPort(ep)
		if err != nil || host == "" || port == "" {
			return fmt.Errorf("client: Config.Endpoints: %q is not host:port", ep)
		}
	}
	switch {
	case c.DialTimeout <= 0:
		return fmt.Errorf("client: Config.DialTimeout must be positive, got %v", c.DialTimeout)
	case c.MaxRetries < 0:
		return fmt.Errorf("client: Config.MaxRetries must not be negative, got %d", c.MaxRetries)
	case c.BackoffBase <= 0:
		return fmt.Errorf("client: Config.BackoffBase must be positive, got %v", c.BackoffBase)
	case c.BackoffMax < c.BackoffBase:
		return fmt.Errorf("client: Config.BackoffMax (%v) must not be below Config.BackoffBase (%v)", c.BackoffMax, c.BackoffBase)
	case !(c.MaxDrift >= 0 && c.MaxDrift < 0.5):
		return fmt.Errorf("client: Config.MaxDrift must be in [0, 0.5), got %v", c.MaxDrift)
	case c.Margin < 0:
		return fmt.Errorf("client: Config.Margin must not be negative, got %v", c.Margin)
	case !(c.RenewFraction > 0 && c.RenewFraction < 1-c.MaxDrift):
		return fmt.Errorf("client: Config.RenewFraction must be in (0, 1-MaxDrift), got %v", c.RenewFraction)
	case c.AttemptTimeout < 0:
		return fmt.Errorf("client: Config.AttemptTimeout must not be negative, got %v", c.AttemptTimeout)
	case c.ReleaseTimeout <= 0:
		return fmt.Errorf("client: Config.ReleaseTimeout must be positive, got %v", c.ReleaseTimeout)
	case c.WatchProgressInterval != 0 && c.WatchProgressInterval < MinWatchProgressInterval:
		return fmt.Errorf("client: Config.WatchProgressInterval must be 0 or at least %v, got %v", MinWatchProgressInterval, c.WatchProgressInterval)
	}
	return nil
}

// Client talks to a leasekeeper cluster. It is safe for concurrent use.
type Client struct {
	cfg       Config
	log       hclog.Logger
	clock     clock.Clock
	endpoints []string
	conns     []*grpc.ClientConn
	calls     []*callsConn // by endpoint, as conns
	// ctx ends with Close; the Calls streams live in it, and wg waits for
	// their receivers.
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
	// cur is the index of the endpoint that calls try first: the last one
	// that answered.
	cur    atomic.Uint32
	closed atomic.Bool
	// closing is set when Close begins: no new holding is taken, while the
	// releases and cleanups under way (bg) still reach the server.
	closing atomic.Bool
	bg      background
	// noWatchBatches: a node answered WatchBatches with Unimplemented, so
	// watches use Watch.
	noWatchBatches atomic.Bool
	leases         pb.LeasesClient
	cluster        pb.ClusterClient
	met            *metrics
	keeper         *keeper
	// attemptPB is Config.AttemptTimeout as sent with a call.
	attemptPB *durationpb.Duration
	// silentAfter is the least wait without any answer that makes a
	// Calls stream silent (see callsStream).
	silentAfter time.Duration
}

// New returns a Client for cfg. It does not wait for any connection: each
// endpoint is dialled on first use.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger,
		clock:     cfg.Clock,
		endpoints: append([]string(nil), cfg.Endpoints...),
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	if c.clock == nil {
		c.clock = clock.New()
	}
	c.met = newMetrics(cfg.Registerer)
	if cfg.AttemptTimeout > 0 {
		c.attemptPB = durationpb.New(cfg.AttemptTimeout)
	}
	// Half the usual limit: a healthy node answers far sooner, and a long
	// poll answers before its limit.
	c.silentAfter = max(cfg.AttemptTimeout/2, minAttemptTimeout)
	c.keeper = newKeeper(c)
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  cfg.BackoffBase,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   cfg.BackoffMax,
			},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		// A node that went silent without closing the connection is
		// dropped after 10 s of quiet and 3 s of unanswered ping. 10 s is
		// gRPC's floor, and the nodes admit pings every 5 s, idle or not.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
	}
	opts = append(opts, cfg.DialOptions...)
	for _, ep := range c.endpoints {
		cc, err := grpc.NewClient(ep, opts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("client: endpoint %q: %w", ep, err)
		}
		c.conns = append(c.conns, cc)
		c.calls = append(c.calls, &callsConn{c: c, cc: cc, endpoint: ep})
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	conn := failoverConn{c: c}
	c.leases = leasesClient{LeasesClient: pb.NewLeasesClient(conn), c: c}
	c.cluster = pb.NewClusterClient(conn)
	return c, nil
}

// Close stops the renewal engine, releases every holding still kept, waits
// for the releases and cleanups under way, and closes every connection.
// Every holding still kept ends at once with ErrClosed (its Lost channel
// closes) and is then released on the server, unless
// Config.AbandonOnClose is set: then the server expires it after its
// duration and grace. The server side is bounded by
// Config.ReleaseTimeout. Calls after Close return ErrClosed.
func (c *Client) Close() error {
	if c.closing.Swap(true) {
		return nil
	}
	hs := c.keeper.close()
	if !c.cfg.AbandonOnClose {
		c.releaseAll(hs)
	}
	c.closeBackground()
	c.closed.Store(true)
	c.stop()
	for _, cn := range c.calls {
		cn.close()
	}
	c.wg.Wait()
	return c.closeConns()
}

// Clock returns the clock that the client makes its time decisions on.
func (c *Client) Clock() clock.Clock { return c.clock }

func (c *Client) closeConns() error {
	var errs []error
	for _, cc := range c.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Endpoints returns the endpoints that the Client was built with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// Leases returns the raw lease API. Unary calls fail over between endpoints
// and return mapped errors; streams fail over only while they open, and
// their errors are mapped too.
func (c *Client) Leases() pb.LeasesClient { return c.leases }

// Cluster returns the raw cluster API, with the same failover as Leases.
func (c *Client) Cluster() pb.ClusterClient { return c.cluster }

// Acquire takes the lease namespace/name for holder, or renews it when
// holder holds it already. When someone else holds it, the answer has
// Acquired false, the current holding and its remaining time, and err is nil.
// A zero grace leaves the grace period to the server; labels apply when a new
// holding begins.
func (c *Client) Acquire(ctx context.Context, namespace, name, holder string, duration, grace time.Duration, labels map[string]string) (*pb.AcquireResponse, error) {
	req := &pb.AcquireRequest{
		Namespace:      namespace,
		Name:           name,
		HolderIdentity: holder,
		LeaseDuration:  durationpb.New(duration),
		Labels:         labels,
	}
	if grace != 0 {
		req.GracePeriod = durationpb.New(grace)
	}
	return c.leases.Acquire(ctx, req)
}

// Renew extends holder's holding of namespace/name, named by its fencing
// token. It returns ErrStaleToken when the holding is no longer the caller's.
func (c *Client) Renew(ctx context.Context, namespace, name, holder string, token uint64) (*pb.Lease, error) {
	resp, err := c.leases.Renew(ctx, &pb.RenewRequest{
		Namespace: namespace, Name: name, HolderIdentity: holder, FencingToken: token,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetLease(), nil
}

// Release ends holder's holding of namespace/name, named by its fencing token.
func (c *Client) Release(ctx context.Context, namespace, name, holder string, token uint64) (*pb.Lease, error) {
	resp, err := c.leases.Release(ctx, &pb.ReleaseRequest{
		Namespace: namespace, Name: name, HolderIdentity: holder, FencingToken: token,
	})
	if err != nil {
		return nil, err
	}
	return resp.GetLease(), nil
}

// Get reads one lease. A serializable read is answered from the node's local
// state: faster, possibly stale, and without a remaining time on followers.
func (c *Client) Get(ctx context.Context, namespace, name string, serializable bool) (*pb.GetResponse, error) {
	return c.leases.Get(ctx, &pb.GetRequest{Namespace: namespace, Name: name, Serializable: serializable})
}

// List reads the leases that req selects.
func (c *Client) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	return c.leases.List(ctx, req)
}

// Delete removes a lease and returns it as it was.
func (c *Client) Delete(ctx context.Context, namespace, name string) (*pb.Lease, error) {
	resp, err := c.leases.Delete(ctx, &pb.DeleteRequest{Namespace: namespace, Name: name})
	if err != nil {
		return nil, err
	}
	return resp.GetLease(), nil
}

// Status reports the cluster as the answering node sees it.
func (c *Client) Status(ctx context.Context) (*pb.StatusResponse, error) {
	return c.cluster.Status(ctx, &pb.StatusRequest{})
}

// minAttemptTimeout is the least time an attempt gets when the call's
// deadline is cut into shares for several endpoints: less would fail a
// healthy node's round trip and work.
const minAttemptTimeout = 100 * time.Millisecond

// attempt is one try of a call: the endpoint it goes to and how long it may
// wait for the answer (0: no limit of its own).
type attempt struct {
	endpoint uint32
	timeout  time.Duration
}

// attemptTimeout returns how long the next attempt of a call bounded by
// ctx may wait, and false when ctx's deadline has passed. A Mutex's long
// poll is not cut to a share of the time left: its node answers before
// the limit anyway, and a poll cut short is one more log entry.
func (c *Client) attemptTimeout(ctx context.Context) (time.Duration, bool) {
	d := c.cfg.AttemptTimeout
	dl, ok := ctx.Deadline()
	if !ok {
		return d, true
	}
	left := time.Until(dl)
	if left <= 0 {
		return 0, false
	}
	if d == 0 {
		return left, true
	}
	if len(c.conns) > 1 && ctx.Value(longPollKey{}) == nil {
		// Leave time for the other endpoints, as the renewal engine does.
		d = min(d, max(left/3, minAttemptTimeout))
	}
	return min(d, left), true
}

// retry runs call against one endpoint after another until it succeeds,
// fails with an error that a retry cannot help, or ctx is done. Without a
// deadline on ctx it gives up after cfg.MaxRetries retries. With bounded
// set, each attempt gets a time limit (attemptTimeout) and an attempt that
// ran out of it fails over at once, as a silent node's does.
func (c *Client) retry(ctx context.Context, method string, bounded bool, call func(a attempt) error) error {
	return c.retryFrom(ctx, method, bounded, -1, call)
}

// retryFrom is retry for a call that replaces one that failed on endpoint
// avoid (-1: none): the first attempt does not go there either.
func (c *Client) retryFrom(ctx context.Context, method string, bounded bool, avoid int, call func(a attempt) error) error {
	if c.closed.Load() {
		return ErrClosed
	}
	_, hasDeadline := ctx.Deadline()
	n := uint32(len(c.conns))
	var tried []failure // the attempts that failed, in order
	for try := 0; ; try++ {
		a := attempt{endpoint: c.cur.Load()}
		if len(tried) > 0 {
			avoid = int(tried[len(tried)-1].endpoint)
		}
		if n > 1 && int(a.endpoint) == avoid {
			// Another call moved back to the endpoint that just failed
			// this one: never start over there.
			a.endpoint = (a.endpoint + 1) % n
		}
		if bounded {
			var ok bool
			if a.timeout, ok = c.attemptTimeout(ctx); !ok {
				return c.gaveUp(context.DeadlineExceeded, try, tried)
			}
		}
		err := call(a)
		if c.closed.Load() {
			return ErrClosed
		}
		code := status.Code(err)
		if cerr := ctx.Err(); cerr != nil && (code == codes.DeadlineExceeded || code == codes.Canceled) {
			// The caller's context ended the attempt: report the nodes
			// tried.
			return c.gaveUp(cerr, try+1, append(tried, failure{a.endpoint, err}))
		}
		silent := isTimeout(err)
		if bounded && code == codes.DeadlineExceeded && ctx.Err() == nil {
			// The attempt's own limit, not the caller's, ended it.
			err = &timeoutError{endpoint: c.endpoints[a.endpoint], after: a.timeout}
			code, silent = codes.Unavailable, true
		}
		if code != codes.Unavailable {
			return mapError(err)
		}
		tried = append(tried, failure{a.endpoint, err})
		if cerr := ctx.Err(); cerr != nil {
			// The deadline passed during the attempt: the caller's limit
			// ended the call, whatever the last endpoint said.
			return c.gaveUp(cerr, try+1, tried)
		}
		// Move on from the failed endpoint, unless a concurrent call has
		// moved on already.
		c.cur.CompareAndSwap(a.endpoint, (a.endpoint+1)%n)
		if !hasDeadline && try >= c.cfg.MaxRetries {
			return c.gaveUp(nil, try+1, tried)
		}
		if silent {
			// The attempt waited its limit already; the next endpoint
			// may answer at once.
			c.log.Debug("no answer, trying the next endpoint", "method", method, "endpoint", c.endpoints[a.endpoint], "attempt", try+1, "error", err)
			continue
		}
		wait := c.backoff(try)
		c.log.Debug("retrying", "method", method, "endpoint", c.endpoints[a.endpoint], "attempt", try+1, "wait", wait, "error", err)
		if werr := c.sleep(ctx, wait); werr != nil {
			return c.gaveUp(werr, try+1, tried)
		}
	}
}

// failure is an attempt that failed with err on endpoint.
type failure struct {
	endpoint uint32
	err      error
}

// gaveUp reports a call that ended after attempts attempts, naming each
// endpoint tried with what it last said: with ctxErr set, the caller's
// context ended it (its code, matching ctxErr); otherwise the retries ran
// out (the last error's code and kind).
func (c *Client) gaveUp(ctxErr error, attempts int, tried []failure) error {
	if len(tried) == 0 {
		return &statusError{kind: ctxErr, st: status.FromContextError(ctxErr)}
	}
	var order []uint32
	last := make(map[uint32]error, len(tried))
	for _, f := range tried {
		if _, ok := last[f.endpoint]; !ok {
			order = append(order, f.endpoint)
		}
		last[f.endpoint] = f.err
	}
	nodes := make([]string, len(order))
	for i, ep := range order {
		nodes[i] = fmt.Sprintf("%s (%s)", c.endpoints[ep], describe(last[ep]))
	}
	msg := fmt.Sprintf("after %d attempts on nodes %s", attempts, strings.Join(nodes, ", "))
	if ctxErr != nil {
		return &statusError{kind: ctxErr, st: status.New(status.FromContextError(ctxErr).Code(), msg)}
	}
	p := status.Convert(tried[len(tried)-1].err).Proto()
	p.Message = msg
	return mapError(status.ErrorProto(p))
}

// describe says briefly what an attempt's error was, for gaveUp.
func describe(err error) string {
	var t *timeoutError
	switch st := status.Convert(err); {
	case errors.As(err, &t):
		d := "no answer"
		if t.after > 0 {
			d += fmt.Sprintf(" within %v", t.after)
		}
		if t.why != "" {
			d += ": " + t.why
		}
		return d
	case st.Code() == codes.DeadlineExceeded:
		return "no answer before the call's deadline"
	case st.Code() == codes.Canceled:
		return "cancelled"
	default:
		return st.Code().String() + ": " + st.Message()
	}
}

// timeoutError is an attempt that got no answer within its limit. Its code
// is Unavailable, so the failover treats the node as unreachable.
type timeoutError struct {
	endpoint string
	after    time.Duration
	// why, when set, says what was silent (a Calls stream given up).
	why string
}

func (e *timeoutError) Error() string {
	msg := "no answer from " + e.endpoint
	if e.after > 0 {
		msg += fmt.Sprintf(" within %v", e.after)
	}
	if e.why != "" {
		msg += " (" + e.why + ")"
	}
	return msg
}

// GRPCStatus makes status.Code report Unavailable.
func (e *timeoutError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.Error()) }

func isTimeout(err error) bool {
	if err == nil {
		return false // the common case, without the allocation of As
	}
	var t *timeoutError
	return errors.As(err, &t)
}

// backoff returns the jittered wait before retry number attempt+1.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMax
	if attempt < 32 {
		if b := c.cfg.BackoffBase << attempt; b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// failoverConn is the grpc.ClientConnInterface behind Leases and Cluster.
type failoverConn struct {
	c *Client
	// sent, when set, receives the client's clock reading taken before
	// each attempt is sent: the last is the answered one's.
	sent *time.Time
}

func (f failoverConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return f.c.retry(ctx, method, attemptBounded(method), func(a attempt) error {
		if f.sent != nil {
			*f.sent = f.c.clock.Now()
		}
		actx, cancel := withAttemptTimeout(ctx, a.timeout)
		defer cancel()
		var hdr metadata.MD
		err := f.c.conns[a.endpoint].Invoke(actx, method, args, reply, append(opts, grpc.Header(&hdr))...)
		f.c.followLeader(hdr.Get(LeaderHeader)...)
		return err
	})
}

// attemptBounded reports whether each attempt of method gets its own time
// limit: the lease API's calls and Status, which are safe to repeat on
// another node. Membership changes are not, and may take an election.
func attemptBounded(method string) bool {
	return strings.HasPrefix(method, "/"+pb.Leases_ServiceDesc.ServiceName+"/") || method == pb.Cluster_Status_FullMethodName
}

// withAttemptTimeout bounds ctx by an attempt's limit; gRPC carries the
// deadline to the node, which stops its work (or answers a long poll)
// then. A unary attempt is the slow path: the timer it costs does not
// matter next to the call.
func withAttemptTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// LeaderHeader is the response header in which a node that forwarded a
// request names the leader's gRPC address.
const LeaderHeader = "x-leasekeeper-leader"

// followLeader moves the client's next calls to the leader when a node that
// forwarded this one named it and the leader is one of the endpoints:
// requests then skip the forwarding hop.
func (c *Client) followLeader(leader ...string) {
	if len(leader) == 0 || leader[0] == "" {
		return
	}
	for i, ep := range c.endpoints {
		if ep == leader[0] {
			c.cur.Store(uint32(i))
			return
		}
	}
}

func (f failoverConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var s grpc.ClientStream
	err := f.c.retry(ctx, method, false, func(a attempt) error {
		var err error
		s, err = f.c.conns[a.endpoint].NewStream(ctx, desc, method, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return mappedStream{s}, nil
}
