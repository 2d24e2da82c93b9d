package k8sapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// TestLockDelayedLease: a lease in its lock delay shows no holder and the
// lock-delayed annotation; a write that names a holder gets 409 Conflict
// saying why, and the lease stays free and delayed; the annotation is
// never stored.
func TestLockDelayedLease(t *testing.T) {
	e := setup(t)
	// Lock delays start once every member has registered a binary that
	// applies them; until then the leader drops them.
	waitFor(t, func() bool {
		res, err := e.grpc.Acquire(ctx(t), &pb.AcquireRequest{
			Namespace: "default", Name: "probe", HolderIdentity: "p",
			LeaseDuration: durationpb.New(time.Minute), LockDelay: durationpb.New(time.Second),
		})
		return err == nil && res.Lease.LockDelay != nil
	})
	res, err := e.grpc.Acquire(ctx(t), &pb.AcquireRequest{
		Namespace: "default", Name: "delayed", HolderIdentity: "worker-1",
		LeaseDuration: durationpb.New(200 * time.Millisecond), LockDelay: durationpb.New(time.Minute),
	})
	if err != nil || !res.Acquired || res.Lease.LockDelay.AsDuration() != time.Minute {
		t.Fatalf("acquire: %v %v", res, err)
	}
	path := leasesPath + "default/leases/delayed"
	waitFor(t, func() bool {
		l := e.do("GET", path, nil).lease(t, http.StatusOK)
		return l.Annotations[k8sapi.LockDelayedAnnotation] == "true"
	})
	l := e.do("GET", path, nil).lease(t, http.StatusOK)
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
		t.Fatalf("delayed lease shows holder %v, want empty", l.Spec.HolderIdentity)
	}

	l.Spec.HolderIdentity = ptr("worker-2")
	l.Spec.LeaseDurationSeconds = ptr(int32(10))
	st := e.do("PUT", path, l).status(t, http.StatusConflict, metav1.StatusReasonConflict)
	if !strings.Contains(st.Message, "lock delay") {
		t.Fatalf("409 message %q does not say it is the lock delay", st.Message)
	}
	got, err := e.grpc.Get(ctx(t), &pb.GetRequest{Namespace: "default", Name: "delayed"})
	if err != nil || got.Lease.HolderIdentity != "" || !got.Lease.LockDelayed {
		t.Fatalf("after the refused write: %v %v, want free and delayed", got, err)
	}
	if got.Remaining == nil || got.Remaining.AsDuration() <= 0 || got.Remaining.AsDuration() > time.Minute {
		t.Fatalf("remaining %v, want the delay's time left", got.Remaining)
	}
	// A write that sets no holder (labels, say) is fine during the delay,
	// and the server's annotation it sends back is not stored.
	l.Spec.HolderIdentity = ptr("")
	l.Labels = map[string]string{"team": "a"}
	out := e.do("PUT", path, l).lease(t, http.StatusOK)
	if out.Labels["team"] != "a" || out.Annotations[k8sapi.LockDelayedAnnotation] != "true" {
		t.Fatalf("label write during the delay: %+v", out.ObjectMeta)
	}
	if strings.Contains(string(got.Lease.Object), k8sapi.LockDelayedAnnotation) {
		t.Fatalf("annotation stored: %s", got.Lease.Object)
	}
}
