package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

// binary, ctlBinary and contenderBinary are lease-node, leasectl and the
// contender test program, built once for the package.
var binary, ctlBinary, contenderBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leasekeeper-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "lease-node")
	ctlBinary = filepath.Join(dir, "leasectl")
	contenderBinary = filepath.Join(dir, "contender")
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/lease-node", "../cmd/leasectl", "./contender")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building lease-node:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one lease-node process.
type proc struct {
	id, grpc, raft, http, k8s, dataDir, logPath string
	args                                        []string
	uid                                         uint32 // run as this user when not 0
	cmd                                         *exec.Cmd
	done                                        chan struct{}
}

type cluster struct {
	t     *testing.T
	procs []*proc
}

func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// startCluster starts n real lease-node processes on loopback.
func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterWith(t, n, nil)
}

// startClusterWith is startCluster with setup run on each process before
// it starts.
func startClusterWith(t *testing.T, n int, setup func(p *proc)) *cluster {
	t.Helper()
	ports := freePorts(t, 4*n)
	c := &cluster{t: t}
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, ports[n+i]))
	}
	base := t.TempDir()
	for i := 0; i < n; i++ {
		p := &proc{
			id:      fmt.Sprintf("n%d", i+1),
			grpc:    ports[i],
			raft:    ports[n+i],
			http:    ports[2*n+i],
			k8s:     ports[3*n+i],
			dataDir: filepath.Join(base, fmt.Sprintf("n%d", i+1)),
			logPath: filepath.Join(base, fmt.Sprintf("n%d.log", i+1)),
		}
		p.args = []string{"--id", p.id, "--data-dir", p.dataDir, "--grpc-addr", p.grpc, "--raft-addr", p.raft,
			"--http-addr", p.http, "--k8s-api-addr", p.k8s, "--bootstrap", "--peers", strings.Join(peers, ","),
			"--heartbeat-timeout", "500ms", "--election-timeout", "500ms", "--leader-lease-timeout", "250ms"}
		c.procs = append(c.procs, p)
		if setup != nil {
			setup(p)
		}
		c.start(p)
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			c.stop(p, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, p := range c.procs {
				if b, err := os.ReadFile(p.logPath); err == nil {
					t.Logf("---- %s log (tail) ----\n%s", p.id, tail(string(b), 40))
				}
			}
		}
	})
	return c
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

func (c *cluster) start(p *proc) {
	c.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	p.cmd = exec.Command(binary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if p.uid != 0 {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: p.uid, Gid: p.uid}}
	}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}(p.cmd, p.done)
}

// stop signals p and waits for it to exit.
func (c *cluster) stop(p *proc, sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.cmd = nil
}

func (c *cluster) endpoints() []string {
	var out []string
	for _, p := range c.procs {
		out = append(out, p.grpc)
	}
	return out
}

// client returns a client of the given endpoints (all when none), closed
// when the test ends.
func (c *cluster) client(endpoints ...string) *client.Client {
	c.t.Helper()
	cl := c.dial(endpoints...)
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

func (c *cluster) dial(endpoints ...string) *client.Client {
	c.t.Helper()
	if len(endpoints) == 0 {
		endpoints = c.endpoints()
	}
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cl, err := client.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// leader waits for a leader known to every live node and returns it.
func (c *cluster) leader(timeout time.Duration) *proc {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, p := range c.procs {
			if p.cmd == nil {
				continue
			}
			cl := c.dial(p.grpc)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := cl.Status(ctx)
			cancel()
			cl.Close()
			if err == nil && st.State == "leader" {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond) // polling processes: nothing to await
	}
	c.t.Fatalf("no leader within %v", timeout)
	return nil
}
