package k8sapi_test

import (
	"net/http"
	"strings"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/openapi"
	"k8s.io/client-go/openapi3"
	"k8s.io/kube-openapi/pkg/util/proto"
	"k8s.io/kube-openapi/pkg/util/proto/validation"
	"sigs.k8s.io/structured-merge-diff/v6/typed"
)

// TestOpenAPI reads the documents as kubectl does, through client-go's
// discovery client: v2 in protobuf for client-side validation, v3 for
// explain and to learn that the server checks fields itself.
func TestOpenAPI(t *testing.T) {
	e := setup(t)
	disco := e.clientset().Discovery()

	// v2: the Lease model validates a Lease and catches an unknown field,
	// as kubectl's client-side validation does with it.
	doc, err := disco.OpenAPISchema()
	if err != nil {
		t.Fatalf("openapi v2: %v", err)
	}
	models, err := proto.NewOpenAPIData(doc)
	if err != nil {
		t.Fatal(err)
	}
	model := models.LookupModel("io.k8s.api.coordination.v1.Lease")
	if model == nil {
		t.Fatalf("no Lease model among %v", models.ListModels())
	}
	lease := func(spec map[string]any) map[string]any {
		return map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
			"metadata": map[string]any{"name": "a.b", "labels": map[string]any{"x": "y"}}, "spec": spec}
	}
	if errs := validation.ValidateModel(lease(map[string]any{"holderIdentity": "a", "leaseDurationSeconds": 10}), model, "Lease"); len(errs) > 0 {
		t.Errorf("a valid Lease: %v", errs)
	}
	errs := validation.ValidateModel(lease(map[string]any{"holderIdentity": "a", "bogus": 1}), model, "Lease")
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `unknown field "bogus"`) {
		t.Errorf("a Lease with an unknown field: %v", errs)
	}

	// v3: the group version's document names the Lease kind, and its PATCH
	// takes fieldValidation, which tells kubectl to leave field checks to
	// the server.
	root := openapi3.NewRoot(disco.OpenAPIV3())
	gv, err := root.GVSpec(coordinationv1.SchemeGroupVersion)
	if err != nil {
		t.Fatalf("openapi v3: %v", err)
	}
	s := gv.Components.Schemas["io.k8s.api.coordination.v1.Lease"]
	if s == nil || s.Extensions["x-kubernetes-group-version-kind"] == nil || len(s.Properties) != 4 {
		t.Fatalf("v3 Lease schema: %+v", s)
	}
	item := gv.Paths.Paths["/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"]
	if item == nil || item.Patch == nil || item.Patch.Extensions["x-kubernetes-action"] != "patch" {
		t.Fatalf("v3 paths: %v", gv.Paths.Paths)
	}
	found := false
	for _, p := range item.Patch.Parameters {
		found = found || (p.Name == "fieldValidation" && p.In == "query")
	}
	if !found {
		t.Errorf("the PATCH operation does not take fieldValidation")
	}

	// The v3 document is enough for client-go's structured type converter,
	// which server-side apply clients build from it.
	tc, err := openapi.NewTypeConverter(disco.OpenAPIV3(), false)
	if err != nil {
		t.Fatalf("type converter: %v", err)
	}
	obj := newLease("typed", "a", 10)
	if _, err := tc.ObjectToTyped(obj, typed.AllowDuplicates); err != nil {
		t.Errorf("a Lease as a typed value: %v", err)
	}

	// Media types and methods as the API server's.
	if res := e.do("GET", "/openapi/v2", nil, "Accept", "application/json"); res.code != http.StatusOK || res.hdr.Get("Content-Type") != "application/json" || res.hdr.Get("Etag") == "" {
		t.Errorf("v2 in JSON: %d %v", res.code, res.hdr)
	}
	if res := e.do("POST", "/openapi/v2", "{}"); res.code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", res.code)
	}
}
