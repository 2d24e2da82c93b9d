package k8sapi

import (
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// deleteCollection serves DELETE of a namespace's leases: every lease the
// label and field selectors match is deleted, and the answer is the list
// of the deleted leases as they were, as the API server answers. Each
// delete is the service's own, authorized lease by lease, and guarded by
// the version that matched: a lease changed meanwhile is read again and
// deleted only if it still matches. dryRun=All deletes nothing.
func (h *handler) deleteCollection(w http.ResponseWriter, r *http.Request, ns string) {
	f, serr := h.negotiate(r, false, false, "")
	var sel selectors
	if serr == nil {
		sel, serr = parseSelectors(r)
	}
	var opts *metav1.DeleteOptions
	if serr == nil {
		opts, serr = h.deleteOptions(w, r)
	}
	if serr == nil && opts.Preconditions != nil {
		serr = badRequest("preconditions are not supported when deleting a collection of leases")
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	list := &coordinationv1.LeaseList{TypeMeta: metav1.TypeMeta{APIVersion: groupVersion.String(), Kind: "LeaseList"}}
	// A namespace that cannot exist holds no leases.
	if len(validation.IsDNS1123Label(ns)) > 0 {
		list.ResourceVersion = "0"
		h.writeObject(w, r, http.StatusOK, f, list)
		return
	}
	res, err := h.listLeases(r, ns)
	if err != nil {
		h.writeError(w, r, fromGRPC(err, ""))
		return
	}
	list.ResourceVersion = formatRV(res.Revision)
	for _, l := range res.Leases {
		if !sel.matches(l) {
			continue
		}
		gone, serr := h.deleteMatching(r, l, sel, len(opts.DryRun) > 0)
		if serr != nil {
			h.writeError(w, r, serr)
			return
		}
		if gone != nil {
			list.Items = append(list.Items, *h.present(gone, gone.ResourceVersion))
		}
	}
	h.writeObject(w, r, http.StatusOK, f, list)
}

// deleteMatching deletes l, which matched sel, at its version; if it
// changed meanwhile, as it is then, while it still matches. It returns the
// lease as it was deleted, or nil when it no longer matches or is gone.
func (h *handler) deleteMatching(r *http.Request, l *pb.Lease, sel selectors, dryRun bool) (*pb.Lease, *apierrors.StatusError) {
	for attempt := 0; ; attempt++ {
		_, err := h.deleteLease(r, l.Namespace, l.Name, l.ResourceVersion, dryRun)
		switch {
		case err == nil:
			return l, nil
		case isCode(err, codes.NotFound):
			return nil, nil
		case !isCode(err, codes.Aborted) || attempt >= h.cfg.MaxWriteRetries:
			return nil, fromGRPC(err, l.Name)
		}
		cur, err := h.getLease(r, l.Namespace, l.Name)
		switch {
		case isCode(err, codes.NotFound):
			return nil, nil
		case err != nil:
			return nil, fromGRPC(err, l.Name)
		case !sel.matches(cur):
			return nil, nil
		}
		l = cur
	}
}

// lastState is the lease that a DELETED event carries, as it was before
// the delete: the service ends the holding of a deleted lease, so its
// holder is taken back from the holding the delete ended.
func lastState(l *pb.Lease) *pb.Lease {
	if l.HolderIdentity != "" || len(l.History) == 0 {
		return l
	}
	if h := l.History[0]; h.EndReason == "deleted" && h.FencingToken == l.FencingToken {
		l = proto.Clone(l).(*pb.Lease)
		l.HolderIdentity = h.HolderIdentity
	}
	return l
}
