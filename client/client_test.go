package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newClient returns a Client for endpoints with fast retries, closed when t
// ends.
func newClient(t *testing.T, endpoints ...string) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.DialTimeout = time.Second
	cfg.BackoffBase = time.Millisecond
	cfg.BackoffMax = 10 * time.Millisecond
	cfg.MaxRetries = 5
	cfg.WatchProgressInterval = 100 * time.Millisecond
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "client", Level: hclog.Debug, Output: testWriter{t}})
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// deadEndpoint returns an address where nothing listens.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*client.Config)
		wantErr string
	}{
		{name: "default", change: func(*client.Config) {}},
		{name: "no endpoints", change: func(c *client.Config) { c.Endpoints = nil }, wantErr: "Endpoints is empty"},
		{name: "no port", change: func(c *client.Config) { c.Endpoints = []string{"localhost"} }, wantErr: "not host:port"},
		{name: "empty host", change: func(c *client.Config) { c.Endpoints = []string{":7001"} }, wantErr: "not host:port"},
		{name: "zero dial timeout", change: func(c *client.Config) { c.DialTimeout = 0 }, wantErr: "DialTimeout"},
		{name: "negative retries", change: func(c *client.Config) { c.MaxRetries = -1 }, wantErr: "MaxRetries"},
		{name: "zero backoff", change: func(c *client.Config) { c.BackoffBase = 0 }, wantErr: "BackoffBase"},
		{name: "max below base", change: func(c *client.Config) { c.BackoffMax = time.Millisecond }, wantErr: "BackoffMax"},
		{name: "negative drift", change: func(c *client.Config) { c.MaxDrift = -0.1 }, wantErr: "MaxDrift"},
		{name: "huge drift", change: func(c *client.Config) { c.MaxDrift = 0.5 }, wantErr: "MaxDrift"},
		{name: "negative margin", change: func(c *client.Config) { c.Margin = -time.Millisecond }, wantErr: "Margin"},
		{name: "zero renew fraction", change: func(c *client.Config) { c.RenewFraction = 0 }, wantErr: "RenewFraction"},
		{name: "renew fraction past drift", change: func(c *client.Config) { c.RenewFraction = 0.995 }, wantErr: "RenewFraction"},
		{name: "negative attempt timeout", change: func(c *client.Config) { c.AttemptTimeout = -time.Second }, wantErr: "AttemptTimeout"},
		{name: "no attempt timeout", change: func(c *client.Config) { c.AttemptTimeout = 0 }},
		{name: "progress too often", change: func(c *client.Config) { c.WatchProgressInterval = time.Millisecond }, wantErr: "WatchProgressInterval"},
		{name: "no progress", change: func(c *client.Config) { c.WatchProgressInterval = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := client.DefaultConfig()
			tt.change(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			c, err := client.New(cfg)
			if (err == nil) != (tt.wantErr == "") {
				t.Fatalf("New() error = %v, want error %v", err, tt.wantErr != "")
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

func TestNewDoesNotConnect(t *testing.T) {
	c := newClient(t, deadEndpoint(t))
	if got := c.Endpoints(); len(got) != 1 {
		t.Fatalf("Endpoints() = %v", got)
	}
}

func TestFailoverOnUnavailable(t *testing.T) {
	down, up := clienttest.Start(t), clienttest.Start(t)
	down.Inject("", clienttest.Unavailable)
	c := newClient(t, down.Addr, up.Addr)
	ctx := context.Background()

	resp, err := c.Acquire(ctx, "", "db", "alice", 10*time.Second, 0, nil)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if !resp.Acquired || resp.Lease.HolderIdentity != "alice" {
		t.Fatalf("Acquire = %v, want acquired by alice", resp)
	}
	// The next call starts at the endpoint that answered.
	if _, err := c.Get(ctx, "", "db", false); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got, want := down.Calls("Acquire")+down.Calls("Get"), 1; got != want {
		t.Errorf("calls to the unavailable node = %d, want %d", got, want)
	}
	if got, want := up.Calls("Acquire")+up.Calls("Get"), 2; got != want {
		t.Errorf("calls to the healthy node = %d, want %d", got, want)
	}
}

func TestFailoverOnDeadEndpoint(t *testing.T) {
	up := clienttest.Start(t)
	c := newClient(t, deadEndpoint(t), deadEndpoint(t), up.Addr)
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Id != up.ID {
		t.Fatalf("Status answered by %q, want %q", st.Id, up.ID)
	}
}

func TestRetriesCappedWithoutDeadline(t *testing.T) {
	a, b := clienttest.Start(t), clienttest.Start(t)
	a.Inject("", clienttest.Unavailable)
	b.Inject("", clienttest.Unavailable)
	c := newClient(t, a.Addr, b.Addr) // MaxRetries 5

	_, err := c.Get(context.Background(), "", "db", false)
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Get error = %v, want ErrUnavailable", err)
	}
	if got, want := status.Code(err), codes.Unavailable; got != want {
		t.Errorf("status.Code = %v, want %v", got, want)
	}
	if !strings.Contains(err.Error(), "no leader known") {
		t.Errorf("error %q lost the server's message", err)
	}
	if got, want := a.Calls("Get")+b.Calls("Get"), 6; got != want {
		t.Errorf("attempts = %d, want %d (1 + MaxRetries)", got, want)
	}
	if a.Calls("Get") != 3 || b.Calls("Get") != 3 {
		t.Errorf("attempts per node = %d, %d, want alternating 3, 3", a.Calls("Get"), b.Calls("Get"))
	}
}

func TestRetriesUntilDeadline(t *testing.T) {
	a := clienttest.Start(t)
	a.Inject("", clienttest.Unavailable)
	c := newClient(t, a.Addr)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := c.Get(ctx, "", "db", false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get error = %v, want context.DeadlineExceeded", err)
	}
	if got, want := status.Code(err), codes.DeadlineExceeded; got != want {
		t.Errorf("status.Code = %v, want %v", got, want)
	}
	// With a deadline the cap of 5 retries does not apply.
	if got := a.Calls("Get"); got <= 6 {
		t.Errorf("attempts = %d, want more than 1 + MaxRetries", got)
	}
}

// Two silent nodes: the call tries both within its deadline, a third of
// the time left each (never less than 100ms), and the deadline ends it.
func TestDeadlineHonoured(t *testing.T) {
	a, b := clienttest.Start(t), clienttest.Start(t)
	a.Inject("", clienttest.Hang)
	b.Inject("", clienttest.Hang)
	c := newClient(t, a.Addr, b.Addr)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Renew(ctx, "", "db", "alice", 1)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Renew took %v with a 300ms deadline", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Renew error = %v, want context.DeadlineExceeded", err)
	}
	if got, want := status.Code(err), codes.DeadlineExceeded; got != want {
		t.Errorf("status.Code = %v, want %v", got, want)
	}
	if a.Calls("Renew") == 0 || b.Calls("Renew") == 0 {
		t.Errorf("attempts on a, b = %d, %d; want both tried", a.Calls("Renew"), b.Calls("Renew"))
	}
	for _, ep := range []string{a.Addr, b.Addr} {
		if !strings.Contains(err.Error(), ep) {
			t.Errorf("error %q does not name %s, which it tried", err, ep)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name string
		code codes.Code
		want error
	}{
		{name: "not found", code: codes.NotFound, want: client.ErrNotFound},
		{name: "stale token", code: codes.FailedPrecondition, want: client.ErrStaleToken},
		{name: "invalid", code: codes.InvalidArgument, want: client.ErrInvalid},
		{name: "permission", code: codes.PermissionDenied, want: client.ErrPermission},
		{name: "unmapped", code: codes.Internal},
	}
	srv := clienttest.Start(t)
	c := newClient(t, srv.Addr)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := srv.Calls("Delete")
			srv.Inject("Delete", func(context.Context) error { return status.Error(tt.code, "server says "+tt.name) })
			defer srv.Inject("Delete", nil)

			_, err := c.Delete(context.Background(), "", "db")
			if err == nil {
				t.Fatal("Delete succeeded, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.want)
			}
			if got := status.Code(err); got != tt.code {
				t.Errorf("status.Code = %v, want %v", got, tt.code)
			}
			if !strings.Contains(err.Error(), "server says "+tt.name) {
				t.Errorf("error %q lost the server's message", err)
			}
			if got := srv.Calls("Delete") - before; got != 1 {
				t.Errorf("attempts = %d, want 1: %v is not retried", got, tt.code)
			}
		})
	}
}

func TestLeaseLifecycle(t *testing.T) {
	srv := clienttest.Start(t)
	c := newClient(t, srv.Addr)
	ctx := context.Background()

	got, err := c.Acquire(ctx, "jobs", "db", "alice", 10*time.Second, 2*time.Second, map[string]string{"app": "db"})
	if err != nil || !got.Acquired {
		t.Fatalf("Acquire = %v, %v; want acquired", got, err)
	}
	token := got.Lease.FencingToken

	other, err := c.Acquire(ctx, "jobs", "db", "bob", 10*time.Second, 0, nil)
	if err != nil {
		t.Fatalf("Acquire by another holder: %v", err)
	}
	if other.Acquired || other.Lease.HolderIdentity != "alice" || other.Remaining == nil {
		t.Errorf("Acquire by bob = %v, want not acquired, held by alice, with remaining", other)
	}

	if _, err := c.Renew(ctx, "jobs", "db", "alice", token+1); !errors.Is(err, client.ErrStaleToken) {
		t.Errorf("Renew with a wrong token: error = %v, want ErrStaleToken", err)
	}
	if l, err := c.Renew(ctx, "jobs", "db", "alice", token); err != nil || l.FencingToken != token {
		t.Errorf("Renew = %v, %v", l, err)
	}
	list, err := c.List(ctx, &pb.ListRequest{Namespace: "jobs", LabelSelector: "app=db"})
	if err != nil || len(list.Leases) != 1 {
		t.Errorf("List = %v, %v; want one lease", list, err)
	}
	if l, err := c.Release(ctx, "jobs", "db", "alice", token); err != nil || l.HolderIdentity != "" {
		t.Errorf("Release = %v, %v; want a free lease", l, err)
	}
	if _, err := c.Delete(ctx, "jobs", "db"); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := c.Get(ctx, "jobs", "db", true); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get after Delete: error = %v, want ErrNotFound", err)
	}
}

func TestWatch(t *testing.T) {
	srv := clienttest.Start(t)
	c := newClient(t, deadEndpoint(t), srv.Addr)
	srv.Put(&pb.Lease{Name: "a"})
	srv.Put(&pb.Lease{Name: "b"})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := c.Watch(ctx, &pb.WatchRequest{Name: "b"})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	ev, err := stream.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if ev.Type != pb.WatchEvent_ADDED || ev.Lease.Name != "b" {
		t.Errorf("event = %v, want ADDED b", ev)
	}
	srv.Emit(pb.WatchEvent_DELETED, "default", "b")
	if ev, err = stream.Recv(); err != nil || ev.Type != pb.WatchEvent_DELETED {
		t.Errorf("Recv = %v, %v; want DELETED b", ev, err)
	}
	cancel()
	if _, err := stream.Recv(); !errors.Is(err, context.Canceled) || status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: error = %v, want context.Canceled", err)
	}
}

func TestWatchErrorMapped(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Inject("WatchBatches", clienttest.Unavailable)
	c := newClient(t, srv.Addr)
	stream, err := c.Watch(context.Background(), &pb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, client.ErrUnavailable) || err == io.EOF {
		t.Errorf("Recv error = %v, want ErrUnavailable", err)
	}
}

func TestClose(t *testing.T) {
	srv := clienttest.Start(t)
	c := newClient(t, srv.Addr)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatalf("Status: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.Status(context.Background()); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Status after Close: error = %v, want ErrClosed", err)
	}
	// The second Close, from newClient's cleanup, must succeed too.
}

func TestNewLeaseJSON(t *testing.T) {
	start := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	l := &pb.Lease{
		Namespace: "default", Name: "db", HolderIdentity: "alice",
		LeaseDuration: durationpb.New(1500 * time.Millisecond), GracePeriod: durationpb.New(2 * time.Second),
		AcquireTime: timestamppb.New(start), LeaseTransitions: 3, FencingToken: 9,
		Labels: map[string]string{"app": "db"}, ResourceVersion: 12, CreateTime: timestamppb.New(start),
		History: []*pb.Holding{{HolderIdentity: "alice", FencingToken: 9, StartTime: timestamppb.New(start)}},
	}
	b, err := json.Marshal(client.NewLeaseJSON(l))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"namespace": "default", "name": "db", "holderIdentity": "alice",
		"leaseDurationSeconds": 1.5, "gracePeriodSeconds": 2.0,
		"acquireTime": "2025-01-02T03:04:05.0000006Z", "leaseTransitions": 3.0, "fencingToken": 9.0,
		"resourceVersion": 12.0, "createTime": "2025-01-02T03:04:05.0000006Z",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["renewTime"]; ok {
		t.Errorf("renewTime present though unset: %s", b)
	}
	if h, ok := got["history"].([]any); !ok || len(h) != 1 || h[0].(map[string]any)["startTime"] == nil {
		t.Errorf("history = %v, want one holding with startTime", got["history"])
	}
}
