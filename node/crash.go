package node

import (
	"context"
	"errors"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// A follower waits out a whole randomised heartbeat timeout (between one
// and two HeartbeatTimeouts, checked on a timer of the same period) before
// it stands for election, whatever the reason its leader went quiet. When
// the leader's process is gone (crashed, killed, out of memory), the
// operating system says so at once: its Raft port refuses connections. So a
// follower whose leader has been silent for LeaderLeaseTimeout (the
// shortest heartbeat timeout Raft accepts) dials the leader's Raft address,
// and if the dial is refused it lowers its heartbeat timeout to that
// silence, which makes Raft's follower loop start its election now.
//
// Nothing here decides anything Raft would not: Raft still checks the
// silence itself, pre-vote still needs a quorum of nodes that have lost
// the leader, and a new leader still gives every holding a full fresh
// duration. A leader that is alive but unreachable or paused accepts or
// drops the dial, not refuses it, and is waited out as before.

const (
	// crashProbeTick paces the silence checks; a check is a clock read.
	crashProbeTick = 20 * time.Millisecond
	// crashProbeEvery bounds the dials to one silent leader, and how long
	// one dial may take.
	crashProbeEvery = 100 * time.Millisecond
	// crashStagger separates the followers' elections by their rank, so
	// that two followers seldom stand at the same instant and split the
	// vote. The first to stand is refused (the others still follow the
	// dead leader); the next wins with its vote.
	crashStagger = 50 * time.Millisecond
	// crashRestoreWithin bounds the wait for Raft's follower loop to act
	// on the lowered timeout before it is put back.
	crashRestoreWithin = 100 * time.Millisecond
)

// LeaderGoneFunc reports whether the process that served Raft at addr is
// gone, as opposed to slow or unreachable. It must answer within ctx.
type LeaderGoneFunc func(ctx context.Context, addr string) bool

// TCPRefused is the LeaderGoneFunc of Raft over TCP: the address refuses
// connections, so nothing listens there any more.
func TCPRefused(ctx context.Context, addr string) bool {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_ = c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// watchLeaderCrash runs the probe on a follower until ctx ends.
func (n *Node) watchLeaderCrash(ctx context.Context) {
	tick := time.NewTicker(crashProbeTick)
	defer tick.Stop()
	var probed time.Time // the last dial, for crashProbeEvery
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n.raft.State() != raft.Follower {
			continue
		}
		addr, id := n.raft.LeaderWithID()
		lc := n.raft.LastContact()
		if addr == "" || lc.IsZero() || time.Since(lc) < n.cfg.LeaderLeaseTimeout {
			continue
		}
		if time.Since(lc) < n.cfg.LeaderLeaseTimeout+time.Duration(n.crashRank(id))*crashStagger ||
			time.Since(probed) < crashProbeEvery {
			continue
		}
		probed = time.Now()
		pctx, cancel := context.WithTimeout(ctx, crashProbeEvery)
		gone := n.leaderGone(pctx, string(addr))
		cancel()
		if !gone {
			continue
		}
		n.log.Warn("the leader's Raft port refuses connections: starting an election without waiting out the heartbeat timeout",
			"leader", id, "silent", time.Since(lc).Round(time.Millisecond))
		n.met.crashElections.Inc()
		n.electNow(ctx, addr)
	}
}

// crashRank is this node's place among the voters other than leader,
// ordered by ID; 0 when unknown.
func (n *Node) crashRank(leader raft.ServerID) int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	var ids []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != leader {
			ids = append(ids, string(s.ID))
		}
	}
	slices.Sort(ids)
	if i := slices.Index(ids, n.cfg.ID); i > 0 {
		return i
	}
	return 0
}

// electNow lowers Raft's heartbeat timeout to LeaderLeaseTimeout, which
// makes the follower loop check its silence at once, waits until it has
// let go of the dead leader, and puts the configured timeout back.
func (n *Node) electNow(ctx context.Context, dead raft.ServerAddress) {
	rc := n.raft.ReloadableConfig()
	rc.HeartbeatTimeout = n.cfg.LeaderLeaseTimeout
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("lowering the heartbeat timeout failed", "error", err)
		return
	}
	defer func() {
		rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
		if err := n.raft.ReloadConfig(rc); err != nil {
			n.log.Error("restoring the heartbeat timeout failed", "error", err)
		}
	}()
	// Raft offers no event for this, so it is polled, briefly.
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	limit := time.NewTimer(crashRestoreWithin)
	defer limit.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != dead || n.raft.State() != raft.Follower {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-limit.C:
			return
		case <-poll.C:
		}
	}
}
