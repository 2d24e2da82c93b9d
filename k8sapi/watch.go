package k8sapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

// maxWatchResumes bounds how often one watch re-subscribes after the
// service dropped it for falling behind.
const maxWatchResumes = 5

// watchType maps the service's event types to the three of Kubernetes:
// every change to an existing lease (an acquisition, renewal, release,
// expiry or plain write) is MODIFIED.
func watchType(t pb.WatchEvent_Type) watch.EventType {
	switch t {
	case pb.WatchEvent_ADDED:
		return watch.Added
	case pb.WatchEvent_DELETED:
		return watch.Deleted
	default:
		return watch.Modified
	}
}

// watch serves GET of a collection with watch=true. Without a
// resourceVersion (or with "0") it first sends the current leases as ADDED
// events, as the API server does; with one it sends every change after it.
// sendInitialEvents=true (the WatchList protocol) sends the current leases
// and then a bookmark that marks their end.
func (h *handler) watch(w http.ResponseWriter, r *http.Request, ns string) {
	f, serr := h.negotiate(r, true, true, metaObject)
	var sel selectors
	if serr == nil {
		sel, serr = parseSelectors(r)
	}
	q := r.URL.Query()
	rvParam, sendInitial := q.Get("resourceVersion"), q.Get("sendInitialEvents")
	bookmarks := isTrue(q.Get("allowWatchBookmarks"))
	timeout := h.cfg.MaxWatchTimeout
	if s := q.Get("timeoutSeconds"); s != "" && serr == nil {
		secs, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err != nil || secs < 0:
			serr = badRequest("invalid timeoutSeconds %q", s)
		case secs > 0 && time.Duration(secs)*time.Second < timeout:
			timeout = time.Duration(secs) * time.Second
		}
	}
	initial := sendInitial == "true" || (sendInitial == "" && (rvParam == "" || rvParam == "0"))
	var opts listOptions
	if serr == nil {
		opts, serr = parseListOptions(r, true)
	}
	var start uint64
	if serr == nil && !initial && opts.rvSet {
		start = opts.rv
		// A revision the store has not reached is waited for, then
		// refused before the watch begins, as the API server does.
		cur, err := h.readRevision(r, ns)
		if err == nil {
			serr = h.awaitRevision(r, ns, start, cur)
		} else if !isCode(err, codes.InvalidArgument) {
			serr = fromGRPC(err, "")
		}
	}
	if serr != nil {
		h.writeError(w, r, serr)
		return
	}
	ctx, cancel := context.WithTimeout(withCredentials(r.Context(), r), timeout)
	defer cancel()

	if ns != "" && len(validation.IsDNS1123Label(ns)) > 0 {
		// A namespace that cannot exist: nothing will ever happen in it.
		// The service still authenticates and authorizes the caller
		// (refusing the name itself only to one that may read there)
		// before the watch is held open.
		if _, err := h.cfg.Client.Get(ctx, &pb.GetRequest{Namespace: ns, Name: "watch"}); err != nil && !isCode(err, codes.InvalidArgument) {
			h.writeError(w, r, fromGRPC(err, ""))
			return
		}
		h.newWatchEncoder(w, r, f).flush()
		<-ctx.Done()
		return
	}
	var current []*pb.Lease
	if initial {
		res, err := h.listLeases(r, ns)
		if err != nil {
			h.writeError(w, r, fromGRPC(err, ""))
			return
		}
		start = res.Revision
		for _, l := range res.Leases {
			if sel.matches(l) {
				current = append(current, l)
			}
		}
	}
	req := &pb.WatchRequest{Namespace: ns, AllNamespaces: ns == "", StartRevision: start}
	if bookmarks {
		// Idle watches learn the store's revision from the service's
		// progress events; busy ones from the events themselves.
		req.ProgressInterval = durationpb.New(h.cfg.BookmarkInterval)
	}
	stream, err := h.cfg.Client.Watch(ctx, req)
	if err != nil {
		h.writeError(w, r, fromGRPC(err, ""))
		return
	}
	h.log.Debug("watch started", "namespace", ns, "start", start, "media", f.info.MediaType, "table", f.table)

	enc := h.newWatchEncoder(w, r, f)
	for _, l := range current {
		if err := enc.send(watch.Added, h.present(l, l.ResourceVersion)); err != nil {
			return
		}
	}
	if sendInitial == "true" && bookmarks && f.table == "" {
		mark := &coordinationv1.Lease{
			TypeMeta: leaseTypeMeta,
			ObjectMeta: metav1.ObjectMeta{
				ResourceVersion: formatRV(start),
				Annotations:     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
			},
		}
		if err := enc.send(watch.Bookmark, mark); err != nil {
			return
		}
	}
	enc.flush()

	last, resumes := start, 0
	// lastMark is when the client last learnt a revision of the watch's:
	// from a bookmark, or from an event sent.
	lastMark := h.clk.Now()
	for {
		ev, err := stream.Recv()
		if err != nil {
			// The watch's own timeout may reach the stream as its status
			// before the context reports it.
			if c := status.Code(err); ctx.Err() != nil || errors.Is(err, io.EOF) || c == codes.DeadlineExceeded || c == codes.Canceled {
				return
			}
			if status.Code(err) == codes.ResourceExhausted && resumes < maxWatchResumes {
				// Dropped for falling behind: subscribe again from the last
				// event sent, while the service still keeps it.
				resumes++
				req.StartRevision = last
				if stream, err = h.cfg.Client.Watch(ctx, req); err == nil {
					continue
				}
			}
			h.log.Debug("watch ended", "namespace", ns, "last", last, "error", err)
			switch {
			case isOutOfRange(err):
				// Older than the window: the client lists again.
				_ = enc.send(watch.Error, &tooOld(last, err).ErrStatus)
			case status.Code(err) != codes.Unavailable:
				_ = enc.send(watch.Error, &fromGRPC(err, "").ErrStatus)
			}
			return
		}
		last = ev.Revision
		if ev.Type == pb.WatchEvent_PROGRESS || !sel.matches(ev.Lease) {
			// Nothing to send: a bookmark if one is due.
			if bookmarks && f.table == "" && !h.clk.Now().Before(lastMark.Add(h.cfg.BookmarkInterval)) {
				if err := enc.send(watch.Bookmark, bookmark(last)); err != nil {
					return
				}
				lastMark = h.clk.Now()
			}
			continue
		}
		lastMark = h.clk.Now()
		l := ev.Lease
		if ev.Type == pb.WatchEvent_DELETED {
			l = lastState(l)
		}
		if err := enc.send(watchType(ev.Type), h.present(l, ev.Revision)); err != nil {
			return
		}
	}
}

// bookmark is a BOOKMARK event's object: a Lease with only its
// resourceVersion, as the API server sends.
func bookmark(rev uint64) *coordinationv1.Lease {
	return &coordinationv1.Lease{TypeMeta: leaseTypeMeta, ObjectMeta: metav1.ObjectMeta{ResourceVersion: formatRV(rev)}}
}

// watchEncoder writes watch events: newline-separated JSON, or
// length-prefixed protobuf frames.
type watchEncoder struct {
	h      *handler
	r      *http.Request
	w      http.ResponseWriter
	f      format
	frames io.Writer // protobuf only
	rc     *http.ResponseController
}

func (h *handler) newWatchEncoder(w http.ResponseWriter, r *http.Request, f format) *watchEncoder {
	e := &watchEncoder{h: h, r: r, w: w, f: f, rc: http.NewResponseController(w)}
	contentType := mediaJSON
	if f.info.MediaType == mediaProtobuf {
		contentType = mediaProtobuf + ";stream=watch"
		e.frames = f.info.StreamSerializer.Framer.NewFrameWriter(w)
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	return e
}

func (e *watchEncoder) flush() { _ = e.rc.Flush() }

// send writes one event; obj is a Lease (shown as a one-row Table when the
// client asked for tables) or, for ERROR, a Status.
func (e *watchEncoder) send(t watch.EventType, obj runtime.Object) error {
	var raw []byte
	var err error
	if l, ok := obj.(*coordinationv1.Lease); ok && e.f.table != "" {
		var tbl *metav1.Table
		if tbl, err = e.h.table(e.r, e.f.table, []coordinationv1.Lease{*l}); err == nil {
			tbl.ResourceVersion = l.ResourceVersion
			raw, err = json.Marshal(tbl)
		}
	} else {
		if st, ok := obj.(*metav1.Status); ok {
			st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
			st.Status = metav1.StatusFailure
		}
		raw, err = e.h.encode(e.f, obj)
	}
	if err != nil {
		e.h.log.Error("encoding a watch event", "error", err)
		return err
	}
	ev := &metav1.WatchEvent{Type: string(t), Object: runtime.RawExtension{Raw: raw}}
	if e.frames != nil {
		err = e.f.info.StreamSerializer.Serializer.Encode(ev, e.frames)
	} else {
		var b []byte
		if b, err = json.Marshal(ev); err == nil {
			_, err = e.w.Write(append(b, '\n'))
		}
	}
	if err != nil {
		return err
	}
	e.flush()
	return nil
}
