// Command lease-bench measures a leasekeeper cluster with the workloads of
// shared/bench/etcdpeer, so the two compare line by line: stdout gets one
// JSON object per workload in etcdpeer's schema (system "leasekeeper");
// notes go to stderr.
//
// It drives a running cluster (--endpoints), or starts its own cluster of
// separate lease-node processes on loopback (--node-bin), which failover
// and scale need so they can kill and restart nodes:
//
//	lease-bench --node-bin bin/lease-node --workload all --clients 16 --duration 10s
//	lease-bench --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 --workload grant,keepalive
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Workloads in the order they run. failover comes after everything that
// needs the whole cluster; scale last, because its million leases would
// weigh on every later workload.
var runOrder = []string{"grant", "keepalive", "keepalive_batch", "lock", "lock_contended",
	"expiry_storm", "failover", "scale"}

// Named sets for --workload. scale is opt-in by name only.
var workloadSets = map[string][]string{
	"all":   {"grant", "keepalive", "keepalive_batch", "lock", "lock_contended", "expiry_storm", "failover"},
	"quick": {"grant", "keepalive", "lock", "lock_contended", "failover"}, // etcdpeer's "all" minus fsync
	"storm": {"expiry_storm", "keepalive_batch"},
}

// config is everything the flags set.
type config struct {
	endpoints  []string
	pids       []int
	killCmd    string
	nodeBin    string
	nodes      int
	dataDir    string
	nodeArgs   []string
	keepData   bool
	workloads  map[string]bool
	clients    int
	conns      int
	duration   time.Duration
	leaderOnly bool
	namespace  string
	cleanup    bool
	cpuProfile string

	leaseTTL time.Duration // grant, keepalive, lock, failover

	leases     int // keepalive_batch and expiry_storm
	kaLeases   int
	kaTTL      time.Duration
	kaInterval time.Duration
	kaBatch    int

	stormTTL  time.Duration
	stormAt   time.Duration // 0: from the pilot
	phaseWait time.Duration // bound on a mass grant and on a storm's drain

	scaleLeases  int
	scaleTTL     time.Duration
	scaleClients int
	scaleGrant   time.Duration // bound on scale's grant phase
	scaleSnapAt  time.Duration // how long scale waits for an automatic snapshot
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("lease-bench", flag.ContinueOnError)
	var endpoints, pids, nodeArgs, workloads string
	fs.StringVar(&endpoints, "endpoints", "", "gRPC addresses of a running cluster, comma separated")
	fs.StringVar(&pids, "pids", "", "PIDs of the --endpoints nodes, in the same order (default: looked up from the listening sockets)")
	fs.StringVar(&c.killCmd, "kill-cmd", "", "failover on --endpoints: command that kills a node; {pid}, {id} and {addr} are replaced (default: SIGKILL to its PID)")
	fs.StringVar(&c.nodeBin, "node-bin", "", "start a cluster of this lease-node binary instead of using --endpoints")
	fs.IntVar(&c.nodes, "nodes", 3, "with --node-bin: cluster size")
	fs.StringVar(&c.dataDir, "data-dir", os.TempDir(), "with --node-bin: parent of the cluster's temp dir (data and node logs)")
	fs.StringVar(&nodeArgs, "node-args", "", "with --node-bin: extra lease-node flags, space separated")
	fs.BoolVar(&c.keepData, "keep-data", false, "with --node-bin: keep the data dir and node logs")
	fs.StringVar(&workloads, "workload", "all", "all, quick, storm, or a comma list of: "+strings.Join(runOrder, ","))
	fs.IntVar(&c.clients, "clients", 16, "concurrent client goroutines")
	fs.IntVar(&c.conns, "conns", 4, "client.Clients shared round-robin by the goroutines; client i tries endpoint i first")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "timed duration of each workload")
	fs.BoolVar(&unaryCalls, "unary-calls", false, "clients send each call as a gRPC call of its own, not on a Calls stream (client.Config.UnaryCalls)")
	fs.BoolVar(&c.leaderOnly, "leader-only", false, "clients talk to the leader only (default: all endpoints)")
	fs.StringVar(&c.namespace, "namespace", "bench", "namespace of every lease the bench makes")
	fs.BoolVar(&c.cleanup, "cleanup", true, "delete the leases a workload made, after its timing")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the bench process's CPU profile here")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", 10*time.Second, "lease duration in grant, keepalive, lock and failover")
	fs.IntVar(&c.leases, "leases", 100000, "leases held by keepalive_batch and granted by expiry_storm")
	fs.IntVar(&c.kaLeases, "ka-leases", 0, "leases for keepalive_batch, if not --leases")
	fs.DurationVar(&c.kaTTL, "ka-ttl", 30*time.Second, "keepalive_batch: lease duration")
	fs.DurationVar(&c.kaInterval, "ka-interval", 0, "keepalive_batch: renew each lease this often (default ka-ttl/3; negative: back to back, to find the ceiling)")
	fs.IntVar(&c.kaBatch, "ka-batch", 1000, "keepalive_batch: most leases in one KeepAlive message (the Go client's renewal engine sends at most 1000)")
	fs.DurationVar(&c.stormTTL, "storm-ttl", 15*time.Second, "expiry_storm: time planned from the end of the grants to the common deadline, "+
		"so the shortest lease duration if the grants keep the pilot's pace (no grace)")
	fs.DurationVar(&c.stormAt, "storm-at", 0, "expiry_storm: put the common deadline this long after the grants start, without a pilot "+
		"(default: 1.5 times the pilot's estimate of the grant phase plus --storm-ttl)")
	fs.DurationVar(&c.phaseWait, "phase-limit", 300*time.Second, "bound on a mass grant, and on expiry_storm's wait past the last deadline")
	fs.IntVar(&c.scaleLeases, "scale-leases", 1000000, "scale: live leases")
	fs.DurationVar(&c.scaleTTL, "scale-ttl", 30*time.Minute, "scale: lease duration (long enough that none expires during the run)")
	fs.IntVar(&c.scaleClients, "scale-clients", 64, "scale: goroutines granting")
	fs.DurationVar(&c.scaleGrant, "scale-grant-limit", 15*time.Minute, "scale: bound on the grant phase (it goes on with what it got)")
	fs.DurationVar(&c.scaleSnapAt, "scale-snapshot-wait", 150*time.Second, "scale: how long to wait for an automatic snapshot after the grants")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c.endpoints = splitList(endpoints)
	for _, p := range splitList(pids) {
		pid, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("--pids: %q is not a PID", p)
		}
		c.pids = append(c.pids, pid)
	}
	c.nodeArgs = strings.Fields(nodeArgs)
	if (c.nodeBin == "") == (len(c.endpoints) == 0) {
		return nil, errors.New("give exactly one of --endpoints and --node-bin")
	}
	c.workloads = map[string]bool{}
	for _, w := range splitList(workloads) {
		set, ok := workloadSets[w]
		if !ok && slices.Contains(runOrder, w) {
			set, ok = []string{w}, true
		}
		if !ok {
			return nil, fmt.Errorf("unknown workload %q", w)
		}
		for _, s := range set {
			c.workloads[s] = true
		}
	}
	if c.kaLeases == 0 {
		c.kaLeases = c.leases
	}
	if c.kaInterval == 0 {
		c.kaInterval = c.kaTTL / 3
	}
	switch {
	case c.clients < 1 || c.conns < 1 || c.nodes < 1:
		return nil, errors.New("--clients, --conns and --nodes must be at least 1")
	case c.duration <= 0 || c.leaseTTL <= 0 || c.kaTTL <= 0 || c.stormTTL <= 0 || c.scaleTTL <= 0 || c.phaseWait <= 0 || c.scaleGrant <= 0:
		return nil, errors.New("durations must be positive")
	case c.leases < 1 || c.kaLeases < 1 || c.scaleLeases < 1 || c.kaBatch < 1 || c.scaleClients < 1:
		return nil, errors.New("--leases, --ka-leases, --scale-leases, --ka-batch and --scale-clients must be at least 1")
	case c.stormAt != 0 && c.stormAt <= stormMinLeft:
		return nil, fmt.Errorf("--storm-at (%v) must be above %v: no grant is sent closer to the deadline", c.stormAt, stormMinLeft)
	case c.kaInterval >= c.kaTTL:
		return nil, fmt.Errorf("--ka-interval (%v) must be below --ka-ttl (%v)", c.kaInterval, c.kaTTL)
	case c.workloads["scale"] && c.nodeBin == "":
		return nil, errors.New("scale restarts nodes: it needs --node-bin")
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func main() {
	os.Exit(run())
}

func run() int {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lease-bench:", err)
		return 2
	}
	fail := func(format string, args ...any) int {
		note(format, args...)
		return 1
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fail("cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail("cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	var c *cluster
	if cfg.nodeBin != "" {
		if c, err = startCluster(cfg.nodeBin, cfg.nodes, cfg.dataDir, cfg.nodeArgs, cfg.keepData); err != nil {
			return fail("start cluster: %v", err)
		}
	} else {
		c = externalCluster(cfg.endpoints, cfg.pids, cfg.killCmd)
	}
	defer c.stop()
	// A bench that hangs must not keep the cluster: the watchdog stops it.
	limit := cfg.watchdog()
	defer time.AfterFunc(limit, func() {
		note("watchdog: run exceeded %v; cleaning up", limit)
		c.stop()
		os.Exit(3)
	}).Stop()

	b, err := newBench(ctx, cfg, c)
	if b != nil {
		defer b.close()
	}
	if err != nil {
		return fail("setup: %v", err)
	}
	steps := map[string]func(context.Context) error{
		"grant":           b.grant,
		"keepalive":       b.keepalive,
		"keepalive_batch": b.keepaliveBatch,
		"lock":            func(ctx context.Context) error { return b.lock(ctx, false) },
		"lock_contended":  func(ctx context.Context) error { return b.lock(ctx, true) },
		"expiry_storm":    b.expiryStorm,
		"failover":        b.failover,
		"scale":           b.scale,
	}
	failed := 0
	for _, w := range runOrder {
		if !cfg.workloads[w] || ctx.Err() != nil {
			continue
		}
		if err := steps[w](ctx); err != nil {
			note("%s: %v", w, err)
			failed++
		}
	}
	if ctx.Err() != nil {
		return fail("interrupted")
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// watchdog bounds the whole run generously from the workloads asked for.
func (c *config) watchdog() time.Duration {
	d := time.Minute + time.Duration(len(c.workloads))*(2*c.duration+time.Minute)
	if c.workloads["keepalive_batch"] {
		d += c.phaseWait + max(c.duration, 3*c.kaInterval) + time.Minute
	}
	if c.workloads["expiry_storm"] {
		d += 3*c.phaseWait + c.stormTTL + c.stormAt + time.Minute // pilot, grants, drain
	}
	if c.workloads["scale"] {
		d += c.scaleGrant + 2*c.phaseWait + c.scaleSnapAt + 5*time.Minute
	}
	return d
}

// newRunID returns a short random id that makes this run's lease names
// unique, so runs against one cluster do not collide.
func newRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
