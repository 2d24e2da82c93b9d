package client

import (
	"context"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// Follow runs the watch that Mutex, LeaderElector, Semaphore, Observe and
// Monitor use, for the tests: every event once, in order, resumed after a
// break or a silent node.
func (c *Client) Follow(ctx context.Context, req *pb.WatchRequest, onEvent func(*pb.WatchEvent)) error {
	return c.follow(ctx, req, onEvent, func() uint64 { return req.GetStartRevision() }, nil)
}

// WaitBackground waits for the cleanups and releases under way, for the
// tests that check what they left on the server.
func (c *Client) WaitBackground() { c.bg.wg.Wait() }
