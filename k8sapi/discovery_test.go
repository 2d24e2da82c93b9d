package k8sapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

func TestDiscovery(t *testing.T) {
	e := setup(t)
	aggregated := func(v string) string {
		return "application/json;g=apidiscovery.k8s.io;v=" + v + ";as=APIGroupDiscoveryList"
	}
	tests := []struct {
		name, path, accept, contentType, want string
	}{
		{"api", "/api", "", "application/json", `"kind":"APIVersions"`},
		{"api v1", "/api/v1", "", "application/json", `"kind":"APIResourceList"`},
		{"apis", "/apis", "", "application/json", `"name":"coordination.k8s.io"`},
		{"group", "/apis/coordination.k8s.io", "", "application/json", `"preferredVersion":{"groupVersion":"coordination.k8s.io/v1"`},
		{"resources", "/apis/coordination.k8s.io/v1", "", "application/json", `"name":"leases","singularName":"lease","namespaced":true,"kind":"Lease"`},
		{"version", "/version", "", "application/json", `"gitVersion":"v1.36.6+leasekeeper.test"`},
		{"apis v2", "/apis", aggregated("v2") + ",application/json", aggregated("v2"), `"apiVersion":"apidiscovery.k8s.io/v2"`},
		{"apis v2beta1", "/apis", aggregated("v2beta1") + ",application/json", aggregated("v2beta1"), `"responseKind":{"group":"coordination.k8s.io","version":"v1","kind":"Lease"}`},
		{"api v2", "/api", aggregated("v2"), aggregated("v2"), `"items":[]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept", tc.accept}
			}
			r := e.do("GET", tc.path, nil, hdr...)
			if r.code != 200 || r.hdr.Get("Content-Type") != tc.contentType || !strings.Contains(string(r.body), tc.want) {
				t.Fatalf("got %d %q %s, want %q in it", r.code, r.hdr.Get("Content-Type"), r.body, tc.want)
			}
		})
	}

	// client-go's discovery finds the resource through the aggregated
	// documents.
	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: e.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, err := dc.ServerResourcesForGroupVersion("coordination.k8s.io/v1")
	if err != nil || len(res.APIResources) != 1 || res.APIResources[0].Name != "leases" {
		t.Fatalf("discovery: %+v %v", res, err)
	}
	if sv, err := dc.ServerVersion(); err != nil || sv.Major != "1" {
		t.Fatalf("version: %+v %v", sv, err)
	}
}

func TestTable(t *testing.T) {
	e := setup(t)
	e.do("POST", leasesPath+"ns1/leases", newLease("t1", "holder-1", 10)).lease(t, http.StatusCreated)
	const accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
	for _, path := range []string{"/apis/coordination.k8s.io/v1/leases", leasesPath + "ns1/leases/t1"} {
		r := e.do("GET", path, nil, "Accept", accept)
		var tbl metav1.Table
		if err := json.Unmarshal(r.body, &tbl); err != nil || r.code != 200 || r.hdr.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s %v", path, r.code, r.body, err)
		}
		if tbl.Kind != "Table" || len(tbl.ColumnDefinitions) != 3 || len(tbl.Rows) != 1 {
			t.Fatalf("%s: %s", path, r.body)
		}
		row := tbl.Rows[0]
		var meta metav1.PartialObjectMetadata
		if err := json.Unmarshal(row.Object.Raw, &meta); err != nil || meta.Namespace != "ns1" || meta.Kind != "PartialObjectMetadata" {
			t.Fatalf("row object %s: %v", row.Object.Raw, err)
		}
		if row.Cells[0] != "t1" || row.Cells[1] != "holder-1" {
			t.Fatalf("cells %v", row.Cells)
		}
	}
}

func TestProtobufOnlyClient(t *testing.T) {
	e := setup(t)
	e.do("POST", leasesPath+"default/leases", newLease("pb", "h", 10)).lease(t, http.StatusCreated)
	r := e.do("GET", leasesPath+"default/leases/pb", nil, "Accept", "application/vnd.kubernetes.protobuf")
	if r.code != 200 || r.hdr.Get("Content-Type") != "application/vnd.kubernetes.protobuf" || !strings.HasPrefix(string(r.body), "k8s\x00") {
		t.Fatalf("got %d %q %q", r.code, r.hdr.Get("Content-Type"), r.body)
	}
	scheme := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(scheme).UniversalDeserializer().Decode(r.body, nil, nil)
	if l, ok := obj.(*coordinationv1.Lease); err != nil || !ok || *l.Spec.HolderIdentity != "h" || l.UID == "" {
		t.Fatalf("decoded %#v %v", obj, err)
	}
}

// failing answers every call with one error.
type failing struct {
	pb.LeasesClient
	err error
}

func (f failing) Get(context.Context, *pb.GetRequest, ...grpc.CallOption) (*pb.GetResponse, error) {
	return nil, f.err
}

func (f failing) Write(context.Context, *pb.WriteRequest, ...grpc.CallOption) (*pb.WriteResponse, error) {
	return nil, f.err
}

func TestGRPCErrorMapping(t *testing.T) {
	tests := []struct {
		code     codes.Code
		httpCode int
		reason   metav1.StatusReason
	}{
		{codes.NotFound, 404, metav1.StatusReasonNotFound},
		{codes.AlreadyExists, 409, metav1.StatusReasonAlreadyExists},
		{codes.Aborted, 409, metav1.StatusReasonConflict},
		{codes.FailedPrecondition, 409, metav1.StatusReasonConflict},
		{codes.InvalidArgument, 422, metav1.StatusReasonInvalid},
		{codes.Unavailable, 503, metav1.StatusReasonServiceUnavailable},
		{codes.DeadlineExceeded, 504, metav1.StatusReasonTimeout},
		{codes.ResourceExhausted, 429, metav1.StatusReasonTooManyRequests},
		{codes.Unauthenticated, 401, metav1.StatusReasonUnauthorized},
		{codes.PermissionDenied, 403, metav1.StatusReasonForbidden},
		{codes.OutOfRange, 410, metav1.StatusReasonExpired},
		{codes.Internal, 500, metav1.StatusReasonInternalError},
		{codes.Unknown, 500, metav1.StatusReasonInternalError},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			cfg := k8sapi.DefaultConfig()
			cfg.Client = failing{err: status.Error(tc.code, "boom")}
			cfg.UnavailableWait = 0
			h, err := k8sapi.NewHandler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(newLease("x", "a", 10))
			req := httptestRequest(t, "POST", leasesPath+"default/leases", string(body))
			rec := serve(h, req)
			r := response{code: rec.Code, hdr: rec.Header(), body: rec.Body.Bytes()}
			st := r.status(t, tc.httpCode, tc.reason)
			if (st.Details.Kind != "leases" && st.Details.Kind != "Lease") || st.Details.Group != "coordination.k8s.io" {
				t.Fatalf("details %+v", st.Details)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	ok := k8sapi.DefaultConfig()
	ok.Client = failing{}
	tests := []struct {
		name   string
		change func(*k8sapi.Config)
		want   string
	}{
		{"ok", func(*k8sapi.Config) {}, ""},
		{"client", func(c *k8sapi.Config) { c.Client = nil }, "Config.Client"},
		{"duration", func(c *k8sapi.Config) { c.DefaultLeaseDuration = 0 }, "Config.DefaultLeaseDuration"},
		{"timeout", func(c *k8sapi.Config) { c.RequestTimeout = 0 }, "Config.RequestTimeout"},
		{"body", func(c *k8sapi.Config) { c.MaxBodyBytes = 0 }, "Config.MaxBodyBytes"},
		{"unavailable", func(c *k8sapi.Config) { c.UnavailableWait = -1 }, "Config.UnavailableWait"},
		{"retries", func(c *k8sapi.Config) { c.MaxWriteRetries = -1 }, "Config.MaxWriteRetries"},
		{"watch", func(c *k8sapi.Config) { c.MaxWatchTimeout = 0 }, "Config.MaxWatchTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.change(&c)
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if _, herr := k8sapi.NewHandler(c); (herr == nil) != (err == nil) {
				t.Fatalf("NewHandler: %v", herr)
			}
		})
	}
}

// flaky has no leader for its first calls.
type flaky struct {
	pb.LeasesClient
	unavailable int
	calls       *int
}

func (f flaky) Get(context.Context, *pb.GetRequest, ...grpc.CallOption) (*pb.GetResponse, error) {
	*f.calls++
	if *f.calls <= f.unavailable {
		return nil, status.Error(codes.Unavailable, "no leader")
	}
	return nil, status.Error(codes.NotFound, "no lease")
}

func TestUnavailableIsWaitedOut(t *testing.T) {
	tests := []struct {
		name        string
		wait        time.Duration
		unavailable int
		code, calls int
	}{
		{"election over in time", 5 * time.Second, 3, 404, 4},
		{"no waiting", 0, 3, 503, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			cfg := k8sapi.DefaultConfig()
			cfg.Client = flaky{unavailable: tc.unavailable, calls: &calls}
			cfg.UnavailableWait = tc.wait
			h, err := k8sapi.NewHandler(cfg)
			if err != nil {
				t.Fatal(err)
			}
			rec := serve(h, httptestRequest(t, "GET", leasesPath+"default/leases/x", ""))
			if rec.Code != tc.code || calls != tc.calls {
				t.Fatalf("got %d after %d calls, want %d after %d", rec.Code, calls, tc.code, tc.calls)
			}
			if tc.code == 503 && rec.Header().Get("Retry-After") != "1" {
				t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
		})
	}
}
