package transport

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/fsm"
)

func ts(unixNano int64) *timestamppb.Timestamp {
	if unixNano == 0 {
		return nil
	}
	return timestamppb.New(time.Unix(0, unixNano))
}

// toPB converts a stored lease to its API form, history included: what
// Get, List and Watch return.
func toPB(l *fsm.Lease) *pb.Lease {
	out := writtenPB(l)
	if out != nil && len(l.History) > 0 {
		out.History = make([]*pb.Holding, len(l.History))
		for i, h := range l.History {
			out.History[i] = &pb.Holding{
				HolderIdentity: h.Holder,
				FencingToken:   h.Token,
				StartTime:      ts(h.Start),
				EndTime:        ts(h.End),
				EndReason:      h.EndReason,
			}
		}
	}
	return out
}

// writtenPB is toPB without the history of holdings: what the writes
// (Acquire, Renew, Release, Delete, Write) answer with. A busy lock's ten
// past holdings would triple the size of every answer, to be encoded and
// decoded on each lock and unlock.
func writtenPB(l *fsm.Lease) *pb.Lease {
	if l == nil {
		return nil
	}
	out := &pb.Lease{
		Namespace:        l.Namespace,
		Name:             l.Name,
		HolderIdentity:   l.Holder,
		LeaseDuration:    durationpb.New(l.Duration),
		GracePeriod:      durationpb.New(l.Grace),
		AcquireTime:      ts(l.AcquireTime),
		RenewTime:        ts(l.RenewTime),
		LeaseTransitions: l.Transitions,
		FencingToken:     l.Token,
		Labels:           l.Labels,
		ResourceVersion:  l.ResourceVersion,
		CreateRevision:   l.CreateRevision,
		CreateTime:       ts(l.CreateTime),
		Object:           l.Object,
		LockDelayed:      l.Delayed,
	}
	if l.LockDelay > 0 {
		out.LockDelay = durationpb.New(l.LockDelay)
	}
	for _, w := range l.Waiters {
		out.Waiters = append(out.Waiters, w.Holder)
	}
	return out
}

var eventTypes = map[fsm.EventType]pb.WatchEvent_Type{
	fsm.EventAdded:    pb.WatchEvent_ADDED,
	fsm.EventAcquired: pb.WatchEvent_ACQUIRED,
	fsm.EventRenewed:  pb.WatchEvent_RENEWED,
	fsm.EventReleased: pb.WatchEvent_RELEASED,
	fsm.EventExpired:  pb.WatchEvent_EXPIRED,
	fsm.EventDeleted:  pb.WatchEvent_DELETED,
	fsm.EventModified: pb.WatchEvent_MODIFIED,
}
