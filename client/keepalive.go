package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
)

// Limits of the renewal engine.
const (
	// maxBatch is the most holdings one KeepAlive message renews (the
	// server's default limit is 10000).
	maxBatch = 1000
	// minRenewTimeout is the shortest wait for the answer to a KeepAlive
	// message before the stream is given up.
	minRenewTimeout = 20 * time.Millisecond
)

// keeper is the renewal engine: one per Client, it renews every holding
// through one KeepAlive stream, many holdings per message.
//
// One goroutine (run) makes every decision and never blocks on the network:
// the stream lives in a session of two goroutines (sender and receiver)
// that talk to run through channels. So the local deadlines are enforced on
// time even while a stream hangs.
//
// A holding is renewed a quarter of its interval early when another
// renewal is being sent anyway, so holdings with similar timings share
// messages. Answers:
//   - OK: the deadline moves to sent + duration*(1-MaxDrift) - Margin.
//   - NotFound, FailedPrecondition, PermissionDenied, InvalidArgument: the
//     holding is lost at once; no retry.
//   - any other per-holding code: retried after a backoff.
//   - a broken stream, or no answer within a third of the time left to the
//     earliest deadline in the message: the stream is dropped, the next
//     endpoint is tried after a short backoff, and the holdings are resent.
//     A stream refused with PermissionDenied loses the holdings it carried.
type keeper struct {
	c   *Client
	clk clock.Clock
	log hclog.Logger
	met *metrics

	mu       sync.Mutex
	holdings map[holdingKey]*Holding
	pending  map[uint64]*batch // unanswered messages of the current session
	nextID   uint64
	sess     *session
	failures int       // consecutive stream failures
	reopenAt time.Time // no new stream before this
	running  bool
	closed   bool

	wake   chan struct{} // buffered 1: the holdings changed
	events chan sessionEvent
	stop   chan struct{}
	wg     sync.WaitGroup
}

// holdingKey names a holding, or with semaphore the acquire of a slot of
// the semaphore name (whose slot is not known until it is granted).
type holdingKey struct {
	namespace, name, holder string
	semaphore               bool
}

// batch is one KeepAlive message in flight.
type batch struct {
	id        uint64
	sent      time.Time
	timeoutAt time.Time
	holdings  []*Holding
}

// session is one KeepAlive stream.
type session struct {
	ctx      context.Context
	cancel   context.CancelFunc
	send     chan *pb.KeepAliveRequest
	endpoint uint32 // the endpoint that the stream was opened on
}

// sessionEvent is an answer or the error that ended a session.
type sessionEvent struct {
	sess *session
	resp *pb.KeepAliveResponse
	err  error
}

func newKeeper(c *Client) *keeper {
	return &keeper{
		c:        c,
		clk:      c.clock,
		log:      c.log.Named("keepalive"),
		met:      c.met,
		holdings: make(map[holdingKey]*Holding),
		pending:  make(map[uint64]*batch),
		wake:     make(chan struct{}, 1),
		events:   make(chan sessionEvent),
		stop:     make(chan struct{}),
	}
}

// window is how long after a send time the client believes a holding of
// duration d: d*(1-MaxDrift) - Margin, capped at maxValid when set.
func (k *keeper) window(d, maxValid time.Duration) time.Duration {
	w := time.Duration(float64(d)*(1-k.c.cfg.MaxDrift)) - k.c.cfg.Margin
	if maxValid > 0 && maxValid < w {
		w = maxValid
	}
	return w
}

func (k *keeper) has(key holdingKey) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.holdings[key]
	return ok
}

// add starts keeping h, acquired by a request sent at sent.
func (k *keeper) add(h *Holding, key holdingKey, sent time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return ErrClosed
	}
	if _, ok := k.holdings[key]; ok {
		return fmt.Errorf("%w: %s/%s as %q", ErrAlreadyHeld, key.namespace, key.name, key.holder)
	}
	h.deadline = sent.Add(k.window(h.duration, h.maxValid))
	h.lastSent = sent
	h.nextRenew = sent.Add(h.renewEvery)
	if !k.clk.Now().Before(h.deadline) {
		return fmt.Errorf("%w: the acquire was answered after the local deadline", ErrExpired)
	}
	k.holdings[key] = h
	k.met.holdings.Inc()
	if !k.running {
		k.running = true
		k.wg.Add(1)
		go k.run()
	}
	k.poke()
	return nil
}

func (k *keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// end ends h with err; reason, when set, marks a loss and labels the
// metric. It reports whether h was still live. Call without k.mu.
func (k *keeper) end(h *Holding, err error, reason string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.endLocked(h, err, reason)
}

func (k *keeper) endLocked(h *Holding, err error, reason string) bool {
	if h.ended {
		return false
	}
	h.ended = true
	h.err = err
	key := holdingKey{namespace: h.namespace, name: h.name, holder: h.holder}
	if k.holdings[key] == h {
		delete(k.holdings, key)
		k.met.holdings.Dec()
	}
	if reason != "" {
		close(h.lost)
		k.met.lost.WithLabelValues(reason).Inc()
		k.log.Debug("holding lost", "holding", h.String(), "error", err)
	}
	close(h.done)
	h.cancel(err)
	return true
}

func lostErr(cause error) error { return fmt.Errorf("%w: %w", ErrLost, cause) }

// close stops the engine; every holding ends with ErrClosed. It returns
// the holdings that it ended, for Close to release.
func (k *keeper) close() []*Holding {
	k.mu.Lock()
	k.closed = true
	k.mu.Unlock()
	close(k.stop)
	k.wg.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	var ended []*Holding
	for _, h := range k.holdings {
		if k.endLocked(h, lostErr(ErrClosed), "closed") {
			ended = append(ended, h)
		}
	}
	return ended
}

func (k *keeper) run() {
	defer k.wg.Done()
	var timer clock.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		k.mu.Lock()
		now := k.clk.Now()
		next, ok := k.step(now)
		k.mu.Unlock()
		var timerC <-chan time.Time
		if ok {
			d := next.Sub(now)
			if timer == nil {
				timer = k.clk.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			timerC = timer.C()
		} else if timer != nil {
			timer.Stop()
		}
		select {
		case <-timerC:
		case <-k.wake:
		case ev := <-k.events:
			k.mu.Lock()
			k.handle(ev, k.clk.Now())
			k.mu.Unlock()
		case <-k.stop:
			k.mu.Lock()
			if k.sess != nil {
				k.sess.cancel()
				k.sess = nil
			}
			k.mu.Unlock()
			return
		}
	}
}

// step enforces deadlines and timeouts, sends what is due, and returns when
// it must run next (false: only an event can make work).
func (k *keeper) step(now time.Time) (time.Time, bool) {
	var next time.Time
	has := false
	at := func(t time.Time) {
		if !has || t.Before(next) {
			next, has = t, true
		}
	}
	// Safety first: a holding is lost at its deadline whatever the network
	// is doing.
	for _, h := range k.holdings {
		if !now.Before(h.deadline) {
			k.endLocked(h, lostErr(ErrExpired), "deadline")
		}
	}
	for _, b := range k.pending {
		if !now.Before(b.timeoutAt) {
			k.breakSession(now, fmt.Errorf("keepalive %d unanswered after %v", b.id, now.Sub(b.sent)))
			break
		}
	}
	// A holding is due a quarter of its interval early. Once one is due,
	// every holding within half its interval of its renewal rides along in
	// the same message: renewing a little early is always safe, and
	// holdings taken moments apart then share messages from then on.
	var due, soon []*Holding
	for _, h := range k.holdings {
		at(h.deadline)
		if h.inflight != 0 {
			continue
		}
		if early := h.nextRenew.Add(-h.renewEvery / 4); now.Before(early) {
			at(early)
			if !now.Before(h.nextRenew.Add(-h.renewEvery / 2)) {
				soon = append(soon, h)
			}
		} else {
			due = append(due, h)
		}
	}
	if len(due) > 0 {
		due = append(due, soon...)
	}
	if len(due) > 0 && k.sess == nil {
		if now.Before(k.reopenAt) {
			at(k.reopenAt)
		} else {
			k.openSession()
		}
	}
	if len(due) > 0 && k.sess != nil {
		k.send(now, due)
	}
	if len(k.holdings) == 0 && len(k.pending) == 0 && k.sess != nil {
		// Nothing to keep: do not hold a stream (and a relay to the
		// leader) open.
		k.sess.cancel()
		k.sess = nil
	}
	for _, b := range k.pending {
		at(b.timeoutAt)
	}
	return next, has
}

func (k *keeper) openSession() {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{ctx: ctx, cancel: cancel, send: make(chan *pb.KeepAliveRequest, 16), endpoint: k.c.cur.Load()}
	k.sess = s
	k.wg.Add(1)
	go k.runSession(s)
}

// runSession opens the stream and sends what run queues; a second goroutine
// receives. Both end when s.ctx is cancelled.
func (k *keeper) runSession(s *session) {
	defer k.wg.Done()
	stream, err := k.c.leases.KeepAlive(s.ctx)
	if err != nil {
		k.report(s, sessionEvent{sess: s, err: err})
		return
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for {
			resp, err := stream.Recv()
			k.report(s, sessionEvent{sess: s, resp: resp, err: err})
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case req := <-s.send:
			if err := stream.Send(req); err != nil {
				// Recv reports the stream's real error.
				<-s.ctx.Done()
				return
			}
		case <-s.ctx.Done():
			return
		}
	}
}

func (k *keeper) report(s *session, ev sessionEvent) {
	select {
	case k.events <- ev:
	case <-s.ctx.Done():
	case <-k.stop:
	}
}

// send queues due on the session in messages of at most maxBatch.
func (k *keeper) send(now time.Time, due []*Holding) {
	for len(due) > 0 {
		n := min(len(due), maxBatch)
		chunk := due[:n]
		due = due[n:]
		k.nextID++
		b := &batch{id: k.nextID, sent: now, holdings: chunk}
		req := &pb.KeepAliveRequest{Id: b.id, Leases: make([]*pb.LeaseRef, len(chunk))}
		timeout := k.c.cfg.DialTimeout
		for i, h := range chunk {
			req.Leases[i] = &pb.LeaseRef{Namespace: h.namespace, Name: h.name, HolderIdentity: h.holder, FencingToken: h.token, Record: h.record}
			timeout = min(timeout, h.deadline.Sub(now)/3)
		}
		b.timeoutAt = now.Add(max(timeout, minRenewTimeout))
		select {
		case k.sess.send <- req:
		default:
			k.breakSession(now, fmt.Errorf("keepalive stream does not take messages"))
			return
		}
		k.pending[b.id] = b
		for _, h := range chunk {
			h.inflight = b.id
		}
		k.met.messages.Inc()
	}
}

// breakSession drops the current stream, moves to the next endpoint and
// makes the holdings it carried due again after a backoff.
func (k *keeper) breakSession(now time.Time, err error) {
	if s := k.sess; s != nil {
		s.cancel()
		k.sess = nil
		if n := uint32(len(k.c.conns)); n > 0 {
			k.c.cur.CompareAndSwap(s.endpoint, (s.endpoint+1)%n)
		}
	}
	for id, b := range k.pending {
		for _, h := range b.holdings {
			if h.inflight == id {
				h.inflight = 0
				h.nextRenew = now
			}
		}
		delete(k.pending, id)
	}
	wait := k.c.backoff(k.failures)
	k.failures++
	k.reopenAt = now.Add(wait)
	k.met.reconnect.Inc()
	k.log.Debug("keepalive stream failed", "error", err, "retry_in", wait)
}

// handle applies an answer or a session's end.
func (k *keeper) handle(ev sessionEvent, now time.Time) {
	if ev.sess != k.sess {
		return // from a session given up already
	}
	if ev.err != nil {
		if status.Code(ev.err) == codes.PermissionDenied {
			// Retrying would only be refused again: stop and report.
			for _, b := range k.pending {
				for _, h := range b.holdings {
					k.endLocked(h, lostErr(mapError(ev.err)), "permission")
				}
			}
		}
		k.breakSession(now, ev.err)
		return
	}
	b := k.pending[ev.resp.GetId()]
	if b == nil {
		return
	}
	delete(k.pending, b.id)
	k.failures = 0
	results := ev.resp.GetResults()
	for i, h := range b.holdings {
		if h.inflight == b.id {
			h.inflight = 0
		}
		if h.ended {
			continue
		}
		r := matchResult(results, i, h)
		if r == nil {
			h.nextRenew = now
			continue
		}
		code := codes.Code(r.GetCode())
		k.met.renewals.WithLabelValues(resultLabel(code)).Inc()
		switch code {
		case codes.OK:
			dur := h.duration
			if d := r.GetLeaseDuration(); d != nil {
				dur = d.AsDuration()
			}
			if d := b.sent.Add(k.window(dur, h.maxValid)); d.After(h.deadline) {
				h.deadline = d
			}
			if b.sent.After(h.lastSent) {
				h.lastSent = b.sent
			}
			h.nextRenew = b.sent.Add(h.renewEvery)
			h.failures = 0
		case codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied, codes.InvalidArgument:
			err := mapError(status.Error(code, r.GetMessage()))
			k.endLocked(h, lostErr(err), resultLabel(code))
		default:
			wait := k.c.backoff(h.failures)
			h.failures++
			h.nextRenew = now.Add(wait)
		}
	}
}

// matchResult finds h's result: at index i when the server kept the order,
// else by name and token.
func matchResult(results []*pb.KeepAliveResult, i int, h *Holding) *pb.KeepAliveResult {
	is := func(r *pb.KeepAliveResult) bool {
		return r.GetName() == h.name && r.GetFencingToken() == h.token &&
			(r.GetNamespace() == h.namespace || r.GetNamespace() == "")
	}
	if i < len(results) && is(results[i]) {
		return results[i]
	}
	for _, r := range results {
		if is(r) {
			return r
		}
	}
	return nil
}

func resultLabel(c codes.Code) string {
	switch c {
	case codes.OK:
		return "ok"
	case codes.NotFound:
		return "not_found"
	case codes.FailedPrecondition:
		return "stale"
	case codes.PermissionDenied:
		return "permission"
	case codes.InvalidArgument:
		return "invalid"
	}
	return "other"
}
