package tlsutil

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// layer builds a stream layer on loopback from a certificate (empty: plain
// TCP).
func layer(t *testing.T, cert, key, ca string, opts ...RaftOption) *StreamLayer {
	t.Helper()
	var srv, cli *tls.Config
	if cert != "" {
		r, err := NewReloader(cert, key, ca)
		if err != nil {
			t.Fatal(err)
		}
		if srv, err = r.ServerConfig(true); err != nil {
			t.Fatal(err)
		}
		cli = r.ClientConfig("")
	}
	l, err := NewRaftStreamLayer("127.0.0.1:0", nil, srv, cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// voter is a NetworkTransport that grants every vote it is asked for.
type voter struct {
	trans *raft.NetworkTransport
	stop  chan struct{}
	wg    sync.WaitGroup
}

func newVoter(t *testing.T, l *StreamLayer) *voter {
	v := &voter{trans: raft.NewNetworkTransportWithLogger(l, 3, 2*time.Second, testLogger(t)), stop: make(chan struct{})}
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		for {
			select {
			case <-v.stop:
				return
			case rpc := <-v.trans.Consumer():
				rpc.Respond(&raft.RequestVoteResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 1, Granted: true}, nil)
			}
		}
	}()
	t.Cleanup(func() {
		close(v.stop)
		v.wg.Wait()
		v.trans.CloseStreams()
		_ = v.trans.Close()
	})
	return v
}

func requestVote(from, to *voter) error {
	var resp raft.RequestVoteResponse
	err := from.trans.RequestVote("a", to.trans.LocalAddr(), &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}, Term: 1,
	}, &resp)
	if err == nil && !resp.Granted {
		err = errors.New("vote not granted")
	}
	return err
}

func TestRaftStreamLayer(t *testing.T) {
	p := newPKI(t)
	ca := p.caFile(p.ca)
	aCert, aKey := p.node(p.ca, "node-a")
	bCert, bKey := p.node(p.ca, "node-b")
	strangerCert, strangerKey := p.node(p.other, "stranger")
	aliceCert, aliceKey := p.client(p.ca, "alice", WithGroups("team-a"))

	tests := []struct {
		name    string
		server  func() *StreamLayer
		dialer  func() *StreamLayer
		wantErr bool
	}{
		{name: "nodes of one CA", wantErr: false,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer { return layer(t, bCert, bKey, ca) }},
		{name: "node certificate from another CA", wantErr: true,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer { return layer(t, strangerCert, strangerKey, p.caFile(p.other)) }},
		{name: "node certificate from another CA, trusting ours", wantErr: true,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer { return layer(t, strangerCert, strangerKey, ca) }},
		{name: "node that trusts another CA", wantErr: true,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer { return layer(t, bCert, bKey, p.caFile(p.other)) }},
		{name: "user certificate of the same CA", wantErr: true,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer { return layer(t, aliceCert, aliceKey, ca) }},
		{name: "user certificate allowed by AllowAnyPeer", wantErr: false,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca, AllowAnyPeer()) },
			dialer: func() *StreamLayer { return layer(t, aliceCert, aliceKey, ca, AllowAnyPeer()) }},
		{name: "dialer reloading its client material", wantErr: false,
			server: func() *StreamLayer { return layer(t, aCert, aKey, ca) },
			dialer: func() *StreamLayer {
				r, err := NewReloader(bCert, bKey, ca)
				if err != nil {
					t.Fatal(err)
				}
				srv, err := r.ServerConfig(true)
				if err != nil {
					t.Fatal(err)
				}
				l, err := NewRaftStreamLayer("127.0.0.1:0", nil, srv, nil, WithClientReloader(r, ""))
				if err != nil {
					t.Fatal(err)
				}
				return l
			}},
		{name: "plain TCP", wantErr: false,
			server: func() *StreamLayer { return layer(t, "", "", "") },
			dialer: func() *StreamLayer { return layer(t, "", "", "") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newVoter(t, tt.server())
			b := newVoter(t, tt.dialer())
			err := requestVote(b, a)
			if (err != nil) != tt.wantErr {
				t.Fatalf("RequestVote: got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestRaftDialChecksServerGroup(t *testing.T) {
	p := newPKI(t)
	ca := p.caFile(p.ca)
	// A server whose certificate verifies but is not a node's.
	webCert, webKey, err := GenerateCert(p.ca, p.certs, "web", []string{"localhost"}, p.loopback, true, true)
	if err != nil {
		t.Fatal(err)
	}
	web := layer(t, webCert, webKey, ca, AllowAnyPeer())
	defer web.Close()
	go func() {
		c, err := web.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Read(make([]byte, 1))
	}()
	nodeCert, nodeKey := p.node(p.ca, "node-b")
	b := layer(t, nodeCert, nodeKey, ca)
	defer b.Close()
	c, err := b.Dial(raft.ServerAddress(web.Addr().String()), 2*time.Second)
	if !errors.Is(err, ErrPeer) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Dial to a non-node: got %v, want ErrPeer", err)
	}
}

func TestRaftStreamLayerConfig(t *testing.T) {
	p := newPKI(t)
	cert, key := p.node(p.ca, "node-a")
	r, err := NewReloader(cert, key, p.caFile(p.ca))
	if err != nil {
		t.Fatal(err)
	}
	mtls, _ := r.ServerConfig(true)
	serverOnly, _ := r.ServerConfig(false)
	cli := r.ClientConfig("")
	tests := []struct {
		name      string
		bind      string
		advertise net.Addr
		srv, cli  *tls.Config
		opts      []RaftOption
		wantErr   bool
	}{
		{name: "server config only", bind: "127.0.0.1:0", srv: mtls, wantErr: true},
		{name: "client config only", bind: "127.0.0.1:0", cli: cli, wantErr: true},
		{name: "peer check without client certificates", bind: "127.0.0.1:0", srv: serverOnly, cli: cli, wantErr: true},
		{name: "server-only TLS with AllowAnyPeer", bind: "127.0.0.1:0", srv: serverOnly, cli: cli, opts: []RaftOption{AllowAnyPeer()}},
		{name: "empty peer groups", bind: "127.0.0.1:0", srv: mtls, cli: cli, opts: []RaftOption{WithPeerGroups()}, wantErr: true},
		{name: "wildcard without advertise", bind: "0.0.0.0:0", srv: mtls, cli: cli, wantErr: true},
		{name: "wildcard with advertise", bind: "0.0.0.0:0", advertise: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7000}, srv: mtls, cli: cli},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := NewRaftStreamLayer(tt.bind, tt.advertise, tt.srv, tt.cli, tt.opts...)
			if err == nil {
				if tt.advertise != nil && l.Addr() != tt.advertise {
					t.Errorf("Addr: got %v, want %v", l.Addr(), tt.advertise)
				}
				l.Close()
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestClientCredentialsReload checks that gRPC client credentials pick up a
// new CA bundle for the next connection.
func TestClientCredentialsReload(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.node(p.other, "server") // signed by the CA the client does not trust yet
	srvCfg, _, err := ServerConfig(srvCert, srvKey, "", false)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(srvCfg)))
	healthpb.RegisterHealthServer(g, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(ln)
	}()
	defer func() {
		g.Stop()
		<-done
	}()

	bundle := p.bundle("client-bundle.crt", p.ca)
	r, err := NewReloader("", "", bundle)
	if err != nil {
		t.Fatal(err)
	}
	check := func() error {
		conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(r.ClientCredentials("")))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(); err == nil {
		t.Fatal("server of an untrusted CA was accepted")
	}
	p.bundle("client-bundle.crt", p.ca, p.other)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatalf("after adding the CA and Reload: %v", err)
	}
}
