package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// harness applies commands at rising Raft indices and records events.
type harness struct {
	t      *testing.T
	f      *FSM
	index  uint64
	term   uint64 // the Raft term of the entries apply makes
	events []Event
	resets int
}

func (h *harness) Applied(evs []Event) { h.events = append(h.events, evs...) }
func (h *harness) Restored()           { h.resets++ }

func newHarness(t *testing.T) *harness {
	h := &harness{t: t}
	h.f = New(h)
	return h
}

func (h *harness) apply(now int64, c *fsmpb.Command) *Result {
	h.t.Helper()
	c.NowUnixNano = now
	data, err := proto.Marshal(c)
	if err != nil {
		h.t.Fatal(err)
	}
	h.index++
	r, ok := h.f.Apply(&raft.Log{Index: h.index, Term: h.term, Type: raft.LogCommand, Data: data}).(*Result)
	if !ok {
		h.t.Fatalf("Apply returned %T, want *Result", r)
	}
	return r
}

func acquire(ns, name, holder string, d time.Duration) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
		Namespace: ns, Name: name, Holder: holder, DurationNs: int64(d), GraceNs: int64(time.Second),
	}}}
}

func renew(ns, name, holder string, token uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: []*fsmpb.Renew{
		{Namespace: ns, Name: name, Holder: holder, Token: token},
	}}}}
}

func release(ns, name, holder string, token uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Release{Release: &fsmpb.Release{
		Namespace: ns, Name: name, Holder: holder, Token: token,
	}}}
}

func expire(ns, name string, token, renewIndex uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Expire{Expire: &fsmpb.Expire{Entries: []*fsmpb.ExpireEntry{
		{Namespace: ns, Name: name, Token: token, RenewIndex: renewIndex},
	}}}}
}

func del(ns, name string, rv uint64) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Delete{Delete: &fsmpb.Delete{Namespace: ns, Name: name, ResourceVersion: rv}}}
}

func TestAcquireRenewReleaseExpire(t *testing.T) {
	h := newHarness(t)
	r := h.apply(100, acquire("default", "db", "a", 10*time.Second))
	if r.Err != nil || !r.Acquired || r.Renewed {
		t.Fatalf("first acquire: got %+v, want acquired", r)
	}
	t1 := r.Lease.Token
	if t1 == 0 || r.Lease.Transitions != 1 || r.Lease.Holder != "a" || r.Lease.AcquireTime != 100 {
		t.Fatalf("first holding: got %+v", r.Lease)
	}

	r = h.apply(110, acquire("default", "db", "b", 10*time.Second))
	if r.Err != nil || r.Acquired || r.Lease.Holder != "a" {
		t.Fatalf("acquire by b while a holds: got acquired=%v holder=%q err=%v, want refused with holder a", r.Acquired, r.Lease.Holder, r.Err)
	}

	r = h.apply(120, acquire("default", "db", "a", 10*time.Second))
	if !r.Acquired || !r.Renewed || r.Lease.Token != t1 || r.Lease.Transitions != 1 || r.Lease.RenewTime != 120 {
		t.Fatalf("re-acquire by holder: got %+v, want a renewal with token %d", r, t1)
	}

	r = h.apply(130, release("default", "db", "a", t1))
	if r.Err != nil || r.Lease.Holder != "" || r.Lease.History[0].EndReason != EndReleased {
		t.Fatalf("release: got %+v", r)
	}
	// A retried release of the same holding succeeds and writes nothing.
	rev := h.f.Revision()
	if r = h.apply(131, release("default", "db", "a", t1)); r.Err != nil || h.f.Revision() != rev {
		t.Fatalf("repeated release: err=%v revision %d->%d, want no error and no write", r.Err, rev, h.f.Revision())
	}

	r = h.apply(140, acquire("default", "db", "b", 5*time.Second))
	if !r.Acquired || r.Lease.Token <= t1 || r.Lease.Transitions != 2 {
		t.Fatalf("acquire by b after release: got token %d transitions %d, want token > %d and 2", r.Lease.Token, r.Lease.Transitions, t1)
	}
	t2, renewIndex := r.Lease.Token, r.Lease.RenewIndex

	// An expire decided before a renewal must not end the renewed holding.
	r = h.apply(150, renew("default", "db", "b", t2))
	if r.Err != nil {
		t.Fatalf("renew: %v", r.Err)
	}
	if r = h.apply(160, expire("default", "db", t2, renewIndex)); r.Expired != 0 {
		t.Fatalf("stale expire: expired %d, want 0", r.Expired)
	}
	l, _ := h.f.Get("default", "db")
	if l.Holder != "b" {
		t.Fatalf("after stale expire: holder %q, want b", l.Holder)
	}
	if r = h.apply(170, expire("default", "db", t2, l.RenewIndex)); r.Expired != 1 {
		t.Fatalf("expire of the current renewal: expired %d, want 1", r.Expired)
	}
	l, _ = h.f.Get("default", "db")
	if l.Holder != "" || l.History[0].EndReason != EndExpired || l.History[0].End != 170 {
		t.Fatalf("after expire: %+v", l)
	}

	// Renew and release of the expired holding fail with ErrNotHolder.
	if r = h.apply(180, renew("default", "db", "b", t2)); !errors.Is(r.Err, ErrNotHolder) {
		t.Fatalf("renew after expiry: err %v, want ErrNotHolder", r.Err)
	}
	if r = h.apply(180, release("default", "db", "b", t2)); !errors.Is(r.Err, ErrNotHolder) {
		t.Fatalf("release after expiry: err %v, want ErrNotHolder", r.Err)
	}

	wantTypes := []EventType{EventAdded, EventRenewed, EventReleased, EventAcquired, EventRenewed, EventExpired}
	if len(h.events) != len(wantTypes) {
		t.Fatalf("events: got %d, want %d", len(h.events), len(wantTypes))
	}
	for i, ev := range h.events {
		if ev.Type != wantTypes[i] {
			t.Errorf("event %d: got %v, want %v", i, ev.Type, wantTypes[i])
		}
		if i > 0 && ev.Revision <= h.events[i-1].Revision {
			t.Errorf("event %d: revision %d not above %d", i, ev.Revision, h.events[i-1].Revision)
		}
		// Each event names the state it replaced: none for the first, the
		// previous event's lease after that.
		switch {
		case i == 0 && ev.Prev != nil:
			t.Errorf("event 0 (ADDED): Prev %+v, want nil", ev.Prev)
		case i > 0 && ev.Prev != h.events[i-1].Lease:
			t.Errorf("event %d: Prev is not the lease of event %d", i, i-1)
		}
	}
	h.events = nil
	rv := h.f.Revision()
	old, _ := h.f.Get("default", "db")
	if r := h.apply(190, del("default", "db", rv)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if len(h.events) != 1 || h.events[0].Prev != old {
		t.Fatalf("DELETED event: %+v, want one with Prev the deleted lease", h.events)
	}
}

func TestRenewAndReleaseErrors(t *testing.T) {
	h := newHarness(t)
	tok := h.apply(1, acquire("ns", "x", "a", time.Second)).Lease.Token
	tests := []struct {
		name string
		cmd  *fsmpb.Command
		want error
	}{
		{"renew unknown lease", renew("ns", "nope", "a", tok), ErrNotFound},
		{"renew other namespace", renew("other", "x", "a", tok), ErrNotFound},
		{"renew wrong holder", renew("ns", "x", "b", tok), ErrNotHolder},
		{"renew wrong token", renew("ns", "x", "a", tok+1), ErrNotHolder},
		{"release wrong token", release("ns", "x", "a", tok-1), ErrNotHolder},
		{"release wrong holder", release("ns", "x", "b", tok), ErrNotHolder},
		{"release unknown", release("ns", "nope", "a", tok), ErrNotFound},
		{"delete unknown", del("ns", "nope", 0), ErrNotFound},
		{"delete stale version", del("ns", "x", 999), ErrConflict},
		{"renew good", renew("ns", "x", "a", tok), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := h.apply(2, tc.cmd).Err; !errors.Is(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokensNeverRepeatAcrossDelete(t *testing.T) {
	h := newHarness(t)
	seen := map[uint64]bool{}
	var last uint64
	for i := 0; i < 20; i++ {
		r := h.apply(int64(i), acquire("default", "lock", "a", time.Second))
		if !r.Acquired || r.Lease.Token <= last || seen[r.Lease.Token] {
			t.Fatalf("round %d: token %d after %d (acquired=%v)", i, r.Lease.Token, last, r.Acquired)
		}
		last = r.Lease.Token
		seen[last] = true
		if r.Lease.Transitions != 1 {
			t.Fatalf("round %d: re-created lease has %d transitions, want 1", i, r.Lease.Transitions)
		}
		if r := h.apply(int64(i), del("default", "lock", 0)); r.Err != nil {
			t.Fatalf("round %d: delete: %v", i, r.Err)
		}
	}
}

func TestRenewBatchResults(t *testing.T) {
	h := newHarness(t)
	ta := h.apply(1, acquire("default", "a", "h", time.Second)).Lease.Token
	tb := h.apply(1, acquire("default", "b", "h", time.Second)).Lease.Token
	c := &fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: &fsmpb.RenewBatch{Renews: []*fsmpb.Renew{
		{Namespace: "default", Name: "a", Holder: "h", Token: ta},
		{Namespace: "default", Name: "b", Holder: "h", Token: tb + 100},
		{Namespace: "default", Name: "c", Holder: "h", Token: 1},
	}}}}
	r := h.apply(5, c)
	want := []error{nil, ErrNotHolder, ErrNotFound}
	if len(r.Renews) != len(want) {
		t.Fatalf("got %d results, want %d", len(r.Renews), len(want))
	}
	for i, w := range want {
		if !errors.Is(r.Renews[i].Err, w) {
			t.Errorf("renew %d: got %v, want %v", i, r.Renews[i].Err, w)
		}
	}
	if l, _ := h.f.Get("default", "a"); l.RenewTime != 5 || l.RenewIndex != h.index {
		t.Errorf("renewed lease: renewTime %d renewIndex %d, want 5 and %d", l.RenewTime, l.RenewIndex, h.index)
	}
}

func TestBadCommandsAreRejected(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", []byte{0xff, 0xff, 0xff}},
		{"empty command", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.index++
			r := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: tc.data}).(*Result)
			if !errors.Is(r.Err, ErrBadCommand) {
				t.Errorf("got %v, want ErrBadCommand", r.Err)
			}
		})
	}
	if r := h.apply(1, acquire("default", "", "a", time.Second)); !errors.Is(r.Err, ErrBadCommand) {
		t.Errorf("acquire without a name: got %v, want ErrBadCommand", r.Err)
	}
	if s := h.f.Stats(); s.Leases != 0 || s.Revision != 0 {
		t.Errorf("state changed by bad commands: %+v", s)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < HistoryLimit+5; i++ {
		r := h.apply(int64(i), acquire("default", "x", "a", time.Second))
		h.apply(int64(i), release("default", "x", "a", r.Lease.Token))
	}
	l, _ := h.f.Get("default", "x")
	if len(l.History) != HistoryLimit {
		t.Fatalf("history: got %d entries, want %d", len(l.History), HistoryLimit)
	}
	if l.History[0].Token != l.Token || l.History[0].EndReason != EndReleased {
		t.Errorf("newest history entry: got %+v, want token %d released", l.History[0], l.Token)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	for _, n := range []string{"c", "a", "b"} {
		h.apply(1, acquire("ns1", n, "holder-"+n, time.Duration(len(n))*time.Second))
	}
	tok := h.apply(2, acquire("ns2", "x", "h", time.Second)).Lease.Token
	h.apply(3, release("ns2", "x", "h", tok))
	h.apply(4, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{Id: "n1", GrpcAddr: "127.0.0.1:7001"}}})
	h.apply(5, del("ns1", "b", 0))
	data := snapshotBytes(t, h.f)

	h2 := newHarness(t)
	if err := h2.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if h2.resets != 1 {
		t.Errorf("listener saw %d restores, want 1", h2.resets)
	}
	if got, want := h2.f.Stats(), h.f.Stats(); got.Leases != want.Leases || got.Held != want.Held ||
		got.Revision != want.Revision || got.LastToken != want.LastToken {
		t.Errorf("restored stats: got %+v, want %+v", got, want)
	}
	if a, _ := h2.f.MemberAddr("n1"); a != "127.0.0.1:7001" {
		t.Errorf("restored member: got %q", a)
	}
	// Equal states encode to equal bytes.
	if again := snapshotBytes(t, h2.f); !bytes.Equal(again, data) {
		t.Errorf("re-encoded snapshot differs (%d vs %d bytes)", len(again), len(data))
	}
	// The token counter survives: a new holding in the restored FSM gets a
	// token above every one issued before.
	h2.index = h.index
	r := h2.apply(9, acquire("ns9", "new", "z", time.Second))
	if r.Lease.Token <= h.f.Stats().LastToken {
		t.Errorf("token after restore: %d, want > %d", r.Lease.Token, h.f.Stats().LastToken)
	}
}

// Raft does not tell Restore the index it restores at, so the snapshot
// carries it: after a restart or a snapshot install, AppliedIndex is the
// snapshot's at once, not what the FSM had before.
func TestRestoreSetsTheAppliedIndex(t *testing.T) {
	src := newHarness(t)
	for i := range 5 {
		src.apply(int64(i), acquire("default", fmt.Sprintf("l%d", i), "h", time.Second))
	}
	data := snapshotBytes(t, src.f)
	want := src.f.AppliedIndex()
	tests := []struct {
		name    string
		applied int // entries the restoring FSM applied before
	}{
		{"restart: an empty FSM", 0},
		{"install: a follower behind the snapshot", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for i := range tc.applied {
				h.apply(int64(i), acquire("other", fmt.Sprintf("o%d", i), "h", time.Second))
			}
			if err := h.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if got := h.f.AppliedIndex(); got != want {
				t.Errorf("AppliedIndex after restore: got %d, want %d", got, want)
			}
			if got := h.f.Stats().AppliedIndex; got != want {
				t.Errorf("Stats().AppliedIndex after restore: got %d, want %d", got, want)
			}
		})
	}
}

// A backup prepared for a restore issues its next token past the gap, or
// past the operator's floor when that is higher, in the FSM that
// restores it.
func TestRaiseTokenCounter(t *testing.T) {
	tests := []struct {
		name           string
		counter, floor uint64
		want           uint64
		wantErr        error
	}{
		{"no floor: the gap", 7, 0, 7 + RestoreTokenGap, nil},
		{"floor under the gap", 7, 1000, 7 + RestoreTokenGap, nil},
		{"floor over the gap", 7, RestoreTokenGap << 4, RestoreTokenGap << 4, nil},
		{"floor at the limit", 7, maxRestoredCounter, maxRestoredCounter, nil},
		{"floor past the limit", 7, maxRestoredCounter + 1, 0, ErrTokenFloor},
		{"counter past the limit", maxRestoredCounter + 1, 0, 0, ErrTokenFloor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &State{leases: newTable(), members: map[string]string{}, lastToken: tc.counter}
			got, err := st.RaiseTokenCounter(tc.floor)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error: got %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if st.LastToken() != tc.counter {
					t.Errorf("counter after a refused raise: got %d, want %d unchanged", st.LastToken(), tc.counter)
				}
				return
			}
			if got != tc.want || st.LastToken() != tc.want {
				t.Fatalf("counter: got %d (state %d), want %d", got, st.LastToken(), tc.want)
			}
			var b bytes.Buffer
			if _, err := st.WriteTo(&b); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t)
			if err := h.f.Restore(io.NopCloser(&b)); err != nil {
				t.Fatalf("restore: %v", err)
			}
			if tok := h.apply(1, acquire("default", "x", "a", time.Second)).Lease.Token; tok != tc.want+1 {
				t.Errorf("first token after the restore: got %d, want %d", tok, tc.want+1)
			}
		})
	}
}

// TestSubdomainNames: lease names may hold dots and run to 253 characters
// (DNS-1123 subdomains, as Kubernetes allows); they sort, carry labels,
// expire and survive a snapshot like any other.
func TestSubdomainNames(t *testing.T) {
	h := newHarness(t)
	long := strings.Repeat("a", 61) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63)
	names := []string{"80807133.tutorial.kubebuilder.io", "a", "a-b", "a.b", long}
	for _, n := range names {
		c := acquire("default", n, "h", time.Second)
		c.GetAcquire().Labels = map[string]string{"example.com/app": "x"}
		h.apply(1, c)
	}
	data := snapshotBytes(t, h.f)
	h2 := newHarness(t)
	if err := h2.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	h2.index = h.index
	got, _ := h2.f.List(nil)
	sorted := slices.Sorted(slices.Values(names))
	if len(got) != len(sorted) {
		t.Fatalf("restored %d leases, want %d", len(got), len(sorted))
	}
	for i, l := range got {
		if l.Name != sorted[i] || l.Labels["example.com/app"] != "x" || l.Holder != "h" {
			t.Fatalf("restored lease %d: %s %v %q, want %s with its label and holder", i, l.Name, l.Labels, l.Holder, sorted[i])
		}
	}
	l, _ := h2.f.Get("default", long)
	if r := h2.apply(5, expire("default", long, l.Token, l.RenewIndex)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if l, _ := h2.f.Get("default", long); l.Holder != "" {
		t.Fatalf("after expiry the holder is %q", l.Holder)
	}
}

func TestSnapshotBytesDoNotDependOnMapOrder(t *testing.T) {
	h := newHarness(t)
	c := acquire("default", "a", "h", time.Second)
	c.GetAcquire().Labels = map[string]string{"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
	h.apply(1, c)
	first := snapshotBytes(t, h.f)
	for range 20 {
		if !bytes.Equal(snapshotBytes(t, h.f), first) {
			t.Fatal("two snapshots of one state differ")
		}
	}
}

func TestRestoreRefusesCorruptSnapshots(t *testing.T) {
	h := newHarness(t)
	h.apply(1, acquire("default", "x", "a", time.Second))
	good := snapshotBytes(t, h.f)
	flip := append([]byte(nil), good...)
	flip[len(flip)/2] ^= 0x40
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("NOTASNAP"), good[8:]...)},
		{"truncated", good[:len(good)-6]},
		{"bit flip", flip},
		{"no checksum", good[:len(good)-4]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := New(nil)
			err := f.Restore(io.NopCloser(bytes.NewReader(tc.data)))
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("got %v, want ErrCorruptSnapshot", err)
			}
			if f.Stats().Leases != 0 {
				t.Errorf("state changed by a refused restore")
			}
		})
	}
}

func TestListFiltersAndSorts(t *testing.T) {
	h := newHarness(t)
	for _, k := range [][2]string{{"b", "2"}, {"a", "9"}, {"b", "1"}} {
		h.apply(1, acquire(k[0], k[1], "h", time.Second))
	}
	got, rev := h.f.List(func(l *Lease) bool { return l.Namespace == "b" })
	if len(got) != 2 || got[0].Name != "1" || got[1].Name != "2" {
		t.Fatalf("list of namespace b: got %d leases", len(got))
	}
	if rev != h.f.Revision() {
		t.Errorf("list revision %d, want %d", rev, h.f.Revision())
	}
}

func BenchmarkApplyRenew(b *testing.B) {
	f := New(nil)
	acq, _ := proto.Marshal(acquire("default", "x", "h", time.Second))
	r := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: acq}).(*Result)
	data, _ := proto.Marshal(renew("default", "x", "h", r.Lease.Token))
	log := &raft.Log{Type: raft.LogCommand, Data: data}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		log.Index = uint64(i + 2)
		f.Apply(log)
	}
}

func TestHeldCountFollowsChanges(t *testing.T) {
	h := newHarness(t)
	want := func(held, leases int) {
		t.Helper()
		if s := h.f.Stats(); s.Held != held || s.Leases != leases {
			t.Fatalf("stats: held %d leases %d, want %d and %d", s.Held, s.Leases, held, leases)
		}
	}
	a := h.apply(1, acquire("default", "a", "h", time.Second)).Lease
	b := h.apply(1, acquire("default", "b", "h", time.Second)).Lease
	want(2, 2)
	h.apply(2, acquire("default", "a", "h", time.Second)) // renewal
	want(2, 2)
	h.apply(3, release("default", "a", "h", a.Token))
	want(1, 2)
	h.apply(4, expire("default", "b", b.Token, b.RenewIndex))
	want(0, 2)
	h.apply(5, acquire("default", "b", "x", time.Second))
	want(1, 2)
	h.apply(6, del("default", "b", 0))
	want(0, 1)
}

func TestUnsafeReuseTokensReissuesTokens(t *testing.T) {
	h := &harness{t: t}
	h.f = NewWithOptions(h, Options{UnsafeReuseTokens: true})
	first := h.apply(1, acquire("default", "x", "a", time.Second)).Lease.Token
	h.apply(2, del("default", "x", 0))
	again := h.apply(3, acquire("default", "x", "b", time.Second)).Lease.Token
	if again != first {
		t.Fatalf("with the fault on, a re-created lease got token %d, want the reused %d", again, first)
	}
}

func benchFSM(b *testing.B, n int) *FSM {
	b.Helper()
	f := New(nil)
	for i := 0; i < n; i++ {
		data, _ := proto.Marshal(acquire("bench", fmt.Sprintf("lease-%07d", i), "holder", 10*time.Second))
		f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: data})
	}
	return f
}

func BenchmarkSnapshotEncode100k(b *testing.B) {
	f := benchFSM(b, 100000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var sink memSink
		s, _ := f.Snapshot()
		if err := s.Persist(&sink); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(sink.Len()))
	}
}

func BenchmarkSnapshotDecode100k(b *testing.B) {
	f := benchFSM(b, 100000)
	var sink memSink
	s, _ := f.Snapshot()
	if err := s.Persist(&sink); err != nil {
		b.Fatal(err)
	}
	data := sink.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := New(nil).Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkApplyRenewBatch5000(b *testing.B) {
	const n = 5000
	f := benchFSM(b, n)
	batch := &fsmpb.RenewBatch{}
	for i := 0; i < n; i++ {
		l, _ := f.Get("bench", fmt.Sprintf("lease-%07d", i))
		batch.Renews = append(batch.Renews, &fsmpb.Renew{Namespace: "bench", Name: l.Name, Holder: "holder", Token: l.Token})
	}
	data, _ := proto.Marshal(&fsmpb.Command{Op: &fsmpb.Command_Renew{Renew: batch}})
	log := &raft.Log{Type: raft.LogCommand, Data: data}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		log.Index = uint64(n + i + 1)
		r := f.Apply(log).(*Result)
		if r.Renews[n-1].Err != nil {
			b.Fatal(r.Renews[n-1].Err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "renewals/s")
}

func TestBatchAppliesInOrder(t *testing.T) {
	h := newHarness(t)
	tok := h.apply(1, acquire("default", "x", "a", time.Second)).Lease.Token
	b := &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{
		renew("default", "x", "a", tok),
		release("default", "x", "a", tok),
		renew("default", "x", "a", tok), // after the release: refused
		acquire("default", "x", "b", time.Second),
		{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{}}},
	}}}}
	for _, c := range b.GetBatch().Commands {
		c.NowUnixNano = 7
	}
	r := h.apply(0, b)
	want := []error{nil, nil, ErrNotHolder, nil, ErrBadCommand}
	if len(r.Batch) != len(want) {
		t.Fatalf("got %d results, want %d", len(r.Batch), len(want))
	}
	for i, w := range want {
		if !errors.Is(r.Batch[i].Err, w) {
			t.Errorf("command %d: got %v, want %v", i, r.Batch[i].Err, w)
		}
	}
	if l := r.Batch[3].Lease; !r.Batch[3].Acquired || l.Holder != "b" || l.Token <= tok || l.AcquireTime != 7 {
		t.Errorf("acquire in batch: %+v", r.Batch[3])
	}
}

func write(ns, name string, create bool, rv uint64, holder string) *fsmpb.Command {
	return &fsmpb.Command{Op: &fsmpb.Command_Write{Write: &fsmpb.Write{
		Namespace: ns, Name: name, Create: create, ResourceVersion: rv, Holder: holder,
		DurationNs: int64(15 * time.Second), Object: []byte(`{"spec":{}}`),
	}}}
}

func TestWholeObjectWrites(t *testing.T) {
	h := newHarness(t)
	r := h.apply(1, write("ns", "el", true, 0, ""))
	if r.Err != nil || r.Lease.Holder != "" || r.Lease.Token != 0 || string(r.Lease.Object) != `{"spec":{}}` {
		t.Fatalf("create without holder: %+v", r)
	}
	if r := h.apply(2, write("ns", "el", true, 0, "a")); !errors.Is(r.Err, ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", r.Err)
	}
	if r := h.apply(2, write("ns", "missing", false, 0, "a")); !errors.Is(r.Err, ErrNotFound) {
		t.Fatalf("update of a missing lease: %v, want ErrNotFound", r.Err)
	}
	rv := r.Lease.ResourceVersion
	a := h.apply(3, write("ns", "el", false, rv, "a"))
	if a.Err != nil || a.Lease.Holder != "a" || a.Lease.Token == 0 || a.Lease.Transitions != 1 {
		t.Fatalf("take by a: %+v", a)
	}
	if r := h.apply(4, write("ns", "el", false, rv, "b")); !errors.Is(r.Err, ErrConflict) {
		t.Fatalf("write with a stale version: %v, want ErrConflict", r.Err)
	}
	renewed := h.apply(5, write("ns", "el", false, a.Lease.ResourceVersion, "a"))
	if renewed.Lease.Token != a.Lease.Token || renewed.Lease.RenewTime != 5 {
		t.Fatalf("same holder: %+v, want a renewal", renewed.Lease)
	}
	b := h.apply(6, write("ns", "el", false, renewed.Lease.ResourceVersion, "b"))
	if b.Lease.Token <= a.Lease.Token || b.Lease.Transitions != 2 || b.Lease.History[1].EndReason != EndReplaced {
		t.Fatalf("take over by b: %+v", b.Lease)
	}
	free := h.apply(7, write("ns", "el", false, 0, ""))
	if free.Lease.Held() || free.Lease.History[0].EndReason != EndReleased {
		t.Fatalf("clear holder: %+v", free.Lease)
	}
	want := []EventType{EventAdded, EventAcquired, EventRenewed, EventAcquired, EventReleased}
	for i, ev := range h.events {
		if ev.Type != want[i] {
			t.Errorf("event %d: %v, want %v", i, ev.Type, want[i])
		}
	}
	if s := h.f.Stats(); s.Held != 0 || s.Leases != 1 {
		t.Errorf("stats %+v", s)
	}
}

func acquireWait(ns, name, holder string) *fsmpb.Command {
	c := acquire(ns, name, holder, 2*time.Second)
	c.GetAcquire().Wait = true
	return c
}

func TestWaitersAreServedFirstInFirstOut(t *testing.T) {
	h := newHarness(t)
	a := h.apply(1, acquire("default", "m", "a", time.Second)).Lease
	for i, w := range []string{"b", "c", "d"} {
		r := h.apply(2, acquireWait("default", "m", w))
		if r.Acquired || !r.Queued || r.Position != i+1 {
			t.Fatalf("queue %s: %+v, want queued at %d", w, r, i+1)
		}
	}
	if r := h.apply(3, acquireWait("default", "m", "c")); !r.Queued || r.Position != 2 || len(r.Lease.Waiters) != 3 {
		t.Fatalf("queueing again keeps the place: %+v", r)
	}
	if r := h.apply(3, acquire("default", "m", "z", time.Second)); r.Acquired || r.Queued {
		t.Fatalf("acquire without wait while held: %+v, want refused and not queued", r)
	}
	// c leaves the queue; a releases: b gets the lease in the same entry.
	h.apply(4, &fsmpb.Command{Op: &fsmpb.Command_Dequeue{Dequeue: &fsmpb.Dequeue{Namespace: "default", Name: "m", Holder: "c"}}})
	h.events = nil
	h.apply(5, release("default", "m", "a", a.Token))
	l, _ := h.f.Get("default", "m")
	if l.Holder != "b" || l.Token <= a.Token || l.Duration != 2*time.Second || len(l.Waiters) != 1 || l.Waiters[0].Holder != "d" {
		t.Fatalf("after release: holder %q token %d waiters %v", l.Holder, l.Token, l.Waiters)
	}
	if len(h.events) != 2 || h.events[0].Type != EventReleased || h.events[1].Type != EventAcquired {
		t.Fatalf("events of a hand-off: %v", h.events)
	}
	// b's holding expires: d is next.
	h.apply(6, expire("default", "m", l.Token, l.RenewIndex))
	l, _ = h.f.Get("default", "m")
	if l.Holder != "d" || len(l.Waiters) != 0 {
		t.Fatalf("after expiry: holder %q waiters %v", l.Holder, l.Waiters)
	}
	if s := h.f.Stats(); s.Held != 1 {
		t.Fatalf("held count %d", s.Held)
	}
	if ws := h.f.Waiters(); len(ws) != 0 {
		t.Fatalf("waiters left: %v", ws)
	}
	// The queue survives a snapshot.
	h.apply(7, acquireWait("default", "m", "e"))
	data := snapshotBytes(t, h.f)
	h2 := newHarness(t)
	if err := h2.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if ws := h2.f.Waiters(); len(ws) != 1 || ws[0].Holder != "e" {
		t.Fatalf("restored waiters: %v", ws)
	}
}

// TestExpireOnlyInItsTerm: an Expire counts only in a log entry of the
// term it names; one that reached the log in a later term is stale, alone
// or in a batch. An Expire without a term (older logs) is not checked.
func TestExpireOnlyInItsTerm(t *testing.T) {
	stamped := func(c *fsmpb.Command, term uint64) *fsmpb.Command {
		c.GetExpire().Term = term
		return c
	}
	for _, tc := range []struct {
		name       string
		stamp      uint64 // the term the Expire names
		entry      uint64 // the term of the log entry it lands in
		batched    bool
		wantExpire int
	}{
		{"own term", 3, 3, false, 1},
		{"later term", 3, 4, false, 0},
		{"later term in a batch", 3, 4, true, 0},
		{"own term in a batch", 4, 4, true, 1},
		{"no term", 0, 7, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.term = tc.entry
			l := h.apply(100, acquire("default", "db", "a", time.Second)).Lease
			c := stamped(expire("default", "db", l.Token, l.RenewIndex), tc.stamp)
			var got int
			if tc.batched {
				r := h.apply(200, &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{c}}}})
				got = r.Batch[0].Expired
			} else {
				got = h.apply(200, c).Expired
			}
			held := false
			if cur, ok := h.f.Get("default", "db"); ok {
				held = cur.Holder != ""
			}
			if got != tc.wantExpire || held != (tc.wantExpire == 0) {
				t.Fatalf("Expire of term %d in an entry of term %d: expired %d, still held %v; want expired %d",
					tc.stamp, tc.entry, got, held, tc.wantExpire)
			}
		})
	}
}

// TestWriteAppliesOnlyToTheHoldingChecked: a whole-object write that
// carries the holding it was authorized against is a conflict once
// another holding (or none) is in place.
func TestWriteAppliesOnlyToTheHoldingChecked(t *testing.T) {
	checked := func(c *fsmpb.Command, token uint64) *fsmpb.Command {
		c.GetWrite().CheckHolding, c.GetWrite().HoldingToken = true, token
		return c
	}
	h := newHarness(t)
	h.apply(1, write("ns", "el", true, 0, ""))
	// Authorized while the lease was free; a has taken it since.
	a := h.apply(2, acquire("ns", "el", "a", time.Minute)).Lease
	if r := h.apply(3, checked(write("ns", "el", false, 0, "b"), 0)); !errors.Is(r.Err, ErrConflict) || r.Lease.Holder != "a" {
		t.Fatalf("write checked against the free lease, applied to a's holding: %v %+v, want ErrConflict and a kept", r.Err, r.Lease)
	}
	// Authorized against a's holding: it applies.
	r := h.apply(4, checked(write("ns", "el", false, 0, ""), a.Token))
	if r.Err != nil || r.Lease.Held() {
		t.Fatalf("write checked against a's holding: %v %+v, want the holding ended", r.Err, r.Lease)
	}
	// And once that holding is gone, the same check is a conflict.
	if r := h.apply(5, checked(write("ns", "el", false, 0, "c"), a.Token)); !errors.Is(r.Err, ErrConflict) {
		t.Fatalf("write checked against an ended holding: %v, want ErrConflict", r.Err)
	}
	if r := h.apply(6, checked(write("ns", "el", false, 0, "c"), 0)); r.Err != nil || r.Lease.Holder != "c" {
		t.Fatalf("write checked against the free lease: %v %+v, want c holding", r.Err, r.Lease)
	}
}

// TestWaitQueueLimit: with max_waiters stamped, a wait that would make the
// queue longer fails with ErrQueueFull and changes nothing; a holder
// already queued keeps its place.
func TestWaitQueueLimit(t *testing.T) {
	h := newHarness(t)
	h.apply(1, acquire("default", "m", "a", time.Minute))
	limited := func(holder string) *fsmpb.Command {
		c := acquireWait("default", "m", holder)
		c.GetAcquire().MaxWaiters = 2
		return c
	}
	for _, w := range []string{"b", "c"} {
		if r := h.apply(2, limited(w)); r.Err != nil || !r.Queued {
			t.Fatalf("queue %s under the limit: %+v", w, r)
		}
	}
	rev := h.f.Revision()
	if r := h.apply(3, limited("d")); !errors.Is(r.Err, ErrQueueFull) || r.Queued {
		t.Fatalf("queue d past the limit: err %v queued %v, want ErrQueueFull", r.Err, r.Queued)
	}
	if h.f.Revision() != rev {
		t.Fatal("a refused wait wrote the lease")
	}
	if r := h.apply(4, limited("b")); r.Err != nil || r.Position != 1 {
		t.Fatalf("b asking again at the limit: %+v, want still queued at 1", r)
	}
}

// TestWaitQueueVersionsShareMemory: every version of a lease stays
// readable as it was (the watch history keeps them), while a queue of n
// waiters costs memory linear in n, not quadratic.
func TestWaitQueueVersionsShareMemory(t *testing.T) {
	h := newHarness(t)
	h.apply(1, acquire("default", "m", "a", time.Minute))
	const n = 3000
	versions := make([]*Lease, 0, n+n/2)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		versions = append(versions, h.apply(2, acquireWait("default", "m", fmt.Sprintf("w%d", i))).Lease)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Fatalf("queueing %d waiters allocated %d MiB, want linear in the queue", n, alloc>>20)
	}
	// Hand-offs (from the front) and more waiters (at the back) mix.
	l := versions[len(versions)-1]
	for i := range n / 2 {
		l = h.apply(3, release("default", "m", l.Holder, l.Token)).Lease
		versions = append(versions, l)
		versions = append(versions, h.apply(4, acquireWait("default", "m", fmt.Sprintf("x%d", i))).Lease)
		l = versions[len(versions)-1]
	}
	// Each version still reads as it was written.
	for i, v := range versions[:n] {
		if len(v.Waiters) != i+1 || v.Waiters[i].Holder != fmt.Sprintf("w%d", i) || v.Waiters[0].Holder != "w0" {
			t.Fatalf("version %d: %d waiters, last %q; want %d ending with w%d", i, len(v.Waiters), v.Waiters[len(v.Waiters)-1].Holder, i+1, i)
		}
	}
	if got := len(l.Waiters); got != n {
		t.Fatalf("%d waiters at the end, want %d", got, n)
	}
	if first, last := l.Waiters[0].Holder, l.Waiters[n-1].Holder; first != fmt.Sprintf("w%d", n/2) || last != fmt.Sprintf("x%d", n/2-1) {
		t.Fatalf("queue runs %s..%s, want w%d..x%d", first, last, n/2, n/2-1)
	}
}
