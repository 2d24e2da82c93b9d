package transport_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

func roundTrip(t *testing.T, s pb.Leases_CallsClient, req *pb.CallRequest) *pb.CallResponse {
	t.Helper()
	if err := s.Send(req); err != nil {
		t.Fatalf("send call %d: %v", req.Id, err)
	}
	r, err := s.Recv()
	if err != nil {
		t.Fatalf("answer to call %d: %v", req.Id, err)
	}
	if r.Id != req.Id {
		t.Fatalf("answer to call %d carries id %d", req.Id, r.Id)
	}
	return r
}

func TestCallsThroughFollower(t *testing.T) {
	c, f, _ := start(t)
	leaderAddr := c.Endpoints[c.Index(c.Leader(10*time.Second))]
	s, err := f.Calls(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	r := roundTrip(t, s, &pb.CallRequest{Id: 1, Timeout: durationpb.New(10 * time.Second),
		Request: &pb.CallRequest_Acquire{Acquire: acq("db", "a", 10*time.Second)}})
	if r.Error != nil || !r.GetAcquire().GetAcquired() {
		t.Fatalf("acquire: %v", r)
	}
	if r.Leader != leaderAddr {
		t.Errorf("leader hint %q, want %q", r.Leader, leaderAddr)
	}
	token := r.GetAcquire().GetLease().GetFencingToken()
	r = roundTrip(t, s, &pb.CallRequest{Id: 2,
		Request: &pb.CallRequest_Renew{Renew: &pb.RenewRequest{Name: "db", HolderIdentity: "a", FencingToken: token + 1}}})
	if r.Error == nil || codes.Code(r.Error.Code) != codes.FailedPrecondition || r.Response != nil {
		t.Fatalf("renew with a wrong token: %v, want FailedPrecondition", r)
	}
	var held pb.Lease
	if len(r.Error.Details) != 1 || r.Error.Details[0].UnmarshalTo(&held) != nil || held.HolderIdentity != "a" {
		t.Errorf("the error's details %v, want the current holding by a", r.Error.Details)
	}
	// Serializable reads are the follower's own: no leader hint.
	r = roundTrip(t, s, &pb.CallRequest{Id: 3,
		Request: &pb.CallRequest_Get{Get: &pb.GetRequest{Name: "db", Serializable: true}}})
	if r.Error != nil || r.Leader != "" {
		t.Errorf("serializable get on the follower: %v, want an answer without a leader hint", r)
	}
}

func TestDrainEndsCallsStreams(t *testing.T) {
	c, _, l := start(t)
	s, err := l.Calls(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	r := roundTrip(t, s, &pb.CallRequest{Id: 1, Request: &pb.CallRequest_Get{Get: &pb.GetRequest{Name: "x"}}})
	if codes.Code(r.GetError().GetCode()) != codes.NotFound {
		t.Fatalf("get: %v", r)
	}
	c.Server(c.Index(c.Leader(10 * time.Second))).Drain()
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after Drain: %v, want Unavailable", err)
	}
	ctx2, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Unary calls still work: a draining server refuses only new streams.
	if _, err := l.Get(ctx2, &pb.GetRequest{Name: "x"}); status.Code(err) != codes.NotFound {
		t.Errorf("unary get after Drain: %v, want NotFound", err)
	}
}

// acquireMany sends n acquires of names prefix0.. on s, ids from first.
func acquireMany(t *testing.T, s pb.Leases_CallsClient, first uint64, prefix string, n int) {
	t.Helper()
	for i := range n {
		req := &pb.CallRequest{Id: first + uint64(i), Request: &pb.CallRequest_Acquire{Acquire: acq(fmt.Sprintf("%s%d", prefix, i), "a", time.Minute)}}
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
}

// sameEvents reads n events from both streams, fails on any difference
// and returns the sizes of the batched stream's messages.
func sameEvents(t *testing.T, batched pb.Leases_WatchBatchesClient, plain pb.Leases_WatchClient, n int) []int {
	t.Helper()
	var sizes []int
	for got := 0; got < n; {
		b, err := batched.Recv()
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(b.Events))
		for _, ev := range b.Events {
			want, err := plain.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(ev, want) || ev.Type != pb.WatchEvent_ADDED {
				t.Fatalf("event %d: batched %v, plain %v", got, ev, want)
			}
			got++
		}
	}
	return sizes
}

// WatchBatches sends the events Watch sends, in the same order, up to 1000
// to a message: the backlog in full messages, then what is queued together.
func TestWatchBatchesMatchWatch(t *testing.T) {
	_, f, l := start(t)
	s, err := l.Calls(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 1100
	acquireMany(t, s, 1, "l", n)
	for range n {
		if r, err := s.Recv(); err != nil || r.Error != nil {
			t.Fatalf("acquire: %v %v", err, r)
		}
	}
	wctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	req := &pb.WatchRequest{Replay: true}
	// On the follower: it must have applied the acquires first.
	waitFor(t, func() bool {
		st, err := f.cluster.Status(wctx, &pb.StatusRequest{})
		return err == nil && st.Leases == n
	})
	plain, err := f.Watch(wctx, req)
	if err != nil {
		t.Fatal(err)
	}
	batched, err := f.WatchBatches(wctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if sizes := sameEvents(t, batched, plain, n); len(sizes) != 2 || sizes[0] != 1000 || sizes[1] != 100 {
		t.Errorf("the backlog of %d events came in messages of %v, want [1000 100]", n, sizes)
	}
	// Live events, many committed together: the same on both streams.
	const live = 300
	acquireMany(t, s, n+1, "m", live)
	t.Logf("%d live events came in messages of %v", live, sameEvents(t, batched, plain, live))
}
