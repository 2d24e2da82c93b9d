package k8sapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

var (
	leaseGVK         = groupVersion.WithKind("Lease")
	deleteOptionsGVK = groupVersion.WithKind("DeleteOptions")
)

func isCode(err error, c codes.Code) bool { return status.Code(err) == c }

// checkKey makes the body's name and namespace agree with the URL's.
func checkKey(obj *coordinationv1.Lease, ns, name string) *apierrors.StatusError {
	if obj.Namespace != "" && obj.Namespace != ns {
		return badRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	obj.Namespace = ns
	if name != "" && obj.Name != name {
		return badRequest("the name of the object (%s) does not match the name on the URL (%s)", obj.Name, name)
	}
	return nil
}

// get serves GET of one lease.
func (h *handler) get(w http.ResponseWriter, r *http.Request, ns, name string) {
	f, serr := h.negotiate(r, true, false, metaObject)
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	// A resourceVersion other than "0" asks for a state not older than it.
	if v := r.URL.Query().Get("resourceVersion"); v != "" && v != "0" {
		want, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			h.writeError(w, r, badRequest("invalid resource version: %v", err))
			return
		}
		cur, err := h.readRevision(r, ns)
		if err == nil {
			serr = h.awaitRevision(r, ns, want, cur)
		} else {
			serr = readError(err, name)
		}
		if serr != nil {
			h.writeError(w, r, serr)
			return
		}
	}
	l, err := h.getLease(r, ns, name)
	if err != nil {
		h.writeError(w, r, readError(err, name))
		return
	}
	obj := h.present(l, l.ResourceVersion)
	if f.table != "" {
		h.writeTable(w, r, f, []coordinationv1.Lease{*obj}, metav1.ListMeta{ResourceVersion: obj.ResourceVersion})
		return
	}
	h.writeObject(w, r, http.StatusOK, f, obj)
}

// readError maps a failed read or delete: a name the service refuses
// names no lease.
func readError(err error, name string) *apierrors.StatusError {
	if isCode(err, codes.InvalidArgument) {
		return apierrors.NewNotFound(leaseResource, name)
	}
	return fromGRPC(err, name)
}

// selectors are a list's or a watch's filters, applied here: the full
// Kubernetes label syntax, and the fields metadata.name and
// metadata.namespace.
type selectors struct {
	labels labels.Selector
	fields fields.Selector
}

func parseSelectors(r *http.Request) (selectors, *apierrors.StatusError) {
	q := r.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return selectors{}, badRequest("unable to parse labelSelector: %v", err)
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return selectors{}, badRequest("unable to parse fieldSelector: %v", err)
	}
	for _, req := range fs.Requirements() {
		if req.Field != "metadata.name" && req.Field != "metadata.namespace" {
			return selectors{}, badRequest("field label not supported: %s", req.Field)
		}
	}
	return selectors{labels: ls, fields: fs}, nil
}

func (s selectors) matches(l *pb.Lease) bool {
	return s.labels.Matches(labels.Set(l.Labels)) &&
		s.fields.Matches(fields.Set{"metadata.name": l.Name, "metadata.namespace": l.Namespace})
}

// continueToken is where the next page of a list starts: after the lease
// Namespace/Name, read at revision RV, the first page's (0: the current
// state, for a token whose revision has left the window).
type continueToken struct {
	RV        uint64 `json:"rv"`
	Namespace string `json:"ns"`
	Name      string `json:"name"`
}

func encodeContinue(t continueToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, *apierrors.StatusError) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.Name == "" {
		return t, badRequest("invalid continue token")
	}
	return t, nil
}

func after(l *pb.Lease, t continueToken) bool {
	if l.Namespace != t.Namespace {
		return l.Namespace > t.Namespace
	}
	return l.Name > t.Name
}

// list serves GET of a collection, at the revision its options ask for
// (see rv.go); every page of a paginated list at the first page's.
func (h *handler) list(w http.ResponseWriter, r *http.Request, ns string) {
	f, serr := h.negotiate(r, true, false, metaList)
	var sel selectors
	if serr == nil {
		sel, serr = parseSelectors(r)
	}
	var opts listOptions
	if serr == nil {
		opts, serr = parseListOptions(r, false)
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	list := &coordinationv1.LeaseList{TypeMeta: metav1.TypeMeta{APIVersion: groupVersion.String(), Kind: "LeaseList"}}
	var leases []*pb.Lease
	rev := uint64(0)
	// A namespace that cannot exist holds no leases.
	if ns == "" || len(validation.IsDNS1123Label(ns)) == 0 {
		res, serr := h.readList(r, ns, opts)
		if serr != nil {
			h.writeError(w, r, serr)
			return
		}
		leases, rev = res.Leases, res.Revision
	}
	cont := opts.cont
	for _, l := range leases {
		if !sel.matches(l) || (cont != nil && !after(l, *cont)) {
			continue
		}
		if opts.limit > 0 && int64(len(list.Items)) == opts.limit {
			last := list.Items[len(list.Items)-1]
			list.Continue = encodeContinue(continueToken{RV: rev, Namespace: last.Namespace, Name: last.Name})
			break
		}
		list.Items = append(list.Items, *h.present(l, l.ResourceVersion))
	}
	list.ResourceVersion = formatRV(rev)
	if f.table != "" {
		h.writeTable(w, r, f, list.Items, list.ListMeta)
		return
	}
	h.writeObject(w, r, http.StatusOK, f, list)
}

// readList reads namespace ns ("" for all) as opts ask: a later page at
// its token's revision, an exact list at its revision, else the current
// state once it is not older than the revision asked for.
func (h *handler) readList(r *http.Request, ns string, opts listOptions) (*pb.ListResponse, *apierrors.StatusError) {
	if t := opts.cont; t != nil && t.RV != 0 {
		res, err := h.listAt(r, ns, t.RV)
		switch {
		case isOutOfRange(err):
			return nil, expiredContinue(*t)
		case err != nil:
			return nil, fromGRPC(err, "")
		}
		return res, nil
	}
	res, err := h.listLeases(r, ns)
	if err != nil {
		return nil, fromGRPC(err, "")
	}
	if !opts.rvSet || opts.cont != nil {
		return res, nil
	}
	if serr := h.awaitRevision(r, ns, opts.rv, res.Revision); serr != nil {
		return nil, serr
	}
	switch {
	case opts.exact && opts.rv != res.Revision:
		res, err = h.listAt(r, ns, opts.rv)
		if isOutOfRange(err) {
			return nil, tooOld(opts.rv, err)
		}
	case res.Revision < opts.rv:
		// Reached while waiting: read the newer state.
		res, err = h.listLeases(r, ns)
	}
	if err != nil {
		return nil, fromGRPC(err, "")
	}
	return res, nil
}

// readLease negotiates the answer's format and reads the Lease a POST or
// PUT carries, checked against the path's namespace and name (name empty
// for a POST), and the request's options (options reads them).
func (h *handler) readLease(w http.ResponseWriter, r *http.Request, ns, name string, options func(*http.Request) (writeOptions, *apierrors.StatusError)) (format, *coordinationv1.Lease, writeOptions, *apierrors.StatusError) {
	f, serr := h.negotiate(r, false, false, metaObject)
	var opts writeOptions
	if serr == nil {
		opts, serr = options(r)
	}
	obj := &coordinationv1.Lease{}
	if serr == nil {
		serr = h.decode(w, r, obj, leaseGVK, &opts)
	}
	if serr == nil {
		serr = checkKey(obj, ns, name)
	}
	return f, obj, opts, serr
}

// presentWritten is the Lease a write answers with. A dry-run create's
// lease has no resourceVersion yet (as the API server answers one), and
// was created now.
func (h *handler) presentWritten(l *pb.Lease, dryRun bool) *coordinationv1.Lease {
	out := h.present(l, l.ResourceVersion)
	if dryRun && l.ResourceVersion == 0 {
		out.ResourceVersion = ""
		out.CreationTimestamp = metav1.NewTime(h.clk.Now().Truncate(time.Second))
	}
	return out
}

// create serves POST.
func (h *handler) create(w http.ResponseWriter, r *http.Request, ns string) {
	f, obj, opts, serr := h.readLease(w, r, ns, "", h.createOptions)
	if serr == nil && obj.ResourceVersion != "" {
		serr = badRequest("resourceVersion should not be set on objects to be created")
	}
	generate := obj.Name == "" && obj.GenerateName != ""
	if serr == nil && obj.Name == "" && !generate {
		serr = invalid("", field.Required(field.NewPath("metadata", "name"), "name or generateName is required"))
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	if generate && len(obj.GenerateName) > validation.DNS1123LabelMaxLength-5 {
		obj.GenerateName = obj.GenerateName[:validation.DNS1123LabelMaxLength-5]
	}
	manager := fieldManagerName(opts, r)
	for attempt := 0; ; attempt++ {
		if generate {
			obj.Name = obj.GenerateName + utilrand.String(5)
		}
		l, err := h.writeLease(r, h.trackUpdate(emptyLease(ns, obj.Name), obj.DeepCopy(), manager), true, 0, opts.dryRun)
		if err != nil && generate && isCode(err, codes.AlreadyExists) && attempt < h.cfg.MaxWriteRetries {
			continue
		}
		if err != nil {
			h.writeError(w, r, fromGRPC(err, obj.Name))
			return
		}
		h.writeObject(w, r, http.StatusCreated, f, h.presentWritten(l, opts.dryRun))
		return
	}
}

// update serves PUT: a replace guarded by the body's resourceVersion, or a
// create when the lease does not exist (Leases allow create on update).
func (h *handler) update(w http.ResponseWriter, r *http.Request, ns, name string) {
	f, obj, opts, serr := h.readLease(w, r, ns, name, h.updateOptions)
	var rv uint64
	if serr == nil && obj.ResourceVersion != "" {
		rv, serr = parseRV(obj.ResourceVersion)
	}
	// The lease replaced: for its managedFields, and to check the uid.
	var live *pb.Lease
	if serr == nil && (rv != 0 || obj.UID != "") {
		var err error
		live, err = h.liveLease(r, ns, name, rv)
		if err != nil && !isCode(err, codes.NotFound) {
			serr = fromGRPC(err, name)
		}
	}
	if serr == nil && obj.UID != "" {
		serr = checkUID(name, obj.UID, live)
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	manager := fieldManagerName(opts, r)
	liveObj := emptyLease(ns, name)
	if live != nil {
		liveObj = h.present(live, live.ResourceVersion)
	}
	code := http.StatusOK
	l, err := h.writeLease(r, h.trackUpdate(liveObj, obj.DeepCopy(), manager), rv == 0, rv, opts.dryRun)
	switch {
	case err != nil && rv == 0 && isCode(err, codes.AlreadyExists):
		h.writeError(w, r, invalid(name, field.Invalid(field.NewPath("metadata", "resourceVersion"), int64(0), "must be specified for an update")))
		return
	case err != nil && rv != 0 && isCode(err, codes.NotFound):
		l, err = h.writeLease(r, h.trackUpdate(emptyLease(ns, name), obj, manager), true, 0, opts.dryRun)
		if isCode(err, codes.AlreadyExists) {
			err = status.Error(codes.Aborted, "created meanwhile")
		}
		code = http.StatusCreated
	case err == nil && rv == 0:
		code = http.StatusCreated
	}
	if err != nil {
		h.writeError(w, r, fromGRPC(err, name))
		return
	}
	h.writeObject(w, r, code, f, h.presentWritten(l, opts.dryRun))
}

// checkUID refuses a write whose uid names another incarnation of the
// lease than live, the current one (nil: none).
func checkUID(name string, uid types.UID, live *pb.Lease) *apierrors.StatusError {
	switch {
	case live == nil:
		return uidConflict(name, string(uid), "")
	case uidOf(live) != uid:
		return uidConflict(name, string(uid), string(uidOf(live)))
	}
	return nil
}

// Bounds on a JSON patch. Its copy and add operations can double the
// document at every step, so a patch of a few KiB could build gigabytes
// before the result is checked (the library's own limit is off by
// default and global). A patch is applied one operation at a time, and no
// intermediate document may grow past maxPatchedBytes: four times the
// largest object a write may store, room enough for any real Lease.
const (
	maxJSONPatchOps = 100
	maxPatchedBytes = 256 << 10
)

// excerpt is the start of a request body, for an error message (which the
// API answers with and logs): enough to recognise it, never all of it.
func excerpt(body []byte) string {
	const n = 200
	if len(body) <= n {
		return string(body)
	}
	return string(body[:n]) + "..."
}

// applyBounded applies p to doc one operation at a time, failing as soon
// as the document grows past maxPatchedBytes.
func applyBounded(p jsonpatch.Patch, doc []byte) ([]byte, error) {
	for i, op := range p {
		next, err := jsonpatch.Patch{op}.Apply(doc)
		if err != nil {
			return nil, err
		}
		if len(next) > maxPatchedBytes {
			return nil, fmt.Errorf("operation %d makes the object %d bytes, above the limit of %d", i, len(next), maxPatchedBytes)
		}
		doc = next
	}
	return doc, nil
}

// patch serves PATCH: the patch is applied to the current Lease and the
// result written back guarded by the resourceVersion it was computed on;
// if another writer came first, it is applied again to the newer Lease,
// unless the patch itself named the resourceVersion. An apply patch
// (server-side apply) merges with the field manager, and creates the
// lease when there is none.
func (h *handler) patch(w http.ResponseWriter, r *http.Request, ns, name string) {
	f, serr := h.negotiate(r, false, false, metaObject)
	var mt string
	if serr == nil {
		mt, serr = requestMediaType(r)
	}
	pt := types.PatchType(mt)
	if serr == nil {
		switch pt {
		case types.MergePatchType, types.StrategicMergePatchType, types.JSONPatchType, types.ApplyYAMLPatchType:
		default:
			serr = unsupportedMediaType(string(types.MergePatchType) + ", " + string(types.StrategicMergePatchType) + ", " +
				string(types.JSONPatchType) + ", " + string(types.ApplyYAMLPatchType))
		}
	}
	var opts writeOptions
	if serr == nil {
		opts, serr = h.patchOptions(r, pt)
	}
	var body []byte
	if serr == nil {
		body, serr = h.readBody(w, r)
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	// change makes the Lease to write out of the current one.
	var change func(cur *coordinationv1.Lease) (*coordinationv1.Lease, *apierrors.StatusError)
	var apply func(cur []byte) ([]byte, error)
	switch pt {
	case types.ApplyYAMLPatchType:
		change = func(cur *coordinationv1.Lease) (*coordinationv1.Lease, *apierrors.StatusError) {
			return h.applyTo(w, cur, body, opts)
		}
	case types.MergePatchType:
		apply = func(cur []byte) ([]byte, error) { return jsonpatch.MergePatch(cur, body) }
	case types.StrategicMergePatchType:
		apply = func(cur []byte) ([]byte, error) {
			return strategicpatch.StrategicMergePatch(cur, body, coordinationv1.Lease{})
		}
	case types.JSONPatchType:
		p, err := jsonpatch.DecodePatch(body)
		if err != nil {
			h.writeError(w, r, badRequest("decoding the JSON patch: %v", err))
			return
		}
		if len(p) > maxJSONPatchOps {
			h.writeError(w, r, apierrors.NewRequestEntityTooLargeError(
				fmt.Sprintf("a JSON patch may have at most %d operations, this one has %d", maxJSONPatchOps, len(p))))
			return
		}
		apply = func(cur []byte) ([]byte, error) { return applyBounded(p, cur) }
	}
	if change == nil {
		manager := fieldManagerName(opts, r)
		change = func(cur *coordinationv1.Lease) (*coordinationv1.Lease, *apierrors.StatusError) {
			curJSON, err := json.Marshal(cur)
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			patched, err := apply(curJSON)
			if err != nil {
				return nil, apierrors.NewInvalid(leaseKind, name, field.ErrorList{field.Invalid(field.NewPath(""), excerpt(body), err.Error())})
			}
			obj, serr := h.decodePatched(w, patched, opts)
			if serr != nil {
				return nil, serr
			}
			return h.trackUpdate(cur, obj, manager), nil
		}
	}
	for attempt := 0; ; attempt++ {
		curLease, err := h.getLease(r, ns, name)
		create := pt == types.ApplyYAMLPatchType && isCode(err, codes.NotFound)
		if err != nil && !create {
			h.writeError(w, r, readError(err, name))
			return
		}
		cur, rv := emptyLease(ns, name), uint64(0)
		if !create {
			cur, rv = h.present(curLease, curLease.ResourceVersion), curLease.ResourceVersion
		}
		obj, serr := change(cur.DeepCopy())
		if serr != nil {
			h.writeError(w, r, serr)
			return
		}
		if obj.Name != name || (obj.Namespace != "" && obj.Namespace != ns) {
			h.writeError(w, r, invalid(name, field.Forbidden(field.NewPath("metadata", "name"), "a patch may not change the name or namespace")))
			return
		}
		obj.Namespace = ns
		if obj.UID != "" && obj.UID != cur.UID {
			h.writeError(w, r, uidConflict(name, string(obj.UID), string(cur.UID)))
			return
		}
		guard := rv
		if obj.ResourceVersion != "" && obj.ResourceVersion != cur.ResourceVersion {
			var serr *apierrors.StatusError
			if guard, serr = parseRV(obj.ResourceVersion); serr != nil {
				h.writeError(w, r, serr)
				return
			}
		}
		out, err := h.writeLease(r, obj, create, guard, opts.dryRun)
		if err != nil && guard == rv && attempt < h.cfg.MaxWriteRetries &&
			(isCode(err, codes.Aborted) || isCode(err, codes.NotFound) || (create && isCode(err, codes.AlreadyExists))) {
			continue
		}
		if err != nil {
			h.writeError(w, r, fromGRPC(err, name))
			return
		}
		code := http.StatusOK
		if create {
			code = http.StatusCreated
		}
		h.writeObject(w, r, code, f, h.presentWritten(out, opts.dryRun))
		return
	}
}

// decodePatched reads the result of a patch, checking it for fields the
// Lease type does not have as opts.fieldValidation says.
func (h *handler) decodePatched(w http.ResponseWriter, patched []byte, opts writeOptions) (*coordinationv1.Lease, *apierrors.StatusError) {
	info := h.formatFor(mediaJSON).info
	ser := info.Serializer
	if opts.fieldValidation != metav1.FieldValidationIgnore {
		ser = info.StrictSerializer
	}
	obj := &coordinationv1.Lease{}
	_, got, err := ser.Decode(patched, &leaseGVK, obj)
	serr := strictErrors(w, opts, err, func(err error) *apierrors.StatusError {
		if runtime.IsStrictDecodingError(err) {
			return badRequest("%v", err)
		}
		return badRequest("the patched Lease does not decode: %v", err)
	})
	if serr == nil && got.GroupKind() != leaseKind {
		serr = badRequest("the patched object is a %s, not a Lease", got.Kind)
	}
	return obj, serr
}

// delete serves DELETE, with the preconditions of DeleteOptions.
func (h *handler) delete(w http.ResponseWriter, r *http.Request, ns, name string) {
	opts, serr := h.deleteOptions(w, r)
	var rv uint64
	var uid types.UID
	if p := opts.Preconditions; serr == nil && p != nil {
		if p.ResourceVersion != nil {
			rv, serr = parseRV(*p.ResourceVersion)
		}
		if p.UID != nil {
			uid = *p.UID
		}
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	for attempt := 0; ; attempt++ {
		guard := rv
		if uid != "" {
			// Delete exactly the incarnation that was checked.
			cur, err := h.getLease(r, ns, name)
			if err != nil {
				h.writeError(w, r, readError(err, name))
				return
			}
			if got := uidOf(cur); got != uid {
				h.writeError(w, r, uidConflict(name, string(uid), string(got)))
				return
			}
			if guard == 0 {
				guard = cur.ResourceVersion
			}
		}
		gone, err := h.deleteLease(r, ns, name, guard, len(opts.DryRun) > 0)
		if err != nil && rv == 0 && uid != "" && isCode(err, codes.Aborted) && attempt < h.cfg.MaxWriteRetries {
			continue
		}
		if err != nil {
			if isCode(err, codes.Aborted) && rv != 0 {
				h.writeError(w, r, preconditionFailed(name, "ResourceVersion", formatRV(rv), "a newer one"))
				return
			}
			h.writeError(w, r, readError(err, name))
			return
		}
		st := metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusSuccess,
			Details:  &metav1.StatusDetails{Name: name, Group: groupName, Kind: resource, UID: uidOf(gone)},
		}
		h.writeJSON(w, r, http.StatusOK, mediaJSON, &st)
		return
	}
}
