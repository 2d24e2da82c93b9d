package k8sapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/munnerz/goautoneg"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Media types the handler speaks.
const (
	mediaJSON     = runtime.ContentTypeJSON     // application/json
	mediaYAML     = runtime.ContentTypeYAML     // application/yaml
	mediaProtobuf = runtime.ContentTypeProtobuf // application/vnd.kubernetes.protobuf
)

// format is how a response is encoded.
type format struct {
	info runtime.SerializerInfo
	// table, when set, is the meta.k8s.io version ("v1" or "v1beta1") of
	// a Table to answer with instead of the object (JSON only).
	table string
	// meta, when set, is "PartialObjectMetadata" or
	// "PartialObjectMetadataList" (meta.k8s.io/v1): the answer carries
	// only the leases' metadata, as metadata-only clients ask.
	meta string
}

// What a request may be answered with besides the object itself: its
// metadata alone, as an object or as a list.
const (
	metaObject = "PartialObjectMetadata"
	metaList   = "PartialObjectMetadataList"
)

// negotiate picks the response format from the Accept header, as the API
// server does: the first acceptable clause wins. Tables are offered where
// allowTable, metadata alone (as=meta, meta.k8s.io/v1) where meta is not
// ""; YAML only outside watches. Protobuf is used only when the client
// prefers it to JSON.
func (h *handler) negotiate(r *http.Request, allowTable, stream bool, meta string) (format, *apierrors.StatusError) {
	header := r.Header.Get("Accept")
	if header == "" {
		return h.formatFor(mediaJSON), nil
	}
	for _, c := range goautoneg.ParseAccept(header) {
		if c.Q <= 0 {
			continue
		}
		mt := c.Type + "/" + c.SubType
		if as := c.Params["as"]; as != "" {
			v := c.Params["v"]
			if as == "Table" && allowTable && c.Params["g"] == "meta.k8s.io" && (v == "v1" || v == "v1beta1") &&
				(mt == mediaJSON || mt == "application/*" || mt == "*/*") {
				f := h.formatFor(mediaJSON)
				f.table = v
				return f, nil
			}
			if meta != "" && as == meta && c.Params["g"] == "meta.k8s.io" && v == "v1" {
				var f format
				switch mt {
				case mediaJSON, "application/*", "*/*":
					f = h.formatFor(mediaJSON)
				case mediaProtobuf:
					f = h.formatFor(mediaProtobuf)
				case mediaYAML:
					if stream {
						continue
					}
					f = h.formatFor(mediaYAML)
				default:
					continue
				}
				f.meta = meta
				return f, nil
			}
			continue
		}
		switch mt {
		case mediaJSON, "application/*", "*/*":
			return h.formatFor(mediaJSON), nil
		case mediaProtobuf:
			return h.formatFor(mediaProtobuf), nil
		case mediaYAML:
			if !stream {
				return h.formatFor(mediaYAML), nil
			}
		}
	}
	accepted := mediaJSON + ", " + mediaProtobuf
	if !stream {
		accepted += ", " + mediaYAML
	}
	return format{}, notAcceptable(accepted)
}

func (h *handler) formatFor(mediaType string) format {
	info, _ := runtime.SerializerInfoForMediaType(h.codecs.SupportedMediaTypes(), mediaType)
	return format{info: info}
}

// encode encodes obj (a Lease, a LeaseList or a Status) in f, stamped with
// its kind and apiVersion; when f asks for metadata alone, a Lease or a
// LeaseList becomes a PartialObjectMetadata or a PartialObjectMetadataList.
func (h *handler) encode(f format, obj runtime.Object) ([]byte, error) {
	gv := groupVersion
	if f.meta != "" {
		switch o := obj.(type) {
		case *coordinationv1.Lease:
			obj, gv = partialObject(o), metav1.SchemeGroupVersion
		case *coordinationv1.LeaseList:
			list := &metav1.PartialObjectMetadataList{
				TypeMeta: metav1.TypeMeta{APIVersion: metav1.SchemeGroupVersion.String(), Kind: metaList},
				ListMeta: o.ListMeta,
				Items:    make([]metav1.PartialObjectMetadata, len(o.Items)),
			}
			for i := range o.Items {
				list.Items[i] = *partialObject(&o.Items[i])
			}
			obj, gv = list, metav1.SchemeGroupVersion
		}
	}
	enc := h.codecs.WithoutConversion().EncoderForVersion(f.info.Serializer, gv)
	return runtime.Encode(enc, obj)
}

// partialObject is the metadata of l, as metadata-only clients read it.
func partialObject(l *coordinationv1.Lease) *metav1.PartialObjectMetadata {
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: metav1.SchemeGroupVersion.String(), Kind: metaObject},
		ObjectMeta: l.ObjectMeta,
	}
}

// writeObject answers with obj in f.
func (h *handler) writeObject(w http.ResponseWriter, r *http.Request, code int, f format, obj runtime.Object) {
	body, err := h.encode(f, obj)
	if err != nil {
		h.writeError(w, r, apierrors.NewInternalError(err))
		return
	}
	writeBody(w, code, f.info.MediaType, body)
}

// writeJSON answers with v, which carries its own kind and apiVersion,
// as JSON of the given content type.
func (h *handler) writeJSON(w http.ResponseWriter, r *http.Request, code int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		h.writeError(w, r, apierrors.NewInternalError(err))
		return
	}
	writeBody(w, code, contentType, append(body, '\n'))
}

func writeBody(w http.ResponseWriter, code int, contentType string, body []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// readBody reads the request body, at most MaxBodyBytes of it.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apierrors.StatusError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, apierrors.NewRequestEntityTooLargeError("limit is " + strconv.FormatInt(h.cfg.MaxBodyBytes, 10) + " bytes")
		}
		return nil, badRequest("reading the body: %v", err)
	}
	return body, nil
}

// requestMediaType is the body's media type; JSON when not given.
func requestMediaType(r *http.Request) (string, *apierrors.StatusError) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return mediaJSON, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", unsupportedMediaType(ct)
	}
	return mt, nil
}

// decode reads the body into into, an object of kind gvk. A JSON or YAML
// body may leave out apiVersion and kind. A write's body (opts not nil) is
// checked for unknown and duplicate fields as opts.fieldValidation says.
func (h *handler) decode(w http.ResponseWriter, r *http.Request, into runtime.Object, gvk schema.GroupVersionKind, opts *writeOptions) *apierrors.StatusError {
	mt, serr := requestMediaType(r)
	if serr != nil {
		return serr
	}
	info, ok := runtime.SerializerInfoForMediaType(h.codecs.SupportedMediaTypes(), mt)
	if !ok {
		return unsupportedMediaType(mt)
	}
	body, serr := h.readBody(w, r)
	if serr != nil {
		return serr
	}
	ser := info.Serializer
	if opts != nil && opts.fieldValidation != metav1.FieldValidationIgnore && info.StrictSerializer != nil {
		ser = info.StrictSerializer
	}
	_, got, err := ser.Decode(body, &gvk, into)
	refusal := func(err error) *apierrors.StatusError {
		if runtime.IsStrictDecodingError(err) {
			// The API server's words for a body that strict decoding refused.
			return badRequest("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
		}
		return badRequest("decoding the %s body: %v", gvk.Kind, err)
	}
	if err != nil && opts == nil {
		return refusal(err)
	}
	if err != nil {
		if serr := strictErrors(w, *opts, err, refusal); serr != nil {
			return serr
		}
	}
	if got.Kind != gvk.Kind {
		return badRequest("the body is a %s, not a %s", got.Kind, gvk.Kind)
	}
	return nil
}
