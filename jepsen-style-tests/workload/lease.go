package workload

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// leaseWorker makes raw lease calls, one gRPC attempt per operation, so
// each recorded outcome is exactly what one request did: the Go client's
// internal retries would hide a first attempt that took effect behind a
// second one's answer. After a failed attempt it moves to the next node.
type leaseWorker struct {
	w       *Workload
	process int
	holder  string
	rng     *rand.Rand
	conns   []pb.LeasesClient
	addrs   []string
	cur     int
	// held is the token of each lease this worker believes it holds.
	held map[string]uint64
	// old remembers the last token per lease, to renew with a stale one
	// now and then.
	old map[string]uint64
}

func (lw *leaseWorker) run(ctx context.Context) {
	cfg := lw.w.cfg
	for ctx.Err() == nil {
		lease := cfg.leaseNames()[lw.rng.IntN(cfg.Leases)]
		tok, held := lw.held[lease]
		switch r := lw.rng.IntN(100); {
		case r < 35:
			lw.acquire(lease)
		case r < 55 && held:
			lw.renew(lease, tok)
		case r < 55 && lw.old[lease] != 0:
			lw.renew(lease, lw.old[lease])
		case r < 70 && held:
			lw.release(lease, tok)
		default:
			lw.get(lease)
		}
		sleep(ctx, cfg.ThinkMin+time.Duration(lw.rng.Int64N(int64(cfg.ThinkMax-cfg.ThinkMin)+1)))
	}
}

// call runs one attempt against the current node and fills in the
// operation's times, node and outcome.
func (lw *leaseWorker) call(op *history.Op, f func(ctx context.Context, c pb.LeasesClient) error) {
	ctx, cancel := context.WithTimeout(context.Background(), lw.w.cfg.OpTimeout)
	defer cancel()
	i := lw.cur
	op.Process, op.Workload, op.Holder = lw.process, history.WorkloadLease, lw.holder
	op.Node = lw.addrs[i]
	op.Call = lw.w.rec.Now()
	err := f(ctx, lw.conns[i])
	op.Return = lw.w.rec.Now()
	classify(op, err)
	if op.ErrClass == history.ErrUnavailable || op.ErrClass == history.ErrTimeout || op.ErrClass == history.ErrNotSent || op.ErrClass == history.ErrOther {
		lw.cur = (lw.cur + 1) % len(lw.conns)
	}
}

// classify sets an operation's outcome from a gRPC error.
func classify(op *history.Op, err error) {
	if err == nil {
		op.Type = history.OK
		return
	}
	op.Err = err.Error()
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.FailedPrecondition:
		op.Type, op.ErrClass = history.Fail, history.ErrStale
	case codes.NotFound:
		op.Type, op.ErrClass = history.Fail, history.ErrNotFound
	case codes.Unavailable:
		// A call that never reached any server (the client, or the node
		// forwarding it, could not connect) certainly did nothing.
		if strings.Contains(st.Message(), "while dialing") || strings.Contains(st.Message(), "connection refused") {
			op.Type, op.ErrClass = history.Fail, history.ErrNotSent
		} else {
			op.Type, op.ErrClass = history.Info, history.ErrUnavailable
		}
	case codes.DeadlineExceeded, codes.Canceled:
		op.Type, op.ErrClass = history.Info, history.ErrTimeout
	default:
		op.Type, op.ErrClass = history.Info, history.ErrOther
	}
	// A read that failed changed nothing.
	if op.Type == history.Info && !op.Mutating() {
		op.Type = history.Fail
	}
}

func setLease(op *history.Op, l *pb.Lease) {
	if l == nil {
		return
	}
	op.ResFound = true
	op.ResHolder = l.GetHolderIdentity()
	op.ResToken = l.GetFencingToken()
	op.ResTransitions = l.GetLeaseTransitions()
}

func (lw *leaseWorker) acquire(lease string) {
	cfg := lw.w.cfg
	op := history.Op{Kind: history.Acquire, Lease: lease, Duration: cfg.LeaseDuration}
	var resp *pb.AcquireResponse
	lw.call(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
		resp, err = c.Acquire(ctx, &pb.AcquireRequest{
			Namespace: cfg.Namespace, Name: lease, HolderIdentity: lw.holder,
			LeaseDuration: durationpb.New(cfg.LeaseDuration),
		})
		return err
	})
	if op.Type == history.OK {
		op.Acquired, op.Renewed = resp.GetAcquired(), resp.GetRenewed()
		setLease(&op, resp.GetLease())
		if op.Acquired {
			lw.held[lease] = op.ResToken
			lw.old[lease] = op.ResToken
		} else {
			delete(lw.held, lease)
		}
	}
	lw.w.rec.Add(op)
}

func (lw *leaseWorker) renew(lease string, token uint64) {
	cfg := lw.w.cfg
	op := history.Op{Kind: history.Renew, Lease: lease, Token: token, Duration: cfg.LeaseDuration}
	var resp *pb.RenewResponse
	lw.call(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
		resp, err = c.Renew(ctx, &pb.RenewRequest{Namespace: cfg.Namespace, Name: lease, HolderIdentity: lw.holder, FencingToken: token})
		return err
	})
	switch op.Type {
	case history.OK:
		setLease(&op, resp.GetLease())
	case history.Fail:
		if op.ErrClass == history.ErrStale || op.ErrClass == history.ErrNotFound {
			if lw.held[lease] == token {
				delete(lw.held, lease)
			}
		}
	}
	lw.w.rec.Add(op)
}

func (lw *leaseWorker) release(lease string, token uint64) {
	cfg := lw.w.cfg
	op := history.Op{Kind: history.Release, Lease: lease, Token: token}
	var resp *pb.ReleaseResponse
	lw.call(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
		resp, err = c.Release(ctx, &pb.ReleaseRequest{Namespace: cfg.Namespace, Name: lease, HolderIdentity: lw.holder, FencingToken: token})
		return err
	})
	if op.Type == history.OK {
		setLease(&op, resp.GetLease())
	}
	if op.Type != history.Info {
		delete(lw.held, lease)
	}
	lw.w.rec.Add(op)
}

func (lw *leaseWorker) get(lease string) {
	cfg := lw.w.cfg
	op := history.Op{Kind: history.Get, Lease: lease}
	var resp *pb.GetResponse
	lw.call(&op, func(ctx context.Context, c pb.LeasesClient) (err error) {
		resp, err = c.Get(ctx, &pb.GetRequest{Namespace: cfg.Namespace, Name: lease})
		return err
	})
	if op.Type == history.OK {
		setLease(&op, resp.GetLease())
	}
	// A get carries no holder argument.
	op.Holder = ""
	lw.w.rec.Add(op)
}

func dialAll(addrs []string, opts ...grpc.DialOption) ([]*grpc.ClientConn, error) {
	var out []*grpc.ClientConn
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, opts...)
		if err != nil {
			for _, c := range out {
				c.Close()
			}
			return nil, err
		}
		out = append(out, cc)
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
