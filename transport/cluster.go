package transport

import (
	"context"
	"errors"
	"io"
	"runtime/debug"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/buildinfo"
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
		Build:          BuildInfo(),
	}, nil
}

// BuildInfo names this binary, as Status reports it.
func BuildInfo() *pb.BuildInfo {
	bi := buildinfo.Get()
	return &pb.BuildInfo{
		Version:        bi.Version,
		Commit:         bi.Commit,
		GoVersion:      bi.GoVersion,
		CommandVersion: fsm.CommandVersion,
		SnapshotFormat: fsm.SnapshotFormat,
	}
}

func membersPB(ms []node.Member) []*pb.Member {
	out := make([]*pb.Member, len(ms))
	for i, m := range ms {
		out[i] = &pb.Member{Id: m.ID, RaftAddr: m.RaftAddr, GrpcAddr: m.GRPCAddr, Suffrage: m.Suffrage, State: m.State, CommandVersion: m.CommandVersion}
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
		return forwardCluster(ctx, s, fwd{noBound: true}, func(ctx context.Context, c pb.ClusterClient) (*pb.JoinResponse, error) {
			return c.Join(ctx, req)
		})
	}
	if err := s.node.Join(ctx, req.Id, req.RaftAddr, req.GrpcAddr, req.Nonvoter, req.CommandVersion); err != nil {
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
		// Removing the leader changes the leader: that change must not
		// end the call.
		lid, _ := s.node.Leader()
		return forwardCluster(ctx, s, fwd{noBound: true, noWatch: req.Id == lid}, func(ctx context.Context, c pb.ClusterClient) (*pb.RemoveMemberResponse, error) {
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
		return forwardCluster(ctx, s, fwd{noBound: true, noWatch: true}, func(ctx context.Context, c pb.ClusterClient) (*pb.TransferLeadershipResponse, error) {
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

// snapshotChunk is the size of one backup message.
const snapshotChunk = 1 << 20

// Snapshot streams a consistent backup from the leader. A follower relays
// the leader's stream.
func (s *Server) Snapshot(req *pb.SnapshotRequest, stream pb.Cluster_SnapshotServer) error {
	ctx := stream.Context()
	if !s.node.IsLeader() {
		return s.relaySnapshot(ctx, req, stream)
	}
	if err := s.node.ReadBarrier(ctx); err != nil {
		return toStatus(err, nil)
	}
	w := &chunkWriter{send: stream.Send, buf: make([]byte, 0, snapshotChunk)}
	if err := s.node.FSM().WriteSnapshot(w); err != nil {
		return status.Errorf(codes.Internal, "writing snapshot: %v", err)
	}
	return w.flush()
}

// relaySnapshot relays the leader's backup stream. It ends, with
// Unavailable, when this node sees another leader or none, and when the
// leader sends nothing for the forward bound (a silent leader would
// otherwise hold the stream until the caller's deadline). Only the wait
// for the leader's next chunk counts: a slow reader holds up Send, not
// the leader.
func (s *Server) relaySnapshot(ctx context.Context, req *pb.SnapshotRequest, stream pb.Cluster_SnapshotServer) error {
	ld, err := s.leader(ctx)
	if err != nil {
		return err
	}
	s.hint(ctx, ld.addr)
	c, err := s.conn(ld.addr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "leader %s at %s: %v", ld.id, ld.addr, err)
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ld.changed, func() { cancel(node.ErrLeaderChanged) })
	defer stop()
	idle := time.AfterFunc(s.bound, func() { cancel(ErrLeaderSilent) })
	defer idle.Stop()
	cut := func(err error) error {
		if ctx.Err() == nil && rctx.Err() != nil {
			return status.Errorf(codes.Unavailable, "snapshot from leader %s at %s: %v", ld.id, ld.addr, context.Cause(rctx))
		}
		return err
	}
	up, err := pb.NewClusterClient(c).Snapshot(s.forwardCtx(rctx), req)
	if err != nil {
		return cut(err)
	}
	for {
		chunk, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return cut(err)
		}
		if !idle.Stop() {
			return cut(rctx.Err())
		}
		if err := stream.Send(chunk); err != nil {
			return err
		}
		idle.Reset(s.bound)
	}
}

// chunkWriter cuts a byte stream into SnapshotChunk messages.
type chunkWriter struct {
	send func(*pb.SnapshotChunk) error
	buf  []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(cap(w.buf)-len(w.buf), len(p))
		w.buf = append(w.buf, p[:take]...)
		p = p[take:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(&pb.SnapshotChunk{Data: w.buf})
	w.buf = make([]byte, 0, cap(w.buf)) // the sent message keeps the old one
	return err
}
