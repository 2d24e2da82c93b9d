// Package auth authenticates leasekeeper callers and authorizes what they
// do.
//
// # Identities
//
// A caller is an Identity: a name, groups and the source that proved them.
// Under mutual TLS the verified client certificate names the caller (its
// first URI SAN, else its Common Name; its Organization values are the
// groups). With tokens, the request carries "authorization: Bearer <token>"
// and the token file maps the token's SHA-256 to a name and groups; the file
// holds hashes only, so reading it does not reveal tokens.
//
// # Authorization
//
// A policy file grants verbs on namespaces (and optionally on some lease
// names) to users and groups through roles and bindings, as Kubernetes RBAC
// does, and says which holder identities a caller may use besides its own
// name (actAs). The gRPC interceptors authenticate every call and authorize
// the methods whose verb and lease the request alone decides (see Methods),
// including the holder_identity of Acquire, Renew and Release. The server
// authorizes the rest itself with Authenticator.AuthorizeContext: Acquire
// (create when the lease does not exist, update when it does; the
// interceptor only requires one of the two) and each lease of a KeepAlive
// batch (update, plus BindHolderContext).
//
// # Forwarded requests
//
// A follower forwards writes to the leader over gRPC, authenticated as
// itself (its node certificate or node token). Its identity is not the
// caller's, and the original credentials are not forwarded, so the follower
// sends the caller's identity as metadata (ForwardContext):
//
//	x-leasekeeper-forwarded-by: <node id>
//	x-leasekeeper-identity:     <caller name>
//	x-leasekeeper-groups:       <group> (one value per group)
//	x-leasekeeper-source:       mtls | token | none
//
// The receiving node trusts those headers only when the connection itself
// authenticates as a node, that is an identity in Config.NodeGroup
// (tlsutil.NodeGroup by default). A request from anyone else that carries
// any of them is refused with PermissionDenied, so no client can claim an
// identity by setting a header. The leader then authorizes the original
// caller, exactly as if it had called the leader directly. A node's own
// calls (registering its address with Join) carry forwarded-by without an
// identity and are authorized as the node itself, so the policy must grant
// NodeGroup the admin verb.
//
// Every node holds all the data and can propose anything through Raft, so
// trusting nodes to state the caller adds no power they lack; what it rules
// out is a client, or a token, claiming to be someone else.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors of this package. Denials wrap ErrUnauthenticated or
// ErrPermissionDenied and carry a gRPC status with the matching code, so
// status.Convert and errors.Is both work on them.
var (
	// ErrUnauthenticated: the caller proved no identity, or a bad one.
	ErrUnauthenticated = errors.New("auth: unauthenticated")
	// ErrPermissionDenied: the identity may not do what it asked.
	ErrPermissionDenied = errors.New("auth: permission denied")
	// ErrInvalidConfig: a Config, policy file or token file is wrong.
	ErrInvalidConfig = errors.New("auth: invalid configuration")
)

// Verbs that the policy grants. VerbAll in a rule grants every verb.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbWatch  = "watch"
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbDelete = "delete"
	// VerbAdmin is the cluster-wide verb of Snapshot, Join, RemoveMember and
	// TransferLeadership. Only rules whose namespaces include "*" grant it.
	VerbAdmin = "admin"
	VerbAll   = "*"
)

var knownVerbs = []string{VerbGet, VerbList, VerbWatch, VerbCreate, VerbUpdate, VerbDelete, VerbAdmin, VerbAll}

// AllNamespaces is the namespace to authorize a List or Watch across every
// namespace; only rules whose namespaces include "*" match it.
const AllNamespaces = "*"

// DefaultNamespace is the namespace of a request that names none.
const DefaultNamespace = "default"

// Sources of an Identity.
const (
	SourceNone      = "none"      // auth is off
	SourceCert      = "mtls"      // a verified client certificate
	SourceToken     = "token"     // a bearer token from the token file
	SourceForwarded = "forwarded" // stated by a node that forwarded the request
)

// GroupAuthenticated is a group every authenticated identity belongs to,
// for policies that grant something to all callers.
const GroupAuthenticated = "system:authenticated"

// Identity is who makes a request.
type Identity struct {
	Name   string
	Groups []string
	// Source says what proved the identity: SourceCert, SourceToken,
	// SourceNone, or for a forwarded request the source at the first node
	// (SourceForwarded when that node did not say).
	Source string
	// Via is the node that forwarded the request, empty for a direct call.
	Via string
}

// Anonymous is the identity of every caller when auth is off.
var Anonymous = Identity{Name: "system:anonymous", Source: SourceNone}

// InGroup reports whether id is in group g.
func (id Identity) InGroup(g string) bool {
	if g == GroupAuthenticated {
		return id.Source != SourceNone && id.Name != ""
	}
	return slices.Contains(id.Groups, g)
}

// String is for logs: the name, and the node that forwarded the request.
func (id Identity) String() string {
	if id.Via != "" {
		return id.Name + " (via " + id.Via + ")"
	}
	return id.Name
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the interceptors put in ctx.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Error is a denial: it wraps ErrUnauthenticated or ErrPermissionDenied and
// converts to a gRPC status with the matching code.
type Error struct {
	kind error
	msg  string
	// Reason is the metric label of the denial.
	Reason string
}

// Error returns the message, which names the caller and what it was refused.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.kind }

// GRPCStatus makes status.FromError and status.Convert see the right code.
func (e *Error) GRPCStatus() *status.Status {
	code := codes.PermissionDenied
	if e.kind == ErrUnauthenticated {
		code = codes.Unauthenticated
	}
	return status.New(code, e.msg)
}

// Denial reasons, the "reason" label of leasekeeper_auth_denied_total.
const (
	ReasonUnauthenticated = "unauthenticated" // no identity, bad token or certificate
	ReasonForbidden       = "forbidden"       // the policy does not grant the verb
	ReasonHolder          = "holder"          // holder_identity is not the caller's
	ReasonForwarder       = "forwarder"       // identity headers from a non-node
	ReasonUnknownMethod   = "unknown_method"  // a method with no rule in Methods
)

func unauthenticated(format string, a ...any) *Error {
	return &Error{kind: ErrUnauthenticated, msg: "auth: " + fmt.Sprintf(format, a...), Reason: ReasonUnauthenticated}
}

func denied(reason, format string, a ...any) *Error {
	return &Error{kind: ErrPermissionDenied, msg: "auth: " + fmt.Sprintf(format, a...), Reason: reason}
}

// matchPattern reports whether v matches p: "*" matches anything, "x*" any
// value starting with x, anything else only itself.
func matchPattern(p, v string) bool {
	if p == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(p, "*"); ok {
		return strings.HasPrefix(v, prefix)
	}
	return p == v
}
