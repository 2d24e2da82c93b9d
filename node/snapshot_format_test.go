package node_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// snapshotOfFormat is a well-formed, empty snapshot file whose header
// says format, as a binary writing that format would make it.
func snapshotOfFormat(t *testing.T, format uint32) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("LKSNAP1\n")
	if _, err := protodelim.MarshalTo(&b, &fsmpb.SnapshotHeader{Format: format, Revision: 3, LastToken: 2}); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.AppendUint32(b.Bytes(), crc32.Checksum(b.Bytes(), crc32.MakeTable(crc32.Castagnoli)))
}

// TestNodeRefusesNewerSnapshotFormat: a node whose data dir's newest
// snapshot was written by a newer binary (a downgrade) does not start:
// it neither misreads that snapshot nor falls back to the older one that
// Raft would restore instead, and its error says what to do.
func TestNodeRefusesNewerSnapshotFormat(t *testing.T) {
	dir := t.TempDir()
	addr, tr := raft.NewInmemTransport("inmem-0")
	defer tr.Close()
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: "n0", Address: addr}}}
	store, err := raft.NewFileSnapshotStore(dir, 2, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		index  uint64
		format uint32
	}{{5, fsm.SnapshotFormat}, {10, fsm.SnapshotFormat + 1}} {
		sink, err := store.Create(raft.SnapshotVersionMax, s.index, 1, conf, 1, tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sink.Write(snapshotOfFormat(t, s.format)); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := node.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.GRPCAddr, cfg.DataDir = "n0", string(addr), "inmem-grpc-0", dir
	n, err := node.New(cfg, node.Deps{Clock: clock.New(), Logger: nodetest.Logger(t, "n0"), Transport: tr})
	if err == nil {
		_ = n.Close()
		t.Fatal("a node started from a snapshot of a newer format")
	}
	if !errors.Is(err, fsm.ErrSnapshotTooNew) || !strings.Contains(err.Error(), "upgrade this node") {
		t.Fatalf("got %v, want ErrSnapshotTooNew saying to upgrade", err)
	}
}
