package k8sapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
)

type event struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// jsonWatch opens a JSON watch and returns its events; the watch ends
// with the test.
func (e *env) jsonWatch(query string, headers ...string) <-chan event {
	e.t.Helper()
	c, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(c, "GET", e.srv.URL+"/apis/coordination.k8s.io/v1/leases?watch=true"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		e.t.Fatalf("watch: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	ch := make(chan event, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			var ev event
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				e.t.Errorf("watch line %q: %v", sc.Text(), err)
				return
			}
			ch <- ev
		}
	}()
	e.t.Cleanup(func() {
		cancel()
		res.Body.Close()
		<-done
	})
	return ch
}

func next(t *testing.T, ch <-chan event) (string, *coordinationv1.Lease) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("watch ended")
		}
		var l coordinationv1.Lease
		if err := json.Unmarshal(ev.Object, &l); err != nil {
			t.Fatalf("event object %s: %v", ev.Object, err)
		}
		return ev.Type, &l
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return "", nil
}

func TestWatchJSON(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases"
	first := e.do("POST", path, newLease("w0", "", 0)).lease(t, http.StatusCreated)

	// From a resourceVersion: everything after it, mapped to three types.
	ch := e.jsonWatch("&resourceVersion=" + first.ResourceVersion)
	// Without one: the current leases first.
	all := e.jsonWatch("")
	if typ, l := next(t, all); typ != "ADDED" || l.Name != "w0" {
		t.Fatalf("initial event %s %s", typ, l.Name)
	}
	// Filtered by labels: only w1 once it is labelled.
	filtered := e.jsonWatch("&labelSelector=pick%3Dme&resourceVersion=" + first.ResourceVersion)

	created := e.do("POST", path, newLease("w1", "a", 1)).lease(t, http.StatusCreated)
	created.Spec.HolderIdentity = ptr("b")
	created.Labels = map[string]string{"pick": "me"}
	updated := e.do("PUT", path+"/w1", created).lease(t, http.StatusOK)
	// A lease made through gRPC shows up too; then b's holding expires
	// after its second: MODIFIED with no holder.
	if _, err := e.grpc.Acquire(ctx(t), &pb.AcquireRequest{Namespace: "default", Name: "g", HolderIdentity: "x", LeaseDuration: durationpb.New(time.Minute)}); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		typ, name string
		check     func(*coordinationv1.Lease) bool
	}{
		{"ADDED", "w1", func(l *coordinationv1.Lease) bool { return *l.Spec.HolderIdentity == "a" }},
		{"MODIFIED", "w1", func(l *coordinationv1.Lease) bool {
			return *l.Spec.HolderIdentity == "b" && l.ResourceVersion == updated.ResourceVersion
		}},
		{"ADDED", "g", func(l *coordinationv1.Lease) bool { return *l.Spec.HolderIdentity == "x" }},
		{"MODIFIED", "w1", func(l *coordinationv1.Lease) bool { return *l.Spec.HolderIdentity == "" }},
	}
	for _, w := range want {
		typ, l := next(t, ch)
		if typ != w.typ || l.Name != w.name || !w.check(l) {
			t.Fatalf("got %s %s %+v, want %s %s", typ, l.Name, l.Spec, w.typ, w.name)
		}
	}
	if typ, l := next(t, filtered); typ != "MODIFIED" || *l.Spec.HolderIdentity != "b" {
		t.Fatalf("filtered watch: %s %+v", typ, l.Spec)
	}
	del := e.do("DELETE", path+"/w1", nil)
	if del.code != 200 {
		t.Fatalf("delete %d %s", del.code, del.body)
	}
	typ, l := next(t, ch)
	if typ != "DELETED" || l.Name != "w1" || l.ResourceVersion == updated.ResourceVersion {
		t.Fatalf("got %s %s rv %s", typ, l.Name, l.ResourceVersion)
	}
	// Still matching its last labels, the deletion reaches the filtered watch.
	if typ, _ := next(t, filtered); typ == "MODIFIED" {
		typ, _ = next(t, filtered)
		if typ != "DELETED" {
			t.Fatalf("filtered watch: %s", typ)
		}
	}
}

func TestWatchInitialEventsBookmark(t *testing.T) {
	e := setup(t)
	e.do("POST", leasesPath+"default/leases", newLease("b0", "", 0)).lease(t, http.StatusCreated)
	ch := e.jsonWatch("&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan")
	if typ, l := next(t, ch); typ != "ADDED" || l.Name != "b0" {
		t.Fatalf("got %s %s", typ, l.Name)
	}
	typ, l := next(t, ch)
	if typ != "BOOKMARK" || l.Annotations[metav1.InitialEventsAnnotationKey] != "true" || l.ResourceVersion == "" {
		t.Fatalf("got %s %+v", typ, l.ObjectMeta)
	}
}

func TestWatchClientGoProtobuf(t *testing.T) {
	e := setup(t)
	leases := e.clientset().CoordinationV1().Leases("default")
	l, err := leases.Create(ctx(t), newLease("pw", "a", 10), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := leases.Watch(ctx(t), metav1.ListOptions{ResourceVersion: l.ResourceVersion, FieldSelector: "metadata.name=pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if err := leases.Delete(ctx(t), "pw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		got, ok := ev.Object.(*coordinationv1.Lease)
		if ev.Type != watch.Deleted || !ok || got.Name != "pw" || got.UID != l.UID {
			t.Fatalf("event %s %#v", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}

func TestWatchTableAndTimeout(t *testing.T) {
	e := setup(t)
	e.do("POST", leasesPath+"default/leases", newLease("t0", "h", 10)).lease(t, http.StatusCreated)
	ch := e.jsonWatch("&timeoutSeconds=1", "Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
	ev := <-ch
	var tbl metav1.Table
	if err := json.Unmarshal(ev.Object, &tbl); err != nil || ev.Type != "ADDED" || tbl.Kind != "Table" ||
		len(tbl.Rows) != 1 || tbl.Rows[0].Cells[0] != "t0" || tbl.Rows[0].Cells[1] != "h" {
		t.Fatalf("table event %s %s: %v", ev.Type, ev.Object, err)
	}
	select {
	case ev, ok := <-ch:
		if ok {
			t.Fatalf("unexpected event %s %s", ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch outlived timeoutSeconds")
	}
}
