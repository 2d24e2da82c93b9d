package k8sapi

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

var leaseTypeMeta = metav1.TypeMeta{APIVersion: groupVersion.String(), Kind: "Lease"}

// uidOf names one incarnation of a lease: the same for its whole life,
// different once it is deleted and created again (its create revision
// changes). It is a name-based (version 5 style) UUID.
func uidOf(l *pb.Lease) types.UID {
	sum := sha1.Sum(fmt.Appendf(nil, "leasekeeper/%s/%s/%d", l.Namespace, l.Name, l.CreateRevision))
	sum[6] = sum[6]&0x0f | 0x50
	sum[8] = sum[8]&0x3f | 0x80
	return types.UID(fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16]))
}

func formatRV(rv uint64) string { return strconv.FormatUint(rv, 10) }

// parseRV reads a resourceVersion this server handed out.
func parseRV(s string) (uint64, *apierrors.StatusError) {
	rv, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badRequest("invalid resourceVersion %q: not one this server gave out", s)
	}
	return rv, nil
}

func microTime(ts *timestamppb.Timestamp) *metav1.MicroTime {
	if ts == nil {
		return nil
	}
	t := metav1.NewMicroTime(ts.AsTime().Truncate(time.Microsecond))
	return &t
}

// specFromPB presents the service's own fields of a lease as a LeaseSpec.
func specFromPB(l *pb.Lease) coordinationv1.LeaseSpec {
	var s coordinationv1.LeaseSpec
	if h := l.HolderIdentity; h != "" {
		s.HolderIdentity = &h
	}
	if l.LeaseDuration != nil {
		if d := l.LeaseDuration.AsDuration(); d > 0 {
			secs := int32((d + time.Second - 1) / time.Second)
			s.LeaseDurationSeconds = &secs
		}
	}
	s.AcquireTime = microTime(l.AcquireTime)
	s.RenewTime = microTime(l.RenewTime)
	n := int32(l.LeaseTransitions)
	s.LeaseTransitions = &n
	return s
}

// present turns a lease of the service into the Lease a Kubernetes client
// sees, at resourceVersion rv (the lease's own, or a deletion's revision).
func (h *handler) present(l *pb.Lease, rv uint64) *coordinationv1.Lease {
	out := &coordinationv1.Lease{}
	stored := false
	if len(l.Object) > 0 {
		if err := json.Unmarshal(l.Object, out); err != nil {
			h.log.Warn("stored Lease object unreadable; showing the lease's own fields",
				"namespace", l.Namespace, "name", l.Name, "error", err)
			out = &coordinationv1.Lease{}
		} else {
			stored = true
		}
	}
	if stored {
		reconcileHolder(&out.Spec, l)
	} else {
		out.Spec = specFromPB(l)
	}
	out.TypeMeta = leaseTypeMeta
	out.Name, out.Namespace = l.Name, l.Namespace
	out.UID = uidOf(l)
	out.ResourceVersion = formatRV(rv)
	if l.CreateTime != nil {
		out.CreationTimestamp = metav1.NewTime(l.CreateTime.AsTime().Truncate(time.Second))
	}
	out.Labels = nil
	if len(l.Labels) > 0 {
		out.Labels = maps.Clone(l.Labels)
	}
	if l.FencingToken > 0 {
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[FencingTokenAnnotation] = strconv.FormatUint(l.FencingToken, 10)
	}
	if l.LockDelayed {
		if out.Annotations == nil {
			out.Annotations = map[string]string{}
		}
		out.Annotations[LockDelayedAnnotation] = "true"
	}
	return out
}

// reconcileHolder makes the holder of a stored Lease the service's: the
// service may have ended the holding (expiry) or begun another one
// (an Acquire through gRPC) since the Kubernetes client last wrote.
func reconcileHolder(s *coordinationv1.LeaseSpec, l *pb.Lease) {
	written := ""
	if s.HolderIdentity != nil {
		written = *s.HolderIdentity
	}
	switch {
	case l.HolderIdentity == written:
	case l.HolderIdentity == "":
		empty := ""
		s.HolderIdentity = &empty
	default:
		g := specFromPB(l)
		s.HolderIdentity, s.LeaseDurationSeconds, s.AcquireTime, s.RenewTime =
			g.HolderIdentity, g.LeaseDurationSeconds, g.AcquireTime, g.RenewTime
	}
}

// storedObject is what the service keeps of a Lease: what the client wrote
// and the server does not own, and the managedFields of server-side apply. Labels are kept by the service itself, and
// the fencing-token and lock-delayed annotations are the server's.
func storedObject(obj *coordinationv1.Lease) ([]byte, error) {
	s := coordinationv1.Lease{
		TypeMeta: leaseTypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    obj.GenerateName,
			Annotations:     obj.Annotations,
			OwnerReferences: obj.OwnerReferences,
			ManagedFields:   obj.ManagedFields,
		},
		Spec: obj.Spec,
	}
	_, token := obj.Annotations[FencingTokenAnnotation]
	_, delayed := obj.Annotations[LockDelayedAnnotation]
	if token || delayed {
		s.Annotations = maps.Clone(obj.Annotations)
		delete(s.Annotations, FencingTokenAnnotation)
		delete(s.Annotations, LockDelayedAnnotation)
	}
	if len(s.Annotations) == 0 {
		s.Annotations = nil
	}
	return json.Marshal(&s)
}

// writeRequest turns a Lease into a whole-object write of the service.
func (h *handler) writeRequest(obj *coordinationv1.Lease, create bool, rv uint64) (*pb.WriteRequest, *apierrors.StatusError) {
	dropDisabledFields(obj)
	if errs := validateLease(obj); len(errs) > 0 {
		return nil, invalid(obj.Name, errs...)
	}
	object, err := storedObject(obj)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	req := &pb.WriteRequest{
		Namespace: obj.Namespace, Name: obj.Name, Create: create, ResourceVersion: rv,
		Labels: obj.Labels, Object: object,
	}
	if hi := obj.Spec.HolderIdentity; hi != nil {
		req.HolderIdentity = *hi
	}
	switch d := obj.Spec.LeaseDurationSeconds; {
	case d != nil:
		req.LeaseDuration = durationpb.New(time.Duration(*d) * time.Second)
	case req.HolderIdentity != "":
		req.LeaseDuration = durationpb.New(h.cfg.DefaultLeaseDuration)
	}
	return req, nil
}
