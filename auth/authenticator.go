package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/leasekeeper/leasekeeper/tlsutil"
)

// Metadata keys of forwarded requests (see the package documentation).
const (
	MDForwardedBy = "x-leasekeeper-forwarded-by"
	MDIdentity    = "x-leasekeeper-identity"
	MDGroups      = "x-leasekeeper-groups"
	MDSource      = "x-leasekeeper-source"
	// MDAuthorization carries "Bearer <token>".
	MDAuthorization = "authorization"
)

// maxGroups bounds the groups a forwarded identity may state.
const maxGroups = 256

// Authenticator authenticates callers and applies the policy. Build one with
// New; it is safe for concurrent use, and Reload swaps the token file and
// policy while requests run.
type Authenticator struct {
	cfg    Config
	log    hclog.Logger
	denied *prometheus.CounterVec

	mu     sync.Mutex // serializes Reload
	policy atomic.Pointer[Policy]
	tokens atomic.Pointer[Tokens]

	streamsMu sync.Mutex
	streams   map[*openStream]struct{} // open authenticated streams, checked again by Reload
}

// New checks cfg, reads its files and registers leasekeeper_auth_denied_total
// on reg (nil: no metrics). log may be nil.
func New(cfg Config, log hclog.Logger, reg prometheus.Registerer) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	a := &Authenticator{cfg: cfg, log: log}
	a.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "leasekeeper_auth_denied_total",
		Help: "Requests refused by authentication or authorization, by verb and reason.",
	}, []string{"verb", "reason"})
	if reg != nil {
		if err := reg.Register(a.denied); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				return nil, fmt.Errorf("auth: registering metrics: %w", err)
			}
			a.denied = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	return a, nil
}

// Config returns the configuration a was built with.
func (a *Authenticator) Config() Config { return a.cfg }

// Enabled reports whether auth is on (Mode is not "none").
func (a *Authenticator) Enabled() bool { return a.cfg.Enabled() }

// Reload re-reads the token file and the policy. Both are parsed before
// either is swapped in, so on error the old ones stay in force together.
func (a *Authenticator) Reload() error {
	if !a.Enabled() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var toks *Tokens
	if a.cfg.UsesTokens() {
		t, err := LoadTokenFile(a.cfg.TokenFile)
		if err != nil {
			return err
		}
		toks = t
	}
	pol, err := LoadPolicy(a.cfg.PolicyFile)
	if err != nil {
		return err
	}
	a.tokens.Store(toks)
	a.policy.Store(pol)
	a.log.Info("auth configuration loaded", "mode", a.cfg.Mode, "policy", pol.String(), "tokens", toks.Len())
	a.recheckStreams()
	return nil
}

// Policy returns the policy in force (nil when auth is off).
func (a *Authenticator) Policy() *Policy { return a.policy.Load() }

// Authenticate returns the caller of an incoming gRPC request: Anonymous
// when auth is off; else the identity its token or certificate proves, or,
// when a node forwarded the request, the identity the node states. Errors
// are *Error values (Unauthenticated, or PermissionDenied for identity
// headers from a non-node).
func (a *Authenticator) Authenticate(ctx context.Context) (Identity, error) {
	if !a.Enabled() {
		return Anonymous, nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	caller, err := a.direct(ctx, md)
	if err != nil {
		return Identity{}, err
	}
	fwd, name, groups, src := md.Get(MDForwardedBy), md.Get(MDIdentity), md.Get(MDGroups), md.Get(MDSource)
	if len(fwd)+len(name)+len(groups)+len(src) == 0 {
		return caller, nil
	}
	if !caller.InGroup(a.cfg.NodeGroup) {
		return Identity{}, denied(ReasonForwarder, "%q is not a node (group %q) and may not forward requests or state an identity", caller.Name, a.cfg.NodeGroup)
	}
	if len(fwd) != 1 {
		return Identity{}, unauthenticated("node %q sent %d %s values, want 1", caller.Name, len(fwd), MDForwardedBy)
	}
	if len(name) == 0 {
		if len(groups)+len(src) > 0 {
			return Identity{}, unauthenticated("node %q sent groups or source without %s", caller.Name, MDIdentity)
		}
		return caller, nil // the node's own request, such as registering its address
	}
	if len(name) != 1 || !validName(name[0]) {
		return Identity{}, unauthenticated("node %q sent a malformed %s", caller.Name, MDIdentity)
	}
	if len(groups) > maxGroups {
		return Identity{}, unauthenticated("node %q sent %d groups, at most %d", caller.Name, len(groups), maxGroups)
	}
	for _, g := range groups {
		if !validName(g) {
			return Identity{}, unauthenticated("node %q sent a malformed group", caller.Name)
		}
	}
	id := Identity{Name: name[0], Groups: groups, Source: SourceForwarded, Via: caller.Name}
	if len(src) == 1 {
		switch src[0] {
		case SourceCert, SourceToken, SourceNone:
			id.Source = src[0]
		}
	}
	return id, nil
}

// direct returns the identity the connection or the request's own
// credentials prove.
func (a *Authenticator) direct(ctx context.Context, md metadata.MD) (Identity, error) {
	if a.cfg.UsesTokens() {
		vals := md.Get(MDAuthorization)
		if len(vals) > 1 {
			return Identity{}, unauthenticated("more than one authorization header")
		}
		if len(vals) == 1 {
			tok, err := ParseBearer(vals[0])
			if err != nil {
				return Identity{}, err
			}
			id, ok := a.tokens.Load().Lookup(tok)
			if !ok {
				return Identity{}, unauthenticated("unknown bearer token")
			}
			return id, nil
		}
	}
	if a.cfg.UsesCerts() {
		if id, ok, err := certIdentity(ctx); ok || err != nil {
			return id, err
		}
	}
	switch a.cfg.Mode {
	case ModeMTLS:
		return Identity{}, unauthenticated("no verified client certificate")
	case ModeToken:
		return Identity{}, unauthenticated("no bearer token (authorization: Bearer <token>)")
	}
	return Identity{}, unauthenticated("no verified client certificate or bearer token")
}

// certIdentity reads the verified client certificate of the connection.
func certIdentity(ctx context.Context) (Identity, bool, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false, nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.PeerCertificates) == 0 {
		return Identity{}, false, nil
	}
	name, groups, ok := tlsutil.CertIdentity(info.State.PeerCertificates[0])
	if !ok {
		return Identity{}, false, unauthenticated("client certificate names nobody (no URI SAN, no Common Name)")
	}
	if !validName(name) {
		return Identity{}, false, unauthenticated("client certificate name %q is not printable ASCII", name)
	}
	kept := groups[:0]
	for _, g := range groups {
		if validName(g) {
			kept = append(kept, g)
		}
	}
	return Identity{Name: name, Groups: kept, Source: SourceCert}, true, nil
}

// Authorize returns nil when auth is off or the policy lets id do verb on
// namespace/name ("" namespace means "default"; AllNamespaces for a List or
// Watch across all; both ignored for VerbAdmin). A denial is an *Error
// wrapping ErrPermissionDenied, counted and logged.
func (a *Authenticator) Authorize(id Identity, verb, namespace, name string) error {
	if !a.Enabled() {
		return nil
	}
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if err := a.policy.Load().Authorize(id, verb, namespace, name); err != nil {
		a.deny(id, verb, err, "namespace", namespace, "name", name)
		return err
	}
	return nil
}

// BindHolder returns nil when auth is off, holder is empty (request
// validation refuses that), holder is id's own name, or the policy's actAs
// lets id use it; else an *Error wrapping ErrPermissionDenied.
func (a *Authenticator) BindHolder(id Identity, holder string) error {
	if !a.Enabled() || holder == "" || a.policy.Load().MayActAs(id, holder) {
		return nil
	}
	err := denied(ReasonHolder, "%q may not act as holder %q", id.Name, holder)
	a.deny(id, "", err, "holder", holder)
	return err
}

// MayEndHoldingContext returns nil when auth is off or the identity in ctx
// may replace or end the live holding of holder on namespace/name with a
// whole-object write: it may act as that holder (its own release or
// hand-over), or the policy grants it VerbDelete there (it could delete
// the lease, holding and all, anyway). Otherwise an *Error wrapping
// ErrPermissionDenied, counted and logged once.
func (a *Authenticator) MayEndHoldingContext(ctx context.Context, namespace, name, holder string) error {
	if !a.Enabled() {
		return nil
	}
	id, err := a.contextIdentity(ctx, VerbDelete)
	if err != nil {
		return err
	}
	if namespace == "" {
		namespace = DefaultNamespace
	}
	p := a.policy.Load()
	if p.MayActAs(id, holder) || p.Authorize(id, VerbDelete, namespace, name) == nil {
		return nil
	}
	err = denied(ReasonHolder, "%q may not replace or end the holding of %q on %s/%s (it needs to act as that holder, or the %q verb)",
		id.Name, holder, namespace, name, VerbDelete)
	a.deny(id, VerbDelete, err, "namespace", namespace, "name", name, "holder", holder)
	return err
}

// AuthorizeContext is Authorize for the identity the interceptors put in
// ctx. Call it where the server decides the verb: Acquire (AcquireVerb) and
// each lease of a KeepAlive batch (VerbUpdate).
func (a *Authenticator) AuthorizeContext(ctx context.Context, verb, namespace, name string) error {
	if !a.Enabled() {
		return nil
	}
	id, err := a.contextIdentity(ctx, verb)
	if err != nil {
		return err
	}
	return a.Authorize(id, verb, namespace, name)
}

// BindHolderContext is BindHolder for the identity in ctx; call it for each
// lease of a KeepAlive batch.
func (a *Authenticator) BindHolderContext(ctx context.Context, holder string) error {
	if !a.Enabled() {
		return nil
	}
	id, err := a.contextIdentity(ctx, "")
	if err != nil {
		return err
	}
	return a.BindHolder(id, holder)
}

func (a *Authenticator) contextIdentity(ctx context.Context, verb string) (Identity, error) {
	id, ok := FromContext(ctx)
	if !ok {
		err := unauthenticated("no identity in the request context (auth interceptors not installed?)")
		a.deny(Identity{}, verb, err)
		return Identity{}, err
	}
	return id, nil
}

// AcquireVerb is the verb an Acquire needs: create when the lease does not
// exist yet, update when it does.
func AcquireVerb(exists bool) string {
	if exists {
		return VerbUpdate
	}
	return VerbCreate
}

// deny counts and logs a denial.
func (a *Authenticator) deny(id Identity, verb string, err error, kv ...any) {
	reason := ReasonForbidden
	if e, ok := errors.AsType[*Error](err); ok {
		reason = e.Reason
	}
	if verb == "" {
		verb = "none"
	}
	a.denied.WithLabelValues(verb, reason).Inc()
	a.log.Debug("request denied", append([]any{"identity", id.String(), "verb", verb, "reason", reason, "error", err}, kv...)...)
}

// ForwardContext returns the outgoing context for forwarding the request of
// ctx to the leader: it marks the request as forwarded by nodeID and, when
// ctx holds an identity (every request that passed the interceptors does),
// states it for the leader. A ctx without an identity forwards the node's
// own request.
func ForwardContext(ctx context.Context, nodeID string) context.Context {
	kv := []string{MDForwardedBy, nodeID}
	if id, ok := FromContext(ctx); ok {
		kv = append(kv, MDIdentity, id.Name, MDSource, id.Source)
		for _, g := range id.Groups {
			kv = append(kv, MDGroups, g)
		}
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// BearerToken is gRPC per-RPC credentials that send "authorization: Bearer
// <Token>", for leasectl, the client library and nodes in token mode.
type BearerToken struct {
	Token string
	// AllowInsecure lets the token go over a connection without TLS; for
	// tests only.
	AllowInsecure bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b BearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{MDAuthorization: "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b BearerToken) RequireTransportSecurity() bool { return !b.AllowInsecure }
