package fsm

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
)

// memBatch is how many acquires one log entry carries, as the node's
// batcher packs them under load.
const memBatch = 1024

// fillLeases applies n acquires of distinct leases in one namespace, packed
// into Batch entries the way the node proposes them, through the FSM's real
// Apply path. labels, when not nil, gives the labels of acquire i.
func fillLeases(tb testing.TB, f *FSM, n int, labels func(i int) map[string]string) {
	tb.Helper()
	index := f.AppliedIndex()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	cmds := make([]*fsmpb.Command, 0, memBatch)
	for i := 0; i < n; {
		cmds = cmds[:0]
		for ; i < n && len(cmds) < memBatch; i++ {
			var lbl map[string]string
			if labels != nil {
				lbl = labels(i)
			}
			cmds = append(cmds, &fsmpb.Command{
				NowUnixNano: now + int64(i)*int64(time.Microsecond),
				Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
					Namespace:  "bench",
					Name:       fmt.Sprintf("lease-%06d", i),
					Holder:     "client-7",
					DurationNs: int64(30 * time.Minute),
					GraceNs:    int64(time.Second),
					Labels:     lbl,
				}},
			})
		}
		data, err := proto.Marshal(&fsmpb.Command{Op: &fsmpb.Command_Batch{Batch: &fsmpb.Batch{Commands: cmds}}})
		if err != nil {
			tb.Fatal(err)
		}
		index++
		res := f.ApplyBatch([]*raft.Log{{Index: index, Type: raft.LogCommand, Data: data}})
		for j, r := range res[0].(*Result).Batch {
			if r.Err != nil || !r.Acquired {
				tb.Fatalf("acquire %d: %+v", j, r)
			}
		}
	}
}

var (
	leaseCounts = flag.String("lease-counts", "100000",
		"BenchmarkMemoryPerLease: table sizes, comma-separated (a million takes a minute and some 1.7 GiB of memory)")
	leaseHeapProfile = flag.String("lease-heap-profile", "",
		"BenchmarkMemoryPerLease writes a heap profile here while the table is live (inspect with -sample_index=inuse_space)")
)

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryPerLease reports the heap that the FSM keeps per live
// lease (heap-B/lease): the lease table with everything it holds. The
// apply case fills the table through Apply, as a leader and its followers
// do; the restore case loads the same table from a snapshot, as a node
// that restarts or falls behind does. Labels are none (as lease-bench's
// scale workload), two that every lease shares, or one whose value differs
// from lease to lease. Each case runs once:
//
//	go test ./fsm/ -run '^$' -bench MemoryPerLease -benchtime 1x -lease-counts 100000,1000000
func BenchmarkMemoryPerLease(b *testing.B) {
	labelCases := []struct {
		name   string
		labels func(i int) map[string]string
	}{
		{"none", nil},
		{"shared", func(int) map[string]string { return map[string]string{"app": "lease-bench", "tier": "scale"} }},
		{"unique", func(i int) map[string]string { return map[string]string{"shard": strconv.Itoa(i)} }},
	}
	for _, count := range strings.Split(*leaseCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(count))
		if err != nil || n <= 0 {
			b.Fatalf("-lease-counts: bad size %q", count)
		}
		for _, lc := range labelCases {
			labels := lc.labels
			name := "leases=" + strconv.Itoa(n) + "/labels=" + lc.name
			b.Run(name+"/apply", func(b *testing.B) {
				var perLease float64
				for b.Loop() {
					before := heapInUse()
					f := New(nil)
					fillLeases(b, f, n, labels)
					perLease = liveBytesPerLease(b, f, before, n)
				}
				b.ReportMetric(perLease, "heap-B/lease")
			})
			b.Run(name+"/restore", func(b *testing.B) {
				var perLease float64
				for b.Loop() {
					snap := snapshotOf(b, n, labels)
					f := New(nil)
					// The snapshot is garbage once Restore returns.
					before := heapInUse() - uint64(cap(snap))
					if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
						b.Fatal(err)
					}
					perLease = liveBytesPerLease(b, f, before, n)
				}
				b.ReportMetric(perLease, "heap-B/lease")
			})
		}
	}
}

// snapshotOf returns a snapshot of a table filled by fillLeases.
func snapshotOf(tb testing.TB, n int, labels func(i int) map[string]string) []byte {
	tb.Helper()
	f := New(nil)
	fillLeases(tb, f, n, labels)
	var buf bytes.Buffer
	if err := f.WriteSnapshot(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// liveBytesPerLease checks that f holds n held leases and returns the heap
// in use above before, per lease.
func liveBytesPerLease(tb testing.TB, f *FSM, before uint64, n int) float64 {
	tb.Helper()
	after := heapInUse()
	if *leaseHeapProfile != "" {
		writeHeapProfile(tb, *leaseHeapProfile)
	}
	if got := f.Stats(); got.Leases != n || got.Held != n {
		tb.Fatalf("stats %+v, want %d held leases", got, n)
	}
	return float64(int64(after)-int64(before)) / float64(n)
}

func writeHeapProfile(tb testing.TB, path string) {
	tb.Helper()
	out, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer out.Close()
	if err := pprof.Lookup("heap").WriteTo(out, 0); err != nil {
		tb.Fatal(err)
	}
}
