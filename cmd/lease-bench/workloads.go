package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

// grant: acquire new leases with distinct names (duration --lease-ttl) in a
// closed loop; deleted afterwards, outside the timing.
func (b *bench) grant(ctx context.Context) error {
	names := make([][]string, b.cfg.clients)
	t := b.runTimed(ctx, func(ctx context.Context, g, i int) error {
		name := fmt.Sprintf("grant-%s-%d-%d", b.run, g, i)
		resp, err := b.cli(g).Acquire(ctx, b.cfg.namespace, name, b.holder(g), b.cfg.leaseTTL, 0, nil)
		if err == nil && !resp.GetAcquired() {
			err = fmt.Errorf("%s is held by %q", name, resp.GetLease().GetHolderIdentity())
		}
		if err == nil {
			names[g] = append(names[g], name)
		}
		return err
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.emitTimed("grant", t)
	b.cleanup(ctx, names)
	return nil
}

// keepalive: unary Renew of one lease per goroutine, in a closed loop.
func (b *bench) keepalive(ctx context.Context) error {
	names := make([][]string, b.cfg.clients)
	defer b.cleanup(ctx, names)
	tokens := make([]uint64, b.cfg.clients)
	for g := range tokens {
		name := fmt.Sprintf("keepalive-%s-%d", b.run, g)
		resp, err := b.cli(g).Acquire(ctx, b.cfg.namespace, name, b.holder(g), b.cfg.leaseTTL, 0, nil)
		if err != nil {
			return err
		}
		names[g], tokens[g] = []string{name}, resp.GetLease().GetFencingToken()
	}
	t := b.runTimed(ctx, func(ctx context.Context, g, _ int) error {
		_, err := b.cli(g).Renew(ctx, b.cfg.namespace, names[g][0], b.holder(g), tokens[g])
		return err
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.emitTimed("keepalive", t)
	return nil
}

// lockCycle is one holding of a lock, as its taker saw it.
type lockCycle struct {
	g         int
	token     uint64
	acquired  time.Time // Lock returned
	releasing time.Time // Unlock called
}

// lock: Lock+Unlock cycles of client.Mutex (duration --lease-ttl), one
// Mutex per goroutine, on a lease per goroutine or, when contended, one
// shared lease. Tokens must rise strictly across successive holders of a
// lease (fence_violations counts the exceptions). Contended runs also
// report the handoff: from a holder's Unlock call to the next holder's
// Lock return, in token order, and how often the releaser took the lock
// straight back (client.Mutex promises no order of service).
func (b *bench) lock(ctx context.Context, contended bool) error {
	workload, key := "lock", func(g int) int { return g }
	if contended {
		workload, key = "lock_contended", func(int) int { return 0 }
	}
	mus := make([]*client.Mutex, b.cfg.clients)
	names := make([][]string, b.cfg.clients)
	for g := range mus {
		name := fmt.Sprintf("%s-%s-%d", strings.ReplaceAll(workload, "_", "-"), b.run, key(g))
		m, err := client.NewMutex(b.cli(g), name, client.WithNamespace(b.cfg.namespace),
			client.WithTTL(b.cfg.leaseTTL), client.WithIdentity(b.holder(g)))
		if err != nil {
			return err
		}
		mus[g] = m
		if key(g) == g {
			names[g] = []string{name}
		}
	}
	defer b.cleanup(ctx, names)
	var (
		mu         sync.Mutex
		last       = make([]uint64, len(mus)) // per lease
		violations int
		cycles     []lockCycle
	)
	t := b.runTimed(ctx, func(ctx context.Context, g, _ int) error {
		h, err := mus[g].Lock(ctx)
		if err != nil {
			return err
		}
		c := lockCycle{g: g, token: h.Token(), acquired: time.Now()}
		mu.Lock()
		if c.token > last[key(g)] {
			last[key(g)] = c.token
		} else {
			violations++
		}
		mu.Unlock()
		c.releasing = time.Now()
		err = mus[g].Unlock(ctx)
		mu.Lock()
		cycles = append(cycles, c)
		mu.Unlock()
		return err
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	extra := []any{"unit", "cycles", "fence_violations", violations, "lock_impl", "client.Mutex"}
	if contended {
		extra = append(extra, handoffs(cycles, b.cfg.clients)...)
	}
	b.emitTimed(workload, t, extra...)
	return nil
}

// handoffs summarises the cycles of one contended lock in token order.
func handoffs(cycles []lockCycle, clients int) []any {
	slices.SortFunc(cycles, func(a, b lockCycle) int { return cmp.Compare(a.token, b.token) })
	var (
		gaps []time.Duration
		same int
		per  = make([]int, clients)
		seq  []string
	)
	for i, c := range cycles {
		per[c.g]++
		if len(seq) < 40 {
			seq = append(seq, fmt.Sprint(c.g))
		}
		if i == 0 {
			continue
		}
		prev := cycles[i-1]
		gaps = append(gaps, c.acquired.Sub(prev.releasing))
		if c.g == prev.g {
			same++
		}
	}
	slices.Sort(gaps)
	note("lock_contended: first holders in token order (goroutine): %s", strings.Join(seq, " "))
	samePct := 0.0
	if len(gaps) > 0 {
		samePct = round1(100 * float64(same) / float64(len(gaps)))
	}
	return []any{"handoff_p50_ms", pct(gaps, .50), "handoff_p99_ms", pct(gaps, .99), "handoff_max_ms", pct(gaps, 1),
		"same_holder_pct", samePct, "cycles_per_client_min", slices.Min(per), "cycles_per_client_max", slices.Max(per)}
}

// failoverResult is what killLeader saw.
type failoverResult struct {
	recovery  time.Duration
	killed    int
	survived  bool
	remaining time.Duration // the surviving lease's, as the new leader said
}

// failover: SIGKILL the leader's process, then time until an acquire
// succeeds again through a client that knows every endpoint, and check
// that a lease acquired before the kill survived. A cluster the bench
// started gets the node back afterwards, for any workload that follows.
func (b *bench) failover(ctx context.Context) error {
	r, err := b.killLeader(ctx, b.cfg.leaseTTL)
	if err != nil {
		return err
	}
	emit("system", "leasekeeper", "workload", "failover", "recovery_ms", ms(r.recovery), "lease_survived", r.survived,
		"lease_remaining_s", round2(r.remaining.Seconds()), "killed", b.nodeName(r.killed))
	if b.c.managed {
		return b.rejoin(ctx, r.killed)
	}
	return nil
}

// killLeader acquires a lease of duration ttl, kills the leader, and
// measures the time to the next successful acquire. Attempts start every
// 20ms and overlap, so one stuck on the dead leader does not blur the
// figure.
func (b *bench) killLeader(ctx context.Context, ttl time.Duration) (failoverResult, error) {
	var r failoverResult
	cl, err := newClient(b.c.endpoints()...)
	if err != nil {
		return r, err
	}
	defer cl.Close()
	name, holder := "failover-pre-"+b.run, "lease-bench-"+b.run+"-pre"
	pre, err := cl.Acquire(ctx, b.cfg.namespace, name, holder, ttl, 0, nil)
	if err != nil {
		return r, fmt.Errorf("acquire before the kill: %w", err)
	}
	if r.killed, err = b.findLeader(ctx); err != nil {
		return r, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel() // runs before wg.Wait: abandons attempts still in flight
	recovered := make(chan time.Duration, 1)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	t0 := time.Now()
	if err := b.c.kill(r.killed); err != nil {
		return r, err
	}
	for k := 0; r.recovery == 0; k++ {
		select {
		case <-tick.C:
			wg.Go(func() {
				gctx, gcancel := context.WithTimeout(actx, 2*time.Second)
				defer gcancel()
				probe := fmt.Sprintf("failover-%s-%d", b.run, k)
				if _, err := cl.Acquire(gctx, b.cfg.namespace, probe, holder, ttl, 0, nil); err == nil {
					select {
					case recovered <- time.Since(t0):
					default:
					}
				}
			})
		case r.recovery = <-recovered:
		case <-actx.Done():
			return r, errors.New("no acquire succeeded within 30s of killing the leader")
		}
	}
	gctx, gcancel := context.WithTimeout(ctx, 5*time.Second)
	defer gcancel()
	got, err := cl.Get(gctx, b.cfg.namespace, name, false)
	if err == nil {
		l := got.GetLease()
		r.survived = l.GetHolderIdentity() == holder && l.GetFencingToken() == pre.GetLease().GetFencingToken()
		r.remaining = got.GetRemaining().AsDuration()
	}
	return r, nil
}

// rejoin restarts a killed node of a managed cluster and waits until the
// cluster is whole and healthy again; leader-only clients follow the new
// leader.
func (b *bench) rejoin(ctx context.Context, i int) error {
	if err := b.c.restart(i); err != nil {
		return err
	}
	if err := b.waitHealthy(ctx, 60*time.Second); err != nil {
		return fmt.Errorf("after restarting %s: %w", b.nodeName(i), err)
	}
	lead, err := b.findLeader(ctx)
	if err != nil {
		return err
	}
	if b.cfg.leaderOnly && lead != b.leader {
		for _, cl := range b.clis {
			_ = cl.Close()
		}
		b.clis = nil
		for range b.cfg.conns {
			cl, err := newClient(b.c.nodes[lead].grpcAddr)
			if err != nil {
				return err
			}
			b.clis = append(b.clis, cl)
		}
	}
	b.leader = lead
	return nil
}
