package fsm

import (
	"bufio"
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"google.golang.org/protobuf/encoding/protodelim"
)

func acquireSlot(name, holder string, slots int, wait bool) *fsmpb.Command {
	c := acquire("default", name, holder, 2*time.Second)
	c.GetAcquire().Slots = uint32(slots)
	c.GetAcquire().Wait = wait
	return c
}

func leaveSem(name, holder string) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Dequeue{Dequeue: &fsmpb.Dequeue{
		Namespace: "default", Name: name, Holder: holder, Semaphore: true,
	}}}
}

// mustSlot applies a semaphore acquire that must grant a slot, and returns
// the slot lease.
func (h *harness) mustSlot(now int64, c *fsmpb.Command) *Lease {
	h.t.Helper()
	r := h.apply(now, c)
	if r.Err != nil || !r.Acquired {
		h.t.Fatalf("%s: %+v, want a slot", c.GetAcquire().Holder, r)
	}
	return r.Lease
}

// mustQueue applies a semaphore acquire that must queue at pos.
func (h *harness) mustQueue(now int64, c *fsmpb.Command, pos int) {
	h.t.Helper()
	r := h.apply(now, c)
	if r.Err != nil || r.Acquired || !r.Queued || r.Position != pos {
		h.t.Fatalf("%s: %+v, want queued at %d", c.GetAcquire().Holder, r, pos)
	}
}

// holderOf returns the holder of lease name, "" when free or absent.
func (h *harness) holderOf(name string) string {
	l, ok := h.f.Get("default", name)
	if !ok {
		return ""
	}
	return l.Holder
}

// TestSemaphoreQueueIsFIFO: with both slots held, waiters queue once, in
// order; each freed slot (release, expiry, delete) goes to the first in
// line in the entry that freed it, with a token above every other.
func TestSemaphoreQueueIsFIFO(t *testing.T) {
	h := newHarness(t)
	a := h.mustSlot(1, acquireSlot("s", "a", 2, true))
	b := h.mustSlot(2, acquireSlot("s", "b", 2, true))
	if a.Name != "s-0" || b.Name != "s-1" || a.Labels[SemaphoreLabel] != "s" {
		t.Fatalf("slots %s, %s (labels %v), want s-0, s-1 labelled", a.Name, b.Name, a.Labels)
	}
	h.mustQueue(3, acquireSlot("s", "c", 2, true), 1)
	h.mustQueue(4, acquireSlot("s", "d", 2, true), 2)
	h.mustQueue(5, acquireSlot("s", "e", 2, true), 3)
	if l, s := h.f.WaiterCounts(); l != 0 || s != 3 {
		t.Fatalf("waiter counts %d and %d, want 0 and 3", l, s)
	}
	// Asking again keeps the place, and writes nothing.
	events := len(h.events)
	h.mustQueue(6, acquireSlot("s", "d", 2, true), 2)
	if len(h.events) != events {
		t.Fatalf("a waiter asking again made %d events", len(h.events)-events)
	}
	// Without wait, a full semaphore refuses and queues nobody.
	if r := h.apply(7, acquireSlot("s", "x", 2, false)); r.Acquired || r.Queued || r.Err != nil {
		t.Fatalf("try on a full semaphore: %+v", r)
	}

	// Release s-1: c gets it in the same entry.
	if r := h.apply(8, release("default", "s-1", "b", b.Token)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := h.holderOf("s-1"); got != "c" {
		t.Fatalf("s-1 went to %q after the release, want c", got)
	}
	c, _ := h.f.Get("default", "s-1")
	if c.Token <= b.Token || c.Labels[SemaphoreLabel] != "s" {
		t.Fatalf("c's slot: token %d (b had %d), labels %v", c.Token, b.Token, c.Labels)
	}
	// c asking again is a renewal of its slot, not a second one.
	if r := h.apply(9, acquireSlot("s", "c", 2, true)); !r.Acquired || !r.Renewed || r.Lease.Name != "s-1" || r.Lease.Token != c.Token {
		t.Fatalf("c again: %+v", r)
	}
	// Expire s-0 (a's): d gets it.
	if r := h.apply(10, expire("default", "s-0", a.Token, a.RenewIndex)); r.Expired != 1 {
		t.Fatalf("expire: %+v", r)
	}
	if got := h.holderOf("s-0"); got != "d" {
		t.Fatalf("s-0 went to %q after the expiry, want d", got)
	}
	// Delete s-1 (c's): e gets it anew.
	if r := h.apply(11, del("default", "s-1", 0)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := h.holderOf("s-1"); got != "e" {
		t.Fatalf("s-1 went to %q after the delete, want e", got)
	}
	if ws := h.f.Waiters(); len(ws) != 0 {
		t.Fatalf("waiters left: %+v", ws)
	}
	// Queue empty: a release leaves the slot free.
	e, _ := h.f.Get("default", "s-1")
	h.apply(12, release("default", "s-1", "e", e.Token))
	if got := h.holderOf("s-1"); got != "" {
		t.Fatalf("s-1 held by %q with nobody waiting", got)
	}
}

// TestSemaphoreDequeue: a waiter that leaves (or is reaped) loses its
// place, and the one behind it moves up.
func TestSemaphoreDequeue(t *testing.T) {
	h := newHarness(t)
	a := h.mustSlot(1, acquireSlot("s", "a", 1, true))
	h.mustQueue(2, acquireSlot("s", "b", 1, true), 1)
	h.mustQueue(3, acquireSlot("s", "c", 1, true), 2)
	h.apply(4, leaveSem("s", "b"))
	h.apply(5, leaveSem("s", "nobody"))
	if pos, free, _ := h.f.SemaphoreWait("default", "s", "c", 1); pos != 1 || free {
		t.Fatalf("c at %d (free %v), want 1, no free slot", pos, free)
	}
	ws := h.f.Waiters()
	if len(ws) != 1 || !ws[0].Semaphore || ws[0].Name != "s" || ws[0].Holder != "c" || ws[0].Slots != 1 {
		t.Fatalf("waiters %+v", ws)
	}
	h.apply(6, release("default", "s-0", "a", a.Token))
	if got := h.holderOf("s-0"); got != "c" {
		t.Fatalf("s-0 went to %q, want c", got)
	}
}

// TestSemaphoreWaitersOfDifferentSizes: a waiter takes only a slot its
// semaphore has; the first waiter that can take a freed slot gets it.
func TestSemaphoreWaitersOfDifferentSizes(t *testing.T) {
	h := newHarness(t)
	h.mustSlot(1, acquireSlot("s", "a", 2, true))
	b := h.mustSlot(2, acquireSlot("s", "b", 2, true))
	// "big" sees three slots: it takes s-2.
	if l := h.mustSlot(3, acquireSlot("s", "big", 3, true)); l.Name != "s-2" {
		t.Fatalf("big got %s, want s-2", l.Name)
	}
	h.mustQueue(4, acquireSlot("s", "small", 2, true), 1)
	h.mustQueue(5, acquireSlot("s", "big2", 3, true), 2)
	big, _ := h.f.Get("default", "s-2")
	h.apply(6, release("default", "s-2", "big", big.Token))
	if got := h.holderOf("s-2"); got != "big2" {
		t.Fatalf("s-2 went to %q, want big2 (small has no slot 2)", got)
	}
	h.apply(7, release("default", "s-1", "b", b.Token))
	if got := h.holderOf("s-1"); got != "small" {
		t.Fatalf("s-1 went to %q, want small", got)
	}
}

// TestSemaphoreLockDelay: a slot in its lock delay is not free; when the
// delay ends the first waiter gets it.
func TestSemaphoreLockDelay(t *testing.T) {
	h := newHarness(t)
	h.term = 1
	c := acquireSlot("s", "a", 1, true)
	c.GetAcquire().LockDelayNs = int64(time.Second)
	a := h.mustSlot(1, c)
	h.mustQueue(2, acquireSlot("s", "b", 1, true), 1)
	h.apply(3, expireDelaying("s-0", a.Token, a.RenewIndex, 1))
	if l, _ := h.f.Get("default", "s-0"); !l.Delayed || l.Holder != "" {
		t.Fatalf("s-0 after expiry: %+v, want delayed and free", l)
	}
	// Not free while delayed: a new acquirer queues behind b.
	h.mustQueue(4, acquireSlot("s", "c", 1, true), 2)
	if _, free, _ := h.f.SemaphoreWait("default", "s", "b", 1); free {
		t.Fatal("a delayed slot reported free")
	}
	h.apply(5, endDelay("s-0", a.Token, 1))
	if got := h.holderOf("s-0"); got != "b" {
		t.Fatalf("s-0 went to %q after the delay, want b", got)
	}
}

// TestSemaphoreQueueLimit: max_waiters bounds the semaphore's queue.
func TestSemaphoreQueueLimit(t *testing.T) {
	h := newHarness(t)
	h.mustSlot(1, acquireSlot("s", "a", 1, true))
	for i, who := range []string{"b", "c"} {
		c := acquireSlot("s", who, 1, true)
		c.GetAcquire().MaxWaiters = 2
		h.mustQueue(int64(2+i), c, i+1)
	}
	c := acquireSlot("s", "d", 1, true)
	c.GetAcquire().MaxWaiters = 2
	if r := h.apply(4, c); r.Err == nil || r.Queued {
		t.Fatalf("third waiter past a limit of 2: %+v", r)
	}
	if r := h.apply(5, acquireSlot("s", "e", MaxSlots+1, true)); r.Err == nil {
		t.Fatalf("%d slots accepted", MaxSlots+1)
	}
}

// TestSemaphoreQueueSnapshot: a snapshot with a semaphore queue has format
// 3 and restores the queue in order; an older binary (format 2) refuses
// it. Without a queue the format is as before.
func TestSemaphoreQueueSnapshot(t *testing.T) {
	h := newHarness(t)
	a := h.mustSlot(1, acquireSlot("s", "a", 1, true))
	h.mustQueue(2, acquireSlot("s", "b", 1, true), 1)
	h.mustQueue(3, acquireSlot("s", "c", 1, true), 2)
	snap := snapshotBytes(t, h.f)
	st, err := ReadSnapshot(bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := st.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), snap) {
		t.Fatal("a snapshot read and written again differs")
	}
	// A waiter that joins after the snapshot is not in it.
	h.mustQueue(4, acquireSlot("s", "late", 1, true), 3)

	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if pos, _, _ := g.SemaphoreWait("default", "s", "c", 1); pos != 2 {
		t.Fatalf("c at %d after restore, want 2", pos)
	}
	if pos, _, _ := g.SemaphoreWait("default", "s", "late", 1); pos != 0 {
		t.Fatalf("late at %d in a snapshot taken before it queued", pos)
	}
	h2 := &harness{t: t, f: g, index: 10}
	h2.apply(11, release("default", "s-0", "a", a.Token))
	if got := h2.holderOf("s-0"); got != "b" {
		t.Fatalf("restored queue handed s-0 to %q, want b", got)
	}

	var hd fsmpb.SnapshotHeader
	readHeader(t, snap, &hd)
	if hd.Format != SnapshotFormat || SnapshotFormat != 3 {
		t.Fatalf("format %d with a queue, want 3", hd.Format)
	}
	h3 := newHarness(t)
	h3.mustSlot(1, acquireSlot("s", "a", 1, true))
	readHeader(t, snapshotBytes(t, h3.f), &hd)
	if hd.Format != snapshotFormatPlain {
		t.Fatalf("format %d without a queue, want %d", hd.Format, snapshotFormatPlain)
	}
}

// TestFitSemaphore: semaphore commands need version 4 and keep their
// fields at any version (Check refuses them below it).
func TestFitSemaphore(t *testing.T) {
	for _, c := range []*fsmpb.Command{acquireSlot("s", "a", 2, true), leaveSem("s", "a")} {
		Fit(c, 3)
		if c.RequiredVersion != 4 || (c.GetAcquire() != nil && c.GetAcquire().Slots != 2) {
			t.Fatalf("fitted to 3: %v", c)
		}
		if err := Check(c, 3); err == nil {
			t.Fatalf("Check allowed %v at version 3", c)
		}
		if err := Check(c, 4); err != nil {
			t.Fatal(err)
		}
	}
	if c := Fit(acquire("default", "s", "a", time.Second), 3); c.RequiredVersion > 3 {
		t.Fatalf("a plain acquire needs %d", c.RequiredVersion)
	}
}

func TestSlotIndex(t *testing.T) {
	for _, c := range []struct {
		sem, lease string
		want       int
	}{{"s", "s-0", 0}, {"s", "s-12", 12}, {"s", "s-012", -1}, {"s", "s-", -1}, {"s", "s-x", -1}, {"s", "t-0", -1}, {"s-1", "s-1-2", 2}, {"s", "s-1-2", -1}, {"s", "s-256", -1}} {
		if got := slotIndex(c.sem, c.lease); got != c.want {
			t.Errorf("slotIndex(%q, %q) = %d, want %d", c.sem, c.lease, got, c.want)
		}
	}
}

// readHeader decodes the header of a snapshot.
func readHeader(t *testing.T, snap []byte, hd *fsmpb.SnapshotHeader) {
	t.Helper()
	if err := protodelim.UnmarshalFrom(bufio.NewReader(bytes.NewReader(snap[len(snapshotMagic):])), hd); err != nil {
		t.Fatal(err)
	}
}
