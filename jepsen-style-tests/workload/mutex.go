package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Locker is the lock that the mutex workload drives: one lock name, one
// holder identity. Two implementations exist: BaseLocker, made of the
// client's base Acquire/Renew/Release calls with renewals done by the
// worker, and ClientLocker, which is client.Mutex with its own renewal
// engine. The interface is small so that either can stand in.
type Locker interface {
	// TryLock makes one attempt to take the lock. When another holder has
	// it, it returns a nil Held and that holder in the answer.
	TryLock(ctx context.Context) (Held, LockAnswer, error)
}

// Held is a lock that the worker holds.
type Held interface {
	Token() uint64
	// Deadline is the client's safe deadline as of now:
	// sent + duration*(1-maxDrift) - margin for the last acknowledged
	// acquire or renewal.
	Deadline() time.Time
	// Maintain is called before each write under the lock: it renews the
	// holding when due (if the implementation renews on the caller's
	// goroutine) and reports whether the holding is still believed.
	Maintain(ctx context.Context) bool
	// Unlock releases the holding.
	Unlock(ctx context.Context) error
	// Stop stops renewing without releasing, as a paused process would.
	Stop()
}

// LockAnswer is what a lock attempt learnt about the lock.
type LockAnswer struct {
	Acquired    bool
	Renewed     bool
	Found       bool
	Holder      string
	Token       uint64
	Transitions int64
	// LockDelay is the lock delay the answer's lease showed.
	LockDelay time.Duration
}

// LockerFactory makes the Locker for one holder of one lock. rec lets an
// implementation that renews on the worker's goroutine record its renewals.
type LockerFactory func(c *client.Client, cfg Config, name, holder string, process int, rec *history.Recorder) Locker

// LockerByName returns the factory that name selects: "client" for
// client.Mutex, "base" for the base calls.
func LockerByName(name string) (LockerFactory, error) {
	switch name {
	case "client", "":
		return ClientLocker, nil
	case "base":
		return BaseLocker, nil
	}
	return nil, fmt.Errorf("workload: unknown mutex implementation %q (client or base)", name)
}

// ClientLocker is client.Mutex: Lock waits on a watch, a renewal engine
// keeps the holding alive in the background, and Holding.Deadline is the
// client's own safe deadline. The workload records the acquire and the
// deadlines it observes, not the engine's renewals.
//
// Options that client.NewMutex refuses make a Locker whose every TryLock
// returns that error.
func ClientLocker(c *client.Client, cfg Config, name, holder string, _ int, _ *history.Recorder) Locker {
	m, err := client.NewMutex(c, name, client.WithNamespace(cfg.Namespace), client.WithIdentity(holder),
		client.WithTTL(cfg.LeaseDuration), client.WithGrace(0), client.WithLockDelay(cfg.lockDelay(name)))
	if err != nil {
		return refusedLocker{err}
	}
	return clientLocker{m}
}

// refusedLocker is a ClientLocker whose options were refused.
type refusedLocker struct{ err error }

func (l refusedLocker) TryLock(context.Context) (Held, LockAnswer, error) {
	return nil, LockAnswer{}, l.err
}

type clientLocker struct{ m *client.Mutex }

func (l clientLocker) TryLock(ctx context.Context) (Held, LockAnswer, error) {
	h, err := l.m.TryLock(ctx)
	var held *client.HeldError
	if errors.As(err, &held) {
		ls := held.Lease
		return nil, LockAnswer{Found: ls != nil, Holder: ls.GetHolderIdentity(), Token: ls.GetFencingToken(), Transitions: ls.GetLeaseTransitions()}, nil
	}
	if err != nil {
		return nil, LockAnswer{}, err
	}
	ls := h.Lease()
	return clientHeld{m: l.m, h: h}, LockAnswer{Acquired: true, Found: true, Holder: h.Holder(), Token: h.Token(), Transitions: ls.GetLeaseTransitions(),
		LockDelay: ls.GetLockDelay().AsDuration()}, nil
}

type clientHeld struct {
	m *client.Mutex
	h *client.Holding
}

func (c clientHeld) Token() uint64                    { return c.h.Token() }
func (c clientHeld) Deadline() time.Time              { return c.h.Deadline() }
func (c clientHeld) Maintain(context.Context) bool    { return c.h.Valid() }
func (c clientHeld) Unlock(ctx context.Context) error { return c.m.Unlock(ctx) }
func (c clientHeld) Stop()                            { c.h.Abandon() }

// BaseLocker is a Locker made of the client's base calls; the worker's
// goroutine renews when half the lease has gone, and each renewal is
// recorded.
func BaseLocker(c *client.Client, cfg Config, name, holder string, process int, rec *history.Recorder) Locker {
	return &baseLocker{c: c, cfg: cfg, name: name, holder: holder, process: process, rec: rec}
}

type baseLocker struct {
	c       *client.Client
	cfg     Config
	name    string
	holder  string
	process int
	rec     *history.Recorder
}

func (l *baseLocker) deadline(sent time.Time) time.Time {
	return sent.Add(time.Duration(float64(l.cfg.LeaseDuration)*(1-l.cfg.MaxDrift)) - l.cfg.Margin)
}

func (l *baseLocker) TryLock(ctx context.Context) (Held, LockAnswer, error) {
	req := &pb.AcquireRequest{Namespace: l.cfg.Namespace, Name: l.name, HolderIdentity: l.holder,
		LeaseDuration: durationpb.New(l.cfg.LeaseDuration)}
	if d := l.cfg.lockDelay(l.name); d > 0 {
		req.LockDelay = durationpb.New(d)
	}
	sent := time.Now()
	resp, err := l.c.Leases().Acquire(ctx, req)
	if err != nil {
		return nil, LockAnswer{}, err
	}
	ls := resp.GetLease()
	ans := LockAnswer{Acquired: resp.GetAcquired(), Renewed: resp.GetRenewed(), Found: ls != nil,
		Holder: ls.GetHolderIdentity(), Token: ls.GetFencingToken(), Transitions: ls.GetLeaseTransitions(),
		LockDelay: ls.GetLockDelay().AsDuration()}
	if !ans.Acquired {
		return nil, ans, nil
	}
	return &baseHeld{l: l, token: ans.Token, deadline: l.deadline(sent)}, ans, nil
}

type baseHeld struct {
	l        *baseLocker
	token    uint64
	deadline time.Time
	lost     bool
}

func (b *baseHeld) Token() uint64       { return b.token }
func (b *baseHeld) Deadline() time.Time { return b.deadline }
func (b *baseHeld) Stop()               {}

func (b *baseHeld) Maintain(ctx context.Context) bool {
	if b.lost || !time.Now().Before(b.deadline) {
		b.lost = true
		return false
	}
	if time.Until(b.deadline) >= b.l.cfg.LeaseDuration/2 {
		return true
	}
	l := b.l
	op := history.Op{Process: l.process, Workload: history.WorkloadMutex, Kind: history.Renew, Lease: l.name,
		Holder: l.holder, Token: b.token, Duration: l.cfg.LeaseDuration}
	cctx, cancel := context.WithTimeout(ctx, 2*l.cfg.OpTimeout)
	sent := time.Now()
	op.Call = l.rec.Now()
	ls, err := l.c.Renew(cctx, l.cfg.Namespace, l.name, l.holder, b.token)
	op.Return = l.rec.Now()
	cancel()
	classifyClient(&op, err)
	if err == nil {
		op.ResFound, op.ResHolder, op.ResToken, op.ResTransitions = ls != nil, ls.GetHolderIdentity(), ls.GetFencingToken(), ls.GetLeaseTransitions()
		if d := l.deadline(sent); d.After(b.deadline) {
			b.deadline = d
		}
		op.Deadline = l.rec.At(b.deadline)
	}
	l.rec.Add(op)
	if op.Type == history.Fail {
		b.lost = true
	}
	return !b.lost && time.Now().Before(b.deadline)
}

func (b *baseHeld) Unlock(ctx context.Context) error {
	_, err := b.l.c.Release(ctx, b.l.cfg.Namespace, b.l.name, b.l.holder, b.token)
	return err
}

// mutexWorker runs lock / write under the lock / unlock cycles.
type mutexWorker struct {
	w       *Workload
	process int
	holder  string
	rng     *rand.Rand
	client  *client.Client
	// pause receives client-pause requests from the nemesis.
	pause chan time.Duration
	// stale makes this worker ignore its deadline after every holding and
	// keep writing with the old token (negative control).
	stale bool
}

// classifyClient sets an operation's outcome from a client error.
func classifyClient(op *history.Op, err error) {
	switch {
	case err == nil:
		op.Type = history.OK
		return
	case errors.Is(err, client.ErrStaleToken):
		op.Type, op.ErrClass = history.Fail, history.ErrStale
	case errors.Is(err, client.ErrNotFound):
		op.Type, op.ErrClass = history.Fail, history.ErrNotFound
	case errors.Is(err, client.ErrUnavailable):
		op.Type, op.ErrClass = history.Info, history.ErrUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		op.Type, op.ErrClass = history.Info, history.ErrTimeout
	default:
		op.Type, op.ErrClass = history.Info, history.ErrOther
	}
	op.Err = err.Error()
}

func (mw *mutexWorker) op(kind, lock string) history.Op {
	return history.Op{Process: mw.process, Workload: history.WorkloadMutex, Kind: kind, Lease: lock, Holder: mw.holder}
}

func (mw *mutexWorker) run(ctx context.Context) {
	cfg := mw.w.cfg
	for ctx.Err() == nil {
		lock := cfg.lockNames()[mw.rng.IntN(cfg.Locks)]
		l := mw.w.newLocker(mw.client, cfg, lock, mw.holder, mw.process, mw.w.rec)
		if h := mw.lock(ctx, l, lock); h != nil {
			mw.hold(ctx, h, lock)
		}
		sleep(ctx, cfg.ThinkMin+time.Duration(mw.rng.Int64N(int64(cfg.ThinkMax-cfg.ThinkMin)+1)))
	}
}

// lock tries to take lock for up to LockWait, one attempt at a time, and
// records every attempt.
func (mw *mutexWorker) lock(ctx context.Context, l Locker, lock string) Held {
	cfg := mw.w.cfg
	rec := mw.w.rec
	giveUp := rec.Now() + int64(cfg.LockWait)
	for ctx.Err() == nil && rec.Now() < giveUp {
		op := mw.op(history.Acquire, lock)
		op.Duration = cfg.LeaseDuration
		cctx, cancel := context.WithTimeout(context.Background(), 2*cfg.OpTimeout)
		op.Call = rec.Now()
		h, ans, err := l.TryLock(cctx)
		op.Return = rec.Now()
		cancel()
		classifyClient(&op, err)
		if err == nil {
			op.Acquired, op.Renewed = ans.Acquired, ans.Renewed
			op.ResFound, op.ResHolder, op.ResToken, op.ResTransitions = ans.Found, ans.Holder, ans.Token, ans.Transitions
			op.ResLockDelay = ans.LockDelay
			if h != nil {
				op.Deadline = rec.At(h.Deadline())
			}
		}
		rec.Add(op)
		if h != nil {
			return h
		}
		sleep(ctx, 50*time.Millisecond+time.Duration(mw.rng.IntN(100))*time.Millisecond)
	}
	return nil
}

// hold keeps the lock for a random while, writing to the lock's register
// while the holding is believed (checked just before each write), then
// unlocks. Every advance of the deadline is recorded as a "hold" operation:
// the mutual-exclusion checker's record of what the client believed.
func (mw *mutexWorker) hold(ctx context.Context, h Held, lock string) {
	cfg := mw.w.cfg
	rec := mw.w.rec
	reg := mw.w.registers[lock]
	token := h.Token()
	until := rec.Now() + int64(cfg.HoldMin) + mw.rng.Int64N(int64(cfg.HoldMax-cfg.HoldMin)+1)
	believed := rec.At(h.Deadline())
	lost := false
	n := 0
	for ctx.Err() == nil && rec.Now() < until {
		select {
		case d := <-mw.pause:
			// A stop-the-world pause between the deadline check and the
			// write: renewals stop, and the write goes out after the pause
			// with the token it had. Only the register's fence can stop it.
			mw.w.logf("workload: p%d paused for %v holding %s token %d", mw.process, d, lock, token)
			h.Stop()
			sleep(ctx, d)
			n++
			reg.Write(mw.process, mw.holder, token, fmt.Sprintf("p%d-%d-paused", mw.process, n), true)
			lost = true
		default:
		}
		if lost || !h.Maintain(ctx) {
			lost = true
			break
		}
		if d := rec.At(h.Deadline()); d > believed {
			believed = d
			op := mw.op(history.Hold, lock)
			op.Token, op.Call, op.Return, op.Type, op.Deadline = token, rec.Now(), rec.Now(), history.OK, d
			rec.Add(op)
		}
		n++
		reg.Write(mw.process, mw.holder, token, fmt.Sprintf("p%d-%d", mw.process, n), false)
		sleep(ctx, 30*time.Millisecond+time.Duration(mw.rng.IntN(70))*time.Millisecond)
	}
	if !lost {
		op := mw.op(history.Release, lock)
		op.Token = token
		cctx, cancel := context.WithTimeout(context.Background(), 2*cfg.OpTimeout)
		op.Call = rec.Now()
		err := h.Unlock(cctx)
		op.Return = rec.Now()
		cancel()
		classifyClient(&op, err)
		rec.Add(op)
	}
	if mw.stale {
		// The negative control: a client that ignores its deadline and
		// keeps writing with the token it had.
		for i := 0; i < 10 && ctx.Err() == nil; i++ {
			sleep(ctx, 100*time.Millisecond)
			n++
			reg.Write(mw.process, mw.holder, token, fmt.Sprintf("p%d-%d-stale", mw.process, n), true)
		}
	}
}

// pauseQueue hands client-pause requests to one mutex worker at random.
type pauseQueue struct {
	mu      sync.Mutex
	workers []*mutexWorker
	rng     *rand.Rand
}

func (q *pauseQueue) pause(d time.Duration) (int, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.workers) == 0 {
		return 0, false
	}
	mw := q.workers[q.rng.IntN(len(q.workers))]
	select {
	case mw.pause <- d:
		return mw.process, true
	default:
		return mw.process, false // a pause is already pending there
	}
}
