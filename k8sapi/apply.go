package k8sapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"sigs.k8s.io/yaml"
)

// Server-side apply and managedFields, as the API server has them: the
// field manager of apimachinery (structured-merge-diff underneath) merges
// apply patches and records, on every create, update and patch, which
// manager set which fields. It works on the Lease as this package presents
// it; the managedFields it computes are stored with the rest of the object
// the client wrote.

// newFieldManager builds the field manager of Leases from the OpenAPI v3
// schemas (the API server builds its own from the same definitions).
func newFieldManager(scheme *runtime.Scheme, schemas map[string]*spec.Schema) (*managedfields.FieldManager, error) {
	tc, err := managedfields.NewTypeConverter(schemas, false)
	if err != nil {
		return nil, fmt.Errorf("type converter: %w", err)
	}
	// The Lease has one version, which is also the version the handler
	// works in (the API server's hub is its internal version).
	return managedfields.NewDefaultFieldManager(tc, scheme, scheme, scheme, leaseGVK, groupVersion, "", nil)
}

// fieldManagerName is the manager of a non-apply write: the fieldManager
// option, else the client's User-Agent up to its first '/' (its printable
// characters, as many as a manager's name may have), as the API server
// names it.
func fieldManagerName(opts writeOptions, r *http.Request) string {
	if opts.fieldManager != "" {
		return opts.fieldManager
	}
	agent, _, _ := strings.Cut(r.UserAgent(), "/")
	var b strings.Builder
	for _, c := range agent {
		if !unicode.IsPrint(c) {
			continue
		}
		if b.Len()+utf8.RuneLen(c) > metav1validation.FieldManagerMaxLength {
			break
		}
		b.WriteRune(c)
	}
	return b.String()
}

// emptyLease is the live object of a create.
func emptyLease(ns, name string) *coordinationv1.Lease {
	return &coordinationv1.Lease{TypeMeta: leaseTypeMeta, ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

// trackUpdate records in obj's managedFields that manager made obj out of
// live (an empty Lease for a create). As in the API server, a failure
// only drops the managedFields; it never fails the write.
func (h *handler) trackUpdate(live, obj *coordinationv1.Lease, manager string) *coordinationv1.Lease {
	obj.TypeMeta = leaseTypeMeta
	out := h.fields.UpdateNoErrors(live, obj, manager)
	if l, ok := out.(*coordinationv1.Lease); ok {
		return l
	}
	obj.ManagedFields = nil
	return obj
}

// applyTo merges the apply patch body (YAML or JSON) into live for
// opts.fieldManager, taking fields over from other managers when
// opts.force, and returns the Lease to write. Conflicts are the API
// server's 409 with one cause per field. Duplicate fields are handled as
// opts.fieldValidation says; unknown fields are always refused, since the
// merge needs every field in the schema.
func (h *handler) applyTo(w http.ResponseWriter, live *coordinationv1.Lease, body []byte, opts writeOptions) (*coordinationv1.Lease, *apierrors.StatusError) {
	patch := &unstructured.Unstructured{Object: map[string]any{}}
	if err := yaml.Unmarshal(body, &patch.Object); err != nil {
		return nil, badRequest("error decoding YAML: %v", err)
	}
	out, err := h.fields.Apply(live, patch, opts.fieldManager, opts.force)
	if err != nil {
		var se *apierrors.StatusError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, badRequest("%v", err)
	}
	if opts.fieldValidation != metav1.FieldValidationIgnore {
		if err := yaml.UnmarshalStrict(body, &map[string]any{}); err != nil {
			if opts.fieldValidation == metav1.FieldValidationStrict {
				return nil, badRequest("error strict decoding YAML: %v", err)
			}
			warn(w, err.Error())
		}
	}
	l, ok := out.(*coordinationv1.Lease)
	if !ok {
		return nil, apierrors.NewInternalError(fmt.Errorf("apply made a %T, not a Lease", out))
	}
	return l, nil
}
