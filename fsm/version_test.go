package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// TestFitKeepsOldClustersAlike: for a cluster with a version-1 voter, the
// fields a version-1 FSM would ignore are cleared, so every node applies
// the command alike; for a version-2 cluster they stay, and the command
// says it needs version 2.
func TestFitKeepsOldClustersAlike(t *testing.T) {
	v2 := func() *fsmpb.Command {
		exp := expire("default", "db", 4, 8)
		exp.GetExpire().Term = 3
		w := write("default", "db", false, 0, "b")
		w.GetWrite().CheckHolding, w.GetWrite().HoldingToken = true, 4
		acq := acquireWait("default", "db", "c")
		acq.GetAcquire().MaxWaiters = 10
		return &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{exp, w, acq, renew("default", "x", "a", 1)}}}}
	}
	old := Fit(v2(), 1)
	subs := old.GetBatch().Commands
	if old.RequiredVersion != 0 || subs[0].GetExpire().Term != 0 || subs[1].GetWrite().CheckHolding || subs[1].GetWrite().HoldingToken != 0 || subs[2].GetAcquire().MaxWaiters != 0 {
		t.Fatalf("fit for version 1: %v", old)
	}
	for _, cluster := range []uint32{0, 1} {
		if c := Fit(v2(), cluster); !proto.Equal(c, old) {
			t.Fatalf("fit for %d differs from fit for 1", cluster)
		}
	}
	cur := Fit(v2(), 2)
	subs = cur.GetBatch().Commands
	if cur.RequiredVersion != 2 || subs[0].RequiredVersion != 2 || subs[3].RequiredVersion != 0 || subs[0].GetExpire().Term != 3 || !subs[1].GetWrite().CheckHolding {
		t.Fatalf("fit for version 2: %v", cur)
	}
}

// TestTooNewCommandHalts: an FSM does not apply a command above its
// version, alone or in a batch; it halts, naming the entry and what to
// do, with its state as the entries before left it, and applies nothing
// after.
func TestTooNewCommandHalts(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched=%v", batched), func(t *testing.T) {
			h := newHarness(t)
			h.apply(1, acquire("default", "db", "a", time.Minute))
			rev := h.f.Revision()
			c := release("default", "db", "a", 1)
			c.RequiredVersion = CommandVersion + 1
			if batched {
				c = &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{
					acquire("default", "other", "b", time.Minute), c,
				}}}}
			}
			r := h.apply(2, c)
			if !errors.Is(r.Err, ErrTooNew) || !strings.Contains(r.Err.Error(), "index 2") || !strings.Contains(r.Err.Error(), "upgrade this node") {
				t.Fatalf("result %v, want ErrTooNew naming the entry and what to do", r.Err)
			}
			if !errors.Is(h.f.Halted(), ErrTooNew) {
				t.Fatalf("Halted() = %v, want ErrTooNew", h.f.Halted())
			}
			if r := h.apply(3, acquire("default", "later", "c", time.Minute)); !errors.Is(r.Err, ErrTooNew) {
				t.Fatalf("an entry after the halt: %v, want ErrTooNew", r.Err)
			}
			if l, _ := h.f.Get("default", "db"); l.Holder != "a" || h.f.Revision() != rev || h.f.AppliedIndex() != 1 {
				t.Fatalf("state changed by the refused entries: %+v, revision %d, applied %d", l, h.f.Revision(), h.f.AppliedIndex())
			}
		})
	}
}

// TestMemberVersions: members register the command version of their
// binary; a registration without one keeps it; snapshots carry it.
func TestMemberVersions(t *testing.T) {
	h := newHarness(t)
	set := func(id string, v uint32) {
		h.apply(1, &fsmpb.Command{Op: &fsmpb.Command_SetMember{SetMember: &fsmpb.SetMember{Id: id, GrpcAddr: id + ":7000", CommandVersion: v}}})
	}
	set("n1", 2)
	set("n2", 0)
	if got := h.f.MemberVersion("n1"); got != 2 {
		t.Fatalf("n1 registered 2, reads %d", got)
	}
	if got := h.f.MemberVersion("n2"); got != 1 {
		t.Fatalf("n2 registered none, reads %d, want 1", got)
	}
	set("n1", 0) // an address refresh by a tool that does not know versions
	if got := h.f.MemberVersion("n1"); got != 2 {
		t.Fatalf("a refresh without a version changed n1's to %d", got)
	}
	var buf bytes.Buffer
	if err := h.f.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if got := g.MemberVersion("n1"); got != 2 {
		t.Fatalf("after a snapshot, n1 reads %d, want 2", got)
	}
}

// withFormat re-encodes the snapshot snap with its header's format set to
// format and a checksum that matches, as a binary of that format would
// write it.
func withFormat(t *testing.T, snap []byte, format uint32) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(snap[len(snapshotMagic):]))
	var h fsmpb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &h); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	h.Format = format
	var out bytes.Buffer
	out.WriteString(snapshotMagic)
	if _, err := protodelim.MarshalTo(&out, &h); err != nil {
		t.Fatal(err)
	}
	out.Write(rest[:len(rest)-4])
	return binary.BigEndian.AppendUint32(out.Bytes(), crc32.Checksum(out.Bytes(), castagnoli))
}

// TestRestoreRefusesNewerSnapshotFormat: a snapshot of a newer format is
// refused as one, not as corrupt, and not applied: the FSM keeps its table
// and halts like on a too-new command, since it can no longer follow the
// cluster's state. The same bytes with this binary's format restore.
func TestRestoreRefusesNewerSnapshotFormat(t *testing.T) {
	src := newHarness(t)
	src.apply(1, acquire("default", "new", "a", time.Minute))
	good := snapshotBytes(t, src.f)
	if same := withFormat(t, good, snapshotFormatPlain); !bytes.Equal(same, good) {
		t.Fatal("withFormat changed a snapshot it kept the format of")
	}

	h := newHarness(t)
	h.apply(1, acquire("default", "old", "b", time.Minute))
	newer := withFormat(t, good, SnapshotFormat+1)
	err := h.f.Restore(io.NopCloser(bytes.NewReader(newer)))
	if !errors.Is(err, ErrSnapshotTooNew) || errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("restore of format %d: %v, want ErrSnapshotTooNew (not corrupt)", SnapshotFormat+1, err)
	}
	for _, want := range []string{fmt.Sprintf("format %d", SnapshotFormat+1), fmt.Sprintf("reads snapshot format %d", SnapshotFormat), "upgrade this node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, ok := h.f.Get("default", "old"); !ok {
		t.Error("the refused restore replaced the table")
	}
	if _, ok := h.f.Get("default", "new"); ok {
		t.Error("the refused snapshot's lease was applied")
	}
	if !errors.Is(h.f.Halted(), ErrSnapshotTooNew) {
		t.Errorf("Halted() = %v, want ErrSnapshotTooNew", h.f.Halted())
	}
	if r := h.apply(2, acquire("default", "later", "c", time.Minute)); !errors.Is(r.Err, ErrSnapshotTooNew) {
		t.Errorf("an entry after the refusal: %v, want it refused too", r.Err)
	}
	if _, err := ReadSnapshot(bytes.NewReader(newer)); !errors.Is(err, ErrSnapshotTooNew) {
		t.Errorf("ReadSnapshot (lease-node --restore): %v, want ErrSnapshotTooNew", err)
	}

	zero := withFormat(t, good, 0)
	if err := New(nil).Restore(io.NopCloser(bytes.NewReader(zero))); !errors.Is(err, ErrCorruptSnapshot) {
		t.Errorf("restore of format 0: %v, want ErrCorruptSnapshot", err)
	}
	f := New(nil)
	if err := f.Restore(io.NopCloser(bytes.NewReader(good))); err != nil || f.Halted() != nil {
		t.Fatalf("restore of this format: %v, halted %v", err, f.Halted())
	}
	if _, ok := f.Get("default", "new"); !ok {
		t.Error("restore of this format lost the lease")
	}
}

// TestRecordNeedsVersion3: a write or acquire that makes a lease a record
// needs command version 3, which Fit cannot take away; Check refuses it
// for an older cluster and lets everything else through.
func TestRecordNeedsVersion3(t *testing.T) {
	record := map[string]string{RecordLabel: "true"}
	w := write("default", "db", true, 0, "a")
	w.GetWrite().Labels = record
	acq := acquire("default", "db", "a", time.Minute)
	acq.GetAcquire().Labels = record
	notRecord := write("default", "db", true, 0, "a")
	notRecord.GetWrite().Labels = map[string]string{RecordLabel: "false"}
	for _, tc := range []struct {
		name    string
		c       *fsmpb.Command
		cluster uint32
		refused bool
	}{
		{"write at 2", w, 2, true},
		{"write at 0", w, 0, true},
		{"write at 3", w, 3, false},
		{"acquire at 2", acq, 2, true},
		{"acquire at 3", acq, 3, false},
		{"in a batch at 2", &fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{renew("default", "x", "a", 1), w}}}}, 2, true},
		{"label false at 1", notRecord, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Fit(proto.Clone(tc.c).(*fsmpb.Command), tc.cluster)
			err := Check(c, tc.cluster)
			if got := errors.Is(err, ErrClusterTooOld); got != tc.refused {
				t.Fatalf("Check: %v, want refused %v", err, tc.refused)
			}
			if !tc.refused && tc.c.GetBatch() == nil && IsRecord(tc.c.GetWrite().GetLabels()) && c.RequiredVersion != 3 {
				t.Fatalf("a record write needs version %d, want 3", c.RequiredVersion)
			}
		})
	}
	// This FSM applies it, and the lease is a record.
	h := newHarness(t)
	c := Fit(proto.Clone(w).(*fsmpb.Command), 3)
	if c.RequiredVersion != 3 || CommandVersion < 3 {
		t.Fatalf("required %d, this FSM applies %d", c.RequiredVersion, CommandVersion)
	}
	if r := h.apply(1, c); r.Err != nil {
		t.Fatalf("a version-3 FSM applies a record write: %v", r.Err)
	}
	if l, _ := h.f.Get("default", "db"); !l.Record() {
		t.Fatalf("the lease is not a record: %+v", l.Labels)
	}
}
