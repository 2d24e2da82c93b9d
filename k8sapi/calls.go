package k8sapi

import (
	"context"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	coordinationv1 "k8s.io/api/coordination/v1"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// The calls of the service that the handler makes, one per helper, all
// through call.

// call makes one unary call of the service for request r. While the
// service has no leader (an election, a node restarting) it tries again
// for up to Config.UnavailableWait, as the API server waits out an etcd
// election: clients see a slow answer rather than an error. A retried write
// is safe: a write that did land makes the retry fail on its
// resourceVersion (or as AlreadyExists), as a client's own retry would.
func call[T any](h *handler, r *http.Request, fn func(ctx context.Context) (T, error)) (T, error) {
	deadline := h.clk.Now().Add(h.cfg.UnavailableWait)
	wait := 25 * time.Millisecond
	for {
		ctx, cancel := h.callContext(r)
		res, err := fn(ctx)
		cancel()
		if status.Code(err) != codes.Unavailable || r.Context().Err() != nil || h.clk.Now().Add(wait).After(deadline) {
			return res, err
		}
		select {
		case <-r.Context().Done():
			return res, err
		case <-h.clk.After(wait):
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

// callContext bounds one call to the service, made for request r.
func (h *handler) callContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(withCredentials(r.Context(), r), h.cfg.RequestTimeout)
}

// withCredentials carries the request's Authorization header on to the
// service: gRPC's bearer tokens travel in the header of the same name, so
// kubectl --token and client-go's BearerToken work as gRPC clients do.
func withCredentials(ctx context.Context, r *http.Request) context.Context {
	if v := r.Header.Get("Authorization"); v != "" {
		return metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

func (h *handler) getLease(r *http.Request, ns, name string) (*pb.Lease, error) {
	res, err := call(h, r, func(ctx context.Context) (*pb.GetResponse, error) {
		return h.cfg.Client.Get(ctx, &pb.GetRequest{Namespace: ns, Name: name})
	})
	return res.GetLease(), err
}

// liveLease reads the lease that a write guarded by rv replaces: from the
// node's own state when that has reached rv (a client-go renewal is
// answered without a round trip to the leader), else from the leader.
func (h *handler) liveLease(r *http.Request, ns, name string, rv uint64) (*pb.Lease, error) {
	if rv != 0 {
		res, err := call(h, r, func(ctx context.Context) (*pb.GetResponse, error) {
			return h.cfg.Client.Get(ctx, &pb.GetRequest{Namespace: ns, Name: name, Serializable: true})
		})
		if err == nil && res.GetLease().GetResourceVersion() == rv {
			return res.GetLease(), nil
		}
	}
	return h.getLease(r, ns, name)
}

// listLeases lists one namespace, or all when ns is "".
func (h *handler) listLeases(r *http.Request, ns string) (*pb.ListResponse, error) {
	return call(h, r, func(ctx context.Context) (*pb.ListResponse, error) {
		return h.cfg.Client.List(ctx, &pb.ListRequest{Namespace: ns, AllNamespaces: ns == ""})
	})
}

// writeLease creates (create) or replaces obj, guarded by rv when not 0;
// a dry run only answers as if it had.
func (h *handler) writeLease(r *http.Request, obj *coordinationv1.Lease, create bool, rv uint64, dryRun bool) (*pb.Lease, error) {
	req, serr := h.writeRequest(obj, create, rv)
	if serr != nil {
		return nil, serr
	}
	req.DryRun = dryRun
	res, err := call(h, r, func(ctx context.Context) (*pb.WriteResponse, error) {
		return h.cfg.Client.Write(ctx, req)
	})
	return res.GetLease(), err
}

func (h *handler) deleteLease(r *http.Request, ns, name string, rv uint64, dryRun bool) (*pb.Lease, error) {
	res, err := call(h, r, func(ctx context.Context) (*pb.DeleteResponse, error) {
		return h.cfg.Client.Delete(ctx, &pb.DeleteRequest{Namespace: ns, Name: name, ResourceVersion: rv, DryRun: dryRun})
	})
	return res.GetLease(), err
}
