package transport

import (
	"context"
	"fmt"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// FollowsTerm answers a leader's confirmation round with this node's
// current Raft term.
func (s *Server) FollowsTerm(_ context.Context, req *pb.FollowsTermRequest) (*pb.FollowsTermResponse, error) {
	t := s.node.Term()
	if t != req.Term {
		s.log.Debug("leadership confirmation for another term", "asked_by", req.Leader, "their_term", req.Term, "term", t)
	}
	return &pb.FollowsTermResponse{Term: t, Id: s.node.ID()}, nil
}

// Term implements node.Peers: it asks the member id at grpcAddr for its
// current term, over the connection kept to it.
func (s *Server) Term(ctx context.Context, id, grpcAddr string, leaderTerm uint64) (uint64, error) {
	if grpcAddr == "" {
		return 0, fmt.Errorf("transport: member %s has not registered its address", id)
	}
	c, err := s.conn(grpcAddr)
	if err != nil {
		return 0, err
	}
	resp, err := pb.NewClusterClient(c).FollowsTerm(ctx, &pb.FollowsTermRequest{Term: leaderTerm, Leader: s.node.ID()})
	if err != nil {
		return 0, err
	}
	if resp.Id != id {
		// Another node answers at that address: its term says nothing
		// about id's vote.
		return 0, fmt.Errorf("transport: %s answered for member %s at %s", resp.Id, id, grpcAddr)
	}
	return resp.Term, nil
}
