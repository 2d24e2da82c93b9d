package auth

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"

	"google.golang.org/grpc"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// MethodRule says what the interceptors check for one gRPC method, on top of
// authenticating the caller.
type MethodRule struct {
	// Verb is checked by the interceptor: on the request's namespace and
	// name when Namespaced, else cluster-wide (VerbAdmin). Empty means any
	// authenticated identity may call.
	Verb       string
	Namespaced bool
	// AnyVerb, with Namespaced and no Verb, makes the interceptor require
	// at least one of these verbs; the server then checks the exact one.
	AnyVerb []string
	// BindHolder makes the interceptor check the request's holder_identity
	// with BindHolder.
	BindHolder bool
	// ServerAuthorizes marks methods whose verb depends on state or on each
	// item of a stream: the server must call AuthorizeContext (and
	// BindHolderContext) itself.
	ServerAuthorizes bool
}

// methods is the method→verb table. Methods missing from it are refused
// when auth is on, so a new RPC is closed until it gets a rule.
var methods = map[string]MethodRule{
	// Acquire needs create or update depending on whether the lease exists,
	// which only the leader knows: the interceptor requires one of the two,
	// and the server calls AuthorizeContext(ctx, AcquireVerb(exists), ns,
	// name) on the leader.
	pb.Leases_Acquire_FullMethodName: {Namespaced: true, AnyVerb: []string{VerbCreate, VerbUpdate}, BindHolder: true, ServerAuthorizes: true},
	// AcquireSlot may grant any slot of the semaphore (name-0 …): the
	// server authorizes create or update on each (a policy names the
	// slots, say "pool-*", not the semaphore); the interceptor binds the
	// holder.
	pb.Leases_AcquireSlot_FullMethodName:  {BindHolder: true, ServerAuthorizes: true},
	pb.Leases_Renew_FullMethodName:        {Verb: VerbUpdate, Namespaced: true, BindHolder: true},
	pb.Leases_Release_FullMethodName:      {Verb: VerbUpdate, Namespaced: true, BindHolder: true},
	pb.Leases_Get_FullMethodName:          {Verb: VerbGet, Namespaced: true},
	pb.Leases_List_FullMethodName:         {Verb: VerbList, Namespaced: true},
	pb.Leases_Delete_FullMethodName:       {Verb: VerbDelete, Namespaced: true},
	pb.Leases_Watch_FullMethodName:        {Verb: VerbWatch, Namespaced: true},
	pb.Leases_WatchBatches_FullMethodName: {Verb: VerbWatch, Namespaced: true},
	// Write (the Kubernetes API's create and replace) is create or update
	// by its create flag; the server decides, as for Acquire.
	pb.Leases_Write_FullMethodName: {Namespaced: true, AnyVerb: []string{VerbCreate, VerbUpdate}, BindHolder: true, ServerAuthorizes: true},
	// KeepAlive renews many leases per message: the server authorizes
	// each LeaseRef (VerbUpdate and BindHolderContext) and reports a denial
	// in that lease's result.
	pb.Leases_KeepAlive_FullMethodName: {ServerAuthorizes: true},
	// Calls carries unary calls: each one passes the unary interceptor
	// with its own method's rule, under the stream's credentials.
	pb.Leases_Calls_FullMethodName: {ServerAuthorizes: true},

	// Status is readable by any authenticated identity: clients use it to
	// find the leader.
	pb.Cluster_Status_FullMethodName:             {},
	pb.Cluster_Snapshot_FullMethodName:           {Verb: VerbAdmin},
	pb.Cluster_Join_FullMethodName:               {Verb: VerbAdmin},
	pb.Cluster_RemoveMember_FullMethodName:       {Verb: VerbAdmin},
	pb.Cluster_TransferLeadership_FullMethodName: {Verb: VerbAdmin},
	// FollowsTerm tells only the node's Raft term, as Status does.
	pb.Cluster_FollowsTerm_FullMethodName: {},

	// Server reflection (grpcurl, grpcui) describes the API, which is
	// public in any case; any authenticated identity may read it.
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      {},
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: {},
}

// Methods returns a copy of the method→verb table.
func Methods() map[string]MethodRule { return maps.Clone(methods) }

// Getters of the generated request types that the interceptors read.
type (
	namespaceGetter interface{ GetNamespace() string }
	nameGetter      interface{ GetName() string }
	allNsGetter     interface{ GetAllNamespaces() bool }
	holderGetter    interface{ GetHolderIdentity() string }
	// semaphoreGetter: a Release that leaves a semaphore's queue names
	// the semaphore, and is scoped to its first slot.
	semaphoreGetter interface{ GetSemaphore() bool }
)

// RequestScope returns the namespace and lease name a request names, with
// "default" for an empty namespace and AllNamespaces for all_namespaces.
func RequestScope(req any) (namespace, name string) {
	if r, ok := req.(allNsGetter); ok && r.GetAllNamespaces() {
		namespace = AllNamespaces
	} else if r, ok := req.(namespaceGetter); ok {
		namespace = r.GetNamespace()
	}
	if namespace == "" {
		namespace = DefaultNamespace
	}
	if r, ok := req.(nameGetter); ok {
		name = r.GetName()
	}
	if r, ok := req.(semaphoreGetter); ok && r.GetSemaphore() && name != "" {
		name += "-0"
	}
	return namespace, name
}

// UnaryServerInterceptor authenticates every unary call, puts the Identity
// in the context and applies the method's rule. Install it (and the stream
// one) in every mode, "none" included: ForwardContext relies on the identity
// it stores.
func UnaryServerInterceptor(a *Authenticator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, rule, err := a.begin(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if err := a.checkRequest(ctx, rule, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams; a
// namespaced rule is checked on every message the server receives (the one
// request of Watch), before the handler sees it.
//
// An authenticated stream stays registered while it is open, so that
// Reload can end it, with Unauthenticated or PermissionDenied, once its
// caller's token is gone or the policy no longer grants what it asked: a
// handler that waits on the stream's context ends at once, and one that
// waits for the caller's next message gets the error in its place.
func StreamServerInterceptor(a *Authenticator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, rule, err := a.begin(ss.Context(), info.FullMethod)
		if err != nil {
			return err
		}
		if !a.Enabled() || a.public(info.FullMethod) {
			return handler(srv, &authStream{ServerStream: ss, ctx: ctx, a: a, rule: rule})
		}
		ctx, cancel := context.WithCancelCause(ctx)
		open := &openStream{incoming: ss.Context(), rule: rule, cancel: cancel}
		a.track(open)
		defer func() {
			a.untrack(open)
			cancel(nil)
		}()
		err = handler(srv, &authStream{ServerStream: ss, ctx: ctx, a: a, rule: rule, open: open})
		var revoked *Error
		if cause := context.Cause(ctx); errors.As(cause, &revoked) {
			return revoked
		}
		return err
	}
}

// openStream is a stream the interceptor let through, as Reload checks it
// again: how its caller authenticated, and the last request it checked.
type openStream struct {
	incoming context.Context // the stream's own context: its peer and metadata
	rule     MethodRule
	cancel   context.CancelCauseFunc

	mu  sync.Mutex
	req any // the last request checkRequest passed; nil before the first
}

func (a *Authenticator) track(s *openStream) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if a.streams == nil {
		a.streams = make(map[*openStream]struct{})
	}
	a.streams[s] = struct{}{}
}

func (a *Authenticator) untrack(s *openStream) {
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	delete(a.streams, s)
}

// recheckStreams authenticates and authorizes every open stream again
// against the tokens and policy just loaded, and ends those that no
// longer pass, with the error that a new stream would get.
func (a *Authenticator) recheckStreams() {
	a.streamsMu.Lock()
	open := make([]*openStream, 0, len(a.streams))
	for s := range a.streams {
		open = append(open, s)
	}
	a.streamsMu.Unlock()
	ended := 0
	for _, s := range open {
		if err := a.recheck(s); err != nil {
			s.cancel(err)
			ended++
		}
	}
	if ended > 0 {
		a.log.Info("ended open streams whose callers lost their rights", "ended", ended, "open", len(open))
	}
}

func (a *Authenticator) recheck(s *openStream) error {
	id, err := a.Authenticate(s.incoming)
	if err != nil {
		return err
	}
	if s.rule.Verb != "" && !s.rule.Namespaced {
		if err := a.Authorize(id, s.rule.Verb, "", ""); err != nil {
			return err
		}
	}
	s.mu.Lock()
	req := s.req
	s.mu.Unlock()
	if req == nil {
		return nil
	}
	return a.checkRequest(NewContext(s.incoming, id), s.rule, req)
}

// begin authenticates a call and applies the parts of its rule that need no
// request.
func (a *Authenticator) begin(ctx context.Context, method string) (context.Context, MethodRule, error) {
	if !a.Enabled() || a.public(method) {
		return NewContext(ctx, Anonymous), MethodRule{}, nil
	}
	rule, known := methods[method]
	id, err := a.Authenticate(ctx)
	if err != nil {
		a.deny(Identity{}, rule.Verb, err, "method", method)
		return nil, rule, err
	}
	if !known {
		err := denied(ReasonUnknownMethod, "method %s has no authorization rule", method)
		a.deny(id, "", err, "method", method)
		return nil, rule, err
	}
	if rule.Verb != "" && !rule.Namespaced {
		if err := a.Authorize(id, rule.Verb, "", ""); err != nil {
			return nil, rule, err
		}
	}
	return NewContext(ctx, id), rule, nil
}

// checkRequest applies the parts of a rule that read the request.
func (a *Authenticator) checkRequest(ctx context.Context, rule MethodRule, req any) error {
	if !a.Enabled() || (!rule.Namespaced && !rule.BindHolder) {
		return nil
	}
	id, _ := FromContext(ctx)
	if rule.Namespaced {
		ns, name := RequestScope(req)
		var err error
		switch {
		case rule.Verb != "":
			err = a.Authorize(id, rule.Verb, ns, name)
		case len(rule.AnyVerb) > 0:
			err = a.authorizeAny(id, rule.AnyVerb, ns, name)
		}
		if err != nil {
			return err
		}
	}
	if h, ok := req.(holderGetter); ok && rule.BindHolder {
		return a.BindHolder(id, h.GetHolderIdentity())
	}
	return nil
}

// authorizeAny passes when the policy grants id one of verbs.
func (a *Authenticator) authorizeAny(id Identity, verbs []string, namespace, name string) error {
	p := a.policy.Load()
	for _, v := range verbs {
		if p.Authorize(id, v, namespace, name) == nil {
			return nil
		}
	}
	joined := strings.Join(verbs, " or ")
	err := denial(id, joined, namespace, name)
	a.deny(id, strings.Join(verbs, "_or_"), err, "namespace", namespace, "name", name)
	return err
}

func (a *Authenticator) public(method string) bool {
	for _, m := range a.cfg.PublicMethods {
		if m == method {
			return true
		}
		if prefix, ok := strings.CutSuffix(m, "*"); ok && strings.HasPrefix(method, prefix) {
			return true
		}
	}
	return false
}

type authStream struct {
	grpc.ServerStream
	ctx  context.Context
	a    *Authenticator
	rule MethodRule
	open *openStream // nil when auth is off or the method is public
}

func (s *authStream) Context() context.Context { return s.ctx }

func (s *authStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	// A handler waiting for the caller's next message does not see the
	// stream's context end; the message after a revocation is refused.
	var revoked *Error
	if s.open != nil && s.ctx.Err() != nil && errors.As(context.Cause(s.ctx), &revoked) {
		return revoked
	}
	if err := s.a.checkRequest(s.ctx, s.rule, m); err != nil {
		return err
	}
	if s.open != nil {
		s.open.mu.Lock()
		s.open.req = m
		s.open.mu.Unlock()
	}
	return nil
}
