// Package nodetest builds in-memory leasekeeper clusters for tests: real
// Raft with raft.InmemTransport and raft.InmemStore, shrunken timeouts, a
// shared clock for the expiry managers, and the means to cut the network.
package nodetest

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/node"
)

// Cluster is a set of in-memory nodes.
type Cluster struct {
	t      testing.TB
	Nodes  []*node.Node
	Trans  []*raft.InmemTransport
	cancel context.CancelFunc
	wg     sync.WaitGroup

	logs []*stallStore

	mu       sync.Mutex
	isolated map[int]bool // cut off by Isolate until Heal
}

// Options tune a test cluster.
type Options struct {
	// Listeners, if set, returns extra FSM listeners for node i.
	Listeners func(i int) []fsm.Listener
	// GRPCAddr, if set, returns the gRPC address node i registers.
	GRPCAddr func(i int) string
	// RaftAddr, if set, names node i's in-memory transport (and so its
	// address in the Raft configuration); "inmem-<i>" by default.
	RaftAddr func(i int) string
	// Config, if set, adjusts node i's configuration last.
	Config func(i int, cfg *node.Config)
	// LeaderGone, if set, is every node's crash probe (the in-memory
	// transport has none by default).
	LeaderGone node.LeaderGoneFunc
	// Transport, if set, returns the transport node i's Raft uses in
	// place of t, its in-memory one (which Isolate and Heal still cut and
	// mend): a wrapper that delays or alters RPCs.
	Transport func(i int, t *raft.InmemTransport) raft.Transport
}

// New starts n nodes bootstrapped as one cluster, their expiry managers on
// clk, and stops them when the test ends.
func New(t testing.TB, n int, clk clock.Clock, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, isolated: make(map[int]bool)}
	var peers []raft.Server
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("inmem-%d", i)
		if opts.RaftAddr != nil {
			name = opts.RaftAddr(i)
		}
		addr, tr := raft.NewInmemTransport(raft.ServerAddress(name))
		c.Trans = append(c.Trans, tr)
		peers = append(peers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: addr})
	}
	for i, a := range c.Trans {
		for j, b := range c.Trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	for i := 0; i < n; i++ {
		cfg := node.DefaultConfig()
		cfg.ID = string(peers[i].ID)
		cfg.RaftAddr = string(peers[i].Address)
		cfg.Bootstrap = true
		cfg.Peers = peers
		// Short enough for quick elections, long enough that a loaded
		// machine (-race, two cores) does not depose a healthy leader.
		cfg.HeartbeatTimeout = 500 * time.Millisecond
		cfg.ElectionTimeout = 500 * time.Millisecond
		cfg.LeaderLeaseTimeout = 250 * time.Millisecond
		cfg.CommitTimeout = 5 * time.Millisecond
		cfg.GRPCAddr = fmt.Sprintf("inmem-grpc-%d", i)
		if opts.GRPCAddr != nil {
			cfg.GRPCAddr = opts.GRPCAddr(i)
		}
		if opts.Config != nil {
			opts.Config(i, &cfg)
		}
		logs := &stallStore{InmemStore: raft.NewInmemStore()}
		c.logs = append(c.logs, logs)
		var tr raft.Transport = c.Trans[i]
		if opts.Transport != nil {
			tr = opts.Transport(i, c.Trans[i])
		}
		deps := node.Deps{
			Clock:      clk,
			Logger:     Logger(t, cfg.ID),
			Transport:  tr,
			Logs:       logs,
			Stable:     logs.InmemStore,
			Snapshots:  raft.NewInmemSnapshotStore(),
			LeaderGone: opts.LeaderGone,
		}
		if opts.Listeners != nil {
			deps.Listeners = opts.Listeners(i)
		}
		nd, err := node.New(cfg, deps)
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		if opts.GRPCAddr == nil {
			// No gRPC servers: members answer each other's leadership
			// confirmations directly, across the same cuts as Raft.
			nd.SetPeers(memberPeers{c: c, from: i})
		}
		c.mu.Lock()
		c.Nodes = append(c.Nodes, nd)
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			_ = nd.Run(ctx)
		}()
	}
	t.Cleanup(c.Stop)
	return c
}

// Stop stops every node and waits for them. A stalled log is released
// first, so that Raft can shut down.
func (c *Cluster) Stop() {
	for _, l := range c.logs {
		l.release()
	}
	c.cancel()
	c.wg.Wait()
}

// StallLog makes every write to node i's Raft log wait, as a stalled disk
// would, until release is called (or the cluster stops). blocked receives
// when a write starts waiting. Raft keeps running otherwise: a stalled
// leader keeps its followers' heartbeats, and so its leadership, while no
// entry it takes is appended or committed.
func (c *Cluster) StallLog(i int) (blocked <-chan struct{}, release func()) {
	return c.logs[i].stall(), c.logs[i].release
}

// Leader waits until exactly one node leads and has finished its
// promotion, and returns it.
func (c *Cluster) Leader(timeout time.Duration) *node.Node {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, n := range c.Nodes {
			if n.IsLeader() && n.Manager().Active() {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond) // polling Raft state: no event to wait on
	}
	c.t.Fatalf("no ready leader within %v", timeout)
	return nil
}

// Isolate cuts node i off from every other node.
func (c *Cluster) Isolate(i int) {
	c.mu.Lock()
	c.isolated[i] = true
	c.mu.Unlock()
	for j, tr := range c.Trans {
		if j != i {
			tr.Disconnect(c.Trans[i].LocalAddr())
			c.Trans[i].Disconnect(tr.LocalAddr())
		}
	}
}

// Heal reconnects every node to every other.
func (c *Cluster) Heal() {
	c.mu.Lock()
	clear(c.isolated)
	c.mu.Unlock()
	for i, a := range c.Trans {
		for j, b := range c.Trans {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
}

// memberPeers answers node from's Term calls by asking the other nodes directly;
// an isolated node neither asks nor answers.
type memberPeers struct {
	c    *Cluster
	from int
}

func (p memberPeers) Term(ctx context.Context, id, _ string, _ uint64) (uint64, error) {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	for j, n := range p.c.Nodes {
		if n.ID() != id {
			continue
		}
		if p.c.isolated[p.from] || p.c.isolated[j] {
			return 0, fmt.Errorf("nodetest: %s is cut off", id)
		}
		return n.Term(), nil
	}
	return 0, fmt.Errorf("nodetest: no member %s", id)
}

// Index returns the position of n in the cluster.
func (c *Cluster) Index(n *node.Node) int {
	for i, x := range c.Nodes {
		if x == n {
			return i
		}
	}
	return -1
}

// Logger sends a node's logs to t.Log.
func Logger(t testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: tWriter{t}})
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

var _ io.Writer = tWriter{}

// Log returns node i's Raft log store, for tests that read the entries.
func (c *Cluster) Log(i int) raft.LogStore { return c.logs[i] }

// stallStore is a Raft log store whose writes can be held up.
type stallStore struct {
	*raft.InmemStore

	mu      sync.Mutex
	gate    chan struct{} // non-nil while stalled; closed on release
	blocked chan struct{} // buffered 1: a write is waiting at the gate
}

func (s *stallStore) stall() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate == nil {
		s.gate = make(chan struct{})
		s.blocked = make(chan struct{}, 1)
	}
	return s.blocked
}

func (s *stallStore) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

func (s *stallStore) wait() {
	s.mu.Lock()
	gate, blocked := s.gate, s.blocked
	s.mu.Unlock()
	if gate == nil {
		return
	}
	select {
	case blocked <- struct{}{}:
	default:
	}
	<-gate
}

// StoreLog implements raft.LogStore.
func (s *stallStore) StoreLog(l *raft.Log) error {
	s.wait()
	return s.InmemStore.StoreLog(l)
}

// StoreLogs implements raft.LogStore.
func (s *stallStore) StoreLogs(logs []*raft.Log) error {
	s.wait()
	return s.InmemStore.StoreLogs(logs)
}
