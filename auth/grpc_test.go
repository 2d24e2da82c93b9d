package auth

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

func TestMTLS(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, e.ca+"/ca.crt", true)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := e.authenticator(ModeMTLS, reg)
	addr := serve(t, a, srvTLS, &fakeLeases{existing: map[string]bool{"team-a/taken": true}})

	conn := func(name string, opts ...tlsutil.CertOption) *grpc.ClientConn {
		c, k := e.cert(e.ca, name, false, opts...)
		return dial(t, addr, e.tlsClient(e.ca, c, k))
	}
	alice := conn("alice")
	bob := conn("bob")
	dave := conn("dave")
	carol := conn("carol", tlsutil.WithSPIFFE())
	deployer := conn("deployer")
	admin := conn("root", tlsutil.WithGroups("admins"))
	noCert := dial(t, addr, e.tlsClient(e.ca, "", ""))
	mc, mk := e.cert(e.other, "mallory", false)
	foreign := dial(t, addr, e.tlsClient(e.ca, mc, mk))

	tests := []struct {
		name string
		conn *grpc.ClientConn
		call call
		want codes.Code
		msg  string
	}{
		{"no client certificate is refused", noCert, get("team-a", "x"), codes.Unavailable, ""},
		{"certificate from another CA is refused", foreign, get("team-a", "x"), codes.Unavailable, ""},
		{"reader gets in her namespace", alice, get("team-a", "x"), codes.OK, ""},
		{"reader lists her namespace", alice, list("team-a", false), codes.OK, ""},
		{"reader cannot read another namespace", alice, get("team-b", "x"), codes.PermissionDenied, `"alice" may not get lease "x" in namespace "team-b"`},
		{"reader cannot read the default namespace", alice, get("", "x"), codes.PermissionDenied, `namespace "default"`},
		{"reader cannot list all namespaces", alice, list("", true), codes.PermissionDenied, "all namespaces"},
		{"reader cannot acquire", alice, acquire("team-a", "new", "alice"), codes.PermissionDenied, `"alice" may not create or update lease "new" in namespace "team-a"`},
		{"update-only cannot create (server check)", dave, acquire("team-a", "new", "dave"), codes.PermissionDenied, `"dave" may not create lease "new" in namespace "team-a"`},
		{"update-only updates an existing lease", dave, acquire("team-a", "taken", "dave"), codes.OK, ""},
		{"update-only renews", dave, renew("team-a", "taken", "dave"), codes.OK, ""},
		{"reader cannot watch", alice, watch("team-a"), codes.PermissionDenied, `may not watch`},
		{"reader reads cluster status", alice, clusterStatus(), codes.OK, ""},
		{"reader cannot join members", alice, join(), codes.PermissionDenied, "administer"},
		{"writer creates as herself", bob, acquire("team-a", "new", "bob"), codes.OK, ""},
		{"writer updates as herself", bob, acquire("team-a", "taken", "bob"), codes.OK, ""},
		{"writer watches", bob, watch("team-a"), codes.OK, ""},
		{"writer cannot watch elsewhere", bob, watch("team-b"), codes.PermissionDenied, `may not watch leases in namespace "team-b"`},
		{"identity A cannot hold as B", bob, acquire("team-a", "new", "alice"), codes.PermissionDenied, `"bob" may not act as holder "alice"`},
		{"identity A cannot renew as B", bob, renew("team-a", "taken", "alice"), codes.PermissionDenied, "act as holder"},
		{"actAs allows a holder prefix", deployer, acquire("team-a", "new", "deploy-7"), codes.OK, ""},
		{"actAs allows nothing else", deployer, acquire("team-a", "new", "bob"), codes.PermissionDenied, "act as holder"},
		{"SPIFFE identity from the URI SAN", carol, acquire("team-a", "new", "spiffe://leasekeeper/carol"), codes.OK, ""},
		{"group binding grants admin", admin, join(), codes.OK, ""},
		{"admin reads everywhere", admin, list("", true), codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(ctxT(t), tt.conn), tt.want, tt.msg)
		})
	}

	t.Run("keepalive authorizes each lease", func(t *testing.T) {
		s, err := pb.NewLeasesClient(bob).KeepAlive(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&pb.KeepAliveRequest{Id: 1, Leases: []*pb.LeaseRef{
			{Namespace: "team-a", Name: "x", HolderIdentity: "bob", FencingToken: 1},
			{Namespace: "team-b", Name: "y", HolderIdentity: "bob", FencingToken: 1},
			{Namespace: "team-a", Name: "z", HolderIdentity: "alice", FencingToken: 1},
		}}); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		_ = s.CloseSend()
		want := []codes.Code{codes.OK, codes.PermissionDenied, codes.PermissionDenied}
		for i, r := range resp.Results {
			if codes.Code(r.Code) != want[i] {
				t.Errorf("result %d (%s/%s): got %v, want %v", i, r.Namespace, r.Name, codes.Code(r.Code), want[i])
			}
		}
	})

	t.Run("denials are counted", func(t *testing.T) {
		got := denials(t, reg)
		for _, k := range []string{"get/forbidden", "create/forbidden", "create_or_update/forbidden", "none/holder", "admin/forbidden", "watch/forbidden", "update/forbidden"} {
			if got[k] == 0 {
				t.Errorf("leasekeeper_auth_denied_total{%s}: got 0, want > 0 (all: %v)", k, got)
			}
		}
	})
}

// denials reads leasekeeper_auth_denied_total as "verb/reason" → count.
func denials(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "leasekeeper_auth_denied_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var verb, reason string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "verb":
					verb = l.GetValue()
				case "reason":
					reason = l.GetValue()
				}
			}
			out[verb+"/"+reason] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestForwarding(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, e.ca+"/ca.crt", true)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a := e.authenticator(ModeMTLS, reg)
	seen := make(chan Identity, 1)
	addr := serve(t, a, srvTLS, &fakeLeases{seen: seen})
	nc, nk := e.cert(e.ca, "node-2", true)
	node := dial(t, addr, e.tlsClient(e.ca, nc, nk))
	ac, ak := e.cert(e.ca, "alice", false)
	alice := dial(t, addr, e.tlsClient(e.ca, ac, ak))

	asAlice := func(ctx context.Context) context.Context {
		return ForwardContext(NewContext(ctx, Identity{Name: "alice", Source: SourceCert}), "node-2")
	}
	raw := func(kv ...string) func(context.Context) context.Context {
		return func(ctx context.Context) context.Context { return metadata.AppendToOutgoingContext(ctx, kv...) }
	}
	tests := []struct {
		name   string
		conn   *grpc.ClientConn
		ctx    func(context.Context) context.Context
		call   call
		want   codes.Code
		msg    string
		wantID Identity
	}{
		{name: "node forwards alice's read", conn: node, ctx: asAlice, call: get("team-a", "x"), want: codes.OK,
			wantID: Identity{Name: "alice", Source: SourceCert, Via: "node-2"}},
		{name: "forwarded alice is still alice", conn: node, ctx: asAlice, call: get("team-b", "x"), want: codes.PermissionDenied, msg: `"alice" may not get`},
		{name: "forwarded alice cannot administer", conn: node, ctx: asAlice, call: join(), want: codes.PermissionDenied, msg: "administer"},
		{name: "node's own request is the node's", conn: node, ctx: func(ctx context.Context) context.Context { return ForwardContext(ctx, "node-2") },
			call: join(), want: codes.OK},
		{name: "client claiming an identity", conn: alice, ctx: raw(MDForwardedBy, "node-1", MDIdentity, "root", MDGroups, "admins"),
			call: join(), want: codes.PermissionDenied, msg: "not a node"},
		{name: "client sending only the identity header", conn: alice, ctx: raw(MDIdentity, "bob"),
			call: acquire("team-a", "x", "bob"), want: codes.PermissionDenied, msg: "not a node"},
		{name: "client marking its request forwarded", conn: alice, ctx: raw(MDForwardedBy, "node-1"),
			call: get("team-a", "x"), want: codes.PermissionDenied, msg: "not a node"},
		{name: "node with two identities", conn: node, ctx: raw(MDForwardedBy, "node-2", MDIdentity, "a", MDIdentity, "b"),
			call: get("team-a", "x"), want: codes.Unauthenticated},
		{name: "node with identity but no forwarded-by", conn: node, ctx: raw(MDIdentity, "alice"),
			call: get("team-a", "x"), want: codes.Unauthenticated},
		{name: "node with groups but no identity", conn: node, ctx: raw(MDForwardedBy, "node-2", MDGroups, "admins"),
			call: join(), want: codes.Unauthenticated},
		{name: "forwarded groups count", conn: node, ctx: func(ctx context.Context) context.Context {
			return ForwardContext(NewContext(ctx, Identity{Name: "eve", Groups: []string{"admins"}, Source: SourceToken}), "node-2")
		}, call: join(), want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for len(seen) > 0 {
				<-seen
			}
			wantCode(t, tt.call(tt.ctx(ctxT(t)), tt.conn), tt.want, tt.msg)
			if tt.wantID.Name != "" {
				got := <-seen
				if got.Name != tt.wantID.Name || got.Source != tt.wantID.Source || got.Via != tt.wantID.Via {
					t.Errorf("identity in the handler: got %+v, want %+v", got, tt.wantID)
				}
			}
		})
	}
	if got := denials(t, reg); got["admin/forwarder"] == 0 {
		t.Errorf("forwarder denials not counted: %v", got)
	}
}

func TestToken(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	// Token mode: TLS without client certificates.
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, "", false)
	if err != nil {
		t.Fatal(err)
	}
	a := e.authenticator(ModeToken, nil)
	addr := serve(t, a, srvTLS, nil)
	plain := e.tlsClient(e.ca, "", "")
	withToken := func(tok string) *grpc.ClientConn {
		return dial(t, addr, plain, grpc.WithPerRPCCredentials(BearerToken{Token: tok}))
	}
	noToken := dial(t, addr, plain)
	raw := func(v string) func(context.Context) context.Context {
		return func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, MDAuthorization, v)
		}
	}
	same := func(ctx context.Context) context.Context { return ctx }
	tests := []struct {
		name string
		conn *grpc.ClientConn
		ctx  func(context.Context) context.Context
		call call
		want codes.Code
		msg  string
	}{
		{"good token", withToken("alice-token"), same, get("team-a", "x"), codes.OK, ""},
		{"good token, policy still applies", withToken("alice-token"), same, get("team-b", "x"), codes.PermissionDenied, `"alice"`},
		{"token groups", withToken("root-token"), same, join(), codes.OK, ""},
		{"bad token", withToken("guess"), same, get("team-a", "x"), codes.Unauthenticated, "unknown bearer token"},
		{"no token", noToken, same, get("team-a", "x"), codes.Unauthenticated, "no bearer token"},
		{"basic scheme", noToken, raw("Basic YWxpY2U6eA=="), get("team-a", "x"), codes.Unauthenticated, "Bearer"},
		{"lower-case scheme", noToken, raw("bearer alice-token"), get("team-a", "x"), codes.OK, ""},
		{"two authorization headers", noToken, func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, MDAuthorization, "Bearer alice-token", MDAuthorization, "Bearer root-token")
		}, join(), codes.Unauthenticated, "more than one"},
		{"health is public", noToken, same, healthCheck(), codes.OK, ""},
		{"node token forwards", withToken("node-token"), func(ctx context.Context) context.Context {
			return ForwardContext(NewContext(ctx, Identity{Name: "alice", Source: SourceToken}), "node-t")
		}, get("team-b", "x"), codes.PermissionDenied, `"alice"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(tt.ctx(ctxT(t)), tt.conn), tt.want, tt.msg)
		})
	}
}

func TestMTLSAndToken(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, e.ca+"/ca.crt", (Config{Mode: ModeMTLSToken}).RequireClientCert())
	if err != nil {
		t.Fatal(err)
	}
	a := e.authenticator(ModeMTLSToken, nil)
	addr := serve(t, a, srvTLS, nil)
	bc, bk := e.cert(e.ca, "bob", false)
	bobCert := e.tlsClient(e.ca, bc, bk)
	plain := e.tlsClient(e.ca, "", "")
	tests := []struct {
		name string
		opts []grpc.DialOption
		call call
		want codes.Code
		msg  string
	}{
		{"certificate alone", []grpc.DialOption{bobCert}, acquire("team-a", "x", "bob"), codes.OK, ""},
		{"token alone", []grpc.DialOption{plain, grpc.WithPerRPCCredentials(BearerToken{Token: "alice-token"})}, get("team-a", "x"), codes.OK, ""},
		{"token wins over certificate", []grpc.DialOption{bobCert, grpc.WithPerRPCCredentials(BearerToken{Token: "alice-token"})}, acquire("team-a", "x", "bob"), codes.PermissionDenied, `"alice"`},
		{"bad token with a good certificate", []grpc.DialOption{bobCert, grpc.WithPerRPCCredentials(BearerToken{Token: "nope"})}, get("team-a", "x"), codes.Unauthenticated, ""},
		{"neither", []grpc.DialOption{plain}, get("team-a", "x"), codes.Unauthenticated, "certificate or bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(ctxT(t), dial(t, addr, tt.opts...)), tt.want, tt.msg)
		})
	}
}

func TestModeNone(t *testing.T) {
	a, err := New(DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan Identity, 1)
	addr := serve(t, a, nil, &fakeLeases{seen: seen})
	c := dial(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	for _, cl := range []call{get("any", "x"), acquire("any", "x", "whoever"), join()} {
		wantCode(t, cl(ctxT(t), c), codes.OK, "")
	}
	if id := <-seen; id.Name != Anonymous.Name || id.Source != SourceNone {
		t.Errorf("identity with auth off: got %+v, want Anonymous", id)
	}
}

func TestReloadPolicy(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, e.ca+"/ca.crt", true)
	if err != nil {
		t.Fatal(err)
	}
	a := e.authenticator(ModeMTLS, nil)
	addr := serve(t, a, srvTLS, nil)
	ac, ak := e.cert(e.ca, "alice", false)
	alice := dial(t, addr, e.tlsClient(e.ca, ac, ak))

	wantCode(t, get("team-b", "x")(ctxT(t), alice), codes.PermissionDenied, "")
	bindB := "bindings:\n- role: reader-b\n  subjects: [{kind: user, name: alice}]\n"
	e.write(e.policyFile, strings.Replace(testPolicy, "bindings:\n", bindB, 1))
	// A broken policy is refused and the old one stays.
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), `role "reader-b" is not defined`) {
		t.Fatalf("Reload of a policy binding a missing role: got %v", err)
	}
	wantCode(t, get("team-a", "x")(ctxT(t), alice), codes.OK, "")
	withB := strings.Replace(testPolicy, "roles:\n", "roles:\n- name: reader-b\n  rules:\n  - {namespaces: [team-b], verbs: [get]}\n", 1)
	e.write(e.policyFile, strings.Replace(withB, "bindings:\n", bindB, 1))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	wantCode(t, get("team-b", "x")(ctxT(t), alice), codes.OK, "")
}

func TestReloadServerCertificate(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, r, err := tlsutil.ServerConfig(srvCert, srvKey, e.ca+"/ca.crt", true)
	if err != nil {
		t.Fatal(err)
	}
	a := e.authenticator(ModeMTLS, nil)
	addr := serve(t, a, srvTLS, nil)
	ac, ak := e.cert(e.ca, "alice", false)
	serial := func() string {
		var p credentials.TLSInfo
		cfg, _, err := tlsutil.ClientConfig(ac, ak, e.ca+"/ca.crt", "")
		if err != nil {
			t.Fatal(err)
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			p.State = cs
			return nil
		}
		c := dial(t, addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		wantCode(t, get("team-a", "x")(ctxT(t), c), codes.OK, "")
		return p.State.PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	e.cert(e.ca, "server", true) // a renewed certificate on disk
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if after := serial(); after == before {
		t.Fatalf("after Reload the server still presents serial %s", before)
	}
}

// Every call on a Calls stream meets its own method's rule, under the
// stream's credentials.
func TestCallsAreAuthorizedPerCall(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, "", false)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, e.authenticator(ModeToken, nil), srvTLS, nil)
	plain := e.tlsClient(e.ca, "", "")
	alice := pb.NewLeasesClient(dial(t, addr, plain, grpc.WithPerRPCCredentials(BearerToken{Token: "alice-token"})))
	s, err := alice.Calls(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		req  *pb.CallRequest
		want codes.Code
	}{
		{&pb.CallRequest{Request: &pb.CallRequest_Get{Get: &pb.GetRequest{Namespace: "team-a", Name: "x"}}}, codes.OK},
		{&pb.CallRequest{Request: &pb.CallRequest_Get{Get: &pb.GetRequest{Namespace: "team-b", Name: "x"}}}, codes.PermissionDenied},
		{&pb.CallRequest{Request: &pb.CallRequest_Acquire{Acquire: &pb.AcquireRequest{Namespace: "team-a", Name: "new", HolderIdentity: "alice"}}}, codes.PermissionDenied},
	}
	for i, c := range calls {
		c.req.Id = uint64(i + 1)
		if err := s.Send(c.req); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got := codes.Code(r.GetError().GetCode()); got != c.want {
			t.Errorf("call %d: %v (%s), want %v", i+1, got, r.GetError().GetMessage(), c.want)
		}
	}
	// Without a token the stream itself is refused.
	anon := pb.NewLeasesClient(dial(t, addr, plain))
	s, err = anon.Calls(ctxT(t))
	if err == nil {
		_, err = s.Recv()
	}
	wantCode(t, err, codes.Unauthenticated, "no bearer token")
}

// TestReloadEndsRevokedStreams: open streams are checked again on Reload.
// A watch whose caller lost the watch verb ends with PermissionDenied; a
// KeepAlive stream whose caller's token was removed ends with
// Unauthenticated; streams that still pass stay open.
func TestReloadEndsRevokedStreams(t *testing.T) {
	e := newEnv(t)
	srvCert, srvKey := e.cert(e.ca, "server", true)
	srvTLS, _, err := tlsutil.ServerConfig(srvCert, srvKey, "", false)
	if err != nil {
		t.Fatal(err)
	}
	tokens := "tokens:\n" +
		"- {name: bob, sha256: " + HashToken("bob-token") + "}\n" +
		"- {name: deployer, sha256: " + HashToken("deployer-token") + "}\n"
	e.write(e.tokenFile, tokens)
	a := e.authenticator(ModeToken, nil)
	addr := serve(t, a, srvTLS, &fakeLeases{holdWatch: true})
	conn := func(tok string) pb.LeasesClient {
		return pb.NewLeasesClient(dial(t, addr, e.tlsClient(e.ca, "", ""), grpc.WithPerRPCCredentials(BearerToken{Token: tok})))
	}
	watch := func(c pb.LeasesClient) pb.Leases_WatchClient {
		w, err := c.Watch(ctxT(t), &pb.WatchRequest{Namespace: "team-a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("first event: %v", err)
		}
		return w
	}
	bobWatch, deployerWatch := watch(conn("bob-token")), watch(conn("deployer-token"))
	ka, err := conn("deployer-token").KeepAlive(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	keepAlive := func() error {
		if err := ka.Send(&pb.KeepAliveRequest{Id: 1, Leases: []*pb.LeaseRef{{Namespace: "team-a", Name: "x", HolderIdentity: "deployer"}}}); err != nil {
			return err
		}
		_, err := ka.Recv()
		return err
	}
	if err := keepAlive(); err != nil {
		t.Fatalf("keepalive before any reload: %v", err)
	}

	// bob loses writer-a (and with it the watch verb); deployer keeps it.
	e.write(e.policyFile, strings.Replace(testPolicy, "  - {kind: user, name: bob}\n", "", 1))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err = bobWatch.Recv()
	wantCode(t, err, codes.PermissionDenied, `"bob"`)
	if err := keepAlive(); err != nil {
		t.Fatalf("keepalive of a caller who kept its rights, after a reload: %v", err)
	}

	// deployer's token is removed: its streams end.
	e.write(e.tokenFile, "tokens:\n- {name: bob, sha256: "+HashToken("bob-token")+"}\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	_, err = deployerWatch.Recv()
	wantCode(t, err, codes.Unauthenticated, "unknown bearer token")
	// The KeepAlive handler waits for the next batch; that batch is refused.
	wantCode(t, keepAlive(), codes.Unauthenticated, "unknown bearer token")
}
