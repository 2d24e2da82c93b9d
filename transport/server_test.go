package transport_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type conn struct {
	pb.LeasesClient
	cluster pb.ClusterClient
}

func dial(t *testing.T, addr string) conn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return conn{pb.NewLeasesClient(cc), pb.NewClusterClient(cc)}
}

// start runs a 3-node cluster and returns a connection to a follower, so
// every write in the tests crosses the forwarding path.
func start(t *testing.T) (*lktest.Cluster, conn, conn) {
	t.Helper()
	c := lktest.Start(t, 3, clock.New())
	leader := c.Leader(10 * time.Second)
	li := c.Index(leader)
	fi := (li + 1) % 3
	follower := dial(t, c.Endpoints[fi])
	// The follower forwards once it knows the leader's address.
	waitFor(t, func() bool {
		st, err := follower.cluster.Status(context.Background(), &pb.StatusRequest{})
		return err == nil && st.LeaderGrpcAddr != ""
	})
	return c, follower, dial(t, c.Endpoints[li])
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond) // polling cluster state over gRPC
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func acq(name, holder string, d time.Duration) *pb.AcquireRequest {
	return &pb.AcquireRequest{Name: name, HolderIdentity: holder, LeaseDuration: durationpb.New(d)}
}

func TestAcquireContendReleaseThroughFollower(t *testing.T) {
	_, f, _ := start(t)
	a, err := f.Acquire(ctx(t), acq("db", "a", 10*time.Second))
	if err != nil || !a.Acquired || a.Lease.Namespace != "default" {
		t.Fatalf("acquire by a: %v %+v", err, a)
	}
	t1 := a.Lease.FencingToken
	b, err := f.Acquire(ctx(t), acq("db", "b", 10*time.Second))
	if err != nil || b.Acquired || b.Lease.HolderIdentity != "a" {
		t.Fatalf("acquire by b while a holds: err=%v acquired=%v holder=%q", err, b.GetAcquired(), b.GetLease().GetHolderIdentity())
	}
	if b.Remaining == nil || b.Remaining.AsDuration() <= 0 || b.Remaining.AsDuration() > 10*time.Second {
		t.Errorf("remaining for the refused acquire: %v, want in (0, 10s]", b.Remaining.AsDuration())
	}
	if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "db", HolderIdentity: "a", FencingToken: t1}); err != nil {
		t.Fatalf("release: %v", err)
	}
	b, err = f.Acquire(ctx(t), acq("db", "b", 10*time.Second))
	if err != nil || !b.Acquired || b.Lease.FencingToken <= t1 || b.Lease.LeaseTransitions != 2 {
		t.Fatalf("acquire by b after release: err=%v %+v, want token > %d and 2 transitions", err, b.GetLease(), t1)
	}
	// Stale token: FailedPrecondition carrying the current holding.
	_, err = f.Renew(ctx(t), &pb.RenewRequest{Name: "db", HolderIdentity: "a", FencingToken: t1})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("renew with a stale token: %v, want FailedPrecondition", err)
	}
	var current *pb.Lease
	for _, d := range st.Details() {
		if l, ok := d.(*pb.Lease); ok {
			current = l
		}
	}
	if current == nil || current.HolderIdentity != "b" {
		t.Errorf("stale renew detail: got %+v, want the current holding by b", current)
	}
	// Writes answer without the history of holdings; Get has it.
	if n := len(b.Lease.History); n != 0 {
		t.Errorf("acquire answered with %d past holdings, want none", n)
	}
	g, err := f.Get(ctx(t), &pb.GetRequest{Name: "db"})
	if err != nil || len(g.Lease.History) != 2 || g.Lease.History[0].HolderIdentity != "b" || g.Lease.History[1].EndReason != "released" {
		t.Fatalf("get: err=%v history %+v, want b's holding then a's released one", err, g.GetLease().GetHistory())
	}
}

func TestBadInput(t *testing.T) {
	_, f, _ := start(t)
	held, err := f.Acquire(ctx(t), acq("held", "a", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	tok := held.Lease.FencingToken
	huge := strings.Repeat("x", 10<<20)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"upper-case name", func() error { _, err := f.Acquire(ctx(t), acq("DB", "a", time.Second)); return err }, codes.InvalidArgument},
		{"empty name", func() error { _, err := f.Acquire(ctx(t), acq("", "a", time.Second)); return err }, codes.InvalidArgument},
		{"name too long", func() error { _, err := f.Acquire(ctx(t), acq(strings.Repeat("a", 254), "a", time.Second)); return err }, codes.InvalidArgument},
		{"empty name part", func() error { _, err := f.Acquire(ctx(t), acq("a..b", "a", time.Second)); return err }, codes.InvalidArgument},
		{"dotted namespace", func() error {
			r := acq("db", "a", time.Second)
			r.Namespace = "a.b"
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"bad namespace", func() error {
			r := acq("db", "a", time.Second)
			r.Namespace = "a_b"
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"no holder", func() error { _, err := f.Acquire(ctx(t), acq("db", "", time.Second)); return err }, codes.InvalidArgument},
		{"zero duration", func() error { _, err := f.Acquire(ctx(t), acq("db", "a", 0)); return err }, codes.InvalidArgument},
		{"negative duration", func() error { _, err := f.Acquire(ctx(t), acq("db", "a", -time.Second)); return err }, codes.InvalidArgument},
		{"absurd duration", func() error { _, err := f.Acquire(ctx(t), acq("db", "a", 1000*time.Hour)); return err }, codes.InvalidArgument},
		{"negative lock delay", func() error {
			r := acq("db", "a", time.Second)
			r.LockDelay = durationpb.New(-time.Second)
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"lock delay above the maximum", func() error {
			r := acq("db", "a", time.Second)
			r.LockDelay = durationpb.New(time.Minute + time.Nanosecond) // the default maximum
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"no duration", func() error {
			_, err := f.Acquire(ctx(t), &pb.AcquireRequest{Name: "db", HolderIdentity: "a"})
			return err
		}, codes.InvalidArgument},
		{"negative grace", func() error {
			r := acq("db", "a", time.Second)
			r.GracePeriod = durationpb.New(-time.Second)
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"bad label", func() error {
			r := acq("db", "a", time.Second)
			r.Labels = map[string]string{"bad key!": "v"}
			_, err := f.Acquire(ctx(t), r)
			return err
		}, codes.InvalidArgument},
		{"renew without token", func() error {
			_, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "held", HolderIdentity: "a"})
			return err
		}, codes.InvalidArgument},
		{"renew wrong token", func() error {
			_, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "held", HolderIdentity: "a", FencingToken: tok + 1000})
			return err
		}, codes.FailedPrecondition},
		{"renew wrong holder", func() error {
			_, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "held", HolderIdentity: "b", FencingToken: tok})
			return err
		}, codes.FailedPrecondition},
		{"renew in unknown namespace", func() error {
			_, err := f.Renew(ctx(t), &pb.RenewRequest{Namespace: "nowhere", Name: "held", HolderIdentity: "a", FencingToken: tok})
			return err
		}, codes.NotFound},
		{"release wrong token", func() error {
			_, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "held", HolderIdentity: "a", FencingToken: tok + 1})
			return err
		}, codes.FailedPrecondition},
		{"get missing", func() error { _, err := f.Get(ctx(t), &pb.GetRequest{Name: "missing"}); return err }, codes.NotFound},
		{"delete missing", func() error { _, err := f.Delete(ctx(t), &pb.DeleteRequest{Name: "missing"}); return err }, codes.NotFound},
		{"delete with a wrong version", func() error {
			_, err := f.Delete(ctx(t), &pb.DeleteRequest{Name: "held", ResourceVersion: held.Lease.ResourceVersion + 1000})
			return err
		}, codes.Aborted},
		{"bad selector", func() error { _, err := f.List(ctx(t), &pb.ListRequest{LabelSelector: "a=b=c"}); return err }, codes.InvalidArgument},
		{"10 MB request", func() error { _, err := f.Acquire(ctx(t), acq("db", huge, time.Second)); return err }, codes.ResourceExhausted},
		{"expired deadline", func() error {
			c, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			_, err := f.Acquire(c, acq("db", "a", time.Second))
			return err
		}, codes.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := status.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
			if tc.want == codes.InvalidArgument && len(status.Convert(err).Message()) < 10 {
				t.Errorf("message %q does not explain the error", status.Convert(err).Message())
			}
		})
	}
	// The cluster keeps serving, and the held lease is untouched. (A loaded
	// machine may have cost the leader its leadership meanwhile: a new one
	// is waited for, within a bound.)
	g, err := f.Get(ctx(t), &pb.GetRequest{Name: "held"})
	for deadline := time.Now().Add(5 * time.Second); status.Code(err) == codes.Unavailable && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // an election: no event reaches the test
		g, err = f.Get(ctx(t), &pb.GetRequest{Name: "held"})
	}
	if err != nil || g.Lease.HolderIdentity != "a" || g.Lease.FencingToken != tok {
		t.Fatalf("after bad input: %v %+v", err, g.GetLease())
	}
}

// TestSubdomainNames: a lease name may be a DNS-1123 subdomain, as in
// Kubernetes (a kubebuilder election ID, a node's FQDN), up to 253
// characters; refusals say why in Kubernetes' words.
func TestSubdomainNames(t *testing.T) {
	_, f, _ := start(t)
	long := strings.Repeat("a", 61) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63)
	for _, name := range []string{"80807133.tutorial.kubebuilder.io", long} {
		r := acq(name, "a", 200*time.Millisecond)
		r.Labels = map[string]string{"app": "dotted"}
		res, err := f.Acquire(ctx(t), r)
		if err != nil || !res.Acquired || res.Lease.Name != name {
			t.Fatalf("acquire %q: %v %+v", name, err, res)
		}
		l, err := f.List(ctx(t), &pb.ListRequest{Name: name, LabelSelector: "app=dotted"})
		if err != nil || len(l.Leases) != 1 {
			t.Fatalf("list %q: %v %v", name, err, l)
		}
		// The leader's expiry table ends the holding.
		waitFor(t, func() bool {
			g, err := f.Get(ctx(t), &pb.GetRequest{Name: name})
			return err == nil && g.Lease.HolderIdentity == ""
		})
	}
	if len(long) != 253 {
		t.Fatalf("the long name has %d characters, want 253", len(long))
	}
	_, err := f.Acquire(ctx(t), acq(long+"e", "a", time.Second))
	if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "must be no more than 253 characters") {
		t.Fatalf("254 characters: %v", err)
	}
	_, err = f.Acquire(ctx(t), acq("Web.example", "a", time.Second))
	want := `name: Invalid value: "Web.example": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`
	if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(msg, want) {
		t.Fatalf("upper case: %v, want a message starting %q", err, want)
	}
	r := acq("db", "a", time.Second)
	r.Namespace = "team.a"
	_, err = f.Acquire(ctx(t), r)
	if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || !strings.Contains(msg, "must not contain dots") {
		t.Fatalf("dotted namespace: %v", err)
	}
}

func TestReadsListAndWatch(t *testing.T) {
	_, f, _ := start(t)
	if _, err := f.Acquire(ctx(t), acq("first", "a", time.Minute)); err != nil {
		t.Fatal(err)
	}
	list0, err := f.List(ctx(t), &pb.ListRequest{AllNamespaces: true})
	if err != nil {
		t.Fatal(err)
	}
	r := acq("web", "a", time.Minute)
	r.Labels = map[string]string{"app": "web"}
	if _, err := f.Acquire(ctx(t), r); err != nil {
		t.Fatal(err)
	}
	r = acq("api", "a", time.Minute)
	r.Namespace = "team-b"
	r.Labels = map[string]string{"app": "api"}
	if _, err := f.Acquire(ctx(t), r); err != nil {
		t.Fatal(err)
	}
	l, err := f.List(ctx(t), &pb.ListRequest{AllNamespaces: true, LabelSelector: "app=api"})
	if err != nil || len(l.Leases) != 1 || l.Leases[0].Namespace != "team-b" {
		t.Fatalf("list by label: %v %v", err, l)
	}
	l, err = f.List(ctx(t), &pb.ListRequest{LabelSelector: "app"})
	if err != nil || len(l.Leases) != 1 || l.Leases[0].Name != "web" {
		t.Fatalf("list of the default namespace: %v %v", err, l)
	}
	// A watch from the first list's revision replays both acquisitions.
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	w, err := f.Watch(wctx, &pb.WatchRequest{AllNamespaces: true, StartRevision: list0.Revision})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"web", "api"} {
		ev, err := w.Recv()
		if err != nil || ev.Lease.Name != want || ev.Type != pb.WatchEvent_ADDED {
			t.Fatalf("replayed event: %v %+v, want ADDED %s", err, ev, want)
		}
	}
	// And then live events.
	if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "web", HolderIdentity: "a", FencingToken: l.Leases[0].FencingToken}); err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	if err != nil || ev.Type != pb.WatchEvent_RELEASED || ev.Lease.Name != "web" {
		t.Fatalf("live event: %v %+v, want RELEASED web", err, ev)
	}
	// Serializable read on a follower sees the write once applied there.
	waitFor(t, func() bool {
		g, err := f.Get(ctx(t), &pb.GetRequest{Name: "web", Serializable: true})
		return err == nil && g.Lease.HolderIdentity == ""
	})
}

func TestKeepAliveBatchThroughFollower(t *testing.T) {
	_, f, _ := start(t)
	var refs []*pb.LeaseRef
	for _, n := range []string{"k1", "k2", "k3"} {
		a, err := f.Acquire(ctx(t), acq(n, "h", time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, &pb.LeaseRef{Name: n, HolderIdentity: "h", FencingToken: a.Lease.FencingToken})
	}
	refs = append(refs,
		&pb.LeaseRef{Name: "k1", HolderIdentity: "h", FencingToken: 999999},
		&pb.LeaseRef{Name: "missing", HolderIdentity: "h", FencingToken: 1},
		&pb.LeaseRef{Name: "BAD", HolderIdentity: "h", FencingToken: 1})
	s, err := f.KeepAlive(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	for round := uint64(1); round <= 3; round++ {
		if err := s.Send(&pb.KeepAliveRequest{Id: round, Leases: refs}); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		want := []codes.Code{codes.OK, codes.OK, codes.OK, codes.FailedPrecondition, codes.NotFound, codes.InvalidArgument}
		if resp.Id != round || len(resp.Results) != len(want) {
			t.Fatalf("round %d: id %d, %d results", round, resp.Id, len(resp.Results))
		}
		for i, w := range want {
			if got := codes.Code(resp.Results[i].Code); got != w {
				t.Errorf("round %d result %d: got %v (%s), want %v", round, i, got, resp.Results[i].Message, w)
			}
		}
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	g, err := f.Get(ctx(t), &pb.GetRequest{Name: "k1"})
	if err != nil || g.Lease.LeaseTransitions != 1 {
		t.Fatalf("after keepalives: %v %+v", err, g.GetLease())
	}
}

func TestStatusListsMembers(t *testing.T) {
	c, f, _ := start(t)
	waitFor(t, func() bool {
		st, err := f.cluster.Status(ctx(t), &pb.StatusRequest{})
		if err != nil || len(st.Members) != 3 {
			return false
		}
		for _, m := range st.Members {
			// Every member registers its address and its binary's
			// command version; a follower reports them too.
			if m.GrpcAddr == "" || m.CommandVersion != fsm.CommandVersion {
				return false
			}
		}
		return true
	})
	st, _ := f.cluster.Status(ctx(t), &pb.StatusRequest{})
	leader := c.Leader(time.Second)
	if st.Leader != leader.ID() || st.Term == 0 || st.CommitIndex == 0 {
		t.Fatalf("status: %+v, want leader %s", st, leader.ID())
	}
}

func TestHealthService(t *testing.T) {
	c, _, _ := start(t)
	for _, ep := range c.Endpoints {
		cc, err := grpc.NewClient(ep, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		h := healthpb.NewHealthClient(cc)
		waitFor(t, func() bool {
			r, err := h.Check(ctx(t), &healthpb.HealthCheckRequest{Service: "leasekeeper.v1.Leases"})
			return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
		})
	}
}

func TestWholeObjectWrite(t *testing.T) {
	_, f, _ := start(t)
	w := func(create bool, rv uint64, holder string) (*pb.WriteResponse, error) {
		r := &pb.WriteRequest{Namespace: "kube-system", Name: "ctrl", Create: create, ResourceVersion: rv,
			HolderIdentity: holder, Object: []byte(`{"spec":{"holderIdentity":"` + holder + `"}}`)}
		if holder != "" {
			r.LeaseDuration = durationpb.New(15 * time.Second)
		}
		return f.Write(ctx(t), r)
	}
	created, err := w(true, 0, "a")
	if err != nil || created.Lease.HolderIdentity != "a" || created.Lease.FencingToken == 0 || len(created.Lease.Object) == 0 {
		t.Fatalf("create: %v %+v", err, created)
	}
	if _, err := w(true, 0, "b"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second create: %v, want AlreadyExists", err)
	}
	if _, err := w(false, created.Lease.ResourceVersion+5, "b"); status.Code(err) != codes.Aborted {
		t.Fatalf("stale version: %v, want Aborted", err)
	}
	taken, err := w(false, created.Lease.ResourceVersion, "b")
	if err != nil || taken.Lease.FencingToken <= created.Lease.FencingToken {
		t.Fatalf("take over: %v %+v", err, taken)
	}
	if _, err := f.Write(ctx(t), &pb.WriteRequest{Name: "x", Create: true, HolderIdentity: "a"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("holder without duration: %v, want InvalidArgument", err)
	}
	if _, err := f.Write(ctx(t), &pb.WriteRequest{Name: "x", Create: true, Object: make([]byte, 70<<10)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("huge object: %v, want InvalidArgument", err)
	}
	// A write may give any duration a Kubernetes Lease may have, above
	// MaxLeaseDuration (24h here), which still bounds Acquire.
	long := durationpb.New(100000 * time.Second)
	res, err := f.Write(ctx(t), &pb.WriteRequest{Name: "long", Create: true, HolderIdentity: "a", LeaseDuration: long})
	if err != nil || res.Lease.LeaseDuration.AsDuration() != 100000*time.Second {
		t.Fatalf("write of 100000s: %v %+v", err, res)
	}
	if _, err := f.Acquire(ctx(t), &pb.AcquireRequest{Name: "long2", HolderIdentity: "a", LeaseDuration: long}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("acquire of 100000s: %v, want InvalidArgument", err)
	}
	if _, err := f.Write(ctx(t), &pb.WriteRequest{Name: "long3", Create: true, HolderIdentity: "a", LeaseDuration: durationpb.New((math.MaxInt32 + 1) * time.Second)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("write of 2^31 s: %v, want InvalidArgument", err)
	}
}

// TestDryRun: a dry-run write or delete is checked as the real one, and
// answered with the lease it would store or delete; nothing changes.
func TestDryRun(t *testing.T) {
	_, f, _ := start(t)
	dry := &pb.WriteRequest{Name: "dry", Create: true, HolderIdentity: "a", LeaseDuration: durationpb.New(time.Minute),
		Labels: map[string]string{"k": "v"}, Object: []byte(`{}`), DryRun: true}
	res, err := f.Write(ctx(t), dry)
	if err != nil || res.Lease.HolderIdentity != "a" || res.Lease.ResourceVersion != 0 || res.Lease.Labels["k"] != "v" {
		t.Fatalf("dry-run create: %v %+v", err, res)
	}
	if _, err := f.Get(ctx(t), &pb.GetRequest{Name: "dry"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after a dry-run create: %v, want NotFound", err)
	}
	real, err := f.Write(ctx(t), &pb.WriteRequest{Name: "dry", Create: true, HolderIdentity: "a", LeaseDuration: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(ctx(t), dry); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("dry-run create of an existing lease: %v, want AlreadyExists", err)
	}
	update := &pb.WriteRequest{Name: "dry", ResourceVersion: real.Lease.ResourceVersion, HolderIdentity: "b",
		LeaseDuration: durationpb.New(time.Minute), DryRun: true}
	res, err = f.Write(ctx(t), update)
	if err != nil || res.Lease.HolderIdentity != "b" || res.Lease.FencingToken <= real.Lease.FencingToken || res.Lease.ResourceVersion != real.Lease.ResourceVersion {
		t.Fatalf("dry-run takeover: %v %+v", err, res)
	}
	update.ResourceVersion++
	if _, err := f.Write(ctx(t), update); status.Code(err) != codes.Aborted {
		t.Fatalf("dry-run update of a stale version: %v, want Aborted", err)
	}
	del, err := f.Delete(ctx(t), &pb.DeleteRequest{Name: "dry", DryRun: true})
	if err != nil || del.Lease.HolderIdentity != "a" {
		t.Fatalf("dry-run delete: %v %+v", err, del)
	}
	if _, err := f.Delete(ctx(t), &pb.DeleteRequest{Name: "nope", DryRun: true}); status.Code(err) != codes.NotFound {
		t.Fatalf("dry-run delete of a missing lease: %v, want NotFound", err)
	}
	g, err := f.Get(ctx(t), &pb.GetRequest{Name: "dry"})
	if err != nil || g.Lease.HolderIdentity != "a" || g.Lease.ResourceVersion != real.Lease.ResourceVersion {
		t.Fatalf("after the dry runs: %v %+v, want the lease as written", err, g)
	}
}

func TestWaitQueueHandsOffInOrder(t *testing.T) {
	_, f, _ := start(t)
	// Long enough that no holding lapses on a loaded machine before the
	// test releases it: a lapse would hand the lease on by itself.
	const d = 20 * time.Second
	a, err := f.Acquire(ctx(t), acq("q", "a", d))
	if err != nil || !a.Acquired {
		t.Fatal(err)
	}
	type got struct {
		who  string
		resp *pb.AcquireResponse
		err  error
		at   time.Time
	}
	results := make(chan got, 2)
	for _, w := range []string{"b", "c", "d"} {
		// Queue one at a time, so the order is known.
		r := acq("q", w, d)
		r.Wait = true
		// A short call: the server answers "queued" before its deadline.
		qctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		first, err := f.Acquire(qctx, r)
		cancel()
		if err != nil || !first.Queued {
			t.Fatalf("queue %s: %v %+v", w, err, first)
		}
		if w == "c" {
			continue // c will leave the queue
		}
		go func(w string) {
			for {
				resp, err := f.Acquire(ctx(t), r)
				if err != nil || resp.Acquired {
					results <- got{w, resp, err, time.Now()}
					return
				}
			}
		}(w)
	}
	// c gives up its place.
	if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "q", HolderIdentity: "c", LeaveQueue: true}); err != nil {
		t.Fatal(err)
	}
	token := a.Lease.FencingToken
	holder := "a"
	for _, want := range []string{"b", "d"} {
		released := time.Now()
		if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "q", HolderIdentity: holder, FencingToken: token}); err != nil {
			t.Fatal(err)
		}
		g := <-results
		if g.err != nil || g.who != want || g.resp.Lease.HolderIdentity != want || g.resp.Lease.FencingToken <= token {
			t.Fatalf("after %s released: %s got %v %+v, want %s to hold with a higher token", holder, g.who, g.err, g.resp, want)
		}
		t.Logf("hand-off %s -> %s took %v", holder, want, g.at.Sub(released).Round(time.Microsecond))
		holder, token = want, g.resp.Lease.FencingToken
	}
	select {
	case g := <-results:
		t.Fatalf("c was served after leaving the queue: %+v", g)
	default:
	}
}

func TestRenewWithAndWithoutTheLog(t *testing.T) {
	_, f, _ := start(t)
	// The leader confirms its leadership by asking the members at their
	// registered addresses; until they registered, renewals take the log.
	waitFor(t, func() bool {
		st, err := f.cluster.Status(context.Background(), &pb.StatusRequest{})
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if m.GrpcAddr == "" {
				return false
			}
		}
		return true
	})
	a, err := f.Acquire(ctx(t), acq("r", "a", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	w, err := f.Watch(wctx, &pb.WatchRequest{Name: "r", StartRevision: a.Lease.ResourceVersion, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	// Confirmed by the leader without a log write: the holding is
	// extended, the stored lease stays as it was.
	rr, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "r", HolderIdentity: "a", FencingToken: a.Lease.FencingToken})
	if err != nil {
		t.Fatal(err)
	}
	if rr.Lease.ResourceVersion != a.Lease.ResourceVersion || !proto.Equal(rr.Lease.RenewTime, a.Lease.RenewTime) {
		t.Fatalf("unrecorded renewal changed the stored lease: %+v, was %+v", rr.Lease, a.Lease)
	}
	// Recorded: through the log, seen by watchers as the next revision.
	rec, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "r", HolderIdentity: "a", FencingToken: a.Lease.FencingToken, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Lease.ResourceVersion <= a.Lease.ResourceVersion || !rec.Lease.RenewTime.AsTime().After(a.Lease.RenewTime.AsTime()) {
		t.Fatalf("recorded renewal: %+v, want a new version and renewTime after %v", rec.Lease, a.Lease.RenewTime.AsTime())
	}
	ev, err := w.Recv()
	if err != nil || ev.Type != pb.WatchEvent_RENEWED || ev.Revision != rec.Lease.ResourceVersion {
		t.Fatalf("first event after the acquire: %v %+v, want RENEWED at %d", err, ev, rec.Lease.ResourceVersion)
	}
	// A renewal of a holding that is not the caller's fails the same way
	// with or without the log.
	for _, record := range []bool{false, true} {
		_, err := f.Renew(ctx(t), &pb.RenewRequest{Name: "r", HolderIdentity: "a", FencingToken: a.Lease.FencingToken + 1, Record: record})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("renewal with a wrong token (record=%v): %v, want FailedPrecondition", record, err)
		}
	}
}

// TestListWithRemaining: a list that asks for them carries the time left
// to each live holding, counted by the leader, also when a follower
// forwards it; a follower's serializable list and a list that does not
// ask carry none.
func TestListWithRemaining(t *testing.T) {
	_, f, _ := start(t)
	if _, err := f.Acquire(ctx(t), acq("held", "a", 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	free, err := f.Acquire(ctx(t), acq("free", "b", 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Release(ctx(t), &pb.ReleaseRequest{Name: "free", HolderIdentity: "b", FencingToken: free.Lease.FencingToken}); err != nil {
		t.Fatal(err)
	}
	resp, err := f.List(ctx(t), &pb.ListRequest{WithRemaining: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Leases) != 2 || len(resp.Remaining) != 1 {
		t.Fatalf("list: %d leases, remaining %v; want 2 leases and the held one's time", len(resp.Leases), resp.Remaining)
	}
	if d := resp.Remaining["default/held"].AsDuration(); d <= 0 || d > 12*time.Second {
		t.Errorf("remaining of held: %v, want in (0, duration + grace]", d)
	}
	if resp, err := f.List(ctx(t), &pb.ListRequest{}); err != nil || len(resp.Remaining) != 0 {
		t.Errorf("list without with_remaining: %v, remaining %v; want none", err, resp.GetRemaining())
	}
	if resp, err := f.List(ctx(t), &pb.ListRequest{WithRemaining: true, Serializable: true}); err != nil || len(resp.Remaining) != 0 {
		t.Errorf("serializable list on a follower: %v, remaining %v; want none", err, resp.GetRemaining())
	}
}
