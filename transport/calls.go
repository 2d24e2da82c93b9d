package transport

import (
	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/internal/callmux"
)

// Calls serves unary calls multiplexed over one stream (see package
// callmux): each runs through the same interceptors (metrics, panic guard,
// auth) and handler as its unary method. Drain ends the streams.
func (s *Server) Calls(stream pb.Leases_CallsServer) error {
	return callmux.Serve(stream, s, s.unary, s.draining)
}

// Drain ends every Calls stream once its calls in flight are answered, and
// refuses new ones, so that a graceful stop of the gRPC server does not
// wait for clients to close their streams. Call it before GracefulStop.
func (s *Server) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }
