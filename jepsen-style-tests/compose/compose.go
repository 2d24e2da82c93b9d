// Package compose lets the chaos suite's nemesis drive the docker-compose
// cluster (docker-compose.yml at the repository root): every fault is a
// partition.sh command (isolate, split, heal, kill, start, pause,
// unpause), and the cluster's state comes from the nodes' gRPC ports as
// published on the host. It makes the faults of Kinds; the others need
// the harness's own processes.
package compose

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/harness"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/nemesis"
)

// Kinds lists the fault kinds that partition.sh can make on a 3-node
// cluster: cuts of one group from the rest, docker kill/start and docker
// pause/unpause of a node, and pausing a client.
var Kinds = []string{
	nemesis.PartitionIsolateLeader, nemesis.PartitionHalves, nemesis.PartitionLeaderMinority,
	nemesis.KillNode, nemesis.KillLeader,
	nemesis.PauseNode, nemesis.PauseLeader, nemesis.PauseLeaderLong,
	nemesis.PauseClient,
}

// ShortKinds is the compose run's short mix: one partition of each shape,
// one kill and one pause, all aimed at the leader but the halves.
var ShortKinds = []string{
	nemesis.PartitionIsolateLeader, nemesis.PartitionHalves, nemesis.KillLeader, nemesis.PauseLeader,
}

// Config configures a Cluster.
type Config struct {
	// Script is partition.sh.
	Script string
	// IDs are the compose services (n1, n2, n3) and Endpoints their gRPC
	// addresses on the host, in the same order.
	IDs       []string
	Endpoints []string
	// CommandTimeout bounds one partition.sh command.
	CommandTimeout time.Duration
	// StatusTimeout bounds one Status call.
	StatusTimeout time.Duration
	Logf          func(string, ...any)
}

// DefaultConfig returns the compose cluster of docker-compose.yml.
func DefaultConfig() Config {
	return Config{
		Script:         "jepsen-style-tests/compose/partition.sh",
		IDs:            []string{"n1", "n2", "n3"},
		Endpoints:      []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
		CommandTimeout: time.Minute,
		StatusTimeout:  time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Script == "":
		return errors.New("compose: Config.Script is empty")
	case len(c.IDs) == 0:
		return errors.New("compose: Config.IDs is empty")
	case len(c.IDs) != len(c.Endpoints):
		return fmt.Errorf("compose: %d IDs but %d Endpoints", len(c.IDs), len(c.Endpoints))
	case c.CommandTimeout <= 0 || c.StatusTimeout <= 0:
		return errors.New("compose: Config.CommandTimeout and StatusTimeout must be positive")
	}
	seen := map[string]bool{}
	for _, id := range c.IDs {
		if id == "" || seen[id] {
			return fmt.Errorf("compose: node IDs must be distinct and non-empty: %v", c.IDs)
		}
		seen[id] = true
	}
	return nil
}

// Cluster is a running compose cluster. It implements nemesis.Cluster and
// nemesis.Commander.
type Cluster struct {
	cfg  Config
	logf func(string, ...any)

	mu     sync.Mutex
	down   map[string]bool // killed by Kill
	paused map[string]bool // frozen by Pause
	conns  map[string]*grpc.ClientConn
	cmds   []string
}

// New returns a Cluster for cfg. It starts nothing: the cluster runs
// already (docker compose up).
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Cluster{cfg: cfg, logf: logf, down: map[string]bool{}, paused: map[string]bool{}, conns: map[string]*grpc.ClientConn{}}, nil
}

// IDs returns the nodes' IDs.
func (c *Cluster) IDs() []string { return slices.Clone(c.cfg.IDs) }

// Endpoints returns the nodes' gRPC addresses on the host.
func (c *Cluster) Endpoints() []string { return slices.Clone(c.cfg.Endpoints) }

// TakeCommands returns the partition.sh commands run since its last call.
func (c *Cluster) TakeCommands() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.cmds
	c.cmds = nil
	return out
}

func (c *Cluster) known(id string) error {
	if !slices.Contains(c.cfg.IDs, id) {
		return fmt.Errorf("compose: no node %q", id)
	}
	return nil
}

// script runs partition.sh with args, bounded by CommandTimeout, and
// records the command.
func (c *Cluster) script(args ...string) error {
	line := "partition.sh " + strings.Join(args, " ")
	c.mu.Lock()
	c.cmds = append(c.cmds, line)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.cfg.Script, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The script's docker commands end with it; bound the pipes too.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	c.logf("compose: %s (%v): %s", line, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out.String()))
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", c.cfg.CommandTimeout)
		}
		return fmt.Errorf("compose: %s: %w: %s", line, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Partition cuts every listed pair. partition.sh cuts one group of nodes
// from all the others, so cut must be exactly that: every node of one
// side against every node of the other, together all the nodes. One node
// against the rest is `isolate`, a larger group `split`.
func (c *Cluster) Partition(cut [][2]string) error {
	group, err := c.group(cut)
	if err != nil {
		return err
	}
	if len(group) == 1 {
		return c.script("isolate", group[0])
	}
	return c.script(append([]string{"split"}, group...)...)
}

// group returns the side of cut that holds the first pair's first node,
// after checking that cut is that side against all the other nodes.
func (c *Cluster) group(cut [][2]string) ([]string, error) {
	if len(cut) == 0 {
		return nil, errors.New("compose: empty partition")
	}
	pairs := map[[2]string]bool{}
	for _, p := range cut {
		if err := c.known(p[0]); err != nil {
			return nil, err
		}
		if err := c.known(p[1]); err != nil {
			return nil, err
		}
		pairs[p] = true
		pairs[[2]string{p[1], p[0]}] = true
	}
	// The side of cut[0][0]: the nodes not cut from it.
	var a, b []string
	for _, id := range c.cfg.IDs {
		if pairs[[2]string{cut[0][0], id}] {
			b = append(b, id)
		} else {
			a = append(a, id)
		}
	}
	want := 0
	for _, x := range a {
		for _, y := range b {
			if !pairs[[2]string{x, y}] {
				return nil, fmt.Errorf("compose: partition.sh cuts one group from the rest; %v is not (%v | %v)", cut, a, b)
			}
			want++
		}
	}
	if 2*want != len(pairs) {
		return nil, fmt.Errorf("compose: partition.sh cuts one group from the rest; %v cuts inside a group", cut)
	}
	return a, nil
}

// Heal removes every cut.
func (c *Cluster) Heal() error { return c.script("heal") }

// Kill kills the node's container with SIGKILL (its volume keeps the data).
func (c *Cluster) Kill(id string) error {
	if err := c.known(id); err != nil {
		return err
	}
	c.mu.Lock()
	c.down[id] = true
	c.mu.Unlock()
	return c.script("kill", id)
}

// Restart starts a killed node's container again. Its clock cannot be
// changed: clockRate must be 0 (keep) or 1.
func (c *Cluster) Restart(id string, clockRate float64) error {
	if err := c.known(id); err != nil {
		return err
	}
	if clockRate != 0 && clockRate != 1 {
		return fmt.Errorf("compose: cannot run %s with clock rate %v", id, clockRate)
	}
	if err := c.script("start", id); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.down, id)
	c.mu.Unlock()
	return nil
}

// Pause freezes the node's container (docker pause: the cgroup freezer).
func (c *Cluster) Pause(id string) error {
	if err := c.known(id); err != nil {
		return err
	}
	c.mu.Lock()
	c.paused[id] = true
	c.mu.Unlock()
	return c.script("pause", id)
}

// Resume thaws a paused node's container.
func (c *Cluster) Resume(id string) error {
	if err := c.known(id); err != nil {
		return err
	}
	if err := c.script("unpause", id); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.paused, id)
	c.mu.Unlock()
	return nil
}

func (c *Cluster) up(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.down[id] && !c.paused[id]
}

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

// Status asks one node for its view of the cluster, within StatusTimeout.
func (c *Cluster) Status(ctx context.Context, id string) (*pb.StatusResponse, error) {
	i := slices.Index(c.cfg.IDs, id)
	if i < 0 {
		return nil, fmt.Errorf("compose: no node %q", id)
	}
	cc, err := c.conn(c.cfg.Endpoints[i])
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StatusTimeout)
	defer cancel()
	return pb.NewClusterClient(cc).Status(ctx, &pb.StatusRequest{})
}

// Leader returns the node that claims leadership in the highest term
// among the running, unpaused nodes that answer.
func (c *Cluster) Leader(ctx context.Context) (string, error) {
	var ids []string
	for _, id := range c.cfg.IDs {
		if c.up(id) {
			ids = append(ids, id)
		}
	}
	id, ok := harness.HighestClaim(ctx, ids, c.Status)
	if !ok {
		return "", errors.New("compose: no node knows a leader")
	}
	return id, nil
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
			return "", fmt.Errorf("compose: no leader within %v: %w", timeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitReady waits until every running, unpaused node knows a leader, up
// to timeout.
func (c *Cluster) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, id := range c.cfg.IDs {
		for c.up(id) {
			st, err := c.Status(ctx, id)
			if err == nil && st.GetLeader() != "" {
				break
			}
			if err == nil {
				err = errors.New("knows no leader")
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("compose: %s not ready within %v: %v (docker logs lk-%s)", id, timeout, err, id)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Close closes the gRPC connections. The cluster keeps running.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for addr, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, addr)
	}
	return errors.Join(errs...)
}
