// Package nemesis injects the chaos suite's faults into a harness.Cluster,
// one at a time: apply, hold for a while, heal, wait for the cluster to
// recover, and record the fault in the history.
//
// Kinds (see Kinds): network partitions of several shapes, kill -9 and
// restart, SIGSTOP/SIGCONT of a node (longer than the election timeout, or
// longer than a lease, or the leader for 2–3 leases), dropping all of one
// node's traffic without an answer (blackhole), pausing a client, restarting a node with its clock
// running fast or slow within the drift bound (and, as a negative control,
// far beyond it), removing and re-adding a member, and delaying the
// leader's Raft entries while its heartbeats and gRPC pass.
package nemesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

// Fault kinds.
const (
	PartitionHalves         = "partition-halves"
	PartitionIsolateLeader  = "partition-isolate-leader"
	PartitionLeaderMinority = "partition-leader-minority"
	PartitionBridge         = "partition-bridge"
	PartitionRing           = "partition-ring"
	KillNode                = "kill-node"
	KillLeader              = "kill-leader"
	PauseNode               = "pause-node"
	PauseLeader             = "pause-leader"
	// PauseLeaderLong SIGSTOPs the leader for 2–3 lease durations: its
	// connections stay open and silent, its holdings outlive their
	// guaranteed time on the others' clocks, and it wakes up believing
	// it still leads.
	PauseLeaderLong = "pause-leader-long"
	// Blackhole drops every packet to and from one node, clients'
	// included, with no RST: a node that stops answering without closing
	// its connections.
	Blackhole   = "blackhole"
	PauseClient = "pause-client"
	ClockSkew   = "clock-skew"
	Membership  = "membership"
	// StallRaft delays the log entries the leader sends its followers by
	// more than the nodes' expiry ProposeTimeout, while heartbeats and
	// gRPC pass on time: the leader keeps its leadership and confirms it,
	// but its Expire proposals time out and may still commit.
	StallRaft = "stall-raft"
	// ClockSkewExtreme is the negative control: the leader's clock runs
	// far beyond the drift bound, so it expires holdings early.
	ClockSkewExtreme = "clock-skew-extreme"
	// RollingUpgrade replaces one node's binary per fault, as an operator
	// upgrading a cluster does: stop it (SIGTERM), start the other binary
	// on the same data directory, wait until it is ready. Followers go
	// first; the last node, the leader, hands its leadership to an
	// upgraded node before it is stopped. With Config.Downgrade, once
	// every node runs UpgradeTo the nodes go back to UpgradeFrom the same
	// way, and so on. Needs Config.UpgradeFrom and UpgradeTo; not in
	// Kinds.
	RollingUpgrade = "rolling-upgrade"
)

// Kinds lists every fault within the documented bounds.
var Kinds = []string{
	PartitionHalves, PartitionIsolateLeader, PartitionLeaderMinority, PartitionBridge, PartitionRing,
	KillNode, KillLeader, PauseNode, PauseLeader, PauseLeaderLong, PauseClient, ClockSkew, Membership, StallRaft,
	Blackhole,
}

// ShortKinds is the mix of the short run.
var ShortKinds = []string{
	PartitionIsolateLeader, PartitionHalves, KillLeader, PauseNode, PauseLeader, PauseLeaderLong, PauseClient, ClockSkew, StallRaft,
	Blackhole,
}

// Known reports whether kind names a fault.
func Known(kind string) bool {
	return slices.Contains(Kinds, kind) || kind == ClockSkewExtreme || kind == RollingUpgrade
}

// Cluster is what every fault needs of the cluster under test: the
// harness's processes (netns or loopback mode), or the docker compose
// cluster, whose faults are partition.sh commands. Faults that need more
// ask for one of the optional interfaces below; New refuses a kind the
// cluster cannot make.
type Cluster interface {
	// IDs lists the nodes.
	IDs() []string
	// Leader returns the node that claims leadership in the highest term.
	Leader(ctx context.Context) (string, error)
	// WaitLeader waits, up to timeout, until some node knows a leader.
	WaitLeader(ctx context.Context, timeout time.Duration) (string, error)
	// WaitReady waits, up to timeout, until every running, unpaused node
	// knows a leader.
	WaitReady(ctx context.Context, timeout time.Duration) error
	// Partition cuts every listed pair both ways; Heal removes every cut.
	Partition(cut [][2]string) error
	Heal() error
	// Kill kills a node with SIGKILL; Restart starts it again from its
	// data, with a clock rate (0 keeps the current one).
	Kill(id string) error
	Restart(id string, clockRate float64) error
	// Pause freezes a node; Resume thaws it.
	Pause(id string) error
	Resume(id string) error
}

// Transferer moves the leadership to a node: clock-skew needs it (and
// Restart with a clock rate).
type Transferer interface {
	TransferLeadership(ctx context.Context, id string) error
}

// Rejoiner removes a member and adds it back with empty data: membership
// needs it.
type Rejoiner interface {
	RemoveMember(ctx context.Context, id string) error
	Rejoin(ctx context.Context, id string) error
}

// Staller delays the leader's Raft entries and reads a node's status and
// metrics: stall-raft needs it.
type Staller interface {
	StallRaft(id string, delay time.Duration) error
	UnstallRaft() (int64, error)
	Status(ctx context.Context, id string) (*pb.StatusResponse, error)
	Metrics(ctx context.Context, id string) (map[string]float64, error)
}

// Blackholer drops every packet of one node: blackhole needs it.
type Blackholer interface {
	Blackhole(id string) error
	Unblackhole() error
}

// Upgrader replaces a node's binary and reads its /readyz:
// rolling-upgrade needs it (and Transferer).
type Upgrader interface {
	Binary(id string) string
	SetBinary(id, bin string) error
	Stop(id string) error
	Readyz(ctx context.Context, id string) (bool, string, error)
}

// Commander is a cluster that carries faults out by commands worth
// recording (partition.sh's). TakeCommands returns the commands run since
// its last call, which go into the fault's detail.
type Commander interface {
	TakeCommands() []string
}

// supported reports whether c can make faults of kind.
func supported(c Cluster, kind string) bool {
	switch kind {
	case ClockSkew, ClockSkewExtreme:
		_, ok := c.(Transferer)
		return ok
	case Membership:
		_, ok := c.(Rejoiner)
		return ok
	case StallRaft:
		_, ok := c.(Staller)
		return ok
	case Blackhole:
		_, ok := c.(Blackholer)
		return ok
	case RollingUpgrade:
		_, ok := c.(Upgrader)
		_, tok := c.(Transferer)
		return ok && tok
	}
	return true
}

// Clients is what the nemesis needs of the workload.
type Clients interface {
	// PauseClient pauses one client for d and names it.
	PauseClient(d time.Duration) (string, bool)
}

// Config configures a Nemesis. Start from DefaultConfig.
type Config struct {
	// Kinds are the faults to pick from, in random order, each used once
	// before any is used again.
	Kinds []string
	// QuietMin and QuietMax bound the healthy time between faults.
	QuietMin, QuietMax time.Duration
	// FaultMin and FaultMax bound how long a partition or a kill lasts.
	FaultMin, FaultMax time.Duration
	// LeaseDuration and ElectionTimeout size the pauses: longer than the
	// election timeout, or longer than a lease.
	LeaseDuration   time.Duration
	ElectionTimeout time.Duration
	// MaxDrift is the documented clock drift bound; clock-skew stays
	// within it and ExtremeRate is far beyond it.
	MaxDrift    float64
	ExtremeRate float64
	// ProposeTimeout is the nodes' --expiry-propose-timeout. StallDelay
	// is how late stall-raft delivers the leader's entries; it must
	// exceed ProposeTimeout, and 0 means 3 × ProposeTimeout. Shorter than
	// a lease, an Expire that timed out commits within the lifetime of a
	// renewal acknowledged meanwhile, where the checkers can see it.
	ProposeTimeout time.Duration
	StallDelay     time.Duration
	// UpgradeFrom and UpgradeTo are the lease-node binaries of a
	// rolling upgrade: the cluster starts on UpgradeFrom. Downgrade makes
	// the upgrade go back and forth.
	UpgradeFrom, UpgradeTo string
	Downgrade              bool
	// RecoverTimeout bounds the wait for the cluster after a heal.
	RecoverTimeout time.Duration
	// RequireLeaderChange makes it an error when the others elect no new
	// leader while the leader is cut off (partition-isolate-leader,
	// partition-leader-minority); either way the detail says who led.
	// LeaderChangeTimeout bounds the wait for it after the hold.
	RequireLeaderChange bool
	LeaderChangeTimeout time.Duration
	Seed                uint64
	Logf                func(string, ...any)
}

// DefaultConfig returns the nemesis of a normal run.
func DefaultConfig() Config {
	return Config{
		Kinds:           Kinds,
		QuietMin:        3 * time.Second,
		QuietMax:        6 * time.Second,
		FaultMin:        4 * time.Second,
		FaultMax:        8 * time.Second,
		LeaseDuration:   2 * time.Second,
		ElectionTimeout: 500 * time.Millisecond,
		MaxDrift:        0.01,
		ExtremeRate:     3,
		ProposeTimeout:  250 * time.Millisecond,
		RecoverTimeout:  30 * time.Second,
		// Several election timeouts: the hold already gave it seconds.
		LeaderChangeTimeout: 10 * time.Second,
	}
}

// stallDelay is how late stall-raft delivers the leader's entries.
func (c Config) stallDelay() time.Duration {
	if c.StallDelay > 0 {
		return c.StallDelay
	}
	return 2 * c.ProposeTimeout
}

// Nemesis injects faults.
type Nemesis struct {
	cfg     Config
	c       Cluster
	rec     *history.Recorder
	clients Clients
	rng     *rand.Rand
	logf    func(string, ...any)
	queue   []string
	// toward is the binary the rolling upgrade is moving the nodes to;
	// refused is set once a downgrade was refused.
	toward  string
	refused bool
}

// New returns a Nemesis for cluster c, recording into rec.
func New(cfg Config, c Cluster, rec *history.Recorder, clients Clients) (*Nemesis, error) {
	for _, k := range cfg.Kinds {
		if !Known(k) {
			return nil, fmt.Errorf("nemesis: unknown fault kind %q (known: %s, %s)", k, strings.Join(Kinds, ", "), ClockSkewExtreme)
		}
	}
	if len(cfg.Kinds) == 0 {
		return nil, errors.New("nemesis: Config.Kinds is empty")
	}
	if slices.Contains(cfg.Kinds, StallRaft) && (cfg.ProposeTimeout <= 0 || cfg.stallDelay() <= cfg.ProposeTimeout) {
		return nil, fmt.Errorf("nemesis: %s needs StallDelay (%v) above the nodes' ProposeTimeout (%v)", StallRaft, cfg.stallDelay(), cfg.ProposeTimeout)
	}
	if slices.Contains(cfg.Kinds, RollingUpgrade) && (cfg.UpgradeFrom == "" || cfg.UpgradeTo == "") {
		return nil, fmt.Errorf("nemesis: %s needs UpgradeFrom and UpgradeTo", RollingUpgrade)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if c != nil {
		for _, k := range cfg.Kinds {
			if !supported(c, k) {
				return nil, fmt.Errorf("nemesis: this cluster (%T) cannot make %s faults", c, k)
			}
		}
	}
	return &Nemesis{cfg: cfg, c: c, rec: rec, clients: clients, rng: rand.New(rand.NewPCG(seed, 7)), logf: logf, toward: cfg.UpgradeTo}, nil
}

// Run injects faults until ctx is done, starting with a quiet period. The
// fault in progress when ctx ends is healed before Run returns.
func (n *Nemesis) Run(ctx context.Context) {
	for {
		n.sleep(ctx, n.between(n.cfg.QuietMin, n.cfg.QuietMax))
		if ctx.Err() != nil {
			return
		}
		n.Apply(ctx, n.next())
	}
}

func (n *Nemesis) next() string {
	if len(n.queue) == 0 {
		n.queue = append([]string(nil), n.cfg.Kinds...)
		n.rng.Shuffle(len(n.queue), func(i, j int) { n.queue[i], n.queue[j] = n.queue[j], n.queue[i] })
	}
	k := n.queue[0]
	n.queue = n.queue[1:]
	return k
}

func (n *Nemesis) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)))
}

// sleep waits d or until ctx is done.
func (n *Nemesis) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// fault is a fault being applied: what to record and how to heal it.
type fault struct {
	history.Fault
	heal func(context.Context) error
	hold time.Duration
	// down and cut describe the cluster during the fault, to decide
	// whether a majority stays connected.
	down []string
	cut  [][2]string
	// ring is set for the majorities ring, where every node sees a
	// majority but no majority sees all of itself.
	ring bool
	// oldLeader is the leader that the fault cuts off from a majority,
	// which must elect another.
	oldLeader string
}

// Apply injects one fault of kind, holds it, heals it and waits for the
// cluster to recover. Errors are recorded in the fault, not returned.
func (n *Nemesis) Apply(ctx context.Context, kind string) {
	f := &fault{Fault: history.Fault{Kind: kind}}
	n.logf("nemesis: %s", kind)
	cmds, _ := n.c.(Commander)
	if cmds != nil {
		cmds.TakeCommands() // not this fault's
	}
	f.Start = n.rec.Now()
	err := n.start(ctx, f)
	if err != nil && ctx.Err() != nil {
		// The run ended while the fault was being applied (its waits use
		// the run's context): not the cluster's fault.
		n.logf("nemesis: %s interrupted by the end of the run (%v)", kind, err)
		f.Detail = strings.TrimSpace(f.Detail + " (interrupted: the run ended while it was applied)")
		err = nil
	} else if err == nil {
		f.MajorityConnected = n.majority(f)
		f.Outside = n.outside(f)
		n.logf("nemesis: %s applied: %s (majority connected: %v)", kind, f.Detail, f.MajorityConnected)
		n.sleep(ctx, f.hold)
		if f.oldLeader != "" {
			err = n.newLeader(ctx, f)
		}
	}
	// Heal even when the run is over, so nothing stays broken.
	hctx, cancel := context.WithTimeout(context.Background(), n.cfg.RecoverTimeout)
	defer cancel()
	if f.heal != nil {
		if herr := f.heal(hctx); herr != nil {
			err = errors.Join(err, fmt.Errorf("heal: %w", herr))
		}
	}
	f.End = n.rec.Now()
	if rerr := n.c.WaitReady(hctx, n.cfg.RecoverTimeout); rerr != nil {
		err = errors.Join(err, fmt.Errorf("recovery: %w", rerr))
	}
	if cmds != nil {
		if c := cmds.TakeCommands(); len(c) > 0 {
			f.Detail += " [" + strings.Join(c, "; ") + "]"
		}
	}
	if err != nil {
		f.Err = err.Error()
		n.logf("nemesis: %s: %v", kind, err)
	}
	n.logf("nemesis: %s healed after %v", kind, time.Duration(f.End-f.Start).Round(time.Millisecond))
	n.rec.AddFault(f.Fault)
}

// newLeader waits, up to LeaderChangeTimeout, for the nodes cut off from
// f.oldLeader to elect another leader, and notes in f's detail who led.
// Not finding one is an error only with RequireLeaderChange, or when the
// run ended meanwhile (the wait uses the run's context).
func (n *Nemesis) newLeader(ctx context.Context, f *fault) error {
	if ctx.Err() != nil {
		f.Detail += "; leader change not checked: the run ended during the hold"
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, n.cfg.LeaderChangeTimeout)
	defer cancel()
	last := ""
	for {
		if l, err := n.c.Leader(wctx); err == nil {
			last = l
			if l != f.oldLeader {
				f.Detail += fmt.Sprintf("; new leader %s (was %s)", l, f.oldLeader)
				return nil
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				f.Detail += "; leader change not checked: the run ended before a new leader was seen"
				return nil
			}
			f.Detail += fmt.Sprintf("; no new leader within %v (last seen: %q)", n.cfg.LeaderChangeTimeout, last)
			if n.cfg.RequireLeaderChange {
				return fmt.Errorf("nemesis: no leader other than the cut-off %s within %v of the hold's end", f.oldLeader, n.cfg.LeaderChangeTimeout)
			}
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Nemesis) ids() []string { return n.c.IDs() }

func (n *Nemesis) shuffled() []string {
	ids := n.ids()
	n.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids
}

func (n *Nemesis) leader(ctx context.Context) (string, error) {
	return n.c.WaitLeader(ctx, 10*time.Second)
}

func (n *Nemesis) random() string {
	ids := n.ids()
	return ids[n.rng.IntN(len(ids))]
}

func (n *Nemesis) follower(ctx context.Context) (string, error) {
	l, err := n.leader(ctx)
	if err != nil {
		return "", err
	}
	var fs []string
	for _, id := range n.ids() {
		if id != l {
			fs = append(fs, id)
		}
	}
	if len(fs) == 0 {
		return "", errors.New("nemesis: no follower")
	}
	return fs[n.rng.IntN(len(fs))], nil
}

// cutBetween cuts every node of a from every node of b.
func cutBetween(a, b []string) [][2]string {
	var cut [][2]string
	for _, x := range a {
		for _, y := range b {
			cut = append(cut, [2]string{x, y})
		}
	}
	return cut
}

func without(ids []string, drop ...string) []string {
	var out []string
	for _, id := range ids {
		if !slices.Contains(drop, id) {
			out = append(out, id)
		}
	}
	return out
}

func (n *Nemesis) partition(f *fault, cut [][2]string, detail string) error {
	f.cut = cut
	f.Detail = detail
	f.hold = n.between(n.cfg.FaultMin, n.cfg.FaultMax)
	f.heal = func(context.Context) error { return n.c.Heal() }
	return n.c.Partition(cut)
}

func groups(gs ...[]string) string {
	var parts []string
	for _, g := range gs {
		parts = append(parts, strings.Join(g, " "))
	}
	return strings.Join(parts, " | ")
}

func (n *Nemesis) start(ctx context.Context, f *fault) error {
	switch f.Kind {
	case PartitionHalves:
		// The larger half first: a cluster that cuts one group from the
		// rest (partition.sh split) cuts that one.
		ids := n.shuffled()
		a, b := ids[:(len(ids)+1)/2], ids[(len(ids)+1)/2:]
		f.Nodes = ids
		return n.partition(f, cutBetween(a, b), groups(a, b))

	case PartitionIsolateLeader:
		l, err := n.leader(ctx)
		if err != nil {
			return err
		}
		rest := without(n.ids(), l)
		f.Nodes, f.oldLeader = []string{l}, l
		return n.partition(f, cutBetween([]string{l}, rest), groups([]string{l}, rest))

	case PartitionLeaderMinority:
		l, err := n.leader(ctx)
		if err != nil {
			return err
		}
		others := without(n.shuffled(), l)
		k := (len(others)+1)/2 - 1 // the leader plus k others stay a minority
		minority := append([]string{l}, others[:k]...)
		majority := others[k:]
		f.Nodes, f.oldLeader = minority, l
		return n.partition(f, cutBetween(minority, majority), groups(minority, majority))

	case PartitionBridge:
		ids := n.shuffled()
		if len(ids) < 3 {
			return errors.New("nemesis: a bridge needs 3 nodes")
		}
		bridge := ids[0]
		rest := ids[1:]
		a, b := rest[:len(rest)/2], rest[len(rest)/2:]
		f.Nodes = []string{bridge}
		return n.partition(f, cutBetween(a, b), groups(a, []string{bridge + "(bridge)"}, b))

	case PartitionRing:
		ids := n.shuffled()
		if len(ids) < 5 {
			// With 3 nodes every node's neighbours are all the others:
			// the ring has no cut. The bridge is the closest shape.
			f.Kind = PartitionBridge
			return n.start(ctx, f)
		}
		cut := ringCut(ids)
		f.ring = true
		f.Nodes = ids
		return n.partition(f, cut, "ring "+strings.Join(ids, "-"))

	case KillNode, KillLeader:
		id := n.random()
		if f.Kind == KillLeader {
			var err error
			if id, err = n.leader(ctx); err != nil {
				return err
			}
		}
		f.Nodes, f.down = []string{id}, []string{id}
		f.Detail = "kill -9 " + id
		f.hold = n.between(n.cfg.FaultMin/2, n.cfg.FaultMax/2)
		f.heal = func(context.Context) error { return n.c.Restart(id, 0) }
		return n.c.Kill(id)

	case PauseNode, PauseLeader:
		id := n.random()
		if f.Kind == PauseLeader {
			var err error
			if id, err = n.leader(ctx); err != nil {
				return err
			}
		}
		// Half the pauses outlast the election timeout only, half outlast
		// a whole lease.
		d := 3 * n.cfg.ElectionTimeout
		if n.rng.IntN(2) == 0 {
			d = n.cfg.LeaseDuration + 2*n.cfg.ElectionTimeout
		}
		f.Nodes, f.down = []string{id}, []string{id}
		f.Detail = fmt.Sprintf("SIGSTOP %s for %v", id, d)
		f.hold = d
		f.heal = func(context.Context) error { return n.c.Resume(id) }
		return n.c.Pause(id)

	case PauseLeaderLong:
		id, err := n.leader(ctx)
		if err != nil {
			return err
		}
		d := n.between(2*n.cfg.LeaseDuration, 3*n.cfg.LeaseDuration)
		f.Nodes, f.down = []string{id}, []string{id}
		f.Detail = fmt.Sprintf("SIGSTOP leader %s for %v (%.1f leases)", id, d.Round(time.Millisecond), float64(d)/float64(n.cfg.LeaseDuration))
		f.hold = d
		f.heal = func(context.Context) error { return n.c.Resume(id) }
		return n.c.Pause(id)

	case Blackhole:
		// Half the time the leader, half a random node (which may be
		// the leader too; the detail says which it was).
		l, err := n.leader(ctx)
		if err != nil {
			return err
		}
		id := l
		if n.rng.IntN(2) == 0 {
			id = n.random()
		}
		role := "follower"
		if id == l {
			role = "leader"
		}
		f.Nodes = []string{id}
		// To the others it is cut off from everyone; it still runs.
		f.cut = cutBetween([]string{id}, without(n.ids(), id))
		f.Detail = fmt.Sprintf("drop all traffic to and from %s %s, clients' included, no RST", role, id)
		f.hold = n.between(n.cfg.FaultMin, n.cfg.FaultMax)
		bh := n.c.(Blackholer)
		f.heal = func(context.Context) error { return bh.Unblackhole() }
		return bh.Blackhole(id)

	case PauseClient:
		d := n.cfg.LeaseDuration + time.Second
		p, ok := n.clients.PauseClient(d)
		if !ok {
			return fmt.Errorf("nemesis: could not pause a client (%s busy or none)", p)
		}
		f.Detail = fmt.Sprintf("pause client %s for %v at its next write under a lock", p, d)
		f.hold = d
		return nil

	case ClockSkew, ClockSkewExtreme:
		rate := 1 + n.cfg.MaxDrift
		if n.rng.IntN(2) == 0 {
			rate = 1 - n.cfg.MaxDrift
		}
		if f.Kind == ClockSkewExtreme {
			rate = n.cfg.ExtremeRate
			f.Negative = true
		}
		// Restart a follower with the skewed clock and hand it the
		// leadership, since only the leader's clock decides expiry.
		id, err := n.follower(ctx)
		if err != nil {
			return err
		}
		f.Nodes = []string{id}
		f.hold = n.between(n.cfg.FaultMin, n.cfg.FaultMax)
		f.heal = func(ctx context.Context) error { return n.c.Restart(id, 1) }
		if err := n.c.Restart(id, rate); err != nil {
			return err
		}
		if err := n.c.WaitReady(ctx, n.cfg.RecoverTimeout); err != nil {
			return err
		}
		terr := n.transfer(ctx, id)
		f.Detail = fmt.Sprintf("%s restarted with --clock-rate %v", id, rate)
		if terr != nil {
			f.Detail += fmt.Sprintf(" (leadership transfer failed: %v)", terr)
		} else {
			f.Detail += " and made leader"
		}
		return nil

	case StallRaft:
		return n.stallRaft(ctx, f)

	case RollingUpgrade:
		return n.rollingUpgrade(ctx, f)

	case Membership:
		id, err := n.follower(ctx)
		if err != nil {
			return err
		}
		f.Nodes, f.down = []string{id}, []string{id}
		f.Detail = "remove member " + id + ", then re-add it with an empty data dir"
		f.hold = n.between(n.cfg.FaultMin/2, n.cfg.FaultMax/2)
		rj := n.c.(Rejoiner)
		f.heal = func(ctx context.Context) error { return rj.Rejoin(ctx, id) }
		return rj.RemoveMember(ctx, id)
	}
	return fmt.Errorf("nemesis: unknown fault kind %q", f.Kind)
}

// stallRaft delays the leader's log entries to its followers for the
// fault's hold. At heal the detail gets what the stall did: how many
// packets it delayed, whether the leader kept its leadership, and from the
// leader's metrics how many Expire proposals failed, how many renewals met
// a holding in doubt, and how many renewals it confirmed without the log.
func (n *Nemesis) stallRaft(ctx context.Context, f *fault) error {
	l, err := n.leader(ctx)
	if err != nil {
		return err
	}
	d := n.cfg.stallDelay()
	sc := n.c.(Staller)
	st, err := sc.Status(ctx, l)
	if err != nil {
		return err
	}
	before, err := sc.Metrics(ctx, l)
	if err != nil {
		return err
	}
	f.Nodes = []string{l}
	f.hold = n.between(n.cfg.FaultMin, n.cfg.FaultMax)
	f.Detail = fmt.Sprintf("entries from leader %s (term %d) delayed %v, expiry propose timeout %v; heartbeats and gRPC on time", l, st.GetTerm(), d, n.cfg.ProposeTimeout)
	f.heal = func(ctx context.Context) error {
		after, merr := sc.Metrics(ctx, l)
		held, err := sc.UnstallRaft()
		detail := f.Detail
		f.Detail += fmt.Sprintf(": %d packets delayed", held)
		if now, serr := sc.Status(ctx, l); serr == nil && now.GetTerm() == st.GetTerm() && now.GetLeader() == l {
			f.Detail += "; leader kept"
		} else {
			f.Detail += "; leadership lost"
		}
		if merr == nil {
			delta := func(name string) float64 { return after[name] - before[name] }
			f.Detail += fmt.Sprintf("; at %s: %.0f expire proposals failed, %.0f renewals in doubt, %.0f local renewals",
				l, delta(`leasekeeper_expiry_proposals_total{result="error"}`),
				delta("leasekeeper_renewals_in_doubt_total"),
				delta(`leasekeeper_local_renewals_total{result="ok"}`))
		}
		n.logf("nemesis: %s ends:%s", StallRaft, strings.TrimPrefix(f.Detail, detail))
		return err
	}
	return sc.StallRaft(l, d)
}

// rollingUpgrade moves one more node to n.toward: a follower while one is
// left on the other binary, else the leader, after handing its leadership
// to a node that runs n.toward already. The fault lasts from the node's
// stop until it is ready on the new binary.
//
// A downgrade that the older binary refuses (it stops at a log entry it
// cannot read and says so on /readyz) is not a failure of the cluster: it
// is recorded, the node goes back to the newer binary, and the upgrade
// stays there.
func (n *Nemesis) rollingUpgrade(ctx context.Context, f *fault) error {
	up := n.c.(Upgrader) // New checked it
	to := n.toward
	if n.refused {
		to = n.cfg.UpgradeTo
	}
	leader, err := n.leader(ctx)
	if err != nil {
		return err
	}
	var pending []string
	for _, id := range n.ids() {
		if up.Binary(id) != to {
			pending = append(pending, id)
		}
	}
	if len(pending) == 0 {
		if !n.cfg.Downgrade || n.refused {
			f.Detail = "every node runs " + binName(to) + ": nothing to do"
			return nil
		}
		n.toward = n.cfg.UpgradeFrom
		if to == n.cfg.UpgradeFrom {
			n.toward = n.cfg.UpgradeTo
		}
		return n.rollingUpgrade(ctx, f)
	}
	id := pending[0]
	for _, p := range pending {
		if p != leader {
			id = p
			break
		}
	}
	role := "follower"
	if id == leader {
		role = "leader"
		var target string
		for _, o := range n.ids() {
			if o != id && up.Binary(o) == to {
				target = o
				break
			}
		}
		if target == "" {
			return fmt.Errorf("nemesis: no node runs %s to hand the leadership to", binName(to))
		}
		if err := n.transfer(ctx, target); err != nil {
			return fmt.Errorf("nemesis: handing the leadership from %s to %s before its upgrade: %w", id, target, err)
		}
		role = "leader, after handing the leadership to " + target
	}
	from := up.Binary(id)
	f.Nodes, f.down = []string{id}, []string{id}
	f.Detail = fmt.Sprintf("%s (%s): %s -> %s", id, role, binName(from), binName(to))
	f.hold = n.between(0, n.cfg.FaultMin/2) // the binary being replaced
	f.heal = func(ctx context.Context) error {
		if err := n.c.Restart(id, 0); err != nil {
			return err
		}
		werr := n.c.WaitReady(ctx, n.cfg.RecoverTimeout/2)
		if werr == nil || to != n.cfg.UpgradeFrom {
			return werr
		}
		_, why, _ := up.Readyz(ctx, id)
		if !strings.Contains(why, "upgrade this node") {
			return werr
		}
		// Refused: the older binary met an entry it cannot apply.
		n.refused = true
		f.Detail += fmt.Sprintf("; refused by the older binary (%s); back to %s", why, binName(n.cfg.UpgradeTo))
		if err := up.SetBinary(id, n.cfg.UpgradeTo); err != nil {
			return err
		}
		return n.c.Restart(id, 0)
	}
	if err := up.Stop(id); err != nil {
		return err
	}
	return up.SetBinary(id, to)
}

// binName is how a fault's detail names a binary: its directory's name
// (the runner builds each release into a directory named after it).
func binName(path string) string {
	return filepath.Base(filepath.Dir(path))
}

// transfer moves leadership to id, retrying for a few seconds.
func (n *Nemesis) transfer(ctx context.Context, id string) error {
	var err error
	for i := 0; i < 10; i++ {
		if err = n.c.(Transferer).TransferLeadership(ctx, id); err == nil {
			if l, lerr := n.c.WaitLeader(ctx, 5*time.Second); lerr == nil && l == id {
				return nil
			}
			err = fmt.Errorf("leader is not %s after the transfer", id)
		}
		n.sleep(ctx, 300*time.Millisecond)
	}
	return err
}

// ringCut returns the cuts of a majorities ring over ids (in ring order):
// each node reaches the r nodes on either side of it, where 2r+1 is a
// majority, and no others. Every node sees a majority, and no two nodes see
// the same one.
func ringCut(ids []string) [][2]string {
	var cut [][2]string
	r := (len(ids)/2 + 1) / 2
	for i := range ids {
		for j := i + 1; j < len(ids); j++ {
			if d := min(j-i, len(ids)-(j-i)); d > r {
				cut = append(cut, [2]string{ids[i], ids[j]})
			}
		}
	}
	return cut
}

// majority reports whether, during f, some majority of the nodes runs
// unpaused and every pair in it can talk. The ring counts as no: Raft may
// still make progress there, but no majority is fully connected.
func (n *Nemesis) majority(f *fault) bool {
	if f.ring {
		return false
	}
	return majorityConnected(n.ids(), f.down, f.cut)
}

// outside lists the nodes that are not in every largest connected
// majority the fault leaves: down, paused, cut off, or on one side of a
// bridge. A call through one of them may fail although a majority is
// connected. Nil when no majority is connected.
func (n *Nemesis) outside(f *fault) []string {
	if f.ring {
		return nil
	}
	ms := majorities(n.ids(), f.down, f.cut)
	if len(ms) == 0 {
		return nil
	}
	var out []string
	for _, id := range n.ids() {
		for _, m := range ms {
			if !slices.Contains(m, id) {
				out = append(out, id)
				break
			}
		}
	}
	return out
}

func majorityConnected(ids, down []string, cuts [][2]string) bool {
	return len(majorities(ids, down, cuts)) > 0
}

// majorities returns the sets of running nodes, a majority of ids each,
// that reach each other and are not part of a larger such set.
func majorities(ids, down []string, cuts [][2]string) [][]string {
	cut := map[[2]string]bool{}
	for _, p := range cuts {
		cut[p] = true
		cut[[2]string{p[1], p[0]}] = true
	}
	alive := without(ids, down...)
	need := len(ids)/2 + 1
	// Brute force over subsets: at most 9 nodes.
	var masks []int
	for mask := 0; mask < 1<<len(alive); mask++ {
		var set []string
		for i, id := range alive {
			if mask&(1<<i) != 0 {
				set = append(set, id)
			}
		}
		if len(set) < need {
			continue
		}
		ok := true
		for i := 0; i < len(set) && ok; i++ {
			for j := i + 1; j < len(set); j++ {
				if cut[[2]string{set[i], set[j]}] {
					ok = false
					break
				}
			}
		}
		if ok {
			masks = append(masks, mask)
		}
	}
	var out [][]string
	for _, m := range masks {
		maximal := true
		for _, o := range masks {
			if o != m && o&m == m {
				maximal = false
				break
			}
		}
		if !maximal {
			continue
		}
		var set []string
		for i, id := range alive {
			if m&(1<<i) != 0 {
				set = append(set, id)
			}
		}
		out = append(out, set)
	}
	return out
}
