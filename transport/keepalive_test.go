package transport

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// countingListener counts the connections it accepts and the bytes read
// from them.
type countingListener struct {
	net.Listener
	accepted atomic.Int32
	read     atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
		c = &countingConn{Conn: c, l: l}
	}
	return c, err
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.read.Add(int64(n))
	return n, err
}

// TestIdleClientKeepsItsConnection: a client that pings at keepaliveTime,
// as other nodes and the Go client do, with no call open, is not sent
// GOAWAY (too_many_pings) by the server's enforcement policy. The server
// tolerates two pings too early, so the client stays idle for more than
// three intervals, then calls again on the same connection.
func TestIdleClientKeepsItsConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("idles for 35 s")
	}
	t.Parallel()
	if keepaliveMinTime > keepaliveTime {
		t.Fatalf("the server admits pings every %v, slower than clients send them (%v)", keepaliveMinTime, keepaliveTime)
	}
	srv, err := New(DefaultConfig(), newFakeNode(), nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis := &countingListener{Listener: inner}
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.Serve(lis) })
	defer wg.Wait()
	defer g.Stop()

	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), srv.clientKeepalive())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check: %v", err)
		}
	}
	check()
	idleFrom := lis.read.Load()
	end := time.Now().Add(3*keepaliveTime + keepaliveTime/2)
	for time.Now().Before(end) {
		if st := cc.GetState(); st != connectivity.Ready {
			t.Fatalf("connection went %v while idle (GOAWAY too_many_pings?)", st)
		}
		time.Sleep(200 * time.Millisecond) // sampling the connection's state
	}
	// Three pings at least: 17 bytes each (frame header and payload).
	if got := lis.read.Load() - idleFrom; got < 3*17 {
		t.Errorf("the server read %d bytes while the client idled, want three pings at least", got)
	}
	check()
	if n := lis.accepted.Load(); n != 1 {
		t.Errorf("%d connections accepted, want the one kept", n)
	}
}
