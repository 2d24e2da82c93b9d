package k8sapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

var leasesGVR = schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}

const (
	acceptMeta     = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
	acceptMetaList = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
)

// TestPartialObjectMetadataJSON: get, list and watch answer only the
// metadata when asked, and a list form on a get (or the object form on a
// list) is not acceptable, as from the API server.
func TestPartialObjectMetadataJSON(t *testing.T) {
	e := setup(t)
	l := newLease("m", "h", 30)
	l.Labels = map[string]string{"app": "x"}
	e.do("POST", defaultLeases, l).lease(t, http.StatusCreated)

	var got map[string]any
	e.do("GET", defaultLeases+"/m", nil, "Accept", acceptMeta).decode(t, http.StatusOK, &got)
	md, _ := got["metadata"].(map[string]any)
	if got["kind"] != "PartialObjectMetadata" || got["apiVersion"] != "meta.k8s.io/v1" || got["spec"] != nil ||
		md["name"] != "m" || md["labels"].(map[string]any)["app"] != "x" || md["resourceVersion"] == "" {
		t.Fatalf("get: %v", got)
	}
	var list metav1.PartialObjectMetadataList
	e.do("GET", defaultLeases, nil, "Accept", acceptMetaList).decode(t, http.StatusOK, &list)
	if list.Kind != "PartialObjectMetadataList" || len(list.Items) != 1 || list.Items[0].Name != "m" || list.ResourceVersion == "" {
		t.Fatalf("list: %+v", list)
	}
	e.do("GET", defaultLeases+"/m", nil, "Accept", acceptMetaList).status(t, http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable)
	e.do("GET", defaultLeases, nil, "Accept", acceptMeta).status(t, http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable)

	ch := e.jsonWatch("&fieldSelector=metadata.name=m", "Accept", acceptMeta)
	ev := <-ch
	var obj metav1.PartialObjectMetadata
	if err := json.Unmarshal(ev.Object, &obj); err != nil {
		t.Fatal(err)
	}
	if ev.Type != "ADDED" || obj.Kind != "PartialObjectMetadata" || obj.Name != "m" {
		t.Fatalf("watch: %s %s", ev.Type, ev.Object)
	}
}

// TestMetadataInformer: client-go's metadata client (protobuf first, as it
// asks) gets, lists and watches leases, and a metadata informer, what
// controller-runtime's OnlyMetadata builds, follows them.
func TestMetadataInformer(t *testing.T) {
	e := setup(t)
	e.do("POST", defaultLeases, newLease("before", "", 0)).lease(t, http.StatusCreated)
	mc, err := metadata.NewForConfig(&rest.Config{Host: e.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	res := mc.Resource(leasesGVR).Namespace("default")
	one, err := res.Get(ctx(t), "before", metav1.GetOptions{})
	if err != nil || one.Name != "before" || one.ResourceVersion == "" {
		t.Fatalf("get: %+v, %v", one, err)
	}
	all, err := res.List(ctx(t), metav1.ListOptions{})
	if err != nil || len(all.Items) != 1 || all.Items[0].Name != "before" {
		t.Fatalf("list: %+v, %v", all, err)
	}
	w, err := res.Watch(ctx(t), metav1.ListOptions{ResourceVersion: all.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	e.do("POST", defaultLeases, newLease("watched", "", 0)).lease(t, http.StatusCreated)
	select {
	case ev := <-w.ResultChan():
		p, ok := ev.Object.(*metav1.PartialObjectMetadata)
		if ev.Type != watch.Added || !ok || p.Name != "watched" {
			t.Fatalf("watch: %s %#v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	w.Stop()

	factory := metadatainformer.NewSharedInformerFactory(mc, 0)
	inf := factory.ForResource(leasesGVR).Informer()
	seen := make(chan string, 10)
	name := func(obj any) string {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		return obj.(*metav1.PartialObjectMetadata).Name
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { seen <- "add " + name(obj) },
		UpdateFunc: func(_, obj any) {
			seen <- "update " + name(obj) + " " + obj.(*metav1.PartialObjectMetadata).Labels["v"]
		},
		DeleteFunc: func(obj any) { seen <- "delete " + name(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer factory.Shutdown()
	defer close(stop)
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("no sync")
	}
	l := e.do("POST", defaultLeases, newLease("after", "a", 30)).lease(t, http.StatusCreated)
	l.Labels = map[string]string{"v": "2"}
	e.do("PUT", defaultLeases+"/after", l).lease(t, http.StatusOK)
	if st := e.do("DELETE", defaultLeases+"/after", nil); st.code != http.StatusOK {
		t.Fatalf("delete: %d %s", st.code, st.body)
	}
	want := map[string]bool{"add before": true, "add watched": true, "add after": true, "update after 2": true, "delete after": true}
	for len(want) > 0 {
		select {
		case got := <-seen:
			if !want[got] {
				t.Fatalf("unexpected %q; still waiting for %v", got, want)
			}
			delete(want, got)
		case <-time.After(10 * time.Second):
			t.Fatalf("still waiting for %v", want)
		}
	}
}
