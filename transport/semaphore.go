package transport

import (
	"context"
	"fmt"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/internal/labels"
)

// AcquireSlot takes a free slot of a semaphore, renews the caller's own,
// or queues the caller in the semaphore's queue (wait) or reports a full
// semaphore (acquired=false).
func (s *Server) AcquireSlot(ctx context.Context, req *pb.AcquireSlotRequest) (*pb.AcquireResponse, error) {
	ns, err := s.validateSemaphore(req)
	if err != nil {
		return nil, invalidErr(err)
	}
	t, err := s.acquireTerms(req.HolderIdentity, req.LeaseDuration, req.GracePeriod, req.LockDelay, req.Labels)
	if err != nil {
		return nil, invalidErr(err)
	}
	if !s.node.IsLeader() {
		// As with Acquire: a holder asking again renews its slot, and a
		// waiter keeps its place, so a second send does no harm.
		o := fwd{retry: true}
		if req.Wait {
			o.wait = t.dur / 3
		}
		return forward(ctx, s, o, func(ctx context.Context, c pb.LeasesClient) (*pb.AcquireResponse, error) {
			return c.AcquireSlot(ctx, req)
		})
	}
	if s.cfg.Auth.Enabled() {
		// Any slot may become the caller's: it must be allowed them all.
		for i := range int(req.Slots) {
			name := fsm.SlotName(req.Name, i)
			_, exists := s.node.FSM().Get(ns, name)
			if err := s.cfg.Auth.AuthorizeContext(ctx, auth.AcquireVerb(exists), ns, name); err != nil {
				return nil, err
			}
		}
	}
	cmd := &fsmpb.Acquire{
		Namespace: ns, Name: req.Name, Holder: req.HolderIdentity, Slots: req.Slots,
		DurationNs: int64(t.dur), GraceNs: int64(t.grace), Labels: req.Labels, Wait: req.Wait,
		MaxWaiters: uint32(s.cfg.MaxWaiters), LockDelayNs: int64(t.lockDelay),
	}
	if req.Wait {
		if err := s.semaphoreFull(cmd); err != nil {
			return nil, err
		}
		return s.acquireWait(ctx, cmd, t.dur)
	}
	res, err := s.commit(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: cmd}})
	if err != nil {
		s.met.acquires.WithLabelValues("error").Inc()
		return nil, err
	}
	return s.acquireResponse(res), nil
}

// validateSemaphore checks a semaphore's name and size: every slot's name
// must be a valid lease name and the semaphore's a label value (the slots
// carry it), and it returns the namespace.
func (s *Server) validateSemaphore(req *pb.AcquireSlotRequest) (string, error) {
	if req.Slots < 1 || req.Slots > fsm.MaxSlots {
		return "", fmt.Errorf("slots must be within [1, %d], got %d", fsm.MaxSlots, req.Slots)
	}
	ns, err := validateKey(req.Namespace, req.Name)
	if err != nil {
		return "", err
	}
	if err := validateName(fsm.SlotName(req.Name, int(req.Slots)-1)); err != nil {
		return "", fmt.Errorf("semaphore %q of %d slots: %w", trunc(req.Name), req.Slots, err)
	}
	if err := labels.ValidateValue(req.Name); err != nil {
		return "", fmt.Errorf("semaphore name (the value of its slots' label %s): %w", fsm.SemaphoreLabel, err)
	}
	if v, ok := req.Labels[fsm.SemaphoreLabel]; ok && v != req.Name {
		return "", fmt.Errorf("label %s is the semaphore's name, %q, not %q", fsm.SemaphoreLabel, trunc(req.Name), trunc(v))
	}
	return ns, nil
}

// semaphoreFull refuses, without a log write, a wait past the queue limit
// as the leader's table stands (see queueFull).
func (s *Server) semaphoreFull(cmd *fsmpb.Acquire) error {
	if s.cfg.MaxWaiters == 0 {
		return nil
	}
	pos, free, l := s.node.FSM().SemaphoreWait(cmd.Namespace, cmd.Name, cmd.Holder, int(cmd.Slots))
	if pos > 0 || free || s.node.FSM().SemaphoreQueueLen(cmd.Namespace, cmd.Name) < s.cfg.MaxWaiters {
		return nil
	}
	return toStatus(fmt.Errorf("%w: %d waiters on semaphore %s/%s", fsm.ErrQueueFull, s.cfg.MaxWaiters, cmd.Namespace, cmd.Name), l)
}
