package auth

import (
	"fmt"
	"slices"

	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// Modes of Config.Mode.
const (
	// ModeNone turns auth off: every caller is Anonymous and may do
	// anything.
	ModeNone = "none"
	// ModeMTLS takes the identity from the verified client certificate;
	// the server must require client certificates.
	ModeMTLS = "mtls"
	// ModeToken takes the identity from a bearer token. Serve TLS (without
	// client certificates) so tokens never cross the network in clear.
	ModeToken = "token"
	// ModeMTLSToken accepts either: a bearer token when the request has
	// one, else the client certificate. The server verifies client
	// certificates when given (tlsutil's ServerConfig with clientAuth false
	// and a CA bundle).
	ModeMTLSToken = "mtls+token"
)

// Modes lists the valid modes, for flag help.
var Modes = []string{ModeNone, ModeMTLS, ModeToken, ModeMTLSToken}

// Config chooses how callers are authenticated and where the rules live.
type Config struct {
	// Mode is one of Modes.
	Mode string
	// TokenFile is the YAML token file (see ParseTokenFile); required for
	// the token modes, refused otherwise.
	TokenFile string
	// PolicyFile is the YAML policy (see ParsePolicy); required unless Mode
	// is "none".
	PolicyFile string
	// NodeGroup is the group of node identities, the only ones trusted to
	// forward requests on behalf of others.
	NodeGroup string
	// PublicMethods are full gRPC method names (or "/service/*") served to
	// anyone, authenticated or not; the health service by default, so
	// probes need no credentials.
	PublicMethods []string
}

// DefaultConfig returns auth off, with the default node group and public
// methods.
func DefaultConfig() Config {
	return Config{
		Mode:          ModeNone,
		NodeGroup:     tlsutil.NodeGroup,
		PublicMethods: []string{"/grpc.health.v1.Health/*"},
	}
}

// Validate checks that the fields fit the mode.
func (c Config) Validate() error {
	if !slices.Contains(Modes, c.Mode) {
		return fmt.Errorf("%w: Mode %q is not one of %v", ErrInvalidConfig, c.Mode, Modes)
	}
	if c.Mode == ModeNone {
		return nil
	}
	if c.UsesTokens() && c.TokenFile == "" {
		return fmt.Errorf("%w: Mode %q needs TokenFile", ErrInvalidConfig, c.Mode)
	}
	if !c.UsesTokens() && c.TokenFile != "" {
		return fmt.Errorf("%w: TokenFile is set but Mode %q does not use tokens", ErrInvalidConfig, c.Mode)
	}
	if c.PolicyFile == "" {
		return fmt.Errorf("%w: Mode %q needs PolicyFile (without it nothing would be allowed)", ErrInvalidConfig, c.Mode)
	}
	if c.NodeGroup == "" {
		return fmt.Errorf("%w: NodeGroup is empty; nodes could not forward requests", ErrInvalidConfig)
	}
	for _, m := range c.PublicMethods {
		if len(m) < 2 || m[0] != '/' {
			return fmt.Errorf("%w: PublicMethods entry %q is not a full method name like /pkg.Service/Method", ErrInvalidConfig, m)
		}
	}
	return nil
}

// Enabled reports whether callers are authenticated at all.
func (c Config) Enabled() bool { return c.Mode != ModeNone }

// UsesTokens reports whether the mode reads bearer tokens.
func (c Config) UsesTokens() bool { return c.Mode == ModeToken || c.Mode == ModeMTLSToken }

// UsesCerts reports whether the mode reads client certificates.
func (c Config) UsesCerts() bool { return c.Mode == ModeMTLS || c.Mode == ModeMTLSToken }

// RequireClientCert reports whether the TLS server must refuse clients
// without a certificate: the clientAuth argument of tlsutil.ServerConfig.
func (c Config) RequireClientCert() bool { return c.Mode == ModeMTLS }
