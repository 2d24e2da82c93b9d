package client

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Mutex is a distributed lock on one lease, fenced by the lease's token.
//
// Lock blocks until this Mutex holds the lease. Waiters queue on the
// server (AcquireRequest.wait): first come, first served. When a holding
// ends, by release or by expiry, the leader hands the lease to the first
// waiter in the same Raft entry, so a hand-off costs one commit and no
// waiter starves. While waiting, Lock long-polls (each call lasts at most a
// third of the lease duration), which also tells the leader it is still
// there; a waiter that stops calling for longer than its duration plus
// grace loses its place. A Lock whose ctx ends leaves the queue.
//
// With WithLockDelay, a holding that ends by expiry (the holder failed,
// not Unlock) keeps the lease from every waiter for the lock delay; the
// first waiter gets it when the delay is over.
//
// A held lock ends when Unlock is called or when the holding is lost:
// Context is then cancelled and Lost closed. Pass FencingToken to every
// resource that the lock protects (see package fence), because a process
// can be paused past its holding without noticing.
//
// A Mutex is safe for concurrent use, but it is one holder: a second Lock
// while it holds the lock fails with ErrAlreadyLocked. Use one Mutex per
// contender.
type Mutex struct {
	c    *Client
	name string
	o    options

	lockMu sync.Mutex // serialises Lock and TryLock
	mu     sync.Mutex // guards h
	h      *Holding
}

// NewMutex returns a Mutex on the lease name. Without WithIdentity it gets
// a unique holder identity. Every Option applies.
//
// NewMutex makes no call to the cluster. It checks the name, each option
// and the timings against c's Config (see Option), and returns an error
// matching ErrInvalid that names what is wrong. Lock and TryLock check
// only what the server decides (its limits) or what changes after
// construction (a closed client).
func NewMutex(c *Client, name string, opts ...Option) (*Mutex, error) {
	return newMutex("NewMutex", c, name, buildOptions(opts))
}

func newMutex(ctor string, c *Client, name string, o options) (*Mutex, error) {
	if err := c.checkHolding(ctor, name, o); err != nil {
		return nil, err
	}
	if o.identity == "" {
		o.identity = NewIdentity()
	}
	return &Mutex{c: c, name: name, o: o}, nil
}

// Name returns the lease's name.
func (m *Mutex) Name() string { return m.name }

// Namespace returns the lease's namespace.
func (m *Mutex) Namespace() string { return m.o.namespace }

// Identity returns the holder identity of the Mutex.
func (m *Mutex) Identity() string { return m.o.identity }

// Lock takes the lock, waiting while another holder has it, until ctx is
// done. It returns the holding, which is also kept by the Mutex.
func (m *Mutex) Lock(ctx context.Context) (*Holding, error) {
	return m.lock(ctx, true, nil)
}

// TryLock takes the lock if it is free and returns a *HeldError
// (errors.Is(err, ErrLocked)) at once if it is not.
func (m *Mutex) TryLock(ctx context.Context) (*Holding, error) {
	return m.lock(ctx, false, nil)
}

// lock is Lock (wait) or TryLock; labels, when set, replace the options'
// for this holding (an Election's value).
func (m *Mutex) lock(ctx context.Context, wait bool, labels map[string]string) (*Holding, error) {
	m.lockMu.Lock()
	defer m.lockMu.Unlock()
	if h := m.Holding(); h != nil && h.Err() == nil {
		return nil, ErrAlreadyLocked
	}
	o := m.o
	if labels != nil {
		o.labels = labels
	}
	h, err := m.c.holdWaiting(ctx, m.name, o, wait)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.h = h
	m.mu.Unlock()
	return h, nil
}

// holdWaiting is hold that, with wait, queues behind the current holder and
// long-polls until it holds the lease (a slot, for o.slots > 0) or ctx is
// done. Mutex.Lock and Semaphore.Acquire wait with it.
func (c *Client) holdWaiting(ctx context.Context, name string, o options, wait bool) (*Holding, error) {
	start := c.clock.Now()
	o.wait = wait
	o.retrying = wait
	key := o.acquireKey(name)
	pctx := ctx
	if wait {
		pctx = context.WithValue(ctx, longPollKey{}, true)
	}
	// interval is the least time between the starts of two calls: a poll
	// that the node answers early (little time left to the call, a node
	// that answers at once) is not followed by another at once.
	interval := minPollInterval
	for polled := false; ; polled = wait {
		if polled && ctx.Err() != nil {
			// ctx ended as the pause did (both timers fire at the
			// deadline), with an earlier poll leaving us in the queue:
			// hold would send nothing and so clean nothing up.
			c.abandonAcquire(ctx, key)
			return nil, ctx.Err()
		}
		callStart := c.clock.Now()
		h, err := c.hold(pctx, name, o)
		if err == nil {
			c.met.lockWait.Observe(c.clock.Since(start).Seconds())
			return h, nil
		}
		var held *HeldError
		var pause time.Duration
		switch {
		case errors.As(err, &held):
			if !wait {
				return nil, err
			}
			// A long poll ended with the caller still in the queue: call
			// again to keep its place.
			if took := c.clock.Since(callStart); took < interval {
				pause = interval - took
				interval = min(interval*2, max(o.retryPeriod, minPollInterval))
			} else {
				interval = minPollInterval
			}
		case ctx.Err() != nil:
			// hold has set the cleanup going: the server may have
			// queued us, or even handed us the lease, without the
			// answer reaching us.
			return nil, ctx.Err()
		case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			if !wait {
				return nil, err
			}
			pause = o.retryPeriod
		default:
			if wait && outcomeUnknown(ctx, err) {
				c.abandonAcquire(ctx, key)
			}
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl)-pause < minPollInterval {
			// However little time is left, a call would be answered at
			// once: wait for the end instead.
			pause = max(pause, time.Until(dl)+time.Millisecond)
		}
		if pause <= 0 {
			continue
		}
		t := c.clock.NewTimer(pause)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			// In the queue (or handed the lease) as far as we know.
			c.abandonAcquire(ctx, key)
			return nil, ctx.Err()
		}
	}
}

// minPollInterval is the least time between the starts of two calls of a
// waiting Lock, and the least time left to its deadline for a new call to
// be worth making (the node answers 100ms before the deadline).
const minPollInterval = 250 * time.Millisecond

// longPollKey marks the context of a Mutex's waiting acquire: its attempts
// are long polls (see Client.attemptTimeout).
type longPollKey struct{}

// Unlock releases the lock: the holding ends locally first (Context is
// cancelled), then on the server. ctx bounds only the wait for the server
// (see Holding.Release): `defer m.Unlock(ctx)` frees the lock even when
// ctx has ended. It returns ErrNotLocked when the Mutex holds nothing, and
// an error matching ErrLost when the holding had been lost before.
func (m *Mutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	h := m.h
	m.h = nil
	m.mu.Unlock()
	if h == nil {
		return ErrNotLocked
	}
	return h.Release(ctx)
}

// Holding returns the current holding, or nil.
func (m *Mutex) Holding() *Holding {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.h
}

// FencingToken returns the token of the current holding, or 0 when the
// Mutex holds nothing.
func (m *Mutex) FencingToken() uint64 {
	if h := m.Holding(); h != nil {
		return h.Token()
	}
	return 0
}

// Token is FencingToken.
func (m *Mutex) Token() uint64 { return m.FencingToken() }

// Context returns a context cancelled when the current holding ends; when
// the Mutex holds nothing it is cancelled already, with cause ErrNotLocked.
func (m *Mutex) Context() context.Context {
	if h := m.Holding(); h != nil {
		return h.Context()
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrNotLocked)
	return ctx
}

// Lost returns a channel closed when the current holding is lost; when the
// Mutex holds nothing the channel is closed already.
func (m *Mutex) Lost() <-chan struct{} {
	if h := m.Holding(); h != nil {
		return h.Lost()
	}
	c := make(chan struct{})
	close(c)
	return c
}

// NewLocker returns a sync.Locker on the lease name, as etcd's
// concurrency.NewLocker: Lock blocks until the lock is held, Unlock
// releases it. sync.Locker cannot report an error, so both panic on one
// (a closed client, a name the server refuses), as etcd's do; Unlock of a
// lock that was lost meanwhile does not panic (the lock is free either
// way). Lock waits without a deadline. Use a Mutex where errors, deadlines
// or the fencing token matter: a Locker hands out no token, so it protects
// nothing against a holder that was paused past its holding.
//
// NewLocker checks the name and the options as NewMutex does, when it is
// called, so that Lock panics only on what only the server or the cluster
// can tell.
func NewLocker(c *Client, name string, opts ...Option) (sync.Locker, error) {
	m, err := newMutex("NewLocker", c, name, buildOptions(opts))
	if err != nil {
		return nil, err
	}
	return &locker{m: m}, nil
}

type locker struct{ m *Mutex }

func (l *locker) Lock() {
	if _, err := l.m.Lock(context.Background()); err != nil {
		panic(err)
	}
}

func (l *locker) Unlock() {
	if err := l.m.Unlock(context.Background()); err != nil && !errors.Is(err, ErrLost) {
		panic(err)
	}
}
