package fsm

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// acquireDelay is an acquire of namespace default with a lock delay.
func acquireDelay(name, holder string, delay time.Duration, wait bool) *fsmpb.Command {
	c := acquire("default", name, holder, 2*time.Second)
	c.GetAcquire().LockDelayNs = int64(delay)
	c.GetAcquire().Wait = wait
	return c
}

// expireDelaying is an Expire of a version-3 cluster, proposed in term.
func expireDelaying(name string, token, renewIndex, term uint64) *fsmpb.Command {
	c := expire("default", name, token, renewIndex)
	c.GetExpire().Term = term
	c.GetExpire().LockDelays = true
	return c
}

func endDelay(name string, token, term uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_EndDelay{EndDelay: &fsmpb.EndDelay{
		Term: term, Entries: []*fsmpb.EndDelayEntry{{Namespace: "default", Name: name, Token: token}},
	}}}
}

// TestExpiryStartsLockDelay: a holding with a lock delay that expires
// leaves its lease delayed: no waiter is handed it and no acquirer or
// writer gets it, until an EndDelay of the same term names that very
// delay; then the first waiter gets it, with its own lock delay.
func TestExpiryStartsLockDelay(t *testing.T) {
	h := newHarness(t)
	h.term = 4
	a := h.apply(1, acquireDelay("m", "a", 5*time.Second, false)).Lease
	if a.LockDelay != 5*time.Second {
		t.Fatalf("lock delay %v, want 5s", a.LockDelay)
	}
	h.apply(2, acquireDelay("m", "w1", 3*time.Second, true))
	h.events = nil

	r := h.apply(3, expireDelaying("m", a.Token, a.RenewIndex, 4))
	if r.Expired != 1 {
		t.Fatalf("expired %d, want 1", r.Expired)
	}
	l, _ := h.f.Get("default", "m")
	if l.Holder != "" || !l.Delayed || l.Token != a.Token || len(l.Waiters) != 1 || l.History[0].EndReason != EndExpired {
		t.Fatalf("after expiry: %+v, want free, delayed, token %d, w1 still waiting", l, a.Token)
	}
	if len(h.events) != 1 || h.events[0].Type != EventExpired {
		t.Fatalf("events %v, want one EXPIRED and no handoff", h.events)
	}
	if got := h.f.Delayed(); len(got) != 1 || got[0].Name != "m" {
		t.Fatalf("Delayed() = %v, want m", got)
	}
	if s := h.f.Stats(); s.Held != 0 {
		t.Fatalf("held count %d during the delay, want 0", s.Held)
	}

	// Nobody gets it during the delay.
	if r := h.apply(4, acquireDelay("m", "b", 0, false)); r.Acquired || r.Err != nil || !r.Lease.Delayed {
		t.Fatalf("acquire during the delay: %+v, want refused with the delayed lease", r)
	}
	if r := h.apply(5, acquireDelay("m", "w2", 0, true)); r.Acquired || !r.Queued || r.Position != 2 {
		t.Fatalf("waiting acquire during the delay: %+v, want queued second", r)
	}
	if r := h.apply(6, write("default", "m", false, 0, "c")); !errors.Is(r.Err, ErrLockDelayed) {
		t.Fatalf("write of a holder during the delay: %v, want ErrLockDelayed", r.Err)
	}
	if r := h.f.PreviewWrite(write("default", "m", false, 0, "c").GetWrite()); !errors.Is(r.Err, ErrLockDelayed) {
		t.Fatalf("dry-run write during the delay: %v, want ErrLockDelayed", r.Err)
	}
	if r := h.apply(7, release("default", "m", "a", a.Token)); !errors.Is(r.Err, ErrNotHolder) {
		t.Fatalf("release by the expired holder: %v, want ErrNotHolder", r.Err)
	}
	// EndDelays that do not name this delay, or come in another term.
	h.apply(8, endDelay("m", a.Token+100, 4))
	h.apply(9, endDelay("m", a.Token, 3))
	h.term = 5
	h.apply(10, endDelay("m", a.Token, 4))
	if l, _ := h.f.Get("default", "m"); !l.Delayed || l.Holder != "" {
		t.Fatalf("a stale or foreign EndDelay ended the delay: %+v", l)
	}

	h.events = nil
	r = h.apply(11, endDelay("m", a.Token, 5))
	if r.DelaysEnded != 1 {
		t.Fatalf("delays ended %d, want 1", r.DelaysEnded)
	}
	l, _ = h.f.Get("default", "m")
	if l.Delayed || l.Holder != "w1" || l.Token <= a.Token || l.LockDelay != 3*time.Second || len(l.Waiters) != 1 || l.Waiters[0].Holder != "w2" {
		t.Fatalf("after the delay: %+v, want w1 holding with its 3s lock delay, w2 next", l)
	}
	if len(h.events) != 2 || h.events[0].Type != EventModified || h.events[0].Lease.Delayed || h.events[1].Type != EventAcquired {
		t.Fatalf("events %v, want MODIFIED (delay over) then ACQUIRED", h.events)
	}
	if got := h.f.Delayed(); len(got) != 0 {
		t.Fatalf("Delayed() = %v after the delay, want none", got)
	}
	// A repeated EndDelay is a no-op.
	if r := h.apply(12, endDelay("m", a.Token, 5)); r.DelaysEnded != 0 {
		t.Fatalf("repeated EndDelay ended %d", r.DelaysEnded)
	}
}

// TestLockDelayEndsFree: with no waiter the lease is free once the delay
// ends, and the next acquirer gets it.
func TestLockDelayEndsFree(t *testing.T) {
	h := newHarness(t)
	h.term = 2
	a := h.apply(1, acquireDelay("m", "a", time.Second, false)).Lease
	h.apply(2, expireDelaying("m", a.Token, a.RenewIndex, 2))
	h.apply(3, endDelay("m", a.Token, 2))
	l, _ := h.f.Get("default", "m")
	if l.Delayed || l.Holder != "" {
		t.Fatalf("after the delay: %+v, want free", l)
	}
	if r := h.apply(4, acquireDelay("m", "b", 0, false)); !r.Acquired || r.Lease.LockDelay != 0 {
		t.Fatalf("acquire after the delay: %+v, want acquired with no lock delay", r)
	}
}

// TestNoLockDelayAfterRelease: a release hands the lease to the first
// waiter in the same entry, lock delay or not; so does an expiry of a
// holding without one, and an Expire of a cluster that does not delay
// (an older member: lock_delays cleared).
func TestNoLockDelayAfterRelease(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(h *harness, a *Lease) *fsmpb.Command
		lock time.Duration
	}{
		{"release", func(h *harness, a *Lease) *fsmpb.Command { return release("default", "m", "a", a.Token) }, time.Second},
		{"expiry without a lock delay", func(h *harness, a *Lease) *fsmpb.Command {
			return expireDelaying("m", a.Token, a.RenewIndex, 1)
		}, 0},
		{"expiry in an older cluster", func(h *harness, a *Lease) *fsmpb.Command {
			return expire("default", "m", a.Token, a.RenewIndex)
		}, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.term = 1
			a := h.apply(1, acquireDelay("m", "a", tc.lock, false)).Lease
			h.apply(2, acquireDelay("m", "w", 0, true))
			h.apply(3, tc.end(h, a))
			l, _ := h.f.Get("default", "m")
			if l.Delayed || l.Holder != "w" {
				t.Fatalf("after the end: %+v, want w holding at once", l)
			}
		})
	}
}

// TestLockDelaySnapshot: a snapshot carries the delay, the lock delays of
// the lease and its waiters; it says format 2, which a binary without
// lock delay refuses, only while a lease is delayed.
func TestLockDelaySnapshot(t *testing.T) {
	h := newHarness(t)
	h.term = 1
	a := h.apply(1, acquireDelay("m", "a", 5*time.Second, false)).Lease
	h.apply(2, acquireDelay("m", "w", 7*time.Second, true))
	h.apply(3, acquireDelay("other", "x", 0, false))

	format := func() (uint32, *bytes.Buffer) {
		var buf bytes.Buffer
		if err := h.f.WriteSnapshot(&buf); err != nil {
			t.Fatal(err)
		}
		// The header follows the magic, length-delimited.
		var hd fsmpb.SnapshotHeader
		if err := protodelim.UnmarshalFrom(bufio.NewReader(bytes.NewReader(buf.Bytes()[len(snapshotMagic):])), &hd); err != nil {
			t.Fatal(err)
		}
		return hd.Format, &buf
	}
	if f, _ := format(); f != snapshotFormatPlain {
		t.Fatalf("format %d without a delay, want %d", f, snapshotFormatPlain)
	}
	h.apply(4, expireDelaying("m", a.Token, a.RenewIndex, 1))
	f, buf := format()
	if f != snapshotFormatDelayed {
		t.Fatalf("format %d with a delay, want %d", f, snapshotFormatDelayed)
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(buf)); err != nil {
		t.Fatal(err)
	}
	l, _ := g.Get("default", "m")
	if !l.Delayed || l.Holder != "" || l.LockDelay != 5*time.Second || len(l.Waiters) != 1 || l.Waiters[0].LockDelay != 7*time.Second {
		t.Fatalf("restored %+v, want delayed with lock delay 5s and w waiting with 7s", l)
	}
	if got := g.Delayed(); len(got) != 1 {
		t.Fatalf("restored Delayed() = %d leases, want 1", len(got))
	}
	// The restored FSM ends the delay as the original would.
	hg := &harness{t: t, f: g, index: h.index, term: 1}
	hg.apply(5, endDelay("m", a.Token, 1))
	if l, _ := g.Get("default", "m"); l.Holder != "w" || l.LockDelay != 7*time.Second {
		t.Fatalf("restored FSM after EndDelay: %+v, want w holding", l)
	}

	// A format this binary does not know is refused.
	var bad bytes.Buffer
	bad.WriteString(snapshotMagic)
	if _, err := recordEncoding.MarshalTo(&bad, &fsmpb.SnapshotHeader{Format: SnapshotFormat + 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(&bad); !errors.Is(err, ErrSnapshotTooNew) {
		t.Fatalf("format %d: %v, want refused", SnapshotFormat+1, err)
	}
}

// TestFitLockDelay: below version 3 an acquire carries no lock delay and
// an Expire starts none, so a cluster with an older member never delays;
// at 3 they stay and the command needs version 3. An EndDelay always
// needs 3.
func TestFitLockDelay(t *testing.T) {
	cmd := func() *fsmpb.Command {
		return &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{
			acquireDelay("m", "a", time.Second, false),
			expireDelaying("m", 1, 1, 2),
			acquireDelay("m", "b", 0, false),
		}}}}
	}
	for _, v := range []uint32{1, 2} {
		c := Fit(cmd(), v)
		subs := c.GetBatch().Commands
		if subs[0].GetAcquire().LockDelayNs != 0 || subs[1].GetExpire().LockDelays || c.RequiredVersion > 2 {
			t.Fatalf("fit for version %d: %v", v, c)
		}
	}
	c := Fit(cmd(), 3)
	subs := c.GetBatch().Commands
	if c.RequiredVersion != 3 || subs[0].RequiredVersion != 3 || subs[1].RequiredVersion != 3 || subs[2].RequiredVersion != 0 ||
		subs[0].GetAcquire().LockDelayNs != int64(time.Second) || !subs[1].GetExpire().LockDelays {
		t.Fatalf("fit for version 3: %v", c)
	}
	// An EndDelay needs 3 in a cluster of 3; below (an older member
	// joined during the delay, and halted at it), it needs nothing, so
	// the leader can still end the delay: a member that applies less has
	// no delay, and changes nothing for a command it does not know.
	if e := Fit(endDelay("m", 1, 1), 3); e.RequiredVersion != 3 || Check(e, 3) != nil {
		t.Fatalf("EndDelay fit for 3 needs %d, want 3", e.RequiredVersion)
	}
	if e := Fit(endDelay("m", 1, 1), 2); e.RequiredVersion != 0 || Check(e, 2) != nil {
		t.Fatalf("EndDelay fit for 2 needs %d, want 0 (and proposable)", e.RequiredVersion)
	}
	old := newHarness(t)
	old.term = 1
	before := old.f.Revision()
	data, err := proto.Marshal(endDelay("m", 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	// An FSM that knows no EndDelay sees a command without an operation.
	var unknown fsmpb.Command
	if err := proto.Unmarshal(data, &unknown); err != nil {
		t.Fatal(err)
	}
	unknown.Op = nil
	if r := old.apply(1, &unknown); !errors.Is(r.Err, ErrBadCommand) || old.f.Revision() != before {
		t.Fatalf("a command without an operation: %v, revision %d -> %d; want ErrBadCommand and no write", r.Err, before, old.f.Revision())
	}
	// A version-2 FSM (simulated by the version check) halts at such an
	// entry rather than hand the lease over at once.
	if requiredVersion(c) <= 2 {
		t.Fatalf("a version-2 FSM would apply %v", c)
	}
}
