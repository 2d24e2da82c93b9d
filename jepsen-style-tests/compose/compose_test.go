package compose

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/nemesis"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeScript writes a partition.sh stand-in that appends its arguments to
// a file, fails when the first one is "fail", and hangs on "hang".
func fakeScript(t *testing.T) (script, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script = filepath.Join(dir, "partition.sh")
	body := `#!/bin/sh
echo "$*" >>'` + calls + `'
case "$1" in
fail) echo "no such container: lk-$2" >&2; exit 1 ;;
hang) exec sleep 30 ;;
esac
echo "did $*"
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, calls
}

func readCalls(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

func newTest(t *testing.T, script string, endpoints ...string) *Cluster {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Script = script
	if len(endpoints) > 0 {
		cfg.Endpoints = endpoints
	}
	cfg.Logf = t.Logf
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func cut(a, b []string) [][2]string {
	var out [][2]string
	for _, x := range a {
		for _, y := range b {
			out = append(out, [2]string{x, y})
		}
	}
	return out
}

// TestPartitionCommands: a cut of one node from the rest is `isolate`,
// of a group `split`; cuts that partition.sh cannot make are refused
// before anything runs.
func TestPartitionCommands(t *testing.T) {
	tests := []struct {
		name    string
		cut     [][2]string
		want    string
		wantErr string
	}{
		{"isolate", cut([]string{"n2"}, []string{"n1", "n3"}), "isolate n2", ""},
		{"split, the group first", cut([]string{"n1", "n3"}, []string{"n2"}), "split n1 n3", ""},
		{"split, group out of order", cut([]string{"n3", "n1"}, []string{"n2"}), "split n1 n3", ""},
		{"bridge", cut([]string{"n1"}, []string{"n3"}), "", "not"},
		{"unknown node", cut([]string{"n9"}, []string{"n1"}), "", "no node"},
		{"empty", nil, "", "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script, calls := fakeScript(t)
			c := newTest(t, script)
			err := c.Partition(tt.cut)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Partition(%v) = %v, want an error with %q", tt.cut, err, tt.wantErr)
				}
				if _, serr := os.Stat(calls); serr == nil {
					t.Errorf("partition.sh ran for a refused cut: %v", readCalls(t, calls))
				}
				return
			}
			if err != nil {
				t.Fatalf("Partition(%v): %v", tt.cut, err)
			}
			if got := readCalls(t, calls); !slices.Equal(got, []string{tt.want}) {
				t.Errorf("partition.sh ran %q, want %q", got, tt.want)
			}
			if got := c.TakeCommands(); !slices.Equal(got, []string{"partition.sh " + tt.want}) {
				t.Errorf("TakeCommands = %q", got)
			}
			if got := c.TakeCommands(); len(got) != 0 {
				t.Errorf("TakeCommands again = %q, want none", got)
			}
		})
	}
}

// TestFaultCommands: kill/start, pause/unpause and heal map to their
// partition.sh commands, and a clock rate is refused.
func TestFaultCommands(t *testing.T) {
	script, calls := fakeScript(t)
	c := newTest(t, script)
	steps := []func() error{
		func() error { return c.Kill("n1") },
		func() error { return c.Restart("n1", 0) },
		func() error { return c.Pause("n2") },
		func() error { return c.Resume("n2") },
		func() error { return c.Heal() },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := []string{"kill n1", "start n1", "pause n2", "unpause n2", "heal"}
	if got := readCalls(t, calls); !slices.Equal(got, want) {
		t.Errorf("partition.sh ran %q, want %q", got, want)
	}
	if err := c.Restart("n1", 1.01); err == nil {
		t.Error("Restart with a clock rate: no error")
	}
	if err := c.Kill("n7"); err == nil {
		t.Error("Kill of an unknown node: no error")
	}
}

// TestScriptErrors: a failing command's output is in the error, and a
// hanging one is cut off at CommandTimeout.
func TestScriptErrors(t *testing.T) {
	script, _ := fakeScript(t)
	c := newTest(t, script)
	if err := c.script("fail", "n1"); err == nil || !strings.Contains(err.Error(), "no such container: lk-n1") {
		t.Errorf("failing command: %v, want its output", err)
	}
	c.cfg.CommandTimeout = 200 * time.Millisecond
	start := time.Now()
	err := c.script("hang")
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("hanging command: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hanging command took %v", d)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no script", func(c *Config) { c.Script = "" }},
		{"no nodes", func(c *Config) { c.IDs, c.Endpoints = nil, nil }},
		{"count mismatch", func(c *Config) { c.Endpoints = c.Endpoints[:2] }},
		{"duplicate id", func(c *Config) { c.IDs = []string{"n1", "n1", "n3"} }},
		{"no timeout", func(c *Config) { c.CommandTimeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mod(&cfg)
			if _, err := New(cfg); err == nil {
				t.Error("New accepted it")
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
}

// TestKindsAreNemesisKinds: every compose kind is a nemesis kind the
// compose cluster can make.
func TestKindsAreNemesisKinds(t *testing.T) {
	for _, k := range append(slices.Clone(Kinds), ShortKinds...) {
		if !nemesis.Known(k) {
			t.Errorf("%s is not a nemesis kind", k)
		}
	}
	for _, k := range ShortKinds {
		if !slices.Contains(Kinds, k) {
			t.Errorf("short kind %s is not in Kinds", k)
		}
	}
	cfg := nemesis.DefaultConfig()
	cfg.Kinds = Kinds
	script, _ := fakeScript(t)
	if _, err := nemesis.New(cfg, newTest(t, script), nil, nil); err != nil {
		t.Errorf("nemesis.New with compose.Kinds: %v", err)
	}
	cfg.Kinds = []string{nemesis.StallRaft}
	if _, err := nemesis.New(cfg, newTest(t, script), nil, nil); err == nil {
		t.Error("nemesis.New accepted stall-raft for a compose cluster")
	}
}

// statusServer answers Status with a settable leader and term.
type statusServer struct {
	pb.UnimplementedClusterServer
	mu     sync.Mutex
	leader string
	term   uint64
}

func (s *statusServer) set(leader string, term uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leader, s.term = leader, term
}

func (s *statusServer) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &pb.StatusResponse{Leader: s.leader, Term: s.term}, nil
}

func serveStatus(t *testing.T) (*statusServer, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	ss := &statusServer{}
	pb.RegisterClusterServer(gs, ss)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	t.Cleanup(func() {
		gs.Stop()
		<-done
	})
	return ss, lis.Addr().String()
}

// TestLeaderAndReady: the highest term's claim wins, paused and killed
// nodes are not asked, and WaitReady waits for every running node to
// know a leader, within its bound.
func TestLeaderAndReady(t *testing.T) {
	s1, a1 := serveStatus(t)
	s2, a2 := serveStatus(t)
	s3, a3 := serveStatus(t)
	script, _ := fakeScript(t)
	c := newTest(t, script, a1, a2, a3)
	ctx := context.Background()

	s1.set("n1", 3) // the cut-off old leader
	s2.set("n2", 4)
	s3.set("", 4)
	if l, err := c.Leader(ctx); err != nil || l != "n2" {
		t.Errorf("Leader = %q, %v; want n2 (highest term)", l, err)
	}
	if err := c.WaitReady(ctx, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "n3 not ready") {
		t.Errorf("WaitReady with n3 knowing no leader = %v, want n3 not ready", err)
	}
	if err := c.Pause("n3"); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, time.Second); err != nil {
		t.Errorf("WaitReady with n3 paused: %v", err)
	}
	if err := c.Kill("n2"); err != nil {
		t.Fatal(err)
	}
	if l, err := c.Leader(ctx); err != nil || l != "n1" {
		t.Errorf("Leader with n2 killed, n3 paused = %q, %v; want n1", l, err)
	}
	s1.set("", 5)
	if _, err := c.WaitLeader(ctx, 300*time.Millisecond); err == nil {
		t.Error("WaitLeader found a leader where no node knows one")
	}
}
