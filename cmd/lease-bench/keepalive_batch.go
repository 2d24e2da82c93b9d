package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// kaLease is one lease that keepalive_batch holds.
type kaLease struct {
	name     string
	token    uint64
	lastSent time.Time // send time of the last successful renewal (or the acquire)
	lastOK   time.Time // when that renewal was answered
	lost     bool      // answered NotFound or FailedPrecondition
}

// kaHolder is one goroutine's leases, renewed through its own KeepAlive
// stream. The granting goroutine appends; only the renewer touches the
// leases themselves.
type kaHolder struct {
	g      int
	mu     sync.Mutex
	leases []*kaLease
}

func (h *kaHolder) add(l *kaLease) {
	h.mu.Lock()
	h.leases = append(h.leases, l)
	h.mu.Unlock()
}

func (h *kaHolder) snapshot() []*kaLease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.leases[:len(h.leases):len(h.leases)]
}

// kaStats is what the renewers count.
type kaStats struct {
	from, to   atomic.Int64 // the measured window, unix ns (0: not yet / open)
	renewed    atomic.Int64 // OK answers in the window
	lost       atomic.Int64 // NotFound or FailedPrecondition answers, any time
	other      atomic.Int64 // other per-lease codes, any time
	streamErrs atomic.Int64
	messages   atomic.Int64 // answered in the window
	lastErr    atomic.Value // error
	gaps       latencies    // time between one lease's answers, second one in the window
	rtts       latencies    // KeepAlive message round trips sent in the window
}

func (s *kaStats) inWindow(t time.Time) bool {
	ns, from, to := t.UnixNano(), s.from.Load(), s.to.Load()
	return from != 0 && ns >= from && (to == 0 || ns <= to)
}

// keepaliveBatch: --ka-leases leases (duration --ka-ttl), spread over the
// --clients goroutines; each goroutine acquires its share and renews them
// through its own KeepAlive stream, up to --ka-batch leases per message,
// every --ka-interval (ka-ttl/3 by default, like etcd's clientv3 does), a
// quarter interval early when a message goes anyway. Renewal starts while
// the grants are still going, as in etcdpeer. A negative --ka-interval
// renews back to back during the window, to find the ceiling rather than
// hold a rate. After the grants it measures
// a window of max(--duration, 3 intervals): renewals/s, the gap between one
// lease's renewals (p50_ms..., as etcdpeer), message round trips (rtt_*),
// and whether any lease was lost: an answer NotFound/FailedPrecondition, no
// renewal for longer than its duration (expired_local), or a sample of
// 1000 read back from the leader no longer ours.
func (b *bench) keepaliveBatch(ctx context.Context) error {
	n, interval := b.cfg.kaLeases, b.cfg.kaInterval
	holders := make([]*kaHolder, b.cfg.clients)
	for g := range holders {
		holders[g] = &kaHolder{g: g}
	}
	st := &kaStats{}
	var wg sync.WaitGroup
	defer wg.Wait()
	rctx, stopRenewing := context.WithCancel(ctx)
	defer stopRenewing() // before wg.Wait
	for _, h := range holders {
		wg.Go(func() { b.renewLoop(rctx, h, st) })
	}
	gp, err := b.grantMany(ctx, "kab", n, b.cfg.clients, fixedTTL(b.cfg.kaTTL), b.cfg.phaseWait, nil, func(gr granted) {
		holders[gr.g].add(&kaLease{name: gr.name, token: gr.token, lastSent: gr.sent, lastOK: gr.done})
	})
	if err != nil || ctx.Err() != nil {
		stopRenewing()
		wg.Wait()
		b.cleanup(ctx, gp.names)
		return err
	}

	window := b.cfg.duration
	if interval > 0 {
		window = max(window, 3*interval)
	}
	note("keepalive_batch: window of %v from now; load average %s", window, loadavg())
	cpu0, self0 := b.c.cpu(), procCPU(os.Getpid())
	t0 := time.Now()
	st.from.Store(t0.UnixNano())
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return ctx.Err()
	}
	t1 := time.Now()
	st.to.Store(t1.UnixNano())
	memberCPU, server := cpuSince(cpu0, b.c.cpu())
	_, self := cpuSince([]float64{self0}, []float64{procCPU(os.Getpid())})
	stopRenewing()
	wg.Wait()

	// Did any lease lapse? Locally: a lease unrenewed for longer than its
	// duration. On the server: a sample read back from the leader.
	var all []*kaLease
	var owner []int
	expiredLocal := 0
	now := time.Now()
	for _, h := range holders {
		for _, l := range h.snapshot() {
			all, owner = append(all, l), append(owner, h.g)
			if !l.lost && now.Sub(l.lastSent) > b.cfg.kaTTL {
				expiredLocal++
			}
		}
	}
	lead, err := b.findLeader(ctx)
	if err != nil {
		return err
	}
	k := min(1000, len(all))
	notOurs, readErrs := 0, 0
	for i := range k {
		j := i * len(all) / k
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := b.nodeCl[lead].Get(gctx, b.cfg.namespace, all[j].name, false)
		cancel()
		switch {
		case err != nil:
			readErrs++
		case resp.GetLease().GetHolderIdentity() != b.holder(owner[j]) || resp.GetLease().GetFencingToken() != all[j].token:
			notOurs++
		}
	}
	streamsOnLeader := 0
	for g := range holders {
		if b.cfg.leaderOnly || (g%len(b.clis))%len(b.c.nodes) == lead {
			streamsOnLeader++
		}
	}
	if e, ok := st.lastErr.Load().(error); ok || readErrs > 0 {
		note("keepalive_batch: %d stream errors, %d other per-lease codes (last error: %v); %d sample read errors",
			st.streamErrs.Load(), st.other.Load(), e, readErrs)
	}
	secs := t1.Sub(t0).Seconds()
	gaps, rtts := st.gaps.sorted(), st.rtts.sorted()
	targetPerS := 0.0
	if interval > 0 {
		targetPerS = round1(float64(n) / interval.Seconds())
	}
	lost := st.lost.Load()
	emit("system", "leasekeeper", "workload", "keepalive_batch", "clients", b.cfg.clients, "ops", st.renewed.Load(),
		"ops_per_s", round1(float64(st.renewed.Load())/secs),
		"p50_ms", pct(gaps, .50), "p99_ms", pct(gaps, .99), "p999_ms", pct(gaps, .999), "pct_of", "renewal_gap",
		"errors", int64(gp.nerr)+st.streamErrs.Load()+st.other.Load()+int64(readErrs),
		"leases", n, "ttl_s", round2(b.cfg.kaTTL.Seconds()), "interval_s", round2(interval.Seconds()),
		"streams", len(holders), "streams_on_leader", streamsOnLeader, "batch", b.cfg.kaBatch,
		"window_s", round2(secs), "target_per_s", targetPerS, "renewals_per_s", round1(float64(st.renewed.Load())/secs),
		"messages", st.messages.Load(), "rtt_p50_ms", pct(rtts, .50), "rtt_p99_ms", pct(rtts, .99), "rtt_p999_ms", pct(rtts, .999),
		"lease_expired", lost > 0 || expiredLocal > 0 || notOurs > 0, "lost", lost, "expired_local", expiredLocal,
		"sample", k, "expired_in_sample", notOurs,
		"server_cpu_s", server, "member_cpu_s", memberCPU, "leader", b.nodeName(lead), "bench_cpu_s", self)
	b.cleanup(ctx, gp.names)
	return nil
}

// renewLoop renews h's due leases through one KeepAlive stream, a message
// at a time (the server answers a stream's messages in order, one Raft
// entry each), until ctx is done. A broken stream is opened again after
// 100ms; its leases stay due.
func (b *bench) renewLoop(ctx context.Context, h *kaHolder, st *kaStats) {
	var (
		stream     *kaStream
		id         uint64
		gaps, rtts []time.Duration
	)
	defer func() {
		if stream != nil {
			stream.cancel()
		}
		st.gaps.merge(gaps)
		st.rtts.merge(rtts)
	}()
	broken := func(err error) {
		if ctx.Err() == nil {
			st.streamErrs.Add(1)
			st.lastErr.Store(err)
		}
		if stream != nil {
			stream.cancel()
		}
		stream = nil
		sleep(ctx, 100*time.Millisecond)
	}
	for ctx.Err() == nil {
		interval := b.cfg.kaInterval
		if interval <= 0 && st.from.Load() == 0 {
			interval = b.cfg.kaTTL / 3 // back to back only in the window: let the grants through
		}
		now := time.Now()
		next := now.Add(200 * time.Millisecond) // new leases may arrive meanwhile
		var due, soon []*kaLease
		for _, l := range h.snapshot() {
			if l.lost {
				continue
			}
			switch at := l.lastSent.Add(interval); {
			case interval <= 0 || !at.After(now):
				due = append(due, l)
			case !at.After(now.Add(interval / 4)):
				soon = append(soon, l) // renewed early if a message goes anyway
			case at.Before(next):
				next = at
			}
		}
		if len(due) == 0 {
			for _, l := range soon {
				if at := l.lastSent.Add(interval); at.Before(next) {
					next = at
				}
			}
			sleep(ctx, time.Until(next))
			continue
		}
		due = append(due, soon...)
		for len(due) > 0 && ctx.Err() == nil {
			if stream == nil {
				s, err := openKeepAlive(ctx, b.cli(h.g))
				if err != nil {
					broken(err)
					break
				}
				stream = s
			}
			chunk := due[:min(len(due), b.cfg.kaBatch)]
			due = due[len(chunk):]
			id++
			req := &pb.KeepAliveRequest{Id: id, Leases: make([]*pb.LeaseRef, len(chunk))}
			for i, l := range chunk {
				req.Leases[i] = &pb.LeaseRef{Namespace: b.cfg.namespace, Name: l.name, HolderIdentity: b.holder(h.g), FencingToken: l.token}
			}
			sent := time.Now()
			if err := stream.Send(req); err != nil {
				broken(err)
				break
			}
			resp, err := stream.Recv()
			if err != nil {
				broken(err)
				break
			}
			recv := time.Now()
			if resp.GetId() != id || len(resp.GetResults()) != len(chunk) {
				broken(fmt.Errorf("keepalive answer %d with %d results for message %d of %d leases",
					resp.GetId(), len(resp.GetResults()), id, len(chunk)))
				break
			}
			window := st.inWindow(recv)
			if st.inWindow(sent) {
				rtts = append(rtts, recv.Sub(sent))
			}
			if window {
				st.messages.Add(1)
			}
			var renewed, others int64
			for i, r := range resp.GetResults() {
				l := chunk[i]
				switch codes.Code(r.GetCode()) {
				case codes.OK:
					if window {
						renewed++
						gaps = append(gaps, recv.Sub(l.lastOK))
					}
					l.lastSent, l.lastOK = sent, recv
				case codes.NotFound, codes.FailedPrecondition:
					l.lost = true
					st.lost.Add(1)
				default: // stays due: retried with the next message
					others++
					st.lastErr.Store(fmt.Errorf("%s: %s: %s", l.name, codes.Code(r.GetCode()), r.GetMessage()))
				}
			}
			st.renewed.Add(renewed)
			if others > 0 {
				st.other.Add(others)
				sleep(ctx, 10*time.Millisecond) // do not spin on a server that refuses
			}
		}
	}
}

// kaStream is a KeepAlive stream with the cancel that ends it.
type kaStream struct {
	pb.Leases_KeepAliveClient
	cancel context.CancelFunc
}

func openKeepAlive(ctx context.Context, cl *client.Client) (*kaStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := cl.Leases().KeepAlive(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &kaStream{s, cancel}, nil
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
