package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// HeldError is the error of an attempt to take a lease that another holder
// holds. It matches ErrLocked.
type HeldError struct {
	// Lease is the current holding as the server answered it.
	Lease *pb.Lease
	// Remaining is the server's bound on the time left to that holding; 0
	// when the server did not say.
	Remaining time.Duration
	// Queued is true when the caller waits in the lease's queue, at
	// Position (1 = next).
	Queued   bool
	Position int
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%v: %s/%s held by %q (token %d)", ErrLocked, e.Lease.GetNamespace(), e.Lease.GetName(),
		e.Lease.GetHolderIdentity(), e.Lease.GetFencingToken())
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *HeldError) Is(target error) bool { return target == ErrLocked }

// Holding is one holding of a lease that the client keeps alive through its
// renewal engine until it is released, abandoned or lost.
//
// The client believes the holding only until its local deadline,
// sent + duration*(1-Config.MaxDrift) - Config.Margin, where sent is the
// client's clock reading taken before the last successful acquire or renew
// was sent (and, for a LeaderElector, no later than sent + RenewDeadline).
// The server cannot expire the holding before duration + grace after it
// applied that renewal, which was after sent; so the holding is lost here
// before anyone else can be granted the lease. Valid reports false from the
// deadline on, and Lost closes at the deadline on the client's clock even
// if no answer ever came.
//
// Fencing tokens cover what clocks cannot (a pause longer than the
// holding): pass Token to every resource that the lease protects.
type Holding struct {
	k          *keeper
	namespace  string
	name       string
	holder     string
	token      uint64
	duration   time.Duration
	renewEvery time.Duration
	record     bool // renewals go through the log (WithRecordedRenewals)
	maxValid   time.Duration
	lease      *pb.Lease
	acquiredAt time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	lost   chan struct{}

	// Guarded by k.mu.
	deadline  time.Time
	lastSent  time.Time // send time of the last successful acquire or renew
	nextRenew time.Time
	inflight  uint64 // id of the KeepAlive message that carries it, or 0
	failures  int    // consecutive renewals answered with a retryable error
	ended     bool
	err       error
}

// Namespace returns the lease's namespace.
func (h *Holding) Namespace() string { return h.namespace }

// Name returns the lease's name.
func (h *Holding) Name() string { return h.name }

// Holder returns the holder identity.
func (h *Holding) Holder() string { return h.holder }

// Token returns the fencing token of the holding.
func (h *Holding) Token() uint64 { return h.token }

// FencingToken is Token.
func (h *Holding) FencingToken() uint64 { return h.token }

// Duration returns the lease duration that the server holds the lease for.
func (h *Holding) Duration() time.Duration { return h.duration }

// Lease returns the lease as the acquire answered it.
func (h *Holding) Lease() *pb.Lease { return proto.Clone(h.lease).(*pb.Lease) }

// AcquiredAt returns the client's clock reading taken before the acquire
// that began this holding (as far as this client knows) was sent.
func (h *Holding) AcquiredAt() time.Time { return h.acquiredAt }

// Deadline returns the local deadline, on the client's clock.
func (h *Holding) Deadline() time.Time {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	return h.deadline
}

// LastRenewal returns the send time (on the client's clock) of the last
// successful acquire or renewal.
func (h *Holding) LastRenewal() time.Time {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	return h.lastSent
}

// Valid reports whether the holding has not ended and its local deadline
// has not passed. It reads the clock, so it is right even in the instant
// before the engine notices the deadline.
func (h *Holding) Valid() bool {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	return !h.ended && h.k.clk.Now().Before(h.deadline)
}

// Remaining returns the time left to the local deadline, 0 once the holding
// is no longer valid.
func (h *Holding) Remaining() time.Duration {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	if h.ended {
		return 0
	}
	return max(h.deadline.Sub(h.k.clk.Now()), 0)
}

// Done is closed when the holding ends for any reason: released,
// abandoned, lost or the client closed.
func (h *Holding) Done() <-chan struct{} { return h.done }

// Lost is closed when the holding ends without the caller asking: its local
// deadline passed without a renewal, the server answered that it is gone or
// no longer the caller's, the server refused the caller, or the client was
// closed. It is closed the moment the client knows.
func (h *Holding) Lost() <-chan struct{} { return h.lost }

// Err returns nil while the holding lasts, then why it ended: ErrReleased,
// ErrAbandoned, or an error matching ErrLost and its cause.
func (h *Holding) Err() error {
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	return h.err
}

// Context returns a context that is cancelled when the holding ends, with
// Err as its cause (context.Cause).
func (h *Holding) Context() context.Context { return h.ctx }

// Release ends the holding: first locally (Done closes and Context is
// cancelled, so the caller's work stops before anyone else can take the
// lease), then on the server, so others need not wait for it to expire.
//
// ctx bounds only how long Release waits for the server: the release
// itself runs on a context of its own (ctx's values, no cancellation,
// Config.ReleaseTimeout), so a `defer h.Release(ctx)` with a request's
// context that has ended still frees the lease. When ctx ends first,
// Release returns its error while the release goes on; Close waits for
// it. Releasing twice is harmless. If the holding had been lost before,
// Release still frees the lease if the server kept it, and returns the
// loss.
func (h *Holding) Release(ctx context.Context) error {
	h.k.end(h, ErrReleased, "")
	var err error
	select {
	case err = <-h.k.c.release(ctx, h):
	case <-ctx.Done():
		return fmt.Errorf("client: stopped waiting for the release of %s/%s (it goes on): %w", h.namespace, h.name, ctx.Err())
	}
	prev := h.Err()
	if errors.Is(prev, ErrLost) {
		return prev
	}
	if errors.Is(err, ErrStaleToken) || errors.Is(err, ErrNotFound) {
		// The release lost a race with an expiry or a deletion that the
		// engine had not heard of yet.
		return fmt.Errorf("%w: %w", ErrLost, err)
	}
	return err
}

// Abandon stops renewing the holding without releasing it: it ends locally
// at once (Done closes, Context is cancelled) and expires on the server
// after its duration and grace.
func (h *Holding) Abandon() { h.k.end(h, ErrAbandoned, "") }

func (h *Holding) String() string {
	return fmt.Sprintf("%s/%s holder=%s token=%d", h.namespace, h.name, h.holder, h.token)
}

// Hold takes the lease name once, for the identity given with WithIdentity
// (or a new unique one), and keeps it alive until it is released,
// abandoned or lost. When another holder holds the lease it returns a
// *HeldError (errors.Is(err, ErrLocked)) without waiting; Mutex.Lock waits.
// When the caller holds it already (a retry after a lost answer) the server
// renews the same holding and Hold adopts it.
func (c *Client) Hold(ctx context.Context, name string, opts ...Option) (*Holding, error) {
	o := buildOptions(opts)
	if o.identity == "" {
		o.identity = NewIdentity()
	}
	return c.hold(ctx, name, o)
}

func (c *Client) hold(ctx context.Context, name string, o options) (*Holding, error) {
	if c.closing.Load() {
		return nil, ErrClosed
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	// The constructors checked these already; Hold, and options that a
	// caller assembled itself (a LeaderElector's), are checked here.
	if err := c.checkWindow(o); err != nil {
		return nil, invalidf("%v", err)
	}
	renewEvery := c.renewInterval(o)
	key := o.acquireKey(name)
	if c.keeper.has(key) {
		return nil, fmt.Errorf("%w: %s/%s as %q", ErrAlreadyHeld, o.namespace, name, o.identity)
	}
	// A release or cleanup of the same holder's lease still on its way
	// would end what this acquire takes.
	if err := c.settled(ctx, key); err != nil {
		return nil, c.gaveUp(err, 0, nil)
	}
	if err := ctx.Err(); err != nil {
		// Nothing sent, nothing to clean up. The error is the one a call
		// cut short by ctx returns (its code as well as its kind).
		return nil, c.gaveUp(err, 0, nil)
	}
	// sent is read before each attempt: the answered one was sent last,
	// and the node applied it (as a renewal, if an earlier attempt had
	// begun the holding) after that.
	var sent time.Time
	resp, err := c.acquireFor(ctx, name, o, &sent)
	if err != nil {
		c.met.acquires.WithLabelValues("error").Inc()
		if outcomeUnknown(ctx, err) && (ctx.Err() != nil || !o.retrying) {
			// The caller gives up on it. (One that retries learns the
			// outcome from its next attempt, and cleans up when it gives
			// up between attempts.)
			c.abandonAcquire(ctx, key)
		}
		return nil, err
	}
	if !resp.GetAcquired() {
		c.met.acquires.WithLabelValues("held").Inc()
		return nil, &HeldError{Lease: resp.GetLease(), Remaining: resp.GetRemaining().AsDuration(),
			Queued: resp.GetQueued(), Position: int(resp.GetQueuePosition())}
	}
	c.met.acquires.WithLabelValues("acquired").Inc()
	l := resp.GetLease()
	dur := o.duration
	if d := l.GetLeaseDuration(); d != nil {
		dur = d.AsDuration()
	}
	h := &Holding{
		k:          c.keeper,
		namespace:  l.GetNamespace(),
		name:       l.GetName(),
		holder:     o.identity,
		token:      l.GetFencingToken(),
		duration:   dur,
		renewEvery: renewEvery,
		record:     o.record,
		maxValid:   o.maxValid,
		lease:      l,
		acquiredAt: sent,
		done:       make(chan struct{}),
		lost:       make(chan struct{}),
	}
	if h.namespace == "" {
		h.namespace = o.namespace
	}
	if h.name == "" {
		h.name = name
	}
	h.ctx, h.cancel = context.WithCancelCause(context.Background())
	if key.semaphore {
		key = holdingKey{namespace: h.namespace, name: h.name, holder: h.holder}
	}
	if err := c.keeper.add(h, key, sent); err != nil {
		// The server granted a holding that this client cannot use (its
		// deadline passed while the answer travelled, or a twin appeared):
		// free it for others rather than let it expire.
		if !errors.Is(err, ErrAlreadyHeld) {
			c.release(ctx, h)
		}
		return nil, err
	}
	return h, nil
}

// acquireKey is the key of an acquire of name with o: the holding's, or
// for a semaphore the semaphore's.
func (o options) acquireKey(name string) holdingKey {
	return holdingKey{namespace: o.namespace, name: name, holder: o.identity, semaphore: o.slots > 0}
}

// acquireFor sends the Acquire (or for o.slots > 0 the AcquireSlot) of
// name with o.
func (c *Client) acquireFor(ctx context.Context, name string, o options, sent *time.Time) (*pb.AcquireResponse, error) {
	var grace, lockDelay *durationpb.Duration
	if o.grace > 0 {
		grace = durationpb.New(o.grace)
	}
	if o.lockDelay > 0 {
		lockDelay = durationpb.New(o.lockDelay)
	}
	if o.slots > 0 {
		// Unary only: the Calls stream does not carry it.
		return pb.NewLeasesClient(failoverConn{c: c, sent: sent}).AcquireSlot(ctx, &pb.AcquireSlotRequest{
			Namespace: o.namespace, Name: name, Slots: uint32(o.slots), HolderIdentity: o.identity,
			LeaseDuration: durationpb.New(o.duration), GracePeriod: grace, LockDelay: lockDelay, Labels: o.labels, Wait: o.wait,
		})
	}
	return c.acquire(ctx, &pb.AcquireRequest{
		Namespace: o.namespace, Name: name, HolderIdentity: o.identity,
		LeaseDuration: durationpb.New(o.duration), GracePeriod: grace, LockDelay: lockDelay, Labels: o.labels, Wait: o.wait,
	}, sent)
}
