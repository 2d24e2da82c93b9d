// Package openapi holds the OpenAPI definitions of the Kubernetes types
// that k8sapi serves (coordination.k8s.io/v1 and the meta types they use),
// generated from k8s.io/api and k8s.io/apimachinery by kube-openapi's
// openapi-gen: `make openapi` writes zz_generated.openapi.go again.
package openapi
