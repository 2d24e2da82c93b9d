package fsm

import (
	"hash/maphash"
	"iter"
	"maps"
)

// table is the lease table and its counts. It is built for a million live
// leases, so it keeps per-lease memory down:
//
//   - leases are found by namespace, then by name, so every map key is a
//     string the lease already holds and no "namespace/name" key is kept
//     per lease;
//   - every lease of a namespace shares one copy of the namespace string;
//   - leases with equal labels share one labels map (see labelSets).
//
// A table is not safe for concurrent writes: the FSM guards it.
type table struct {
	spaces map[string]*space
	count  int
	held   int                   // leases with a holder
	queued map[leaseKey]struct{} // leases with waiters
	labels labelSets
	// sems holds the queue of every semaphore with waiters, by namespace
	// and semaphore name (semaphore.go).
	sems map[leaseKey][]Waiter
}

// space is the leases of one namespace, by name.
type space struct {
	name   string // the namespace; its leases share this string
	leases map[string]*Lease
}

type leaseKey struct{ namespace, name string }

func newTable() *table {
	return &table{
		spaces: make(map[string]*space),
		queued: make(map[leaseKey]struct{}),
		labels: make(labelSets),
		sems:   make(map[leaseKey][]Waiter),
	}
}

// get returns the lease namespace/name, or nil.
func (t *table) get(namespace, name string) *Lease {
	if sp := t.spaces[namespace]; sp != nil {
		return sp.leases[name]
	}
	return nil
}

// put stores l, which no reader has seen yet, in place of the lease of the
// same namespace and name, and returns that old lease (nil if none). It
// may replace l's namespace string and labels map with equal ones that
// other leases share.
func (t *table) put(l *Lease) (old *Lease) {
	sp := t.spaces[l.Namespace]
	if sp == nil {
		sp = &space{name: l.Namespace, leases: make(map[string]*Lease)}
		t.spaces[sp.name] = sp
	}
	l.Namespace = sp.name
	old = sp.leases[l.Name]
	switch {
	case old == nil:
		t.count++
		l.Labels = t.labels.share(l.Labels)
	case maps.Equal(old.Labels, l.Labels):
		// The common case (a renewal): keep the shared map.
		l.Labels = old.Labels
	default:
		t.labels.drop(old.Labels)
		l.Labels = t.labels.share(l.Labels)
	}
	sp.leases[l.Name] = l
	t.counted(old, -1)
	t.counted(l, +1)
	return old
}

// remove deletes the lease namespace/name and returns it (nil if none).
func (t *table) remove(namespace, name string) *Lease {
	sp := t.spaces[namespace]
	if sp == nil {
		return nil
	}
	old := sp.leases[name]
	if old == nil {
		return nil
	}
	delete(sp.leases, name)
	if len(sp.leases) == 0 {
		delete(t.spaces, namespace)
	}
	t.count--
	t.labels.drop(old.Labels)
	t.counted(old, -1)
	return old
}

// counted adds (d = +1) or takes away (d = -1) l in the held count and the
// queued set.
func (t *table) counted(l *Lease, d int) {
	if l == nil {
		return
	}
	if l.Holder != "" {
		t.held += d
	}
	if len(l.Waiters) > 0 {
		k := leaseKey{l.Namespace, l.Name}
		if d > 0 {
			t.queued[k] = struct{}{}
		} else {
			delete(t.queued, k)
		}
	}
}

// all yields every lease, in no particular order.
func (t *table) all() iter.Seq[*Lease] {
	return func(yield func(*Lease) bool) {
		for _, sp := range t.spaces {
			for _, l := range sp.leases {
				if !yield(l) {
					return
				}
			}
		}
	}
}

// labelSets holds one map for each distinct set of labels in the table,
// with the number of leases that use it, so leases with equal labels share
// one map: a small Go map costs some 300 bytes, more than the rest of a
// lease. Stored leases never change, so neither does a shared map. Sets
// are found by a hash of their contents; sets whose hashes collide are
// chained.
type labelSets map[uint64]*labelSet

type labelSet struct {
	labels map[string]string
	refs   int
	next   *labelSet // another set with the same hash
}

// share returns the map of the set equal to m, m itself when the set is
// new, and counts one more lease using it. Empty labels are nil.
func (s labelSets) share(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return s.shareHashed(labelsHash(m), m)
}

// drop counts one lease fewer using the set equal to m.
func (s labelSets) drop(m map[string]string) {
	if len(m) > 0 {
		s.dropHashed(labelsHash(m), m)
	}
}

func (s labelSets) shareHashed(h uint64, m map[string]string) map[string]string {
	for e := s[h]; e != nil; e = e.next {
		if maps.Equal(e.labels, m) {
			e.refs++
			return e.labels
		}
	}
	s[h] = &labelSet{labels: m, refs: 1, next: s[h]}
	return m
}

func (s labelSets) dropHashed(h uint64, m map[string]string) {
	var prev *labelSet
	for e := s[h]; e != nil; prev, e = e, e.next {
		if !maps.Equal(e.labels, m) {
			continue
		}
		if e.refs--; e.refs > 0 {
			return
		}
		switch {
		case prev != nil:
			prev.next = e.next
		case e.next != nil:
			s[h] = e.next
		default:
			delete(s, h)
		}
		return
	}
}

var labelSeed = maphash.MakeSeed()

// labelsHash hashes m whatever the order of its keys.
func labelsHash(m map[string]string) uint64 {
	var sum uint64
	for k, v := range m {
		sum += maphash.Comparable(labelSeed, [2]string{k, v})
	}
	return sum
}
