package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGenerate(t *testing.T) {
	p := newPKI(t)
	if _, _, err := GenerateCA(p.ca, "again", time.Hour); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("GenerateCA over an existing CA: got %v, want fs.ErrExist", err)
	}
	tests := []struct {
		name       string
		opts       []CertOption
		client     bool
		server     bool
		wantID     string
		wantGroups []string
		wantUsage  []x509.ExtKeyUsage
	}{
		{name: "node1", opts: []CertOption{WithGroups(NodeGroup)}, client: true, server: true,
			wantID: "node1", wantGroups: []string{NodeGroup}, wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		{name: "alice", opts: []CertOption{WithGroups("team-a", "devs")}, client: true,
			wantID: "alice", wantGroups: []string{"devs", "team-a"}, wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "carol", opts: []CertOption{WithSPIFFE()}, client: true,
			wantID: "spiffe://leasekeeper/carol", wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{name: "web", server: true, wantID: "web", wantUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile, err := GenerateCert(p.ca, p.certs, tt.name, []string{"localhost"}, p.loopback, tt.client, tt.server, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("key mode: got %v, want 0600", st.Mode().Perm())
			}
			pair, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			leaf := pair.Leaf
			id, groups, ok := CertIdentity(leaf)
			if !ok || id != tt.wantID {
				t.Errorf("identity: got %q (ok=%v), want %q", id, ok, tt.wantID)
			}
			slices.Sort(groups) // the DER encoding of a SET sorts them
			if strings.Join(groups, ",") != strings.Join(tt.wantGroups, ",") {
				t.Errorf("groups: got %v, want %v", groups, tt.wantGroups)
			}
			if len(leaf.ExtKeyUsage) != len(tt.wantUsage) {
				t.Errorf("ext key usage: got %v, want %v", leaf.ExtKeyUsage, tt.wantUsage)
			}
			roots := x509.NewCertPool()
			caPEM, _ := os.ReadFile(p.caFile(p.ca))
			roots.AppendCertsFromPEM(caPEM)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: tt.wantUsage}); err != nil {
				t.Errorf("verify against the CA: %v", err)
			}
		})
	}
	for _, bad := range []string{"", "../x", "a b", "a/b"} {
		if _, _, err := GenerateCert(p.ca, p.certs, bad, nil, nil, true, false); !errors.Is(err, ErrConfig) {
			t.Errorf("GenerateCert(%q): got %v, want ErrConfig", bad, err)
		}
	}
	if _, _, err := GenerateCert(p.ca, p.certs, "nobody", nil, nil, false, false); !errors.Is(err, ErrConfig) {
		t.Errorf("GenerateCert without usage: got %v, want ErrConfig", err)
	}
}

// handshake runs one TLS connection over loopback and reports the client's
// error; the server writes "ok" after its handshake, so a client whose
// certificate the server refuses fails even under TLS 1.3 (where the client
// finishes its half of the handshake first). It returns the certificate
// the server presented.
func handshake(t *testing.T, server, client *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if err := c.(*tls.Conn).Handshake(); err != nil {
			return
		}
		_, _ = c.Write([]byte("ok"))
	}()
	defer func() { <-done }()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

func TestHandshake(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.node(p.ca, "server")
	goodCert, goodKey := p.client(p.ca, "alice")
	otherCert, otherKey := p.client(p.other, "mallory")
	otherSrvCert, otherSrvKey := p.node(p.other, "fake-server")
	caFile := p.caFile(p.ca)

	tests := []struct {
		name              string
		srvCert, srvKey   string
		clientAuth        bool
		cliCert, cliKey   string
		cliCA, serverName string
		maxVersion        uint16
		wantErr           bool
	}{
		{name: "mutual TLS", srvCert: srvCert, srvKey: srvKey, clientAuth: true, cliCert: goodCert, cliKey: goodKey, cliCA: caFile},
		{name: "no client certificate under mTLS", srvCert: srvCert, srvKey: srvKey, clientAuth: true, cliCA: caFile, wantErr: true},
		{name: "client certificate from another CA", srvCert: srvCert, srvKey: srvKey, clientAuth: true, cliCert: otherCert, cliKey: otherKey, cliCA: caFile, wantErr: true},
		{name: "optional client certificate, none given", srvCert: srvCert, srvKey: srvKey, cliCA: caFile},
		{name: "optional client certificate from another CA", srvCert: srvCert, srvKey: srvKey, cliCert: otherCert, cliKey: otherKey, cliCA: caFile, wantErr: true},
		{name: "server certificate from another CA", srvCert: otherSrvCert, srvKey: otherSrvKey, cliCert: goodCert, cliKey: goodKey, cliCA: caFile, wantErr: true},
		{name: "server name matches", srvCert: srvCert, srvKey: srvKey, cliCA: caFile, serverName: "localhost"},
		{name: "server name does not match", srvCert: srvCert, srvKey: srvKey, cliCA: caFile, serverName: "elsewhere.example", wantErr: true},
		{name: "TLS 1.1 refused", srvCert: srvCert, srvKey: srvKey, cliCA: caFile, maxVersion: tls.VersionTLS11, wantErr: true},
		{name: "TLS 1.2 accepted", srvCert: srvCert, srvKey: srvKey, cliCA: caFile, maxVersion: tls.VersionTLS12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _, err := ServerConfig(tt.srvCert, tt.srvKey, caFile, tt.clientAuth)
			if err != nil {
				t.Fatal(err)
			}
			cli, _, err := ClientConfig(tt.cliCert, tt.cliKey, tt.cliCA, tt.serverName)
			if err != nil {
				t.Fatal(err)
			}
			if tt.maxVersion != 0 {
				cli.MinVersion, cli.MaxVersion = tls.VersionTLS10, tt.maxVersion
			}
			_, err = handshake(t, srv, cli)
			if (err != nil) != tt.wantErr {
				t.Fatalf("handshake: got error %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	cert, key := p.node(p.ca, "server")
	tests := []struct {
		name                 string
		cert, key, ca        string
		clientAuth, isClient bool
	}{
		{name: "key without certificate", key: key, ca: p.caFile(p.ca)},
		{name: "server without certificate", ca: p.caFile(p.ca)},
		{name: "client auth without CA", cert: cert, key: key, clientAuth: true},
		{name: "missing CA file", cert: cert, key: key, ca: filepath.Join(p.dir, "nope.crt")},
		{name: "CA file without PEM", cert: cert, key: key, ca: key + ".notthere"},
		{name: "certificate and key do not match", cert: cert, key: p.caFile(p.ca), isClient: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.isClient {
				_, _, err = ClientConfig(tt.cert, tt.key, tt.ca, "")
			} else {
				_, _, err = ServerConfig(tt.cert, tt.key, tt.ca, tt.clientAuth)
			}
			if err == nil {
				t.Fatal("got no error")
			}
		})
	}
}

func TestReloadCertificate(t *testing.T) {
	p := newPKI(t)
	certFile, keyFile := p.node(p.ca, "server")
	srv, r, err := ServerConfig(certFile, keyFile, p.caFile(p.ca), false)
	if err != nil {
		t.Fatal(err)
	}
	cli, _, err := ClientConfig("", "", p.caFile(p.ca), "")
	if err != nil {
		t.Fatal(err)
	}
	first, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}

	// A new certificate on disk is not used until Reload.
	p.node(p.ca, "server")
	got, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("certificate changed before Reload")
	}
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	second, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("after Reload the server still presents serial %v", first.SerialNumber)
	}
	if r.Leaf().SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("Leaf: got serial %v, want %v", r.Leaf().SerialNumber, second.SerialNumber)
	}

	// A broken file fails Reload and keeps the last good certificate.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a broken certificate: got no error")
	}
	kept, err := handshake(t, srv, cli)
	if err != nil {
		t.Fatal(err)
	}
	if kept.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Errorf("after a failed Reload: got serial %v, want %v", kept.SerialNumber, second.SerialNumber)
	}
}

func TestReloadCA(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.node(p.ca, "server")
	bundle := p.bundle("bundle.crt", p.ca)
	srv, r, err := ServerConfig(srvCert, srvKey, bundle, true)
	if err != nil {
		t.Fatal(err)
	}
	newCert, newKey := p.client(p.other, "newcomer")
	cli, _, err := ClientConfig(newCert, newKey, p.caFile(p.ca), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("client of an untrusted CA was accepted")
	}
	p.bundle("bundle.crt", p.ca, p.other)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, srv, cli); err != nil {
		t.Fatalf("after adding its CA and Reload: %v", err)
	}
}

func TestReloadClientCertificate(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.node(p.ca, "server")
	srv, _, err := ServerConfig(srvCert, srvKey, p.caFile(p.ca), true)
	if err != nil {
		t.Fatal(err)
	}
	// The client starts with a certificate from the wrong CA, then gets a
	// good one on disk.
	otherCert, otherKey := p.client(p.other, "client")
	cliCert := filepath.Join(p.dir, "client.crt")
	cliKey := filepath.Join(p.dir, "client.key")
	copyFile(t, otherCert, cliCert)
	copyFile(t, otherKey, cliKey)
	cli, r, err := ClientConfig(cliCert, cliKey, p.caFile(p.ca), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, srv, cli); err == nil {
		t.Fatal("certificate of the wrong CA was accepted")
	}
	goodCert, goodKey := p.client(p.ca, "client")
	copyFile(t, goodCert, cliCert)
	copyFile(t, goodKey, cliKey)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, srv, cli); err != nil {
		t.Fatalf("after Reload: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
