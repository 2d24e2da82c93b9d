package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/clock"
)

// callCounter counts every RPC that a client starts, unary or stream.
type callCounter struct{ n atomic.Int64 }

func (cc *callCounter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, conn *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			cc.n.Add(1)
			return invoker(ctx, method, req, reply, conn, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, conn *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cc.n.Add(1)
			return streamer(ctx, desc, conn, method, opts...)
		}),
	}
}

// offlineClient is a client of an address where nothing listens, counting
// its calls: construction must need no cluster.
func offlineClient(t *testing.T) (*client.Client, *callCounter) {
	t.Helper()
	calls := &callCounter{}
	c := lkClient(t, []string{"127.0.0.1:1"}, func(cfg *client.Config) {
		cfg.DialOptions = append(cfg.DialOptions, calls.dialOptions()...)
	})
	return c, calls
}

// wantInvalid fails t unless err matches ErrInvalid, carries no gRPC
// status (no server answered), and says every one of want.
func wantInvalid(t *testing.T, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("err = %v, want one matching ErrInvalid", err)
	}
	if _, ok := status.FromError(err); ok {
		t.Errorf("err = %v carries a gRPC status, as if a server had answered", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %q, want it to say %q", err, w)
		}
	}
}

// badOption is one invalid option (or name) and what its error must say.
type badOption struct {
	name  string
	lease string // "" means a valid one
	opts  []client.Option
	want  []string
}

func badOptions() []badOption {
	long := strings.Repeat("a", 254)
	many := map[string]string{}
	for i := range 65 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	return []badOption{
		{name: "empty name", lease: "-", want: []string{"lease name is empty"}},
		{name: "name with capitals", lease: "Bad_Name", want: []string{"lease name", "DNS-1123"}},
		{name: "name too long", lease: long, want: []string{"lease name", "DNS-1123"}},
		{name: "empty namespace", opts: []client.Option{client.WithNamespace("")}, want: []string{"WithNamespace", "namespace is empty"}},
		{name: "namespace with a dot", opts: []client.Option{client.WithNamespace("a.b")}, want: []string{"WithNamespace", "DNS-1123 label"}},
		{name: "namespace too long", opts: []client.Option{client.WithNamespace(strings.Repeat("n", 64))}, want: []string{"WithNamespace"}},
		{name: "empty identity", opts: []client.Option{client.WithIdentity("")}, want: []string{"WithIdentity", "empty"}},
		{name: "identity too long", opts: []client.Option{client.WithIdentity(long)}, want: []string{"WithIdentity", "longer than 253"}},
		{name: "identity not printable", opts: []client.Option{client.WithIdentity("a\x00b")}, want: []string{"WithIdentity", "non-printable"}},
		{name: "zero TTL", opts: []client.Option{client.WithTTL(0)}, want: []string{"WithTTL", "positive"}},
		{name: "negative TTL", opts: []client.Option{client.WithTTL(-time.Second)}, want: []string{"WithTTL"}},
		{name: "negative grace", opts: []client.Option{client.WithGrace(-time.Second)}, want: []string{"WithGrace"}},
		{name: "negative lock delay", opts: []client.Option{client.WithLockDelay(-time.Second)}, want: []string{"WithLockDelay"}},
		{name: "negative renew interval", opts: []client.Option{client.WithRenewInterval(-time.Second)}, want: []string{"WithRenewInterval"}},
		{name: "renewal after the deadline", opts: []client.Option{client.WithTTL(time.Second), client.WithRenewInterval(time.Second)}, want: []string{"local deadline", "renewal interval 1s"}},
		{name: "TTL within the margin", opts: []client.Option{client.WithTTL(40 * time.Millisecond)}, want: []string{"local deadline", "Config.Margin"}},
		{name: "zero retry period", opts: []client.Option{client.WithRetryPeriod(0)}, want: []string{"WithRetryPeriod"}},
		{name: "invalid profile", opts: []client.Option{client.WithProfile(client.Profile{LeaseDuration: time.Second, RenewFraction: 1.5, RetryPeriod: time.Second})}, want: []string{"WithProfile", "RenewFraction"}},
		{name: "invalid profile overridden later", opts: []client.Option{client.WithProfile(client.Profile{}), client.WithTTL(time.Minute)}, want: []string{"WithProfile", "LeaseDuration"}},
		{name: "bad label key", opts: []client.Option{client.WithLabels(map[string]string{"not a key": "v"})}, want: []string{"WithLabels", "label key"}},
		{name: "bad label value", opts: []client.Option{client.WithLabels(map[string]string{"k": "not a value!"})}, want: []string{"WithLabels", "value"}},
		{name: "too many labels", opts: []client.Option{client.WithLabels(many)}, want: []string{"WithLabels", "too many labels: 65"}},
	}
}

// TestConstructorsRefuseBadOptions: NewMutex, NewLocker, NewElection and
// NewHeartbeat refuse each kind of bad option or name at construction,
// return nothing else, and make no call to the cluster doing so.
func TestConstructorsRefuseBadOptions(t *testing.T) {
	c, calls := offlineClient(t)
	ctors := []struct {
		name string
		make func(name string, opts ...client.Option) (any, error)
	}{
		{"NewMutex", func(n string, o ...client.Option) (any, error) { return client.NewMutex(c, n, o...) }},
		{"NewLocker", func(n string, o ...client.Option) (any, error) { return client.NewLocker(c, n, o...) }},
		{"NewElection", func(n string, o ...client.Option) (any, error) { return client.NewElection(c, n, o...) }},
		{"NewHeartbeat", func(n string, o ...client.Option) (any, error) { return client.NewHeartbeat(c, "", n, o...) }},
	}
	for _, ctor := range ctors {
		for _, tc := range badOptions() {
			t.Run(ctor.name+"/"+tc.name, func(t *testing.T) {
				lease := "valid-name"
				switch tc.lease {
				case "":
				case "-":
					lease = ""
				default:
					lease = tc.lease
				}
				want := append([]string{ctor.name}, tc.want...)
				if ctor.name == "NewHeartbeat" {
					switch tc.name {
					case "empty namespace", "namespace with a dot", "namespace too long",
						"empty identity", "identity too long", "identity not printable",
						"negative lock delay":
						// The namespace and identity are the arguments,
						// and a heartbeat takes no lock delay.
						want = []string{"NewHeartbeat", "does not apply"}
					case "empty name":
						want = []string{"NewHeartbeat", "node name is empty"}
					}
				}
				v, err := ctor.make(lease, tc.opts...)
				wantInvalid(t, err, want...)
				if !isNil(v) {
					t.Errorf("%s returned %v with its error", ctor.name, v)
				}
			})
		}
	}
	if n := calls.n.Load(); n != 0 {
		t.Errorf("refusing options made %d calls, want none", n)
	}
}

// isNil reports whether a constructor's result is a nil pointer or nil
// interface.
func isNil(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case *client.Mutex:
		return v == nil
	case *client.Election:
		return v == nil
	case *client.Heartbeat:
		return v == nil
	}
	return false
}

// TestConstructorsRefuseOptionsTheyDoNotUse: an option that a constructor
// would ignore is refused, naming it, rather than dropped.
func TestConstructorsRefuseOptionsTheyDoNotUse(t *testing.T) {
	c, calls := offlineClient(t)
	for _, tc := range []struct {
		name string
		opt  client.Option
		want string
	}{
		// WithNamespace("default") used to pass unnoticed: it equals the
		// default, so only the option's presence tells.
		{"namespace equal to the default", client.WithNamespace(client.DefaultNamespace), "WithNamespace"},
		{"namespace", client.WithNamespace("other"), "WithNamespace"},
		{"identity", client.WithIdentity("someone-else"), "WithIdentity"},
		{"lock delay", client.WithLockDelay(time.Second), "WithLockDelay"},
	} {
		t.Run("NewHeartbeat/"+tc.name, func(t *testing.T) {
			hb, err := client.NewHeartbeat(c, "nodes", "node-1", tc.opt)
			wantInvalid(t, err, "NewHeartbeat", tc.want, "does not apply")
			if hb != nil {
				t.Errorf("NewHeartbeat returned %v with its error", hb)
			}
		})
	}
	t.Run("NewElection/value label", func(t *testing.T) {
		e, err := client.NewElection(c, "e", client.WithLabels(map[string]string{client.ElectionValueLabel: "x"}))
		wantInvalid(t, err, "NewElection", "WithLabels", client.ElectionValueLabel)
		if e != nil {
			t.Errorf("NewElection returned %v with its error", e)
		}
	})
	if n := calls.n.Load(); n != 0 {
		t.Errorf("refusing options made %d calls, want none", n)
	}
}

// TestNewMonitorRefusesBadArguments: a bad namespace or a nil clock is
// refused at construction.
func TestNewMonitorRefusesBadArguments(t *testing.T) {
	c, calls := offlineClient(t)
	for _, tc := range []struct {
		name      string
		namespace string
		opts      []client.MonitorOption
		want      string
	}{
		{"namespace with capitals", "Nodes", nil, "DNS-1123 label"},
		{"namespace too long", strings.Repeat("n", 64), nil, "DNS-1123 label"},
		{"nil clock", "nodes", []client.MonitorOption{client.WithMonitorClock(nil)}, "WithMonitorClock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := client.NewMonitor(c, tc.namespace, tc.opts...)
			wantInvalid(t, err, "NewMonitor", tc.want)
			if m != nil {
				t.Errorf("NewMonitor returned %v with its error", m)
			}
		})
	}
	if n := calls.n.Load(); n != 0 {
		t.Errorf("refusing arguments made %d calls, want none", n)
	}
}

// TestConstructorsRefuseNilClient: a nil client is an ErrInvalid, not a
// panic at first use.
func TestConstructorsRefuseNilClient(t *testing.T) {
	_, err := client.NewMutex(nil, "x")
	wantInvalid(t, err, "NewMutex", "nil *Client")
	_, err = client.NewLocker(nil, "x")
	wantInvalid(t, err, "NewLocker", "nil *Client")
	_, err = client.NewElection(nil, "x")
	wantInvalid(t, err, "NewElection", "nil *Client")
	_, err = client.NewHeartbeat(nil, "", "x")
	wantInvalid(t, err, "NewHeartbeat", "nil *Client")
	_, err = client.NewMonitor(nil, "")
	wantInvalid(t, err, "NewMonitor", "nil *Client")
}

// TestValidConstructionIsOffline: every constructor succeeds against an
// address where nothing listens, with every option it takes, and makes no
// call; the options are kept (the identity and namespace show).
func TestValidConstructionIsOffline(t *testing.T) {
	c, calls := offlineClient(t)
	all := []client.Option{
		client.WithNamespace("team-a"), client.WithIdentity("worker 1"),
		client.WithProfile(client.TestProfile()), client.WithTTL(10 * time.Second),
		client.WithGrace(time.Second), client.WithLabels(map[string]string{"app": "x", "example.com/tier": "db"}),
		client.WithLockDelay(time.Second), client.WithRenewInterval(2 * time.Second),
		client.WithRecordedRenewals(), client.WithRetryPeriod(time.Second),
	}
	m, err := client.NewMutex(c, "db.migration", all...)
	if err != nil {
		t.Fatalf("NewMutex: %v", err)
	}
	if m.Namespace() != "team-a" || m.Identity() != "worker 1" || m.Name() != "db.migration" {
		t.Errorf("Mutex = %s/%s as %q, want team-a/db.migration as \"worker 1\"", m.Namespace(), m.Name(), m.Identity())
	}
	if _, err := client.NewLocker(c, "db.migration", all...); err != nil {
		t.Fatalf("NewLocker: %v", err)
	}
	e, err := client.NewElection(c, "primary", all...)
	if err != nil {
		t.Fatalf("NewElection: %v", err)
	}
	if e.Identity() != "worker 1" {
		t.Errorf("Election identity = %q, want %q", e.Identity(), "worker 1")
	}
	// Without WithIdentity each gets a unique one.
	m1, err1 := client.NewMutex(c, "x")
	m2, err2 := client.NewMutex(c, "x")
	if err1 != nil || err2 != nil {
		t.Fatalf("NewMutex without options: %v, %v", err1, err2)
	}
	if m1.Identity() == "" || m1.Identity() == m2.Identity() {
		t.Errorf("identities without WithIdentity: %q and %q, want two distinct", m1.Identity(), m2.Identity())
	}
	if _, err := client.NewHeartbeat(c, "nodes", "node-1", client.WithProfile(client.TestProfile()), client.WithTTL(10*time.Second),
		client.WithGrace(time.Second), client.WithLabels(map[string]string{"zone": "a"}), client.WithRenewInterval(2*time.Second),
		client.WithRecordedRenewals(), client.WithRetryPeriod(time.Second)); err != nil {
		t.Fatalf("NewHeartbeat: %v", err)
	}
	if _, err := client.NewMonitor(c, "nodes", client.WithMonitorClock(clock.New()), client.WithMemberEvents(make(chan client.MemberEvent, 1))); err != nil {
		t.Fatalf("NewMonitor: %v", err)
	}
	if _, err := client.NewSemaphore(c, "pool", 3, all...); err != nil {
		t.Fatalf("NewSemaphore: %v", err)
	}
	if n := calls.n.Load(); n != 0 {
		t.Errorf("construction made %d calls, want none", n)
	}
	// The counter does count: a call through the same client is seen (it
	// fails, as nothing listens).
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _ = c.Get(ctx, "team-a", "db.migration", false)
	if calls.n.Load() == 0 {
		t.Error("a Get made no call the counter saw: the check above proves nothing")
	}
}
