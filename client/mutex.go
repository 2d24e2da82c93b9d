package client

import (
	"context"
	"errors"
	"sync"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Mutex is a distributed lock on one lease, fenced by the lease's token.
//
// Lock blocks until the lease is free and this Mutex takes it. Waiters do
// not poll: each watches the lease and tries again the moment it is
// released, expires or is deleted, with a slow backstop retry (the retry
// period) in case a watch misses something.
//
// Order of service: there is none. Every waiter woken by the same release
// sends its acquire at once and the leader grants the first one it
// applies; the others go back to waiting. A waiter can therefore starve
// under constant contention. A fair (FIFO) lock needs a queue kept by the
// server; see the package documentation.
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

	var (
		wg      sync.WaitGroup
		watched bool
		wake    = make(chan struct{}, 1)
	)
	wctx, stopWatch := context.WithCancel(ctx)
	defer func() {
		stopWatch()
		wg.Wait()
	}()
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	for {
		h, err := m.c.hold(ctx, m.name, m.o)
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
			if !watched {
				// Every change after the refused acquire is replayed, so
				// a release in between still wakes us.
				watched = true
				req := &pb.WatchRequest{Namespace: m.o.namespace, Name: m.name, StartRevision: held.Lease.GetResourceVersion()}
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = m.c.follow(wctx, req,
						func(ev *pb.WatchEvent) {
							if frees(ev) {
								poke()
							}
						},
						func() uint64 { poke(); return 0 })
				}()
			}
		case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			if !wait {
				return nil, err
			}
		default:
			return nil, err
		}
		t := m.c.clock.NewTimer(m.o.retryPeriod)
		select {
		case <-wake:
		case <-t.C():
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
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
