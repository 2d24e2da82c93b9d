package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/deploy"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// podAddrs picks one loopback address per pod, 127.a.b.1..n, on which every
// container port is free: the pods share this machine's network, so each
// gets an address of its own for the ports the manifest gives them all.
func podAddrs(t *testing.T, n int, ports []int32) []string {
	t.Helper()
	for range 20 {
		ab, err := rand.Int(rand.Reader, big.NewInt(200*250))
		if err != nil {
			t.Fatal(err)
		}
		a, b := 20+ab.Int64()/250, ab.Int64()%250
		var addrs []string
		free := true
		for i := range n {
			addr := fmt.Sprintf("127.%d.%d.%d", a, b, i+1)
			for _, p := range ports {
				l, err := net.Listen("tcp", net.JoinHostPort(addr, fmt.Sprint(p)))
				if err != nil {
					free = false
					break
				}
				l.Close()
			}
			addrs = append(addrs, addr)
		}
		if free {
			return addrs
		}
	}
	t.Fatal("no free loopback addresses for the pods")
	return nil
}

// TestStatefulSetStartsACluster runs the StatefulSet's pods as lease-node
// processes with exactly the command, arguments and environment the
// manifest gives them (deploy.Kubernetes.Pod: pod names, field and
// resource references, $(VAR) expansion) and checks that they form a
// healthy cluster, reached and probed where the manifest says.
//
// What Kubernetes would provide is stood in for, and only that:
//   - DNS: each pod's name under the headless Service
//     (<pod>.<service>.<namespace>.svc.cluster.local) becomes that pod's
//     own loopback address 127.a.b.<ordinal+1>, and so does the wildcard
//     bind address 0.0.0.0 (in a pod it binds the pod's own network);
//   - volumes: each mountPath becomes a directory of the pod's own, the
//     Secret's keys (tls.crt, tls.key, ca.crt) written there from a CA made
//     for the test, whose node certificate is valid for the pods' wildcard
//     DNS name and their loopback addresses.
func TestStatefulSetStartsACluster(t *testing.T) {
	k, err := deploy.LoadKubernetes()
	if err != nil {
		t.Fatal(err)
	}
	sts := k.StatefulSet
	n := int(*sts.Spec.Replicas)
	c := sts.Spec.Template.Spec.Containers[0]
	port := map[string]int32{}
	var ports []int32
	for _, p := range c.Ports {
		port[p.Name] = p.ContainerPort
		ports = append(ports, p.ContainerPort)
	}
	addrs := podAddrs(t, n, ports)
	base := t.TempDir()

	// The Secret: a CA and one node certificate for every pod.
	caDir := filepath.Join(base, "ca")
	caCert, _, err := tlsutil.GenerateCA(caDir, "statefulset test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var ips []net.IP
	for _, a := range addrs {
		ips = append(ips, net.ParseIP(a))
	}
	wildcard := fmt.Sprintf("*.%s.%s.svc.cluster.local", sts.Spec.ServiceName, k.Kustomization.Namespace)
	nodeCert, nodeKey, err := tlsutil.GenerateCert(caDir, caDir, "node", []string{wildcard}, ips, true, true, tlsutil.WithGroups(tlsutil.NodeGroup))
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey, err := tlsutil.GenerateCert(caDir, caDir, "tester", nil, nil, true, false)
	if err != nil {
		t.Fatal(err)
	}
	secret := map[string]string{"tls.crt": nodeCert, "tls.key": nodeKey, "ca.crt": caCert}

	var procs []*exec.Cmd
	var logs []string
	t.Cleanup(func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
		for i, p := range procs {
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = p.Process.Kill()
				<-done
			}
			if t.Failed() {
				if b, err := os.ReadFile(logs[i]); err == nil {
					t.Logf("---- pod %d log (tail) ----\n%s", i, tail(string(b), 30))
				}
			}
		}
	})
	for i := range n {
		pod, err := k.Pod(i)
		if err != nil {
			t.Fatal(err)
		}
		podDir := filepath.Join(base, pod.Name)
		var repl []string
		for j := range n {
			repl = append(repl, fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", sts.Name, j, sts.Spec.ServiceName, pod.Namespace), addrs[j])
		}
		repl = append(repl, "0.0.0.0", addrs[i])
		for _, m := range c.VolumeMounts {
			dir := filepath.Join(podDir, m.Name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if m.Name == "tls" {
				for key, src := range secret {
					b, err := os.ReadFile(src)
					if err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(filepath.Join(dir, key), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			repl = append(repl, m.MountPath, dir)
		}
		sub := strings.NewReplacer(repl...)
		if len(pod.Command) != 1 || pod.Command[0] != "lease-node" {
			t.Fatalf("command %q, want lease-node", pod.Command)
		}
		var args, env []string
		for _, a := range pod.Args {
			args = append(args, sub.Replace(a))
		}
		for _, e := range pod.Env {
			env = append(env, e.Name+"="+sub.Replace(e.Value))
		}
		logs = append(logs, filepath.Join(base, pod.Name+".log"))
		logf, err := os.Create(logs[i])
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, args...)
		cmd.Env = env // the container's environment, and nothing of the test's
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		logf.Close()
		procs = append(procs, cmd)
		t.Logf("%s: lease-node %s (env %s)", pod.Name, strings.Join(args, " "), strings.Join(env, " "))
	}

	// The kubelet's probes, as the manifest gives them.
	probeURL := func(i int, p *corev1.Probe) string {
		return fmt.Sprintf("http://%s/%s", net.JoinHostPort(addrs[i], fmt.Sprint(port[p.HTTPGet.Port.String()])), strings.TrimPrefix(p.HTTPGet.Path, "/"))
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	probeOK := func(url string) bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := range n {
		for !probeOK(probeURL(i, c.ReadinessProbe)) {
			if time.Now().After(deadline) {
				t.Fatalf("pod %d not ready (%s) within 60s", i, probeURL(i, c.ReadinessProbe))
			}
			for _, p := range procs {
				if p.ProcessState != nil {
					t.Fatalf("a node exited: %v", p.ProcessState)
				}
			}
			time.Sleep(200 * time.Millisecond) // polling another process's readiness endpoint
		}
		if !probeOK(probeURL(i, c.LivenessProbe)) {
			t.Errorf("pod %d liveness probe %s failed", i, probeURL(i, c.LivenessProbe))
		}
	}

	// Clients reach every pod over TLS; a follower forwards a write to the
	// leader over TLS; the members are the pods, by name and DNS address.
	tlsCfg, _, err := tlsutil.ClientConfig(clientCert, clientKey, caCert, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastToken uint64
	for i := range n {
		cc, err := grpc.NewClient(net.JoinHostPort(addrs[i], fmt.Sprint(port["grpc"])), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		st, err := pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			t.Fatalf("status of pod %d: %v", i, err)
		}
		if st.Id != fmt.Sprintf("%s-%d", sts.Name, i) || st.Leader == "" || len(st.Members) != n {
			t.Fatalf("status of pod %d: id %s, leader %q, %d members", i, st.Id, st.Leader, len(st.Members))
		}
		var ids []string
		for _, m := range st.Members {
			ids = append(ids, m.Id)
			j := slices.Index(addrs, strings.Split(m.RaftAddr, ":")[0])
			if m.Id != fmt.Sprintf("%s-%d", sts.Name, j) {
				t.Errorf("member %s has the raft address %s of pod %d", m.Id, m.RaftAddr, j)
			}
		}
		slices.Sort(ids)
		if ids[0] != sts.Name+"-0" || ids[n-1] != fmt.Sprintf("%s-%d", sts.Name, n-1) {
			t.Errorf("members %v, want the pods' names", ids)
		}
		acq, err := pb.NewLeasesClient(cc).Acquire(ctx, &pb.AcquireRequest{
			Name: fmt.Sprintf("via-%d", i), HolderIdentity: "tester", LeaseDuration: durationpb.New(10 * time.Second)})
		if err != nil || !acq.Acquired || acq.Lease.FencingToken <= lastToken {
			t.Fatalf("acquire through pod %d (%s): %v %v", i, st.State, err, acq)
		}
		lastToken = acq.Lease.FencingToken
	}
}
