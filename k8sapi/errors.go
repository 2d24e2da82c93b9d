package k8sapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// clusterTooOld is in the service's refusal of a record lease while a
// member of the cluster runs a binary that would expire it.
const clusterTooOld = "too old for this command"

// optimisticLockErrorMsg is the API server's message for a stale
// resourceVersion, which clients and people recognise.
const optimisticLockErrorMsg = "the object has been modified; please apply your changes to the latest version and try again"

// lockDelayedMsg is the 409's message for a write that names a holder
// while the lease is in its lock delay.
const lockDelayedMsg = "the lease is in its lock delay: its last holder's lease expired, and no new holder may be set until the delay ends; retry after it"

// leaseDetail is the lease that rides along with a service error, or nil.
func leaseDetail(st *status.Status) *pb.Lease {
	for _, d := range st.Details() {
		if l, ok := d.(*pb.Lease); ok {
			return l
		}
	}
	return nil
}

// The one table where the service's gRPC codes become Kubernetes Status
// errors. name is the lease the request was about ("" for lists).
func fromGRPC(err error, name string) *apierrors.StatusError {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	se = statusFor(err, name)
	if d := se.ErrStatus.Details; d != nil && d.Group == "" && d.Kind == "" {
		d.Name, d.Group, d.Kind = name, leaseResource.Group, leaseResource.Resource
	}
	return se
}

func statusFor(err error, name string) *apierrors.StatusError {
	st, _ := status.FromError(err)
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return apierrors.NewNotFound(leaseResource, name)
	case codes.AlreadyExists:
		return apierrors.NewAlreadyExists(leaseResource, name)
	case codes.FailedPrecondition:
		if strings.Contains(msg, clusterTooOld) {
			return apierrors.NewInvalid(leaseKind, name, field.ErrorList{
				field.Forbidden(field.NewPath("metadata", "labels").Key(RecordLabel), msg)})
		}
		if l := leaseDetail(st); l != nil && l.LockDelayed {
			// Still a 409, as for any write that lost to the lease's
			// state, but saying what to wait for: a fresh read and an
			// immediate retry meet the same delay.
			return apierrors.NewConflict(leaseResource, name, errors.New(lockDelayedMsg))
		}
		return apierrors.NewConflict(leaseResource, name, errors.New(optimisticLockErrorMsg))
	case codes.Aborted:
		// The message client-go and kubectl know: retry on a fresh read.
		return apierrors.NewConflict(leaseResource, name, errors.New(optimisticLockErrorMsg))
	case codes.InvalidArgument:
		return apierrors.NewInvalid(leaseKind, name, field.ErrorList{field.Invalid(fieldOf(msg), nil, msg)})
	case codes.Unavailable:
		// No leader for the moment (an election, a restart): worth a retry,
		// which client-go makes by itself when told when.
		se := apierrors.NewServiceUnavailable(msg)
		se.ErrStatus.Details = &metav1.StatusDetails{RetryAfterSeconds: 1}
		return se
	case codes.DeadlineExceeded, codes.Canceled:
		return apierrors.NewTimeoutError(msg, 1)
	case codes.Unauthenticated:
		return apierrors.NewUnauthorized(msg)
	case codes.PermissionDenied:
		return apierrors.NewForbidden(leaseResource, name, errors.New(msg))
	case codes.ResourceExhausted:
		return apierrors.NewTooManyRequests(msg, 1)
	case codes.OutOfRange:
		return apierrors.NewResourceExpired("too old resource version: " + msg)
	default:
		return apierrors.NewInternalError(err)
	}
}

// fieldOf names the Lease field that an InvalidArgument message of the
// service is about (the service speaks of its own field names).
func fieldOf(msg string) *field.Path {
	for _, f := range []struct{ prefix, path string }{
		{"namespace", "metadata.namespace"},
		{"name", "metadata.name"},
		{"holder_identity", "spec.holderIdentity"},
		{"lease_duration", "spec.leaseDurationSeconds"},
		{"label", "metadata.labels"},
		{"too many labels", "metadata.labels"},
		{"object", "metadata"},
	} {
		if strings.HasPrefix(msg, f.prefix) {
			return field.NewPath(f.path)
		}
	}
	return field.NewPath("metadata")
}

func notFoundPath(r *http.Request) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Code:    http.StatusNotFound,
		Reason:  metav1.StatusReasonNotFound,
		Message: fmt.Sprintf("the server could not find the requested resource (%s %s)", r.Method, r.URL.Path),
		Details: &metav1.StatusDetails{},
	}}
}

func methodNotAllowed(_ *http.Request, verb string) *apierrors.StatusError {
	return apierrors.NewMethodNotSupported(leaseResource, verb)
}

func badRequest(format string, args ...any) *apierrors.StatusError {
	return apierrors.NewBadRequest(fmt.Sprintf(format, args...))
}

func invalid(name string, errs ...*field.Error) *apierrors.StatusError {
	return apierrors.NewInvalid(leaseKind, name, errs)
}

func unsupportedMediaType(mediaType string) *apierrors.StatusError {
	return apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "", leaseResource, "",
		fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s", mediaType), 0, false)
}

func notAcceptable(accepted string) *apierrors.StatusError {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status:  metav1.StatusFailure,
		Code:    http.StatusNotAcceptable,
		Reason:  metav1.StatusReasonNotAcceptable,
		Message: "only the following media types are accepted: " + accepted,
	}}
}

func uidConflict(name, want, got string) *apierrors.StatusError {
	return preconditionFailed(name, "UID", want, got)
}

// preconditionFailed is the API server's conflict for a failed
// precondition, in its words (which start with a capital).
func preconditionFailed(name, what, want, got string) *apierrors.StatusError {
	msg := fmt.Sprintf("Precondition failed: %s in precondition: %v, %s in object meta: %v", what, want, what, got)
	return apierrors.NewConflict(leaseResource, name, errors.New(msg))
}

// writeError answers with err as a Status object in JSON, whatever the
// client accepts, as the Kubernetes API server does for most errors.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	st.Status = metav1.StatusFailure
	if st.Details == nil {
		st.Details = &metav1.StatusDetails{Group: leaseResource.Group, Kind: leaseResource.Resource}
	}
	if st.Code >= 500 {
		h.log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", st.Code, "message", st.Message)
	} else {
		h.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "code", st.Code, "message", st.Message)
	}
	body, _ := json.Marshal(&st)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(st.Details.RetryAfterSeconds))
	}
	w.WriteHeader(int(st.Code))
	_, _ = w.Write(append(body, '\n'))
}
