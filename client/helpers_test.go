package client_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
)

// The Example functions run against one in-process cluster, started on
// first use and stopped after every test, before the leak check.
var example struct {
	once sync.Once
	tb   *mainTB
	c    *lktest.Cluster
}

func TestMain(m *testing.M) {
	code := m.Run()
	if example.tb != nil {
		example.tb.stop()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// exampleEndpoints returns the gRPC addresses of the examples' cluster.
func exampleEndpoints() []string {
	example.once.Do(func() {
		example.tb = &mainTB{}
		example.c = lktest.Start(example.tb, 3, clock.New())
		example.c.Leader(10 * time.Second)
		waitLeaderKnown(example.tb, example.c.Endpoints)
	})
	return example.c.Endpoints
}

// mainTB is the testing.TB of the examples' cluster, which outlives any one
// test. Methods that lktest does not use panic (the embedded TB is nil).
type mainTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func (*mainTB) Helper()                        {}
func (*mainTB) Name() string                   { return "examples" }
func (*mainTB) Log(...any)                     {}
func (*mainTB) Logf(string, ...any)            {}
func (*mainTB) Fatal(args ...any)              { panic(fmt.Sprint(args...)) }
func (*mainTB) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }

func (m *mainTB) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

func (m *mainTB) stop() {
	m.mu.Lock()
	fs := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// startCluster runs a 3-node cluster for t and waits until every node
// knows the leader's address.
func startCluster(t *testing.T) *lktest.Cluster {
	t.Helper()
	c := lktest.Start(t, 3, clock.New())
	c.Leader(10 * time.Second)
	waitLeaderKnown(t, c.Endpoints)
	waitNewestCommands(t, c)
	return c
}

// waitNewestCommands waits until every member has registered this binary's
// command version, so that the leader takes every command (semaphore
// queues need version 4; before it, Semaphore falls back to racing).
func waitNewestCommands(t testing.TB, c *lktest.Cluster) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Leader(10*time.Second).CommandVersion() != fsm.CommandVersion {
		if time.Now().After(deadline) {
			t.Fatalf("the cluster applies command version %d after 10s, want %d", c.Leader(time.Second).CommandVersion(), fsm.CommandVersion)
		}
		time.Sleep(10 * time.Millisecond) // members register every 200ms
	}
}

// waitLeaderKnown polls every node's status until each reports the
// leader's gRPC address: the Raft state offers no event to wait on.
func waitLeaderKnown(t testing.TB, endpoints []string) {
	t.Helper()
	for _, ep := range endpoints {
		cfg := client.DefaultConfig()
		cfg.Endpoints = []string{ep}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx)
			cancel()
			if err == nil && st.GetLeaderGrpcAddr() != "" {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("node %s does not know the leader's address: %v", ep, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		c.Close()
	}
}

// testConfig is a Config with fast retries for tests.
func testConfig(t *testing.T, endpoints []string) client.Config {
	cfg := client.DefaultConfig()
	cfg.Endpoints = endpoints
	cfg.DialTimeout = time.Second
	cfg.BackoffBase = 5 * time.Millisecond
	cfg.BackoffMax = 100 * time.Millisecond
	cfg.MaxRetries = 20
	// Idle watches hear from their node ten times a second, so a silent
	// one is given up within 300ms.
	cfg.WatchProgressInterval = 100 * time.Millisecond
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "client", Level: hclog.Info, Output: testWriter{t}})
	return cfg
}

// lkClient returns a client of endpoints, changed by change, closed when t
// ends.
func lkClient(t *testing.T, endpoints []string, change ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := testConfig(t, endpoints)
	for _, f := range change {
		f(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// faults is a test-only transport interceptor for the KeepAlive stream: it
// counts streams and batches, can refuse streams, and can drop every
// message sent (as a partition would) so that no answer ever comes.
type faults struct {
	// breakWatch, when set, ends every watch stream with Unavailable after
	// it has delivered that many messages (events, or batches of them).
	breakWatch atomic.Int32
	drop       atomic.Bool
	refuse     atomic.Pointer[func(target string) error]
	opens      atomic.Int32
	mu         sync.Mutex
	batches    []int // leases per message that went out
}

func (f *faults) dialOption() grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		watch := method == pb.Leases_Watch_FullMethodName || method == pb.Leases_WatchBatches_FullMethodName
		if watch && f.breakWatch.Load() > 0 {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return &breakingStream{ClientStream: s, left: int(f.breakWatch.Load())}, nil
		}
		if method != pb.Leases_KeepAlive_FullMethodName {
			return streamer(ctx, desc, cc, method, opts...)
		}
		f.opens.Add(1)
		if r := f.refuse.Load(); r != nil {
			if err := (*r)(cc.Target()); err != nil {
				return nil, err
			}
		}
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &faultStream{ClientStream: s, f: f}, nil
	})
}

func (f *faults) setRefuse(r func(target string) error) { f.refuse.Store(&r) }

func (f *faults) sizes() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.batches...)
}

type faultStream struct {
	grpc.ClientStream
	f *faults
}

func (s *faultStream) SendMsg(m any) error {
	if s.f.drop.Load() {
		return nil // lost in the network
	}
	if req, ok := m.(*pb.KeepAliveRequest); ok {
		s.f.mu.Lock()
		s.f.batches = append(s.f.batches, len(proto.Clone(req).(*pb.KeepAliveRequest).GetLeases()))
		s.f.mu.Unlock()
	}
	return s.ClientStream.SendMsg(m)
}

// breakingStream fails with Unavailable once it has received left
// messages, as a watch does when its node goes away.
type breakingStream struct {
	grpc.ClientStream
	left int
}

func (s *breakingStream) RecvMsg(m any) error {
	if s.left == 0 {
		return status.Error(codes.Unavailable, "test: watch broken")
	}
	s.left--
	return s.ClientStream.RecvMsg(m)
}

// waitUntil polls cond where the code under test offers no event to wait
// on.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recvWithin receives from ch or fails the test after d.
func recvWithin[T any](t *testing.T, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	var zero T
	return zero
}

// closedWithin waits for ch to be closed or fails the test after d.
func closedWithin(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// mustMutex is client.NewMutex for options that the test knows are valid.
func mustMutex(t testing.TB, c *client.Client, name string, opts ...client.Option) *client.Mutex {
	t.Helper()
	m, err := client.NewMutex(c, name, opts...)
	if err != nil {
		t.Fatalf("NewMutex(%q): %v", name, err)
	}
	return m
}

// mustElection is client.NewElection for options that the test knows are
// valid.
func mustElection(t testing.TB, c *client.Client, name string, opts ...client.Option) *client.Election {
	t.Helper()
	e, err := client.NewElection(c, name, opts...)
	if err != nil {
		t.Fatalf("NewElection(%q): %v", name, err)
	}
	return e
}

// mustMonitor is client.NewMonitor for a namespace and options that the
// test knows are valid.
func mustMonitor(t testing.TB, c *client.Client, namespace string, opts ...client.MonitorOption) *client.Monitor {
	t.Helper()
	m, err := client.NewMonitor(c, namespace, opts...)
	if err != nil {
		t.Fatalf("NewMonitor(%q): %v", namespace, err)
	}
	return m
}
