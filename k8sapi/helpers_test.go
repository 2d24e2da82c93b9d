package k8sapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
	"github.com/leasekeeper/leasekeeper/k8sapi"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
	"github.com/leasekeeper/leasekeeper/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// klog, which client-go logs through, flushes from a goroutine of its own.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

// env is a 3-node in-process cluster with the Lease API in front of a
// follower, so writes cross the forwarding path.
type env struct {
	t       *testing.T
	cluster *lktest.Cluster
	grpc    pb.LeasesClient
	srv     *httptest.Server
	// contentTypes records the Content-Type of every request body.
	mu           sync.Mutex
	contentTypes []string
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, nil, nil)
}

// setupWith is setup with the nodes' and the handler's configuration
// changed by server and api (either may be nil).
func setupWith(t *testing.T, server func(*transport.Config), api func(*k8sapi.Config)) *env {
	t.Helper()
	c := lktest.StartWith(t, 3, clock.New(), nodetest.Options{}, server)
	leader := c.Leader(10 * time.Second)
	fi := (c.Index(leader) + 1) % 3
	cc, err := grpc.NewClient(c.Endpoints[fi], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cluster := pb.NewClusterClient(cc)
	waitFor(t, func() bool {
		st, err := cluster.Status(context.Background(), &pb.StatusRequest{})
		return err == nil && st.LeaderGrpcAddr != ""
	})
	cfg := k8sapi.DefaultConfig()
	cfg.Client = pb.NewLeasesClient(cc)
	cfg.Logger = nodetest.Logger(t, "k8sapi")
	cfg.Version = "test"
	if api != nil {
		api(&cfg)
	}
	h, err := k8sapi.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cluster: c, grpc: cfg.Client}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			e.mu.Lock()
			e.contentTypes = append(e.contentTypes, ct)
			e.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling cluster state: nothing to wait on
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// clientset is client-go's typed client with its defaults (protobuf for
// Leases).
func (e *env) clientset() *kubernetes.Clientset {
	e.t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: e.srv.URL})
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

type response struct {
	code int
	hdr  http.Header
	body []byte
}

// do sends a request; body is a string, []byte or a value to send as JSON.
// headers are name, value pairs.
func (e *env) do(method, path string, body any, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx(e.t), method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{code: res.StatusCode, hdr: res.Header, body: raw}
}

// decode checks the answer's code and JSON type and decodes it into v.
func (r response) decode(t *testing.T, code int, v any) {
	t.Helper()
	if r.code != code {
		t.Fatalf("got %d, want %d: %s", r.code, code, r.body)
	}
	if ct := r.hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// lease decodes a JSON Lease answer, failing on another code.
func (r response) lease(t *testing.T, code int) *coordinationv1.Lease {
	t.Helper()
	var l coordinationv1.Lease
	r.decode(t, code, &l)
	if l.Kind != "Lease" || l.APIVersion != "coordination.k8s.io/v1" {
		t.Fatalf("kind %q apiVersion %q", l.Kind, l.APIVersion)
	}
	return &l
}

// status decodes a Status answer and checks its code and reason.
func (r response) status(t *testing.T, code int, reason metav1.StatusReason) *metav1.Status {
	t.Helper()
	var st metav1.Status
	r.decode(t, code, &st)
	if st.Kind != "Status" || st.APIVersion != "v1" || st.Code != int32(code) || st.Reason != reason || st.Details == nil {
		t.Fatalf("got Status %s, want code %d reason %q with details", r.body, code, reason)
	}
	return &st
}

func ptr[T any](v T) *T { return &v }

func newLease(name, holder string, secs int32) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}
	if holder != "" {
		now := metav1.NowMicro()
		l.Spec = coordinationv1.LeaseSpec{
			HolderIdentity: ptr(holder), LeaseDurationSeconds: ptr(secs),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr(int32(0)),
		}
	}
	return l
}

const leasesPath = "/apis/coordination.k8s.io/v1/namespaces/"

func httptestRequest(t *testing.T, method, path, body string) *http.Request {
	t.Helper()
	req := httptest.NewRequestWithContext(ctx(t), method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return req
}

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
