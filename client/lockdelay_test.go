package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// TestMutexLockDelay: a holder that stops renewing without releasing
// (Abandon, as a failed process would: its holding expires) leaves the lock unavailable for its lock delay: the waiting
// Mutex gets it only a lock delay after the expiry, and the lease shows
// the delay it was asked for.
func TestMutexLockDelay(t *testing.T) {
	cl := startCluster(t)
	ca, cb := lkClient(t, cl.Endpoints), lkClient(t, cl.Endpoints)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// Lock delays start once every member registered a binary that
	// applies them (the leader drops them before).
	for {
		res, err := cb.Leases().Acquire(ctx, &pb.AcquireRequest{Name: "probe", HolderIdentity: "p",
			LeaseDuration: durationpb.New(time.Minute), LockDelay: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Lease.LockDelay != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // members register on their own loop
	}
	const delay = time.Second
	a := mustMutex(t, ca, "delayed", client.WithTTL(500*time.Millisecond), client.WithGrace(0), client.WithLockDelay(delay))
	b := mustMutex(t, cb, "delayed", client.WithTTL(500*time.Millisecond), client.WithGrace(0))
	ha, err := a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := ha.Lease().GetLockDelay().AsDuration(); got != delay {
		t.Fatalf("lease lock delay %v, want %v", got, delay)
	}
	ha.Abandon()
	hb, err := b.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock b after a abandoned its holding: %v", err)
	}
	got, err := cb.Get(ctx, "default", "delayed", false)
	if err != nil {
		t.Fatal(err)
	}
	var expired *pb.Holding
	for _, h := range got.Lease.History {
		if h.FencingToken == ha.FencingToken() {
			expired = h
		}
	}
	if expired == nil || expired.EndReason != "expired" {
		t.Fatalf("a's holding in the history: %v, want expired", expired)
	}
	// Both times are the leader's wall clock on this one machine.
	if gap := hb.Lease().GetAcquireTime().AsTime().Sub(expired.EndTime.AsTime()); gap < delay {
		t.Fatalf("b got the lock %v after a's holding expired, want at least the lock delay %v", gap, delay)
	}
}

// TestLockDelayOptionValidated: a negative lock delay is refused by the
// constructor, before anything is sent.
func TestLockDelayOptionValidated(t *testing.T) {
	cl := startCluster(t)
	c := lkClient(t, cl.Endpoints)
	if m, err := client.NewMutex(c, "x", client.WithLockDelay(-time.Second)); !errors.Is(err, client.ErrInvalid) || m != nil {
		t.Fatalf("NewMutex with a negative lock delay: %v, %v, want nil, ErrInvalid", m, err)
	}
}
