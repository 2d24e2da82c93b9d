package k8sapi_test

import (
	"net/http"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applyv1 "k8s.io/client-go/applyconfigurations/coordination/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// managers lists the managedFields entries of l as manager/operation.
func managers(l *coordinationv1.Lease) map[string]bool {
	out := map[string]bool{}
	for _, m := range l.ManagedFields {
		out[m.Manager+"/"+string(m.Operation)] = true
	}
	return out
}

// TestServerSideApply: apply patches merge with the field manager of
// apimachinery, with ownership, conflicts, force and managedFields as the
// API server keeps them; other writes record their manager too.
func TestServerSideApply(t *testing.T) {
	e := setup(t)
	leases := e.clientset().CoordinationV1().Leases("default")
	cfg := func(holder string, labels map[string]string) *applyv1.LeaseApplyConfiguration {
		c := applyv1.Lease("ssa.example.com", "default").WithLabels(labels)
		if holder != "" {
			c.WithSpec(applyv1.LeaseSpec().WithHolderIdentity(holder).WithLeaseDurationSeconds(30))
		}
		return c
	}

	// Apply creates the lease; a: owns the holder and label x.
	a, err := leases.Apply(ctx(t), cfg("a", map[string]string{"x": "1"}), metav1.ApplyOptions{FieldManager: "mgr-a"})
	if err != nil {
		t.Fatal(err)
	}
	if *a.Spec.HolderIdentity != "a" || a.Labels["x"] != "1" || !managers(a)["mgr-a/Apply"] {
		t.Fatalf("created by apply: %+v %v", a.Spec, managers(a))
	}
	// Applying the same again changes nothing.
	again, err := leases.Apply(ctx(t), cfg("a", map[string]string{"x": "1"}), metav1.ApplyOptions{FieldManager: "mgr-a"})
	if err != nil || *again.Spec.HolderIdentity != "a" {
		t.Fatalf("apply again: %v %+v", err, again)
	}

	// b may not take a's holder without force: a conflict naming it.
	_, err = leases.Apply(ctx(t), cfg("b", nil), metav1.ApplyOptions{FieldManager: "mgr-b"})
	var se *apierrors.StatusError
	if !apierrors.IsConflict(err) || !asStatus(err, &se) || len(se.ErrStatus.Details.Causes) == 0 ||
		se.ErrStatus.Details.Causes[0].Type != metav1.CauseTypeFieldManagerConflict || se.ErrStatus.Details.Causes[0].Field != ".spec.holderIdentity" {
		t.Fatalf("conflicting apply: %v", err)
	}
	b, err := leases.Apply(ctx(t), cfg("b", nil), metav1.ApplyOptions{FieldManager: "mgr-b", Force: true})
	if err != nil || *b.Spec.HolderIdentity != "b" || !managers(b)["mgr-b/Apply"] {
		t.Fatalf("forced apply: %v %+v", err, b)
	}

	// a gives up the holder and its label: the holder stays b's, the label
	// goes.
	a, err = leases.Apply(ctx(t), cfg("", map[string]string{"y": "2"}), metav1.ApplyOptions{FieldManager: "mgr-a"})
	if err != nil || *a.Spec.HolderIdentity != "b" || a.Labels["x"] != "" || a.Labels["y"] != "2" {
		t.Fatalf("apply without the holder: %v %+v %v", err, a.Spec, a.Labels)
	}

	// A plain update records its manager (here the fieldManager option).
	a.Spec.LeaseDurationSeconds = ptr(int32(60))
	u, err := leases.Update(ctx(t), a, metav1.UpdateOptions{FieldManager: "updater"})
	if err != nil || !managers(u)["updater/Update"] || !managers(u)["mgr-a/Apply"] {
		t.Fatalf("update: %v %v", err, managers(u))
	}
	// Without one, the manager is the client's User-Agent up to its '/'.
	ua, err := kubernetes.NewForConfig(&rest.Config{Host: e.srv.URL, UserAgent: "leader-thing/1.2 (linux)"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ua.CoordinationV1().Leases("default").Patch(ctx(t), "ssa.example.com", "application/merge-patch+json",
		[]byte(`{"metadata":{"annotations":{"k":"v"}}}`), metav1.PatchOptions{})
	if err != nil || !managers(p)["leader-thing/Update"] {
		t.Fatalf("patch: %v %v", err, managers(p))
	}
	// The duration is the updater's now: a's apply of another takes it
	// only with force.
	_, err = leases.Apply(ctx(t), applyv1.Lease("ssa.example.com", "default").WithSpec(applyv1.LeaseSpec().WithLeaseDurationSeconds(5)),
		metav1.ApplyOptions{FieldManager: "mgr-a"})
	if !apierrors.IsConflict(err) {
		t.Fatalf("apply over an updated field: %v", err)
	}

	// A dry-run apply changes nothing.
	if _, err := leases.Apply(ctx(t), cfg("c", nil), metav1.ApplyOptions{FieldManager: "mgr-b", Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	got, err := leases.Get(ctx(t), "ssa.example.com", metav1.GetOptions{})
	if err != nil || *got.Spec.HolderIdentity != "b" || got.ResourceVersion != p.ResourceVersion {
		t.Fatalf("after a dry-run apply: %v %+v", err, got)
	}

	// Unknown fields and managedFields in the patch are refused.
	yaml := []string{"Content-Type", "application/apply-patch+yaml"}
	path := leasesPath + "default/leases/ssa.example.com?fieldManager=m"
	e.do("PATCH", path, "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: ssa.example.com}\nspec: {bogus: 1}\n", yaml...).
		status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
	e.do("PATCH", path, "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: ssa.example.com, managedFields: [{manager: x}]}\n", yaml...).
		status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
	e.do("PATCH", path, "apiVersion: coordination.k8s.io/v2\nkind: Lease\nmetadata: {name: ssa.example.com}\n", yaml...).
		status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
}

func asStatus(err error, se **apierrors.StatusError) bool {
	s, ok := err.(*apierrors.StatusError)
	*se = s
	return ok
}
