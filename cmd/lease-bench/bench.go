package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

// bench holds the clients of one run.
type bench struct {
	cfg    *config
	c      *cluster
	nodeCl []*client.Client // one per node, talking to that node only
	clis   []*client.Client // the load clients, shared round-robin by goroutines
	run    string           // in every lease name of this run
	leader int              // at start
}

// unaryCalls is --unary-calls: every client sends each call on its own.
var unaryCalls bool

func newClient(endpoints ...string) (*client.Client, error) {
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.UnaryCalls = unaryCalls
	return client.New(cfg)
}

// newBench waits until the nodes agree on a leader and a write commits,
// then makes the load clients. Client i tries endpoint i (mod the cluster
// size) first, so the load spreads over the nodes as etcdpeer's
// round-robin does; followers forward to the leader.
func newBench(ctx context.Context, cfg *config, c *cluster) (*bench, error) {
	b := &bench{cfg: cfg, c: c, run: newRunID()}
	for _, ep := range c.endpoints() {
		cl, err := newClient(ep)
		if err != nil {
			return b, err
		}
		b.nodeCl = append(b.nodeCl, cl)
	}
	if err := b.waitHealthy(ctx, 60*time.Second); err != nil {
		return b, err
	}
	var err error
	if b.leader, err = b.findLeader(ctx); err != nil {
		return b, err
	}
	eps := c.endpoints()
	for i := range cfg.conns {
		mine := append(slices.Clone(eps[i%len(eps):]), eps[:i%len(eps)]...)
		if cfg.leaderOnly {
			mine = []string{eps[b.leader]}
		}
		cl, err := newClient(mine...)
		if err != nil {
			return b, err
		}
		b.clis = append(b.clis, cl)
	}
	mode := "running cluster at " + fmt.Sprint(eps)
	if c.managed {
		mode = fmt.Sprintf("%d lease-node processes started from %s, data in %s (fsync on unless --node-args says otherwise)",
			len(c.nodes), c.bin, c.root)
	}
	var pids []int
	for _, nd := range c.nodes {
		pids = append(pids, nd.pid)
	}
	note("%s; pids %v; leader %s; %d goroutines over %d clients (leader-only=%v); run id %s",
		mode, pids, b.nodeName(b.leader), cfg.clients, cfg.conns, cfg.leaderOnly, b.run)
	return b, nil
}

func (b *bench) close() {
	for _, cl := range append(b.clis, b.nodeCl...) {
		_ = cl.Close()
	}
}

// cli is the load client of goroutine g.
func (b *bench) cli(g int) *client.Client { return b.clis[g%len(b.clis)] }

// holder is goroutine g's holder identity.
func (b *bench) holder(g int) string { return fmt.Sprintf("lease-bench-%s-%d", b.run, g) }

func (b *bench) nodeName(i int) string {
	if i < 0 {
		return "none"
	}
	if id := b.c.nodes[i].id; id != "" {
		return id
	}
	return b.c.nodes[i].grpcAddr
}

// findLeader returns the index of the leader, if every live node answers
// and names the same one.
func (b *bench) findLeader(ctx context.Context) (int, error) {
	found, lead := -1, ""
	for i, nd := range b.c.nodes {
		if !b.c.alive(i) {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := b.nodeCl[i].Status(sctx)
		cancel()
		if err != nil || st.GetLeader() == "" || (lead != "" && st.GetLeader() != lead) {
			return -1, fmt.Errorf("%s: no agreed leader (leader %q, error %v)", nd.grpcAddr, st.GetLeader(), err)
		}
		lead, nd.id = st.GetLeader(), st.GetId()
		if st.GetId() == lead {
			found = i
		}
	}
	if found < 0 {
		return -1, fmt.Errorf("leader %q is not among the endpoints", lead)
	}
	return found, nil
}

// waitHealthy waits until the nodes agree on a leader and an acquire
// through the leader commits.
func (b *bench) waitHealthy(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		lead, err := b.findLeader(ctx)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err = b.nodeCl[lead].Acquire(actx, b.cfg.namespace, "health-"+b.run, "lease-bench-"+b.run, time.Second, 0, nil)
			cancel()
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not healthy after %v: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// timed is what runTimed saw.
type timed struct {
	ops       int
	elapsed   time.Duration
	lats      []time.Duration // sorted
	nerr      int
	lastErr   error
	memberCPU []float64 // CPU seconds of each node over the run
	serverCPU float64   // their sum
	benchCPU  float64   // this process
}

// runTimed runs op in a closed loop on --clients goroutines for --duration.
// i counts goroutine g's attempts. Ops in flight at the deadline finish and
// are counted; a failed op is followed by a 10ms pause.
func (b *bench) runTimed(ctx context.Context, op func(ctx context.Context, g, i int) error) timed {
	var (
		wg   sync.WaitGroup
		lats latencies
		errs errCount
	)
	note("load average %s", loadavg())
	cpu0, self0 := b.c.cpu(), procCPU(os.Getpid())
	start := time.Now()
	deadline := start.Add(b.cfg.duration)
	for g := range b.cfg.clients {
		wg.Go(func() {
			var mine []time.Duration
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t := time.Now()
				err := op(octx, g, i)
				d := time.Since(t)
				cancel()
				if err == nil {
					mine = append(mine, d)
					continue
				}
				errs.add(err)
				time.Sleep(10 * time.Millisecond)
			}
			lats.merge(mine)
		})
	}
	wg.Wait()
	t := timed{elapsed: time.Since(start), lats: lats.sorted()}
	t.memberCPU, t.serverCPU = cpuSince(cpu0, b.c.cpu())
	_, t.benchCPU = cpuSince([]float64{self0}, []float64{procCPU(os.Getpid())})
	t.ops = len(t.lats)
	t.nerr, t.lastErr = errs.get()
	return t
}

// emitTimed reports a runTimed result, with extra key/value pairs.
func (b *bench) emitTimed(name string, t timed, extra ...any) {
	if t.lastErr != nil {
		note("%s: %d op errors, last: %v", name, t.nerr, t.lastErr)
	}
	emit(append([]any{"system", "leasekeeper", "workload", name, "clients", b.cfg.clients, "ops", t.ops,
		"ops_per_s", round1(float64(t.ops) / t.elapsed.Seconds()),
		"p50_ms", pct(t.lats, .50), "p99_ms", pct(t.lats, .99), "p999_ms", pct(t.lats, .999), "errors", t.nerr},
		append(extra, "server_cpu_s", t.serverCPU, "member_cpu_s", t.memberCPU, "bench_cpu_s", t.benchCPU)...)...)
}

// grantPhase is what grantMany saw.
type grantPhase struct {
	names   [][]string // per goroutine, for cleanup
	start   time.Time
	at      []time.Duration // when each acquire returned, after start; sorted
	lats    []time.Duration // sorted
	ttlMin  time.Duration   // shortest and longest duration granted
	ttlMax  time.Duration
	nerr    int
	lastErr error
}

func (p *grantPhase) granted() int    { return len(p.at) }
func (p *grantPhase) last() time.Time { return p.start.Add(p.at[len(p.at)-1]) }

// ttls describes the durations granted, for notes.
func (p *grantPhase) ttls() string {
	if p.ttlMin == p.ttlMax {
		return fmt.Sprintf("duration %v", p.ttlMin)
	}
	return fmt.Sprintf("durations %v to %v", p.ttlMin.Round(time.Millisecond), p.ttlMax.Round(time.Millisecond))
}

// granted is one lease that grantMany got.
type granted struct {
	g     int // goroutine, also the holder
	name  string
	token uint64
	ttl   time.Duration // the duration sent
	sent  time.Time     // before the acquire was sent
	done  time.Time     // when it returned
}

// ttlFunc gives the duration of an acquire about to be sent at sent. An
// error stops the grant phase: it means the leases still to come could
// not be what the workload measures.
type ttlFunc func(sent time.Time) (time.Duration, error)

// fixedTTL gives every acquire the duration d.
func fixedTTL(d time.Duration) ttlFunc {
	return func(time.Time) (time.Duration, error) { return d, nil }
}

// grantMany acquires n new leases named prefix-<run>-<i> with the durations
// of ttl (no grace) and labels, from workers goroutines as fast as they
// go, retrying failed acquires, within limit, and notes the phase on
// stderr. A retry asks ttl again, so the duration always fits the send
// time of the attempt that got the lease. each, when set, runs in the
// granting goroutine as each acquire returns. On error p holds what was
// granted.
func (b *bench) grantMany(ctx context.Context, prefix string, n, workers int, ttl ttlFunc, limit time.Duration,
	labels map[string]string, each func(granted)) (*grantPhase, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	p := &grantPhase{names: make([][]string, workers), start: time.Now(), ttlMin: math.MaxInt64}
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		next    atomic.Int64
		errs    errCount
		stopErr error // from ttl; guarded by mu
	)
	stop := func(err error) {
		mu.Lock()
		if stopErr == nil {
			stopErr = err
		}
		mu.Unlock()
		cancel()
	}
	for g := range workers {
		wg.Go(func() {
			var lats, at []time.Duration
			ttlMin, ttlMax := time.Duration(math.MaxInt64), time.Duration(0)
			for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
				name := fmt.Sprintf("%s-%s-%d", prefix, b.run, i)
				for ctx.Err() == nil {
					t := time.Now()
					d, err := ttl(t)
					if err != nil {
						stop(err)
						break
					}
					octx, ocancel := context.WithTimeout(ctx, 10*time.Second)
					resp, err := b.cli(g).Acquire(octx, b.cfg.namespace, name, b.holder(g), d, 0, labels)
					done := time.Now()
					ocancel()
					if err == nil && !resp.GetAcquired() {
						err = fmt.Errorf("%s is held by %q", name, resp.GetLease().GetHolderIdentity())
					}
					if err == nil {
						p.names[g] = append(p.names[g], name)
						lats, at = append(lats, done.Sub(t)), append(at, done.Sub(p.start))
						ttlMin, ttlMax = min(ttlMin, d), max(ttlMax, d)
						if each != nil {
							each(granted{g: g, name: name, token: resp.GetLease().GetFencingToken(), ttl: d, sent: t, done: done})
						}
						break
					}
					errs.add(err)
					time.Sleep(10 * time.Millisecond)
				}
			}
			mu.Lock()
			p.lats, p.at = append(p.lats, lats...), append(p.at, at...)
			p.ttlMin, p.ttlMax = min(p.ttlMin, ttlMin), max(p.ttlMax, ttlMax)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(p.lats)
	slices.Sort(p.at)
	if len(p.at) == 0 {
		p.ttlMin = 0
	}
	p.nerr, p.lastErr = errs.get()
	if stopErr != nil {
		return p, fmt.Errorf("%s: stopped after %d of %d leases: %w", prefix, len(p.at), n, stopErr)
	}
	if len(p.at) < n {
		return p, fmt.Errorf("%s: granted %d of %d leases within %v (%d errors, last: %v)",
			prefix, len(p.at), n, limit, p.nerr, p.lastErr)
	}
	took := p.at[n-1]
	note("%s: granted %d leases (%s) in %.2fs = %.0f/s from %d goroutines; "+
		"acquire p50 %.2f ms, p99 %.2f ms, p999 %.2f ms, max %.2f ms; %d errors (last: %v)",
		prefix, n, p.ttls(), took.Seconds(), float64(n)/took.Seconds(), workers,
		pct(p.lats, .50), pct(p.lats, .99), pct(p.lats, .999), pct(p.lats, 1), p.nerr, p.lastErr)
	return p, nil
}

// cleanup deletes a workload's leases outside any timing, unless
// --cleanup=false keeps them for a look afterwards.
func (b *bench) cleanup(ctx context.Context, names [][]string) {
	if b.cfg.cleanup {
		b.deleteAll(ctx, names)
	}
}

// deleteAll deletes leases, per goroutine in parallel. A lease that is
// gone already counts as deleted.
func (b *bench) deleteAll(ctx context.Context, names [][]string) {
	if ctx.Err() != nil {
		return
	}
	start, n := time.Now(), 0
	for _, ns := range names {
		n += len(ns)
	}
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, max(45*time.Second, time.Duration(n)*2*time.Millisecond))
	defer cancel()
	var failed atomic.Int64
	var wg sync.WaitGroup
	for g := range names {
		wg.Go(func() {
			for _, name := range names[g] {
				if _, err := b.cli(g).Delete(ctx, b.cfg.namespace, name); err != nil && !errors.Is(err, client.ErrNotFound) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	note("deleted %d leases in %.1fs (%d failed)", n, time.Since(start).Seconds(), failed.Load())
}
