package auth

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/internal/callmux"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testPolicy = `
roles:
- name: reader-a
  rules:
  - namespaces: [team-a]
    verbs: [get, list]
- name: writer-a
  rules:
  - namespaces: [team-a]
    verbs: [get, list, watch, create, update, delete]
- name: updater-a
  rules:
  - namespaces: [team-a]
    verbs: [update]
- name: cluster-admin
  rules:
  - namespaces: ["*"]
    verbs: ["*"]
bindings:
- role: reader-a
  subjects: [{kind: user, name: alice}]
- role: writer-a
  subjects:
  - {kind: user, name: bob}
  - {kind: user, name: "spiffe://leasekeeper/carol"}
  - {kind: user, name: deployer}
- role: updater-a
  subjects: [{kind: user, name: dave}]
- role: cluster-admin
  subjects:
  - {kind: group, name: admins}
  - {kind: group, name: "leasekeeper:nodes"}
actAs:
- subject: {kind: user, name: deployer}
  holders: ["deploy-*"]
`

// env is a test PKI and the auth files.
type env struct {
	t          *testing.T
	dir        string
	ca, other  string // CA directories
	certs      string
	policyFile string
	tokenFile  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, dir: dir, ca: filepath.Join(dir, "ca"), other: filepath.Join(dir, "other"), certs: filepath.Join(dir, "certs"),
		policyFile: filepath.Join(dir, "policy.yaml"), tokenFile: filepath.Join(dir, "tokens.yaml")}
	for _, ca := range []string{e.ca, e.other} {
		if _, _, err := tlsutil.GenerateCA(ca, filepath.Base(ca), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	e.write(e.policyFile, testPolicy)
	e.write(e.tokenFile, "tokens:\n"+
		"- {name: alice, sha256: "+HashToken("alice-token")+"}\n"+
		"- {name: root, groups: [admins], sha256: "+HashToken("root-token")+"}\n"+
		"- {name: node-t, groups: [\"leasekeeper:nodes\"], sha256: "+HashToken("node-token")+"}\n")
	return e
}

func (e *env) write(path, data string) {
	e.t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// cert makes a certificate signed by caDir; node certificates serve too.
func (e *env) cert(caDir, name string, node bool, opts ...tlsutil.CertOption) (certFile, keyFile string) {
	e.t.Helper()
	if node {
		opts = append(opts, tlsutil.WithGroups(tlsutil.NodeGroup))
	}
	c, k, err := tlsutil.GenerateCert(caDir, e.certs, name, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, true, node, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, k
}

func (e *env) authenticator(mode string, reg prometheus.Registerer) *Authenticator {
	e.t.Helper()
	cfg := DefaultConfig()
	cfg.Mode, cfg.PolicyFile = mode, e.policyFile
	if cfg.UsesTokens() {
		cfg.TokenFile = e.tokenFile
	}
	a, err := New(cfg, nil, reg)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// fakeLeases answers like the real server would after authorization: Get
// returns a lease, Acquire authorizes create or update itself, KeepAlive
// authorizes each lease.
type fakeLeases struct {
	pb.UnimplementedLeasesServer
	a        *Authenticator
	existing map[string]bool // "namespace/name" of leases that exist
	seen     chan Identity   // the identity of each call, when not nil
	// holdWatch keeps a Watch open after its first event, until the
	// stream's context ends.
	holdWatch bool
}

func (f *fakeLeases) saw(ctx context.Context) {
	if f.seen == nil {
		return
	}
	id, _ := FromContext(ctx)
	select {
	case f.seen <- id:
	default:
	}
}

func (f *fakeLeases) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	f.saw(ctx)
	return &pb.GetResponse{Lease: &pb.Lease{Namespace: req.Namespace, Name: req.Name, HolderIdentity: "someone"}}, nil
}

func (f *fakeLeases) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	f.saw(ctx)
	return &pb.ListResponse{}, nil
}

func (f *fakeLeases) Acquire(ctx context.Context, req *pb.AcquireRequest) (*pb.AcquireResponse, error) {
	f.saw(ctx)
	ns, name := RequestScope(req)
	if err := f.a.AuthorizeContext(ctx, AcquireVerb(f.existing[ns+"/"+name]), ns, name); err != nil {
		return nil, err
	}
	return &pb.AcquireResponse{Acquired: true}, nil
}

func (f *fakeLeases) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	f.saw(ctx)
	return &pb.RenewResponse{}, nil
}

func (f *fakeLeases) Watch(req *pb.WatchRequest, stream pb.Leases_WatchServer) error {
	f.saw(stream.Context())
	if err := stream.Send(&pb.WatchEvent{Revision: 1}); err != nil || !f.holdWatch {
		return err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (f *fakeLeases) KeepAlive(stream pb.Leases_KeepAliveServer) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		out := &pb.KeepAliveResponse{Id: req.Id}
		for _, ref := range req.Leases {
			r := &pb.KeepAliveResult{Namespace: ref.Namespace, Name: ref.Name}
			err := f.a.AuthorizeContext(ctx, VerbUpdate, ref.Namespace, ref.Name)
			if err == nil {
				err = f.a.BindHolderContext(ctx, ref.HolderIdentity)
			}
			r.Code = int32(status.Code(err))
			out.Results = append(out.Results, r)
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

type fakeCluster struct{ pb.UnimplementedClusterServer }

func (fakeCluster) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{}, nil
}

func (fakeCluster) Join(context.Context, *pb.JoinRequest) (*pb.JoinResponse, error) {
	return &pb.JoinResponse{}, nil
}

// serve runs a gRPC server with the interceptors and returns its address.
func serve(t *testing.T, a *Authenticator, tlsCfg *tls.Config, leases *fakeLeases) string {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	g := grpc.NewServer(grpc.Creds(creds),
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(a)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(a)))
	if leases == nil {
		leases = &fakeLeases{}
	}
	leases.a = a
	pb.RegisterLeasesServer(g, leases)
	pb.RegisterClusterServer(g, fakeCluster{})
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(ln)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return ln.Addr().String()
}

// dial connects to addr; it closes the connection when the test ends.
func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tlsClient returns dial options for TLS with an optional client
// certificate, trusting caDir.
func (e *env) tlsClient(caDir, certFile, keyFile string) grpc.DialOption {
	e.t.Helper()
	cfg, _, err := tlsutil.ClientConfig(certFile, keyFile, filepath.Join(caDir, tlsutil.CACertFile), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call is one RPC of a table: it returns the error the client saw.
type call func(ctx context.Context, c *grpc.ClientConn) error

func get(ns, name string) call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewLeasesClient(c).Get(ctx, &pb.GetRequest{Namespace: ns, Name: name})
		return err
	}
}

func list(ns string, all bool) call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewLeasesClient(c).List(ctx, &pb.ListRequest{Namespace: ns, AllNamespaces: all})
		return err
	}
}

func acquire(ns, name, holder string) call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewLeasesClient(c).Acquire(ctx, &pb.AcquireRequest{Namespace: ns, Name: name, HolderIdentity: holder})
		return err
	}
}

func renew(ns, name, holder string) call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewLeasesClient(c).Renew(ctx, &pb.RenewRequest{Namespace: ns, Name: name, HolderIdentity: holder, FencingToken: 1})
		return err
	}
}

func watch(ns string) call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		s, err := pb.NewLeasesClient(c).Watch(ctx, &pb.WatchRequest{Namespace: ns})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	}
}

func join() call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewClusterClient(c).Join(ctx, &pb.JoinRequest{Id: "n4"})
		return err
	}
}

func clusterStatus() call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := pb.NewClusterClient(c).Status(ctx, &pb.StatusRequest{})
		return err
	}
}

func healthCheck() call {
	return func(ctx context.Context, c *grpc.ClientConn) error {
		_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
}

// wantCode fails the test when err does not have code want (and, when msg
// is set, does not contain it).
func wantCode(t *testing.T, err error, want codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != want {
		t.Fatalf("got %v (%q), want %v", st.Code(), st.Message(), want)
	}
	if msg != "" && !strings.Contains(st.Message(), msg) {
		t.Fatalf("message %q does not contain %q", st.Message(), msg)
	}
}

// Calls runs each multiplexed call through the unary interceptor, as the
// real server does.
func (f *fakeLeases) Calls(stream pb.Leases_CallsServer) error {
	return callmux.Serve(stream, f, UnaryServerInterceptor(f.a), nil)
}
