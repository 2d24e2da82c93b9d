package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// oneShotWorker is a holder that renews the way a script does with
// `leasectl renew`: each attempt is one unary call on a connection of its
// own, dialled for it and closed after it, with no client library
// between. It holds a lease of its own (no one else asks for it), renews
// it every OneShotRenewEvery through a node that is not the leader (so
// every renewal is forwarded), and retries a renewal that was not
// answered (Unavailable, a timeout) on the next such node after
// OneShotRetryDelay, until it is answered or OneShotGiveUp has passed.
// Every attempt is in the history, tied to its renewal by Chain and
// Attempt, for the renewal-retry checker.
type oneShotWorker struct {
	w       *Workload
	process int
	holder  string
	lease   string
	rng     *rand.Rand
	addrs   []string
	// next is the endpoint to try first; it moves on after a failure.
	next int
	// token is the holding's, 0 when the worker holds nothing.
	token uint64
}

func (ow *oneShotWorker) run(ctx context.Context) {
	cfg := ow.w.cfg
	// Start apart, so the workers' renewals do not all fall together.
	sleep(ctx, time.Duration(ow.rng.Int64N(int64(cfg.OneShotRenewEvery)+1)))
	due := time.Now()
	for ctx.Err() == nil {
		if ow.token == 0 {
			ow.acquire()
		} else {
			ow.renew(ctx)
		}
		// The holder's period runs from the start of one renewal to the
		// next; a renewal that took longer is followed at once.
		due = due.Add(cfg.OneShotRenewEvery)
		if d := time.Until(due); d > 0 {
			sleep(ctx, d)
		} else {
			due = time.Now()
		}
	}
}

// endpoint returns the first endpoint from next on that is not the leader
// as the workload last saw it.
func (ow *oneShotWorker) endpoint() string {
	leader := ""
	if ow.w.cfg.Leader != nil {
		leader = ow.w.cfg.Leader()
	}
	for k := range ow.addrs {
		i := (ow.next + k) % len(ow.addrs)
		if ow.addrs[i] != leader {
			ow.next = i
			return ow.addrs[i]
		}
	}
	return ow.addrs[ow.next%len(ow.addrs)]
}

// attempt makes one call on a connection of its own and fills in the
// operation's times, node and outcome.
func (ow *oneShotWorker) attempt(op *history.Op, f func(ctx context.Context, c pb.LeasesClient) error) {
	addr := ow.endpoint()
	op.Process, op.Workload, op.Holder, op.Node = ow.process, history.WorkloadOneShot, ow.holder, addr
	ctx, cancel := context.WithTimeout(context.Background(), ow.w.cfg.OpTimeout)
	defer cancel()
	op.Call = ow.w.rec.Now()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err == nil {
		err = f(ctx, pb.NewLeasesClient(cc))
	}
	op.Return = ow.w.rec.Now()
	if cc != nil {
		cc.Close()
	}
	classify(op, err)
	if op.Type != history.OK {
		ow.next = (ow.next + 1) % len(ow.addrs)
	}
}

func (ow *oneShotWorker) acquire() {
	cfg := ow.w.cfg
	op := history.Op{Kind: history.Acquire, Lease: ow.lease, Duration: cfg.LeaseDuration}
	var resp *pb.AcquireResponse
	ow.attempt(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
		resp, err = c.Acquire(ctx, &pb.AcquireRequest{
			Namespace: cfg.Namespace, Name: ow.lease, HolderIdentity: ow.holder,
			LeaseDuration: durationpb.New(cfg.LeaseDuration),
		})
		return err
	})
	if op.Type == history.OK {
		op.Acquired, op.Renewed = resp.GetAcquired(), resp.GetRenewed()
		setLease(&op, resp.GetLease())
		if op.Acquired {
			ow.token = op.ResToken
		}
	}
	ow.w.rec.Add(op)
}

// renew renews the holding, retrying until the renewal is answered, the
// holding is refused as gone, OneShotGiveUp has passed, or ctx ends.
func (ow *oneShotWorker) renew(ctx context.Context) {
	cfg := ow.w.cfg
	chain := ow.w.chains.Add(1)
	start := time.Now()
	for attempt := 1; ; attempt++ {
		op := history.Op{Kind: history.Renew, Lease: ow.lease, Token: ow.token, Duration: cfg.LeaseDuration, Chain: chain, Attempt: attempt}
		var resp *pb.RenewResponse
		ow.attempt(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
			resp, err = c.Renew(ctx, &pb.RenewRequest{Namespace: cfg.Namespace, Name: ow.lease, HolderIdentity: ow.holder, FencingToken: ow.token})
			return err
		})
		if op.Type == history.OK {
			setLease(&op, resp.GetLease())
		}
		ow.w.rec.Add(op)
		switch {
		case op.Type == history.OK:
			return
		case op.ErrClass == history.ErrStale || op.ErrClass == history.ErrNotFound:
			ow.w.logf("workload: one-shot holder %s lost %s (token %d): %s", ow.holder, ow.lease, ow.token, op.Err)
			ow.token = 0
			return
		case ctx.Err() != nil || time.Since(start) >= cfg.OneShotGiveUp:
			return
		}
		sleep(ctx, cfg.OneShotRetryDelay)
	}
}

func oneShotLease(i int) string { return fmt.Sprintf("oneshot-%d", i) }
