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

// Where expiry_storm puts its common deadline.
const (
	stormMinLeft  = time.Second // no grant is sent closer to the deadline: it might apply after it
	stormMargin   = 1.5         // on the pilot's estimate of the grant phase
	stormPilotMax = 2000        // leases in the pilot, at most (and 2% of --leases, at least 200)
	stormPilotTTL = time.Minute // the pilot's leases are deleted long before
)

// expiryStorm: acquire --leases leases that all end at one common instant
// T, renew none, and watch for their EXPIRED events until all have come or
// --phase-limit past the last deadline. The watch is on a follower when
// there is one: it applies each Expire at or after the leader does, so
// lateness is not understated, and sending the events (a third of the
// leader's CPU in a 100k storm) stays off the node that decides expiry. T
// lies --storm-at after the grants start, or far enough that the grants end
// about --storm-ttl before it at the rate a pilot measured. Each acquire
// asks for T minus its send time, so the leader's deadline (its apply plus
// the duration) lands on T, late by the time from send to apply. A lease's
// deadline is taken as its acquire's return plus the duration (the leader's
// is no later), so lateness is the time from that to the moment the bench
// saw its EXPIRED event: exact per lease, where etcdpeer can only estimate
// it from lease counts. It can be slightly negative: the leader's clock
// starts at apply, before the answer travels. expired_early counts events
// seen before the acquire's send time plus the duration (T), which the
// client's deadline rule forbids. drain_ms runs from T, so it holds the
// spread of the deadlines too (deadline_spread_ms).
func (b *bench) expiryStorm(ctx context.Context) error {
	n := b.cfg.leases
	lead, pilotPerS, err := b.stormLead(ctx, n)
	if err != nil {
		return err
	}
	const labelKey = "lease-bench-storm"
	selector := labelKey + "=" + b.run
	leader, err := b.findLeader(ctx)
	if err != nil {
		return err
	}
	watched := leader
	for i := range b.nodeCl {
		if i != leader && b.c.alive(i) {
			watched = i
			break
		}
	}
	w := &expiryWatch{cl: b.nodeCl[watched], namespace: b.cfg.namespace, selector: selector, expired: map[string]time.Time{}}
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	list, err := w.cl.List(lctx, &pb.ListRequest{Namespace: w.namespace, LabelSelector: selector})
	cancel()
	if err != nil {
		return fmt.Errorf("list before the storm: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// One defer, in this order: waiting before the stop would hang every
	// early return.
	defer func() {
		stopWatch()
		wg.Wait()
	}()
	wg.Go(func() { w.run(wctx, list.GetRevision()) })

	var mu sync.Mutex
	s := stormLeases{deadline: make(map[string]time.Time, n), floor: make(map[string]time.Time, n)}
	s.at = time.Now().Add(lead)
	gp, err := b.grantMany(ctx, "storm", n, b.cfg.clients, untilDeadline(s.at), b.cfg.phaseWait, map[string]string{labelKey: b.run}, func(gr granted) {
		mu.Lock()
		s.deadline[gr.name], s.floor[gr.name] = gr.done.Add(gr.ttl), gr.sent.Add(gr.ttl)
		mu.Unlock()
	})
	defer b.cleanup(ctx, gp.names)
	if err != nil {
		return err
	}

	// Nothing is renewed from here on: wait for every expiry.
	note("expiry_storm: the common deadline is %.2fs after the last grant; waiting for the expiries; load average %s",
		s.at.Sub(gp.last()).Seconds(), loadavg())
	cpu0 := b.c.cpu()
	first, latest := s.spread()
	giveUp := latest.Add(b.cfg.phaseWait)
	for w.count() < n && time.Now().Before(giveUp) && ctx.Err() == nil {
		sleep(ctx, 50*time.Millisecond)
	}
	member, server := cpuSince(cpu0, b.c.cpu())
	stopWatch()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	r := s.result(w.expired, n)
	if w.resumes > 0 || w.lastErr != nil {
		note("expiry_storm: the watch was resumed %d times (%d by a re-list); last break: %v", w.resumes, w.relists, w.lastErr)
	}
	emit("system", "leasekeeper", "workload", "expiry_storm", "clients", b.cfg.clients, "ops", r.gone, "ops_per_s", r.expiredPerS,
		"p50_ms", pct(r.late, .50), "p99_ms", pct(r.late, .99), "p999_ms", pct(r.late, .999), "pct_of", "expiry_lateness",
		"errors", gp.nerr, "leases", n, "ttl_s", round2(gp.ttlMin.Seconds()), "ttl_max_s", round2(gp.ttlMax.Seconds()),
		"grant_s", round2(gp.at[n-1].Seconds()), "deadline_s", round2(s.at.Sub(gp.start).Seconds()), "pilot_per_s", pilotPerS,
		"deadline_spread_ms", ms(latest.Sub(first)), "first_ms", r.first, "drain_ms", r.drain, "drain_from", "common_deadline",
		"expired_per_s", r.expiredPerS, "left", n-r.gone, "late_max_ms", pct(r.late, 1), "expired_early", r.early,
		"server_cpu_s", server, "member_cpu_s", member, "remaining", r.remaining,
		"watch_resumes", w.resumes, "watch_relists", w.relists)
	return nil
}

// stormLead returns how long after the grants start the common deadline
// lies: --storm-at, or from a pilot's grant rate (returned too, nil
// without a pilot).
func (b *bench) stormLead(ctx context.Context, n int) (time.Duration, any, error) {
	if b.cfg.stormAt > 0 {
		return b.cfg.stormAt, nil, nil
	}
	perS, err := b.stormPilot(ctx, n)
	if err != nil {
		return 0, nil, err
	}
	grants := time.Duration(stormMargin * float64(n) / perS * float64(time.Second))
	if grants > b.cfg.phaseWait {
		return 0, nil, fmt.Errorf("at the pilot's %.0f grants/s, %d leases need about %v with the margin, over --phase-limit %v",
			perS, n, grants.Round(time.Second), b.cfg.phaseWait)
	}
	lead := grants + b.cfg.stormTTL
	note("expiry_storm: pilot %.0f grants/s; the common deadline lies %v after the grants start (%v for the grants + --storm-ttl)",
		perS, lead.Round(time.Millisecond), grants.Round(time.Millisecond))
	return lead, round1(perS), nil
}

// stormPilot grants a few leases at the storm's concurrency and returns
// the rate. Its leases are deleted at once, whatever --cleanup says: they
// are not part of the result, and must not expire during the storm.
func (b *bench) stormPilot(ctx context.Context, n int) (float64, error) {
	k := min(n, max(200, min(n/50, stormPilotMax)))
	gp, err := b.grantMany(ctx, "storm-pilot", k, b.cfg.clients, fixedTTL(stormPilotTTL), b.cfg.phaseWait, nil, nil)
	defer b.deleteAll(ctx, gp.names)
	if err != nil {
		return 0, err
	}
	return float64(k) / gp.at[k-1].Seconds(), nil
}

// untilDeadline gives each acquire the time from its send to at. Both
// carry monotonic readings, so a step of the bench machine's wall clock
// does not move the deadline.
func untilDeadline(at time.Time) ttlFunc {
	return func(sent time.Time) (time.Duration, error) {
		left := at.Sub(sent)
		if left < stormMinLeft {
			return 0, fmt.Errorf("a grant would be sent %v before the common deadline (at least %v): "+
				"the grants ran slower than planned; give them more time (--storm-ttl, or --storm-at)", left.Round(time.Millisecond), stormMinLeft)
		}
		return left, nil
	}
}

// stormLeases is what the bench knows of the storm's leases.
type stormLeases struct {
	at       time.Time            // the common deadline
	deadline map[string]time.Time // from the acquire's return: no earlier than the leader's
	floor    map[string]time.Time // from its send: no expiry may come before this
}

// spread returns the earliest and the latest per-lease deadline.
func (s *stormLeases) spread() (first, last time.Time) {
	for _, d := range s.deadline {
		if first.IsZero() || d.Before(first) {
			first = d
		}
		if d.After(last) {
			last = d
		}
	}
	return first, last
}

// stormResult is what the expiries seen say.
type stormResult struct {
	gone        int
	early       int             // seen before their floor
	late        []time.Duration // sorted
	first       any             // ms from the common deadline to the first expiry seen; null if none
	drain       any             // ms from the common deadline to the last; null when some never expired
	expiredPerS float64         // over the drain
	remaining   []int           // leases not yet seen expired at the common deadline + k s
}

func (s *stormLeases) result(expired map[string]time.Time, n int) stormResult {
	var r stormResult
	var at []time.Time // expiry times seen
	for name, t := range expired {
		d, ok := s.deadline[name]
		if !ok {
			continue
		}
		if t.Before(s.floor[name]) {
			r.early++ // the leader expired it before a full duration from the acquire's send
		}
		r.late = append(r.late, t.Sub(d))
		at = append(at, t)
	}
	slices.Sort(r.late)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	r.gone = len(at)
	if r.gone == 0 {
		return r
	}
	r.first = ms(at[0].Sub(s.at))
	lastSeen := at[len(at)-1]
	if r.gone == n {
		r.drain = ms(lastSeen.Sub(s.at))
	}
	if d := lastSeen.Sub(s.at); d > 0 {
		r.expiredPerS = round1(float64(r.gone) / d.Seconds())
	}
	for k, j := 0, 0; ; k++ {
		t := s.at.Add(time.Duration(k) * time.Second)
		for j < len(at) && !at[j].After(t) {
			j++
		}
		r.remaining = append(r.remaining, n-j)
		if j == len(at) {
			break
		}
	}
	return r
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
