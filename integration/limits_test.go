package integration

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// TestWaitQueueLimit: past --max-waiters, a wait is refused with
// ResourceExhausted, and the waiters already queued keep their places.
func TestWaitQueueLimit(t *testing.T) {
	c := startSingle(t, "--max-waiters", "2")
	c.leader(15 * time.Second)
	cl := c.client()
	if a, err := cl.Acquire(ctxT(t, 10*time.Second), "default", "q", "a", time.Minute, 0, nil); err != nil || !a.Acquired {
		t.Fatalf("acquire by a: %v %v", a, err)
	}
	wait := func(holder string) (*pb.AcquireResponse, error) {
		return cl.Leases().Acquire(ctxT(t, 2*time.Second), &pb.AcquireRequest{
			Name: "q", HolderIdentity: holder, LeaseDuration: durationpb.New(time.Minute), Wait: true,
		})
	}
	for i, h := range []string{"b", "c"} {
		r, err := wait(h)
		if err != nil || !r.Queued || r.QueuePosition != int32(i+1) {
			t.Fatalf("wait by %s: %v %v, want queued at %d", h, r, err, i+1)
		}
	}
	if r, err := wait("d"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("wait by d past the limit: %v %v, want ResourceExhausted", r, err)
	}
	g, err := cl.Get(ctxT(t, 5*time.Second), "default", "q", false)
	if err != nil || len(g.Lease.Waiters) != 2 {
		t.Fatalf("queue after the refusal: %v %v, want b and c", g, err)
	}
}
