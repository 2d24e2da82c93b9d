// Package k8sapi serves the Kubernetes Lease API (coordination.k8s.io/v1)
// over HTTP in front of a leasekeeper node, so that Kubernetes clients —
// client-go's leader election, kubectl, informers — can keep their leases
// in leasekeeper.
//
// The handler is a translator: every request becomes one or a few calls of
// the gRPC Leases service (Write, Get, List, Delete, Watch), so the node's
// own forwarding, linearizable reads and optimistic concurrency apply
// unchanged. A Lease is stored as the client wrote it (its spec, annotations
// and owner references, in the lease's object field; its labels in the
// lease's labels) and is presented back with the server's fields filled in:
// uid, resourceVersion, creationTimestamp and the annotation
// leasekeeper.io/fencing-token. The holder shown is always the service's own
// (so an expiry by the service shows as an empty holderIdentity), and leases
// made through gRPC are presented from their gRPC fields.
//
// Names are checked as the API server checks a Lease's: the name a DNS-1123
// subdomain (at most 253 characters, dots allowed), the namespace a
// DNS-1123 label. dryRun=All is answered by the service's own dry run
// (checked and authorized like the write, nothing written). Server-side
// apply and managedFields are apimachinery's field manager's, as in the
// API server. resourceVersion, resourceVersionMatch, paginated lists and
// bookmarks follow the API server's rules, with history read from the
// node's window of recent events (rv.go). What the real API server does
// and this one does not: finalizers (docs/kubernetes.md has the whole
// list).
package k8sapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/clock"
)

// FencingTokenAnnotation carries the lease's current fencing token on every
// Lease the API returns. A client writes it back unchanged or not at all:
// it is never stored.
const FencingTokenAnnotation = "leasekeeper.io/fencing-token"

// RecordLabel, set to "true" on a Lease, keeps Kubernetes' plain-record
// behaviour for it: the service never expires its holder or clears
// holderIdentity, whatever leaseDurationSeconds says (or when it is not
// given); only a write, a release or a delete ends the holding. Without
// it, a holding ends leaseDurationSeconds (or DefaultLeaseDuration) after
// its last renewal. It is the service's own label (fsm.RecordLabel), so
// it works through the gRPC API as well, and it is refused until every
// member of the cluster runs a binary that honours it.
const RecordLabel = "leasekeeper.io/record"

// LockDelayedAnnotation is "true" on a Lease while it is in its lock delay
// (its holderIdentity is empty: the last holding expired, and no holder
// may be set until the leader ends the delay). Like the fencing token it
// is the server's and never stored.
const LockDelayedAnnotation = "leasekeeper.io/lock-delayed"

// Config is what the handler needs.
type Config struct {
	// Client reaches the lease service. A client of the local node's own
	// gRPC address is right: the node forwards to the leader itself.
	Client pb.LeasesClient
	// Logger receives one line per failed request and per watch at debug
	// level; nil discards.
	Logger hclog.Logger
	// Clock is used for the age column of tables only; nil means the
	// real clock.
	Clock clock.Clock
	// Version is leasekeeper's version, reported by /version.
	Version string
	// DefaultLeaseDuration is given to a holding whose Lease names a holder
	// but no leaseDurationSeconds. Kubernetes lets such a holding last
	// forever; leasekeeper expires every holding but a record's
	// (RecordLabel).
	DefaultLeaseDuration time.Duration
	// RequestTimeout bounds each call to the lease service (watches
	// excepted).
	RequestTimeout time.Duration
	// UnavailableWait is how long a request waits for the service to have
	// a leader again (an election, a node restarting) before it fails with
	// 503; 0 fails at once.
	UnavailableWait time.Duration
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// MaxWriteRetries is how often a patch, or a delete with a uid
	// precondition, is tried again after another writer won the race.
	MaxWriteRetries int
	// MaxWatchTimeout bounds a watch's life (a client's timeoutSeconds
	// may shorten it); clients start a new watch from where they were.
	MaxWatchTimeout time.Duration
	// ResourceVersionWait is how long a read or watch from a
	// resourceVersion the store has not reached yet waits for it before
	// the API server's 504 "Too large resource version" (its own wait is
	// 3 s).
	ResourceVersionWait time.Duration
	// BookmarkInterval is how often a watch with allowWatchBookmarks gets
	// a BOOKMARK with the revision it has reached (the API server sends
	// one about every minute).
	BookmarkInterval time.Duration
}

// fromLoopback reports whether r came from a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultConfig returns the defaults; Client must still be set.
func DefaultConfig() Config {
	return Config{
		Clock:                clock.New(),
		DefaultLeaseDuration: 15 * time.Second,
		RequestTimeout:       30 * time.Second,
		UnavailableWait:      5 * time.Second,
		MaxBodyBytes:         1 << 20,
		MaxWriteRetries:      5,
		MaxWatchTimeout:      30 * time.Minute,
		ResourceVersionWait:  3 * time.Second,
		BookmarkInterval:     time.Minute,
	}
}

// Validate reports the first field that is not usable.
func (c Config) Validate() error {
	switch {
	case c.Client == nil:
		return errors.New("k8sapi: Config.Client is required")
	case c.DefaultLeaseDuration < time.Second:
		return fmt.Errorf("k8sapi: Config.DefaultLeaseDuration must be at least 1s, got %v", c.DefaultLeaseDuration)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("k8sapi: Config.RequestTimeout must be positive, got %v", c.RequestTimeout)
	case c.UnavailableWait < 0:
		return fmt.Errorf("k8sapi: Config.UnavailableWait must not be negative, got %v", c.UnavailableWait)
	case c.MaxBodyBytes <= 0:
		return fmt.Errorf("k8sapi: Config.MaxBodyBytes must be positive, got %d", c.MaxBodyBytes)
	case c.MaxWriteRetries < 0:
		return fmt.Errorf("k8sapi: Config.MaxWriteRetries must not be negative, got %d", c.MaxWriteRetries)
	case c.MaxWatchTimeout <= 0:
		return fmt.Errorf("k8sapi: Config.MaxWatchTimeout must be positive, got %v", c.MaxWatchTimeout)
	case c.ResourceVersionWait < 0:
		return fmt.Errorf("k8sapi: Config.ResourceVersionWait must not be negative, got %v", c.ResourceVersionWait)
	case c.BookmarkInterval < 50*time.Millisecond:
		return fmt.Errorf("k8sapi: Config.BookmarkInterval must be at least 50ms, got %v", c.BookmarkInterval)
	}
	return nil
}

// The API this package serves.
const (
	groupName  = coordinationv1.GroupName // "coordination.k8s.io"
	apiVersion = "v1"
	resource   = "leases"
)

var (
	groupVersion  = coordinationv1.SchemeGroupVersion
	leaseResource = schema.GroupResource{Group: groupName, Resource: resource}
	leaseKind     = schema.GroupKind{Group: groupName, Kind: "Lease"}
)

// handler serves the API; see NewHandler.
type handler struct {
	cfg    Config
	log    hclog.Logger
	clk    clock.Clock
	scheme *runtime.Scheme
	codecs serializer.CodecFactory
	params runtime.ParameterCodec
	// openapi serves /openapi/v2 and /openapi/v3.
	openapi http.Handler
	// fields merges apply patches and keeps managedFields.
	fields *managedfields.FieldManager
}

// NewHandler returns the HTTP handler of the Lease API, its discovery
// documents and /version. It starts no goroutines: each request is served
// on the caller's, watches included.
func NewHandler(cfg Config) (http.Handler, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.New()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := coordinationv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("k8sapi: scheme: %w", err)
	}
	// Options (DeleteOptions above all) may arrive stamped with the core or
	// the meta group version instead of the lease's.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		return nil, fmt.Errorf("k8sapi: scheme: %w", err)
	}
	docs, schemas, err := newOpenAPI(scheme)
	if err != nil {
		return nil, fmt.Errorf("k8sapi: %w", err)
	}
	fields, err := newFieldManager(scheme, schemas)
	if err != nil {
		return nil, fmt.Errorf("k8sapi: field manager: %w", err)
	}
	return &handler{
		cfg:     cfg,
		log:     cfg.Logger,
		clk:     cfg.Clock,
		scheme:  scheme,
		codecs:  serializer.NewCodecFactory(scheme),
		params:  runtime.NewParameterCodec(scheme),
		openapi: docs,
		fields:  fields,
	}, nil
}

// ServeHTTP routes by path; each route checks its own methods so that
// every refusal is a Status object.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil && r.Header.Get("Authorization") != "" && !fromLoopback(r) {
		// The token has crossed the network in the clear already; refusing
		// it at least keeps such a set-up from working by accident.
		h.writeError(w, r, apierrors.NewBadRequest("bearer tokens are refused over plain HTTP from another host: serve the API with TLS (the node's --tls-cert)"))
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch path {
	case "/version":
		h.discovery(w, r, h.serveVersion)
		return
	case "/api":
		h.discovery(w, r, h.coreVersions)
		return
	case "/api/v1":
		h.discovery(w, r, h.coreResources)
		return
	case "/apis":
		h.discovery(w, r, h.groups)
		return
	case "/apis/" + groupName:
		h.discovery(w, r, h.group)
		return
	case "/apis/" + groupName + "/" + apiVersion:
		h.discovery(w, r, h.resources)
		return
	}
	if path == "/openapi/v2" || path == "/openapi/v3" || strings.HasPrefix(path, "/openapi/v3/") {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.writeError(w, r, methodNotAllowed(r, strings.ToLower(r.Method)))
			return
		}
		h.openapi.ServeHTTP(w, r)
		return
	}
	prefix := "/apis/" + groupName + "/" + apiVersion + "/"
	if !strings.HasPrefix(path, prefix) {
		h.writeError(w, r, notFoundPath(r))
		return
	}
	parts := strings.Split(strings.TrimPrefix(path, prefix), "/")
	switch {
	case len(parts) == 1 && parts[0] == resource:
		h.collection(w, r, "")
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == resource && parts[1] != "":
		h.collection(w, r, parts[1])
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == resource && parts[1] != "" && parts[3] != "":
		h.item(w, r, parts[1], parts[3])
	default:
		h.writeError(w, r, notFoundPath(r))
	}
}

// collection serves .../leases: list, watch and (namespaced) create and
// deletecollection.
func (h *handler) collection(w http.ResponseWriter, r *http.Request, ns string) {
	switch r.Method {
	case http.MethodGet:
		if isTrue(r.URL.Query().Get("watch")) {
			h.watch(w, r, ns)
			return
		}
		h.list(w, r, ns)
	case http.MethodPost:
		if ns == "" {
			h.writeError(w, r, methodNotAllowed(r, "create"))
			return
		}
		h.create(w, r, ns)
	case http.MethodDelete:
		if ns == "" {
			h.writeError(w, r, methodNotAllowed(r, "deletecollection"))
			return
		}
		h.deleteCollection(w, r, ns)
	default:
		h.writeError(w, r, methodNotAllowed(r, strings.ToLower(r.Method)))
	}
}

// item serves .../namespaces/{ns}/leases/{name}.
func (h *handler) item(w http.ResponseWriter, r *http.Request, ns, name string) {
	switch r.Method {
	case http.MethodGet:
		h.get(w, r, ns, name)
	case http.MethodPut:
		h.update(w, r, ns, name)
	case http.MethodPatch:
		h.patch(w, r, ns, name)
	case http.MethodDelete:
		h.delete(w, r, ns, name)
	default:
		h.writeError(w, r, methodNotAllowed(r, strings.ToLower(r.Method)))
	}
}

func isTrue(s string) bool { return s == "true" || s == "1" }
