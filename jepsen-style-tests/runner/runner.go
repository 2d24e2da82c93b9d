// Package runner runs one chaos test end to end: build lease-node, start a
// cluster, run the workload and the nemesis side by side for a while, stop
// everything, check the history, and write the run directory:
//
//	runs/<time>/history.jsonl       every operation and fault
//	runs/<time>/results.json        counts, faults by kind, checker verdicts
//	runs/<time>/summary.txt         one line per checker and the final tally
//	runs/<time>/run.log             the harness's and nemesis's progress
//	runs/<time>/logs/<node>.log     each node's output, across restarts
//	runs/<time>/linearizability.html  porcupine's view, when not linearizable
//
// with runs/latest pointing at the newest run. Both the jepsen command and
// the go test entry points call Run.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/checker"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/compose"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/harness"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/nemesis"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/workload"
)

// Config configures a run. Start from DefaultConfig or ShortConfig.
type Config struct {
	Nodes int
	// Endpoints, when set, name an external cluster's gRPC addresses: the
	// run makes no cluster, and runs no nemesis unless PartitionScript is
	// set too.
	Endpoints []string
	// PartitionScript, with Endpoints, is the docker compose cluster's
	// jepsen-style-tests/compose/partition.sh: the nemesis makes its
	// faults (compose.Kinds) through it, on nodes n1, n2, ... in the
	// order of Endpoints, and each leader isolation must see a new leader.
	PartitionScript string
	Duration        time.Duration
	// Mode is the network mode: auto, netns or loopback.
	Mode string
	// Binary is a lease-node to use; empty builds one into the run dir.
	Binary string
	// RunsDir holds the run directories; empty means
	// <module root>/jepsen-style-tests/runs.
	RunsDir string
	// Nemesis lists the fault kinds; empty runs none.
	Nemesis []string
	// QuietMin/Max and FaultMin/Max pace the nemesis.
	QuietMin, QuietMax time.Duration
	FaultMin, FaultMax time.Duration
	// Workload settings, see workload.Config.
	Clients      int
	MutexClients int
	// OneShotClients renew through the followers with one-shot calls,
	// besides Clients; OneShotRetryDelay is their wait before a retry (0:
	// the workload's default; one past an election timeout plus a second
	// is the renewal-retry checker's negative control).
	OneShotClients    int
	OneShotRetryDelay time.Duration
	LeaseDuration     time.Duration
	Guard             string
	StaleWriter       bool
	// Mutex picks the mutex implementation: "client" (client.Mutex) or
	// "base" (the base calls, renewed by the worker).
	Mutex string
	// CorruptHistory tampers with the history before checking, as a
	// negative control of the checkers: "swap-tokens" swaps the tokens of
	// two holdings of one lease.
	CorruptHistory string
	// Checker settings.
	LinearizabilityTimeout time.Duration
	MinAvailability        float64
	MaxDrift               float64
	LogLevel               string
	Seed                   uint64
	// Fault, when set, starts every node with --unsafe-test-fault Fault:
	// a server that breaks a safety rule on purpose, which the checkers
	// must catch.
	Fault string
	// UpgradeFrom, when set, names a git tag (or commit) of an earlier
	// release: the cluster starts on that release's lease-node, built from
	// the tag, and the rolling-upgrade fault moves it to Binary (or the
	// current tree's) one node at a time; with Downgrade, back again.
	UpgradeFrom string
	Downgrade   bool
	// Out receives progress and the summary; nil means os.Stderr.
	Out io.Writer
}

// PreviousRelease is the release that the rolling-upgrade test starts
// from, and PreviousReleaseCommit the commit its tag names, which is built
// when a clone lacks the tag.
const (
	PreviousRelease       = "v0.1.0"
	PreviousReleaseCommit = "0e21b454d221e16d939604532d4d3d4adcb3c293"
)

// DefaultConfig is the full run: 5 nodes, 10 minutes, every fault.
func DefaultConfig() Config {
	return Config{
		Nodes:                  5,
		Duration:               10 * time.Minute,
		Mode:                   "auto",
		Nemesis:                nemesis.Kinds,
		QuietMin:               3 * time.Second,
		QuietMax:               6 * time.Second,
		FaultMin:               4 * time.Second,
		FaultMax:               8 * time.Second,
		Clients:                10,
		MutexClients:           4,
		OneShotClients:         2,
		LeaseDuration:          2 * time.Second,
		Guard:                  "monotonic",
		Mutex:                  "client",
		LinearizabilityTimeout: 5 * time.Minute,
		MinAvailability:        0.5,
		MaxDrift:               0.01,
		LogLevel:               "info",
	}
}

// ShortConfig is the short run: 3 nodes, 90 seconds, several fault kinds.
func ShortConfig() Config {
	c := DefaultConfig()
	c.Nodes = 3
	c.Duration = 90 * time.Second
	c.Nemesis = nemesis.ShortKinds
	c.QuietMin, c.QuietMax = 2*time.Second, 4*time.Second
	c.FaultMin, c.FaultMax = 3*time.Second, 6*time.Second
	c.LinearizabilityTimeout = 2 * time.Minute
	return c
}

// Results is what results.json holds.
type Results struct {
	RunDir     string         `json:"run_dir"`
	Mode       string         `json:"mode"`
	Nodes      int            `json:"nodes"`
	DurationS  float64        `json:"duration_s"`
	Ops        int            `json:"ops"`
	OK         int            `json:"ok"`
	Fail       int            `json:"fail"`
	Info       int            `json:"info"`
	Faults     map[string]int `json:"faults"`
	FaultLog   []string       `json:"fault_log"`
	Negative   []string       `json:"negative_controls,omitempty"`
	Crashes    []string       `json:"crashes,omitempty"`
	Corruption string         `json:"corruption,omitempty"`
	// Checkers maps each checker's name to its verdict.
	Checkers map[string]checker.Result `json:"checkers"`
	Order    []string                  `json:"-"`
	Passed   int                       `json:"passed"`
	Failed   int                       `json:"failed"`
}

// Valid reports whether every checker passed.
func (r *Results) Valid() bool { return r.Failed == 0 }

// Run runs one test as cfg says and returns its results. An error means
// the run could not be made (build, setup); checker failures are in the
// results.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	out := cfg.Out
	if out == nil {
		out = os.Stderr
	}
	runDir, err := makeRunDir(cfg.RunsDir)
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(runDir, "run.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	var logMu sync.Mutex
	start := time.Now()
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		line := fmt.Sprintf("[%7.2fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
		io.WriteString(out, line)
		io.WriteString(logFile, line)
	}
	logf("run dir %s", runDir)

	// An external cluster (say docker compose) gets the workload and the
	// checkers only; its faults come from outside (compose/partition.sh).
	var cluster *harness.Cluster
	var upgradeFrom, upgradeTo string
	// nc is what the nemesis drives: the harness's cluster or compose's.
	var nc nemesis.Cluster
	var composeIDs map[string]string
	endpoints := cfg.Endpoints
	mode := "external"
	if len(endpoints) > 0 && cfg.PartitionScript != "" {
		cc, err := newCompose(ctx, cfg, logf)
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		nc, mode = cc, "compose"
		// The checkers must know which node each endpoint is, to tell an
		// attempt through a node a fault cut off from the majority.
		composeIDs = map[string]string{}
		for i, ep := range endpoints {
			composeIDs[ep] = fmt.Sprintf("n%d", i+1) // as newCompose names them
		}
	} else if len(endpoints) > 0 {
		if len(cfg.Nemesis) > 0 {
			return nil, errors.New("runner: the nemesis needs the harness's cluster or, for docker compose, PartitionScript (-partition-script); else inject faults by hand (compose/partition.sh)")
		}
		logf("external cluster at %s: no nemesis", strings.Join(endpoints, ","))
	} else {
		bin := cfg.Binary
		if bin == "" {
			if bin, err = buildNode(runDir); err != nil {
				return nil, err
			}
		}
		startBin := bin
		if cfg.UpgradeFrom != "" {
			logf("building lease-node %s from its tag", cfg.UpgradeFrom)
			if startBin, err = buildRelease(runDir, cfg.UpgradeFrom); err != nil {
				return nil, err
			}
			upgradeFrom, upgradeTo = startBin, bin
		}
		hcfg := harness.DefaultConfig()
		hcfg.Nodes, hcfg.Binary, hcfg.Dir, hcfg.Mode, hcfg.LogLevel, hcfg.Logf = cfg.Nodes, startBin, runDir, cfg.Mode, cfg.LogLevel, logf
		if cfg.Fault != "" {
			hcfg.ExtraArgs = append(hcfg.ExtraArgs, "--unsafe-test-fault", cfg.Fault)
		}
		if cluster, err = harness.New(hcfg); err != nil {
			return nil, err
		}
		defer cluster.Close()
		if err := cluster.Start(ctx); err != nil {
			return nil, err
		}
		leader, _ := cluster.WaitLeader(ctx, 10*time.Second)
		logf("cluster ready in %s mode, leader %s", cluster.Mode(), leader)
		endpoints = cluster.Endpoints()
		mode = string(cluster.Mode())
		nc = cluster
	}

	rec := history.NewRecorder()
	wcfg := workload.DefaultConfig()
	wcfg.Endpoints = endpoints
	wcfg.Clients, wcfg.MutexClients = cfg.Clients, cfg.MutexClients
	wcfg.LeaseDuration, wcfg.MaxDrift = cfg.LeaseDuration, cfg.MaxDrift
	wcfg.Guard, wcfg.StaleWriter = cfg.Guard, cfg.StaleWriter
	if cfg.UpgradeFrom != "" {
		// A downgrade lowers the cluster's command version, and a cluster
		// with an older member drops lock delays (as designed) even for
		// holdings that began with one: the history cannot tell which
		// Expire still delayed, so the lock-delay checker would flag a
		// correct cluster. Upgrade runs ask for no lock delay.
		wcfg.LockDelay = 0
	}
	if wcfg.Locker, err = workload.LockerByName(cfg.Mutex); err != nil {
		return nil, err
	}
	wcfg.OneShotClients = cfg.OneShotClients
	if cfg.OneShotRetryDelay > 0 {
		wcfg.OneShotRetryDelay = cfg.OneShotRetryDelay
	}
	var leader leaderTracker
	if cluster != nil {
		wcfg.Leader = leader.get
	}
	wcfg.Seed, wcfg.Logf = cfg.Seed, logf
	wl, err := workload.New(wcfg, rec)
	if err != nil {
		return nil, err
	}
	defer wl.Close()

	var nem *nemesis.Nemesis
	if len(cfg.Nemesis) > 0 {
		ncfg := nemesis.DefaultConfig()
		ncfg.Kinds = cfg.Nemesis
		ncfg.QuietMin, ncfg.QuietMax, ncfg.FaultMin, ncfg.FaultMax = cfg.QuietMin, cfg.QuietMax, cfg.FaultMin, cfg.FaultMax
		ncfg.LeaseDuration, ncfg.MaxDrift = cfg.LeaseDuration, cfg.MaxDrift
		ncfg.ElectionTimeout = harness.DefaultConfig().ElectionTimeout
		ncfg.ProposeTimeout = harness.DefaultConfig().ExpiryProposeTimeout
		ncfg.Seed, ncfg.Logf = cfg.Seed, logf
		ncfg.UpgradeFrom, ncfg.UpgradeTo, ncfg.Downgrade = upgradeFrom, upgradeTo, cfg.Downgrade
		// In compose runs partition.sh's isolations must be seen to work.
		ncfg.RequireLeaderChange = mode == "compose"
		if nem, err = nemesis.New(ncfg, nc, rec, wl); err != nil {
			return nil, err
		}
	}

	nemList := strings.Join(cfg.Nemesis, ", ")
	if nemList == "" {
		nemList = "none"
	}
	logf("running %d clients (%d on mutexes), %d one-shot holders and %d semaphore waiters for %v, nemesis: %s", cfg.Clients, cfg.MutexClients, cfg.OneShotClients, wcfg.SemaphoreClients, cfg.Duration, nemList)
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	var wg sync.WaitGroup
	if cluster != nil {
		wg.Go(func() { leader.follow(runCtx, cluster) })
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		wl.Run(runCtx)
	}()
	if nem != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nem.Run(runCtx)
		}()
	}
	wg.Wait()
	cancel()
	var crashes []string
	if cluster != nil {
		crashes = cluster.Crashes()
		cluster.Close()
		logf("run over; nodes stopped, network removed")
	}

	h := rec.History(history.Meta{
		Mode: mode, Nodes: len(endpoints), MaxDrift: cfg.MaxDrift, Margin: wcfg.Margin,
		Leases: wcfg.LeaseNames(), Locks: wcfg.LockNames(), Started: rec.Start(),
		ElectionTimeout: harness.DefaultConfig().ElectionTimeout, NodeIDs: nodeIDs(cluster, composeIDs),
	})
	res := &Results{RunDir: runDir, Mode: mode, Nodes: len(endpoints), DurationS: time.Duration(h.End).Seconds(), Crashes: crashes}
	if cfg.CorruptHistory != "" {
		desc, err := Corrupt(h, cfg.CorruptHistory)
		if err != nil {
			return nil, err
		}
		res.Corruption = desc
		logf("corrupted the history: %s", desc)
	}
	if err := h.Save(filepath.Join(runDir, "history.jsonl")); err != nil {
		return nil, err
	}
	if cfg.Guard == "broken" {
		res.Negative = append(res.Negative, "broken register guard (accepts every token)")
	}
	if cfg.StaleWriter {
		res.Negative = append(res.Negative, "stale writer (ignores its deadline)")
	}
	for _, k := range cfg.Nemesis {
		if k == nemesis.ClockSkewExtreme {
			res.Negative = append(res.Negative, "clock rate far beyond the drift bound")
		}
	}
	if cfg.CorruptHistory != "" {
		res.Negative = append(res.Negative, "corrupted history: "+cfg.CorruptHistory)
	}
	if cfg.Fault != "" {
		res.Negative = append(res.Negative, "nodes run with --unsafe-test-fault "+cfg.Fault)
	}
	if cfg.OneShotRetryDelay > checker.RetryBound(h.Meta.ElectionTimeout) {
		res.Negative = append(res.Negative, fmt.Sprintf("one-shot holders wait %v before a retry", cfg.OneShotRetryDelay))
	}

	copts := checker.Options{LinearizabilityTimeout: cfg.LinearizabilityTimeout, OutDir: runDir, MinAvailability: cfg.MinAvailability}
	logf("checking %d operations", len(h.Ops))
	Check(h, copts, res)
	res.Checkers["cluster-health"] = health(h, crashes)
	res.Order = append(res.Order, "cluster-health")
	res.tally()
	if err := res.write(runDir, out); err != nil {
		return res, err
	}
	return res, nil
}

// nodeIDs maps each node's client endpoint to its ID: the harness's
// cluster's, or else compose's (nil for another external cluster).
func nodeIDs(c *harness.Cluster, compose map[string]string) map[string]string {
	if c == nil {
		return compose
	}
	m := map[string]string{}
	for _, n := range c.Nodes() {
		m[n.GRPCAddr] = n.ID
	}
	return m
}

// leaderTracker follows the cluster's leader for the one-shot holders,
// which renew through the other nodes.
type leaderTracker struct{ addr atomic.Value }

// get returns the leader's client endpoint as last seen, "" when unknown.
func (l *leaderTracker) get() string {
	s, _ := l.addr.Load().(string)
	return s
}

// follow asks the cluster for its leader every 200 ms until ctx ends.
func (l *leaderTracker) follow(ctx context.Context, c *harness.Cluster) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if id, err := c.Leader(ctx); err == nil {
			if n := c.Node(id); n != nil {
				l.addr.Store(n.GRPCAddr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newCompose returns the docker compose cluster at cfg.Endpoints, driven
// through cfg.PartitionScript, once it has a leader.
func newCompose(ctx context.Context, cfg Config, logf func(string, ...any)) (*compose.Cluster, error) {
	for _, k := range cfg.Nemesis {
		if !slices.Contains(compose.Kinds, k) {
			return nil, fmt.Errorf("runner: partition.sh cannot make %s faults (compose kinds: %s)", k, strings.Join(compose.Kinds, ", "))
		}
	}
	ccfg := compose.DefaultConfig()
	ccfg.Script, ccfg.Endpoints, ccfg.Logf = cfg.PartitionScript, cfg.Endpoints, logf
	ccfg.IDs = nil
	for i := range cfg.Endpoints {
		ccfg.IDs = append(ccfg.IDs, fmt.Sprintf("n%d", i+1))
	}
	cc, err := compose.New(ccfg)
	if err != nil {
		return nil, err
	}
	leader, err := cc.WaitLeader(ctx, 30*time.Second)
	if err != nil {
		cc.Close()
		return nil, fmt.Errorf("runner: compose cluster at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	logf("compose cluster at %s (%s), leader %s; faults through %s", strings.Join(cfg.Endpoints, ","), strings.Join(ccfg.IDs, " "), leader, cfg.PartitionScript)
	return cc, nil
}

// Check runs the checkers on h and fills in res's counts and verdicts.
func Check(h *history.History, opts checker.Options, res *Results) {
	res.Ops = len(h.Ops)
	res.OK, res.Fail, res.Info = h.Counts()
	res.Faults = map[string]int{}
	res.FaultLog = nil
	for _, f := range h.Faults {
		res.Faults[f.Kind]++
		line := fmt.Sprintf("%s..%s %s: %s", history.Ms(f.Start), history.Ms(f.End), f.Kind, f.Detail)
		if f.Err != "" {
			line += " ERROR: " + f.Err
		}
		res.FaultLog = append(res.FaultLog, line)
	}
	res.Checkers = map[string]checker.Result{}
	res.Order = nil
	for _, r := range checker.All(h, opts) {
		res.Checkers[r.Name] = r
		res.Order = append(res.Order, r.Name)
	}
	res.tally()
}

func (r *Results) tally() {
	r.Passed, r.Failed = 0, 0
	for _, c := range r.Checkers {
		if c.Valid {
			r.Passed++
		} else {
			r.Failed++
		}
	}
}

// health fails when a node exited on its own or a fault could not be
// applied, healed or recovered from.
func health(h *history.History, crashes []string) checker.Result {
	r := checker.Result{Name: "cluster-health", Valid: true}
	for _, c := range crashes {
		r.Valid = false
		r.ViolationCount++
		r.Violations = append(r.Violations, c)
	}
	for _, f := range h.Faults {
		if f.Err != "" {
			r.Valid = false
			r.ViolationCount++
			r.Violations = append(r.Violations, fmt.Sprintf("%s at %s: %s", f.Kind, history.Ms(f.Start), f.Err))
		}
	}
	if r.Valid {
		r.Summary = fmt.Sprintf("no node crashed; %d faults applied, healed and recovered from", len(h.Faults))
	} else {
		r.Summary = fmt.Sprintf("%d problems: node crashes or faults that failed to apply, heal or recover", r.ViolationCount)
	}
	return r
}

// Summary returns the per-checker lines and the final tally line.
func (r *Results) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, %d nodes, %.0fs: %d ops (%d ok, %d fail, %d info)\n", r.Mode, r.Nodes, r.DurationS, r.Ops, r.OK, r.Fail, r.Info)
	kinds := make([]string, 0, len(r.Faults))
	for k := range r.Faults {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var fs []string
	for _, k := range kinds {
		fs = append(fs, fmt.Sprintf("%s=%d", k, r.Faults[k]))
	}
	if len(fs) == 0 {
		fs = []string{"none"}
	}
	fmt.Fprintf(&b, "faults: %s\n", strings.Join(fs, " "))
	if len(r.Negative) > 0 {
		fmt.Fprintf(&b, "negative controls: %s\n", strings.Join(r.Negative, "; "))
	}
	order := r.Order
	if len(order) == 0 {
		for k := range r.Checkers {
			order = append(order, k)
		}
		sort.Strings(order)
	}
	for _, name := range order {
		c := r.Checkers[name]
		verdict := "PASS"
		if !c.Valid {
			verdict = "FAIL"
		} else if c.Unknown {
			verdict = "PASS (unknown)"
		}
		fmt.Fprintf(&b, "checker %-17s %s: %s\n", name, verdict, c.Summary)
		for _, v := range c.Violations {
			fmt.Fprintf(&b, "    %s\n", v)
		}
		if c.ViolationCount > len(c.Violations) {
			fmt.Fprintf(&b, "    ... %d more\n", c.ViolationCount-len(c.Violations))
		}
	}
	fmt.Fprintf(&b, "%d passed, %d failed\n", r.Passed, r.Failed)
	return b.String()
}

func (r *Results) write(dir string, out io.Writer) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	sum := r.Summary()
	if err := os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(sum), 0o644); err != nil {
		return err
	}
	_, err = io.WriteString(out, sum)
	return err
}

// Recheck runs the checkers again on a saved run directory's history and
// rewrites its results.
func Recheck(dir string, opts checker.Options, out io.Writer) (*Results, error) {
	h, err := history.Load(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	res := &Results{RunDir: dir, Mode: h.Meta.Mode, Nodes: h.Meta.Nodes, DurationS: time.Duration(h.End).Seconds()}
	if data, err := os.ReadFile(filepath.Join(dir, "results.json")); err == nil {
		var old Results
		if json.Unmarshal(data, &old) == nil {
			res.Crashes, res.Negative, res.Corruption = old.Crashes, old.Negative, old.Corruption
		}
	}
	opts.OutDir = dir
	Check(h, opts, res)
	res.Checkers["cluster-health"] = health(h, res.Crashes)
	res.Order = append(res.Order, "cluster-health")
	res.tally()
	return res, res.write(dir, out)
}

// Corrupt tampers with h for the checkers' negative control. "swap-tokens"
// swaps the answered tokens of the first and the last new holding of the
// busiest lease, so a token goes back in time.
func Corrupt(h *history.History, how string) (string, error) {
	if how != "swap-tokens" {
		return "", fmt.Errorf("runner: unknown corruption %q (known: swap-tokens)", how)
	}
	per := map[string][]int{}
	for i, o := range h.Ops {
		if o.Kind == history.Acquire && o.Type == history.OK && o.Acquired && !o.Renewed {
			per[o.Lease] = append(per[o.Lease], i)
		}
	}
	best := ""
	for l, is := range per {
		if best == "" || len(is) > len(per[best]) || (len(is) == len(per[best]) && l < best) {
			best = l
		}
	}
	is := per[best]
	for a := 0; a < len(is); a++ {
		for b := len(is) - 1; b > a; b-- {
			x, y := &h.Ops[is[a]], &h.Ops[is[b]]
			if x.ResToken != y.ResToken && x.Return < y.Call {
				x.ResToken, y.ResToken = y.ResToken, x.ResToken
				return fmt.Sprintf("swapped tokens %d and %d of ops #%d and #%d on %s", y.ResToken, x.ResToken, x.Index, y.Index, best), nil
			}
		}
	}
	return "", errors.New("runner: no two holdings to swap tokens between")
}

// ModuleRoot finds the leasekeeper module root from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/leasekeeper/leasekeeper\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("runner: not inside the leasekeeper module")
		}
		dir = parent
	}
}

func makeRunDir(runs string) (string, error) {
	if runs == "" {
		root, err := ModuleRoot()
		if err != nil {
			return "", err
		}
		runs = filepath.Join(root, "jepsen-style-tests", "runs")
	}
	runs, err := filepath.Abs(runs)
	if err != nil {
		return "", err
	}
	name := time.Now().Format("20060102-150405")
	dir := filepath.Join(runs, name)
	for i := 2; ; i++ {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			break
		}
		dir = filepath.Join(runs, fmt.Sprintf("%s-%d", name, i))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	latest := filepath.Join(runs, "latest")
	_ = os.Remove(latest)
	_ = os.Symlink(filepath.Base(dir), latest)
	return dir, nil
}

func buildNode(runDir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(runDir, "current", "lease-node")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/lease-node")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("runner: build lease-node: %v\n%s", err, out)
	}
	return bin, nil
}

// buildRelease builds lease-node as of the git ref (a release tag) into
// runDir/<ref>/lease-node, from a copy of the tree at that ref.
func buildRelease(runDir, ref string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	rev := ref
	if ref == PreviousRelease && exec.Command("git", "-C", root, "rev-parse", "--verify", "--quiet", ref+"^{commit}").Run() != nil {
		rev = PreviousReleaseCommit // a clone without its tags
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--verify", "--quiet", rev+"^{commit}").CombinedOutput(); err != nil {
		return "", fmt.Errorf("runner: no git ref %q in %s (a clone without its tags? git fetch --tags): %v %s", ref, root, err, out)
	}
	dir := filepath.Join(runDir, strings.NewReplacer("/", "_", "..", "_").Replace(ref))
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	archive := filepath.Join(dir, "src.tar")
	if out, err := exec.Command("git", "-C", root, "archive", "--format=tar", "-o", archive, rev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("runner: git archive %s: %v\n%s", ref, err, out)
	}
	if out, err := exec.Command("tar", "-xf", archive, "-C", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("runner: unpacking %s: %v\n%s", ref, err, out)
	}
	_ = os.Remove(archive)
	bin := filepath.Join(dir, "lease-node")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/lease-node")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("runner: build lease-node %s: %v\n%s", ref, err, out)
	}
	_ = os.RemoveAll(src)
	return bin, nil
}
