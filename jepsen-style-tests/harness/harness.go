// Package harness runs a cluster of real lease-node processes for the chaos
// suite and does to it what the nemesis asks: cut the network between
// nodes, delay the Raft entries one node sends, kill -9 and restart,
// SIGSTOP and SIGCONT, restart with a skewed clock, move leadership,
// remove and re-add members.
//
// Two network modes exist. netns (root with iproute2 and iptables): each
// node in its own network namespace on a bridge, partitions by iptables
// DROP rules inside the namespaces, Raft stalls by an iptables NFQUEUE
// rule whose queue the harness serves late. loopback (the fallback): nodes
// on 127.0.0.1, partitions, blackholes and stalls by fault-injecting TCP
// proxies in front of each node's Raft and gRPC ports, which the nodes
// advertise. Cluster.Mode says which one ran.
//
// Only one Cluster may exist per machine at a time: New takes a lock file
// and, in netns mode, removes what a crashed earlier run left behind (every
// namespace and link named with the "lkj-" prefix). Close kills every node
// and removes everything New made, and is safe to call on any path.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Mode names a network mode.
type Mode string

// The network modes.
const (
	ModeNetns    Mode = "netns"
	ModeLoopback Mode = "loopback"
)

// Config configures a Cluster. Start from DefaultConfig.
type Config struct {
	// Nodes is the cluster size, 3 or 5 usually.
	Nodes int
	// Binary is the lease-node executable.
	Binary string
	// Dir receives data/<id> and logs/<id>.log.
	Dir string
	// Mode is "auto" (netns when possible), "netns" or "loopback".
	Mode string
	// Raft timing, passed to every node.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// ExpiryProposeTimeout is the nodes' --expiry-propose-timeout (0:
	// lease-node's default of 5s). The suite's default is shorter than a
	// lease, so that a stall-raft fault, which must outlast it, fits
	// within a 2s lease and a short run.
	ExpiryProposeTimeout time.Duration
	// LogLevel is the nodes' --log-level.
	LogLevel string
	// ExtraArgs are added to every node's flags (for example
	// --unsafe-test-fault for a negative control).
	ExtraArgs []string
	// LockFile serialises runs on one machine.
	LockFile string
	// Logf receives the harness's progress; nil discards it.
	Logf func(format string, args ...any)
}

// DefaultConfig returns a 3-node configuration with the timing the issue
// asks for.
func DefaultConfig() Config {
	return Config{
		Nodes:              3,
		Mode:               "auto",
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		// Well above an Expire's commit time on a healthy cluster, well
		// below a 2s lease.
		ExpiryProposeTimeout: 250 * time.Millisecond,
		LogLevel:             "info",
		LockFile:             filepath.Join(os.TempDir(), "leasekeeper-jepsen.lock"),
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	switch {
	case c.Nodes < 1 || c.Nodes > 9:
		return fmt.Errorf("harness: Config.Nodes must be in [1, 9], got %d", c.Nodes)
	case c.Binary == "":
		return errors.New("harness: Config.Binary is required")
	case c.Dir == "":
		return errors.New("harness: Config.Dir is required")
	case c.Mode != "auto" && c.Mode != string(ModeNetns) && c.Mode != string(ModeLoopback):
		return fmt.Errorf("harness: Config.Mode must be auto, netns or loopback, got %q", c.Mode)
	case c.LockFile == "":
		return errors.New("harness: Config.LockFile is required")
	}
	return nil
}

// nodeAddrs are where a node listens (grpcListen, raft, http) and where
// the others reach it (grpc: clients and nodes alike; peer: Raft), which
// differ in loopback mode, where a proxy sits in between.
type nodeAddrs struct {
	grpc, grpcListen, raft, peer, http string
}

// network is what differs between the two modes.
type network interface {
	mode() Mode
	setup() error
	addrs(i int) nodeAddrs
	// command returns how to run the node binary for node i.
	command(i int, bin string, args []string) (string, []string)
	// partition cuts every listed pair of nodes in both directions and
	// heals every other pair.
	partition(cut [][2]int) error
	heal() error
	// stall delays the Raft traffic that carries log entries from node i
	// to the others by delay (see Cluster.StallRaft); unstall ends it and
	// says how many packets or reads it delayed.
	stall(i int, delay time.Duration) error
	unstall() (int64, error)
	// blackhole drops, without an answer, every packet to and from node
	// i, clients' included (see Cluster.Blackhole); unblackhole ends it.
	blackhole(i int) error
	unblackhole() error
	teardown() error
}

// Node is one lease-node process slot. Its process may be running, paused,
// or stopped, and is replaced on restart.
type Node struct {
	ID    string
	Index int
	// GRPCAddr is where clients and the other nodes reach the node's
	// gRPC API, and PeerAddr its Raft (proxies in loopback mode, which
	// the node advertises); GRPCListen and RaftAddr are where it listens;
	// HTTPAddr serves /readyz and /metrics.
	GRPCAddr, GRPCListen, RaftAddr, PeerAddr, HTTPAddr string
	DataDir, LogPath                                   string

	mu        sync.Mutex
	cmd       *exec.Cmd
	done      chan struct{}
	paused    bool
	expected  bool // the harness ended the process on purpose
	clockRate float64
	joined    bool // restarts use --join (it was removed and re-added)
	starts    int
	// binary is the executable the next start runs; empty means
	// Config.Binary (see SetBinary).
	binary string
}

// Running reports whether the node's process is alive (paused counts).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

func (n *Node) runningLocked() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Paused reports whether the node is SIGSTOPped.
func (n *Node) Paused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused && n.runningLocked()
}

// ClockRate is the --clock-rate the node runs with.
func (n *Node) ClockRate() float64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clockRate
}

// PID returns the running process's PID, or 0.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return 0
	}
	return n.cmd.Process.Pid
}

// Cluster is a running set of nodes and the network between them.
type Cluster struct {
	cfg   Config
	net   network
	nodes []*Node
	lock  *os.File
	logf  func(string, ...any)

	mu      sync.Mutex
	crashes []string
	conns   map[string]*grpc.ClientConn
	// advertise caches advertises' answer per binary.
	advertise map[string]bool
	closed    bool
}

// New takes the run lock, builds the network and returns a Cluster whose
// nodes are not started yet. On error everything made is undone.
func New(cfg Config) (c *Cluster, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	lock, err := takeLock(cfg.LockFile, 2*time.Minute, logf)
	if err != nil {
		return nil, err
	}
	c = &Cluster{cfg: cfg, lock: lock, logf: logf, conns: map[string]*grpc.ClientConn{}, advertise: map[string]bool{}}
	defer func() {
		if err != nil {
			c.Close()
			c = nil
		}
	}()
	mode := Mode(cfg.Mode)
	if cfg.Mode == "auto" {
		mode = ModeNetns
		if why := netnsUsable(); why != nil {
			logf("harness: netns mode not available (%v): falling back to loopback mode", why)
			mode = ModeLoopback
		}
	}
	switch mode {
	case ModeNetns:
		c.net = &netnsNet{n: cfg.Nodes, logf: logf}
	default:
		lb := &loopbackNet{n: cfg.Nodes, logf: logf}
		lb.pids = c.pids
		c.net = lb
	}
	if err := c.net.setup(); err != nil {
		return nil, fmt.Errorf("harness: %s network: %w", mode, err)
	}
	for _, d := range []string{"data", "logs"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.Nodes; i++ {
		a := c.net.addrs(i)
		id := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &Node{
			ID: id, Index: i,
			GRPCAddr: a.grpc, GRPCListen: a.grpcListen, RaftAddr: a.raft, PeerAddr: a.peer, HTTPAddr: a.http,
			DataDir:   filepath.Join(cfg.Dir, "data", id),
			LogPath:   filepath.Join(cfg.Dir, "logs", id+".log"),
			clockRate: 1,
		})
	}
	logf("harness: %s mode, %d nodes", mode, cfg.Nodes)
	return c, nil
}

// Mode says which network mode runs.
func (c *Cluster) Mode() Mode { return c.net.mode() }

// Nodes returns the node slots in order.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// IDs returns the nodes' IDs in order.
func (c *Cluster) IDs() []string {
	ids := make([]string, 0, len(c.nodes))
	for _, n := range c.nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

// Node returns the node with the given ID, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Endpoints returns every node's client address.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.GRPCAddr)
	}
	return out
}

// Crashes lists node processes that exited without the harness asking.
func (c *Cluster) Crashes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.crashes...)
}

func (c *Cluster) pids() map[int]int {
	m := map[int]int{}
	for _, n := range c.nodes {
		if pid := n.PID(); pid > 0 {
			m[pid] = n.Index
		}
	}
	return m
}

func (c *Cluster) peers() string {
	var ps []string
	for _, n := range c.nodes {
		ps = append(ps, n.ID+"="+n.PeerAddr)
	}
	return strings.Join(ps, ",")
}

// Start starts every node and waits until each one knows a leader.
func (c *Cluster) Start(ctx context.Context) error {
	for _, n := range c.nodes {
		if err := c.start(n); err != nil {
			return err
		}
	}
	return c.WaitReady(ctx, 60*time.Second)
}

func (c *Cluster) args(n *Node, bin string) []string {
	args := []string{
		"--id", n.ID,
		"--data-dir", n.DataDir,
		"--grpc-addr", n.GRPCListen,
		"--raft-addr", n.RaftAddr,
		"--http-addr", n.HTTPAddr,
		"--heartbeat-timeout", c.cfg.HeartbeatTimeout.String(),
		"--election-timeout", c.cfg.ElectionTimeout.String(),
		"--leader-lease-timeout", c.cfg.LeaderLeaseTimeout.String(),
		"--clock-rate", strconv.FormatFloat(n.clockRate, 'f', -1, 64),
		"--log-level", c.cfg.LogLevel,
	}
	// Where a proxy sits in front of the node, the node advertises the
	// proxy: the Raft configuration and the member directory (whence
	// followers forward to the leader) must lead the others through it.
	if (n.PeerAddr != n.RaftAddr || n.GRPCAddr != n.GRPCListen) && c.advertises(bin) {
		args = append(args, "--raft-advertise", n.PeerAddr, "--grpc-advertise", n.GRPCAddr)
	}
	if c.cfg.ExpiryProposeTimeout > 0 {
		args = append(args, "--expiry-propose-timeout", c.cfg.ExpiryProposeTimeout.String())
	}
	args = append(args, c.cfg.ExtraArgs...)
	if n.joined {
		var others []string
		for _, o := range c.nodes {
			if o != n {
				others = append(others, o.GRPCAddr)
			}
		}
		return append(args, "--join", strings.Join(others, ","))
	}
	return append(args, "--bootstrap", "--peers", c.peers())
}

// advertises reports whether the lease-node at bin takes
// --raft-advertise and --grpc-advertise; a release from before them (the
// rolling upgrade's starting point) does not, and its nodes then register
// the addresses they listen on, round the loopback proxies. It asks each
// binary once.
func (c *Cluster) advertises(bin string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.advertise[bin]; ok {
		return v
	}
	out, _ := exec.Command(bin, "-h").CombinedOutput() // usage, exit 0
	v := bytes.Contains(out, []byte("-raft-advertise"))
	c.advertise[bin] = v
	if !v {
		c.logf("harness: %s has no --raft-advertise: its nodes register the addresses they listen on, so loopback partitions miss part of their traffic while they run", bin)
	}
	return v
}

func (c *Cluster) start(n *Node) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.runningLocked() {
		return fmt.Errorf("harness: %s is already running", n.ID)
	}
	logFile, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	bin := n.binary
	if bin == "" {
		bin = c.cfg.Binary
	}
	args := c.args(n, bin)
	n.starts++
	fmt.Fprintf(logFile, "=== harness: start #%d of %s at %s: %s %s\n", n.starts, n.ID, time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	name, argv := c.net.command(n.Index, bin, args)
	cmd := exec.Command(name, argv...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The nodes die with the harness, and a terminal's Ctrl-C reaches only
	// the harness, which cleans up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("harness: start %s: %w", n.ID, err)
	}
	done := make(chan struct{})
	n.cmd, n.done, n.paused, n.expected = cmd, done, false, false
	go func() {
		err := cmd.Wait()
		logFile.Close()
		n.mu.Lock()
		expected := n.expected
		n.mu.Unlock()
		close(done)
		if !expected {
			msg := fmt.Sprintf("%s exited unexpectedly: %v (see %s)", n.ID, err, n.LogPath)
			c.logf("harness: %s", msg)
			c.mu.Lock()
			c.crashes = append(c.crashes, msg)
			c.mu.Unlock()
		}
	}()
	return nil
}

// stop sends sig (SIGTERM or SIGKILL) to the node's process, continuing it
// first if paused, and waits for it to exit, with SIGKILL after grace.
func (c *Cluster) stop(n *Node, sig syscall.Signal, grace time.Duration) error {
	n.mu.Lock()
	if !n.runningLocked() {
		n.mu.Unlock()
		return nil
	}
	n.expected = true
	p, done, paused := n.cmd.Process, n.done, n.paused
	n.mu.Unlock()
	if paused {
		_ = p.Signal(syscall.SIGCONT)
	}
	_ = p.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = p.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("harness: %s did not exit after SIGKILL", n.ID)
		}
	}
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
	return nil
}

// Kill kills the node with SIGKILL and waits for it to exit.
func (c *Cluster) Kill(id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	c.logf("harness: kill -9 %s", id)
	return c.stop(n, syscall.SIGKILL, 10*time.Second)
}

// Stop stops the node with SIGTERM (SIGKILL after 10s).
func (c *Cluster) Stop(id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	return c.stop(n, syscall.SIGTERM, 10*time.Second)
}

// Restart starts a stopped node again from its data directory (killing it
// first if it runs), with the given clock rate (0 keeps the current one).
func (c *Cluster) Restart(id string, clockRate float64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	if err := c.stop(n, syscall.SIGKILL, 10*time.Second); err != nil {
		return err
	}
	if clockRate > 0 {
		n.mu.Lock()
		n.clockRate = clockRate
		n.mu.Unlock()
	}
	c.logf("harness: start %s (clock rate %v)", id, n.ClockRate())
	return c.start(n)
}

// SetBinary makes every later start of the node run bin, as replacing the
// binary on a machine does in a rolling upgrade; "" goes back to
// Config.Binary. The running process is not touched.
func (c *Cluster) SetBinary(id, bin string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.binary = bin
	return nil
}

// Binary returns the executable the node's next start runs.
func (c *Cluster) Binary(id string) string {
	n := c.Node(id)
	if n == nil {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.binary == "" {
		return c.cfg.Binary
	}
	return n.binary
}

// Readyz asks one node's /readyz: whether it is ready, and the reason it
// gives.
func (c *Cluster) Readyz(ctx context.Context, id string) (bool, string, error) {
	n := c.Node(id)
	if n == nil {
		return false, "", fmt.Errorf("harness: no node %q", id)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/readyz", nil)
	if err != nil {
		return false, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(body)), err
}

// Pause stops the node with SIGSTOP.
func (c *Cluster) Pause(id string) error { return c.pause(id, true) }

// Resume continues a paused node with SIGCONT.
func (c *Cluster) Resume(id string) error { return c.pause(id, false) }

func (c *Cluster) pause(id string, stop bool) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return fmt.Errorf("harness: %s is not running", id)
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	if err := n.cmd.Process.Signal(sig); err != nil {
		return err
	}
	n.paused = stop
	return nil
}

// Partition cuts every listed pair of nodes (by ID) in both directions and
// heals every other pair.
func (c *Cluster) Partition(cut [][2]string) error {
	var idx [][2]int
	for _, p := range cut {
		a, b := c.Node(p[0]), c.Node(p[1])
		if a == nil || b == nil {
			return fmt.Errorf("harness: partition names unknown nodes %v", p)
		}
		idx = append(idx, [2]int{a.Index, b.Index})
	}
	return c.net.partition(idx)
}

// Heal removes every network cut.
func (c *Cluster) Heal() error { return c.net.heal() }

// Blackhole makes node id silent without closing anything: every packet
// to or from it, from the other nodes and from clients alike, is dropped
// with no RST or ICMP answer, so its peers and clients see open
// connections that never answer, as with a dead host or a cut cable. In
// netns mode these are iptables DROP rules on INPUT and OUTPUT of the
// node's eth0 inside its namespace (its loopback stays up); Unblackhole
// removes them, and the namespace goes at Close in any case. In loopback
// mode the node's proxies, and the others' for what it sends, swallow
// everything on its connections without closing them; Unblackhole closes
// them. One blackhole at a time.
func (c *Cluster) Blackhole(id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	c.logf("harness: blackhole %s", id)
	return c.net.blackhole(n.Index)
}

// Unblackhole ends the blackhole in force, if any.
func (c *Cluster) Unblackhole() error { return c.net.unblackhole() }

func (c *Cluster) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// Status asks one node for its view of the cluster.
func (c *Cluster) Status(ctx context.Context, id string) (*pb.StatusResponse, error) {
	n := c.Node(id)
	if n == nil {
		return nil, fmt.Errorf("harness: no node %q", id)
	}
	cc, err := c.conn(n.GRPCAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
}

// Leader returns the ID of the node that claims leadership in the highest
// term among the running, unpaused nodes that answer. A cut-off old leader
// may still claim an older term; the highest term wins.
func (c *Cluster) Leader(ctx context.Context) (string, error) {
	var ids []string
	for _, n := range c.nodes {
		if n.Running() && !n.Paused() {
			ids = append(ids, n.ID)
		}
	}
	id, ok := HighestClaim(ctx, ids, c.Status)
	if !ok {
		return "", errors.New("harness: no node knows a leader")
	}
	return id, nil
}

// HighestClaim asks every node in ids for its status at once and returns
// the leader named in the highest term; ok is false when none names one.
// A cut-off old leader may still claim an older term; the highest wins.
func HighestClaim(ctx context.Context, ids []string, status func(context.Context, string) (*pb.StatusResponse, error)) (leader string, ok bool) {
	var (
		mu   sync.Mutex
		term uint64
		wg   sync.WaitGroup
	)
	for _, id := range ids {
		wg.Go(func() {
			st, err := status(ctx, id)
			if err != nil || st.GetLeader() == "" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !ok || st.GetTerm() > term {
				leader, term, ok = st.GetLeader(), st.GetTerm(), true
			}
		})
	}
	wg.Wait()
	return leader, ok
}

// WaitLeader waits until some node knows a leader, up to timeout.
func (c *Cluster) WaitLeader(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		id, err := c.Leader(ctx)
		if err == nil {
			return id, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("harness: no leader within %v: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitReady waits until every running, unpaused node answers /readyz with
// 200 (it knows a leader), up to timeout.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: time.Second}
	for _, n := range c.nodes {
		for n.Running() && !n.Paused() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/readyz", nil)
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("harness: %s not ready: %w (see %s)", n.ID, context.Cause(ctx), n.LogPath)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// TransferLeadership asks the cluster to hand leadership to id.
func (c *Cluster) TransferLeadership(ctx context.Context, id string) error {
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	if leader == id {
		return nil
	}
	cc, err := c.conn(c.Node(leader).GRPCAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = pb.NewClusterClient(cc).TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: id})
	return err
}

// RemoveMember removes id from the Raft configuration (through the leader)
// and kills its process; Rejoin brings it back.
func (c *Cluster) RemoveMember(ctx context.Context, id string) error {
	leader, err := c.Leader(ctx)
	if err != nil {
		return err
	}
	cc, err := c.conn(c.Node(leader).GRPCAddr)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := pb.NewClusterClient(cc).RemoveMember(rctx, &pb.RemoveMemberRequest{Id: id}); err != nil {
		return err
	}
	return c.Kill(id)
}

// Rejoin wipes a removed node's data and starts it with --join, as a new
// member, then waits until the leader lists it as a voter.
func (c *Cluster) Rejoin(ctx context.Context, id string) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("harness: no node %q", id)
	}
	if err := c.stop(n, syscall.SIGKILL, 10*time.Second); err != nil {
		return err
	}
	if err := os.RemoveAll(n.DataDir); err != nil {
		return err
	}
	n.mu.Lock()
	n.joined = true
	n.mu.Unlock()
	if err := c.start(n); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if leader, err := c.Leader(ctx); err == nil {
			if st, err := c.Status(ctx, leader); err == nil {
				for _, m := range st.GetMembers() {
					if m.GetId() == id && m.GetSuffrage() == "voter" {
						return nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: %s did not rejoin as a voter: %w", id, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Close kills every node, removes the network and releases the run lock.
// It may be called more than once.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, cc := range conns {
		cc.Close()
	}
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			_ = c.stop(n, syscall.SIGTERM, 5*time.Second)
		}(n)
	}
	wg.Wait()
	var err error
	if c.net != nil {
		err = c.net.teardown()
	}
	if c.lock != nil {
		releaseLock(c.lock)
	}
	return err
}

// takeLock takes an exclusive flock on path, waiting up to wait.
func takeLock(path string, wait time.Duration, logf func(string, ...any)) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	warned := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("harness: another chaos run holds %s", path)
		}
		if !warned {
			logf("harness: waiting for another chaos run to finish (lock %s)", path)
			warned = true
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func releaseLock(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	f.Close()
}
