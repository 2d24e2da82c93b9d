package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// expiryStorm: acquire --leases leases with one duration (--storm-ttl, no
// grace) as fast as the goroutines go, renew none, and watch the leader for
// their EXPIRED events until all have come or --phase-limit past the last
// deadline. A lease's deadline is taken as its acquire's return plus the
// duration (the leader's deadline is no later), so lateness is the time
// from that to the moment the bench saw its EXPIRED event: exact per
// lease, where etcdpeer can only estimate it from lease counts. It can be
// slightly negative: the leader's clock starts at apply, before the answer
// travels. expired_early counts events seen before the acquire's send
// time plus the duration, which the client's deadline rule forbids.
func (b *bench) expiryStorm(ctx context.Context) error {
	n, ttl := b.cfg.leases, b.cfg.stormTTL
	const labelKey = "lease-bench-storm"
	selector := labelKey + "=" + b.run
	lead, err := b.findLeader(ctx)
	if err != nil {
		return err
	}
	w := &expiryWatch{cl: b.nodeCl[lead], namespace: b.cfg.namespace, selector: selector, expired: map[string]time.Time{}}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	list, err := w.cl.List(lctx, &pb.ListRequest{Namespace: w.namespace, LabelSelector: selector})
	cancel()
	if err != nil {
		return fmt.Errorf("list before the storm: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { w.run(wctx, list.GetRevision()) })

	var mu sync.Mutex
	deadline := make(map[string]time.Time, n) // from the acquire's return: no earlier than the leader's
	floor := make(map[string]time.Time, n)    // from its send: no expiry may come before this
	gp, err := b.grantMany(ctx, "storm", n, b.cfg.clients, ttl, b.cfg.phaseWait, map[string]string{labelKey: b.run}, func(gr granted) {
		mu.Lock()
		deadline[gr.name], floor[gr.name] = gr.done.Add(ttl), gr.sent.Add(ttl)
		mu.Unlock()
	})
	defer b.cleanup(ctx, gp.names)
	if err != nil {
		return err
	}

	// Nothing is renewed from here on: wait for every expiry.
	note("expiry_storm: waiting for the expiries; load average %s", loadavg())
	cpu0 := b.c.cpu()
	giveUp := gp.last().Add(ttl + b.cfg.phaseWait)
	for w.count() < n && time.Now().Before(giveUp) && ctx.Err() == nil {
		sleep(ctx, 50*time.Millisecond)
	}
	member, server := cpuSince(cpu0, b.c.cpu())
	stopWatch()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	var late []time.Duration
	var at []time.Time // expiry times seen
	lastSeen, early := time.Time{}, 0
	for name, t := range w.expired {
		if d, ok := deadline[name]; ok {
			if t.Before(floor[name]) {
				early++ // the leader expired it before a full duration from the acquire's send
			}
			late = append(late, t.Sub(d))
			at = append(at, t)
			if t.After(lastSeen) {
				lastSeen = t
			}
		}
	}
	slices.Sort(late)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	gone := len(at)
	left := n - gone
	var drain any // null when some never expired
	if left == 0 {
		drain = ms(lastSeen.Sub(gp.last().Add(ttl)))
	}
	expiredPerS := 0.0
	if gone > 0 {
		expiredPerS = round1(float64(gone) / lastSeen.Sub(gp.first().Add(ttl)).Seconds())
	}
	// remaining[k]: leases not yet seen expired at t_last + k s.
	var remaining []int
	for k, j := 0, 0; ; k++ {
		t := gp.last().Add(time.Duration(k) * time.Second)
		for j < len(at) && !at[j].After(t) {
			j++
		}
		remaining = append(remaining, n-j)
		if j == len(at) {
			break
		}
	}
	if w.resumes > 0 || w.lastErr != nil {
		note("expiry_storm: the watch was resumed %d times (%d by a re-list); last break: %v", w.resumes, w.relists, w.lastErr)
	}
	emit("system", "leasekeeper", "workload", "expiry_storm", "clients", b.cfg.clients, "ops", gone, "ops_per_s", expiredPerS,
		"p50_ms", pct(late, .50), "p99_ms", pct(late, .99), "p999_ms", pct(late, .999), "pct_of", "expiry_lateness",
		"errors", gp.nerr, "leases", n, "ttl_s", round2(ttl.Seconds()), "grant_s", round2(gp.at[n-1].Seconds()),
		"drain_ms", drain, "expired_per_s", expiredPerS, "left", left, "late_max_ms", pct(late, 1), "expired_early", early,
		"server_cpu_s", server, "member_cpu_s", member, "remaining", remaining,
		"watch_resumes", w.resumes, "watch_relists", w.relists)
	return nil
}

// expiryWatch records when the bench saw each lease's EXPIRED event.
type expiryWatch struct {
	cl        *client.Client
	namespace string
	selector  string

	mu      sync.Mutex
	expired map[string]time.Time
	resumes int // streams opened again after a break
	relists int // of those, after the revision had left the server's window
	lastErr error
}

func (w *expiryWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.expired)
}

func (w *expiryWatch) saw(name string, t time.Time) {
	w.mu.Lock()
	if _, ok := w.expired[name]; !ok {
		w.expired[name] = t
	}
	w.mu.Unlock()
}

// run watches from rev until ctx is done. A broken stream (a watcher that
// falls behind is dropped by the server) resumes from the last revision
// seen; when that has left the server's window, a re-list counts every
// free lease as expired now (an upper bound) and the watch goes on from
// the list's revision.
func (w *expiryWatch) run(ctx context.Context, rev uint64) {
	for ctx.Err() == nil {
		stream, err := w.cl.Watch(ctx, &pb.WatchRequest{Namespace: w.namespace, LabelSelector: w.selector, StartRevision: rev})
		for err == nil {
			var ev *pb.WatchEvent
			if ev, err = stream.Recv(); err == nil {
				rev = ev.GetRevision()
				if ev.GetType() == pb.WatchEvent_EXPIRED {
					w.saw(ev.GetLease().GetName(), time.Now())
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		w.resumes++
		w.lastErr = err
		w.mu.Unlock()
		if status.Code(err) == codes.OutOfRange {
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			list, lerr := w.cl.List(lctx, &pb.ListRequest{Namespace: w.namespace, LabelSelector: w.selector})
			cancel()
			if lerr == nil {
				now := time.Now()
				for _, l := range list.GetLeases() {
					if l.GetHolderIdentity() == "" {
						w.saw(l.GetName(), now)
					}
				}
				rev = list.GetRevision()
				w.mu.Lock()
				w.relists++
				w.mu.Unlock()
			}
		}
		sleep(ctx, 10*time.Millisecond)
	}
}
