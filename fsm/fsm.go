// Package fsm is the deterministic state machine that Raft replicates: the
// lease table, the fencing-token counter and the member directory.
//
// The FSM never reads a clock or a random source. Every time it stores comes
// inside the command, stamped by the leader that proposed it, so every node
// that applies the same log holds the same table. Expiry is a command too:
// the leader proposes it, and the FSM applies it only to the exact holding
// and renewal it names.
package fsm

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// Errors returned in Result.Err.
var (
	// ErrNotFound: no lease has that namespace and name.
	ErrNotFound = errors.New("fsm: lease not found")
	// ErrNotHolder: the holder or the fencing token does not match the
	// current holding (it was released, expired or taken over).
	ErrNotHolder = errors.New("fsm: not the current holding (wrong holder or stale fencing token)")
	// ErrQueueFull: a lease's wait queue is at its limit.
	ErrQueueFull = errors.New("fsm: wait queue full")
	// ErrConflict: the resource version given does not match the lease's.
	ErrConflict = errors.New("fsm: resource version conflict")
	// ErrBadCommand: the log entry could not be decoded. It is rejected
	// without changing the state.
	ErrBadCommand = errors.New("fsm: malformed command")
	// ErrExists: a create named a lease that exists.
	ErrExists = errors.New("fsm: lease already exists")
	// ErrLockDelayed: a whole-object write named a holder while the lease
	// is in the lock delay after its last holder expired.
	ErrLockDelayed = errors.New("fsm: lease is in its lock delay after its last holding expired; nobody can hold it until the delay ends")
)

// EventType says what a write did to a lease.
type EventType int

// Event types, in the order of the API's WatchEvent.Type.
const (
	EventAdded EventType = iota + 1
	EventAcquired
	EventRenewed
	EventReleased
	EventExpired
	EventDeleted
	// EventModified: a whole-object write that began, renewed or ended no
	// holding.
	EventModified
)

var eventNames = [...]string{"", "ADDED", "ACQUIRED", "RENEWED", "RELEASED", "EXPIRED", "DELETED", "MODIFIED"}

func (t EventType) String() string {
	if t > 0 && int(t) < len(eventNames) {
		return eventNames[t]
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change to the table. Lease is the state after the change (for
// EventDeleted, the last state). Revision is the store revision the change
// created, equal to Lease.ResourceVersion except for deletions. Prev is the
// lease as it was before the change (nil when the change created it), so a
// window of events can be read backwards to the table at an earlier
// revision. Leases in events are never changed after they are emitted.
type Event struct {
	Type     EventType
	Lease    *Lease
	Prev     *Lease
	Revision uint64
}

// Listener learns of every change, in log order. Its methods are called on
// Raft's apply goroutine after the FSM has released its lock, so they may
// read the FSM, and must be quick.
type Listener interface {
	// Applied reports the events of one applied batch of log entries.
	Applied(events []Event)
	// Restored reports that the table was replaced from a snapshot.
	Restored()
}

// Result is what Apply returns for one command (raft.ApplyFuture.Response).
type Result struct {
	// Err is nil on success, else one of the package's errors.
	Err error
	// Lease is the lease after the command (for a refused acquire or a
	// stale renewal, the current holding).
	Lease *Lease
	// Acquired: an Acquire left the caller holding the lease.
	Acquired bool
	// Renewed: the caller already held the lease, and the write renewed it.
	Renewed bool
	// Renews has one result per entry of a RenewBatch.
	Renews []Result
	// Expired counts the holdings an Expire ended.
	Expired int
	// DelaysEnded counts the lock delays an EndDelay ended.
	DelaysEnded int
	// Batch has one result per command of a Batch, in order.
	Batch []*Result
	// Queued: an Acquire with wait put (or kept) the caller in the queue,
	// at Position (1 = next).
	Queued   bool
	Position int
}

// FSM implements raft.FSM and raft.BatchingFSM.
type FSM struct {
	mu      sync.RWMutex
	leases  *table
	members map[string]string // raft server ID -> gRPC address
	// memberVersions: raft server ID -> the command version its binary
	// registered; absent for a member that registered none (version 1).
	memberVersions map[string]uint32
	revision       uint64 // rises with every write to the table
	lastToken      uint64 // the highest fencing token ever issued
	applied        uint64 // the last applied Raft index
	// halted is set at the first entry this FSM cannot apply as meant (a
	// newer command version); from then on it applies nothing.
	halted error

	listener Listener
	opts     Options
	events   []Event // reused between batches; owned by the apply goroutine

	snapCount atomic.Uint64
	snapLast  atomic.Int64 // nanoseconds
}

// Options change how the FSM behaves. Every node of a cluster must use the
// same options, or their tables diverge.
type Options struct {
	// UnsafeReuseTokens makes a lease's fencing token its own transition
	// count instead of a cluster-wide counter, so a deleted and re-created
	// lease reissues old tokens. It exists only so that the chaos suite
	// can show its checkers catch the bug.
	UnsafeReuseTokens bool
}

// New returns an empty FSM. listener may be nil.
func New(listener Listener) *FSM {
	return NewWithOptions(listener, Options{})
}

// NewWithOptions returns an empty FSM with options.
func NewWithOptions(listener Listener, opts Options) *FSM {
	return &FSM{
		leases:  newTable(),
		members: make(map[string]string),

		memberVersions: make(map[string]uint32),
		listener:       listener,
		opts:           opts,
	}
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Apply applies one log entry.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies several log entries under one lock and reports their
// events to the listener in one call.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	f.events = f.events[:0]
	f.applyLocked(logs, out)
	if f.listener != nil && len(f.events) > 0 {
		f.listener.Applied(f.events)
	}
	// The listener must not keep the slice; drop references so the leases
	// can be collected.
	clear(f.events)
	return out
}

// applyLocked applies logs under the table's lock.
func (f *FSM) applyLocked(logs []*raft.Log, out []interface{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		if f.halted != nil {
			out[i] = &Result{Err: f.halted}
			continue
		}
		if l.Type != raft.LogCommand {
			f.applied = max(f.applied, l.Index)
			continue
		}
		var c fsmpb.Command
		if err := proto.Unmarshal(l.Data, &c); err != nil {
			out[i] = &Result{Err: fmt.Errorf("%w: %v", ErrBadCommand, err)}
			f.applied = max(f.applied, l.Index)
			continue
		}
		if v := requiredVersion(&c); v > CommandVersion {
			f.halted = fmt.Errorf("%w: the log entry at index %d needs command version %d; upgrade this node", ErrTooNew, l.Index, v)
			out[i] = &Result{Err: f.halted}
			continue
		}
		out[i] = f.apply(&c, l.Index, l.Term)
		f.applied = max(f.applied, l.Index)
	}
}

// apply applies one command of the log entry at index, of Raft term term.
func (f *FSM) apply(c *fsmpb.Command, index, term uint64) *Result {
	now := c.NowUnixNano
	switch op := c.Op.(type) {
	case *fsmpb.Command_Acquire:
		return f.acquire(op.Acquire, index, now)
	case *fsmpb.Command_Renew:
		r := &Result{Renews: make([]Result, len(op.Renew.Renews))}
		for i, rn := range op.Renew.Renews {
			r.Renews[i] = f.renew(rn, index, now)
		}
		if len(r.Renews) == 1 {
			r.Err, r.Lease = r.Renews[0].Err, r.Renews[0].Lease
		}
		return r
	case *fsmpb.Command_Release:
		return f.release(op.Release, index, now)
	case *fsmpb.Command_Expire:
		return f.expire(op.Expire, index, term, now)
	case *fsmpb.Command_Delete:
		return f.delete(op.Delete, index, now)
	case *fsmpb.Command_SetMember:
		f.members[op.SetMember.Id] = op.SetMember.GrpcAddr
		if op.SetMember.CommandVersion != 0 {
			f.memberVersions[op.SetMember.Id] = op.SetMember.CommandVersion
		}
		return &Result{}
	case *fsmpb.Command_RemoveMember:
		delete(f.members, op.RemoveMember.Id)
		delete(f.memberVersions, op.RemoveMember.Id)
		return &Result{}
	case *fsmpb.Command_Write:
		return f.write(op.Write, index, now)
	case *fsmpb.Command_Dequeue:
		if op.Dequeue.Semaphore {
			return f.dequeueSlot(op.Dequeue)
		}
		return f.dequeue(op.Dequeue)
	case *fsmpb.Command_EndDelay:
		return f.endDelay(op.EndDelay, index, term, now)
	case *fsmpb.Command_Batch:
		r := &Result{Batch: make([]*Result, len(op.Batch.Commands))}
		for i, sub := range op.Batch.Commands {
			if _, nested := sub.Op.(*fsmpb.Command_Batch); nested {
				r.Batch[i] = &Result{Err: fmt.Errorf("%w: nested batch", ErrBadCommand)}
				continue
			}
			r.Batch[i] = f.apply(sub, index, term)
		}
		return r
	default:
		return &Result{Err: fmt.Errorf("%w: no operation", ErrBadCommand)}
	}
}

// store saves l as the new state of its lease at the next revision.
func (f *FSM) store(l *Lease, t EventType) {
	f.revision++
	l.ResourceVersion = f.revision
	prev := f.leases.put(l)
	f.events = append(f.events, Event{Type: t, Lease: l, Prev: prev, Revision: f.revision})
}

// newHolding makes l a new holding of holder: a new fencing token, above
// every token the cluster ever issued, and one more transition.
func (f *FSM) newHolding(l *Lease, holder string, now int64) {
	f.lastToken++
	l.Holder = internHolder(holder)
	l.Token = f.lastToken
	l.Transitions++
	if f.opts.UnsafeReuseTokens {
		l.Token = uint64(l.Transitions)
	}
	if l.waiting(holder) > 0 {
		l.Waiters = l.withoutWaiter(holder)
	}
	l.AcquireTime = now
	l.RenewTime = now
	l.beginHolding(now)
}

func (f *FSM) acquire(a *fsmpb.Acquire, index uint64, now int64) *Result {
	if a.Slots > 0 {
		return f.acquireSlot(a, index, now)
	}
	if a.Name == "" || a.Holder == "" {
		return &Result{Err: fmt.Errorf("%w: acquire needs a name and a holder", ErrBadCommand)}
	}
	old := f.leases.get(a.Namespace, a.Name)
	switch {
	case old == nil:
		l := &Lease{
			Namespace:      a.Namespace,
			Name:           a.Name,
			Duration:       time.Duration(a.DurationNs),
			Grace:          time.Duration(a.GraceNs),
			Labels:         a.Labels,
			CreateTime:     now,
			CreateRevision: f.revision + 1,
			RenewIndex:     index,
			LockDelay:      time.Duration(a.LockDelayNs),
		}
		f.newHolding(l, a.Holder, now)
		f.store(l, EventAdded)
		return &Result{Lease: l, Acquired: true}
	case old.Holder == a.Holder:
		// The holder asking again is a renewal: same token, so a retry of
		// a lost reply does no harm.
		l := old.clone()
		l.RenewTime = now
		l.RenewIndex = index
		l.Duration = time.Duration(a.DurationNs)
		l.Grace = time.Duration(a.GraceNs)
		l.LockDelay = time.Duration(a.LockDelayNs)
		f.store(l, EventRenewed)
		return &Result{Lease: l, Acquired: true, Renewed: true}
	case old.Holder == "" && !old.Delayed:
		l := old.clone()
		l.Duration = time.Duration(a.DurationNs)
		l.Grace = time.Duration(a.GraceNs)
		l.LockDelay = time.Duration(a.LockDelayNs)
		l.RenewIndex = index
		if len(a.Labels) > 0 {
			l.Labels = a.Labels
		}
		f.newHolding(l, a.Holder, now)
		f.store(l, EventAcquired)
		return &Result{Lease: l, Acquired: true}
	case a.Wait:
		if pos := old.waiting(a.Holder); pos > 0 {
			return &Result{Lease: old, Queued: true, Position: pos}
		}
		if a.MaxWaiters > 0 && len(old.Waiters) >= int(a.MaxWaiters) {
			return &Result{Lease: old, Err: fmt.Errorf("%w: %d waiters on %s/%s", ErrQueueFull, len(old.Waiters), a.Namespace, a.Name)}
		}
		l := old.clone()
		// Appended in place when the array has room: every version of
		// the lease then shares one array, so keeping them (watch
		// history, events) costs memory linear in the queue, not
		// quadratic. See Lease.Waiters for why that is safe.
		l.Waiters = append(old.Waiters, Waiter{
			Holder: a.Holder, Duration: time.Duration(a.DurationNs), Grace: time.Duration(a.GraceNs), Labels: a.Labels,
			LockDelay: time.Duration(a.LockDelayNs),
		})
		f.store(l, EventModified)
		return &Result{Lease: l, Queued: true, Position: len(l.Waiters)}
	default:
		// Held by another, or delayed: refused, and the caller learns why
		// from the lease.
		return &Result{Lease: old}
	}
}

// ended stores l, whose holding just ended (released or expired), and
// hands the lease to the first waiter, if any, in the same entry: a second
// write at the next revision, so watchers see both.
func (f *FSM) ended(l *Lease, t EventType, index uint64, now int64) *Lease {
	f.store(l, t)
	if len(l.Waiters) == 0 {
		f.slotFreed(l, index, now)
		return l
	}
	next := l.clone()
	w := next.Waiters[0]
	next.Waiters = next.Waiters[1:]
	next.Duration, next.Grace, next.LockDelay = w.Duration, w.Grace, w.LockDelay
	if len(w.Labels) > 0 {
		next.Labels = w.Labels
	}
	next.RenewIndex = index
	f.newHolding(next, w.Holder, now)
	f.store(next, EventAcquired)
	return next
}

func (f *FSM) dequeue(d *fsmpb.Dequeue) *Result {
	old := f.leases.get(d.Namespace, d.Name)
	if old == nil {
		return &Result{Err: ErrNotFound}
	}
	if old.waiting(d.Holder) == 0 {
		return &Result{Lease: old}
	}
	l := old.clone()
	l.Waiters = l.withoutWaiter(d.Holder)
	f.store(l, EventModified)
	return &Result{Lease: l}
}

// current returns the lease if holder holds it with token, else the error
// that says why not.
func (f *FSM) current(namespace, name, holder string, token uint64) (*Lease, error) {
	l := f.leases.get(namespace, name)
	if l == nil {
		return nil, ErrNotFound
	}
	if l.Holder == "" || l.Holder != holder || l.Token != token {
		return l, ErrNotHolder
	}
	return l, nil
}

func (f *FSM) renew(r *fsmpb.Renew, index uint64, now int64) Result {
	old, err := f.current(r.Namespace, r.Name, r.Holder, r.Token)
	if err != nil {
		return Result{Err: err, Lease: old}
	}
	l := old.clone()
	l.RenewTime = now
	l.RenewIndex = index
	f.store(l, EventRenewed)
	return Result{Lease: l}
}

func (f *FSM) release(r *fsmpb.Release, index uint64, now int64) *Result {
	old, err := f.current(r.Namespace, r.Name, r.Holder, r.Token)
	if errors.Is(err, ErrNotHolder) && old.Holder == "" && old.Token == r.Token &&
		len(old.History) > 0 && old.History[0].Holder == r.Holder && old.History[0].EndReason == EndReleased {
		// Already released by this very holding: a retried release
		// succeeds without a second write. A holding that expired is
		// reported as lost instead, so the holder learns of it.
		return &Result{Lease: old}
	}
	if err != nil {
		return &Result{Err: err, Lease: old}
	}
	l := old.clone()
	l.endHolding(now, EndReleased)
	l.Holder = ""
	f.ended(l, EventReleased, index, now)
	return &Result{Lease: l}
}

// expire ends the holdings named in e. An Expire counts only in a log
// entry of the term its leader proposed it in: held up (in a queue, an
// abandoned proposal) until a later term, it is stale, since the leader of
// that term gave every holding a fresh duration and may have renewed it
// without the log since (docs/design.md).
func (f *FSM) expire(e *fsmpb.Expire, index, term uint64, now int64) *Result {
	r := &Result{}
	if e.Term != 0 && e.Term != term {
		return r
	}
	for _, x := range e.Entries {
		old := f.leases.get(x.Namespace, x.Name)
		// Only the exact holding and renewal the leader saw lapse: a
		// renewal or a new holding applied since keeps the lease.
		if old == nil || old.Holder == "" || old.Token != x.Token || old.RenewIndex != x.RenewIndex {
			continue
		}
		l := old.clone()
		l.endHolding(now, EndExpired)
		l.Holder = ""
		r.Expired++
		if e.LockDelays && l.LockDelay > 0 {
			// The holder failed rather than let go: its work may still be
			// in flight, so nobody gets the lease until the leader, on
			// its own clock, ends the delay. The waiters keep their places.
			l.Delayed = true
			f.store(l, EventExpired)
			continue
		}
		f.ended(l, EventExpired, index, now)
	}
	return r
}

// endDelay ends the lock delays named in e: each lease goes to its first
// waiter, or is free. Like an Expire, it counts only in a log entry of its
// leader's term, and only for the very delay it names (the token of the
// holding whose expiry began it): ending a delay late is safe, ending it
// early is not, and a later leader gave every delay a fresh full length.
func (f *FSM) endDelay(e *fsmpb.EndDelay, index, term uint64, now int64) *Result {
	r := &Result{}
	if e.Term != term {
		return r
	}
	for _, x := range e.Entries {
		old := f.leases.get(x.Namespace, x.Name)
		if old == nil || !old.Delayed || old.Token != x.Token {
			continue
		}
		l := old.clone()
		l.Delayed = false
		f.ended(l, EventModified, index, now)
		r.DelaysEnded++
	}
	return r
}

func (f *FSM) write(w *fsmpb.Write, index uint64, now int64) *Result {
	if w.Name == "" {
		return &Result{Err: fmt.Errorf("%w: write needs a name", ErrBadCommand)}
	}
	old := f.leases.get(w.Namespace, w.Name)
	if r := checkWrite(w, old); r != nil {
		return r
	}
	var l *Lease
	if old == nil {
		l = &Lease{Namespace: w.Namespace, Name: w.Name, CreateTime: now, CreateRevision: f.revision + 1}
	} else {
		l = old.clone()
	}
	l.Duration = time.Duration(w.DurationNs)
	l.Labels = w.Labels
	l.Object = w.Object
	prev := l.Holder
	t := EventModified
	switch {
	case w.Holder != "" && w.Holder != prev:
		if prev != "" {
			l.endHolding(now, EndReplaced)
		}
		f.newHolding(l, w.Holder, now)
		l.RenewIndex = index
		// A whole-object writer has no lock delay to ask for.
		l.LockDelay = 0
		t = EventAcquired
	case w.Holder != "" && w.Holder == prev:
		l.RenewTime = now
		l.RenewIndex = index
		t = EventRenewed
	case w.Holder == "" && prev != "":
		l.endHolding(now, EndReleased)
		l.Holder = ""
		t = EventReleased
	}
	if old == nil {
		t = EventAdded
	}
	if t == EventReleased {
		l = f.ended(l, t, index, now)
	} else {
		f.store(l, t)
	}
	return &Result{Lease: l, Acquired: l.Holder != "" && l.Holder != prev}
}

// checkWrite refuses w on old (nil when the lease does not exist), or
// returns nil.
func checkWrite(w *fsmpb.Write, old *Lease) *Result {
	switch {
	case w.Create && old != nil:
		return &Result{Err: ErrExists, Lease: old}
	case !w.Create && old == nil:
		return &Result{Err: ErrNotFound}
	case old != nil && w.ResourceVersion != 0 && w.ResourceVersion != old.ResourceVersion:
		return &Result{Err: ErrConflict, Lease: old}
	case w.CheckHolding && holdingToken(old) != w.HoldingToken:
		return &Result{Err: ErrConflict, Lease: old}
	case old != nil && old.Delayed && w.Holder != "":
		// A writer may not let a new holder in before the delay is over,
		// any more than an acquirer may.
		return &Result{Err: ErrLockDelayed, Lease: old}
	}
	return nil
}

// PreviewWrite answers w as applying it now would, without applying it (a
// dry run): the same refusals, or the lease it would store. A new holding
// shows the token it would get if nothing else were written first, and no
// times (the leader stamps them when it applies); the lease keeps its
// resource version (a new lease has none).
func (f *FSM) PreviewWrite(w *fsmpb.Write) *Result {
	f.mu.RLock()
	defer f.mu.RUnlock()
	old := f.leases.get(w.Namespace, w.Name)
	if r := checkWrite(w, old); r != nil {
		return r
	}
	l := &Lease{Namespace: w.Namespace, Name: w.Name}
	if old != nil {
		l = old.clone()
	}
	l.Duration = time.Duration(w.DurationNs)
	l.Labels = w.Labels
	l.Object = w.Object
	if w.Holder != l.Holder {
		l.Holder, l.AcquireTime, l.RenewTime = w.Holder, 0, 0
		if w.Holder != "" {
			l.Token = f.lastToken + 1
			l.Transitions++
		}
	}
	return &Result{Lease: l}
}

// PreviewDelete answers d as applying it now would, without applying it:
// the same refusals, or the lease it would delete.
func (f *FSM) PreviewDelete(d *fsmpb.Delete) *Result {
	f.mu.RLock()
	defer f.mu.RUnlock()
	old := f.leases.get(d.Namespace, d.Name)
	if r := checkDelete(d, old); r != nil {
		return r
	}
	return &Result{Lease: old}
}

// checkDelete refuses d on old (nil when the lease does not exist), or
// returns nil.
func checkDelete(d *fsmpb.Delete, old *Lease) *Result {
	switch {
	case old == nil:
		return &Result{Err: ErrNotFound}
	case d.ResourceVersion != 0 && d.ResourceVersion != old.ResourceVersion:
		return &Result{Err: ErrConflict, Lease: old}
	}
	return nil
}

// holdingToken is the fencing token of l's live holding, 0 when l is free
// or nil.
func holdingToken(l *Lease) uint64 {
	if l == nil || l.Holder == "" {
		return 0
	}
	return l.Token
}

func (f *FSM) delete(d *fsmpb.Delete, index uint64, now int64) *Result {
	old := f.leases.get(d.Namespace, d.Name)
	if r := checkDelete(d, old); r != nil {
		return r
	}
	f.leases.remove(d.Namespace, d.Name)
	l := old.clone()
	if l.Holder != "" {
		l.endHolding(now, EndDeleted)
		l.Holder = ""
	}
	f.revision++
	f.events = append(f.events, Event{Type: EventDeleted, Lease: l, Prev: old, Revision: f.revision})
	// A deleted slot is a freed one: the semaphore's next waiter gets it
	// anew.
	f.slotFreed(l, index, now)
	return &Result{Lease: l}
}

// Get returns the lease namespace/name.
func (f *FSM) Get(namespace, name string) (*Lease, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l := f.leases.get(namespace, name)
	return l, l != nil
}

// List returns the leases for which match returns true (all when match is
// nil), sorted by namespace and name, and the revision they were read at.
func (f *FSM) List(match func(*Lease) bool) ([]*Lease, uint64) {
	f.mu.RLock()
	out := make([]*Lease, 0, min(f.leases.count, 1024))
	for l := range f.leases.all() {
		if match == nil || match(l) {
			out = append(out, l)
		}
	}
	rev := f.revision
	f.mu.RUnlock()
	sortLeases(out)
	return out, rev
}

// Held returns every lease with a holder, in no particular order. The new
// leader calls it to rebuild its deadline table.
func (f *FSM) Held() []*Lease {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*Lease, 0, f.leases.held)
	for l := range f.leases.all() {
		if l.Holder != "" {
			out = append(out, l)
		}
	}
	return out
}

// Delayed returns every lease in its lock delay, in no particular order.
// The leader tracks their delays as it tracks holdings.
func (f *FSM) Delayed() []*Lease {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []*Lease
	for l := range f.leases.all() {
		if l.Delayed {
			out = append(out, l)
		}
	}
	return out
}

// Stats is a summary of the table.
type Stats struct {
	Leases       int
	Held         int
	Revision     uint64
	LastToken    uint64
	AppliedIndex uint64
}

// QueuedWaiter is one waiter of one lease, or with Semaphore of one
// semaphore (Name is then the semaphore's).
type QueuedWaiter struct {
	Namespace, Name string
	Semaphore       bool
	Waiter
}

// Waiters lists every queued waiter, in no particular order.
func (f *FSM) Waiters() []QueuedWaiter {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []QueuedWaiter
	for k := range f.leases.queued {
		l := f.leases.get(k.namespace, k.name)
		for _, w := range l.Waiters {
			out = append(out, QueuedWaiter{Namespace: l.Namespace, Name: l.Name, Waiter: w})
		}
	}
	for k, q := range f.leases.sems {
		for _, w := range q {
			out = append(out, QueuedWaiter{Namespace: k.namespace, Name: k.name, Semaphore: true, Waiter: w})
		}
	}
	return out
}

// WaiterCounts returns how many wait in leases' own queues and in
// semaphores' queues, in time linear in the leases and semaphores that
// have waiters.
func (f *FSM) WaiterCounts() (lease, semaphore int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for k := range f.leases.queued {
		lease += len(f.leases.get(k.namespace, k.name).Waiters)
	}
	for _, q := range f.leases.sems {
		semaphore += len(q)
	}
	return lease, semaphore
}

// Stats summarises the table in O(1).
func (f *FSM) Stats() Stats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Stats{Leases: f.leases.count, Held: f.leases.held, Revision: f.revision, LastToken: f.lastToken, AppliedIndex: f.applied}
}

// Revision returns the current store revision.
func (f *FSM) Revision() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.revision
}

// AppliedIndex returns the last Raft index the FSM applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// Members returns the gRPC address of every registered member by Raft ID.
func (f *FSM) Members() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(f.members))
	for k, v := range f.members {
		out[k] = v
	}
	return out
}

// Halted returns why the FSM stopped applying entries (ErrTooNew, or
// ErrSnapshotTooNew after a refused restore), or nil.
// A halted node must not serve: its table no longer follows the log.
func (f *FSM) Halted() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.halted
}

// MemberVersions returns the command version each member registered, by
// Raft ID (members that registered none are absent).
func (f *FSM) MemberVersions() map[string]uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.memberVersions)
}

// MemberVersion returns the command version the member id registered,
// 1 when it registered none.
func (f *FSM) MemberVersion(id string) uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return max(f.memberVersions[id], 1)
}

// MemberAddr returns the gRPC address registered for a Raft server ID.
func (f *FSM) MemberAddr(id string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	a, ok := f.members[id]
	return a, ok
}

func sortLeases(ls []*Lease) {
	sort.Slice(ls, func(i, j int) bool {
		if ls[i].Namespace != ls[j].Namespace {
			return ls[i].Namespace < ls[j].Namespace
		}
		return ls[i].Name < ls[j].Name
	})
}
