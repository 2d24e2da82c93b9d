package workload

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// SemaphoreName is the semaphore the semaphore workers share; its slots
// are the leases sem-0 … sem-(SemaphoreSlots-1).
const SemaphoreName = "sem"

// semWorker waits in the semaphore's queue on the server (Acquire), holds
// the slot it is handed for a random while, recording every advance of
// its safe deadline, and releases it. The queue's polls are answered from
// the leader's table while the worker is in line, so partitions that cut
// the leader off attack that path: the semaphore-bound and
// mutual-exclusion checkers judge what the workers believed.
type semWorker struct {
	w       *Workload
	process int
	holder  string
	rng     *rand.Rand
	client  *client.Client
}

func (sw *semWorker) op(kind, lease string) history.Op {
	return history.Op{Process: sw.process, Workload: history.WorkloadSemaphore, Kind: kind, Lease: lease, Holder: sw.holder,
		Slots: sw.w.cfg.SemaphoreSlots}
}

func (sw *semWorker) run(ctx context.Context) {
	cfg := sw.w.cfg
	s, err := client.NewSemaphore(sw.client, SemaphoreName, cfg.SemaphoreSlots, client.WithNamespace(cfg.Namespace),
		client.WithIdentity(sw.holder), client.WithTTL(cfg.LeaseDuration), client.WithGrace(0))
	if err != nil {
		sw.w.logf("workload: p%d: %v", sw.process, err)
		return
	}
	for ctx.Err() == nil {
		if h := sw.acquire(ctx, s); h != nil {
			sw.hold(ctx, h)
		}
		sleep(ctx, cfg.ThinkMin+time.Duration(sw.rng.Int64N(int64(cfg.ThinkMax-cfg.ThinkMin)+1)))
	}
}

// acquire waits up to LockWait in the semaphore's queue, as one recorded
// operation.
func (sw *semWorker) acquire(ctx context.Context, s *client.Semaphore) *client.Holding {
	rec := sw.w.rec
	op := sw.op(history.Acquire, SemaphoreName)
	op.Duration = sw.w.cfg.LeaseDuration
	cctx, cancel := context.WithTimeout(ctx, sw.w.cfg.LockWait)
	op.Call = rec.Now()
	h, err := s.Acquire(cctx)
	op.Return = rec.Now()
	cancel()
	if ctx.Err() != nil && err != nil {
		return nil // the run ended; nothing to judge
	}
	classifyClient(&op, err)
	var held *client.HeldError
	if errors.As(err, &held) {
		op.Type, op.ErrClass, op.Err = history.OK, history.ErrNotAcquired, ""
	}
	if h != nil {
		l := h.Lease()
		op.Lease, op.Acquired = h.Name(), true
		op.ResFound, op.ResHolder, op.ResToken, op.ResTransitions = true, h.Holder(), h.Token(), l.GetLeaseTransitions()
		op.Deadline = rec.At(h.Deadline())
	}
	rec.Add(op)
	return h
}

// hold keeps the slot for HoldMin to HoldMax, recording the deadline as it
// advances, then releases it unless it was lost.
func (sw *semWorker) hold(ctx context.Context, h *client.Holding) {
	cfg := sw.w.cfg
	rec := sw.w.rec
	until := rec.Now() + int64(cfg.HoldMin) + sw.rng.Int64N(int64(cfg.HoldMax-cfg.HoldMin)+1)
	believed := rec.At(h.Deadline())
	for ctx.Err() == nil && rec.Now() < until && h.Valid() {
		if d := rec.At(h.Deadline()); d > believed {
			believed = d
			op := sw.op(history.Hold, h.Name())
			op.Token, op.Call, op.Return, op.Type, op.Deadline = h.Token(), rec.Now(), rec.Now(), history.OK, d
			rec.Add(op)
		}
		sleep(ctx, 30*time.Millisecond+time.Duration(sw.rng.IntN(70))*time.Millisecond)
	}
	if !h.Valid() {
		return // lost: its belief ended at its deadline
	}
	op := sw.op(history.Release, h.Name())
	op.Token = h.Token()
	cctx, cancel := context.WithTimeout(context.Background(), 2*cfg.OpTimeout)
	op.Call = rec.Now()
	err := h.Release(cctx)
	op.Return = rec.Now()
	cancel()
	classifyClient(&op, err)
	rec.Add(op)
}
