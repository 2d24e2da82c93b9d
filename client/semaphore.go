package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// SemaphoreLabel marks the slot leases of a Semaphore; its value is the
// semaphore's name.
const SemaphoreLabel = "leasekeeper.io/semaphore"

// Semaphore lets up to n holders in at once. It is n Mutex-like slots, the
// leases name-0 … name-(n-1), each with its own fencing token: a resource
// that a slot protects fences on the slot's name (Holding.Name).
//
// Unlike Mutex waiters, Semaphore waiters have no queue on the server: a
// watch on the slots wakes every waiter when a slot is freed (RetryPeriod
// is the backstop) and they race for it. Waiting costs no log entries (a
// waiter reads the slots before it tries the free ones), but a release
// wakes every waiter and there is no fairness between them.
type Semaphore struct {
	c    *Client
	name string
	n    int
	o    options
}

// NewSemaphore returns a semaphore of n slots named after name. The options
// are those of NewMutex; without WithIdentity it gets a unique identity.
func NewSemaphore(c *Client, name string, n int, opts ...Option) (*Semaphore, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w: a semaphore needs at least one slot, got %d", ErrInvalid, n)
	}
	o := buildOptions(opts)
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.identity == "" {
		o.identity = NewIdentity()
	}
	labels := maps.Clone(o.labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[SemaphoreLabel] = name
	o.labels = labels
	return &Semaphore{c: c, name: name, n: n, o: o}, nil
}

// Slot returns the lease name of slot i.
func (s *Semaphore) Slot(i int) string { return fmt.Sprintf("%s-%d", s.name, i) }

// TryAcquire takes a free slot, trying them in random order, and returns
// ErrLocked when every slot is held (by others, or by this Semaphore).
//
// It first reads the slots (a linearizable read, no log entry) and tries
// only those that are free or already the caller's: every try is a log
// entry, so a full semaphore costs its waiters no writes at all.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Holding, error) {
	slots := rand.Perm(s.n)
	if held, err := s.held(ctx); err == nil {
		free := slots[:0]
		for _, i := range slots {
			if !held[s.Slot(i)] {
				free = append(free, i)
			}
		}
		slots = free
	} else if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var firstErr error
	for _, i := range slots {
		h, err := s.c.hold(ctx, s.Slot(i), s.o)
		switch {
		case err == nil:
			return h, nil
		case errors.Is(err, ErrLocked), errors.Is(err, ErrAlreadyHeld):
		default:
			if firstErr == nil {
				firstErr = err
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, fmt.Errorf("%w: all %d slots of semaphore %s", ErrLocked, s.n, s.name)
}

// held reads which slots others hold now.
func (s *Semaphore) held(ctx context.Context) (map[string]bool, error) {
	resp, err := s.c.List(ctx, &pb.ListRequest{Namespace: s.o.namespace, LabelSelector: SemaphoreLabel + "=" + s.name})
	if err != nil {
		return nil, err
	}
	held := make(map[string]bool, len(resp.GetLeases()))
	for _, l := range resp.GetLeases() {
		if h := l.GetHolderIdentity(); h != "" && h != s.o.identity {
			held[l.GetName()] = true
		}
	}
	return held, nil
}

// Acquire takes a slot, waiting until one is free or ctx is done. Release
// the returned holding to give the slot back.
func (s *Semaphore) Acquire(ctx context.Context) (*Holding, error) {
	start := s.c.clock.Now()
	wake := make(chan struct{}, 1)
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	poke := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	// revision reads the revision that the slots' state is at: a
	// linearizable read, so it covers every write acknowledged before it,
	// unlike a node's local Status.
	revision := func(ctx context.Context) (uint64, error) {
		l, err := s.c.List(ctx, &pb.ListRequest{Namespace: s.o.namespace, LabelSelector: SemaphoreLabel + "=" + s.name})
		return l.GetRevision(), err
	}
	// resume is the watch's new start when the node no longer keeps the
	// revision it had seen (a restarted node, a long outage): the current
	// one, read again until ctx ends. A fixed revision would be refused
	// for good. The waiter is woken, since a slot may have been freed in
	// the gap.
	resume := func() uint64 {
		for attempt := 0; ; attempt++ {
			rev, err := revision(wctx)
			if err == nil {
				poke()
				return rev
			}
			if s.c.sleep(wctx, s.c.backoff(attempt)) != nil {
				return 0 // ctx ended: follow returns
			}
		}
	}
	watched := false
	for {
		// Watch from before the attempt, so a slot freed in between wakes
		// the wait below.
		var rev uint64
		var revErr error
		if !watched {
			rev, revErr = revision(ctx)
		}
		h, err := s.TryAcquire(ctx)
		if err == nil {
			s.c.met.lockWait.Observe(s.c.clock.Since(start).Seconds())
			return h, nil
		}
		if !errors.Is(err, ErrLocked) && !errors.Is(err, ErrUnavailable) {
			return nil, err
		}
		if !watched && revErr == nil {
			watched = true
			req := &pb.WatchRequest{Namespace: s.o.namespace, LabelSelector: SemaphoreLabel + "=" + s.name, StartRevision: rev}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = s.c.follow(wctx, req,
					func(ev *pb.WatchEvent) {
						if frees(ev) {
							poke()
						}
					},
					resume, nil)
			}()
		}
		t := s.c.clock.NewTimer(s.o.retryPeriod)
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
