package k8sapi

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metainternalvalidation "k8s.io/apimachinery/pkg/apis/meta/internalversion/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// resourceVersion semantics, as the API server's (the "Resource versions"
// page of the Kubernetes documentation):
//
//   - "" is the most recent state (a linearizable read); "0" is any state,
//     answered here with the most recent too.
//   - Any other value N is "not older than N" for get, watch and list,
//     except that a list with resourceVersionMatch=Exact, or with a limit
//     and no resourceVersionMatch, reads the leases as they were at exactly
//     N. The node answers that from its window of recent events, the one
//     a watch resumes from; older than the window is 410 Gone, as etcd's
//     compaction is to the API server.
//   - An N the store has not reached yet is waited for, at most
//     Config.ResourceVersionWait (the API server waits 3 s), then refused
//     with the API server's 504 "Too large resource version".
//   - A paginated list reads every page at the first page's revision,
//     which its continue token carries.

// listOptions are the resourceVersion options of a list or watch,
// checked as the API server checks them.
type listOptions struct {
	rv    uint64 // 0: "" or "0"
	rvSet bool   // resourceVersion was given and is not "0"
	exact bool   // a list at exactly rv
	limit int64
	cont  *continueToken
}

// parseListOptions reads and checks a list's or a watch's options: the
// API server's 422 for a combination ValidateListOptions refuses, its 400
// for values that do not parse.
func parseListOptions(r *http.Request, watch bool) (listOptions, *apierrors.StatusError) {
	q := r.URL.Query()
	var o listOptions
	io := internalversion.ListOptions{
		ResourceVersion:      q.Get("resourceVersion"),
		ResourceVersionMatch: metav1.ResourceVersionMatch(q.Get("resourceVersionMatch")),
		Continue:             q.Get("continue"),
		Watch:                watch,
	}
	if s := q.Get("sendInitialEvents"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return o, badRequest("invalid sendInitialEvents %q", s)
		}
		io.SendInitialEvents = &b
	}
	if s := q.Get("limit"); s != "" {
		var err error
		if o.limit, err = strconv.ParseInt(s, 10, 64); err != nil || o.limit < 0 {
			return o, badRequest("invalid limit %q", s)
		}
	}
	if errs := metainternalvalidation.ValidateListOptions(&io, true); len(errs) > 0 {
		return o, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	if v := io.ResourceVersion; v != "" && v != "0" {
		rv, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return o, badRequest("invalid resource version: %v", err)
		}
		o.rv, o.rvSet = rv, true
	}
	if watch {
		return o, nil
	}
	if io.Continue != "" {
		if o.rvSet {
			return o, badRequest("specifying resource version is not allowed when using continue")
		}
		t, serr := decodeContinue(io.Continue)
		if serr != nil {
			return o, serr
		}
		o.cont = &t
		return o, nil
	}
	o.exact = o.rvSet && (io.ResourceVersionMatch == metav1.ResourceVersionMatchExact ||
		(io.ResourceVersionMatch == "" && o.limit > 0))
	return o, nil
}

// tooLargeResourceVersion is the API server's answer to a resourceVersion
// the store did not reach in time: 504, reason Timeout, with the cause
// clients look for and a Retry-After.
func tooLargeResourceVersion(want, current uint64) *apierrors.StatusError {
	err := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", want, current), 1)
	err.ErrStatus.Details.Causes = []metav1.StatusCause{{
		Type:    metav1.CauseTypeResourceVersionTooLarge,
		Message: "Too large resource version",
	}}
	return err
}

// revisionProbe is the name that readRevision lists: a List by name
// answers the store revision whether or not such a lease exists.
const revisionProbe = "revision-probe"

// readRevision reads the store's current revision (linearizable), as a
// caller allowed to read namespace ns ("" for all) may.
func (h *handler) readRevision(r *http.Request, ns string) (uint64, error) {
	res, err := call(h, r, func(ctx context.Context) (*pb.ListResponse, error) {
		return h.cfg.Client.List(ctx, &pb.ListRequest{Namespace: ns, AllNamespaces: ns == "", Name: revisionProbe})
	})
	return res.GetRevision(), err
}

// awaitRevision returns once the store has reached revision want, reading
// it again every 50 ms, for at most Config.ResourceVersionWait; then it
// fails with the API server's 504. cur is a revision already read.
func (h *handler) awaitRevision(r *http.Request, ns string, want, cur uint64) *apierrors.StatusError {
	if cur >= want {
		return nil
	}
	deadline := h.clk.Now().Add(h.cfg.ResourceVersionWait)
	for {
		wait := min(50*time.Millisecond, deadline.Sub(h.clk.Now()))
		if wait <= 0 {
			return tooLargeResourceVersion(want, cur)
		}
		select {
		case <-r.Context().Done():
			return apierrors.NewTimeoutError("the request ended while waiting for its resourceVersion", 1)
		case <-h.clk.After(wait):
		}
		rev, err := h.readRevision(r, ns)
		if err != nil {
			return fromGRPC(err, "")
		}
		if cur = rev; cur >= want {
			return nil
		}
	}
}

// listAt lists namespace ns ("" for all) as it was at exactly revision rev.
func (h *handler) listAt(r *http.Request, ns string, rev uint64) (*pb.ListResponse, error) {
	return call(h, r, func(ctx context.Context) (*pb.ListResponse, error) {
		return h.cfg.Client.List(ctx, &pb.ListRequest{Namespace: ns, AllNamespaces: ns == "", Revision: rev})
	})
}

// windowFloor finds, in the service's answer to a read older than its
// window, the revision after which the window keeps events.
var windowFloor = regexp.MustCompile(`events after revision (\d+)`)

// tooOld is the API server's 410 for a watch or list from revision rev,
// older than the window; err is the service's answer.
func tooOld(rev uint64, err error) *apierrors.StatusError {
	msg := fmt.Sprintf("too old resource version: %d", rev)
	if m := windowFloor.FindStringSubmatch(status.Convert(err).Message()); m != nil {
		msg += " (" + m[1] + ")"
	}
	return apierrors.NewResourceExpired(msg)
}

// inconsistentContinue is the API server's message for a continue token
// whose revision has left the window.
const inconsistentContinue = "The provided continue parameter is too old to display a consistent list result. " +
	"You can start a new list without the continue parameter, or use the continue token in this response to " +
	"retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - " +
	"objects that were created, modified, or deleted between the time the first chunk was returned and now may " +
	"show up in the list."

// expiredContinue is the API server's 410 for continue token t whose
// revision is gone; its metadata.continue goes on from the same place in
// the current state.
func expiredContinue(t continueToken) *apierrors.StatusError {
	t.RV = 0
	err := apierrors.NewResourceExpired(inconsistentContinue)
	err.ErrStatus.ListMeta.Continue = encodeContinue(t)
	return err
}

func isOutOfRange(err error) bool { return status.Code(err) == codes.OutOfRange }
