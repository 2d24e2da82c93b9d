package transport

import (
	"context"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/node"
)

// Status reports this node's view of the cluster.
func (s *Server) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st, err := s.node.Status()
	if err != nil {
		return nil, toStatus(err, nil)
	}
	return &pb.StatusResponse{
		Id:             st.ID,
		State:          st.State,
		Leader:         st.Leader,
		LeaderGrpcAddr: st.LeaderGRPC,
		Term:           st.Term,
		CommitIndex:    st.CommitIndex,
		AppliedIndex:   st.AppliedIndex,
		Members:        membersPB(st.Members),
		Revision:       st.Stats.Revision,
		Leases:         int64(st.Stats.Leases),
	}, nil
}

func membersPB(ms []node.Member) []*pb.Member {
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		out[i] = &pb.Member{Id: m.ID, RaftAddr: m.RaftAddr, GrpcAddr: m.GRPCAddr, Suffrage: m.Suffrage, State: m.State}
	}
	return out
}

func (s *Server) members() ([]*pb.Member, error) {
	st, err := s.node.Status()
	if err != nil {
		return nil, toStatus(err, nil)
	}
	return membersPB(st.Members), nil
}

// Join adds a node to the cluster.
func (s *Server) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if req.Id == "" || req.RaftAddr == "" {
		return nil, invalid("join needs id and raft_addr")
	}
	if !s.node.IsLeader() {
		return forwardCluster(ctx, s, func(ctx context.Context, c pb.ClusterClient) (*pb.JoinResponse, error) {
			return c.Join(ctx, req)
		})
	}
	if err := s.node.Join(ctx, req.Id, req.RaftAddr, req.GrpcAddr, req.Nonvoter); err != nil {
		return nil, toStatus(err, nil)
	}
	ms, err := s.members()
	return &pb.JoinResponse{Members: ms}, err
}

// RemoveMember removes a node from the cluster.
func (s *Server) RemoveMember(ctx context.Context, req *pb.RemoveMemberRequest) (*pb.RemoveMemberResponse, error) {
	if req.Id == "" {
		return nil, invalid("remove needs an id")
	}
	if !s.node.IsLeader() {
		return forwardCluster(ctx, s, func(ctx context.Context, c pb.ClusterClient) (*pb.RemoveMemberResponse, error) {
			return c.RemoveMember(ctx, req)
		})
	}
	if err := s.node.RemoveMember(ctx, req.Id); err != nil {
		return nil, toStatus(err, nil)
	}
	ms, err := s.members()
	return &pb.RemoveMemberResponse{Members: ms}, err
}

// TransferLeadership hands leadership to another member.
func (s *Server) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if !s.node.IsLeader() {
		return forwardCluster(ctx, s, func(ctx context.Context, c pb.ClusterClient) (*pb.TransferLeadershipResponse, error) {
			return c.TransferLeadership(ctx, req)
		})
	}
	if err := s.node.TransferLeadership(req.To); err != nil {
		return nil, toStatus(err, nil)
	}
	id, _ := s.node.Leader()
	return &pb.TransferLeadershipResponse{Leader: id}, nil
}

// recoverUnary turns a panic in a handler into Internal instead of a crash
// of the node.
func recoverUnary(log hclog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log hclog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in stream handler", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = status.Errorf(codes.Internal, "internal error in %s", info.FullMethod)
			}
		}()
		return h(srv, ss)
	}
}
