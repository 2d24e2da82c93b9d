package fsm

import (
	"bytes"
	"io"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// checkTable verifies the table's counts, queued set and shared label sets
// against its contents.
func checkTable(t testing.TB, tb *table) {
	t.Helper()
	count, held := 0, 0
	queued := make(map[leaseKey]struct{})
	refs := make(map[*labelSet]int)
	for ns, sp := range tb.spaces {
		if len(sp.leases) == 0 {
			t.Errorf("namespace %q kept without leases", ns)
		}
		if sp.name != ns {
			t.Errorf("namespace %q filed under %q", sp.name, ns)
		}
		for name, l := range sp.leases {
			count++
			if l.Name != name || l.Namespace != ns {
				t.Errorf("lease %s filed under %s/%s", l.Key(), ns, name)
			}
			if unsafe.StringData(l.Namespace) != unsafe.StringData(sp.name) {
				t.Errorf("lease %s has its own copy of the namespace", l.Key())
			}
			if l.Holder != "" {
				held++
			}
			if len(l.Waiters) > 0 {
				queued[leaseKey{ns, name}] = struct{}{}
			}
			if l.Labels == nil {
				continue
			}
			if len(l.Labels) == 0 {
				t.Errorf("lease %s has empty labels that are not nil", l.Key())
				continue
			}
			var set *labelSet
			for e := tb.labels[labelsHash(l.Labels)]; e != nil; e = e.next {
				if sameMap(e.labels, l.Labels) {
					set = e
				}
			}
			if set == nil {
				t.Errorf("lease %s: labels %v not one of the shared sets", l.Key(), l.Labels)
			}
			refs[set]++
		}
	}
	if count != tb.count || held != tb.held {
		t.Errorf("counts: %d leases, %d held; table says %d and %d", count, held, tb.count, tb.held)
	}
	if !maps.Equal(queued, tb.queued) {
		t.Errorf("queued set %v, want %v", tb.queued, queued)
	}
	for k, q := range tb.sems {
		if len(q) == 0 {
			t.Errorf("semaphore %v kept with an empty queue", k)
		}
		seen := map[string]bool{}
		for _, w := range q {
			if w.Slots < 1 || w.Slots > MaxSlots || w.Holder == "" || seen[w.Holder] {
				t.Errorf("semaphore %v: waiter %q of %d slots (twice: %v)", k, w.Holder, w.Slots, seen[w.Holder])
			}
			seen[w.Holder] = true
			for i := 0; i < w.Slots; i++ {
				if l := tb.get(k.namespace, SlotName(k.name, i)); l != nil && l.Holder == w.Holder {
					t.Errorf("semaphore %v: %q waits while it holds %s", k, w.Holder, l.Name)
				}
			}
		}
	}
	for h, e := range tb.labels {
		for ; e != nil; e = e.next {
			if labelsHash(e.labels) != h {
				t.Errorf("label set %v filed under the wrong hash", e.labels)
			}
			if e.refs != refs[e] {
				t.Errorf("label set %v: %d references counted, %d in use", e.labels, e.refs, refs[e])
			}
			delete(refs, e)
		}
	}
	for e := range refs {
		if e != nil {
			t.Errorf("label set %v in use but not kept", e.labels)
		}
	}
}

// sameMap reports whether a and b are one map.
func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func TestLabelSetsChainCollidingHashes(t *testing.T) {
	s := make(labelSets)
	x, y, z := map[string]string{"a": "1"}, map[string]string{"b": "2"}, map[string]string{"c": "3"}
	const h = 42 // as if all three hashed alike
	for _, m := range []map[string]string{x, y, z} {
		if got := s.shareHashed(h, maps.Clone(m)); !maps.Equal(got, m) {
			t.Fatalf("share %v returned %v", m, got)
		}
	}
	y2 := s.shareHashed(h, maps.Clone(y))
	if !sameMap(y2, s.shareHashed(h, maps.Clone(y))) {
		t.Fatal("equal sets in one chain are not shared")
	}
	chain := func() (n int) {
		for e := s[h]; e != nil; e = e.next {
			n += e.refs
		}
		return n
	}
	if len(s) != 1 || chain() != 5 {
		t.Fatalf("%d hashes, %d references; want 1 and 5", len(s), chain())
	}
	// Dropping from the middle, the head and the tail of the chain.
	for _, m := range []map[string]string{y, y, y, z, x} {
		s.dropHashed(h, m)
	}
	if len(s) != 0 {
		t.Fatalf("%d hashes left after dropping every reference", len(s))
	}
	s.dropHashed(h, x) // dropping what is not there does nothing
}

func acquireLabels(ns, name, holder string, labels map[string]string) *fsmpb.Command {
	c := acquire(ns, name, holder, time.Second)
	c.GetAcquire().Labels = labels
	return c
}

func TestEqualLabelsShareOneMap(t *testing.T) {
	h := newHarness(t)
	a := h.apply(1, acquireLabels("default", "a", "h", map[string]string{"app": "db", "tier": "1"})).Lease
	b := h.apply(1, acquireLabels("other", "b", "h", map[string]string{"tier": "1", "app": "db"})).Lease
	c := h.apply(1, acquireLabels("default", "c", "h", map[string]string{"app": "db"})).Lease
	checkTable(t, h.f.leases)
	if !sameMap(a.Labels, b.Labels) {
		t.Error("equal labels of two leases are two maps")
	}
	if !maps.Equal(c.Labels, map[string]string{"app": "db"}) {
		t.Errorf("labels of c: %v", c.Labels)
	}
	if len(h.f.leases.labels) != 2 {
		t.Errorf("%d label sets, want 2", len(h.f.leases.labels))
	}

	// A whole-object write changes b's labels; a keeps its own, and the
	// stored version of b that a reader kept does not change.
	w := write("other", "b", false, 0, "h")
	w.GetWrite().Labels = map[string]string{"app": "web"}
	b2 := h.apply(2, w).Lease
	checkTable(t, h.f.leases)
	if !maps.Equal(b2.Labels, map[string]string{"app": "web"}) ||
		!maps.Equal(b.Labels, map[string]string{"app": "db", "tier": "1"}) ||
		!maps.Equal(a.Labels, map[string]string{"app": "db", "tier": "1"}) {
		t.Errorf("labels after a write: a %v, b before %v, b after %v", a.Labels, b.Labels, b2.Labels)
	}

	// A renewal keeps the shared map; a waiter's labels come with its
	// holding.
	h.apply(3, renew("default", "a", "h", a.Token))
	q := acquireLabels("default", "c", "w", map[string]string{"app": "web"})
	q.GetAcquire().Wait = true
	h.apply(4, q)
	c2 := h.apply(5, release("default", "c", "h", c.Token)).Lease
	checkTable(t, h.f.leases)
	now, _ := h.f.Get("default", "c")
	if c2.Holder != "" || now.Holder != "w" || !maps.Equal(now.Labels, map[string]string{"app": "web"}) {
		t.Errorf("after the hand-off: %+v", now)
	}
	if !sameMap(now.Labels, b2.Labels) {
		t.Error("the waiter's labels are not shared with an equal set")
	}

	// Deleting every lease leaves nothing behind.
	for _, k := range [][2]string{{"default", "a"}, {"other", "b"}, {"default", "c"}} {
		if r := h.apply(6, del(k[0], k[1], 0)); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	checkTable(t, h.f.leases)
	if len(h.f.leases.spaces) != 0 || len(h.f.leases.labels) != 0 {
		t.Errorf("empty table keeps %d namespaces and %d label sets", len(h.f.leases.spaces), len(h.f.leases.labels))
	}
}

// TestTableStaysConsistent applies a long random mix of commands over a few
// namespaces, names, holders and label sets, and checks the table after
// every one, and after a snapshot and restore.
func TestTableStaysConsistent(t *testing.T) {
	namespaces := []string{"default", "team-a", "team-b"}
	names := []string{"x", "y", "z", "w"}
	holders := []string{"h1", "h2", "h3"}
	labelSets := []map[string]string{nil, {}, {"app": "db"}, {"app": "db", "tier": "1"}, {"app": "web"}}
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	labels := func() map[string]string { return maps.Clone(labelSets[rng.IntN(len(labelSets))]) }

	h := newHarness(t)
	steps := 3000
	if testing.Short() {
		steps = 500
	}
	for i := range steps {
		ns, name, holder := pick(namespaces), pick(names), pick(holders)
		cur, _ := h.f.Get(ns, name)
		var c *fsmpb.Command
		switch op := rng.IntN(9); {
		case op == 0:
			c = acquireLabels(ns, name, holder, labels())
		case op == 1:
			c = acquireLabels(ns, name, holder, labels())
			c.GetAcquire().Wait = true
		case op == 2 && cur != nil:
			c = renew(ns, name, cur.Holder, cur.Token)
		case op == 3 && cur != nil:
			c = release(ns, name, cur.Holder, cur.Token)
		case op == 4 && cur != nil:
			c = expire(ns, name, cur.Token, cur.RenewIndex)
		case op == 5:
			c = del(ns, name, 0)
		case op == 6:
			c = write(ns, name, cur == nil, 0, pick(append(holders, "")))
			c.GetWrite().Labels = labels()
		case op == 7:
			c = &fsmpb.Command{Op: &fsmpb.Command_Dequeue{Dequeue: &fsmpb.Dequeue{Namespace: ns, Name: name, Holder: holder}}}
		default:
			c = &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{
				acquireLabels(ns, name, holder, labels()),
				acquireLabels(pick(namespaces), pick(names), pick(holders), labels()),
			}}}}
		}
		h.apply(int64(i+1), c)
		checkTable(t, h.f.leases)
		if t.Failed() {
			t.Fatalf("after step %d (%v)", i, c)
		}
	}

	data := snapshotBytes(t, h.f)
	h2 := newHarness(t)
	if err := h2.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	checkTable(t, h2.f.leases)
	if got, want := h2.f.Stats(), h.f.Stats(); got.Leases != want.Leases || got.Held != want.Held {
		t.Errorf("restored stats %+v, want %+v", got, want)
	}
	if len(h2.f.Waiters()) != len(h.f.Waiters()) {
		t.Errorf("restored %d waiters, want %d", len(h2.f.Waiters()), len(h.f.Waiters()))
	}
	if again := snapshotBytes(t, h2.f); !bytes.Equal(again, data) {
		t.Error("the restored table encodes differently")
	}
}
