// Package lktest starts whole leasekeeper clusters inside a test process:
// in-memory Raft (see node/nodetest) plus a real gRPC server per node on a
// loopback port, so client code can be tested against the real service
// without starting processes.
package lktest

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
	"github.com/leasekeeper/leasekeeper/transport"
)

// Cluster is a running in-process cluster.
type Cluster struct {
	*nodetest.Cluster
	// Endpoints are the nodes' gRPC addresses, in node order.
	Endpoints []string
	servers   []*transport.Server
	grpcs     []*grpc.Server
	wg        sync.WaitGroup
	cancel    context.CancelFunc
}

// Start runs n nodes with their expiry managers on clk (clock.New() for
// real time) and stops them when the test ends.
func Start(t testing.TB, n int, clk clock.Clock) *Cluster {
	t.Helper()
	return StartWith(t, n, clk, nodetest.Options{}, nil)
}

// StartWith is Start with nodetest options (their Listeners and GRPCAddr
// are the cluster's own and are replaced) and the servers' configuration
// changed by configure (nil: the defaults), for tests of a small watch
// window and the like.
func StartWith(t testing.TB, n int, clk clock.Clock, opts nodetest.Options, configure func(*transport.Config)) *Cluster {
	t.Helper()
	c := &Cluster{}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	lis := make([]net.Listener, n)
	hubs := make([]*transport.Hub, n)
	cfg := transport.DefaultConfig()
	if configure != nil {
		configure(&cfg)
	}
	for i := range lis {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i] = l
		c.Endpoints = append(c.Endpoints, l.Addr().String())
		hubs[i] = transport.NewHub(cfg.WatchWindow, cfg.WatchBuffer)
	}
	opts.Listeners = func(i int) []fsm.Listener { return []fsm.Listener{hubs[i]} }
	opts.GRPCAddr = func(i int) string { return c.Endpoints[i] }
	c.Cluster = nodetest.New(t, n, clk, opts)
	for i, nd := range c.Nodes {
		srv, err := transport.New(cfg, nd, hubs[i], nodetest.Logger(t, nd.ID()), nil)
		if err != nil {
			t.Fatal(err)
		}
		nd.SetPeers(srv)
		g := grpc.NewServer(srv.ServerOptions()...)
		srv.Register(g)
		c.servers = append(c.servers, srv)
		c.grpcs = append(c.grpcs, g)
		c.wg.Add(2)
		go func(l net.Listener) {
			defer c.wg.Done()
			_ = g.Serve(l)
		}(lis[i])
		go func() {
			defer c.wg.Done()
			srv.Run(ctx)
		}()
	}
	// Registered after nodetest's cleanup, so it runs first: servers stop
	// before the nodes under them.
	t.Cleanup(c.stopServers)
	return c
}

// Server returns node i's gRPC service.
func (c *Cluster) Server(i int) *transport.Server { return c.servers[i] }

func (c *Cluster) stopServers() {
	c.cancel()
	for i, g := range c.grpcs {
		g.Stop()
		_ = c.servers[i].Close()
	}
	c.wg.Wait()
}
