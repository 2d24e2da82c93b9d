package transport_test

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// TestListAtRevision: List with a revision answers the leases as they
// were then, on the follower that takes it as on the leader; a revision
// the store has not reached is INVALID_ARGUMENT.
func TestListAtRevision(t *testing.T) {
	_, f, l := start(t)
	c := ctx(t)
	a, err := f.Acquire(c, acq("db", "a", time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	then := a.Lease.ResourceVersion
	if _, err := f.Release(c, &pb.ReleaseRequest{Name: "db", HolderIdentity: "a", FencingToken: a.Lease.FencingToken}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Acquire(c, acq("other", "b", time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, node := range []struct {
		name string
		c    conn
	}{{"follower", f}, {"leader", l}} {
		res, err := node.c.List(c, &pb.ListRequest{Revision: then})
		if err != nil {
			t.Fatalf("%s: %v", node.name, err)
		}
		if res.Revision != then || len(res.Leases) != 1 || res.Leases[0].Name != "db" || res.Leases[0].HolderIdentity != "a" {
			t.Fatalf("%s: list at %d: %v", node.name, then, res)
		}
	}
	now, err := l.List(c, &pb.ListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.List(c, &pb.ListRequest{Revision: now.Revision + 10})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a revision ahead of the store: %v, want InvalidArgument", err)
	}
}
