package k8sapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/k8sapi"
)

func TestCreateGetUpdateDelete(t *testing.T) {
	e := setup(t)
	path := leasesPath + "team/leases"

	created := e.do("POST", path, newLease("lock", "alice", 10)).lease(t, http.StatusCreated)
	if created.UID == "" || created.ResourceVersion == "" || created.CreationTimestamp.IsZero() {
		t.Fatalf("server fields missing: %+v", created.ObjectMeta)
	}
	if created.Namespace != "team" || created.Name != "lock" || *created.Spec.HolderIdentity != "alice" {
		t.Fatalf("created %+v", created)
	}
	token := created.Annotations[k8sapi.FencingTokenAnnotation]
	if token == "" || token == "0" {
		t.Fatalf("fencing token annotation %q", token)
	}

	got := e.do("GET", path+"/lock", nil).lease(t, http.StatusOK)
	if got.ResourceVersion != created.ResourceVersion || got.UID != created.UID {
		t.Fatalf("get %s/%s, want %s/%s", got.UID, got.ResourceVersion, created.UID, created.ResourceVersion)
	}

	// A renewal by the same holder keeps the token; a new holder gets a
	// higher one, and the client's own transition count is kept as written.
	got.Spec.RenewTime = ptr(metav1.NowMicro())
	renewed := e.do("PUT", path+"/lock", got).lease(t, http.StatusOK)
	if renewed.ResourceVersion == got.ResourceVersion {
		t.Fatal("update kept the resourceVersion")
	}
	if renewed.Annotations[k8sapi.FencingTokenAnnotation] != token {
		t.Fatalf("renewal changed the token: %s -> %s", token, renewed.Annotations[k8sapi.FencingTokenAnnotation])
	}
	renewed.Spec.HolderIdentity = ptr("bob")
	renewed.Spec.LeaseTransitions = ptr(int32(7))
	taken := e.do("PUT", path+"/lock", renewed).lease(t, http.StatusOK)
	t1, _ := strconv.Atoi(token)
	t2, _ := strconv.Atoi(taken.Annotations[k8sapi.FencingTokenAnnotation])
	if t2 <= t1 || *taken.Spec.LeaseTransitions != 7 || *taken.Spec.HolderIdentity != "bob" {
		t.Fatalf("takeover: token %d -> %d, transitions %d, holder %s", t1, t2, *taken.Spec.LeaseTransitions, *taken.Spec.HolderIdentity)
	}

	// The stale version that alice still has is refused.
	e.do("PUT", path+"/lock", got).status(t, http.StatusConflict, metav1.StatusReasonConflict)

	del := e.do("DELETE", path+"/lock", nil)
	if del.code != http.StatusOK {
		t.Fatalf("delete: %d %s", del.code, del.body)
	}
	e.do("GET", path+"/lock", nil).status(t, http.StatusNotFound, metav1.StatusReasonNotFound)

	again := e.do("POST", path, newLease("lock", "", 0)).lease(t, http.StatusCreated)
	if again.UID == created.UID {
		t.Fatal("a re-created lease has the old uid")
	}
	if again.Spec.HolderIdentity != nil {
		t.Fatalf("holder %q on a lease created free", *again.Spec.HolderIdentity)
	}
}

func TestErrors(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases"
	base := e.do("POST", path, newLease("x", "a", 10)).lease(t, http.StatusCreated)
	missingRV := base.DeepCopy()
	missingRV.ResourceVersion = ""
	otherUID := base.DeepCopy()
	otherUID.UID = types.UID("00000000-0000-0000-0000-000000000000")
	wrongName := base.DeepCopy()
	wrongName.Name = "y"
	badDuration := newLease("bad", "a", 0)
	withRV := newLease("rv", "", 0)
	withRV.ResourceVersion = "5"
	withFinalizer := newLease("fin", "", 0)
	withFinalizer.Finalizers = []string{"x/y"}

	tests := []struct {
		name, method, path string
		body               any
		headers            []string
		code               int
		reason             metav1.StatusReason
	}{
		{"get unknown", "GET", path + "/nope", nil, nil, 404, metav1.StatusReasonNotFound},
		{"get bad name", "GET", path + "/Nope", nil, nil, 404, metav1.StatusReasonNotFound},
		{"create exists", "POST", path, newLease("x", "", 0), nil, 409, metav1.StatusReasonAlreadyExists},
		{"create invalid name", "POST", path, newLease("Bad_Name", "", 0), nil, 422, metav1.StatusReasonInvalid},
		{"create no name", "POST", path, newLease("", "", 0), nil, 422, metav1.StatusReasonInvalid},
		{"create zero duration", "POST", path, badDuration, nil, 422, metav1.StatusReasonInvalid},
		{"create with resourceVersion", "POST", path, withRV, nil, 400, metav1.StatusReasonBadRequest},
		{"create with finalizer", "POST", path, withFinalizer, nil, 422, metav1.StatusReasonInvalid},
		{"create not JSON", "POST", path, "{", nil, 400, metav1.StatusReasonBadRequest},
		{"create not a Lease", "POST", path, `{"apiVersion":"v1","kind":"Status"}`, nil, 400, metav1.StatusReasonBadRequest},
		{"create wrong namespace", "POST", leasesPath + "other/leases", base, nil, 400, metav1.StatusReasonBadRequest},
		{"create unknown media", "POST", path, "x", []string{"Content-Type", "text/plain"}, 415, metav1.StatusReasonUnsupportedMediaType},
		{"create bad dry run", "POST", path + "?dryRun=Some", newLease("d", "", 0), nil, 422, metav1.StatusReasonInvalid},
		{"cluster-wide create", "POST", "/apis/coordination.k8s.io/v1/leases", newLease("c", "", 0), nil, 405, metav1.StatusReasonMethodNotAllowed},
		{"update without resourceVersion", "PUT", path + "/x", missingRV, nil, 422, metav1.StatusReasonInvalid},
		{"update other uid", "PUT", path + "/x", otherUID, nil, 409, metav1.StatusReasonConflict},
		{"update name mismatch", "PUT", path + "/x", wrongName, nil, 400, metav1.StatusReasonBadRequest},
		{"update bad resourceVersion", "PUT", path + "/x", func() any { l := base.DeepCopy(); l.ResourceVersion = "abc"; return l }(), nil, 400, metav1.StatusReasonBadRequest},
		{"delete unknown", "DELETE", path + "/nope", nil, nil, 404, metav1.StatusReasonNotFound},
		{"delete stale", "DELETE", path + "/x", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: ptr("1000000")}}, nil, 409, metav1.StatusReasonConflict},
		{"delete other uid", "DELETE", path + "/x", metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions("nope")}, nil, 409, metav1.StatusReasonConflict},
		{"patch unknown", "PATCH", path + "/nope", `{}`, []string{"Content-Type", "application/merge-patch+json"}, 404, metav1.StatusReasonNotFound},
		{"apply without a manager", "PATCH", path + "/x", `{}`, []string{"Content-Type", "application/apply-patch+yaml"}, 422, metav1.StatusReasonInvalid},
		{"patch unknown type", "PATCH", path + "/x", `{}`, []string{"Content-Type", "application/x-patch"}, 415, metav1.StatusReasonUnsupportedMediaType},
		{"patch stale", "PATCH", path + "/x", `{"metadata":{"resourceVersion":"1000000"}}`, []string{"Content-Type", "application/merge-patch+json"}, 409, metav1.StatusReasonConflict},
		{"patch rename", "PATCH", path + "/x", `{"metadata":{"name":"z"}}`, []string{"Content-Type", "application/merge-patch+json"}, 422, metav1.StatusReasonInvalid},
		{"method", "POST", path + "/x", `{}`, nil, 405, metav1.StatusReasonMethodNotAllowed},
		{"unknown path", "GET", "/apis/apps/v1/deployments", nil, nil, 404, metav1.StatusReasonNotFound},
		{"subresource", "GET", path + "/x/status", nil, nil, 404, metav1.StatusReasonNotFound},
		{"bad label selector", "GET", path + "?labelSelector=a%20in%20(", nil, nil, 400, metav1.StatusReasonBadRequest},
		{"unsupported field selector", "GET", path + "?fieldSelector=spec.holderIdentity=a", nil, nil, 400, metav1.StatusReasonBadRequest},
		{"bad continue", "GET", path + "?continue=zzz", nil, nil, 400, metav1.StatusReasonBadRequest},
		{"not acceptable", "GET", path + "/x", nil, []string{"Accept", "text/html"}, 406, metav1.StatusReasonNotAcceptable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.do(tc.method, tc.path, tc.body, tc.headers...).status(t, tc.code, tc.reason)
		})
	}
}

func TestUpdateCreatesMissingLease(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases/"
	// Leases allow create on update, with or without a resourceVersion.
	e.do("PUT", path+"fresh", newLease("fresh", "a", 5)).lease(t, http.StatusCreated)
	l := newLease("gone", "a", 5)
	l.ResourceVersion = "3"
	e.do("PUT", path+"gone", l).lease(t, http.StatusCreated)
}

func TestCreateRace(t *testing.T) {
	e := setup(t)
	const n = 8
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.do("POST", leasesPath+"default/leases", newLease("race", fmt.Sprintf("c%d", i), 10)).code
		}()
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Fatalf("codes %v", codes)
		}
	}
	if created != 1 {
		t.Fatalf("%d creates succeeded, want 1: %v", created, codes)
	}
}

func TestGenerateName(t *testing.T) {
	e := setup(t)
	l := newLease("", "", 0)
	l.GenerateName = "gen-"
	got := e.do("POST", leasesPath+"default/leases", l).lease(t, http.StatusCreated)
	if !regexp.MustCompile(`^gen-[a-z0-9]{5}$`).MatchString(got.Name) {
		t.Fatalf("generated name %q", got.Name)
	}
}

func TestPatch(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases/p"
	l := newLease("p", "a", 10)
	l.Annotations = map[string]string{"keep": "me"}
	base := e.do("POST", leasesPath+"default/leases", l).lease(t, http.StatusCreated)
	tests := []struct {
		name, contentType, patch string
		check                    func(*coordinationv1.Lease) bool
	}{
		{"merge", "application/merge-patch+json", `{"spec":{"holderIdentity":"b"},"metadata":{"labels":{"x":"1"}}}`,
			func(l *coordinationv1.Lease) bool { return *l.Spec.HolderIdentity == "b" && l.Labels["x"] == "1" }},
		{"strategic", "application/strategic-merge-patch+json", `{"spec":{"leaseDurationSeconds":20}}`,
			func(l *coordinationv1.Lease) bool {
				return *l.Spec.LeaseDurationSeconds == 20 && *l.Spec.HolderIdentity == "b"
			}},
		{"json patch", "application/json-patch+json", `[{"op":"replace","path":"/spec/holderIdentity","value":"c"}]`,
			func(l *coordinationv1.Lease) bool { return *l.Spec.HolderIdentity == "c" }},
		{"merge with current version", "application/merge-patch+json", "", // filled below
			func(l *coordinationv1.Lease) bool { return *l.Spec.LeaseTransitions == 3 }},
	}
	prev := base
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			patch := tc.patch
			if patch == "" {
				patch = fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"leaseTransitions":3}}`, prev.ResourceVersion)
			}
			got := e.do("PATCH", path, patch, "Content-Type", tc.contentType).lease(t, http.StatusOK)
			if !tc.check(got) || got.Annotations["keep"] != "me" || got.ResourceVersion == prev.ResourceVersion {
				t.Fatalf("patched %+v", got)
			}
			prev = got
		})
	}
}

// TestJSONPatchIsBounded: copy operations that double the object at every
// step are stopped once it outgrows any Lease, before they cost memory;
// and a patch of too many operations is refused outright.
func TestJSONPatchIsBounded(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases/amp"
	e.do("POST", leasesPath+"default/leases", newLease("amp", "a", 10)).lease(t, http.StatusCreated)
	ops := []string{fmt.Sprintf(`{"op":"add","path":"/metadata/annotations","value":{"pad":%q}}`, strings.Repeat("x", 1000))}
	for i := range 18 { // 2^18 KiB if nothing stops it
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/metadata/annotations","path":"/metadata/annotations/c%d"}`, i))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := e.do("PATCH", path, "["+strings.Join(ops, ",")+"]", "Content-Type", "application/json-patch+json")
	runtime.ReadMemStats(&after)
	if r.code != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "above the limit") {
		t.Fatalf("amplifying patch: %d %s, want 422 naming the limit", r.code, r.body)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
		t.Fatalf("the refused patch allocated %d MiB, want far less", alloc>>20)
	}

	many := make([]string, 101)
	for i := range many {
		many[i] = `{"op":"test","path":"/metadata/name","value":"amp"}`
	}
	r = e.do("PATCH", path, "["+strings.Join(many, ",")+"]", "Content-Type", "application/json-patch+json")
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("patch of 101 operations: %d %s, want 413", r.code, r.body)
	}
	if l := e.do("GET", path, nil).lease(t, http.StatusOK); len(l.Annotations) > 1 {
		t.Fatalf("a refused patch changed the lease: %v", l.Annotations)
	}
}

func TestGRPCLeasePresented(t *testing.T) {
	e := setup(t)
	res, err := e.grpc.Acquire(ctx(t), &pb.AcquireRequest{
		Namespace: "ops", Name: "via-grpc", HolderIdentity: "worker-1",
		LeaseDuration: durationpb.New(1500 * time.Millisecond), Labels: map[string]string{"tier": "db"},
	})
	if err != nil || !res.Acquired {
		t.Fatalf("acquire: %v %v", res, err)
	}
	r := e.do("GET", leasesPath+"ops/leases/via-grpc", nil)
	l := r.lease(t, http.StatusOK)
	if *l.Spec.HolderIdentity != "worker-1" || *l.Spec.LeaseDurationSeconds != 2 || *l.Spec.LeaseTransitions != 1 ||
		l.Spec.AcquireTime == nil || l.Spec.RenewTime == nil || l.Labels["tier"] != "db" {
		t.Fatalf("presented %+v", l)
	}
	if want := strconv.FormatUint(res.Lease.FencingToken, 10); l.Annotations[k8sapi.FencingTokenAnnotation] != want {
		t.Fatalf("token %q, want %s", l.Annotations[k8sapi.FencingTokenAnnotation], want)
	}
	micro := regexp.MustCompile(`"(acquireTime|renewTime)":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"`)
	if n := len(micro.FindAll(r.body, -1)); n != 2 {
		t.Fatalf("%d MicroTimes with six digits in %s", n, r.body)
	}
}

func TestExpiryClearsHolder(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases/"
	e.do("POST", path[:len(path)-1], newLease("short", "a", 1)).lease(t, http.StatusCreated)
	waitFor(t, func() bool {
		l := e.do("GET", path+"short", nil).lease(t, http.StatusOK)
		return l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == ""
	})
	// The client's other fields stay as it wrote them.
	l := e.do("GET", path+"short", nil).lease(t, http.StatusOK)
	if *l.Spec.LeaseDurationSeconds != 1 || l.Spec.RenewTime == nil {
		t.Fatalf("after expiry %+v", l.Spec)
	}
}

func TestListPagesAndSelectors(t *testing.T) {
	e := setup(t)
	for _, ns := range []string{"a", "b"} {
		for i := range 3 {
			l := newLease(fmt.Sprintf("l%d", i), "", 0)
			l.Labels = map[string]string{"ns": ns, "n": strconv.Itoa(i)}
			e.do("POST", leasesPath+ns+"/leases", l).lease(t, http.StatusCreated)
		}
	}
	list := func(path string) *coordinationv1.LeaseList {
		t.Helper()
		r := e.do("GET", path, nil)
		if r.code != 200 || r.hdr.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
		var l coordinationv1.LeaseList
		if err := json.Unmarshal(r.body, &l); err != nil || l.Kind != "LeaseList" || l.ResourceVersion == "" {
			t.Fatalf("%s: %v %s", path, err, r.body)
		}
		return &l
	}
	names := func(l *coordinationv1.LeaseList) (out []string) {
		for _, it := range l.Items {
			out = append(out, it.Namespace+"/"+it.Name)
		}
		return out
	}
	tests := []struct{ name, path, want string }{
		{"namespace", leasesPath + "a/leases", "[a/l0 a/l1 a/l2]"},
		{"all", "/apis/coordination.k8s.io/v1/leases", "[a/l0 a/l1 a/l2 b/l0 b/l1 b/l2]"},
		{"equality", "/apis/coordination.k8s.io/v1/leases?labelSelector=n%3D1", "[a/l1 b/l1]"},
		{"set based", "/apis/coordination.k8s.io/v1/leases?labelSelector=n%20in%20(0,2),ns!%3Db", "[a/l0 a/l2]"},
		{"field", "/apis/coordination.k8s.io/v1/leases?fieldSelector=metadata.name%3Dl2", "[a/l2 b/l2]"},
		{"empty namespace", leasesPath + "none/leases", "[]"},
		{"impossible namespace", leasesPath + "No_Such/leases", "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fmt.Sprint(names(list(tc.path))); got != tc.want && !(tc.want == "[]" && got == "[]") {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		var all []string
		path := "/apis/coordination.k8s.io/v1/leases?limit=4"
		first := list(path)
		l := first
		for {
			all = append(all, names(l)...)
			if l.Continue == "" {
				break
			}
			if l.ResourceVersion != first.ResourceVersion {
				t.Fatalf("page resourceVersion %s, first %s", l.ResourceVersion, first.ResourceVersion)
			}
			l = list(path + "&continue=" + l.Continue)
		}
		if fmt.Sprint(all) != "[a/l0 a/l1 a/l2 b/l0 b/l1 b/l2]" || len(first.Items) != 4 {
			t.Fatalf("pages gave %v", all)
		}
	})
}

func TestStatusErrorsForClientGo(t *testing.T) {
	e := setup(t)
	leases := e.clientset().CoordinationV1().Leases("default")
	_, err := leases.Get(ctx(t), "missing", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("get missing: %v", err)
	}
	l, err := leases.Create(ctx(t), newLease("cg", "a", 10), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Create(ctx(t), newLease("cg", "a", 10), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: %v", err)
	}
	l.Spec.HolderIdentity = ptr("b")
	if _, err := leases.Update(ctx(t), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Update(ctx(t), l, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: %v", err)
	}
	list, err := leases.List(ctx(t), metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if err := leases.Delete(ctx(t), "cg", metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(l.UID))}); err != nil {
		t.Fatal(err)
	}
	if err := leases.Delete(ctx(t), "cg", metav1.DeleteOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ct := range e.contentTypes {
		if ct != "application/vnd.kubernetes.protobuf" {
			t.Fatalf("client-go sent %q; the test means to cover protobuf", ct)
		}
	}
	if len(e.contentTypes) < 4 {
		t.Fatalf("bodies sent: %v", e.contentTypes)
	}
}

// TestSubdomainNames: Lease names are DNS-1123 subdomains, as in
// Kubernetes, and a refused name gets the API server's own cause.
func TestSubdomainNames(t *testing.T) {
	e := setup(t)
	leases := e.clientset().CoordinationV1().Leases("kube-system")
	const id = "80807133.tutorial.kubebuilder.io"
	created, err := leases.Create(ctx(t), newLease(id, "a", 10), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Spec.HolderIdentity = ptr("b")
	if _, err := leases.Update(ctx(t), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Patch(ctx(t), id, types.MergePatchType, []byte(`{"metadata":{"labels":{"a":"b"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := leases.List(ctx(t), metav1.ListOptions{LabelSelector: "a=b", FieldSelector: "metadata.name=" + id})
	if err != nil || len(list.Items) != 1 || *list.Items[0].Spec.HolderIdentity != "b" {
		t.Fatalf("list: %v %v", err, list)
	}
	long := strings.Repeat("a.", 126) + "a"
	if _, err := leases.Create(ctx(t), newLease(long, "", 0), metav1.CreateOptions{}); err != nil {
		t.Fatalf("253 characters: %v", err)
	}

	tests := []struct{ name, message string }{
		{long + "a", "must be no more than 253 characters"},
		{"Upper.case", `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`},
		{"a..b", "a lowercase RFC 1123 subdomain"},
	}
	for _, tc := range tests {
		st := e.do("POST", leasesPath+"default/leases", newLease(tc.name, "", 0)).status(t, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid)
		if len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != "metadata.name" || !strings.HasPrefix(st.Details.Causes[0].Message, `Invalid value: "`) ||
			!strings.Contains(st.Details.Causes[0].Message, tc.message) {
			t.Errorf("create %q: causes %+v, want metadata.name: %s", tc.name, st.Details.Causes, tc.message)
		}
	}
	// A namespace stays a DNS-1123 label.
	st := e.do("POST", leasesPath+"a.b/leases", newLease("x", "", 0)).status(t, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid)
	if len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != "metadata.namespace" || !strings.Contains(st.Details.Causes[0].Message, "must not contain dots") {
		t.Errorf("dotted namespace: causes %+v", st.Details.Causes)
	}
	if err := leases.Delete(ctx(t), id, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestFieldValidation: unknown and duplicate fields are refused, warned
// about or dropped as fieldValidation says, Warn by default, as the API
// server does.
func TestFieldValidation(t *testing.T) {
	e := setup(t)
	path := leasesPath + "default/leases"
	body := func(name string) string {
		return `{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"` + name + `"},"spec":{"holderIdentity":"a","leaseDurationSeconds":100000,"foo":1}}`
	}
	const warning = `299 - "unknown field \"spec.foo\""`

	st := e.do("POST", path+"?fieldValidation=Strict", body("strict")).status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
	if want := `Lease in version "v1" cannot be handled as a Lease: strict decoding error: unknown field "spec.foo"`; st.Message != want {
		t.Errorf("strict: message %q, want %q", st.Message, want)
	}
	e.do("GET", path+"/strict", nil).status(t, http.StatusNotFound, metav1.StatusReasonNotFound)
	yaml := "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: y}\nspec: {bar: 1}\n"
	e.do("POST", path+"?fieldValidation=Strict", yaml, "Content-Type", "application/yaml").status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
	dup := `{"metadata":{"name":"dup"},"spec":{"holderIdentity":"a","holderIdentity":"b","leaseDurationSeconds":10}}`
	if st := e.do("POST", path+"?fieldValidation=Strict", dup).status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest); !strings.Contains(st.Message, `duplicate field "spec.holderIdentity"`) {
		t.Errorf("duplicate: %q", st.Message)
	}

	for _, q := range []string{"", "?fieldValidation=Warn"} {
		res := e.do("POST", path+q, body("warn"+strings.ToLower(strings.TrimPrefix(q, "?fieldValidation="))))
		l := res.lease(t, http.StatusCreated)
		if got := res.hdr.Values("Warning"); len(got) != 1 || got[0] != warning {
			t.Errorf("create%s: Warning %q, want %q", q, got, warning)
		}
		// Kubernetes accepts any positive int32 duration, and so does
		// leasekeeper here, above the gRPC API's MaxLeaseDuration.
		if *l.Spec.LeaseDurationSeconds != 100000 {
			t.Errorf("leaseDurationSeconds %d, want 100000", *l.Spec.LeaseDurationSeconds)
		}
	}
	res := e.do("POST", path+"?fieldValidation=Ignore", body("ignore"))
	res.lease(t, http.StatusCreated)
	if got := res.hdr.Values("Warning"); len(got) != 0 {
		t.Errorf("ignore: Warning %q", got)
	}
	e.do("POST", path+"?fieldValidation=Bogus", body("bogus")).status(t, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid)

	merge := []string{"Content-Type", "application/merge-patch+json"}
	st = e.do("PATCH", path+"/ignore?fieldValidation=Strict", `{"spec":{"foo":2}}`, merge...).status(t, http.StatusBadRequest, metav1.StatusReasonBadRequest)
	if want := `strict decoding error: unknown field "spec.foo"`; st.Message != want {
		t.Errorf("strict patch: message %q, want %q", st.Message, want)
	}
	res = e.do("PATCH", path+"/ignore", `{"spec":{"foo":2,"holderIdentity":"b"}}`, merge...)
	if l := res.lease(t, http.StatusOK); *l.Spec.HolderIdentity != "b" || len(res.hdr.Values("Warning")) != 1 {
		t.Errorf("patch with Warn: holder %q, Warning %q", *l.Spec.HolderIdentity, res.hdr.Values("Warning"))
	}
	st = e.do("PATCH", path+"/ignore?force=true", `{}`, merge...).status(t, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid)
	if st.Details.Kind != "PatchOptions" {
		t.Errorf("force on a merge patch: %+v", st.Details)
	}

	// The same through client-go, which reports warnings to its handler.
	var warnings []string
	cfg := &rest.Config{Host: e.srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"},
		WarningHandler: warningFunc(func(_ int, _ string, text string) { warnings = append(warnings, text) })}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoordinationV1().Leases("default").Patch(ctx(t), "ignore", types.MergePatchType, []byte(`{"spec":{"zzz":1}}`), metav1.PatchOptions{FieldValidation: "Strict"})
	if !apierrors.IsBadRequest(err) {
		t.Fatalf("client-go strict patch: %v", err)
	}
	if _, err := cs.CoordinationV1().Leases("default").Patch(ctx(t), "ignore", types.MergePatchType, []byte(`{"spec":{"zzz":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || warnings[0] != `unknown field "spec.zzz"` {
		t.Errorf("client-go warnings %q", warnings)
	}
}

type warningFunc func(code int, agent, text string)

func (f warningFunc) HandleWarningHeader(code int, agent, text string) { f(code, agent, text) }

// TestDryRun: dryRun=All on every write verb is checked as the real
// request and answered as if it were made; nothing changes.
func TestDryRun(t *testing.T) {
	e := setup(t)
	leases := e.clientset().CoordinationV1().Leases("default")
	dry := []string{metav1.DryRunAll}
	created, err := leases.Create(ctx(t), newLease("dry", "a", 10), metav1.CreateOptions{DryRun: dry})
	if err != nil || created.ResourceVersion != "" || created.CreationTimestamp.IsZero() || *created.Spec.HolderIdentity != "a" {
		t.Fatalf("dry-run create: %v %+v", err, created)
	}
	if _, err := leases.Get(ctx(t), "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("after a dry-run create: %v", err)
	}
	if _, err := leases.Create(ctx(t), newLease("Bad", "a", 10), metav1.CreateOptions{DryRun: dry}); !apierrors.IsInvalid(err) {
		t.Fatalf("dry-run create of a bad name: %v", err)
	}
	real, err := leases.Create(ctx(t), newLease("dry", "a", 10), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Create(ctx(t), newLease("dry", "a", 10), metav1.CreateOptions{DryRun: dry}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("dry-run create of an existing lease: %v", err)
	}
	upd := real.DeepCopy()
	upd.Spec.HolderIdentity = ptr("b")
	got, err := leases.Update(ctx(t), upd, metav1.UpdateOptions{DryRun: dry})
	if err != nil || *got.Spec.HolderIdentity != "b" || got.ResourceVersion != real.ResourceVersion || got.UID != real.UID {
		t.Fatalf("dry-run update: %v %+v", err, got)
	}
	got, err = leases.Patch(ctx(t), "dry", types.MergePatchType, []byte(`{"metadata":{"labels":{"x":"y"}}}`), metav1.PatchOptions{DryRun: dry})
	if err != nil || got.Labels["x"] != "y" {
		t.Fatalf("dry-run patch: %v %+v", err, got)
	}
	if err := leases.Delete(ctx(t), "dry", metav1.DeleteOptions{DryRun: dry}); err != nil {
		t.Fatalf("dry-run delete: %v", err)
	}
	res := e.do("DELETE", leasesPath+"default/leases/dry?dryRun=All", nil)
	if res.code != http.StatusOK {
		t.Fatalf("dry-run delete from the query: %d %s", res.code, res.body)
	}
	if err := leases.Delete(ctx(t), "nope", metav1.DeleteOptions{DryRun: dry}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run delete of a missing lease: %v", err)
	}
	after, err := leases.Get(ctx(t), "dry", metav1.GetOptions{})
	if err != nil || after.ResourceVersion != real.ResourceVersion || *after.Spec.HolderIdentity != "a" || after.Labels["x"] != "" {
		t.Fatalf("after the dry runs: %v %+v, want the lease as created", err, after)
	}
}
