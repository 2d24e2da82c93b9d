package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/leasing"
)

// FSM returns the node's lease table.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Manager returns the node's expiry manager.
func (n *Node) Manager() *leasing.Manager { return n.mgr }

// Raft returns the node's Raft, for status and tests.
func (n *Node) Raft() *raft.Raft { return n.raft }

// ID returns the node's Raft server ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addrs returns the Raft and gRPC addresses the node advertises to the
// others (see Config.RaftAdvertise).
func (n *Node) Addrs() (raftAddr, grpcAddr string) {
	return n.cfg.AdvertisedRaft(), n.cfg.AdvertisedGRPC()
}

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's ID and registered gRPC address, empty when
// unknown.
func (n *Node) Leader() (id, grpcAddr string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	a, _ := n.fsm.MemberAddr(string(lid))
	return string(lid), a
}

// Propose stamps c with the leader's wall clock, commits it through Raft
// (packed with concurrent proposals into one entry) and returns the FSM's
// result. ctx bounds the wait; a command whose wait ended may still commit.
func (n *Node) Propose(ctx context.Context, c *fsmpb.Command) (*fsm.Result, error) {
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.NowUnixNano = n.clk.Now().UnixNano()
	// Only what every member applies alike: fields of newer command
	// versions wait until every member's binary knows them.
	// A command that still needs more (a record lease) waits for the
	// upgrade of every member.
	v := n.cmdVersion.Load()
	if err := fsm.Check(fsm.Fit(c, v), v); err != nil {
		return nil, err
	}
	return n.batch.propose(ctx, c)
}

// applyEntry commits one log entry; the batcher calls it.
func (n *Node) applyEntry(c *fsmpb.Command) (*fsm.Result, error) {
	data, err := proto.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("node: encoding command: %w", err)
	}
	start := time.Now() // for the latency metric only
	f := n.raft.Apply(data, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return nil, mapRaftError(err)
	}
	n.met.applyLatency.Observe(time.Since(start).Seconds())
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("node: unexpected FSM response %T", f.Response())
	}
	return res, nil
}

func mapRaftError(err error) error {
	switch err {
	case raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrLeadershipTransferInProgress:
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case raft.ErrEnqueueTimeout:
		return fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
	}
	return err
}

// ProposeExpire implements leasing.Proposer. The command names term, the
// one the manager was promoted for, so the FSM ignores it if it reaches the
// log in any other term. The holdings that are lock delays the leader saw
// run out are ended by an EndDelay of the same term, after the Expire.
func (n *Node) ProposeExpire(ctx context.Context, term uint64, hs []leasing.Holding) error {
	if n.raft.CurrentTerm() != term {
		return ErrNotLeader
	}
	e := &fsmpb.Expire{Term: term}
	d := &fsmpb.EndDelay{Term: term}
	for _, h := range hs {
		if h.Delay {
			d.Entries = append(d.Entries, &fsmpb.EndDelayEntry{Namespace: h.Key.Namespace, Name: h.Key.Name, Token: h.Token})
			continue
		}
		e.Entries = append(e.Entries, &fsmpb.ExpireEntry{
			Namespace: h.Key.Namespace, Name: h.Key.Name, Token: h.Token, RenewIndex: h.RenewIndex,
		})
		// Expired holdings with a lock delay leave their leases delayed
		// (Fit drops the flag while a member runs an older binary). The
		// flag is set only when a named holding has a delay, so an
		// Expire of holdings without one stays readable by an older
		// binary (a downgrade). A holding's lock delay changes only with
		// its token or renew index, which the Expire names: if the table
		// has moved past them, the Expire does nothing to that lease.
		// Once one holding sets it, the rest need no lookup.
		if e.LockDelays {
			continue
		}
		if l, ok := n.fsm.Get(h.Key.Namespace, h.Key.Name); ok && l.Token == h.Token && l.RenewIndex == h.RenewIndex && l.LockDelay > 0 {
			e.LockDelays = n.cfg.Fault != FaultSkipLockDelay
		}
	}
	if len(e.Entries) > 0 {
		res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Expire{Expire: e}})
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
	}
	if len(d.Entries) > 0 {
		res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_EndDelay{EndDelay: d}})
		if err != nil {
			return err
		}
		return res.Err
	}
	return nil
}

// ReadBarrier returns once a read of the local FSM is linearizable: this
// node leads, has applied every entry of earlier terms (its promotion
// Barrier finished in the current term), and a quorum confirmed its
// leadership after the call began. Every write acknowledged before the call
// began is then in the local FSM, because writes are acknowledged only
// after the leader applied them.
func (n *Node) ReadBarrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	term := n.raft.CurrentTerm()
	for {
		n.mu.Lock()
		ready, ch := n.readyTerm, n.readyCh
		n.mu.Unlock()
		if ready == term {
			break
		}
		if ready > term || n.raft.State() != raft.Leader {
			return ErrNotLeader
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
	if err := n.confirmRead(ctx, term); err != nil {
		return err
	}
	if n.raft.CurrentTerm() != term {
		return ErrNotLeader
	}
	return nil
}

// confirmRead confirms the leadership for a read with the same rounds as
// local renewals: a quorum was in term after the call began. Where the
// rounds cannot serve (a node without Peers, or voters that have not
// registered the address to be asked at), a Barrier does: its entry
// commits only once a quorum took it in this term, which happens after
// the call began. Raft's VerifyLeader would not do: it also counts
// answers to heartbeats sent before it was called, so a leader deposed
// meanwhile could serve a stale read.
func (n *Node) confirmRead(ctx context.Context, term uint64) error {
	n.conf.mu.Lock()
	peers := n.conf.peers
	n.conf.mu.Unlock()
	if peers != nil {
		err := n.confirm(ctx, term)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrNotLeader), errors.Is(err, ErrShuttingDown):
			return err
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, errUnregistered):
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
	}
	// The Barrier's future resolves only once its entry is applied, which a
	// stalled disk can hold up for any time: the read waits for it no
	// longer than its own context allows. The goroutine ends when Raft
	// resolves the future (at the latest when the node shuts down).
	f := n.raft.Barrier(n.cfg.ApplyTimeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return mapRaftError(err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remaining is the leader's estimate of the time left to the holding of
// namespace/name.
func (n *Node) Remaining(namespace, name string) (time.Duration, bool) {
	return n.mgr.Remaining(leasing.Key{Namespace: namespace, Name: name})
}

// Member is one server of the Raft configuration.
type Member struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	Suffrage string
	// CommandVersion is the command version the member registered (1
	// when none).
	CommandVersion uint32
	State          string
}

// Status is a node's view of the cluster.
type Status struct {
	ID           string
	State        string
	Leader       string
	LeaderGRPC   string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	Members      []Member
	Stats        fsm.Stats
}

// Status reports this node's view of the cluster.
func (n *Node) Status() (Status, error) {
	s := Status{
		ID:           n.cfg.ID,
		State:        stateName(n.raft.State()),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		Stats:        n.fsm.Stats(),
	}
	s.Leader, s.LeaderGRPC = n.Leader()
	members, err := n.Members()
	s.Members = members
	return s, err
}

// Members lists the Raft configuration with the registered gRPC addresses.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	addrs := n.fsm.Members()
	leaderID, _ := n.Leader()
	var out []Member
	for _, srv := range f.Configuration().Servers {
		m := Member{
			ID:             string(srv.ID),
			RaftAddr:       string(srv.Address),
			GRPCAddr:       addrs[string(srv.ID)],
			Suffrage:       suffrageName(srv.Suffrage),
			State:          "follower",
			CommandVersion: n.fsm.MemberVersion(string(srv.ID)),
		}
		switch {
		case m.ID == leaderID:
			m.State = "leader"
		case srv.Suffrage != raft.Voter:
			m.State = "learner"
		case leaderID == "":
			m.State = "unknown"
		}
		if m.ID == n.cfg.ID {
			m.State = stateName(n.raft.State())
		}
		out = append(out, m)
	}
	return out, nil
}

// Join adds a server to the cluster (a voter unless nonvoter) and records
// its gRPC address and version, the newest command version its binary
// applies (0: not said, taken as 1); the leader stops proposing newer
// commands before the server is added. Joining again with the same addresses only refreshes
// the address, so a retried join does no harm. Leader only.
func (n *Node) Join(ctx context.Context, id, raftAddr, grpcAddr string, nonvoter bool, version uint32) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	// Present with the same address and the wanted suffrage: nothing to
	// change. A nonvoter joining again as a voter is promoted.
	want := raft.Voter
	if nonvoter {
		want = raft.Nonvoter
	}
	present := false
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id && string(srv.Address) == raftAddr && (srv.Suffrage == want || (nonvoter && srv.Suffrage == raft.Voter)) {
			present = true
		}
	}
	if !present {
		n.lowerVersion(version)
		var af raft.IndexFuture
		if nonvoter {
			af = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.cfg.ApplyTimeout)
		} else {
			af = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, n.cfg.ApplyTimeout)
		}
		if err := af.Error(); err != nil {
			return mapRaftError(err)
		}
		n.log.Info("member added", "id", id, "raft_addr", raftAddr, "grpc_addr", grpcAddr, "nonvoter", nonvoter)
	}
	if grpcAddr == "" {
		return nil
	}
	res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{Id: id, GrpcAddr: grpcAddr, CommandVersion: version}}})
	if err != nil {
		return err
	}
	return res.Err
}

// RemoveMember removes a server from the cluster. Leader only.
func (n *Node) RemoveMember(ctx context.Context, id string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	members, err := n.Members()
	if err != nil {
		return err
	}
	found := false
	for _, m := range members {
		found = found || m.ID == id
	}
	if !found {
		return fmt.Errorf("%w: %q", ErrUnknownMember, id)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return mapRaftError(err)
	}
	n.log.Info("member removed", "id", id)
	if id == n.cfg.ID {
		return nil
	}
	res, err := n.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_RemoveMember{RemoveMember: &fsmpb.RemoveMember{Id: id}}})
	if err != nil {
		return err
	}
	return res.Err
}

// TransferLeadership hands leadership to the member to, or to the most
// up-to-date follower when to is empty. Leader only.
func (n *Node) TransferLeadership(to string) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	if to == n.cfg.ID {
		return nil // already leads: nothing to hand over
	}
	var f raft.Future
	if to == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		members, err := n.Members()
		if err != nil {
			return err
		}
		var addr string
		for _, m := range members {
			if m.ID == to {
				addr = m.RaftAddr
			}
		}
		if addr == "" {
			return fmt.Errorf("%w: %q", ErrUnknownMember, to)
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(to), raft.ServerAddress(addr))
	}
	if err := f.Error(); err != nil {
		return mapRaftError(err)
	}
	// Answer once the new leader is known here, so the caller can name it.
	deadline := time.Now().Add(n.cfg.ElectionTimeout * 4)
	for time.Now().Before(deadline) {
		if id, _ := n.Leader(); id != "" {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // Raft has no event for "leader known"
	}
	return nil
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	case raft.Shutdown:
		return "shutdown"
	}
	return "unknown"
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	case raft.Staging:
		return "staging"
	}
	return "unknown"
}

// Restore replaces the whole cluster state with a backup read from r.
// Leader only; meant for seeding a new cluster from a backup. The backup is
// checked (format and checksum) before anything changes.
//
// New fencing tokens start fsm.RestoreTokenGap above the backup's counter,
// or above tokenFloor if that is higher (0: no floor): the backup's cluster
// may have issued tokens after the backup, and they must not be issued
// again.
func (n *Node) Restore(r io.Reader, tokenFloor uint64, timeout time.Duration) error {
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	st, err := fsm.ReadSnapshot(r)
	if err != nil {
		return err
	}
	// The backup's member directory says where another cluster's members
	// answered; kept, it would send forwarded requests and leadership
	// checks there (this node's own ID may well be in it). Like Raft,
	// which keeps its configuration over a restore, keep this cluster's.
	st.SetMembers(n.fsm.Members(), n.fsm.MemberVersions())
	backupToken := st.LastToken()
	counter, err := st.RaiseTokenCounter(tokenFloor)
	if err != nil {
		return err
	}
	// Raft restores at the index after its last; an entry appended
	// meanwhile moves it on, and AppliedIndex then trails until the next
	// entry.
	st.SetAppliedIndex(n.raft.LastIndex() + 1)
	size, err := st.WriteTo(io.Discard)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := st.WriteTo(pw)
		pw.CloseWithError(err)
	})
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Size: size}
	err = n.raft.Restore(meta, pr, timeout)
	pr.Close() // ends the writer if Raft stopped reading early
	wg.Wait()
	if err != nil {
		return fmt.Errorf("node: restore: %w", err)
	}
	n.log.Info("restored the cluster state from a backup", "bytes", size, "leases", n.fsm.Stats().Leases,
		"backup_last_token", backupToken, "last_token", counter)
	return nil
}

// readyLag bounds how far a ready node's applied index may trail its commit
// index, and readyContact how long a ready follower may go without hearing
// from the leader.
const (
	readyLag     = 1000
	readyContact = 5 * time.Second
)

// Ready reports whether the node can serve: it knows a leader, has applied
// nearly all it knows to be committed, and (as a follower) heard from the
// leader recently; a leader must have finished its promotion. The reason
// says what is missing.
func (n *Node) Ready() (bool, string) {
	if err := n.fsm.Halted(); err != nil {
		return false, err.Error()
	}
	id, _ := n.Leader()
	if id == "" {
		return false, "no leader known"
	}
	if n.IsLeader() {
		if !n.mgr.Active() {
			return false, "leader still applying its log"
		}
		return true, "leader"
	}
	if lag := int64(n.raft.CommitIndex()) - int64(n.raft.AppliedIndex()); lag > readyLag {
		return false, fmt.Sprintf("applied index %d behind commit index", lag)
	}
	if lc := n.raft.LastContact(); lc.IsZero() || time.Since(lc) > readyContact {
		return false, "no recent contact with the leader"
	}
	return true, "follower of " + id
}

// RenewLocal renews holdings without a log write where it can: after a
// quorum of voters confirmed this node's leadership at a moment after the
// call began, each holding that the FSM and the expiry table both show as
// renewed gets a fresh deadline of its full duration from now, and its
// entry in the result is the lease as stored (renewTime unchanged). A nil
// entry means that renewal must go through the log: the holding is not
// (or not yet) as asked, its Expire is being proposed, or the leadership
// could not be confirmed. The FSM never sees these renewals; a later leader
// gives every holding a full fresh duration, which covers them (docs/design.md).
func (n *Node) RenewLocal(ctx context.Context, rs []*fsmpb.Renew) []*fsm.Lease {
	out := make([]*fsm.Lease, len(rs))
	if n.cfg.RenewThroughLog || n.raft.State() != raft.Leader {
		return out
	}
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	ready := n.readyTerm == term
	n.mu.Unlock()
	if !ready {
		return out
	}
	if n.cfg.Fault != FaultNoConfirm {
		if err := n.confirm(ctx, term); err != nil {
			n.log.Debug("renewing through the log: leadership not confirmed", "error", err)
			n.met.localLog.Add(float64(len(rs)))
			return out
		}
	}
	ok := 0
	for i, r := range rs {
		l, err := n.fsm.Holding(r.Namespace, r.Name, r.Holder, r.Token)
		if err != nil || !n.mgr.Extend(n.holding(l)) {
			continue
		}
		out[i] = l
		ok++
	}
	n.met.localOK.Add(float64(ok))
	n.met.localLog.Add(float64(len(rs) - ok))
	return out
}
