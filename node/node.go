// Package node wires one leasekeeper server: Raft with its stores and
// transport, the lease FSM, and the leader's expiry manager, and follows
// leadership so that only a leader whose log is fully applied decides
// expiry and answers linearizable reads.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/leasing"
)

// Errors of the node.
var (
	// ErrNotLeader: the request needs the leader and this node is not it.
	ErrNotLeader = errors.New("node: not the leader")
	// ErrNotReady: this node leads but has not applied its whole log yet.
	ErrNotReady = errors.New("node: leader is still applying its log")
	// ErrUnknownMember: no member has that ID.
	ErrUnknownMember = errors.New("node: unknown member")
	// ErrLeaderChanged: the node saw another leader, or lost the one it
	// had; the cause of a LeaderWatch context.
	ErrLeaderChanged = errors.New("node: the leader changed")
)

// Deps are the node's collaborators. Zero fields take the production
// defaults: the real clock, a discarding logger, no metrics, and Raft on TCP
// with raft-boltdb and file snapshots under Config.DataDir.
type Deps struct {
	Clock      clock.Clock
	Logger     hclog.Logger
	Registerer prometheus.Registerer
	// Transport, Logs, Stable and Snapshots replace the on-disk Raft
	// plumbing; tests use raft.InmemTransport and raft.InmemStore.
	Transport raft.Transport
	Logs      raft.LogStore
	Stable    raft.StableStore
	Snapshots raft.SnapshotStore
	// Listeners learn of every applied change after the expiry manager.
	Listeners []fsm.Listener
	// LeaderGone lets a follower learn that its silent leader's process
	// is gone, to stand for election without waiting out the heartbeat
	// timeout (see crash.go). Nil takes TCPRefused when Raft runs on a
	// NetworkTransport, and no probe otherwise.
	LeaderGone LeaderGoneFunc
}

// Node is one running leasekeeper server.
type Node struct {
	cfg  Config
	clk  clock.Clock
	log  hclog.Logger
	raft *raft.Raft
	fsm  *fsm.FSM
	mgr  *leasing.Manager

	met     *metrics
	batch   *batcher
	waiters waiters
	closers []func() error
	obsCh   chan raft.Observation
	obs     *raft.Observer

	conf       confirmer
	leaderGone LeaderGoneFunc // nil: no crash probe
	// quitCtx is cancelled when the node shuts down, to stop work that
	// outlives a request (confirmation rounds).
	quitCtx context.Context
	quit    context.CancelFunc

	// cmdVersion is, on a leader, the command version every member of the
	// configuration applies (fsm.Fit); 0 until known.
	cmdVersion atomic.Uint32

	lw leaderWatch

	mu         sync.Mutex
	readyTerm  uint64        // the term in which this node finished its promotion; 0 when not leading
	readyCh    chan struct{} // closed when readyTerm becomes non-zero
	shutdownMu sync.Once
}

// New builds a node and starts its Raft. Call Run to start deciding expiry
// and Close (or cancel Run's context) to stop.
func New(cfg Config, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Clock == nil {
		deps.Clock = clock.New()
	}
	if deps.Logger == nil {
		deps.Logger = hclog.NewNullLogger()
	}
	n := &Node{
		cfg:     cfg,
		clk:     deps.Clock,
		log:     deps.Logger.Named("node"),
		obsCh:   make(chan raft.Observation, 16),
		readyCh: make(chan struct{}),
		waiters: waiters{seen: make(map[waiterKey]time.Time)},
	}
	n.quitCtx, n.quit = context.WithCancel(context.Background())
	n.lw.ctx, n.lw.cancel = context.WithCancelCause(n.quitCtx)
	lcfg := cfg.Leasing
	if cfg.Fault == FaultIgnoreExpireDoubt {
		lcfg.UnsafeIgnoreDoubt = true
	}
	mgr, err := leasing.New(lcfg, deps.Clock, n, deps.Logger.Named("leasing"), deps.Registerer)
	if err != nil {
		return nil, err
	}
	n.mgr = mgr
	n.batch = newBatcher(n.applyEntry)
	if n.met, err = newMetrics(deps.Registerer, n); err != nil {
		return nil, err
	}
	n.fsm = fsm.NewWithOptions(&listener{n: n, others: deps.Listeners}, fsm.Options{
		UnsafeReuseTokens: cfg.Fault == FaultReuseTokens,
	})
	if cfg.Fault != FaultNone {
		n.log.Warn("UNSAFE: breaking a safety rule on purpose for testing", "fault", cfg.Fault)
	}

	if err := n.openStores(&deps); err != nil {
		n.closeStores()
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = deps.Logger.Named("raft")
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// Group commit: concurrent proposals share one disk write and one
	// AppendEntries round.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 512
	if err := raft.ValidateConfig(rc); err != nil {
		n.closeStores()
		return nil, fmt.Errorf("node: raft config: %w", err)
	}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(deps.Logs, deps.Stable, deps.Snapshots)
		if err != nil {
			n.closeStores()
			return nil, fmt.Errorf("node: reading raft state: %w", err)
		}
		if !has {
			peers := cfg.Peers
			if len(peers) == 0 {
				peers = []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(cfg.AdvertisedRaft())}}
			}
			if err := raft.BootstrapCluster(rc, deps.Logs, deps.Stable, deps.Snapshots, deps.Transport,
				raft.Configuration{Servers: peers}); err != nil {
				n.closeStores()
				return nil, fmt.Errorf("node: bootstrap: %w", err)
			}
			n.log.Info("bootstrapped a new cluster", "peers", len(peers))
		}
	}

	n.leaderGone = deps.LeaderGone
	if _, tcp := deps.Transport.(*raft.NetworkTransport); tcp && n.leaderGone == nil {
		n.leaderGone = TCPRefused
	}
	if cfg.NoCrashProbe || cfg.LeaderLeaseTimeout >= cfg.HeartbeatTimeout {
		n.leaderGone = nil
	}

	r, err := raft.NewRaft(rc, n.fsm, deps.Logs, deps.Stable, deps.Snapshots, deps.Transport)
	// Raft restores the newest snapshot on disk and, when the FSM refuses
	// it, an older one, and then replays its log from there: after a
	// downgrade that would be the state of a past moment. A node whose
	// newest snapshot is of a format it cannot read refuses to start.
	if herr := n.fsm.Halted(); herr != nil {
		if err == nil {
			_ = r.Shutdown().Error()
		}
		n.closeStores()
		return nil, fmt.Errorf("node: %w", herr)
	}
	if err != nil {
		n.closeStores()
		return nil, fmt.Errorf("node: starting raft: %w", err)
	}
	n.raft = r
	// Leadership is followed through an observer (LeaderCh may drop
	// signals); Run also re-checks on a short timer in case an observation
	// was dropped.
	n.obs = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(n.obs)
	return n, nil
}

func (n *Node) openStores(deps *Deps) error {
	cfg := n.cfg
	if deps.Logs == nil || deps.Stable == nil || deps.Snapshots == nil {
		if cfg.DataDir == "" {
			return errors.New("node: DataDir is required without injected stores")
		}
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("node: data dir: %w", err)
		}
	}
	if deps.Logs == nil || deps.Stable == nil {
		bolt, err := raftboltdb.New(raftboltdb.Options{
			Path:   filepath.Join(cfg.DataDir, "raft.db"),
			NoSync: cfg.NoSync,
		})
		if err != nil {
			return fmt.Errorf("node: opening raft.db: %w", err)
		}
		n.closers = append(n.closers, bolt.Close)
		logs, err := raft.NewLogCache(1024, bolt)
		if err != nil {
			return err
		}
		deps.Logs, deps.Stable = logs, bolt
	}
	if deps.Snapshots == nil {
		snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, deps.Logger.Named("snapshots"))
		if err != nil {
			return fmt.Errorf("node: snapshot store: %w", err)
		}
		deps.Snapshots = snaps
	}
	if deps.Transport == nil {
		// Raft names its own address in every request it sends (a
		// follower's leader hint, a candidate's vote request): the
		// advertised one.
		var adv net.Addr
		if cfg.RaftAdvertise != "" {
			a, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
			if err != nil {
				return fmt.Errorf("node: RaftAdvertise: %w", err)
			}
			adv = a
		}
		tr, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, adv, 3, 10*time.Second, deps.Logger.Named("transport"))
		if err != nil {
			return fmt.Errorf("node: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		n.closers = append(n.closers, tr.Close)
		deps.Transport = tr
	}
	return nil
}

func (n *Node) closeStores() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		_ = n.closers[i]()
	}
	n.closers = nil
}

// Run runs the expiry manager and follows leadership until ctx is done,
// then shuts Raft down. It returns after everything it started has stopped.
//
// It returns an error when the FSM halts (a log entry needs a newer
// binary, fsm.ErrTooNew): the node then stops rather than serve a table
// that no longer follows the log.
func (n *Node) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { _ = n.mgr.Run(ctx) })
	if n.leaderGone != nil {
		wg.Go(func() { n.watchLeaderCrash(ctx) })
	}
	err := n.followLeadership(ctx)
	stop()
	wg.Wait()
	n.shutdown()
	return err
}

// pollInterval is the backstop for dropped leadership observations.
const pollInterval = 100 * time.Millisecond

func (n *Node) followLeadership(ctx context.Context) error {
	// The backstop ticker only paces re-checks; it decides nothing, so it
	// runs on real time even when the node's clock is a fake.
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	reap := time.NewTicker(reapInterval)
	defer reap.Stop()
	for {
		if err := n.fsm.Halted(); err != nil {
			n.log.Error("stopping: the log or a snapshot holds state this binary cannot read", "error", err)
			n.mgr.Demote()
			n.setReady(0)
			return err
		}
		// Before reconcile, which waits for a Barrier when this node has
		// just won: calls forwarded to the old leader end at once.
		n.noteLeader()
		n.reconcile()
		select {
		case <-ctx.Done():
			n.mgr.Demote()
			n.setReady(0)
			return nil
		case <-n.obsCh:
		case <-tick.C:
		case <-reap.C:
			n.reapWaiters(ctx)
		}
	}
}

// leaderWatch is the leader as the node last saw it, and a context that
// ends when it sees another (see LeaderWatch).
type leaderWatch struct {
	mu     sync.Mutex
	id     string
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// LeaderWatch returns the leader as this node sees it (its ID and
// registered gRPC address, empty when unknown) and a context that is
// cancelled, with cause ErrLeaderChanged, as soon as the node sees a
// different leader or none; or when the node shuts down. A node that
// forwards a call to the leader ends the call with that context, so that
// a leader which went silent without closing its connections does not
// hold the caller until its deadline.
//
// The ID and the context are taken together: a change after the call is
// always signalled, and a context is never cancelled for a change that
// came before it was handed out.
func (n *Node) LeaderWatch() (id, grpcAddr string, changed context.Context) {
	id, changed = n.noteLeader()
	if id != "" {
		grpcAddr, _ = n.fsm.MemberAddr(id)
	}
	return id, grpcAddr, changed
}

// noteLeader compares Raft's leader with the one last seen and, when it
// differs, cancels the watchers' context and starts a new one. Raft's
// leader observations make followLeadership call it at once; LeaderWatch
// calls it too, so it never hands out a leader older than Raft's.
func (n *Node) noteLeader() (string, context.Context) {
	w := &n.lw
	w.mu.Lock()
	defer w.mu.Unlock()
	// Read under the lock: two callers that read Raft apart must not
	// record its leaders out of order.
	_, lid := n.raft.LeaderWithID()
	if id := string(lid); id != w.id {
		w.cancel(ErrLeaderChanged)
		w.id = id
		// From quitCtx, so that a shutdown ends every watch.
		w.ctx, w.cancel = context.WithCancelCause(n.quitCtx)
	}
	return w.id, w.ctx
}

// reconcile brings the expiry manager in line with Raft's state. A new
// leader first waits for a Barrier, so every committed entry is applied,
// then gives every live lease a full fresh duration from its own clock.
func (n *Node) reconcile() {
	term := n.raft.CurrentTerm()
	leading := n.raft.State() == raft.Leader
	n.mu.Lock()
	ready := n.readyTerm
	n.mu.Unlock()
	switch {
	case leading && ready != term:
		if ready != 0 {
			n.mgr.Demote()
			n.setReady(0)
		}
		if err := n.raft.Barrier(n.cfg.BarrierTimeout).Error(); err != nil {
			n.log.Warn("barrier after election failed", "term", term, "error", err)
			return
		}
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		n.refreshVersion()
		n.promote(term)
		n.setReady(term)
		n.log.Info("leading", "term", term, "holdings", n.mgr.Len())
		n.registerSelf()
	case !leading && ready != 0:
		n.mgr.Demote()
		n.setReady(0)
		n.cmdVersion.Store(0)
		n.log.Info("stopped leading", "term", term)
	case leading:
		n.refreshVersion() // members register and upgrade while it leads
	}
}

// CommandVersion returns, on a leader, the command version every member
// of the configuration applies: the newest that it proposes. 0 on a node
// that does not lead.
func (n *Node) CommandVersion() uint32 { return n.cmdVersion.Load() }

// refreshVersion sets cmdVersion to the lowest command version among the
// members of the configuration, voters or not (all apply the log), as
// they registered it. A member that registered none counts as 1.
func (n *Node) refreshVersion() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	v := fsm.CommandVersion
	for _, srv := range f.Configuration().Servers {
		v = min(v, n.fsm.MemberVersion(string(srv.ID)))
	}
	if old := n.cmdVersion.Swap(v); old != v {
		n.log.Info("cluster command version", "version", v, "was", old)
	}
}

// lowerVersion makes cmdVersion at most v at once: a member that applies
// only v is about to join.
func (n *Node) lowerVersion(v uint32) {
	v = max(v, 1)
	for {
		old := n.cmdVersion.Load()
		if old <= v || n.cmdVersion.CompareAndSwap(old, v) {
			return
		}
	}
}

// promote makes the expiry manager decide, from the holdings it tracked
// as a follower: one pass, where building the table of a million holdings
// took most of a second. (Comparing the tracked count with the lease
// table's here would race with entries being applied: the lease table
// changes before the manager hears of it.)
func (n *Node) promote(term uint64) {
	if n.cfg.Fault == FaultNoFreshDuration {
		n.mgr.Promote(term, n.loadHoldings)
		return
	}
	n.mgr.Promote(term, nil)
}

func (n *Node) loadHoldings() []leasing.Holding {
	held := n.fsm.Held()
	delayed := n.fsm.Delayed()
	out := make([]leasing.Holding, 0, len(held)+len(delayed))
	for _, l := range held {
		if l.Record() {
			continue // never expired
		}
		out = append(out, n.holding(l))
	}
	for _, l := range delayed {
		out = append(out, lockDelay(l))
	}
	if n.cfg.Fault == FaultNoFreshDuration {
		for i := range out {
			out[i].TTL = 0
		}
	}
	return out
}

// lockDelay is the delay of the delayed lease l, as the manager tracks it.
func lockDelay(l *fsm.Lease) leasing.Holding {
	return leasing.Holding{
		Key:   leasing.Key{Namespace: l.Namespace, Name: l.Name},
		Token: l.Token,
		TTL:   l.LockDelay,
		Delay: true,
	}
}

func (n *Node) holding(l *fsm.Lease) leasing.Holding {
	ttl := l.TTL()
	if n.cfg.Fault == FaultEarlyExpiry {
		ttl /= 2
	}
	return leasing.Holding{
		Key:        leasing.Key{Namespace: l.Namespace, Name: l.Name},
		Token:      l.Token,
		RenewIndex: l.RenewIndex,
		TTL:        ttl,
	}
}

// registerSelf records this node's gRPC address in the member directory,
// so followers can forward to it.
func (n *Node) registerSelf() {
	addr := n.cfg.AdvertisedGRPC()
	if addr == "" {
		return
	}
	if a, ok := n.fsm.MemberAddr(n.cfg.ID); ok && a == addr && n.fsm.MemberVersion(n.cfg.ID) == fsm.CommandVersion {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	if _, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{
		Id: n.cfg.ID, GrpcAddr: addr, CommandVersion: fsm.CommandVersion,
	}}}); err != nil {
		n.log.Warn("registering own address failed", "error", err)
	}
}

func (n *Node) setReady(term uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.readyTerm = term
	if term != 0 {
		select {
		case <-n.readyCh:
		default:
			close(n.readyCh)
		}
	} else {
		select {
		case <-n.readyCh:
			n.readyCh = make(chan struct{})
		default:
		}
	}
}

// Close stops Raft without Run (for a node whose Run never started).
func (n *Node) Close() error {
	n.shutdown()
	return nil
}

func (n *Node) shutdown() {
	n.shutdownMu.Do(func() {
		// No confirmation round starts after this; the one running ends.
		n.conf.mu.Lock()
		n.quit()
		n.conf.mu.Unlock()
		n.conf.wg.Wait()
		n.raft.DeregisterObserver(n.obs)
		// The batcher closes first, while Raft runs and answers the
		// entries in flight. An entry handed to Raft after its shutdown
		// can land in its apply queue, where nothing answers it.
		n.batch.close()
		if err := n.raft.Shutdown().Error(); err != nil {
			n.log.Warn("raft shutdown", "error", err)
		}
		n.closeStores()
	})
}

// listener feeds applied changes to the expiry manager, then to the
// other listeners.
type listener struct {
	n      *Node
	others []fsm.Listener
}

func (l *listener) Applied(evs []fsm.Event) {
	l.n.met.observe(evs)
	// Every node keeps the expiry table's holdings, so that a new leader
	// finds it built; only the leader's has deadlines.
	mgr := l.n.mgr
	for _, ev := range evs {
		switch {
		case ev.Type != fsm.EventDeleted && ev.Lease.Delayed:
			// An expiry began a lock delay, or a waiter joined a delayed
			// lease (which leaves the delay's end where it was).
			mgr.Delayed(lockDelay(ev.Lease))
		case ev.Type == fsm.EventDeleted || !ev.Lease.Held() || ev.Lease.Record():
			// A record's holding is never expired: the manager does not
			// track it. Labels change only by a whole-object write, which
			// renews a holding it keeps (RenewIndex moves, so an Expire
			// still on its way is void): a lease that becomes a record is
			// dropped here, one that stops being one is held afresh below.
			mgr.Ended(leasing.Key{Namespace: ev.Lease.Namespace, Name: ev.Lease.Name})
		case ev.Type == fsm.EventModified:
			// The holding did not change (a waiter joined or left the
			// queue): its deadline must not move either, or waiters
			// arriving would keep a dead holder's lease alive.
		default:
			// A holding began or was renewed: a fresh deadline.
			mgr.Held(l.n.holding(ev.Lease))
		}
	}
	for _, o := range l.others {
		o.Applied(evs)
	}
}

func (l *listener) Restored() {
	// A restore replaces the table: the tracked holdings are rebuilt, and a
	// leader's deadlines are fresh durations, as after an election.
	l.n.mgr.Track(l.n.loadHoldings)
	for _, o := range l.others {
		o.Restored()
	}
}
