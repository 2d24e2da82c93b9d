package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// securityFlags are the TLS and auth settings of a node.
type securityFlags struct {
	cert, key, ca  string
	raftTLS        bool
	authMode       string
	policyFile     string
	tokenFile      string
	nodeTokenFile  string
	insecure       bool
	tlsServerName  string
	requireSecured bool // set by the production profile
}

// security is what the flags build: credentials for the gRPC server, for
// forwarding to the leader and for Raft, and the authenticator.
type security struct {
	reloader   *tlsutil.Reloader
	serverTLS  *tls.Config
	creds      credentials.TransportCredentials
	dial       []grpc.DialOption
	authn      *auth.Authenticator
	raftLayer  *tlsutil.StreamLayer
	raftTrans  *raft.NetworkTransport
	tlsEnabled bool
}

func (f *securityFlags) check() error {
	tlsOn := f.cert != "" || f.key != ""
	if tlsOn && (f.cert == "" || f.key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if f.raftTLS && !tlsOn {
		return errors.New("--raft-tls needs --tls-cert and --tls-key")
	}
	ac := auth.DefaultConfig()
	ac.Mode, ac.PolicyFile, ac.TokenFile = f.authMode, f.policyFile, f.tokenFile
	if err := ac.Validate(); err != nil {
		return err
	}
	if ac.UsesCerts() && f.ca == "" {
		return fmt.Errorf("--auth-mode %s needs --tls-ca to verify client certificates", f.authMode)
	}
	if ac.Enabled() && !tlsOn {
		return fmt.Errorf("--auth-mode %s needs TLS (--tls-cert, --tls-key): identities and tokens must not travel in plain text", f.authMode)
	}
	if f.requireSecured && !tlsOn && !f.insecure {
		return errors.New("the production profile refuses to serve without TLS: give --tls-cert/--tls-key (and --tls-ca), or --insecure to accept plain text explicitly")
	}
	if f.raftTLS && f.ca == "" {
		return errors.New("--raft-tls needs --tls-ca: peers are admitted by a certificate the cluster CA signed")
	}
	if f.requireSecured && ac.Enabled() && !f.raftTLS && !f.insecure {
		return errors.New("the production profile refuses auth with Raft in plain text (anyone who reaches the Raft port could join the log and bypass auth): give --raft-tls, or --insecure to accept it explicitly")
	}
	return nil
}

// warnings lists what the settings leave open, for the log at start-up:
// each is a way in for anyone who reaches the address.
func (f *securityFlags) warnings(grpcAddr, raftAddr string) []string {
	var out []string
	tlsOn := f.cert != ""
	ac := auth.DefaultConfig()
	ac.Mode = f.authMode
	if !ac.Enabled() {
		msg := "auth is off: anyone who reaches the gRPC address may take, release or delete any lease, take snapshots, transfer leadership and add members"
		if !isLoopback(grpcAddr) {
			msg += " (and it is not a loopback address)"
		}
		out = append(out, msg)
	}
	if !tlsOn {
		out = append(out, "TLS is off: requests, answers and tokens travel in plain text")
	}
	if !f.raftTLS {
		msg := "Raft runs in plain text and admits any peer: anyone who reaches the Raft address can read the log and disturb the cluster"
		if ac.Enabled() {
			msg += ", auth notwithstanding"
		}
		if !isLoopback(raftAddr) {
			msg += " (and it is not a loopback address)"
		}
		out = append(out, msg)
	}
	return out
}

// isLoopback reports whether addr's host is a loopback address or
// localhost.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// build makes the credentials and the authenticator.
func (f *securityFlags) build(log hclog.Logger, reg prometheus.Registerer) (*security, error) {
	s := &security{dial: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}}
	ac := auth.DefaultConfig()
	ac.Mode, ac.PolicyFile, ac.TokenFile = f.authMode, f.policyFile, f.tokenFile
	a, err := auth.New(ac, log.Named("auth"), reg)
	if err != nil {
		return nil, err
	}
	s.authn = a
	if f.cert == "" {
		return s, nil
	}
	s.tlsEnabled = true
	r, err := tlsutil.NewReloader(f.cert, f.key, f.ca)
	if err != nil {
		return nil, err
	}
	s.reloader = r
	// Client certificates are verified whenever a CA is given (mutual TLS
	// is then available to every caller, nodes forwarding included), and
	// required on the API in mtls mode only: Raft's own listener requires
	// them (raftTransport), so token-mode callers can keep Raft over TLS.
	srv, err := r.ServerConfig(ac.RequireClientCert())
	if err != nil {
		return nil, err
	}
	s.serverTLS = srv
	s.creds = credentials.NewTLS(srv)
	s.dial = []grpc.DialOption{grpc.WithTransportCredentials(r.ClientCredentials(f.tlsServerName))}
	if f.nodeTokenFile != "" {
		if fi, err := os.Stat(f.nodeTokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the node token file is readable by other users: chmod 600 it", "file", f.nodeTokenFile, "mode", fi.Mode().Perm().String())
		}
		tok, err := os.ReadFile(f.nodeTokenFile)
		if err != nil {
			return nil, fmt.Errorf("--node-token-file: %w", err)
		}
		s.dial = append(s.dial, grpc.WithPerRPCCredentials(auth.BearerToken{Token: strings.TrimSpace(string(tok))}))
	}
	return s, nil
}

// raftTransport builds Raft's transport over TLS, admitting only peers
// whose certificate is in the node group.
func (s *security) raftTransport(bind, advertise string, log hclog.Logger) (raft.Transport, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("--raft-advertise: %w", err)
	}
	srv, err := s.reloader.ServerConfig(true)
	if err != nil {
		return nil, err
	}
	layer, err := tlsutil.NewRaftStreamLayer(bind, adv, srv, nil, tlsutil.WithClientReloader(s.reloader, ""))
	if err != nil {
		return nil, err
	}
	s.raftLayer = layer
	s.raftTrans = raft.NewNetworkTransportWithLogger(layer, 3, 10*time.Second, log.Named("transport"))
	return s.raftTrans, nil
}

// reload re-reads certificates, the policy and the tokens (SIGHUP).
func (s *security) reload(log hclog.Logger) {
	if s.reloader != nil {
		if err := s.reloader.Reload(); err != nil {
			log.Error("reloading certificates failed; keeping the old ones", "error", err)
		} else {
			log.Info("certificates reloaded")
		}
	}
	if err := s.authn.Reload(); err != nil {
		log.Error("reloading the auth policy or tokens failed; keeping the old ones", "error", err)
	} else if s.authn.Enabled() {
		log.Info("auth policy and tokens reloaded")
	}
}

func (s *security) close() {
	if s.raftTrans != nil {
		_ = s.raftTrans.Close()
	}
}

// k8sDial is how the Kubernetes API front end reaches this node's gRPC API:
// with TLS when the node serves it, but with neither the node's client
// certificate nor its token, so an HTTP caller can never act as the node;
// its own bearer token passes through instead.
func (s *security) k8sDial(serverName string) []grpc.DialOption {
	if s.reloader == nil {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: s.reloader.CertPool(), ServerName: serverName, MinVersion: tls.VersionTLS12,
	}))}
}
