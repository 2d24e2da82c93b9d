package transport

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// keepaliveTime is how long a connection may stay quiet before a
// keepalive ping; gRPC's floor for clients. Other nodes and the Go client
// (client/client.go) ping at this interval.
const keepaliveTime = 10 * time.Second

// keepaliveMinTime is the shortest ping interval the server accepts from
// a client; a client that pings more often is sent GOAWAY
// (too_many_pings). Half of keepaliveTime, for timer slack.
const keepaliveMinTime = keepaliveTime / 2

// keepaliveTimeout is how long a ping may go unanswered before the
// connection is dropped: the forward bound, as Raft gives a silent
// leader, and never under a second.
func (s *Server) keepaliveTimeout() time.Duration { return max(s.bound, time.Second) }

// serverKeepalive are the keepalive options of the gRPC server. It admits
// clients' pings as often as every keepaliveMinTime, even with no call
// open, and pings a client that has been quiet for two client intervals
// (one that pings on its own never is; the others are found dead too).
func (s *Server) serverKeepalive() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * keepaliveTime, Timeout: s.keepaliveTimeout()}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
	}
}

// clientKeepalive is the keepalive of the connections to other nodes, so
// that a peer that went silent is dropped within seconds
// (keepaliveTime + keepaliveTimeout) even with nothing else to end a call.
func (s *Server) clientKeepalive() grpc.DialOption {
	return grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: s.keepaliveTimeout(), PermitWithoutStream: true})
}
