package integration

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

const securePolicy = `
roles:
- name: admin
  rules:
  - {namespaces: ["*"], verbs: ["*"]}
- name: team-a-writer
  rules:
  - {namespaces: [team-a], verbs: [get, list, watch, create, update]}
- name: team-a-reader
  rules:
  - {namespaces: [team-a], verbs: [get, list]}
bindings:
- role: admin
  subjects: [{kind: group, name: "leasekeeper:nodes"}, {kind: user, name: admin}]
- role: team-a-writer
  subjects: [{kind: user, name: alice}, {kind: user, name: bob}]
- role: team-a-reader
  subjects: [{kind: user, name: reader}]
`

// startSecureCluster starts three nodes with mutual TLS on the API and on
// Raft, identities from client certificates and the policy above.
func startSecureCluster(t *testing.T, pki string) *cluster {
	t.Helper()
	out, err := exec.Command(ctlBinary, "certs", "--dir", pki, "--node", "n1,n2,n3",
		"--client", "admin,alice,bob,reader").CombinedOutput()
	if err != nil {
		t.Fatalf("leasectl certs: %v: %s", err, out)
	}
	policy := filepath.Join(pki, "policy.yaml")
	if err := os.WriteFile(policy, []byte(securePolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t}
	ports := freePorts(t, 6)
	var peers []string
	for i := 0; i < 3; i++ {
		peers = append(peers, "n"+string(rune('1'+i))+"="+ports[3+i])
	}
	base := t.TempDir()
	for i := 0; i < 3; i++ {
		id := "n" + string(rune('1'+i))
		p := &proc{id: id, grpc: ports[i], raft: ports[3+i], dataDir: filepath.Join(base, id), logPath: filepath.Join(base, id+".log")}
		p.args = []string{"--id", id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
			"--bootstrap", "--peers", strings.Join(peers, ","), "--profile", "production",
			"--tls-cert", filepath.Join(pki, id+".crt"), "--tls-key", filepath.Join(pki, id+".key"), "--tls-ca", filepath.Join(pki, "ca.crt"),
			"--raft-tls", "--auth-mode", "mtls", "--auth-policy-file", policy,
			"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--leader-lease-timeout", "250ms"}
		c.procs = append(c.procs, p)
		c.start(p)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			c.stop(p, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range c.procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					t.Logf("---- %s log (tail) ----\n%s", p.id, tail(string(b), 30))
				}
			}
		}
	})
	return c
}

// as returns a client that presents the named certificate (none for "").
func (c *cluster) as(pki, caDir, name string) *client.Client {
	c.t.Helper()
	cert, key := "", ""
	if name != "" {
		cert, key = filepath.Join(pki, name+".crt"), filepath.Join(pki, name+".key")
	}
	tlsCfg, _, err := tlsutil.ClientConfig(cert, key, filepath.Join(caDir, "ca.crt"), "")
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := client.DefaultConfig()
	cfg.Endpoints = c.endpoints()
	cfg.TLS = tlsCfg
	cfg.MaxRetries = 2
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

func TestMutualTLSAndRBAC(t *testing.T) {
	pki := t.TempDir()
	c := startSecureCluster(t, pki)
	admin := c.as(pki, pki, "admin")
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := admin.Status(ctx)
		cancel()
		if err == nil && st.Leader != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("secure cluster has no leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling other processes
	}

	// Every member registers its binary's command version with the
	// leader (semaphores need 4); until then the leader refuses them.
	for {
		_, err := admin.Leases().AcquireSlot(ctxT(t, time.Second), &pb.AcquireSlotRequest{Namespace: "probe", Name: "version", Slots: 1,
			HolderIdentity: "admin", LeaseDuration: durationpb.New(time.Minute)})
		if err == nil {
			break
		}
		if status.Code(err) != codes.FailedPrecondition || time.Now().After(deadline) {
			t.Fatalf("a semaphore acquire by the admin: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // polling other processes
	}

	alice := c.as(pki, pki, "alice")
	a, err := alice.Acquire(ctxT(t, 10*time.Second), "team-a", "job", "alice", time.Minute, 0, nil)
	if err != nil || !a.Acquired {
		t.Fatalf("alice acquires in team-a: %v", err)
	}
	token := a.Lease.FencingToken

	// Another CA's PKI, for an impostor.
	other := t.TempDir()
	if out, err := exec.Command(ctlBinary, "certs", "--dir", other, "--node", "", "--client", "alice").CombinedOutput(); err != nil {
		t.Fatalf("second PKI: %v %s", err, out)
	}
	bob := c.as(pki, pki, "bob")
	reader := c.as(pki, pki, "reader")
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"bob renews alice's lease with her token", func() error {
			_, err := bob.Renew(ctxT(t, 5*time.Second), "team-a", "job", "alice", token)
			return err
		}, codes.PermissionDenied},
		{"bob releases alice's lease with her token", func() error {
			_, err := bob.Release(ctxT(t, 5*time.Second), "team-a", "job", "alice", token)
			return err
		}, codes.PermissionDenied},
		{"reader acquires in team-a", func() error {
			_, err := reader.Acquire(ctxT(t, 5*time.Second), "team-a", "other", "reader", time.Minute, 0, nil)
			return err
		}, codes.PermissionDenied},
		{"reader reads team-b", func() error {
			_, err := reader.Get(ctxT(t, 5*time.Second), "team-b", "x", false)
			return err
		}, codes.PermissionDenied},
		{"alice takes a snapshot (admin only)", func() error {
			st, err := alice.Cluster().Snapshot(ctxT(t, 5*time.Second), nil)
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, codes.PermissionDenied},
		{"reader reads team-a", func() error {
			_, err := reader.Get(ctxT(t, 5*time.Second), "team-a", "job", false)
			return err
		}, codes.OK},
		{"bob writes himself in as the holder of alice's live lease", func() error {
			_, err := bob.Leases().Write(ctxT(t, 5*time.Second), &pb.WriteRequest{Namespace: "team-a", Name: "job",
				HolderIdentity: "bob", LeaseDuration: durationpb.New(time.Minute)})
			return err
		}, codes.PermissionDenied},
		{"bob writes alice's live lease free", func() error {
			_, err := bob.Leases().Write(ctxT(t, 5*time.Second), &pb.WriteRequest{Namespace: "team-a", Name: "job"})
			return err
		}, codes.PermissionDenied},
		{"alice renews her own lease", func() error {
			_, err := alice.Renew(ctxT(t, 5*time.Second), "team-a", "job", "alice", token)
			return err
		}, codes.OK},
		{"alice shortens her own holding with a write", func() error {
			_, err := alice.Leases().Write(ctxT(t, 5*time.Second), &pb.WriteRequest{Namespace: "team-a", Name: "job",
				HolderIdentity: "alice", LeaseDuration: durationpb.New(30 * time.Second)})
			return err
		}, codes.OK},
		{"alice takes a semaphore's slot in team-a", func() error {
			_, err := alice.Leases().AcquireSlot(ctxT(t, 5*time.Second), &pb.AcquireSlotRequest{Namespace: "team-a", Name: "pool", Slots: 2,
				HolderIdentity: "alice", LeaseDuration: durationpb.New(time.Minute)})
			return err
		}, codes.OK},
		{"alice leaves a semaphore's queue in team-a", func() error {
			_, err := alice.Leases().Release(ctxT(t, 5*time.Second), &pb.ReleaseRequest{Namespace: "team-a", Name: "pool",
				HolderIdentity: "alice", LeaveQueue: true, Semaphore: true})
			return err
		}, codes.OK},
		{"reader takes a semaphore's slot in team-a", func() error {
			_, err := reader.Leases().AcquireSlot(ctxT(t, 5*time.Second), &pb.AcquireSlotRequest{Namespace: "team-a", Name: "pool", Slots: 2,
				HolderIdentity: "reader", LeaseDuration: durationpb.New(time.Minute)})
			return err
		}, codes.PermissionDenied},
		{"bob takes a semaphore's slot as alice", func() error {
			_, err := bob.Leases().AcquireSlot(ctxT(t, 5*time.Second), &pb.AcquireSlotRequest{Namespace: "team-a", Name: "pool", Slots: 2,
				HolderIdentity: "alice", LeaseDuration: durationpb.New(time.Minute)})
			return err
		}, codes.PermissionDenied},
		{"admin (who may delete) ends alice's holding with a write", func() error {
			_, err := admin.Leases().Write(ctxT(t, 5*time.Second), &pb.WriteRequest{Namespace: "team-a", Name: "job"})
			return err
		}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			got := status.Code(err)
			if got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}

	// Without a client certificate, or with one from another CA, the TLS
	// handshake fails: no request is ever served.
	for _, who := range []struct{ name, pki, cert string }{{"no client certificate", pki, ""}, {"another CA", other, "alice"}} {
		_, err := c.as(who.pki, pki, who.cert).Get(ctxT(t, 2*time.Second), "team-a", "job", false)
		if err == nil || !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: got %v, want the connection refused", who.name, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, "certificate") && !strings.Contains(msg, "tls") && !strings.Contains(msg, "broken pipe") && !strings.Contains(msg, "reset") {
			t.Fatalf("%s: %v does not come from the TLS handshake", who.name, err)
		}
	}

	// The CLI works with a client certificate.
	out, err := exec.Command(ctlBinary, "--endpoints", strings.Join(c.endpoints(), ","),
		"--cacert", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "admin.crt"), "--key", filepath.Join(pki, "admin.key"),
		"get", "leases", "-n", "team-a").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "job") {
		t.Fatalf("leasectl with a client certificate: %v: %s", err, out)
	}
	// cluster health dials each node with the same TLS settings.
	out, err = exec.Command(ctlBinary, "--endpoints", strings.Join(c.endpoints(), ","),
		"--cacert", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "admin.crt"), "--key", filepath.Join(pki, "admin.key"),
		"cluster", "health").CombinedOutput()
	if err != nil || strings.Count(string(out), " SERVING") != len(c.procs) {
		t.Fatalf("leasectl cluster health over TLS: %v: %s", err, out)
	}
}

// tokenNode writes a PKI, a token file and a policy for one node "t1" in
// token mode with Raft over TLS, and returns the directory, the token of
// carol (who may do anything) and the node's flags.
func tokenNode(t *testing.T) (pki, token string, flags []string) {
	t.Helper()
	pki = t.TempDir()
	if out, err := exec.Command(ctlBinary, "certs", "--dir", pki, "--node", "t1", "--client", "unused").CombinedOutput(); err != nil {
		t.Fatalf("leasectl certs: %v: %s", err, out)
	}
	token = "a-long-random-token-for-the-test-0123456789"
	tokens := filepath.Join(pki, "tokens.yaml")
	policy := filepath.Join(pki, "policy.yaml")
	nodeToken := filepath.Join(pki, "node.token")
	files := map[string]string{
		tokens:    "tokens:\n- name: carol\n  sha256: " + auth.HashToken(token) + "\n- name: t1\n  groups: [\"leasekeeper:nodes\"]\n  sha256: " + auth.HashToken(token+"-node") + "\n",
		policy:    "roles:\n- name: all\n  rules:\n  - {namespaces: [\"*\"], verbs: [\"*\"]}\nbindings:\n- role: all\n  subjects: [{kind: user, name: carol}, {kind: group, name: \"leasekeeper:nodes\"}]\n",
		nodeToken: token + "-node\n",
	}
	for f, body := range files {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pki, token, []string{"--tls-cert", filepath.Join(pki, "t1.crt"), "--tls-key", filepath.Join(pki, "t1.key"),
		"--tls-ca", filepath.Join(pki, "ca.crt"), "--raft-tls", "--auth-mode", "token",
		"--auth-token-file", tokens, "--auth-policy-file", policy, "--node-token-file", nodeToken}
}

// TestTokenModeWithRaftTLS: Raft over mutual TLS does not make the API
// demand client certificates: a token-mode caller with no certificate is
// served, and one without a token is refused.
func TestTokenModeWithRaftTLS(t *testing.T) {
	pki, token, flags := tokenNode(t)
	k8sAddr := freePorts(t, 1)[0]
	c := startSingle(t, append(flags, "--k8s-api-addr", k8sAddr)...)
	tlsCfg, _, err := tlsutil.ClientConfig("", "", filepath.Join(pki, "ca.crt"), "")
	if err != nil {
		t.Fatal(err)
	}
	dial := func(opts ...grpc.DialOption) pb.ClusterClient {
		cc, err := grpc.NewClient(c.procs[0].grpc, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return pb.NewClusterClient(cc)
	}
	withToken := dial(grpc.WithPerRPCCredentials(auth.BearerToken{Token: token}))
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := withToken.Status(ctxT(t, 2*time.Second), &pb.StatusRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token-mode caller without a client certificate: %v, want served", err)
		}
		time.Sleep(100 * time.Millisecond) // the node is starting: polling another process
	}
	if _, err := dial().Status(ctxT(t, 5*time.Second), &pb.StatusRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a caller without a token: %v, want Unauthenticated", err)
	}

	// The Kubernetes API serves TLS with the node's certificate, and the
	// token passes through to the service.
	leases := "/apis/coordination.k8s.io/v1/namespaces/default/leases"
	httpsGet := func(tok string) int {
		req, err := http.NewRequestWithContext(ctxT(t, 5*time.Second), "GET", "https://"+k8sAddr+leases, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}).Do(req)
		if err != nil {
			t.Fatalf("Kubernetes API over TLS: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := httpsGet(token); code != http.StatusOK {
		t.Fatalf("Kubernetes API with a token: %d, want 200", code)
	}
	if code := httpsGet(""); code != http.StatusUnauthorized {
		t.Fatalf("Kubernetes API without a token: %d, want 401", code)
	}
	if resp, err := http.Get("http://" + k8sAddr + leases); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the Kubernetes API answered plain HTTP on a TLS node")
		}
	}
}

// TestJoinSecureCluster: a node joins a cluster with mutual TLS and RBAC
// as a node, with its own certificate.
func TestJoinSecureCluster(t *testing.T) {
	pki := t.TempDir()
	c := startSecureCluster(t, pki)
	admin := c.as(pki, pki, "admin")
	if out, err := exec.Command(ctlBinary, "certs", "--dir", pki, "--node", "n4").CombinedOutput(); err != nil {
		t.Fatalf("leasectl certs for n4: %v: %s", err, out)
	}
	ports := freePorts(t, 2)
	dir := t.TempDir()
	p := &proc{id: "n4", grpc: ports[0], raft: ports[1], dataDir: filepath.Join(dir, "n4"), logPath: filepath.Join(dir, "n4.log")}
	secure := c.procs[0].args[slices.Index(c.procs[0].args, "--profile"):]
	p.args = append([]string{"--id", "n4", "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
		"--join", strings.Join(c.endpoints(), ",")}, secure...)
	for i, a := range p.args {
		if strings.HasSuffix(a, "n1.crt") || strings.HasSuffix(a, "n1.key") {
			p.args[i] = strings.Replace(a, "n1.", "n4.", 1)
		}
	}
	c.procs = append(c.procs, p)
	c.start(p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := admin.Status(ctxT(t, 2*time.Second))
		voters := 0
		if err == nil {
			for _, m := range st.Members {
				if m.Suffrage == "voter" && m.GrpcAddr != "" {
					voters++
				}
			}
		}
		if voters == 4 {
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.logPath)
			t.Fatalf("n4 did not join the secure cluster: %d voters, %v\n%s", voters, err, tail(string(b), 20))
		}
		time.Sleep(200 * time.Millisecond) // polling other processes
	}
}
