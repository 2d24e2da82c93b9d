package k8sapi

import (
	"net/http"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// writeOptions are the query options of a create, update or patch
// (CreateOptions, UpdateOptions, PatchOptions), read and checked as the
// API server reads and checks them.
type writeOptions struct {
	dryRun       bool
	fieldManager string
	// fieldValidation is Ignore, Warn or Strict: what to do about fields
	// of the body that the Lease type does not have. The API server's
	// default is Warn.
	fieldValidation string
	force           bool
}

// decodeOptions reads r's query into opts (a meta.k8s.io/v1 options
// object of kind), then checks it with errs; a failed check is the API
// server's 422 about the options object.
func (h *handler) decodeOptions(r *http.Request, opts runtime.Object, kind string, check func() field.ErrorList) *apierrors.StatusError {
	if err := h.params.DecodeParameters(r.URL.Query(), metav1.SchemeGroupVersion, opts); err != nil {
		return badRequest("%v", err)
	}
	if errs := check(); len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: kind}, "", errs)
	}
	return nil
}

func newWriteOptions(dryRun []string, manager, validation string, force *bool) writeOptions {
	o := writeOptions{dryRun: len(dryRun) > 0, fieldManager: manager, fieldValidation: validation, force: force != nil && *force}
	if o.fieldValidation == "" {
		o.fieldValidation = metav1.FieldValidationWarn
	}
	return o
}

func (h *handler) createOptions(r *http.Request) (writeOptions, *apierrors.StatusError) {
	var o metav1.CreateOptions
	serr := h.decodeOptions(r, &o, "CreateOptions", func() field.ErrorList { return metav1validation.ValidateCreateOptions(&o) })
	return newWriteOptions(o.DryRun, o.FieldManager, o.FieldValidation, nil), serr
}

func (h *handler) updateOptions(r *http.Request) (writeOptions, *apierrors.StatusError) {
	var o metav1.UpdateOptions
	serr := h.decodeOptions(r, &o, "UpdateOptions", func() field.ErrorList { return metav1validation.ValidateUpdateOptions(&o) })
	return newWriteOptions(o.DryRun, o.FieldManager, o.FieldValidation, nil), serr
}

func (h *handler) patchOptions(r *http.Request, pt types.PatchType) (writeOptions, *apierrors.StatusError) {
	var o metav1.PatchOptions
	serr := h.decodeOptions(r, &o, "PatchOptions", func() field.ErrorList { return metav1validation.ValidatePatchOptions(&o, pt) })
	return newWriteOptions(o.DryRun, o.FieldManager, o.FieldValidation, o.Force), serr
}

// deleteOptions reads a delete's options from its body or, when it has
// none, from its query, and checks them, as the API server does.
func (h *handler) deleteOptions(w http.ResponseWriter, r *http.Request) (*metav1.DeleteOptions, *apierrors.StatusError) {
	opts := &metav1.DeleteOptions{}
	var serr *apierrors.StatusError
	if r.ContentLength != 0 {
		serr = h.decode(w, r, opts, deleteOptionsGVK, nil)
	} else {
		serr = h.decodeOptions(r, opts, "DeleteOptions", func() field.ErrorList { return nil })
	}
	if errs := metav1validation.ValidateDeleteOptions(opts); serr == nil && len(errs) > 0 {
		serr = apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "DeleteOptions"}, "", errs)
	}
	return opts, serr
}

// strictErrors handles the unknown and duplicate fields that a strict
// decoding found (err, when it is such an error) as the API server does
// under opts.fieldValidation: Strict refuses the request with 400, Warn
// answers with one Warning header for each, Ignore drops them quietly. It
// returns err itself when err is another error, nil when the request goes
// on.
func strictErrors(w http.ResponseWriter, opts writeOptions, err error, refusal func(error) *apierrors.StatusError) *apierrors.StatusError {
	if err == nil {
		return nil
	}
	se, ok := runtime.AsStrictDecodingError(err)
	switch {
	case !ok:
		return refusal(err)
	case opts.fieldValidation == metav1.FieldValidationStrict:
		return refusal(err)
	case opts.fieldValidation == metav1.FieldValidationWarn:
		for _, e := range se.Errors() {
			warn(w, e.Error())
		}
	}
	return nil
}

// warn adds a Warning header in the form client-go and kubectl show
// ("Warning: ..."), once: a patch tried again warns again.
func warn(w http.ResponseWriter, msg string) {
	v, err := utilnet.NewWarningHeader(299, "-", msg)
	if err == nil && !slices.Contains(w.Header().Values("Warning"), v) {
		w.Header().Add("Warning", v)
	}
}
