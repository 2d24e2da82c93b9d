package k8sapi_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/leasekeeper/leasekeeper/k8sapi"
	"github.com/leasekeeper/leasekeeper/transport"
)

const defaultLeases = leasesPath + "default/leases"

// write creates or replaces lease name with holder, and returns its
// resourceVersion.
func (e *env) write(name, holder string) uint64 {
	e.t.Helper()
	l := newLease(name, holder, 3600)
	code := http.StatusCreated
	if cur := e.do("GET", defaultLeases+"/"+name, nil); cur.code == http.StatusOK {
		l.ResourceVersion = cur.lease(e.t, http.StatusOK).ResourceVersion
		code = http.StatusOK
	}
	got := e.do("PUT", defaultLeases+"/"+name, l).lease(e.t, code)
	rv, err := strconv.ParseUint(got.ResourceVersion, 10, 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return rv
}

func (e *env) list(query string) *coordinationv1.LeaseList {
	e.t.Helper()
	var l coordinationv1.LeaseList
	e.do("GET", defaultLeases+query, nil).decode(e.t, http.StatusOK, &l)
	return &l
}

func holders(l *coordinationv1.LeaseList) string {
	var out []string
	for _, it := range l.Items {
		out = append(out, it.Name+"="+*it.Spec.HolderIdentity)
	}
	return strings.Join(out, ",")
}

// TestListOptionsRefused: list options the API server refuses are
// refused with its codes and reasons.
func TestListOptionsRefused(t *testing.T) {
	e := setup(t)
	e.write("a", "x")
	e.write("b", "x")
	cont := e.list("?limit=1").Continue
	if cont == "" {
		t.Fatal("a list of 2 with limit=1 has no continue token")
	}
	for _, tc := range []struct {
		name, query string
		code        int
		reason      metav1.StatusReason
		msg         string
	}{
		{"unknown match", "?resourceVersion=1&resourceVersionMatch=Bogus", 422, metav1.StatusReasonInvalid, `Unsupported value: "Bogus"`},
		{"match without version", "?resourceVersionMatch=Exact", 422, metav1.StatusReasonInvalid, "resourceVersionMatch is forbidden unless resourceVersion is provided"},
		{"exact 0", "?resourceVersion=0&resourceVersionMatch=Exact", 422, metav1.StatusReasonInvalid, `resourceVersionMatch "exact" is forbidden for resourceVersion "0"`},
		{"match with continue", "?resourceVersion=1&resourceVersionMatch=Exact&continue=" + cont, 422, metav1.StatusReasonInvalid, "resourceVersionMatch is forbidden when continue is provided"},
		{"version with continue", "?resourceVersion=1&continue=" + cont, 400, metav1.StatusReasonBadRequest, "specifying resource version is not allowed when using continue"},
		{"version not a number", "?resourceVersion=abc", 400, metav1.StatusReasonBadRequest, "invalid resource version"},
		{"bad continue", "?continue=nonsense", 400, metav1.StatusReasonBadRequest, "invalid continue token"},
		{"initial events on a list", "?sendInitialEvents=true", 422, metav1.StatusReasonInvalid, "sendInitialEvents is forbidden for list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := e.do("GET", defaultLeases+tc.query, nil).status(t, tc.code, tc.reason)
			if !strings.Contains(st.Message, tc.msg) {
				t.Fatalf("message %q, want it to contain %q", st.Message, tc.msg)
			}
		})
	}
	// A watch checks its own set.
	st := e.do("GET", defaultLeases+"?watch=true&resourceVersion=1&resourceVersionMatch=Exact", nil).status(t, 422, metav1.StatusReasonInvalid)
	if !strings.Contains(st.Message, "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided") {
		t.Fatalf("watch with resourceVersionMatch: %q", st.Message)
	}
}

// TestListExactAndPages: an Exact list, and every page of a paginated
// list, shows the leases as they were at the revision asked for (the
// first page's), not as they are.
func TestListExactAndPages(t *testing.T) {
	e := setup(t)
	e.write("a", "a1")
	e.write("b", "b1")
	rv1 := e.write("c", "c1")
	e.write("a", "a2")
	e.write("b", "b2")
	if st := e.do("DELETE", defaultLeases+"/c", nil); st.code != http.StatusOK {
		t.Fatalf("delete: %d %s", st.code, st.body)
	}
	now := e.write("d", "d1")

	exact := e.list(fmt.Sprintf("?resourceVersion=%d&resourceVersionMatch=Exact", rv1))
	if got, want := holders(exact), "a=a1,b=b1,c=c1"; got != want || exact.ResourceVersion != strconv.FormatUint(rv1, 10) {
		t.Fatalf("Exact at %d: got %s at %s, want %s at %d", rv1, got, exact.ResourceVersion, want, rv1)
	}
	notOlder := e.list(fmt.Sprintf("?resourceVersion=%d&resourceVersionMatch=NotOlderThan", rv1))
	if got, want := holders(notOlder), "a=a2,b=b2,d=d1"; got != want {
		t.Fatalf("NotOlderThan %d: got %s, want %s (the current state)", rv1, got, want)
	}
	// A limit with a resourceVersion and no match is exact too.
	page := e.list(fmt.Sprintf("?resourceVersion=%d&limit=2", rv1))
	if got, want := holders(page), "a=a1,b=b1"; got != want || page.Continue == "" {
		t.Fatalf("limit=2 at %d: got %s (continue %q), want %s and a continue token", rv1, got, page.Continue, want)
	}

	// client-go's paging: the first page now, then the leases change, and
	// the later pages still show the first page's revision.
	cs := e.clientset().CoordinationV1().Leases("default")
	first, err := cs.List(ctx(t), metav1.ListOptions{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if first.ResourceVersion != strconv.FormatUint(now, 10) || len(first.Items) != 1 || first.Items[0].Name != "a" {
		t.Fatalf("first page: %d items at %s, want a at %d", len(first.Items), first.ResourceVersion, now)
	}
	e.write("b", "b3")
	e.write("e", "e1")
	var seen []string
	for cont := first.Continue; cont != ""; {
		p, err := cs.List(ctx(t), metav1.ListOptions{Limit: 1, Continue: cont})
		if err != nil {
			t.Fatal(err)
		}
		if p.ResourceVersion != first.ResourceVersion {
			t.Fatalf("a later page at %s, the first at %s", p.ResourceVersion, first.ResourceVersion)
		}
		for _, it := range p.Items {
			seen = append(seen, it.Name+"="+*it.Spec.HolderIdentity)
			if rv, _ := strconv.ParseUint(it.ResourceVersion, 10, 64); rv > now {
				t.Errorf("a later page shows %s at %d, above the list's %d", it.Name, rv, now)
			}
		}
		cont = p.Continue
	}
	if got, want := strings.Join(seen, ","), "b=b2,d=d1"; got != want {
		t.Fatalf("later pages: got %s, want %s", got, want)
	}
}

// TestResourceVersionFromTheFuture: a get, list or watch from a revision
// the store has not reached is waited for, then refused with the API
// server's 504; one reached during the wait is answered.
func TestResourceVersionFromTheFuture(t *testing.T) {
	const wait = 300 * time.Millisecond
	e := setupWith(t, nil, func(c *k8sapi.Config) { c.ResourceVersionWait = wait })
	cur := e.write("a", "x")
	future := cur + 1000
	for _, path := range []string{
		fmt.Sprintf("%s?resourceVersion=%d", defaultLeases, future),
		fmt.Sprintf("%s?resourceVersion=%d&resourceVersionMatch=Exact", defaultLeases, future),
		fmt.Sprintf("%s/a?resourceVersion=%d", defaultLeases, future),
		fmt.Sprintf("%s?watch=true&resourceVersion=%d", defaultLeases, future),
	} {
		start := time.Now()
		res := e.do("GET", path, nil)
		took := time.Since(start)
		st := res.status(t, http.StatusGatewayTimeout, metav1.StatusReasonTimeout)
		want := fmt.Sprintf("Timeout: Too large resource version: %d, current: %d", future, cur)
		if st.Message != want || len(st.Details.Causes) != 1 || st.Details.Causes[0].Type != metav1.CauseTypeResourceVersionTooLarge ||
			st.Details.RetryAfterSeconds != 1 || res.hdr.Get("Retry-After") != "1" {
			t.Fatalf("%s: got %s (Retry-After %q), want %q with cause %s and Retry-After 1", path, res.body, res.hdr.Get("Retry-After"), want, metav1.CauseTypeResourceVersionTooLarge)
		}
		if took < wait {
			t.Fatalf("%s: refused after %v, before the wait of %v", path, took, wait)
		}
		if !apierrors.IsTimeout(&apierrors.StatusError{ErrStatus: *st}) {
			t.Fatalf("client-go does not see a timeout in %s", res.body)
		}
	}

	// A revision that the next write reaches: the read waits for it.
	e2 := setupWith(t, nil, func(c *k8sapi.Config) { c.ResourceVersionWait = 20 * time.Second })
	next := e2.write("a", "x") + 1
	done := make(chan response, 1)
	go func() { done <- e2.do("GET", fmt.Sprintf("%s?resourceVersion=%d", defaultLeases, next), nil) }()
	e2.write("a", "y")
	var l coordinationv1.LeaseList
	(<-done).decode(t, http.StatusOK, &l)
	if rv, _ := strconv.ParseUint(l.ResourceVersion, 10, 64); rv < next || holders(&l) != "a=y" {
		t.Fatalf("list not older than %d: got %s at %s", next, holders(&l), l.ResourceVersion)
	}
}

// TestOlderThanTheWindow: an Exact list, a continue token and a watch
// from a revision older than the node's event window are 410 Gone: the
// first two as the answer, the watch as an ERROR event, as the API
// server answers them.
func TestOlderThanTheWindow(t *testing.T) {
	e := setupWith(t, func(c *transport.Config) { c.WatchWindow = 8 }, nil)
	e.write("a", "x")
	old := e.write("b", "x")
	first := e.list("?limit=1")
	for i := range 20 {
		e.write("a", fmt.Sprint("h", i))
	}

	st := e.do("GET", fmt.Sprintf("%s?resourceVersion=%d&resourceVersionMatch=Exact", defaultLeases, old), nil).status(t, http.StatusGone, metav1.StatusReasonExpired)
	if !strings.HasPrefix(st.Message, fmt.Sprintf("too old resource version: %d (", old)) {
		t.Fatalf("Exact list: %q", st.Message)
	}

	st = e.do("GET", defaultLeases+"?limit=1&continue="+first.Continue, nil).status(t, http.StatusGone, metav1.StatusReasonExpired)
	if !strings.HasPrefix(st.Message, "The provided continue parameter is too old") || st.Continue == "" {
		t.Fatalf("expired continue token: %q with continue %q", st.Message, st.Continue)
	}
	// The token in the answer goes on, inconsistently, from the current state.
	rest := e.list("?continue=" + st.Continue)
	if holders(rest) != "b=x" {
		t.Fatalf("the inconsistent continuation: got %s, want b=x", holders(rest))
	}

	// client-go sees the watch's ERROR event as a 410.
	w, err := e.clientset().CoordinationV1().Leases("default").Watch(ctx(t), metav1.ListOptions{ResourceVersion: strconv.FormatUint(old, 10)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case ev := <-w.ResultChan():
		st, ok := ev.Object.(*metav1.Status)
		if ev.Type != watch.Error || !ok || st.Code != http.StatusGone || st.Reason != metav1.StatusReasonExpired {
			t.Fatalf("watch from %d: got %s %+v, want ERROR with a 410 Status", old, ev.Type, ev.Object)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
}

// TestPeriodicBookmarks: an idle watch with allowWatchBookmarks gets a
// BOOKMARK with the store's revision every interval; without it, none.
func TestPeriodicBookmarks(t *testing.T) {
	e := setupWith(t, nil, func(c *k8sapi.Config) { c.BookmarkInterval = 100 * time.Millisecond })
	rv := e.write("a", "x")
	ch := e.jsonWatch(fmt.Sprintf("&resourceVersion=%d&allowWatchBookmarks=true", rv))
	for range 2 {
		typ, l := next(t, ch)
		if typ != "BOOKMARK" || l.ResourceVersion != strconv.FormatUint(rv, 10) || l.Name != "" || l.Kind != "Lease" {
			t.Fatalf("got %s %+v, want a BOOKMARK at %d", typ, l.ObjectMeta, rv)
		}
	}
	// A change in another namespace moves the next bookmark's revision.
	other := newLease("o", "", 0)
	e.do("POST", leasesPath+"other/leases", other).lease(t, http.StatusCreated)
	ch = e.jsonWatch(fmt.Sprintf("&resourceVersion=%d&allowWatchBookmarks=true&fieldSelector=metadata.namespace=default", rv))
	typ, l := next(t, ch)
	if typ != "BOOKMARK" || l.ResourceVersion != strconv.FormatUint(rv+1, 10) {
		t.Fatalf("got %s at %s, want a BOOKMARK at %d", typ, l.ResourceVersion, rv+1)
	}

	// Without allowWatchBookmarks a watch of one second sends nothing.
	none := e.jsonWatch(fmt.Sprintf("&resourceVersion=%d&timeoutSeconds=1", rv+1))
	for ev := range none {
		t.Fatalf("a watch without bookmarks got %s", ev.Type)
	}
}
