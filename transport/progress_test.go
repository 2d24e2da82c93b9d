package transport_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// An idle watch that asks for progress gets PROGRESS events carrying a
// revision up to which it has every event it selects, including the
// revisions of writes it does not select; a watch that does not ask gets
// none.
func TestWatchProgress(t *testing.T) {
	_, f, _ := start(t)
	c := ctx(t)
	other := acq("other", "h", time.Minute)
	other.Namespace = "x"
	a, err := f.Acquire(c, other)
	if err != nil {
		t.Fatal(err)
	}
	every := durationpb.New(10 * time.Millisecond) // raised to 50ms
	progressed, err := f.WatchBatches(c, &pb.WatchRequest{Namespace: "y", ProgressInterval: every})
	if err != nil {
		t.Fatal(err)
	}
	single, err := f.Watch(c, &pb.WatchRequest{Namespace: "y", ProgressInterval: every})
	if err != nil {
		t.Fatal(err)
	}
	quiet, err := f.Watch(c, &pb.WatchRequest{Namespace: "y"})
	if err != nil {
		t.Fatal(err)
	}
	// next returns the next progress revision of the batch watch.
	next := func() uint64 {
		t.Helper()
		start := time.Now()
		b, err := progressed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 1 || b.Events[0].Type != pb.WatchEvent_PROGRESS || b.Events[0].Lease != nil {
			t.Fatalf("message %v, want one PROGRESS event without a lease", b)
		}
		if took := time.Since(start); took < 30*time.Millisecond {
			t.Errorf("progress after %v, want the 50ms floor", took)
		}
		return b.Events[0].Revision
	}
	// The follower applies the acquire in its own time: progress catches
	// up with it.
	for rev := next(); rev < a.Lease.ResourceVersion; rev = next() {
	}
	ev, err := single.Recv()
	if err != nil || ev.Type != pb.WatchEvent_PROGRESS {
		t.Fatalf("Watch: %v, %v; want PROGRESS", ev, err)
	}

	// An event it selects resets the interval; progress then carries at
	// least its revision.
	mine := acq("mine", "h", time.Minute)
	mine.Namespace = "y"
	m, err := f.Acquire(c, mine)
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := progressed.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e := b.Events[0]; e.Type != pb.WatchEvent_PROGRESS {
			if e.Revision != m.Lease.ResourceVersion || e.Lease.GetName() != "mine" {
				t.Fatalf("event %v, want mine's acquire", e)
			}
			break
		}
	}
	if rev := next(); rev < m.Lease.ResourceVersion {
		t.Errorf("progress at %d after the event at %d", rev, m.Lease.ResourceVersion)
	}
	if ev, err := quiet.Recv(); err != nil || ev.Type == pb.WatchEvent_PROGRESS || ev.Revision != m.Lease.ResourceVersion {
		t.Errorf("watch without progress: %v, %v; want mine's acquire first", ev, err)
	}

	bad, err := f.Watch(c, &pb.WatchRequest{ProgressInterval: durationpb.New(-time.Second)})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative interval: %v, want InvalidArgument", err)
	}
}
