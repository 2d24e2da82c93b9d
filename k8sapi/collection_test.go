package k8sapi_test

import (
	"net/http"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// TestDeleteCollection: DELETE of a namespace's collection deletes the
// leases its selectors match, answers with them as they were, and each
// deletion's watch event carries the lease's last state, holder included.
func TestDeleteCollection(t *testing.T) {
	e := setup(t)
	cs := e.clientset().CoordinationV1()
	team := cs.Leases("team")
	for _, l := range []struct{ ns, name, app string }{{"team", "a", "x"}, {"team", "b.example", "x"}, {"team", "c", "y"}, {"other", "d", "x"}} {
		obj := newLease(l.name, "holder-"+l.name, 30)
		obj.Labels = map[string]string{"app": l.app}
		if _, err := cs.Leases(l.ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A lease made through gRPC, held, with a label: its deletion shows
	// its holder too.
	if _, err := e.grpc.Acquire(ctx(t), &pb.AcquireRequest{Namespace: "team", Name: "g", HolderIdentity: "worker",
		LeaseDuration: durationpb.New(30e9), Labels: map[string]string{"app": "x"}}); err != nil {
		t.Fatal(err)
	}
	list, err := team.List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ch := e.jsonWatch("&resourceVersion=" + list.ResourceVersion)

	// A dry run deletes nothing.
	var dry coordinationv1.LeaseList
	e.do("DELETE", leasesPath+"team/leases?labelSelector=app%3Dx&dryRun=All", nil).decode(t, http.StatusOK, &dry)
	if len(dry.Items) != 3 {
		t.Fatalf("dry run: %d leases, want 3", len(dry.Items))
	}
	var gone coordinationv1.LeaseList
	e.do("DELETE", leasesPath+"team/leases?labelSelector=app%3Dx", nil).decode(t, http.StatusOK, &gone)
	if gone.Kind != "LeaseList" || len(gone.Items) != 3 {
		t.Fatalf("deleted %+v, want a LeaseList of 3", gone)
	}
	holders := map[string]string{"a": "holder-a", "b.example": "holder-b.example", "g": "worker"}
	for _, l := range gone.Items {
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != holders[l.Name] {
			t.Errorf("deleted %s shows holder %v, want %s", l.Name, l.Spec.HolderIdentity, holders[l.Name])
		}
	}
	for range 3 {
		typ, l := next(t, ch)
		if typ != "DELETED" || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != holders[l.Name] ||
			l.Annotations[k8sapi.FencingTokenAnnotation] == "" {
			t.Fatalf("event %s %s %+v %v, want DELETED with its last holder and token", typ, l.Name, l.Spec, l.Annotations)
		}
	}
	left, err := team.List(ctx(t), metav1.ListOptions{})
	if err != nil || len(left.Items) != 1 || left.Items[0].Name != "c" {
		t.Fatalf("left in team: %v %+v", err, left)
	}
	if _, err := cs.Leases("other").Get(ctx(t), "d", metav1.GetOptions{}); err != nil {
		t.Fatalf("another namespace's lease: %v", err)
	}
	// client-go's DeleteCollection, by field.
	if err := team.DeleteCollection(ctx(t), metav1.DeleteOptions{}, metav1.ListOptions{FieldSelector: "metadata.name=c"}); err != nil {
		t.Fatal(err)
	}
	if _, err := team.Get(ctx(t), "c", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after DeleteCollection: %v", err)
	}
	e.do("DELETE", "/apis/coordination.k8s.io/v1/leases", nil).status(t, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed)
	e.do("DELETE", leasesPath+"team/leases?labelSelector=a%20in%20(", nil).status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
}
