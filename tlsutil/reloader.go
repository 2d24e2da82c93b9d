// Package tlsutil builds the TLS configurations of leasekeeper: server and
// client configs whose certificate, key and CA bundle are re-read from disk
// on Reload (so a SIGHUP rotates them without a restart), a TLS stream layer
// for hashicorp/raft's NetworkTransport, and a small development PKI.
//
// Every config asks for TLS 1.2 at least; Go negotiates 1.3 whenever both
// sides can. Reloading changes what new handshakes use; connections that are
// already open keep the material they were made with.
package tlsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// Errors of this package; match them with errors.Is.
var (
	// ErrConfig reports a bad combination of files or options.
	ErrConfig = errors.New("tlsutil: invalid configuration")
	// ErrPeer reports a peer whose certificate was valid but that is not
	// allowed here (for example a client certificate on the Raft port).
	ErrPeer = errors.New("tlsutil: peer not allowed")
)

// MinVersion is the oldest TLS version any config of this package accepts.
const MinVersion = tls.VersionTLS12

// Reloader holds a certificate, its key and a CA bundle read from files, and
// hands the current ones to new TLS handshakes. It is safe for concurrent
// use. A failed Reload keeps the previous material, so a half-written file
// never takes a node off the network.
type Reloader struct {
	certFile, keyFile, caFile string

	mu  sync.Mutex // serializes Reload
	cur atomic.Pointer[material]
}

// material is one consistent read of the files.
type material struct {
	cert *tls.Certificate // nil when no certificate is configured
	pool *x509.CertPool   // nil when no CA file is configured
}

// NewReloader reads the files once. certFile and keyFile go together (both
// or neither); caFile is the PEM bundle of CAs that peers' certificates must
// chain to, and may be empty on a client that trusts the system roots.
func NewReloader(certFile, keyFile, caFile string) (*Reloader, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%w: the certificate file and the key file go together (cert %q, key %q)", ErrConfig, certFile, keyFile)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the certificate, key and CA files. On error the previous
// material stays in use and the error says which file was wrong.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var m material
	if r.certFile != "" {
		c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
		if err != nil {
			return fmt.Errorf("tlsutil: loading certificate %s and key %s: %w", r.certFile, r.keyFile, err)
		}
		if c.Leaf == nil {
			if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return fmt.Errorf("tlsutil: parsing certificate %s: %w", r.certFile, err)
			}
		}
		m.cert = &c
	}
	if r.caFile != "" {
		pool, err := loadPool(r.caFile)
		if err != nil {
			return err
		}
		m.pool = pool
	}
	r.cur.Store(&m)
	return nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: reading CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("tlsutil: CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// Leaf returns the current certificate, parsed, or nil when none is
// configured. Callers may read its NotAfter to report expiry.
func (r *Reloader) Leaf() *x509.Certificate {
	if c := r.cur.Load().cert; c != nil {
		return c.Leaf
	}
	return nil
}

// CertPool returns the current CA pool, nil when no CA file is configured.
func (r *Reloader) CertPool() *x509.CertPool { return r.cur.Load().pool }

// GetCertificate serves the current certificate to a TLS server handshake.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.cur.Load().cert
	if c == nil {
		return nil, fmt.Errorf("%w: no server certificate configured", ErrConfig)
	}
	return c, nil
}

// GetClientCertificate serves the current certificate to a TLS client
// handshake; with none configured it sends no certificate.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := r.cur.Load().cert; c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// ServerConfig returns a server config that takes its certificate and CA
// pool from r at every handshake. With clientAuth every client must present
// a certificate that chains to the CA bundle (mutual TLS). Without it, a CA
// bundle still makes a client certificate count when one is given (so
// "mtls+token" can accept either), and without a CA bundle client
// certificates are not asked for.
//
// The returned config may be adjusted before use (for example with
// VerifyConnection); each handshake uses a copy of it with the current
// certificate and CA pool, made by GetConfigForClient.
func (r *Reloader) ServerConfig(clientAuth bool) (*tls.Config, error) {
	m := r.cur.Load()
	if m.cert == nil {
		return nil, fmt.Errorf("%w: a server needs a certificate and a key", ErrConfig)
	}
	if clientAuth && m.pool == nil {
		return nil, fmt.Errorf("%w: client certificate authentication needs a CA bundle", ErrConfig)
	}
	base := &tls.Config{
		MinVersion:     MinVersion,
		GetCertificate: r.GetCertificate,
		ClientCAs:      m.pool,
		ClientAuth:     tls.NoClientCert,
		// Resumed sessions would skip verifying the client against the
		// current CA pool; connections here are long-lived, so tickets
		// save little and a CA removal must take effect.
		SessionTicketsDisabled: true,
	}
	switch {
	case clientAuth:
		base.ClientAuth = tls.RequireAndVerifyClientCert
	case m.pool != nil:
		base.ClientAuth = tls.VerifyClientCertIfGiven
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cur := r.cur.Load()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.GetCertificate = nil
		c.Certificates = []tls.Certificate{*cur.cert}
		if cur.pool != nil {
			c.ClientCAs = cur.pool
		}
		return c, nil
	}
	return base, nil
}

// ClientConfig returns a client config that sends the current certificate
// at every handshake (none when r has none) and verifies servers against the
// CA bundle as read now (the system roots when r has no CA file). A CA change
// needs a new config after Reload; ClientCredentials and the Raft stream
// layer's WithClientReloader do that at every handshake.
//
// serverName, when set, is the name the server's certificate must carry
// instead of the host that was dialled.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:           MinVersion,
		RootCAs:              r.cur.Load().pool,
		ServerName:           serverName,
		GetClientCertificate: r.GetClientCertificate,
	}
}

// ClientCredentials returns gRPC transport credentials that build a fresh
// client config from r at every handshake, so a reloaded certificate and
// CA bundle are used by the next connection.
func (r *Reloader) ClientCredentials(serverName string) credentials.TransportCredentials {
	return &reloadingCreds{r: r, serverName: serverName}
}

type reloadingCreds struct {
	r          *Reloader
	serverName string
}

func (c *reloadingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.r.ClientConfig(c.serverName)).ClientHandshake(ctx, authority, conn)
}

func (c *reloadingCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, fmt.Errorf("%w: ClientCredentials are for clients; serve with credentials.NewTLS(ServerConfig)", ErrConfig)
}

// Info names the protocol only: the server name goes into each handshake's
// config, so the channel's authority stays the dialled address.
func (c *reloadingCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (c *reloadingCreds) Clone() credentials.TransportCredentials {
	cp := *c
	return &cp
}

// OverrideServerName is part of the gRPC interface (deprecated there).
func (c *reloadingCreds) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}

// ServerConfig reads the files and returns a reloading server config and its
// Reloader; see Reloader.ServerConfig for what clientAuth means.
func ServerConfig(certFile, keyFile, caFile string, clientAuth bool) (*tls.Config, *Reloader, error) {
	r, err := NewReloader(certFile, keyFile, caFile)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := r.ServerConfig(clientAuth)
	if err != nil {
		return nil, nil, err
	}
	return cfg, r, nil
}

// ClientConfig reads the files and returns a client config and its Reloader;
// certFile and keyFile may be empty (no client certificate), caFile too
// (trust the system roots). See Reloader.ClientConfig.
func ClientConfig(certFile, keyFile, caFile, serverName string) (*tls.Config, *Reloader, error) {
	r, err := NewReloader(certFile, keyFile, caFile)
	if err != nil {
		return nil, nil, err
	}
	return r.ClientConfig(serverName), r, nil
}

// handshakeTimeout bounds a handshake when the caller gives no timeout.
const handshakeTimeout = 10 * time.Second
