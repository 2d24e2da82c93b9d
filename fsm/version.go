package fsm

import (
	"errors"
	"fmt"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// CommandVersion is the newest command format this FSM applies.
//
//  1. The original commands.
//  2. Expire.term (an Expire counts only in an entry of its term),
//     Write.check_holding and holding_token (a write applies only to the
//     holding it was authorized against), Acquire.max_waiters (the queue
//     limit), Command.required_version and member command versions.
//  3. The record label (RecordLabel): the leader never expires a lease
//     that carries it. The FSM applies such a write as version 2 does (a
//     label is a label); what changes is the leader's expiry manager. So
//     a write or acquire that sets the label needs version 3: were a
//     member of version 2 to lead, it would expire the lease. Fit cannot
//     leave the label out (the write would mean another thing), so the
//     leader refuses such a command (Check) until every member applies
//     version 3.
//     Also lock delay: Acquire.lock_delay_ns, Expire.lock_delays and the
//     EndDelay command (an expired holding leaves its lease delayed until
//     the leader ends the delay).
//  4. Semaphores: Acquire.slots (a semaphore's acquire, queued in the
//     semaphore's one queue) and Dequeue.semaphore. An older FSM would
//     take either for a command on a lease named after the semaphore, so
//     Fit cannot clear them: the leader refuses them (Check) until every
//     member applies version 4.
//
// Every node of a cluster must apply a command alike, or their tables
// diverge: an FSM of version 1 ignores the fields of version 2 and would
// apply such a command differently. So the leader proposes version-2
// fields only once every voter has registered a binary that applies them
// (Fit), and an FSM that meets a command above its version halts (Halted)
// instead of misapplying it: it applies nothing from there on, so its
// table stays the one the entries before left.
const CommandVersion uint32 = 4

// ErrTooNew: a log entry needs a newer binary than this one.
var ErrTooNew = fmt.Errorf("fsm: command needs a newer leasekeeper (this one applies command version %d)", CommandVersion)

// ErrClusterTooOld: a command needs a command version that some member of
// the cluster does not apply yet (Check); upgrade every member first.
var ErrClusterTooOld = errors.New("fsm: a member of the cluster runs a leasekeeper too old for this command")

// Check reports ErrClusterTooOld when c, after Fit, still needs a newer
// command version than cluster (0 counts as 1): a leader must not propose
// it.
func Check(c *fsmpb.Command, cluster uint32) error {
	if need := requiredVersion(c); need > max(cluster, 1) {
		return fmt.Errorf("%w: it needs command version %d, the cluster applies %d", ErrClusterTooOld, need, max(cluster, 1))
	}
	return nil
}

// Fit makes c one that every FSM of version cluster or newer applies alike:
// it clears the fields of newer versions (the command then means what it
// meant before them) and sets c.RequiredVersion to the version that the
// fields left need. cluster 0 counts as 1. It returns c.
func Fit(c *fsmpb.Command, cluster uint32) *fsmpb.Command {
	c.RequiredVersion = fit(c, max(cluster, 1))
	return c
}

// fit clears the fields above v in c and returns the version c needs.
// Each version's fields are fitted by a function of their own.
func fit(c *fsmpb.Command, v uint32) uint32 {
	if b := c.GetBatch(); b != nil {
		need := uint32(0)
		for _, sub := range b.Commands {
			sub.RequiredVersion = fit(sub, v)
			need = max(need, sub.RequiredVersion)
		}
		return need
	}
	return max(fitV2(c, v), fitLockDelay(c, v), fitSemaphore(c))
}

// fitSemaphore reports the version of a semaphore command: 4, with
// nothing to clear.
func fitSemaphore(c *fsmpb.Command) uint32 {
	if c.GetAcquire().GetSlots() > 0 || c.GetDequeue().GetSemaphore() {
		return 4
	}
	return 0
}

// fitV2 fits the fields of version 2, and the record label of version 3
// (which has nothing to clear).
func fitV2(c *fsmpb.Command, v uint32) uint32 {
	need := uint32(0)
	uses := func(set bool) {
		if set {
			need = 2
		}
	}
	switch op := c.Op.(type) {
	case *fsmpb.Command_Expire:
		if v < 2 {
			op.Expire.Term = 0
		}
		uses(op.Expire.Term != 0)
	case *fsmpb.Command_Write:
		if v < 2 {
			op.Write.CheckHolding, op.Write.HoldingToken = false, 0
		}
		uses(op.Write.CheckHolding)
		if IsRecord(op.Write.Labels) {
			need = 3
		}
	case *fsmpb.Command_Acquire:
		if v < 2 {
			op.Acquire.MaxWaiters = 0
		}
		uses(op.Acquire.MaxWaiters != 0)
		if IsRecord(op.Acquire.Labels) {
			need = 3
		}
	case *fsmpb.Command_SetMember:
		// Kept at any version: a version-1 FSM ignores it and records the
		// address alike (nothing it decides reads member versions), and
		// without it no cluster could ever learn that its members were
		// upgraded.
	}
	return need
}

// fitLockDelay fits the lock-delay fields of version 3. Below it, an
// acquire carries no lock delay and an Expire starts none, so a cluster
// with an older member never delays a lease.
func fitLockDelay(c *fsmpb.Command, v uint32) uint32 {
	need := uint32(0)
	switch op := c.Op.(type) {
	case *fsmpb.Command_Acquire:
		if v < 3 {
			op.Acquire.LockDelayNs = 0
		}
		if op.Acquire.LockDelayNs != 0 {
			need = 3
		}
	case *fsmpb.Command_Expire:
		if v < 3 {
			op.Expire.LockDelays = false
		}
		if op.Expire.LockDelays {
			need = 3
		}
	case *fsmpb.Command_EndDelay:
		// A whole command, with nothing to clear. Only an Expire of
		// version 3 delays a lease, and a member that applies less halts
		// at that entry (or refuses a snapshot that holds a delay), so a
		// member of a lower version that still applies entries has no
		// delay to end, and takes the command it does not know for a
		// malformed one that changes nothing: alike. So below version 3
		// (an older member joined during the delay) the command needs
		// nothing and the leader may still end the delay; otherwise the
		// lease would stay delayed until that member left.
		if v >= 3 {
			need = 3
		}
	}
	return need
}

// requiredVersion is the version c needs: its own mark, or the highest
// of a batch's commands.
func requiredVersion(c *fsmpb.Command) uint32 {
	v := c.RequiredVersion
	for _, sub := range c.GetBatch().GetCommands() {
		v = max(v, sub.RequiredVersion)
	}
	return v
}
