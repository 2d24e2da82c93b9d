package client

import (
	"context"
	"errors"
	"sync"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
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
// a unique holder identity.
func NewMutex(c *Client, name string, opts ...Option) *Mutex {
	o := buildOptions(opts)
	if o.identity == "" {
		o.identity = NewIdentity()
	}
	return &Mutex{c: c, name: name, o: o}
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
	return m.lock(ctx, true)
}

// TryLock takes the lock if it is free and returns a *HeldError
// (errors.Is(err, ErrLocked)) at once if it is not.
func (m *Mutex) TryLock(ctx context.Context) (*Holding, error) {
	return m.lock(ctx, false)
}

func (m *Mutex) lock(ctx context.Context, wait bool) (*Holding, error) {
	m.lockMu.Lock()
	defer m.lockMu.Unlock()
	if h := m.Holding(); h != nil && h.Err() == nil {
		return nil, ErrAlreadyLocked
	}
	start := m.c.clock.Now()
	o := m.o
	o.wait = wait
	for {
		h, err := m.c.hold(ctx, m.name, o)
		if err == nil {
			m.mu.Lock()
			m.h = h
			m.mu.Unlock()
			m.c.met.lockWait.Observe(m.c.clock.Since(start).Seconds())
			return h, nil
		}
		var held *HeldError
		switch {
		case errors.As(err, &held):
			if !wait {
				return nil, err
			}
			// A long poll ended with the Mutex still in the queue: call
			// again at once to keep its place.
			continue
		case ctx.Err() != nil:
			// The server may have queued us, or even handed us the
			// lease, without the answer reaching us.
			if wait {
				m.leaveQueue(ctx)
			}
			return nil, ctx.Err()
		case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			if !wait {
				return nil, err
			}
		default:
			return nil, err
		}
		t := m.c.clock.NewTimer(m.o.retryPeriod)
		select {
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			if wait {
				m.leaveQueue(ctx)
			}
			return nil, ctx.Err()
		}
	}
}

// leaveQueue gives up the Mutex's place in the queue, so the lease is not
// handed to a waiter that left. The hand-off may have happened already,
// while the cancelled call's answer was on its way: then the lease is
// released, rather than left to expire. Best effort: the leader also drops
// waiters that stop calling, and an unused holding expires.
func (m *Mutex) leaveQueue(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.c.cfg.DialTimeout)
	defer cancel()
	resp, err := m.c.Leases().Release(rctx, &pb.ReleaseRequest{
		Namespace: m.o.namespace, Name: m.name, HolderIdentity: m.o.identity, LeaveQueue: true,
	})
	if err != nil {
		return
	}
	if l := resp.GetLease(); l.GetHolderIdentity() == m.o.identity {
		_, _ = m.c.Release(rctx, m.o.namespace, m.name, m.o.identity, l.GetFencingToken())
	}
}

// Unlock releases the lock: the holding ends locally first (Context is
// cancelled), then on the server. It returns ErrNotLocked when the Mutex
// holds nothing, and an error matching ErrLost when the holding had been
// lost before.
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
