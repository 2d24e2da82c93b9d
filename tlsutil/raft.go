package tlsutil

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// StreamLayer is a raft.StreamLayer over TCP, with TLS when it is given TLS
// configs. Build the transport with
//
//	raft.NewNetworkTransportWithLogger(layer, 3, 10*time.Second, logger)
//
// With TLS, both ends check the other's certificate: the server asks for a
// client certificate and each side, once the chain is verified, requires the
// peer's certificate to carry one of the peer groups (NodeGroup unless
// WithPeerGroups or AllowAnyPeer say otherwise). A user's client certificate
// from the same CA therefore cannot speak Raft.
type StreamLayer struct {
	ln         net.Listener
	advertise  net.Addr
	serverTLS  *tls.Config
	dialConfig func() *tls.Config // nil: plain TCP
	peerGroups []string           // empty: any verified peer
	timeout    time.Duration      // handshake bound for accepted conns
}

var _ raft.StreamLayer = (*StreamLayer)(nil)

// RaftOption adjusts NewRaftStreamLayer.
type RaftOption func(*raftOptions)

type raftOptions struct {
	peerGroups []string
	anyPeer    bool
	reloader   *Reloader
	serverName string
	timeout    time.Duration
}

// WithPeerGroups sets the certificate Organizations a peer must carry one
// of, instead of NodeGroup.
func WithPeerGroups(groups ...string) RaftOption {
	return func(o *raftOptions) { o.peerGroups = groups }
}

// AllowAnyPeer accepts any peer whose certificate chain verifies (or, for
// server-only TLS, any client at all). Use it only when the CA issues
// certificates to nodes alone.
func AllowAnyPeer() RaftOption { return func(o *raftOptions) { o.anyPeer = true } }

// WithClientReloader makes every dial build its config from r as it is at
// that moment (r.ClientConfig(serverName)), so a reloaded CA bundle is used
// for outgoing Raft connections too; clientTLS may then be nil.
func WithClientReloader(r *Reloader, serverName string) RaftOption {
	return func(o *raftOptions) { o.reloader, o.serverName = r, serverName }
}

// WithHandshakeTimeout bounds the TLS handshake of accepted connections (10 s
// by default); dials are bounded by the timeout Raft passes to Dial.
func WithHandshakeTimeout(d time.Duration) RaftOption {
	return func(o *raftOptions) { o.timeout = d }
}

// NewRaftStreamLayer listens on bindAddr. advertise is the address the other
// nodes dial (needed when bindAddr is a wildcard). serverTLS secures accepted
// connections and clientTLS dialled ones; both nil means plain TCP. When the
// server does not require client certificates, the peer check needs
// AllowAnyPeer, so that Raft is never left open by accident.
//
// A dial verifies the server's certificate against clientTLS's roots and the
// dialled host (or clientTLS.ServerName when set), so node certificates need
// SANs for the addresses the nodes advertise, or a shared name set as
// ServerName.
func NewRaftStreamLayer(bindAddr string, advertise net.Addr, serverTLS, clientTLS *tls.Config, opts ...RaftOption) (*StreamLayer, error) {
	o := raftOptions{peerGroups: []string{NodeGroup}, timeout: handshakeTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	l := &StreamLayer{advertise: advertise, serverTLS: serverTLS, timeout: o.timeout}
	switch {
	case o.reloader != nil:
		l.dialConfig = func() *tls.Config { return o.reloader.ClientConfig(o.serverName) }
	case clientTLS != nil:
		l.dialConfig = clientTLS.Clone
	}
	if (serverTLS == nil) != (l.dialConfig == nil) {
		return nil, fmt.Errorf("%w: raft TLS needs both a server and a client config, or neither", ErrConfig)
	}
	if serverTLS != nil && !o.anyPeer {
		if len(o.peerGroups) == 0 {
			return nil, fmt.Errorf("%w: raft peer check with no groups; use AllowAnyPeer to accept every verified peer", ErrConfig)
		}
		if serverTLS.ClientAuth != tls.RequireAndVerifyClientCert {
			return nil, fmt.Errorf("%w: raft peers are checked by certificate, so the server config must require client certificates (mutual TLS), or use AllowAnyPeer", ErrConfig)
		}
		l.peerGroups = o.peerGroups
	}
	if l.timeout <= 0 {
		return nil, fmt.Errorf("%w: handshake timeout must be positive, got %v", ErrConfig, l.timeout)
	}
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: raft listener: %w", err)
	}
	l.ln = ln
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok || addr.IP == nil || addr.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("%w: raft address %v is not one other nodes can dial; set the advertise address", ErrConfig, l.Addr())
	}
	return l, nil
}

// Addr returns the advertised address, else the listener's.
func (l *StreamLayer) Addr() net.Addr {
	if l.advertise != nil {
		return l.advertise
	}
	return l.ln.Addr()
}

// Close stops the listener; connections already made stay open (Raft owns
// and closes them).
func (l *StreamLayer) Close() error { return l.ln.Close() }

// Accept returns the next connection. With TLS the handshake runs on the
// connection's first read or write, in Raft's per-connection goroutine, so a
// slow or hostile peer never stalls the accept loop.
func (l *StreamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil || l.serverTLS == nil {
		return c, err
	}
	return &lazyConn{Conn: tls.Server(c, l.serverTLS), l: l}, nil
}

// Dial connects to a peer and completes the TLS handshake within timeout,
// so a peer with a bad certificate fails here.
func (l *StreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = l.timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil || l.dialConfig == nil {
		return raw, err
	}
	cfg := l.dialConfig()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			raw.Close()
			return nil, err
		}
		cfg.ServerName = host
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tlsutil: raft handshake with %s: %w", address, err)
	}
	if err := l.checkPeer(tc); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tlsutil: raft peer %s: %w", address, err)
	}
	return tc, nil
}

// checkPeer applies the peer-group rule to a finished handshake.
func (l *StreamLayer) checkPeer(c *tls.Conn) error {
	if len(l.peerGroups) == 0 {
		return nil
	}
	st := c.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no verified certificate", ErrPeer)
	}
	leaf := st.PeerCertificates[0]
	if !inGroups(leaf, l.peerGroups) {
		name, _, _ := CertIdentity(leaf)
		return fmt.Errorf("%w: certificate %q is not in group %v", ErrPeer, name, l.peerGroups)
	}
	return nil
}

// lazyConn is an accepted TLS connection that handshakes, with a time bound
// and the peer check, before its first read or write.
type lazyConn struct {
	*tls.Conn
	l    *StreamLayer
	once sync.Once
	err  error
}

func (c *lazyConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.l.timeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("tlsutil: raft handshake from %s: %w", c.RemoteAddr(), err)
		} else if err := c.l.checkPeer(c.Conn); err != nil {
			c.err = fmt.Errorf("tlsutil: raft peer %s: %w", c.RemoteAddr(), err)
		}
		if c.err != nil {
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *lazyConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *lazyConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}
