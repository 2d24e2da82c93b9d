package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// FuzzApply feeds arbitrary log entries to an FSM that holds a lease: it
// must never panic, and a rejected entry must leave the state unchanged.
func FuzzApply(f *testing.F) {
	for _, c := range []*fsmpb.Command{
		acquire("default", "x", "a", time.Second),
		renew("default", "x", "a", 1),
		release("default", "x", "a", 1),
		expire("default", "x", 1, 1),
		del("default", "x", 0),
		{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{acquire("n", "y", "b", time.Second), renew("n", "y", "b", 2)}}}},
		acquireSlot("s", "b", 2, true),
		leaveSem("s", "b"),
		{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: []*fsmpb.Command{
			acquireSlot("x", "b", 1, true), acquireSlot("x", "c", 1, true), release("default", "x-0", "b", 2), del("default", "x-0", 0),
		}}}},
	} {
		data, _ := proto.Marshal(c)
		f.Add(data)
	}
	f.Add([]byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := New(nil)
		seed, _ := proto.Marshal(acquire("default", "x", "a", time.Second))
		fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: seed})
		before := fsm.Stats()
		r, ok := fsm.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data}).(*Result)
		if !ok {
			t.Fatalf("Apply returned %T", r)
		}
		if errors.Is(r.Err, ErrBadCommand) {
			if after := fsm.Stats(); after.Revision != before.Revision || after.Leases != before.Leases {
				t.Fatalf("a rejected entry changed the state: %+v -> %+v", before, after)
			}
		}
		// Whatever happened, tokens never went backwards and the table
		// still encodes and decodes.
		if fsm.Stats().LastToken < before.LastToken {
			t.Fatal("token counter went backwards")
		}
		checkTable(t, fsm.leases)
		var buf bytes.Buffer
		if err := fsm.WriteSnapshot(&buf); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSnapshot(&buf); err != nil {
			t.Fatalf("snapshot of a fuzzed state does not read back: %v", err)
		}
	})
}

// FuzzRestore feeds arbitrary bytes to Restore: it must refuse or accept
// without panicking, and a refused restore leaves the state as it was. A
// refusal is either a corrupt snapshot or one of a newer format (whose
// header claims a format this binary does not read).
func FuzzRestore(f *testing.F) {
	src := New(nil)
	seed, _ := proto.Marshal(acquire("default", "x", "a", time.Second))
	src.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: seed})
	var good bytes.Buffer
	if err := src.WriteSnapshot(&good); err != nil {
		f.Fatal(err)
	}
	f.Add(good.Bytes())
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := New(nil)
		dst.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: seed})
		before := dst.Stats()
		err := dst.Restore(io.NopCloser(bytes.NewReader(data)))
		if err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) && !errors.Is(err, ErrSnapshotTooNew) {
				t.Fatalf("restore error is neither ErrCorruptSnapshot nor ErrSnapshotTooNew: %v", err)
			}
			if after := dst.Stats(); after != before {
				t.Fatalf("a refused restore changed the state: %+v -> %+v", before, after)
			}
		}
	})
}
