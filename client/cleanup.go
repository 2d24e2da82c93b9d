package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// background owns the work that outlives the call that started it: the
// cleanup after an acquire whose outcome is unknown and the server side of
// a release. Close waits for it; each piece is bounded by
// Config.ReleaseTimeout.
//
// Work is kept per holding key, so a new acquire of the same lease by the
// same holder waits for the cleanup or release of the previous one: else a
// release still on its way could end the new holding (an acquire by the
// current holder is a renewal of the same holding on the server).
type background struct {
	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup
	pending map[holdingKey]*work
}

// work is the background work last started for a key.
type work struct {
	done chan struct{}
	// skip is closed when a new acquire of the key begins: a wait that
	// only guards against a late grant is cut short, since the new
	// acquire adopts such a grant (an acquire by the current holder is a
	// renewal).
	skip     chan struct{}
	skipOnce sync.Once
}

// track runs f for key after the work already pending for key, on a
// goroutine that Close waits for; once Close has begun it runs f at once
// in the caller. The returned channel is closed when f has returned.
func (c *Client) track(key holdingKey, f func(skip <-chan struct{})) <-chan struct{} {
	w := &work{done: make(chan struct{}), skip: make(chan struct{})}
	b := &c.bg
	b.mu.Lock()
	prev := b.pending[key]
	if b.pending == nil {
		b.pending = make(map[holdingKey]*work)
	}
	b.pending[key] = w
	run := func() {
		if prev != nil {
			<-prev.done // bounded: every piece of work is
		}
		f(w.skip)
		b.mu.Lock()
		if b.pending[key] == w {
			delete(b.pending, key)
		}
		b.mu.Unlock()
		close(w.done)
	}
	if b.closed {
		b.mu.Unlock()
		run()
		return w.done
	}
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		run()
	}()
	return w.done
}

// settled waits until no work is pending for key, or ctx ends. A new
// acquire of key calls it first.
func (c *Client) settled(ctx context.Context, key holdingKey) error {
	c.bg.mu.Lock()
	w := c.bg.pending[key]
	c.bg.mu.Unlock()
	if w == nil {
		return nil
	}
	w.skipOnce.Do(func() { close(w.skip) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeBackground makes later work run in its caller and waits for the
// work under way.
func (c *Client) closeBackground() {
	c.bg.mu.Lock()
	c.bg.closed = true
	c.bg.mu.Unlock()
	c.bg.wg.Wait()
}

// releaseContext is the context of a release or cleanup: it keeps ctx's
// values but not its cancellation, and ends after Config.ReleaseTimeout.
func (c *Client) releaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ReleaseTimeout)
}

// outcomeUnknown reports whether an acquire that failed with err may have
// been applied all the same: the caller's context ended while it was on
// its way, or no node answered it (a lost answer, a silent node). An
// answer from the server (held, invalid, refused) is an outcome.
func outcomeUnknown(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.Unknown, codes.Internal, codes.Aborted:
		return true
	}
	return errors.Is(err, ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// abandonAcquire is the one cleanup rule of every acquire path: when the
// caller gives up on an acquire whose outcome it does not know, the client
// finds the outcome out and undoes it in the background, so the lease is
// neither held nor waited for by a holder that is gone.
//
// The acquire may still be on its way inside the node when the cleanup
// arrives (handlers run concurrently, and a proposal may wait in the
// leader's batch), and then take effect after it. The node gives up on
// the acquire at its attempt's limit (Config.AttemptTimeout, or the call's
// deadline if sooner), so the cleanup is made again once that limit and
// lateGrant have passed. A new acquire of the same lease by the same
// holder cuts that wait short: it adopts a late grant as its own.
func (c *Client) abandonAcquire(ctx context.Context, key holdingKey) {
	c.met.cleanups.Inc()
	limit := c.cfg.AttemptTimeout
	if limit <= 0 {
		limit = c.cfg.ReleaseTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	c.track(key, func(skip <-chan struct{}) {
		if limit > 0 {
			c.settleLogged(ctx, key)
		}
		// Real time, as the node's limit is: on a fake clock the wait
		// would never end, and Close waits for it.
		t := time.NewTimer(max(limit, 0) + lateGrant)
		defer t.Stop()
		select {
		case <-t.C:
		case <-skip:
			return
		}
		c.settleLogged(ctx, key)
	})
}

// lateGrant is how long after an acquire's attempt limit the cleanup
// looks for it once more: the time for a proposal already in the leader's
// batch to be applied.
const lateGrant = 100 * time.Millisecond

func (c *Client) settleLogged(ctx context.Context, key holdingKey) {
	rctx, cancel := c.releaseContext(ctx)
	defer cancel()
	if err := c.settle(rctx, key); err != nil {
		c.log.Debug("cleaning up after an abandoned acquire", "lease", key.namespace+"/"+key.name, "holder", key.holder, "error", err)
	}
}

// settle leaves the lease's queue and releases the holding that the answer
// names if it is key's holder's and the client does not keep it.
//
// Leaving the queue is a log entry even for a caller that never queues:
// the leader proposes it behind every command it has taken in before, the
// abandoned acquire included if it got that far, so its answer shows the
// acquire's outcome. A linearizable read does not: it is answered from
// the applied state while the acquire may still wait to be proposed, and
// on a real cluster one in three such cleanups missed a holding that way.
func (c *Client) settle(ctx context.Context, key holdingKey) error {
	if key.semaphore {
		return c.settleSlot(ctx, key)
	}
	resp, err := c.leases.Release(ctx, &pb.ReleaseRequest{
		Namespace: key.namespace, Name: key.name, HolderIdentity: key.holder, LeaveQueue: true,
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	l := resp.GetLease()
	if l.GetHolderIdentity() != key.holder || c.keeper.has(key) {
		return nil
	}
	_, err = c.Release(ctx, key.namespace, key.name, key.holder, l.GetFencingToken())
	if errors.Is(err, ErrStaleToken) || errors.Is(err, ErrNotFound) {
		return nil // ended in between
	}
	if err != nil {
		return fmt.Errorf("releasing token %d: %w", l.GetFencingToken(), err)
	}
	return nil
}

// settleSlot is settle for a semaphore's acquire: it leaves the
// semaphore's queue (an entry behind the acquire, as with a lease), then
// reads the slots and releases those granted to key's holder that the
// client does not keep.
func (c *Client) settleSlot(ctx context.Context, key holdingKey) error {
	_, err := c.leases.Release(ctx, &pb.ReleaseRequest{
		Namespace: key.namespace, Name: key.name, HolderIdentity: key.holder, LeaveQueue: true, Semaphore: true,
	})
	// A node without semaphore queues has none to leave: it answers
	// Unimplemented, or (an older one that takes the request for a
	// lease's) NotFound. The slots are looked at all the same.
	if err != nil && !noSemaphoreQueue(err) && !errors.Is(err, ErrNotFound) {
		return err
	}
	resp, err := c.List(ctx, &pb.ListRequest{Namespace: key.namespace, LabelSelector: SemaphoreLabel + "=" + key.name})
	if err != nil {
		return err
	}
	for _, l := range resp.GetLeases() {
		slot := holdingKey{namespace: key.namespace, name: l.GetName(), holder: key.holder}
		if l.GetHolderIdentity() != key.holder || c.keeper.has(slot) {
			continue
		}
		_, err := c.Release(ctx, key.namespace, l.GetName(), key.holder, l.GetFencingToken())
		if err != nil && !errors.Is(err, ErrStaleToken) && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("releasing slot %s, token %d: %w", l.GetName(), l.GetFencingToken(), err)
		}
	}
	return nil
}

// release ends h on the server in the background, on its own bounded
// context, and returns a channel that delivers the outcome.
func (c *Client) release(ctx context.Context, h *Holding) <-chan error {
	res := make(chan error, 1)
	c.track(holdingKey{namespace: h.namespace, name: h.name, holder: h.holder}, func(<-chan struct{}) {
		rctx, cancel := c.releaseContext(ctx)
		defer cancel()
		_, err := c.Release(rctx, h.namespace, h.name, h.holder, h.token)
		res <- err
	})
	return res
}

// releaseAll ends hs on the server, at most releaseConcurrency at a time,
// within one Config.ReleaseTimeout.
func (c *Client) releaseAll(hs []*Holding) {
	if len(hs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.ReleaseTimeout)
	defer cancel()
	sem := make(chan struct{}, releaseConcurrency)
	var wg sync.WaitGroup
loop:
	for _, h := range hs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := c.Release(ctx, h.namespace, h.name, h.holder, h.token); err != nil {
				c.log.Debug("releasing at close", "holding", h.String(), "error", err)
			}
		}()
	}
	wg.Wait()
}

// releaseConcurrency bounds the releases that Close has in flight.
const releaseConcurrency = 16
