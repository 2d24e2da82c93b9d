package transport_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
	"github.com/leasekeeper/leasekeeper/node"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// TestRegistrationKeepsAdvertisedAddresses: nodes that listen on one
// address and are reached at another (a proxy in front of each, as in the
// chaos suite's loopback mode). When the followers register with the
// leader, the Raft configuration must keep the addresses they advertise,
// and the member directory, from which followers forward and clients get
// leader hints, must hold the advertised gRPC addresses. A follower that
// registered its listen address would replace its advertised one in the
// configuration, and traffic would go round the proxy.
func TestRegistrationKeepsAdvertisedAddresses(t *testing.T) {
	// The in-memory transports are named by the advertised addresses; the
	// listen addresses are never dialled.
	raftAdv := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 19100+i) }
	raftListen := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 29100+i) }
	grpcListen := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 39100+i) }
	c := lktest.StartWith(t, 3, clock.New(), nodetest.Options{
		RaftAddr: raftAdv,
		Config: func(i int, cfg *node.Config) {
			// The gRPC servers listen on c.Endpoints, which they advertise.
			cfg.GRPCAdvertise, cfg.GRPCAddr = cfg.GRPCAddr, grpcListen(i)
			cfg.RaftAdvertise, cfg.RaftAddr = cfg.RaftAddr, raftListen(i)
		},
	}, nil)
	leader := c.Leader(10 * time.Second)
	li := c.Index(leader)
	want := map[string][2]string{}
	for i, nd := range c.Nodes {
		want[nd.ID()] = [2]string{raftAdv(i), c.Endpoints[i]}
	}
	registered := func() bool {
		ms, err := leader.Members()
		if err != nil || len(ms) != 3 {
			return false
		}
		for _, m := range ms {
			if m.GRPCAddr == "" {
				return false
			}
		}
		return true
	}
	// A follower's registration is one Join: it sets the Raft address
	// before the gRPC address, so once every gRPC address is in, the
	// configuration is what registration made it.
	waitFor(t, registered)
	ms, err := leader.Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if w := want[m.ID]; m.RaftAddr != w[0] || m.GRPCAddr != w[1] {
			t.Errorf("the leader has %s at raft %s, grpc %s; want the advertised raft %s, grpc %s", m.ID, m.RaftAddr, m.GRPCAddr, w[0], w[1])
		}
	}
	// A follower names the leader at its advertised gRPC address, and
	// forwards there.
	fi := (li + 1) % 3
	f := dial(t, c.Endpoints[fi])
	st, err := f.cluster.Status(ctx(t), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLeaderGrpcAddr() != c.Endpoints[li] {
		t.Errorf("follower's leader hint %q, want the leader's advertised %q", st.GetLeaderGrpcAddr(), c.Endpoints[li])
	}
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.Acquire(rctx, acq("adv", "a", 10*time.Second)); err != nil {
		t.Errorf("acquire through the follower: %v", err)
	}
}
