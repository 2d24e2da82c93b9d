package k8sapi

import (
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/kube-openapi/pkg/builder"
	"k8s.io/kube-openapi/pkg/builder3"
	"k8s.io/kube-openapi/pkg/common"
	openapihandler "k8s.io/kube-openapi/pkg/handler"
	"k8s.io/kube-openapi/pkg/handler3"
	"k8s.io/kube-openapi/pkg/util"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/leasekeeper/leasekeeper/k8sapi/internal/openapi"
)

// The OpenAPI documents (/openapi/v2, and /openapi/v3 with its one group
// version) describe the Lease endpoints this package serves. As in the API
// server, they are built by kube-openapi's builders from a description of
// the routes and the definitions that openapi-gen generated from the
// Kubernetes types (internal/openapi), and served by kube-openapi's
// handlers (JSON and protobuf, ETags). kubectl needs them: for its
// client-side validation and to learn that the server validates fields
// itself (the fieldValidation parameter of the PATCH operation), for
// explain, and to compute the patches of apply and edit.

// openAPIPrefix is the group version's path in /openapi/v3.
const openAPIGroupVersion = "apis/" + groupName + "/" + apiVersion

// newOpenAPI builds both documents and returns the handler that serves
// them under /openapi/, and the v3 document's schemas.
func newOpenAPI(scheme *runtime.Scheme) (http.Handler, map[string]*spec.Schema, error) {
	namer := definitionNamer(scheme)
	opID := func(r common.Route) (string, []string, error) {
		return r.OperationName(), []string{"coordination_v1"}, nil
	}
	info := &spec.Info{InfoProps: spec.InfoProps{Title: "Kubernetes", Version: apiRelease}}
	routes := []common.RouteContainer{leaseRoutes()}

	v2, err := builder.BuildOpenAPISpecFromRoutes(routes, &common.Config{
		Info:                           info,
		GetDefinitions:                 openapi.GetOpenAPIDefinitions,
		GetDefinitionName:              namer,
		GetOperationIDAndTagsFromRoute: opID,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("openapi v2: %w", err)
	}
	v3, err := builder3.BuildOpenAPISpecFromRoutes(routes, &common.OpenAPIV3Config{
		Info:                           info,
		GetDefinitions:                 openapi.GetOpenAPIDefinitions,
		GetDefinitionName:              namer,
		GetOperationIDAndTagsFromRoute: opID,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("openapi v3: %w", err)
	}
	mux := &openAPIMux{http.NewServeMux()}
	openapihandler.NewOpenAPIService(v2).RegisterOpenAPIVersionedService("/openapi/v2", mux)
	s3 := handler3.NewOpenAPIService()
	s3.UpdateGroupVersion(openAPIGroupVersion, v3)
	if err := s3.RegisterOpenAPIV3VersionedService("/openapi/v3", mux); err != nil {
		return nil, nil, fmt.Errorf("openapi v3: %w", err)
	}
	return mux, v3.Components.Schemas, nil
}

// openAPIMux is the path handler kube-openapi's services register on.
type openAPIMux struct{ *http.ServeMux }

func (m *openAPIMux) HandlePrefix(path string, h http.Handler) {
	m.Handle(strings.TrimSuffix(path, "/")+"/", h)
}

// definitionNamer names each definition by its OpenAPI model name (the
// generated definitions' keys) and marks the kinds of the scheme with
// x-kubernetes-group-version-kind, as the API server's namer does: kubectl
// finds a kind's schema by that mark.
func definitionNamer(scheme *runtime.Scheme) func(string) (string, spec.Extensions) {
	gvks := map[string][]any{}
	for gvk, t := range scheme.AllKnownTypes() {
		if gvk.Version == runtime.APIVersionInternal {
			continue
		}
		name := util.GetCanonicalTypeName(reflect.New(t).Interface())
		gvks[name] = append(gvks[name], map[string]any{"group": gvk.Group, "version": gvk.Version, "kind": gvk.Kind})
	}
	for _, l := range gvks {
		sort.Slice(l, func(i, j int) bool { return fmt.Sprint(l[i]) < fmt.Sprint(l[j]) })
	}
	return func(name string) (string, spec.Extensions) {
		if l, ok := gvks[name]; ok {
			return name, spec.Extensions{"x-kubernetes-group-version-kind": l}
		}
		return name, nil
	}
}

// The routes of the Lease API, for the builders: what the handler serves.

type oaParam struct {
	name, desc, dataType string
	kind                 common.ParameterKind
	required, multiple   bool
}

func (p oaParam) Name() string                 { return p.name }
func (p oaParam) Description() string          { return p.desc }
func (p oaParam) Required() bool               { return p.required }
func (p oaParam) Kind() common.ParameterKind   { return p.kind }
func (p oaParam) DataType() string             { return p.dataType }
func (p oaParam) AllowMultiple() bool          { return p.multiple }
func (p oaParam) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", p.name)), nil }

type oaResponse struct {
	code  int
	model any
}

func (r oaResponse) Code() int          { return r.code }
func (r oaResponse) Message() string    { return http.StatusText(r.code) }
func (r oaResponse) Model() interface{} { return r.model }

type oaRoute struct {
	method, path, op, action, desc string
	params                         []oaParam
	consumes, produces             []string
	body                           any
	responses                      []oaResponse
}

func (r *oaRoute) Method() string                 { return r.method }
func (r *oaRoute) Path() string                   { return r.path }
func (r *oaRoute) OperationName() string          { return r.op }
func (r *oaRoute) Description() string            { return r.desc }
func (r *oaRoute) Consumes() []string             { return r.consumes }
func (r *oaRoute) Produces() []string             { return r.produces }
func (r *oaRoute) RequestPayloadSample() any      { return r.body }
func (r *oaRoute) ResponsePayloadSample() any     { return nil }
func (r *oaRoute) Parameters() []common.Parameter { return params(r.params) }
func (r *oaRoute) Metadata() map[string]any {
	return map[string]any{
		"x-kubernetes-action":             r.action,
		"x-kubernetes-group-version-kind": map[string]any{"group": groupName, "version": apiVersion, "kind": "Lease"},
	}
}
func (r *oaRoute) StatusCodeResponses() []common.StatusCodeResponse {
	out := make([]common.StatusCodeResponse, len(r.responses))
	for i, x := range r.responses {
		out[i] = x
	}
	return out
}

func params(ps []oaParam) []common.Parameter {
	out := make([]common.Parameter, len(ps))
	for i, p := range ps {
		out[i] = p
	}
	return out
}

type oaContainer struct {
	root   string
	routes []common.Route
}

func (c oaContainer) RootPath() string                   { return c.root }
func (c oaContainer) PathParameters() []common.Parameter { return nil }
func (c oaContainer) Routes() []common.Route             { return c.routes }

func query(name, dataType, desc string) oaParam {
	return oaParam{name: name, dataType: dataType, desc: desc, kind: common.QueryParameterKind}
}

func pathParam(name, desc string) oaParam {
	return oaParam{name: name, dataType: "string", desc: desc, kind: common.PathParameterKind, required: true}
}

var (
	pNamespace = pathParam("namespace", "object name and auth scope, such as for teams and projects")
	pName      = pathParam("name", "name of the Lease")
	pPretty    = query("pretty", "string", "accepted for compatibility; answers are not indented")
	pBody      = oaParam{name: "body", kind: common.BodyParameterKind, required: true}
	pDryRun    = query("dryRun", "string", "All: validate, authorize and answer as if the change were made, without making it")
	pManager   = query("fieldManager", "string", "the name of the actor making the change")
	pFieldVal  = query("fieldValidation", "string", "Ignore, Warn (the default) or Strict: what to do about unknown or duplicate fields in the body")
	pForce     = query("force", "boolean", "take over fields that other managers own (apply patches only)")
	// A delete's options come in its body or in its query.
	pDeleteBody  = oaParam{name: "body", kind: common.BodyParameterKind}
	pGrace       = query("gracePeriodSeconds", "integer", "accepted for compatibility; deletion is immediate")
	pPropagation = query("propagationPolicy", "string", "accepted for compatibility; Leases have no dependents here")
	listParams   = []oaParam{
		query("allowWatchBookmarks", "boolean", "send BOOKMARK events in a watch"),
		query("continue", "string", "the continue token of the previous page"),
		query("fieldSelector", "string", "select by metadata.name and metadata.namespace"),
		query("labelSelector", "string", "select by labels"),
		query("limit", "integer", "the most items to answer with; more come with a continue token"),
		query("resourceVersion", "string", "for a watch, where to start"),
		query("resourceVersionMatch", "string", "how resourceVersion applies to a list"),
		query("sendInitialEvents", "boolean", "start a watch with the current leases, then a bookmark"),
		query("timeoutSeconds", "integer", "how long a list or watch may take"),
		query("watch", "boolean", "watch for changes instead of listing"),
	}
	readMedia  = []string{mediaJSON, mediaYAML, mediaProtobuf}
	listMedia  = append(readMedia[:3:3], mediaJSON+";stream=watch", mediaProtobuf+";stream=watch")
	patchMedia = []string{"application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"}
)

func leaseRoutes() oaContainer {
	root := "/apis/" + groupName + "/" + apiVersion
	coll := root + "/namespaces/{namespace}/" + resource
	item := coll + "/{name}"
	lease, list, st := &coordinationv1.Lease{}, &coordinationv1.LeaseList{}, &metav1.Status{}
	write := []oaParam{pPretty, pDryRun, pManager, pFieldVal}
	routes := []*oaRoute{
		{method: "GET", path: root + "/" + resource, op: "listCoordinationV1LeaseForAllNamespaces", action: "list",
			desc: "list or watch objects of kind Lease", params: append([]oaParam{pPretty}, listParams...),
			produces: listMedia, responses: []oaResponse{{200, list}}},
		{method: "GET", path: coll, op: "listCoordinationV1NamespacedLease", action: "list",
			desc: "list or watch objects of kind Lease", params: append([]oaParam{pNamespace, pPretty}, listParams...),
			produces: listMedia, responses: []oaResponse{{200, list}}},
		{method: "POST", path: coll, op: "createCoordinationV1NamespacedLease", action: "post",
			desc: "create a Lease", params: append([]oaParam{pNamespace, pBody}, write...), body: lease,
			consumes: []string{"*/*"}, produces: readMedia, responses: []oaResponse{{200, lease}, {201, lease}, {202, lease}}},
		{method: "DELETE", path: coll, op: "deleteCoordinationV1CollectionNamespacedLease", action: "deletecollection",
			desc: "delete collection of Lease", params: append([]oaParam{pNamespace, pPretty, pDryRun, pDeleteBody, pGrace, pPropagation}, listParams[1:9]...),
			body: &metav1.DeleteOptions{}, consumes: []string{"*/*"}, produces: readMedia, responses: []oaResponse{{200, st}}},
		{method: "GET", path: item, op: "readCoordinationV1NamespacedLease", action: "get",
			desc: "read the specified Lease", params: []oaParam{pNamespace, pName, pPretty},
			produces: readMedia, responses: []oaResponse{{200, lease}}},
		{method: "PUT", path: item, op: "replaceCoordinationV1NamespacedLease", action: "put",
			desc: "replace the specified Lease", params: append([]oaParam{pNamespace, pName, pBody}, write...), body: lease,
			consumes: []string{"*/*"}, produces: readMedia, responses: []oaResponse{{200, lease}, {201, lease}}},
		{method: "PATCH", path: item, op: "patchCoordinationV1NamespacedLease", action: "patch",
			desc: "partially update the specified Lease", params: append([]oaParam{pNamespace, pName, pBody, pForce}, write...),
			body: &metav1.Patch{}, consumes: patchMedia, produces: readMedia, responses: []oaResponse{{200, lease}, {201, lease}}},
		{method: "DELETE", path: item, op: "deleteCoordinationV1NamespacedLease", action: "delete",
			desc: "delete a Lease", params: []oaParam{pNamespace, pName, pPretty, pDryRun, pDeleteBody, pGrace, pPropagation},
			body: &metav1.DeleteOptions{}, consumes: []string{"*/*"}, produces: readMedia, responses: []oaResponse{{200, st}, {202, st}}},
	}
	c := oaContainer{root: root}
	for _, r := range routes {
		c.routes = append(c.routes, r)
	}
	return c
}
