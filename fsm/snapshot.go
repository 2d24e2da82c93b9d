package fsm

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// A snapshot is: the magic, a length-delimited SnapshotHeader, lease_count
// length-delimited LeaseRecords sorted by key, and a CRC-32C (Castagnoli) of
// everything before it, big-endian. Sorted records make two snapshots of one
// state byte-identical; the checksum catches a corrupt or truncated file.
//
// The magic and the header's first field, format, stay as they are in every
// later layout, so any binary can tell a snapshot it cannot read from a
// corrupt one.
const snapshotMagic = "LKSNAP1\n"

// SnapshotFormat is the newest snapshot layout this binary writes and
// reads (SnapshotHeader.format). A layout change that an older binary
// would misread (a field it ignores but must not, a record of another
// shape) raises it.
//
//  1. The original layout.
//  2. The same records, with a lease in its lock delay
//     (LeaseRecord.delayed): a binary of format 1 would read that lease
//     as free and grant it, so it must refuse the snapshot. A snapshot
//     without a delayed lease is written as format 1
//     (snapshotFormatPlain), which such a binary still reads.
//  3. Semaphore queues (SnapshotHeader.semaphore_queues): a binary of an
//     older format would drop them, and then hand a freed slot to nobody
//     where the others hand it to a waiter. Written only while some
//     semaphore has waiters; otherwise the format above applies.
const SnapshotFormat uint32 = 3

// snapshotFormatDelayed is the format of a snapshot with a delayed lease
// and no semaphore queue.
const snapshotFormatDelayed uint32 = 2

// snapshotFormatPlain is the format of a snapshot without a delayed lease.
const snapshotFormatPlain uint32 = 1

// Errors of snapshots and restores.
var (
	// ErrCorruptSnapshot: a snapshot could not be read back.
	ErrCorruptSnapshot = errors.New("fsm: corrupt snapshot")
	// ErrTokenFloor: a restore would raise the fencing-token counter so
	// high that too few tokens are left to issue.
	ErrTokenFloor = errors.New("fsm: token floor leaves too few fencing tokens to issue")
	// ErrSnapshotTooNew: a snapshot has a newer format than this binary
	// reads; a newer leasekeeper wrote it.
	ErrSnapshotTooNew = fmt.Errorf("fsm: snapshot needs a newer leasekeeper (this one reads snapshot format %d)", SnapshotFormat)
)

// RestoreTokenGap is how far above a backup's fencing-token counter a
// cluster restored from it starts issuing tokens. The backup's cluster may
// have issued tokens after the backup was taken, and nothing the restore
// can read says how many: a token issued again would name two holdings,
// and a fenced resource that saw it first would turn the new holder away.
// 2^40 tokens take a cluster that begins 10,000 holdings a second three
// and a half years to issue, and tokens stay below 2^53, exact in JSON
// numbers, for 8,191 restores. An operator who knows of a higher token
// gives it as the floor of RaiseTokenCounter.
const RestoreTokenGap uint64 = 1 << 40

// maxRestoredCounter leaves a restored cluster a gap's worth of tokens.
const maxRestoredCounter = math.MaxUint64 - RestoreTokenGap

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordEncoding writes maps (labels) in key order, so equal states give
// equal bytes.
var recordEncoding = protodelim.MarshalOptions{MarshalOptions: proto.MarshalOptions{Deterministic: true}}

type snapshot struct {
	header *fsmpb.SnapshotHeader
	leases []*Lease
	sems   map[leaseKey][]Waiter
	done   func(time.Duration) // records a finished Persist
}

// Snapshot captures the table. Leases are immutable, so copying the
// pointers under the read lock is enough; encoding happens in Persist,
// while Raft keeps applying.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := newSnapshot(f.leases, f.members, f.memberVersions, f.revision, f.lastToken, f.applied)
	s.done = f.snapshotDone
	return s, nil
}

// newSnapshot captures a state to encode.
func newSnapshot(leases *table, members map[string]string, memberVersions map[string]uint32, revision, lastToken, applied uint64) *snapshot {
	s := &snapshot{
		header: &fsmpb.SnapshotHeader{
			Format:       snapshotFormatPlain,
			Revision:     revision,
			LastToken:    lastToken,
			LeaseCount:   uint64(leases.count),
			AppliedIndex: applied,
		},
		leases: make([]*Lease, 0, leases.count),
	}
	for id, addr := range members {
		s.header.Members = append(s.header.Members, &fsmpb.MemberRecord{Id: id, GrpcAddr: addr, CommandVersion: memberVersions[id]})
	}
	for l := range leases.all() {
		s.leases = append(s.leases, l)
		if l.Delayed {
			s.header.Format = snapshotFormatDelayed
		}
	}
	if len(leases.sems) > 0 {
		// The queues change in place between snapshots; the slice headers
		// copied here keep what they hold now (table.setSem).
		s.sems = maps.Clone(leases.sems)
		s.header.Format = SnapshotFormat
	}
	return s
}

// WriteSnapshot writes a consistent snapshot of the current state to w, in
// the format Restore and ReadSnapshot read: a backup.
func (f *FSM) WriteSnapshot(w io.Writer) error {
	s, err := f.Snapshot()
	if err != nil {
		return err
	}
	return s.(*snapshot).encode(w)
}

// Persist writes the snapshot to sink.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now() // for the metric only
	if err := s.encode(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	if err := sink.Close(); err != nil {
		return err
	}
	if s.done != nil {
		s.done(time.Since(start))
	}
	return nil
}

func (f *FSM) snapshotDone(d time.Duration) {
	f.snapCount.Add(1)
	f.snapLast.Store(int64(d))
}

// SnapshotStats reports how many snapshots were persisted and how long the
// last one took.
func (f *FSM) SnapshotStats() (count uint64, last time.Duration) {
	return f.snapCount.Load(), time.Duration(f.snapLast.Load())
}

// Release does nothing: the snapshot holds only immutable pointers.
func (s *snapshot) Release() {}

// encode writes the snapshot to w.
func (s *snapshot) encode(w io.Writer) error {
	sortLeases(s.leases)
	s.header.SemaphoreQueues = semRecords(s.sems)
	members := s.header.Members
	// Members sorted too, so equal states give equal bytes.
	for i := 1; i < len(members); i++ {
		for j := i; j > 0 && members[j].Id < members[j-1].Id; j-- {
			members[j], members[j-1] = members[j-1], members[j]
		}
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return err
	}
	if _, err := recordEncoding.MarshalTo(bw, s.header); err != nil {
		return err
	}
	for _, l := range s.leases {
		if _, err := recordEncoding.MarshalTo(bw, l.toRecord()); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return binary.Write(w, binary.BigEndian, crc.Sum32())
}

// Restore replaces the whole state with the snapshot in rc. On error the
// state is left as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := ReadSnapshot(rc)
	if errors.Is(err, ErrSnapshotTooNew) {
		// As with a log entry above CommandVersion: this node cannot
		// follow the cluster's state from here on, so it stops applying
		// (Halted) rather than serve the table it had.
		f.mu.Lock()
		if f.halted == nil {
			f.halted = err
		}
		f.mu.Unlock()
		return err
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.leases = st.leases
	f.members = st.members
	f.memberVersions = st.memberVersions
	f.revision = st.revision
	f.lastToken = st.lastToken
	// The state is now the snapshot's, so the applied index is too;
	// keeping the old one would report a stale index after a snapshot
	// install, and 0 after a restart, until the next entry.
	f.applied = st.applied
	f.mu.Unlock()
	if f.listener != nil {
		f.listener.Restored()
	}
	return nil
}

// State is a decoded snapshot.
type State struct {
	leases         *table
	members        map[string]string
	memberVersions map[string]uint32
	revision       uint64
	lastToken      uint64
	applied        uint64
}

// Leases returns the number of leases in the snapshot.
func (s *State) Leases() int { return s.leases.count }

// Revision returns the store revision of the snapshot.
func (s *State) Revision() uint64 { return s.revision }

// AppliedIndex returns the last Raft index the FSM had applied when the
// snapshot was taken.
func (s *State) AppliedIndex() uint64 { return s.applied }

// SetAppliedIndex sets the Raft index that the state will be restored at.
// A backup's own index counts another cluster's log; restoring it as is
// would leave AppliedIndex wrong until the new cluster's log passed it.
func (s *State) SetAppliedIndex(index uint64) { s.applied = index }

// SetMembers replaces the member directory of the state: Raft server ID to
// gRPC address, and to the command version the member registered.
func (s *State) SetMembers(members map[string]string, versions map[string]uint32) {
	s.members = maps.Clone(members)
	s.memberVersions = maps.Clone(versions)
	if s.members == nil {
		s.members = make(map[string]string)
	}
	if s.memberVersions == nil {
		s.memberVersions = make(map[string]uint32)
	}
}

// LastToken returns the fencing-token counter: the highest token issued.
func (s *State) LastToken() uint64 { return s.lastToken }

// RaiseTokenCounter raises the fencing-token counter of a backup about to
// seed a new cluster to RestoreTokenGap above its own value, or to floor
// if that is higher, so that the new cluster's tokens are above every
// token the backup's cluster may have issued. It returns the new counter.
// The counter travels in the restored snapshot, so every member applies
// the same value and a restart keeps it.
func (s *State) RaiseTokenCounter(floor uint64) (uint64, error) {
	if s.lastToken > maxRestoredCounter || floor > maxRestoredCounter {
		return 0, fmt.Errorf("%w: counter %d, floor %d, limit %d", ErrTokenFloor, s.lastToken, floor, uint64(maxRestoredCounter))
	}
	s.lastToken = max(s.lastToken+RestoreTokenGap, floor)
	return s.lastToken, nil
}

// WriteTo encodes the state as a snapshot, in the format ReadSnapshot
// reads. Equal states give equal bytes.
func (s *State) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := newSnapshot(s.leases, s.members, s.memberVersions, s.revision, s.lastToken, s.applied).encode(cw)
	return cw.n, err
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadSnapshot decodes and checks a snapshot without applying it.
func ReadSnapshot(r io.Reader) (*State, error) {
	crc := crc32.New(castagnoli)
	br := &crcReader{r: bufio.NewReaderSize(r, 256<<10), crc: crc}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a leasekeeper snapshot (bad magic)", ErrCorruptSnapshot)
	}
	var h fsmpb.SnapshotHeader
	if err := protodelim.UnmarshalFrom(br, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorruptSnapshot, err)
	}
	if h.Format > SnapshotFormat {
		return nil, fmt.Errorf("%w: it has format %d; upgrade this node", ErrSnapshotTooNew, h.Format)
	}
	if h.Format < snapshotFormatPlain {
		return nil, fmt.Errorf("%w: unknown format %d", ErrCorruptSnapshot, h.Format)
	}
	st := &State{
		leases:         newTable(),
		members:        make(map[string]string, len(h.Members)),
		memberVersions: make(map[string]uint32),
		revision:       h.Revision,
		lastToken:      h.LastToken,
		applied:        h.AppliedIndex,
	}
	for _, m := range h.Members {
		st.members[m.Id] = m.GrpcAddr
		if m.CommandVersion != 0 {
			st.memberVersions[m.Id] = m.CommandVersion
		}
	}
	for i := uint64(0); i < h.LeaseCount; i++ {
		var rec fsmpb.LeaseRecord
		if err := protodelim.UnmarshalFrom(br, &rec); err != nil {
			return nil, fmt.Errorf("%w: lease %d of %d: %v", ErrCorruptSnapshot, i+1, h.LeaseCount, err)
		}
		l := leaseFromRecord(&rec)
		if l.Token > st.lastToken {
			return nil, fmt.Errorf("%w: lease %s has token %d above the counter %d", ErrCorruptSnapshot, l.Key(), l.Token, st.lastToken)
		}
		st.leases.put(l)
	}
	for _, r := range h.SemaphoreQueues {
		k := leaseKey{r.Namespace, r.Name}
		if r.Name == "" || len(r.Waiters) == 0 || st.leases.sems[k] != nil {
			return nil, fmt.Errorf("%w: semaphore queue %q/%q empty, unnamed or repeated", ErrCorruptSnapshot, r.Namespace, r.Name)
		}
		q := make([]Waiter, len(r.Waiters))
		for i, w := range r.Waiters {
			q[i] = waiterFromRecord(w)
			if q[i].Slots < 1 || q[i].Slots > MaxSlots {
				return nil, fmt.Errorf("%w: semaphore %s/%s: a waiter of %d slots", ErrCorruptSnapshot, r.Namespace, r.Name, q[i].Slots)
			}
		}
		st.leases.sems[k] = q
	}
	sum := crc.Sum32()
	var want uint32
	if err := binary.Read(br.r, binary.BigEndian, &want); err != nil {
		return nil, fmt.Errorf("%w: missing checksum: %v", ErrCorruptSnapshot, err)
	}
	if sum != want {
		return nil, fmt.Errorf("%w: checksum mismatch (got %08x, want %08x)", ErrCorruptSnapshot, sum, want)
	}
	return st, nil
}

// crcReader hashes what passes through it. It is a ByteReader too, which
// protodelim needs to read the length prefixes.
type crcReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	one [1]byte
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc.Write(p[:n])
	return n, err
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.one[0] = b
		c.crc.Write(c.one[:])
	}
	return b, err
}

// semRecords returns the semaphore queues as snapshot records, sorted by
// namespace and name so that equal states give equal bytes.
func semRecords(sems map[leaseKey][]Waiter) []*fsmpb.SemaphoreQueueRecord {
	keys := slices.SortedFunc(maps.Keys(sems), func(a, b leaseKey) int {
		return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
	})
	out := make([]*fsmpb.SemaphoreQueueRecord, 0, len(keys))
	for _, k := range keys {
		r := &fsmpb.SemaphoreQueueRecord{Namespace: k.namespace, Name: k.name}
		for _, w := range sems[k] {
			r.Waiters = append(r.Waiters, waiterRecord(w))
		}
		out = append(out, r)
	}
	return out
}
