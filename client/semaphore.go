package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// maxSlots is the most slots a semaphore has (the server's limit).
const maxSlots = 256

// SemaphoreLabel marks the slot leases of a Semaphore; its value is the
// semaphore's name. The server sets it on every slot it grants.
const SemaphoreLabel = "leasekeeper.io/semaphore"

// Semaphore lets up to n holders in at once. It is n Mutex-like slots, the
// leases name-0 … name-(n-1), each with its own fencing token: a resource
// that a slot protects fences on the slot's name (Holding.Name).
//
// Waiters queue on the server (AcquireSlot), in one first-in first-out
// queue for the whole semaphore: when a slot's holding ends (released,
// expired, its lock delay over, the slot deleted), the leader hands the
// slot to the first waiter in the same Raft entry. Waiting costs no log
// entries after the first, and a release wakes one waiter. As with Mutex,
// Acquire long-polls to keep its place; a waiter that stops calling for
// longer than its duration plus grace loses it; an Acquire whose ctx ends
// leaves the queue and gives back a slot granted as it gave up.
//
// Against a cluster with a member too old for semaphore queues (or a node
// without AcquireSlot), waiters fall back to racing for free slots: they
// read the slots, try only free ones, and are woken by a watch when one
// is freed; no fairness then.
type Semaphore struct {
	c    *Client
	name string
	n    int
	o    options
}

// NewSemaphore returns a semaphore of n slots named after name. The options
// are those of NewMutex; without WithIdentity it gets a unique identity.
// Like NewMutex it makes no call: it checks n (1 to 256), the options, and
// the names, since every slot's lease name must be valid and the
// semaphore's name is the value of the slots' label (at most 63
// characters), with an error matching ErrInvalid.
func NewSemaphore(c *Client, name string, n int, opts ...Option) (*Semaphore, error) {
	if n < 1 || n > maxSlots {
		return nil, invalidf("NewSemaphore: a semaphore has 1 to %d slots, got %d", maxSlots, n)
	}
	if err := labels.ValidateValue(name); err != nil {
		return nil, invalidf("NewSemaphore: the name is the value of the slots' label %s: %v", SemaphoreLabel, err)
	}
	o := buildOptions(opts)
	// The longest slot name stands for them all.
	if err := c.checkHolding("NewSemaphore", fmt.Sprintf("%s-%d", name, n-1), o); err != nil {
		return nil, err
	}
	if o.identity == "" {
		o.identity = NewIdentity()
	}
	lb := maps.Clone(o.labels)
	if lb == nil {
		lb = map[string]string{}
	}
	lb[SemaphoreLabel] = name
	o.labels = lb
	return &Semaphore{c: c, name: name, n: n, o: o}, nil
}

// Slot returns the lease name of slot i.
func (s *Semaphore) Slot(i int) string { return fmt.Sprintf("%s-%d", s.name, i) }

// TryAcquire takes a free slot and returns ErrLocked (a *HeldError) when
// every slot is held by others. It is one log entry. A Semaphore holds one
// slot at a time (ErrAlreadyHeld while it holds one): use one Semaphore,
// or one identity, per contender.
func (s *Semaphore) TryAcquire(ctx context.Context) (*Holding, error) {
	return s.take(ctx, false, s.tryRacing)
}

// take takes a slot through the server's queue (waiting with wait), or
// with racing when the cluster keeps no semaphore queues.
func (s *Semaphore) take(ctx context.Context, wait bool, racing func(context.Context) (*Holding, error)) (*Holding, error) {
	if err := s.holdsNone(); err != nil {
		return nil, err
	}
	o := s.o
	o.slots = s.n
	h, err := s.c.holdWaiting(ctx, s.name, o, wait)
	if noSemaphoreQueue(err) {
		return racing(ctx)
	}
	return h, err
}

// holdsNone returns ErrAlreadyHeld when this Semaphore's identity holds a
// slot through this client: an identity holds one slot at a time (the
// server renews the slot a holder asks for again, so that a retried
// acquire cannot take a second one).
func (s *Semaphore) holdsNone() error {
	for i := range s.n {
		if s.c.keeper.has(holdingKey{namespace: s.o.namespace, name: s.Slot(i), holder: s.o.identity}) {
			return fmt.Errorf("%w: slot %s as %q; one slot per Semaphore, as one lock per Mutex", ErrAlreadyHeld, s.Slot(i), s.o.identity)
		}
	}
	return nil
}

// noSemaphoreQueue reports an answer of a node or cluster that does not
// keep semaphore queues: Unimplemented (no AcquireSlot), or
// FailedPrecondition (a member applies too old a command version; an
// AcquireSlot has no token to be stale).
func noSemaphoreQueue(err error) bool {
	switch status.Code(err) {
	case codes.Unimplemented, codes.FailedPrecondition:
		return true
	}
	return false
}

// tryRacing is TryAcquire without the server's queue.
//
// It first reads the slots (a linearizable read, no log entry) and tries
// only those that are free or already the caller's: every try is a log
// entry, so a full semaphore costs its waiters no writes at all.
func (s *Semaphore) tryRacing(ctx context.Context) (*Holding, error) {
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

// Acquire takes a slot, waiting in the semaphore's queue until one is
// handed to it or ctx is done. Release the returned holding to give the
// slot back.
func (s *Semaphore) Acquire(ctx context.Context) (*Holding, error) {
	return s.take(ctx, true, s.acquireRacing)
}

// acquireRacing is Acquire without the server's queue: a watch on the
// slots wakes the waiter when one is freed (RetryPeriod is the backstop),
// and it races the other waiters for it.
func (s *Semaphore) acquireRacing(ctx context.Context) (*Holding, error) {
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
		h, err := s.tryRacing(ctx)
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
