package k8sapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	goruntime "runtime"
	"strings"

	"github.com/munnerz/goautoneg"
	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/version"
)

// The Kubernetes release whose Lease API this package serves (that of the
// k8s.io/api module it is built with); /version reports it, so kubectl's
// version-skew check has a version to compare.
const (
	apiMajor   = "1"
	apiMinor   = "36"
	apiRelease = "v1.36.6"
)

var leaseVerbs = metav1.Verbs{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

// discoveryFn writes one discovery document; aggregated is "" for the
// legacy form, else the apidiscovery.k8s.io version asked for.
type discoveryFn func(w http.ResponseWriter, r *http.Request, aggregated string)

// discovery serves the read-only documents: GET only, JSON always (the
// API server's own discovery is JSON unless protobuf is asked for, and
// every client also accepts JSON).
func (h *handler) discovery(w http.ResponseWriter, r *http.Request, fn discoveryFn) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.writeError(w, r, apierrors.NewMethodNotSupported(leaseResource, strings.ToLower(r.Method)))
		return
	}
	fn(w, r, aggregatedVersion(r))
}

// aggregatedVersion is the apidiscovery.k8s.io version that the client
// prefers to the legacy documents, if any.
func aggregatedVersion(r *http.Request) string {
	header := r.Header.Get("Accept")
	if header == "" {
		return ""
	}
	for _, c := range goautoneg.ParseAccept(header) {
		if c.Q <= 0 {
			continue
		}
		if c.Params["as"] == "APIGroupDiscoveryList" && c.Params["g"] == "apidiscovery.k8s.io" &&
			(c.Params["v"] == "v2" || c.Params["v"] == "v2beta1") {
			return c.Params["v"]
		}
	}
	return ""
}

func aggregatedContentType(v string) string {
	return mediaJSON + ";g=apidiscovery.k8s.io;v=" + v + ";as=APIGroupDiscoveryList"
}

// serveVersion serves /version.
func (h *handler) serveVersion(w http.ResponseWriter, r *http.Request, _ string) {
	info := version.Info{
		Major:      apiMajor,
		Minor:      apiMinor,
		GitVersion: apiRelease + "+leasekeeper" + buildMeta(h.cfg.Version),
		GoVersion:  goruntime.Version(),
		Compiler:   goruntime.Compiler,
		Platform:   goruntime.GOOS + "/" + goruntime.GOARCH,
	}
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &info)
}

// buildMeta makes v fit semver build metadata ([0-9A-Za-z-.]), prefixed
// with '.', or "" for no version.
func buildMeta(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" {
		return ""
	}
	b := []byte(v)
	for i, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	return "." + string(b)
}

// coreVersions serves /api: the core group has no resources here.
func (h *handler) coreVersions(w http.ResponseWriter, r *http.Request, aggregated string) {
	if aggregated != "" {
		h.writeAggregated(w, r, aggregated, nil)
		return
	}
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"},
		Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{
			{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host},
		},
	})
}

// coreResources serves /api/v1.
func (h *handler) coreResources(w http.ResponseWriter, r *http.Request, _ string) {
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{},
	})
}

func apiGroup() metav1.APIGroup {
	gv := metav1.GroupVersionForDiscovery{GroupVersion: groupVersion.String(), Version: apiVersion}
	return metav1.APIGroup{
		TypeMeta:         metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
		Name:             groupName,
		Versions:         []metav1.GroupVersionForDiscovery{gv},
		PreferredVersion: gv,
	}
}

// groups serves /apis.
func (h *handler) groups(w http.ResponseWriter, r *http.Request, aggregated string) {
	if aggregated != "" {
		h.writeAggregated(w, r, aggregated, []apidiscoveryv2.APIGroupDiscovery{{
			ObjectMeta: metav1.ObjectMeta{Name: groupName},
			Versions: []apidiscoveryv2.APIVersionDiscovery{{
				Version: apiVersion,
				Resources: []apidiscoveryv2.APIResourceDiscovery{{
					Resource:         resource,
					ResponseKind:     &metav1.GroupVersionKind{Group: groupName, Version: apiVersion, Kind: "Lease"},
					Scope:            apidiscoveryv2.ScopeNamespace,
					SingularResource: "lease",
					Verbs:            leaseVerbs,
				}},
				Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
			}},
		}})
		return
	}
	g := apiGroup()
	g.TypeMeta = metav1.TypeMeta{}
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &metav1.APIGroupList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"},
		Groups:   []metav1.APIGroup{g},
	})
}

// writeAggregated answers with an APIGroupDiscoveryList. The v2beta1 and
// v2 documents have the same shape; only apiVersion differs.
func (h *handler) writeAggregated(w http.ResponseWriter, r *http.Request, v string, items []apidiscoveryv2.APIGroupDiscovery) {
	if items == nil {
		items = []apidiscoveryv2.APIGroupDiscovery{}
	}
	h.writeJSON(w, r, http.StatusOK, aggregatedContentType(v), &apidiscoveryv2.APIGroupDiscoveryList{
		TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/" + v},
		Items:    items,
	})
}

// group serves /apis/coordination.k8s.io.
func (h *handler) group(w http.ResponseWriter, r *http.Request, _ string) {
	g := apiGroup()
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &g)
}

// resources serves /apis/coordination.k8s.io/v1.
func (h *handler) resources(w http.ResponseWriter, r *http.Request, _ string) {
	h.writeJSON(w, r, http.StatusOK, mediaJSON, &metav1.APIResourceList{
		TypeMeta:     metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"},
		GroupVersion: groupVersion.String(),
		APIResources: []metav1.APIResource{{
			Name:         resource,
			SingularName: "lease",
			Namespaced:   true,
			Kind:         "Lease",
			Verbs:        leaseVerbs,
		}},
	})
}

var leaseColumns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: metav1.ObjectMeta{}.SwaggerDoc()["name"]},
	{Name: "Holder", Type: "string", Description: coordinationv1.LeaseSpec{}.SwaggerDoc()["holderIdentity"]},
	{Name: "Age", Type: "string", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
}

// table is the meta.k8s.io Table (version v) of items, as kubectl get
// prints it: name, holder, age.
func (h *handler) table(r *http.Request, v string, items []coordinationv1.Lease) (*metav1.Table, error) {
	t := &metav1.Table{
		TypeMeta:          metav1.TypeMeta{APIVersion: "meta.k8s.io/" + v, Kind: "Table"},
		ColumnDefinitions: leaseColumns,
		Rows:              []metav1.TableRow{},
	}
	include := r.URL.Query().Get("includeObject")
	now := h.clk.Now()
	for i := range items {
		l := &items[i]
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		age := "<unknown>"
		if !l.CreationTimestamp.IsZero() {
			age = duration.HumanDuration(now.Sub(l.CreationTimestamp.Time))
		}
		row := metav1.TableRow{Cells: []any{l.Name, holder, age}}
		var obj any
		switch include {
		case string(metav1.IncludeNone):
		case string(metav1.IncludeObject):
			obj = l
		case "", string(metav1.IncludeMetadata):
			obj = &metav1.PartialObjectMetadata{
				TypeMeta:   metav1.TypeMeta{APIVersion: "meta.k8s.io/" + v, Kind: "PartialObjectMetadata"},
				ObjectMeta: l.ObjectMeta,
			}
		default:
			return nil, badRequest("includeObject must be None, Metadata or Object, not %q", include)
		}
		if obj != nil {
			raw, err := json.Marshal(obj)
			if err != nil {
				return nil, fmt.Errorf("table row: %w", err)
			}
			row.Object.Raw = raw
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

// writeTable answers with the Table of items.
func (h *handler) writeTable(w http.ResponseWriter, r *http.Request, f format, items []coordinationv1.Lease, meta metav1.ListMeta) {
	t, err := h.table(r, f.table, items)
	if err != nil {
		var se *apierrors.StatusError
		if !errors.As(err, &se) {
			se = apierrors.NewInternalError(err)
		}
		h.writeError(w, r, se)
		return
	}
	t.ListMeta = meta
	h.writeJSON(w, r, http.StatusOK, mediaJSON, t)
}
