package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// Acquire takes a free lease, renews the caller's own holding, or reports
// the current holder (acquired=false).
func (s *Server) Acquire(ctx context.Context, req *pb.AcquireRequest) (*pb.AcquireResponse, error) {
	ns, err := validateKey(req.Namespace, req.Name)
	if err != nil {
		return nil, invalidErr(err)
	}
	t, err := s.acquireTerms(req.HolderIdentity, req.LeaseDuration, req.GracePeriod, req.LockDelay, req.Labels)
	if err != nil {
		return nil, invalidErr(err)
	}
	dur, grace, lockDelay := t.dur, t.grace, t.lockDelay
	if !s.node.IsLeader() {
		// An acquire by the holder is a renewal, and a waiter already
		// queued keeps its place: safe to send twice.
		o := fwd{retry: true}
		if req.Wait {
			o.wait = dur / 3 // the leader's long poll
		}
		return forward(ctx, s, o, func(ctx context.Context, c pb.LeasesClient) (*pb.AcquireResponse, error) {
			return c.Acquire(ctx, req)
		})
	}
	// Only the leader knows whether this creates the lease or updates it;
	// with auth off there is nothing to decide, so no lookup.
	if s.cfg.Auth.Enabled() {
		_, exists := s.node.FSM().Get(ns, req.Name)
		if err := s.cfg.Auth.AuthorizeContext(ctx, auth.AcquireVerb(exists), ns, req.Name); err != nil {
			return nil, err
		}
	}
	cmd := &fsmpb.Acquire{
		Namespace: ns, Name: req.Name, Holder: req.HolderIdentity,
		DurationNs: int64(dur), GraceNs: int64(grace), Labels: req.Labels, Wait: req.Wait,
		MaxWaiters: uint32(s.cfg.MaxWaiters), LockDelayNs: int64(lockDelay),
	}
	if req.Wait {
		if err := s.queueFull(ns, req.Name, req.HolderIdentity); err != nil {
			return nil, err
		}
		return s.acquireWait(ctx, cmd, dur)
	}
	res, err := s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: cmd}})
	if err != nil {
		s.met.acquires.WithLabelValues("error").Inc()
		return nil, err
	}
	return s.acquireResponse(res), nil
}

// terms are an acquirer's checked terms, defaults applied.
type terms struct{ dur, grace, lockDelay time.Duration }

// acquireTerms checks what an Acquire or AcquireSlot asks for.
func (s *Server) acquireTerms(holder string, duration, grace, lockDelay *durationpb.Duration, lbl map[string]string) (terms, error) {
	var t terms
	if err := validateHolder(holder); err != nil {
		return t, err
	}
	var err error
	if t.dur, err = s.validateDuration("lease_duration", duration, s.cfg.DefaultLeaseDuration == 0); err != nil {
		return t, err
	}
	if duration == nil {
		t.dur = s.cfg.DefaultLeaseDuration
	}
	if t.grace, err = s.validateDuration("grace_period", grace, false); err != nil {
		return t, err
	}
	if grace == nil {
		t.grace = s.cfg.DefaultGracePeriod
	}
	if t.lockDelay, err = s.validateDuration("lock_delay", lockDelay, false); err != nil {
		return t, err
	}
	return t, validateLabels(lbl)
}

// queueFull refuses, without a log write, a wait that the FSM would refuse
// for the queue limit as the leader's table stands: a flood of waits past
// the limit must not become a flood of Raft entries. (The FSM's check,
// stamped in the command, still decides the race.)
func (s *Server) queueFull(ns, name, holder string) error {
	l, ok := s.node.FSM().Get(ns, name)
	if s.cfg.MaxWaiters == 0 || !ok || len(l.Waiters) < s.cfg.MaxWaiters || (l.Holder == "" && !l.Delayed) || l.Holder == holder || l.WaitingPosition(holder) > 0 {
		return nil
	}
	return toStatus(fmt.Errorf("%w: %d waiters on %s/%s", fsm.ErrQueueFull, len(l.Waiters), ns, name), l)
}

func (s *Server) acquireResponse(res *fsm.Result) *pb.AcquireResponse {
	switch {
	case res.Renewed:
		s.met.acquires.WithLabelValues("renewed").Inc()
	case res.Acquired:
		s.met.acquires.WithLabelValues("acquired").Inc()
	default:
		s.met.acquires.WithLabelValues("held").Inc()
	}
	out := &pb.AcquireResponse{Acquired: res.Acquired, Renewed: res.Renewed, Lease: writtenPB(res.Lease),
		Queued: res.Queued, QueuePosition: int32(res.Position)}
	if res.Acquired {
		out.Remaining = durationpb.New(res.Lease.TTL())
	} else if d, ok := s.remaining(res.Lease); ok {
		out.Remaining = durationpb.New(d)
	}
	return out
}

// remaining is the time l's holding (or lock delay) has left; false for
// nil (a semaphore reports no slot when it has none yet).
func (s *Server) remaining(l *fsm.Lease) (time.Duration, bool) {
	if l == nil {
		return 0, false
	}
	return s.node.Remaining(l.Namespace, l.Name)
}

// pollMargin is how long before the caller's deadline a long poll answers.
const pollMargin = 100 * time.Millisecond

// waitBuffer is the event queue of one waiting Acquire. The hub's default
// (thousands of events) cost a large allocation per call.
const waitBuffer = 64

// acquireWait queues the caller when the lease (or every slot of the
// semaphore, for cmd.Slots > 0) is held and answers when the leader hands
// it the lease, or after a third of the duration (a long poll, so the
// caller's send time stays close to any grant and its own deadline stays
// useful).
//
// A caller already in the queue whose lease is still not free is answered
// from this leader's table, without a log entry: asking again would change
// nothing but cost a write per poll (docs/design.md, "Waiting without log
// writes"). Only a grant counts as an answer of substance, and it is only
// ever read from an applied entry.
func (s *Server) acquireWait(ctx context.Context, cmd *fsmpb.Acquire, dur time.Duration) (*pb.AcquireResponse, error) {
	sem := cmd.Slots > 0
	mine := func(l *fsm.Lease) bool { return l.Namespace == cmd.Namespace && l.Name == cmd.Name }
	if sem {
		mine = func(l *fsm.Lease) bool {
			i := fsm.SlotOf(cmd.Name, l.Name)
			return l.Namespace == cmd.Namespace && i >= 0 && i < int(cmd.Slots)
		}
	}
	// Watch the lease before queueing, so the hand-off cannot slip by.
	// One lease makes few events while a call waits; a queue that fills
	// anyway drops the watcher, and the call answers "still queued".
	w, _, err := s.hub.subscribeBuf(s.watchOwner(ctx), 0, 0, false, mine, waitBuffer)
	if err != nil {
		return nil, toStatus(err, nil)
	}
	defer s.hub.unsubscribe(w)
	res := s.stillQueued(cmd)
	if res == nil {
		if res, err = s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: cmd}}); err != nil {
			s.met.acquires.WithLabelValues("error").Inc()
			return nil, err
		}
		if !res.Queued {
			return s.acquireResponse(res), nil
		}
	}
	s.node.SawWaiter(cmd.Namespace, cmd.Name, cmd.Holder, sem)
	// Answer "still queued" before the caller's own deadline, so a short
	// call learns its place instead of timing out.
	wait := dur / 3
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, max(time.Until(dl)-pollMargin, 0))
	}
	poll := time.NewTimer(wait)
	defer poll.Stop()
	last := res
	answer := func() (*pb.AcquireResponse, error) {
		if sem {
			// The semaphore's queue makes no events: read the place now.
			if pos, _, l := s.node.FSM().SemaphoreWait(cmd.Namespace, cmd.Name, cmd.Holder, int(cmd.Slots)); pos > 0 && l != nil {
				last = &fsm.Result{Lease: l, Queued: true, Position: pos}
			}
		}
		return s.acquireResponse(last), nil
	}
	var evs []fsm.Event
	for {
		select {
		case <-w.ready:
			var closed bool
			evs, closed, _ = w.take(evs[:0], waitBuffer)
			for _, ev := range evs {
				if ev.Lease.Holder == cmd.Holder && (ev.Type == fsm.EventAcquired || (sem && ev.Type == fsm.EventAdded)) {
					s.met.acquires.WithLabelValues("acquired").Inc()
					return &pb.AcquireResponse{Acquired: true, Lease: writtenPB(ev.Lease), Remaining: durationpb.New(ev.Lease.TTL())}, nil
				}
				if ev.Type == fsm.EventDeleted && !sem {
					// A semaphore's deleted slot goes to its next waiter.
					return nil, status.Errorf(codes.NotFound, "%v: %s/%s was deleted while waiting", fsm.ErrNotFound, cmd.Namespace, cmd.Name)
				}
				if pos := ev.Lease.WaitingPosition(cmd.Holder); pos > 0 && !sem {
					last = &fsm.Result{Lease: ev.Lease, Queued: true, Position: pos}
				}
			}
			if closed {
				return answer()
			}
		case <-poll.C:
			return answer()
		case <-ctx.Done():
			return nil, toStatus(ctx.Err(), nil)
		}
	}
}

// stillQueued answers a waiter's repeated call from this leader's table:
// the caller is in the queue and the lease (every slot) is still taken, so
// the Acquire would change nothing. It returns nil when the call must go
// through the log: the caller is not queued (or no longer), or the lease or
// a slot is free, which only an entry can hand out.
func (s *Server) stillQueued(cmd *fsmpb.Acquire) *fsm.Result {
	if cmd.Slots > 0 {
		pos, free, l := s.node.FSM().SemaphoreWait(cmd.Namespace, cmd.Name, cmd.Holder, int(cmd.Slots))
		if pos == 0 || free || l == nil {
			return nil
		}
		return &fsm.Result{Lease: l, Queued: true, Position: pos}
	}
	l, ok := s.node.FSM().Get(cmd.Namespace, cmd.Name)
	if !ok || (l.Holder == "" && !l.Delayed) {
		return nil
	}
	pos := l.WaitingPosition(cmd.Holder)
	if pos == 0 {
		return nil
	}
	return &fsm.Result{Lease: l, Queued: true, Position: pos}
}

func validateHolding(namespace, name, holder string, token uint64) (string, error) {
	ns, err := validateKey(namespace, name)
	if err != nil {
		return "", err
	}
	if err := validateHolder(holder); err != nil {
		return "", err
	}
	return ns, validateToken(token)
}

// Renew extends the caller's holding by a full duration from now.
func (s *Server) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	ns, err := validateHolding(req.Namespace, req.Name, req.HolderIdentity, req.FencingToken)
	if err != nil {
		return nil, invalidErr(err)
	}
	if !s.node.IsLeader() {
		return forward(ctx, s, fwd{retry: true}, func(ctx context.Context, c pb.LeasesClient) (*pb.RenewResponse, error) {
			return c.Renew(ctx, req)
		})
	}
	start := time.Now() // for the metric only
	r := &fsmpb.Renew{Namespace: ns, Name: req.Name, Holder: req.HolderIdentity, Token: req.FencingToken}
	if !req.Record {
		if l := s.node.RenewLocal(ctx, []*fsmpb.Renew{r})[0]; l != nil {
			s.met.renewDur.Observe(time.Since(start).Seconds())
			s.met.renewals.WithLabelValues("ok").Inc()
			return &pb.RenewResponse{Lease: writtenPB(l)}, nil
		}
	}
	res, err := s.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: []*fsmpb.Renew{r}}}})
	s.met.renewDur.Observe(time.Since(start).Seconds())
	if err != nil {
		s.met.renewals.WithLabelValues("error").Inc()
		return nil, err
	}
	s.met.renewals.WithLabelValues(renewResult(res.Err)).Inc()
	if res.Err != nil {
		return nil, toStatus(res.Err, res.Lease)
	}
	return &pb.RenewResponse{Lease: writtenPB(res.Lease)}, nil
}

// Release ends the caller's holding. Releasing a holding that is already
// released succeeds, so a retry is harmless. With leave_queue it takes the
// caller out of the lease's queue of waiters instead.
func (s *Server) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	if req.LeaveQueue {
		return s.leaveQueue(ctx, req)
	}
	ns, err := validateHolding(req.Namespace, req.Name, req.HolderIdentity, req.FencingToken)
	if err != nil {
		return nil, invalidErr(err)
	}
	if !s.node.IsLeader() {
		return forward(ctx, s, fwd{retry: true}, func(ctx context.Context, c pb.LeasesClient) (*pb.ReleaseResponse, error) {
			return c.Release(ctx, req)
		})
	}
	res, err := s.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Release{Release: &fsmpb.Release{
		Namespace: ns, Name: req.Name, Holder: req.HolderIdentity, Token: req.FencingToken,
	}}})
	if err != nil {
		s.met.releases.WithLabelValues("error").Inc()
		return nil, err
	}
	s.met.releases.WithLabelValues(renewResult(res.Err)).Inc()
	if res.Err != nil {
		return nil, toStatus(res.Err, res.Lease)
	}
	return &pb.ReleaseResponse{Lease: writtenPB(res.Lease)}, nil
}

// Delete removes a lease, ending any holding.
func (s *Server) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.DeleteResponse, error) {
	ns, err := validateKey(req.Namespace, req.Name)
	if err != nil {
		return nil, invalidErr(err)
	}
	if !s.node.IsLeader() {
		// Not retried: a second delete could remove a lease created
		// again in between.
		return forward(ctx, s, fwd{}, func(ctx context.Context, c pb.LeasesClient) (*pb.DeleteResponse, error) {
			return c.Delete(ctx, req)
		})
	}
	d := &fsmpb.Delete{Namespace: ns, Name: req.Name, ResourceVersion: req.ResourceVersion}
	if req.DryRun {
		// Checked and authorized (by the interceptor) like a delete, on the
		// leader's state; nothing is proposed.
		res := s.node.FSM().PreviewDelete(d)
		if res.Err != nil {
			return nil, toStatus(res.Err, res.Lease)
		}
		return &pb.DeleteResponse{Lease: writtenPB(res.Lease)}, nil
	}
	res, err := s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Delete{Delete: d}})
	if err != nil {
		return nil, err
	}
	return &pb.DeleteResponse{Lease: writtenPB(res.Lease)}, nil
}

// readLocal decides where a read runs: it returns true when this node may
// answer from its own state (a serializable read, or a linearizable one on
// the leader after its read barrier), false when it must forward.
func (s *Server) readLocal(ctx context.Context, serializable bool) (bool, error) {
	if serializable {
		return true, nil
	}
	if !s.node.IsLeader() {
		return false, nil
	}
	if err := s.node.ReadBarrier(ctx); err != nil {
		return false, toStatus(err, nil)
	}
	return true, nil
}

// Get reads one lease.
func (s *Server) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	ns, err := validateKey(req.Namespace, req.Name)
	if err != nil {
		return nil, invalidErr(err)
	}
	local, err := s.readLocal(ctx, req.Serializable)
	if err != nil {
		return nil, err
	}
	if !local {
		return forward(ctx, s, fwd{retry: true}, func(ctx context.Context, c pb.LeasesClient) (*pb.GetResponse, error) {
			return c.Get(ctx, req)
		})
	}
	l, ok := s.node.FSM().Get(ns, req.Name)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%v: %s/%s", fsm.ErrNotFound, ns, req.Name)
	}
	out := &pb.GetResponse{Lease: toPB(l)}
	if d, ok := s.node.Remaining(ns, req.Name); ok {
		out.Remaining = durationpb.New(d)
	}
	return out, nil
}

func (s *Server) matcher(namespace string, all bool, name, selector string) (func(*fsm.Lease) bool, error) {
	var ns string
	if !all {
		ns = namespaceOr(namespace)
		if err := validateNamespace(ns); err != nil {
			return nil, err
		}
	}
	if name != "" {
		if err := validateName(name); err != nil {
			return nil, err
		}
	}
	sel, err := labels.ParseSelector(selector)
	if err != nil {
		return nil, err
	}
	return func(l *fsm.Lease) bool {
		return (ns == "" || l.Namespace == ns) && (name == "" || l.Name == name) && sel.Matches(l.Labels)
	}, nil
}

// List reads the leases of a namespace (or all), filtered by labels.
func (s *Server) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	match, err := s.matcher(req.Namespace, req.AllNamespaces, req.Name, req.LabelSelector)
	if err != nil {
		return nil, invalidErr(err)
	}
	// A read at a past revision needs no barrier: history does not change.
	// A node that has not applied that revision yet asks the leader.
	local, err := s.readLocal(ctx, req.Serializable || (req.Revision != 0 && req.Revision <= s.node.FSM().Revision()))
	if err != nil {
		return nil, err
	}
	if !local {
		return forward(ctx, s, fwd{retry: true}, func(ctx context.Context, c pb.LeasesClient) (*pb.ListResponse, error) {
			return c.List(ctx, req)
		})
	}
	var leases []*fsm.Lease
	rev := req.Revision
	if rev != 0 {
		if leases, err = s.listAt(ctx, rev, match); err != nil {
			return nil, err
		}
	} else {
		leases, rev = s.node.FSM().List(match)
	}
	out := &pb.ListResponse{Revision: rev, Leases: make([]*pb.Lease, len(leases))}
	for i, l := range leases {
		out.Leases[i] = toPB(l)
		if !req.WithRemaining || l.Holder == "" {
			continue
		}
		// Only the leader's expiry table knows; a follower answering a
		// serializable list finds nothing, and the field stays empty.
		if d, ok := s.node.Remaining(l.Namespace, l.Name); ok {
			if out.Remaining == nil {
				out.Remaining = make(map[string]*durationpb.Duration)
			}
			out.Remaining[l.Key()] = durationpb.New(d)
		}
	}
	return out, nil
}

// listAtTries bounds how often listAt reads the table again while the
// watch window catches up with it (the hub hears of an applied batch just
// after the FSM applied it, so one wait is almost always enough).
const listAtTries = 100

// listAt reads the leases that match as they were at revision rev, from
// the current table and the watch window.
func (s *Server) listAt(ctx context.Context, rev uint64, match func(*fsm.Lease) bool) ([]*fsm.Lease, error) {
	for try := 0; ; try++ {
		cur, curRev := s.node.FSM().List(match)
		if rev > curRev {
			return nil, invalid("revision %d is ahead of the store's, %d", rev, curRev)
		}
		leases, changed, err := s.hub.at(rev, cur, curRev, match)
		if !errors.Is(err, errNotCaughtUp) {
			return leases, toStatus(err, nil)
		}
		if try == listAtTries {
			return nil, status.Errorf(codes.Unavailable, "%v", err)
		}
		select {
		case <-ctx.Done():
			return nil, toStatus(ctx.Err(), nil)
		case <-changed:
		}
	}
}

// Watch streams changes from this node's applied log, after an optional
// replay from start_revision.
func (s *Server) Watch(req *pb.WatchRequest, stream pb.Leases_WatchServer) error {
	return s.watch(stream.Context(), req, 1, func(evs []fsm.Event) error {
		return stream.Send(watchEvent(evs[0]))
	}, func(rev uint64) error {
		return stream.Send(progressEvent(rev))
	})
}

// maxWatchBatch is the most events in one WatchBatches message.
const maxWatchBatch = 1000

// WatchBatches is Watch with the events that are ready together in one
// message.
func (s *Server) WatchBatches(req *pb.WatchRequest, stream pb.Leases_WatchBatchesServer) error {
	return s.watch(stream.Context(), req, maxWatchBatch, func(evs []fsm.Event) error {
		out := &pb.WatchEventBatch{Events: make([]*pb.WatchEvent, len(evs))}
		for i, ev := range evs {
			out.Events[i] = watchEvent(ev)
		}
		return stream.Send(out)
	}, func(rev uint64) error {
		return stream.Send(&pb.WatchEventBatch{Events: []*pb.WatchEvent{progressEvent(rev)}})
	})
}

func watchEvent(ev fsm.Event) *pb.WatchEvent {
	return &pb.WatchEvent{Type: eventTypes[ev.Type], Lease: toPB(ev.Lease), Revision: ev.Revision}
}

func progressEvent(rev uint64) *pb.WatchEvent {
	return &pb.WatchEvent{Type: pb.WatchEvent_PROGRESS, Revision: rev}
}

// MinWatchProgressInterval is the shortest progress interval a watch
// gets, whatever it asks for.
const MinWatchProgressInterval = 50 * time.Millisecond

// watch sends the events that req selects, up to max at a time: the
// backlog first, then each event as it comes, with those queued behind it.
// When req asks for progress, a watch sent nothing for its interval gets
// progress(rev), rev being a revision up to which it has every event it
// selects.
func (s *Server) watch(ctx context.Context, req *pb.WatchRequest, max int, send func([]fsm.Event) error, progress func(rev uint64) error) error {
	match, err := s.matcher(req.Namespace, req.AllNamespaces, req.Name, req.LabelSelector)
	if err != nil {
		return invalidErr(err)
	}
	var every time.Duration
	if p := req.GetProgressInterval(); p != nil {
		if err := p.CheckValid(); err != nil || p.AsDuration() < 0 {
			return invalid("progress_interval must be a positive duration")
		}
		if every = p.AsDuration(); every > 0 && every < MinWatchProgressInterval {
			every = MinWatchProgressInterval
		}
	}
	w, backlog, err := s.hub.subscribe(s.watchOwner(ctx), req.StartRevision, s.node.FSM().Revision(), req.Replay, match)
	if err != nil {
		return toStatus(err, nil)
	}
	defer s.hub.unsubscribe(w)
	last := req.StartRevision
	for len(backlog) > 0 {
		n := min(max, len(backlog))
		if err := send(backlog[:n]); err != nil {
			return err
		}
		last = backlog[n-1].Revision
		backlog = backlog[n:]
	}
	// The progress timer runs only for watches that asked; a nil channel
	// never fires.
	var tick <-chan time.Time
	var timer *time.Timer
	if every > 0 {
		timer = time.NewTimer(every)
		defer timer.Stop()
		tick = timer.C
	}
	var taken, batch []fsm.Event
	for {
		idle := false
		select {
		case <-ctx.Done():
			return toStatus(ctx.Err(), nil)
		case <-w.ready:
		case <-tick:
			idle = true
		}
		// Every event up to rev is queued for w already: once the queue
		// is drained below, the watch has all it selects up to rev.
		var rev uint64
		if idle {
			rev = s.hub.revision()
		}
		// Everything queued, up to max: the events ready together.
		var closed bool
		var werr error
		taken, closed, werr = w.take(taken[:0], max)
		batch = batch[:0]
		for _, ev := range taken {
			if ev.Revision > last { // else sent in the backlog already
				batch = append(batch, ev)
			}
		}
		if idle && len(batch) == 0 && rev > last {
			last = rev // nothing it selects came up to rev
		}
		sent := len(batch) > 0
		if sent {
			if err := send(batch); err != nil {
				return err
			}
			last = batch[len(batch)-1].Revision
		}
		clear(taken)
		clear(batch)
		if closed {
			return status.Errorf(status.Code(toStatus(werr, nil)), "%v; resume from revision %d", werr, last)
		}
		if idle && !sent {
			if err := progress(last); err != nil {
				return err
			}
		}
		if timer != nil && (idle || sent) {
			timer.Reset(every)
		}
	}
}

// watchOwner is the owner of the caller's watches, for the per-caller
// limit: its identity with auth on; "" (not told apart) with auth off.
func (s *Server) watchOwner(ctx context.Context) string {
	if !s.cfg.Auth.Enabled() {
		return ""
	}
	id, _ := auth.FromContext(ctx)
	return id.String()
}

// KeepAlive renews many holdings per message. Each message becomes one
// Raft entry on the leader; a follower relays the stream to the leader.
func (s *Server) KeepAlive(stream pb.Leases_KeepAliveServer) error {
	if !s.node.IsLeader() {
		return s.relayKeepAlive(stream)
	}
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.keepAliveOnce(ctx, req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

func (s *Server) keepAliveOnce(ctx context.Context, req *pb.KeepAliveRequest) (*pb.KeepAliveResponse, error) {
	if len(req.Leases) > s.cfg.MaxKeepAliveBatch {
		return nil, invalid("keepalive batch of %d leases is above the limit of %d", len(req.Leases), s.cfg.MaxKeepAliveBatch)
	}
	out := &pb.KeepAliveResponse{Id: req.Id, Results: make([]*pb.KeepAliveResult, len(req.Leases))}
	var local []*fsmpb.Renew
	var localSlot []int // result index of each renewal in local
	batch := &fsmpb.RenewBatch{Renews: make([]*fsmpb.Renew, 0, len(req.Leases))}
	slot := make([]int, 0, len(req.Leases)) // result index of each renewal in batch
	for i, ref := range req.Leases {
		r := &pb.KeepAliveResult{Namespace: namespaceOr(ref.Namespace), Name: ref.Name, FencingToken: ref.FencingToken}
		out.Results[i] = r
		ns, err := validateHolding(ref.Namespace, ref.Name, ref.HolderIdentity, ref.FencingToken)
		if err != nil {
			r.Code, r.Message = int32(codes.InvalidArgument), err.Error()
			continue
		}
		if err := s.authorizeRenewal(ctx, ns, ref); err != nil {
			st := status.Convert(err)
			r.Code, r.Message = int32(st.Code()), st.Message()
			continue
		}
		rn := &fsmpb.Renew{Namespace: ns, Name: ref.Name, Holder: ref.HolderIdentity, Token: ref.FencingToken}
		if ref.Record {
			batch.Renews = append(batch.Renews, rn)
			slot = append(slot, i)
		} else {
			local = append(local, rn)
			localSlot = append(localSlot, i)
		}
	}
	start := time.Now() // for the metric only
	if len(local) > 0 {
		// What cannot be renewed without the log joins the log's batch.
		ok := 0
		for j, l := range s.node.RenewLocal(ctx, local) {
			if l == nil {
				batch.Renews = append(batch.Renews, local[j])
				slot = append(slot, localSlot[j])
				continue
			}
			ok++
			out.Results[localSlot[j]].LeaseDuration = durationpb.New(l.Duration)
		}
		s.met.renewals.WithLabelValues("ok").Add(float64(ok))
	}
	if len(batch.Renews) == 0 {
		if len(local) > 0 {
			s.met.renewDur.Observe(time.Since(start).Seconds())
		}
		return out, nil
	}
	res, err := s.propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: batch}})
	s.met.renewDur.Observe(time.Since(start).Seconds())
	if err != nil {
		s.met.renewals.WithLabelValues("error").Add(float64(len(batch.Renews)))
		return nil, err
	}
	for j, rr := range res.Renews {
		s.met.renewals.WithLabelValues(renewResult(rr.Err)).Inc()
		r := out.Results[slot[j]]
		if rr.Err != nil {
			st := status.Convert(toStatus(rr.Err, nil))
			r.Code, r.Message = int32(st.Code()), st.Message()
			continue
		}
		r.LeaseDuration = durationpb.New(rr.Lease.Duration)
	}
	return out, nil
}

// renewResult is the metric label of a renewal's outcome.
func renewResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, fsm.ErrNotFound):
		return "not_found"
	case errors.Is(err, fsm.ErrNotHolder):
		return "not_holder"
	}
	return "error"
}

// maxObject bounds a whole-object write's stored representation.
const maxObject = 64 << 10

// Write creates or replaces a whole lease (the Kubernetes Lease API's
// create and update).
func (s *Server) Write(ctx context.Context, req *pb.WriteRequest) (*pb.WriteResponse, error) {
	ns, err := validateKey(req.Namespace, req.Name)
	if err != nil {
		return nil, invalidErr(err)
	}
	var dur time.Duration
	if req.HolderIdentity != "" {
		if err := validateHolder(req.HolderIdentity); err != nil {
			return nil, invalidErr(err)
		}
		if dur, err = s.validateDuration(writeDuration, req.LeaseDuration, true); err != nil {
			return nil, invalidErr(err)
		}
	} else if req.LeaseDuration != nil {
		if dur, err = s.validateDuration(writeDuration, req.LeaseDuration, false); err != nil {
			return nil, invalidErr(err)
		}
	}
	if err := validateLabels(req.Labels); err != nil {
		return nil, invalidErr(err)
	}
	if len(req.Object) > maxObject {
		return nil, invalid("object of %d bytes is above the limit of %d", len(req.Object), maxObject)
	}
	if !s.node.IsLeader() {
		// Not retried: a second write could undo one made in between, or
		// fail on the version or existence the first one changed.
		return forward(ctx, s, fwd{}, func(ctx context.Context, c pb.LeasesClient) (*pb.WriteResponse, error) {
			return c.Write(ctx, req)
		})
	}
	verb := auth.VerbUpdate
	if req.Create {
		verb = auth.VerbCreate
	}
	if err := s.cfg.Auth.AuthorizeContext(ctx, verb, ns, req.Name); err != nil {
		return nil, err
	}
	w := &fsmpb.Write{
		Namespace: ns, Name: req.Name, Create: req.Create, ResourceVersion: req.ResourceVersion,
		Holder: req.HolderIdentity, DurationNs: int64(dur), Labels: req.Labels, Object: req.Object,
	}
	if err := s.authorizeHoldingChange(ctx, w); err != nil {
		return nil, err
	}
	if req.DryRun {
		res := s.node.FSM().PreviewWrite(w)
		if res.Err != nil {
			return nil, toStatus(res.Err, res.Lease)
		}
		return &pb.WriteResponse{Lease: writtenPB(res.Lease)}, nil
	}
	res, err := s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Write{Write: w}})
	if err != nil {
		return nil, err
	}
	return &pb.WriteResponse{Lease: writtenPB(res.Lease)}, nil
}

// authorizeHoldingChange checks, with auth on, a whole-object write that
// would replace or end someone's live holding, or change its duration:
// only that holder, or a caller that may delete the lease, may do it
// (docs/security.md, holder binding). The write then carries the holding
// it was authorized against, and the FSM refuses it as a conflict if
// another holding is in place by the time it applies.
func (s *Server) authorizeHoldingChange(ctx context.Context, w *fsmpb.Write) error {
	if !s.cfg.Auth.Enabled() {
		return nil
	}
	w.CheckHolding = true
	l, ok := s.node.FSM().Get(w.Namespace, w.Name)
	if !ok || l.Holder == "" {
		return nil // a free lease: taking it is an acquire, bound like one
	}
	w.HoldingToken = l.Token
	if w.Holder == l.Holder && time.Duration(w.DurationNs) == l.Duration {
		return nil // the holding stays as it is
	}
	return s.cfg.Auth.MayEndHoldingContext(ctx, w.Namespace, w.Name, l.Holder)
}

func (s *Server) leaveQueue(ctx context.Context, req *pb.ReleaseRequest) (*pb.ReleaseResponse, error) {
	ns, err := validateKey(req.Namespace, req.Name)
	if err == nil {
		err = validateHolder(req.HolderIdentity)
	}
	if err != nil {
		return nil, invalidErr(err)
	}
	if !s.node.IsLeader() {
		return forward(ctx, s, fwd{retry: true}, func(ctx context.Context, c pb.LeasesClient) (*pb.ReleaseResponse, error) {
			return c.Release(ctx, req)
		})
	}
	res, err := s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Dequeue{Dequeue: &fsmpb.Dequeue{
		Namespace: ns, Name: req.Name, Holder: req.HolderIdentity, Semaphore: req.Semaphore,
	}}})
	if err != nil {
		return nil, err
	}
	return &pb.ReleaseResponse{Lease: writtenPB(res.Lease)}, nil
}

// authorizeRenewal checks one lease of a KeepAlive batch: the caller may
// update it and acts as its holder.
func (s *Server) authorizeRenewal(ctx context.Context, ns string, ref *pb.LeaseRef) error {
	if err := s.cfg.Auth.AuthorizeContext(ctx, auth.VerbUpdate, ns, ref.Name); err != nil {
		return err
	}
	return s.cfg.Auth.BindHolderContext(ctx, ref.HolderIdentity)
}
