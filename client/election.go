package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// LeaderCallbacks are called by a LeaderElector, as in client-go.
type LeaderCallbacks struct {
	// OnStartedLeading runs in its own goroutine when this candidate
	// starts leading. Its context is cancelled when leadership ends, before
	// any other candidate can start leading; it should return soon after.
	// Required.
	OnStartedLeading func(ctx context.Context)
	// OnStoppedLeading is called once leadership has ended and
	// OnStartedLeading has returned (and, with ReleaseOnCancel, after the
	// release). Optional.
	//
	// Unlike client-go's, it is called only by a Run that led: client-go
	// defers it in Run, so it runs also when Run's context ends before
	// the candidate ever led, and it does not wait for OnStartedLeading
	// to return. Code that cleans up leader-only work can rely on it here
	// meaning "was leader, is no more, and the leader's work returned".
	OnStoppedLeading func()
	// OnNewLeader is called with the identity of each new leader that the
	// candidate observes, itself included, and with "" when the lease
	// becomes free. Calls are made in order from one goroutine, so it must
	// not block for long. Optional.
	OnNewLeader func(identity string)
}

// ElectorConfig configures a LeaderElector. Timings follow client-go:
// LeaseDuration > RenewDeadline > RetryPeriod.
type ElectorConfig struct {
	// Namespace and Name name the election's lease; Namespace defaults to
	// "default".
	Namespace string
	Name      string
	// Identity is this candidate's holder identity; it must be unique
	// among the candidates.
	Identity string
	// LeaseDuration is how long a leader's lease lasts without a renewal:
	// the longest a crashed leader (plus GracePeriod) blocks the others.
	LeaseDuration time.Duration
	// RenewDeadline is how long the leader keeps leading without a
	// successful renewal: its leadership (and the context of
	// OnStartedLeading) ends at sent + RenewDeadline after the send time of
	// its last successful renewal, or earlier at the holding's own local
	// deadline (sent + LeaseDuration*(1-MaxDrift) - Margin).
	RenewDeadline time.Duration
	// RetryPeriod is how long a candidate waits between attempts when no
	// watch event wakes it first (jittered up to +20%), and, unless
	// RenewInterval is set, how often the leader renews.
	RetryPeriod time.Duration
	// RenewInterval, when set, is how often the leader renews instead of
	// RetryPeriod. It must be below RenewDeadline.
	RenewInterval time.Duration
	// GracePeriod is the server's extra time after LeaseDuration before it
	// expires a silent leader's lease. 0 (the default) gives the fastest
	// failover: the elector's safety does not depend on it.
	GracePeriod time.Duration
	// Callbacks are the leadership callbacks.
	Callbacks LeaderCallbacks
	// ReleaseOnCancel releases the lease when Run's context ends while
	// leading, so another candidate can lead at once; otherwise the lease
	// is left to expire.
	ReleaseOnCancel bool
	// Clock times the candidate's retries; nil means the client's clock.
	// The leader's deadline is always kept on the client's clock.
	Clock clock.Clock
}

// ElectorConfigFromProfile returns timings from p: LeaseDuration and
// GracePeriod as p's, RenewInterval p.RenewInterval(), RetryPeriod
// p.RetryPeriod and RenewDeadline two thirds of LeaseDuration. Set
// Name, Identity and Callbacks before use.
func ElectorConfigFromProfile(p Profile) ElectorConfig {
	return ElectorConfig{
		Namespace:     DefaultNamespace,
		LeaseDuration: p.LeaseDuration,
		RenewDeadline: p.LeaseDuration * 2 / 3,
		RetryPeriod:   p.RetryPeriod,
		RenewInterval: p.RenewInterval(),
		GracePeriod:   p.GracePeriod,
	}
}

// Validate checks the timing invariants and the required fields, naming
// them.
func (c ElectorConfig) Validate() error {
	renew := c.RenewInterval
	if renew == 0 {
		renew = c.RetryPeriod
	}
	switch {
	case c.Name == "":
		return errors.New("client: ElectorConfig.Name is required")
	case c.Identity == "":
		return errors.New("client: ElectorConfig.Identity is required")
	case c.RetryPeriod <= 0:
		return fmt.Errorf("client: ElectorConfig.RetryPeriod must be positive, got %v", c.RetryPeriod)
	case c.RenewDeadline <= c.RetryPeriod:
		return fmt.Errorf("client: ElectorConfig.RenewDeadline (%v) must be greater than RetryPeriod (%v)", c.RenewDeadline, c.RetryPeriod)
	case c.LeaseDuration <= c.RenewDeadline:
		return fmt.Errorf("client: ElectorConfig.LeaseDuration (%v) must be greater than RenewDeadline (%v)", c.LeaseDuration, c.RenewDeadline)
	case c.RenewInterval < 0 || renew >= c.RenewDeadline:
		return fmt.Errorf("client: ElectorConfig.RenewInterval (%v) must be below RenewDeadline (%v)", renew, c.RenewDeadline)
	case c.GracePeriod < 0:
		return fmt.Errorf("client: ElectorConfig.GracePeriod must not be negative, got %v", c.GracePeriod)
	case c.Callbacks.OnStartedLeading == nil:
		return errors.New("client: ElectorConfig.Callbacks.OnStartedLeading is required")
	}
	return nil
}

// LeaderElector campaigns for the leadership of one lease, like client-go's
// leaderelection.LeaderElector, on top of the client's renewal engine.
//
// A candidate tries to take the lease; while another leads it waits for the
// lease to be released or to expire (watch-driven, with RetryPeriod as a
// backstop). The leader's renewals go through the KeepAlive engine every
// RenewInterval (default RetryPeriod). Leadership ends at the holding's
// local deadline, which is no later than RenewDeadline after the send time
// of the last successful renewal; the server cannot grant the lease to
// another candidate before LeaseDuration (plus grace) after it applied that
// renewal. So OnStartedLeading's context is cancelled before anyone else
// can lead.
type LeaderElector struct {
	c   *Client
	cfg ElectorConfig
	clk clock.Clock

	running atomic.Bool
	mu      sync.Mutex
	h       *Holding
	leader  string
}

// NewLeaderElector checks cfg and returns an elector; Run campaigns. It
// makes no call to the cluster: the timings (ElectorConfig.Validate, and
// against c's Config), the name, the namespace and the identity are
// checked here; the server's own limits when Run first campaigns.
func NewLeaderElector(c *Client, cfg ElectorConfig) (*LeaderElector, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, invalidf("NewLeaderElector: nil *Client")
	}
	if err := validateNamespace(cfg.Namespace); err != nil {
		return nil, invalidf("NewLeaderElector: ElectorConfig.Namespace: %v", err)
	}
	if err := validateName(cfg.Name); err != nil {
		return nil, invalidf("NewLeaderElector: ElectorConfig.Name: %v", err)
	}
	if err := validateHolder(cfg.Identity); err != nil {
		return nil, invalidf("NewLeaderElector: ElectorConfig.Identity: %v", err)
	}
	if cfg.RenewInterval == 0 {
		cfg.RenewInterval = cfg.RetryPeriod
	}
	clk := cfg.Clock
	if clk == nil {
		clk = c.clock
	}
	if w := c.keeper.window(cfg.LeaseDuration, cfg.RenewDeadline); cfg.RenewInterval >= w {
		return nil, fmt.Errorf("client: ElectorConfig.LeaseDuration %v leaves a local deadline of %v (Config.MaxDrift, Config.Margin), not after RenewInterval %v",
			cfg.LeaseDuration, w, cfg.RenewInterval)
	}
	return &LeaderElector{c: c, cfg: cfg, clk: clk}, nil
}

// IsLeader reports whether this candidate leads now: it holds the lease
// and its local deadline has not passed.
func (le *LeaderElector) IsLeader() bool {
	le.mu.Lock()
	h := le.h
	le.mu.Unlock()
	return h != nil && h.Valid()
}

// Holding returns the holding of the lease while this candidate leads (it
// is set before OnStartedLeading is called), nil otherwise. Its Token is
// the fencing token of the leadership term.
func (le *LeaderElector) Holding() *Holding {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.h
}

// Leader returns the leader that this candidate last observed ("" when
// none or not yet known).
func (le *LeaderElector) Leader() string {
	le.mu.Lock()
	defer le.mu.Unlock()
	return le.leader
}

// Run campaigns until it has led once and lost the leadership, or ctx is
// done. As client-go's, the campaign goes on through transient errors (no
// node answering, an answer that came too late to use) with a jittered
// backoff; only an error that a retry cannot help (ErrInvalid,
// ErrPermission, ErrClosed) ends it early. It returns ctx's error when ctx
// ended, or the reason the leadership was lost (matching ErrLost); callers
// that want to campaign again call Run again. It returns only after OnStartedLeading has returned and
// OnStoppedLeading has been called.
func (le *LeaderElector) Run(ctx context.Context) error {
	if !le.running.CompareAndSwap(false, true) {
		return errors.New("client: LeaderElector.Run is already running")
	}
	defer le.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	wake := make(chan struct{}, 1)
	e, err := NewElection(le.c, le.cfg.Name, WithNamespace(le.cfg.Namespace))
	if err != nil {
		// NewLeaderElector checked the name and the namespace.
		return err
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = e.observe(ctx, func(holder string) {
			le.mu.Lock()
			le.leader = holder
			le.mu.Unlock()
			if holder == "" {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			if f := le.cfg.Callbacks.OnNewLeader; f != nil {
				f(holder)
			}
		})
	}()

	h, err := le.campaign(ctx, wake)
	if err != nil {
		return err
	}
	le.mu.Lock()
	le.h = h
	le.mu.Unlock()

	lctx, lcancel := context.WithCancelCause(h.Context())
	started := make(chan struct{})
	go func() {
		defer close(started)
		le.cfg.Callbacks.OnStartedLeading(lctx)
	}()
	select {
	case <-h.Done():
	case <-ctx.Done():
		lcancel(ctx.Err())
	}
	lcancel(h.Err())
	<-started
	if h.Err() == nil {
		// Run's context ended while leading.
		if le.cfg.ReleaseOnCancel {
			rctx, rcancel := le.c.releaseContext(ctx)
			if err := h.Release(rctx); err != nil {
				le.c.log.Debug("releasing leadership", "error", err)
			}
			rcancel()
		} else {
			h.Abandon()
		}
	}
	le.mu.Lock()
	le.h = nil
	le.mu.Unlock()
	if f := le.cfg.Callbacks.OnStoppedLeading; f != nil {
		f()
	}
	if ctx.Err() != nil && !errors.Is(h.Err(), ErrLost) {
		return ctx.Err()
	}
	return h.Err()
}

// campaign tries to take the lease until it does or ctx ends. Like
// client-go's, it keeps trying through transient errors: no node answered
// (Unavailable, an attempt's deadline), or the answer came after the
// local deadline it would have granted (ErrExpired; hold released that
// holding). Those are retried after a jittered backoff that grows from
// Config.BackoffBase to RetryPeriod; a lease held by another candidate is
// tried again after RetryPeriod (plus up to 20%) or when the observer
// sees it free.
func (le *LeaderElector) campaign(ctx context.Context, wake <-chan struct{}) (*Holding, error) {
	o := defaultOptions()
	o.namespace = le.cfg.Namespace
	o.identity = le.cfg.Identity
	o.duration = le.cfg.LeaseDuration
	o.grace = le.cfg.GracePeriod
	o.renewEvery = le.cfg.RenewInterval
	o.retryPeriod = le.cfg.RetryPeriod
	o.maxValid = le.cfg.RenewDeadline
	o.retrying = true
	key := holdingKey{namespace: o.namespace, name: le.cfg.Name, holder: o.identity}
	start := le.c.clock.Now()
	failures := 0
	for {
		h, err := le.c.hold(ctx, le.cfg.Name, o)
		if err == nil {
			le.c.met.lockWait.Observe(le.c.clock.Since(start).Seconds())
			return h, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // hold cleans up after the acquire
		}
		var wait time.Duration
		unknown := false
		switch {
		case errors.Is(err, ErrLocked):
			failures = 0
			wait = le.cfg.RetryPeriod + rand.N(le.cfg.RetryPeriod/5+1)
		case transient(err):
			unknown = outcomeUnknown(ctx, err)
			wait = min(le.c.backoff(failures), le.cfg.RetryPeriod)
			failures++
			le.c.log.Debug("campaign: transient error, trying again", "lease", le.cfg.Name, "wait", wait, "error", err)
		default:
			return nil, err
		}
		t := le.clk.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			if unknown {
				le.c.abandonAcquire(ctx, key)
			}
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

// transient reports whether an acquire's error may pass by itself: no node
// answered it in time, or it was answered too late to be used.
func transient(err error) bool {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrExpired) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// Election is one election's lease, in the shape of etcd's
// concurrency.Election: Campaign waits to lead, Proclaim changes the
// leader's value, Resign steps down, and Leader, Value and Observe follow
// the election from outside. The value is carried on the lease, as the
// label ElectionValueLabel, so every observer reads it with the leader.
//
// Campaign queues on the server as Mutex.Lock does (first come, first
// served) and keeps the leadership alive through the renewal engine; the
// Holding tells when it is lost (Lost, Context) and carries the fencing
// token of the term. For client-go's callback style use LeaderElector.
type Election struct {
	c         *Client
	namespace string
	name      string
	m         *Mutex
}

// ElectionValueLabel is the label of an election's lease that carries the
// leader's value (Campaign, Proclaim).
const ElectionValueLabel = "leasekeeper.io/election-value"

// NewElection returns the election on the lease name. The options are
// those of NewMutex and apply to Campaign; watching (Leader, Value,
// Observe) needs none of them but WithNamespace. Without WithIdentity a
// campaign gets a unique identity.
//
// NewElection makes no call to the cluster. It checks the name and the
// options as NewMutex does, and refuses WithLabels that set
// ElectionValueLabel (Campaign and Proclaim own that label), with an error
// matching ErrInvalid. Campaign and Proclaim check their value.
func NewElection(c *Client, name string, opts ...Option) (*Election, error) {
	o := buildOptions(opts)
	if _, ok := o.labels[ElectionValueLabel]; ok {
		return nil, invalidf("NewElection: WithLabels: %s is the election's value, set by Campaign and Proclaim", ElectionValueLabel)
	}
	m, err := newMutex("NewElection", c, name, o)
	if err != nil {
		return nil, err
	}
	return &Election{c: c, namespace: m.o.namespace, name: name, m: m}, nil
}

// Identity returns the holder identity this Election campaigns as.
func (e *Election) Identity() string { return e.m.o.identity }

// Campaign waits until this candidate leads, or ctx is done, and proclaims
// val as the leader's value. A Campaign whose ctx ends leaves the queue
// (see Client's "Cleanup and release"). val must be a valid label value
// (at most 63 characters: letters, digits, '-', '_', '.').
func (e *Election) Campaign(ctx context.Context, val string) (*Holding, error) {
	if err := labels.ValidateValue(val); err != nil {
		return nil, fmt.Errorf("%w: election value: %v", ErrInvalid, err)
	}
	h, err := e.m.lock(ctx, true, withLabel(e.m.o.labels, ElectionValueLabel, val))
	if err != nil {
		return nil, err
	}
	if h.Lease().GetLabels()[ElectionValueLabel] != val {
		// The lease was handed over with the labels of an earlier term,
		// or this candidate led already: say val now.
		if err := e.Proclaim(ctx, val); err != nil {
			return h, err
		}
	}
	return h, nil
}

// Proclaim changes the leader's value without giving up the leadership. It
// fails with ErrNotLeader when this candidate does not lead, or no longer
// leads on the server. The write names the lease's resource version and
// the current holding, so it cannot overwrite a term that began in
// between; it also renews the holding on the server (never shortening it).
func (e *Election) Proclaim(ctx context.Context, val string) error {
	if err := labels.ValidateValue(val); err != nil {
		return fmt.Errorf("%w: election value: %v", ErrInvalid, err)
	}
	h := e.m.Holding()
	if h == nil || !h.Valid() {
		return ErrNotLeader
	}
	// A waiter joining the queue also moves the resource version: try
	// again while the holding is still ours.
	var err error
	for range proclaimTries {
		var resp *pb.GetResponse
		if resp, err = e.c.Get(ctx, e.namespace, e.name, false); err != nil {
			return err
		}
		l := resp.GetLease()
		if l.GetHolderIdentity() != h.Holder() || l.GetFencingToken() != h.Token() {
			return fmt.Errorf("%w: %s/%s is held by %q (token %d)", ErrNotLeader, e.namespace, e.name, l.GetHolderIdentity(), l.GetFencingToken())
		}
		_, err = e.c.Leases().Write(ctx, &pb.WriteRequest{
			Namespace: e.namespace, Name: e.name, ResourceVersion: l.GetResourceVersion(),
			HolderIdentity: h.Holder(), LeaseDuration: l.GetLeaseDuration(),
			Labels: withLabel(l.GetLabels(), ElectionValueLabel, val), Object: l.GetObject(),
		})
		if status.Code(err) != codes.Aborted {
			return err
		}
	}
	return fmt.Errorf("client: election: the lease kept changing while proclaiming: %w", err)
}

// proclaimTries bounds Proclaim's tries against a lease that others keep
// writing (waiters joining its queue).
const proclaimTries = 5

// Resign gives up the leadership (releasing the lease, so the next
// candidate leads at once), or does nothing when this candidate does not
// lead. As Mutex.Unlock, it uses ctx only to wait: the release runs on a
// bounded context of its own.
func (e *Election) Resign(ctx context.Context) error {
	err := e.m.Unlock(ctx)
	if errors.Is(err, ErrNotLocked) || errors.Is(err, ErrLost) {
		return nil
	}
	return err
}

// Holding returns the leadership while this candidate leads, nil
// otherwise.
func (e *Election) Holding() *Holding { return e.m.Holding() }

// Value returns the current leader's value, "" when there is no leader or
// it proclaimed none.
func (e *Election) Value(ctx context.Context) (string, error) {
	resp, err := e.c.Get(ctx, e.namespace, e.name, false)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if resp.GetLease().GetHolderIdentity() == "" {
		return "", nil
	}
	return resp.GetLease().GetLabels()[ElectionValueLabel], nil
}

func withLabel(in map[string]string, k, v string) map[string]string {
	out := make(map[string]string, len(in)+1)
	for key, val := range in {
		out[key] = val
	}
	out[k] = v
	return out
}

// Leader returns the current leader's identity, "" when there is none.
func (e *Election) Leader(ctx context.Context) (string, error) {
	resp, err := e.c.Get(ctx, e.namespace, e.name, false)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return resp.GetLease().GetHolderIdentity(), nil
}

// Observe returns a channel that delivers the current leader ("" for none)
// and then every change, until ctx is done; then it is closed. Each value
// is sent once the previous one was received: a slow reader misses
// nothing but sees changes late.
//
// The watch resumes from the revision of the first read, so no change is
// missed, with one exception: on a store that was never written (revision
// 0) a watch cannot ask for a replay, so a first change made between the
// read and the watch's start is seen only at the leader's next renewal.
func (e *Election) Observe(ctx context.Context) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		_ = e.observe(ctx, func(holder string) {
			select {
			case ch <- holder:
			case <-ctx.Done():
			}
		})
	}()
	return ch
}

// observe calls emit with the current holder and each change until ctx
// ends or a retry cannot help.
func (e *Election) observe(ctx context.Context, emit func(holder string)) error {
	last, known := "", false
	report := func(holder string) {
		if !known || holder != last {
			known, last = true, holder
			emit(holder)
		}
	}
	// read returns the current holder and the revision to watch from. The
	// store revision is read before the lease, so that no change after the
	// read can fall before the watch's start.
	read := func() (uint64, bool) {
		for {
			// One linearizable read gives the holder and the revision it
			// was read at, found or not, so the watch misses nothing.
			resp, err := e.c.List(ctx, &pb.ListRequest{Namespace: e.namespace, Name: e.name})
			switch {
			case err == nil:
				holder := ""
				if ls := resp.GetLeases(); len(ls) > 0 {
					holder = ls[0].GetHolderIdentity()
				}
				report(holder)
				return resp.GetRevision(), true
			case ctx.Err() != nil, errors.Is(err, ErrInvalid), errors.Is(err, ErrPermission), errors.Is(err, ErrClosed):
				return 0, false
			}
			if err := e.c.sleep(ctx, e.c.cfg.BackoffMax); err != nil {
				return 0, false
			}
		}
	}
	rev, ok := read()
	if !ok {
		return ctx.Err()
	}
	req := &pb.WatchRequest{Namespace: e.namespace, Name: e.name, StartRevision: rev}
	return e.c.follow(ctx, req,
		func(ev *pb.WatchEvent) { report(holderAfter(ev)) },
		func() uint64 {
			rev, _ := read()
			return rev
		}, nil)
}
