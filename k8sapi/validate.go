package k8sapi

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// validateLease checks a Lease about to be written as the API server's
// Lease strategy does: the object metadata with apimachinery's own
// validation (the name a DNS-1123 subdomain, the namespace a DNS-1123
// label, labels, annotations, owner references), then the spec's bounds,
// in the same words. What leasekeeper refuses on top (finalizers, which
// nothing here would ever remove) comes last.
func validateLease(obj *coordinationv1.Lease) field.ErrorList {
	errs := apivalidation.ValidateObjectMeta(&obj.ObjectMeta, true, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	spec := field.NewPath("spec")
	if d := obj.Spec.LeaseDurationSeconds; d != nil && *d <= 0 {
		errs = append(errs, field.Invalid(spec.Child("leaseDurationSeconds"), *d, "must be greater than 0"))
	}
	if t := obj.Spec.LeaseTransitions; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(spec.Child("leaseTransitions"), *t, "must be greater than or equal to 0"))
	}
	if len(obj.Finalizers) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("metadata", "finalizers"), "leasekeeper does not support finalizers"))
	}
	return errs
}

// dropDisabledFields clears what an API server with its default feature
// gates clears: strategy and preferredHolder belong to coordinated leader
// election (the CoordinatedLeaderElection gate, off by default), which
// leasekeeper does not do.
func dropDisabledFields(obj *coordinationv1.Lease) {
	obj.Spec.Strategy = nil
	obj.Spec.PreferredHolder = nil
}
