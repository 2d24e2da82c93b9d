package k8sapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// TestRecordLease: a Lease labelled leasekeeper.io/record=true keeps its
// holder past its leaseDurationSeconds, and past the default duration
// when it has none, as a Kubernetes Lease does, while plain leases written
// after it, due later, are cleared.
func TestRecordLease(t *testing.T) {
	e := setupWith(t, nil, func(c *k8sapi.Config) { c.DefaultLeaseDuration = time.Second })
	waitFor(t, func() bool { return e.cluster.Leader(5*time.Second).CommandVersion() == fsm.CommandVersion })
	record := func(l *coordinationv1.Lease) *coordinationv1.Lease {
		l.Labels = map[string]string{k8sapi.RecordLabel: "true"}
		return l
	}
	// Records first: were they expired, it would be no later than the
	// plain leases written after them.
	e.do("POST", defaultLeases, record(newLease("rec", "a", 1))).lease(t, http.StatusCreated)
	noDuration := record(newLease("rec-forever", "a", 1))
	noDuration.Spec.LeaseDurationSeconds = nil
	e.do("POST", defaultLeases, noDuration).lease(t, http.StatusCreated)
	e.do("POST", defaultLeases, newLease("plain", "b", 1)).lease(t, http.StatusCreated)
	plainForever := newLease("plain-forever", "b", 1)
	plainForever.Spec.LeaseDurationSeconds = nil
	e.do("POST", defaultLeases, plainForever).lease(t, http.StatusCreated)

	holder := func(name string) string {
		l := e.do("GET", defaultLeases+"/"+name, nil).lease(t, http.StatusOK)
		if l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	waitFor(t, func() bool { return holder("plain") == "" && holder("plain-forever") == "" })
	for _, name := range []string{"rec", "rec-forever"} {
		if h := holder(name); h != "a" {
			t.Fatalf("record %s: holder %q after the plain leases expired, want a", name, h)
		}
	}
	got := e.do("GET", defaultLeases+"/rec-forever", nil).lease(t, http.StatusOK)
	if got.Spec.LeaseDurationSeconds != nil {
		t.Fatalf("a record written without leaseDurationSeconds shows %d", *got.Spec.LeaseDurationSeconds)
	}
}

// oldCluster refuses every write as a leader does while a member runs a
// binary that would expire a record.
type oldCluster struct{ pb.LeasesClient }

func (oldCluster) Write(context.Context, *pb.WriteRequest, ...grpc.CallOption) (*pb.WriteResponse, error) {
	return nil, status.Error(codes.FailedPrecondition,
		"fsm: a member of the cluster runs a leasekeeper too old for this command: it needs command version 3, the cluster applies 2")
}

// TestRecordRefusedByAnOldCluster: the service's refusal is a 422 about
// the label, not the conflict a FailedPrecondition otherwise is.
func TestRecordRefusedByAnOldCluster(t *testing.T) {
	cfg := k8sapi.DefaultConfig()
	cfg.Client = oldCluster{}
	h, err := k8sapi.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := newLease("rec", "a", 10)
	l.Labels = map[string]string{k8sapi.RecordLabel: "true"}
	body, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(h, httptestRequest(t, "POST", leasesPath+"default/leases", string(body)))
	var st metav1.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusUnprocessableEntity || st.Reason != metav1.StatusReasonInvalid ||
		len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != "metadata.labels[leasekeeper.io/record]" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}
