package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/leasekeeper/leasekeeper/k8sapi"
)

// k8sAPI returns the base URL of the Kubernetes Lease API in front of node
// p. Until lease-node serves it itself (--k8s-api-addr), the handler runs
// in the test process with a gRPC client of p, which is what lease-node
// does with its own address; switch this one function to the flag then.
func k8sAPI(t *testing.T, p *proc) string {
	t.Helper()
	url := "http://" + p.k8s
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url + "/version")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s serves no Kubernetes API at %s: %v", p.id, url, err)
		}
		time.Sleep(50 * time.Millisecond) // polling another process
	}
}

// ready waits until every live node knows the leader's gRPC address, so
// that each can forward.
func ready(t *testing.T, c *cluster) {
	t.Helper()
	c.leader(10 * time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range c.procs {
		for {
			cl := c.dial(p.grpc)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cl.Status(ctx)
			cancel()
			cl.Close()
			if err == nil && st.LeaderGrpcAddr != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s knows no leader address: %v", p.id, err)
			}
			time.Sleep(50 * time.Millisecond) // polling processes: nothing to wait on
		}
	}
}

func clientset(t *testing.T, url string) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: url, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// leadership is one candidate's time as leader, on this process's
// monotonic clock: from OnStartedLeading until its context ended (or
// OnStoppedLeading, if that came first).
type leadership struct {
	id         string
	start, end time.Time
}

// TestK8sLeaderElection runs client-go's leader election (LeaseLock, the
// default protobuf wire format, ReleaseOnCancel) with three candidates,
// each through the API in front of a different node, through forced
// handoffs and a kill -9 of the Raft leader.
func TestK8sLeaderElection(t *testing.T) {
	quietKlog(t)
	c := startCluster(t, 3)
	ready(t, c)
	const (
		ns, name      = "default", "k8s-election"
		leaseDuration = 6 * time.Second
		renewDeadline = 2 * time.Second
		retryPeriod   = 500 * time.Millisecond
		releaseSlack  = 250 * time.Millisecond
	)

	var (
		mu     sync.Mutex
		terms  []*leadership
		open   = map[string]*leadership{}
		wg     sync.WaitGroup
		cancel = map[string]context.CancelFunc{}
		done   = map[string]chan struct{}{}
	)
	stopTerm := func(id string) {
		mu.Lock()
		defer mu.Unlock()
		if l := open[id]; l != nil {
			l.end = time.Now()
			delete(open, id)
		}
	}
	clients := make([]*kubernetes.Clientset, 3)
	for i, p := range c.procs {
		clients[i] = clientset(t, k8sAPI(t, p))
	}
	run := func(i int) {
		id := fmt.Sprintf("candidate-%d", i)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
				Client:     clients[i].CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: id},
			},
			LeaseDuration:   leaseDuration,
			RenewDeadline:   renewDeadline,
			RetryPeriod:     retryPeriod,
			ReleaseOnCancel: true,
			Name:            name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					l := &leadership{id: id, start: time.Now()}
					mu.Lock()
					terms = append(terms, l)
					open[id] = l
					mu.Unlock()
					<-ctx.Done()
					stopTerm(id)
				},
				OnStoppedLeading: func() { stopTerm(id) },
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		ch := make(chan struct{})
		mu.Lock()
		cancel[id], done[id] = stop, ch
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(ch)
			le.Run(ctx)
		}()
	}
	stopAll := func() {
		mu.Lock()
		for _, stop := range cancel {
			stop()
		}
		mu.Unlock()
		wg.Wait()
	}
	t.Cleanup(stopAll)
	for i := range 3 {
		run(i)
	}

	// leader waits for a candidate to lead and returns its number.
	leader := func(timeout time.Duration) int {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			mu.Lock()
			for id := range open {
				mu.Unlock()
				var i int
				fmt.Sscanf(id, "candidate-%d", &i)
				return i
			}
			mu.Unlock()
			time.Sleep(50 * time.Millisecond) // the callbacks record; nothing to wait on
		}
		t.Fatalf("no candidate leads within %v", timeout)
		return -1
	}
	// stopCandidate cancels candidate i and waits until its Run returned.
	stopCandidate := func(i int) {
		id := fmt.Sprintf("candidate-%d", i)
		mu.Lock()
		stop, ch := cancel[id], done[id]
		mu.Unlock()
		stopTerm(id) // its work stops now, before client-go releases the lease
		stop()
		<-ch
	}
	// handoff makes the leader give up; another candidate takes over.
	handoff := func() {
		i := leader(15 * time.Second)
		stopCandidate(i)
		t.Logf("handed off from candidate-%d", i)
		// Back as a candidate once another has had the time to take over.
		time.Sleep(2 * retryPeriod)
		run(i)
	}
	// handoffTo makes candidate k the leader: the others step back until
	// it leads.
	handoffTo := func(k int) {
		for i := range 3 {
			if i != k {
				stopCandidate(i)
			}
		}
		if got := leader(15 * time.Second); got != k {
			t.Fatalf("candidate-%d leads, want candidate-%d", got, k)
		}
		t.Logf("handed off to candidate-%d", k)
		for i := range 3 {
			if i != k {
				run(i)
			}
		}
	}
	procIndex := func(p *proc) int {
		for i, q := range c.procs {
			if q == p {
				return i
			}
		}
		return -1
	}

	begin := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(begin.Add(d))) }
	leader(15 * time.Second)
	at(3 * time.Second)
	handoff()
	// The hard case: the Kubernetes leader reaches the service only through
	// the Raft leader, which dies. It stops by its RenewDeadline; another
	// candidate takes over once the lease has run out.
	at(5 * time.Second)
	handoffTo(procIndex(c.leader(5 * time.Second)))
	at(8 * time.Second)
	killed := c.leader(5 * time.Second)
	t.Logf("kill -9 of the Raft leader %s, the API server of candidate-%d", killed.id, procIndex(killed))
	c.stop(killed, syscall.SIGKILL)
	at(12 * time.Second)
	c.start(killed)
	at(16 * time.Second)
	handoff()
	at(20 * time.Second)
	current := leader(15 * time.Second)

	// The Lease agrees with the candidates: its holder leads now, and its
	// transition count (client-go's own) counts every other term.
	mu.Lock()
	n := len(terms)
	mu.Unlock()
	lease, err := clients[(current+1)%3].CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *lease.Spec.HolderIdentity, fmt.Sprintf("candidate-%d", current); got != want {
		t.Errorf("lease holder %s, want the leader %s", got, want)
	}
	if got := int(*lease.Spec.LeaseTransitions); got != n-1 {
		t.Errorf("leaseTransitions %d, want %d for %d terms", got, n-1, n)
	}
	// The service's history of holdings is the same sequence of leaders.
	res, err := c.client().Get(context.Background(), ns, name, false)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for i, h := range res.Lease.History {
		if i >= n {
			break
		}
		if want := terms[n-1-i].id; h.HolderIdentity != want {
			t.Errorf("holding %d back is %s's, but term %d was %s's", i, h.HolderIdentity, n-1-i, want)
		}
	}
	mu.Unlock()

	stopAll()
	final, err := clients[0].CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := final.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("after every candidate stopped, the lease is held by %s", *h)
	}

	mu.Lock()
	defer mu.Unlock()
	sort.Slice(terms, func(a, b int) bool { return terms[a].start.Before(terms[b].start) })
	distinct := map[string]bool{}
	for i, l := range terms {
		distinct[l.id] = true
		t.Logf("term %d: %s from %v to %v", i, l.id, l.start.Sub(begin).Round(time.Millisecond), l.end.Sub(begin).Round(time.Millisecond))
		if l.end.IsZero() {
			t.Errorf("term %d of %s never ended", i, l.id)
		}
		// client-go writes the release (ReleaseOnCancel) a moment before it
		// cancels the leader's context, so a successor may start that
		// moment before the predecessor's context ends: allow for it.
		if i > 0 && l.start.Before(terms[i-1].end.Add(-releaseSlack)) {
			t.Errorf("two leaders at once: %s started at %v, before %s stopped at %v", l.id,
				l.start.Sub(begin), terms[i-1].id, terms[i-1].end.Sub(begin))
		}
	}
	if len(distinct) < 2 {
		t.Errorf("%d distinct leaders, want at least 2", len(distinct))
	}
}

// quietKlog keeps client-go's logs out of the test output.
func quietKlog(t *testing.T) {
	klog.SetLogger(logr.Discard())
	t.Cleanup(klog.ClearLogger)
}

// TestK8sAPISafety checks the properties client-go relies on, across the
// API servers of all three nodes.
func TestK8sAPISafety(t *testing.T) {
	quietKlog(t)
	c := startCluster(t, 3)
	ready(t, c)
	var clients []*kubernetes.Clientset
	for _, p := range c.procs {
		clients = append(clients, clientset(t, k8sAPI(t, p)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lease := func(name, holder string) *coordinationv1.Lease {
		secs := int32(30)
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs},
		}
	}

	// Unknown lease: a NotFound Status.
	if _, err := clients[1].CoordinationV1().Leases("default").Get(ctx, "nobody", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get unknown: %v", err)
	}

	// Create race: exactly one of many concurrent creates wins.
	const n = 9
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = clients[i%3].CoordinationV1().Leases("default").Create(ctx, lease("race", fmt.Sprint("c", i)), metav1.CreateOptions{})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !apierrors.IsAlreadyExists(err):
			t.Fatalf("create: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates won, want 1", won)
	}

	// Stale resourceVersion: the second writer of the same version loses.
	a, err := clients[0].CoordinationV1().Leases("default").Get(ctx, "race", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := a.DeepCopy()
	a.Spec.HolderIdentity = ptr("a")
	b.Spec.HolderIdentity = ptr("b")
	if _, err := clients[1].CoordinationV1().Leases("default").Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = clients[2].CoordinationV1().Leases("default").Update(ctx, b, metav1.UpdateOptions{})
	var se *apierrors.StatusError
	if !apierrors.IsConflict(err) || !errors.As(err, &se) || se.ErrStatus.Code != http.StatusConflict {
		t.Fatalf("stale update: %v", err)
	}
	got, err := clients[2].CoordinationV1().Leases("default").Get(ctx, "race", metav1.GetOptions{})
	if err != nil || *got.Spec.HolderIdentity != "a" {
		t.Fatalf("after the race: %v %v", got, err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestK8sKubectl drives kubectl's everyday commands against the API with
// kubectl's default flags (client-side and server-side validation from the
// OpenAPI documents included): leases made through the Kubernetes API and
// through gRPC both show.
func TestK8sKubectl(t *testing.T) {
	// make tools builds bin/kubectl (tools/kubectl); else one on PATH.
	kubectl, err := filepath.Abs(filepath.Join("..", "bin", "kubectl"))
	if _, serr := os.Stat(kubectl); err != nil || serr != nil {
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("kubectl is missing: make tools builds bin/kubectl")
			}
			t.Skip("kubectl is not installed (make tools builds bin/kubectl); skipping the kubectl checks")
		}
	}
	t.Logf("kubectl: %s", kubectl)
	c := startCluster(t, 3)
	ready(t, c)
	url := k8sAPI(t, c.procs[0])
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := c.client().Acquire(ctx, "ops", "from-grpc", "worker-7", 30*time.Second, 0, map[string]string{"app": "db"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "config")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// try runs kubectl with extra environment variables env and returns its
	// combined output and exit code.
	try := func(stdin string, env []string, args ...string) (string, int) {
		t.Helper()
		args = append([]string{"--server", url, "--cache-dir", filepath.Join(dir, "cache")}, args...)
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = append(append(os.Environ(), "KUBECONFIG="+kubeconfig, "HOME="+dir), env...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	run := func(stdin string, args ...string) string {
		t.Helper()
		out, code := try(stdin, nil, args...)
		if code != 0 {
			t.Fatalf("kubectl %s: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		return out
	}
	manifest := func(name, holder string, extra ...string) string {
		return `apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: ` + name + `
  namespace: team
  labels: {app: web}
spec:
  holderIdentity: ` + holder + `
  leaseDurationSeconds: 40
` + strings.Join(extra, "")
	}
	holder := func(name string) string {
		t.Helper()
		return run("", "get", "lease", name, "-n", "team", "-o", "jsonpath={.spec.holderIdentity}")
	}

	// create, with a server dry run first, which writes nothing.
	if out := run(manifest("from-kubectl", "pod-1"), "create", "-f", "-", "--dry-run=server"); !strings.Contains(out, "created (server dry run)") {
		t.Fatalf("create --dry-run=server: %s", out)
	}
	if out, code := try("", nil, "get", "lease", "from-kubectl", "-n", "team"); code == 0 {
		t.Fatalf("a server dry run created the lease: %s", out)
	}
	if out := run(manifest("from-kubectl", "pod-1"), "create", "-f", "-"); !strings.Contains(out, "lease.coordination.k8s.io/from-kubectl created") {
		t.Fatalf("create: %s", out)
	}
	// kubectl leaves the field check to the server, which refuses an
	// unknown field.
	if out, code := try(manifest("bad", "pod-1", "  bogus: 1\n"), nil, "create", "-f", "-"); code == 0 || !strings.Contains(out, `unknown field "spec.bogus"`) {
		t.Fatalf("create with an unknown field: exit %d\n%s", code, out)
	}

	// apply, creating and then changing a lease; diff shows a change to
	// come (exit 1) and none once applied (exit 0).
	run(manifest("applied", "pod-a"), "apply", "-f", "-")
	if out, code := try(manifest("applied", "pod-b"), nil, "diff", "-f", "-"); code != 1 || !strings.Contains(out, "+  holderIdentity: pod-b") {
		t.Fatalf("diff: exit %d\n%s", code, out)
	}
	run(manifest("applied", "pod-b"), "apply", "-f", "-")
	if got := holder("applied"); got != "pod-b" {
		t.Errorf("after apply: holder %q", got)
	}
	if out, code := try(manifest("applied", "pod-b"), nil, "diff", "-f", "-"); code != 0 {
		t.Fatalf("diff after apply: exit %d\n%s", code, out)
	}
	// replace and edit.
	run(manifest("applied", "pod-c"), "replace", "-f", "-")
	if got := holder("applied"); got != "pod-c" {
		t.Errorf("after replace: holder %q", got)
	}
	if out, code := try("", []string{"KUBE_EDITOR=sed -i s/pod-c/pod-d/"}, "edit", "lease", "applied", "-n", "team"); code != 0 || !strings.Contains(out, "edited") {
		t.Fatalf("edit: exit %d\n%s", code, out)
	}
	if got := holder("applied"); got != "pod-d" {
		t.Errorf("after edit: holder %q", got)
	}
	// Server-side apply: create, diff, a conflict with another manager,
	// and taking the field over.
	if out := run(manifest("ssa", "pod-a"), "apply", "--server-side", "-f", "-"); !strings.Contains(out, "serverside-applied") {
		t.Fatalf("apply --server-side: %s", out)
	}
	if out, code := try(manifest("ssa", "pod-b"), nil, "diff", "--server-side", "-f", "-"); code != 1 || !strings.Contains(out, "+  holderIdentity: pod-b") {
		t.Fatalf("diff --server-side: exit %d\n%s", code, out)
	}
	if out, code := try(manifest("ssa", "pod-b"), nil, "apply", "--server-side", "--field-manager", "other", "-f", "-"); code == 0 ||
		!strings.Contains(out, `conflict with "kubectl": .spec.holderIdentity`) {
		t.Fatalf("conflicting apply --server-side: exit %d\n%s", code, out)
	}
	run(manifest("ssa", "pod-b"), "apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", "-")
	if got := holder("ssa"); got != "pod-b" {
		t.Errorf("after apply --server-side --force-conflicts: holder %q", got)
	}
	if out := run("", "get", "lease", "ssa", "-n", "team", "-o", "yaml", "--show-managed-fields"); !strings.Contains(out, "manager: other") ||
		!strings.Contains(out, "operation: Apply") {
		t.Errorf("managedFields: %s", out)
	}
	// explain reads the schema from the OpenAPI v3 document.
	if out := run("", "explain", "lease.spec.leaseDurationSeconds"); !strings.Contains(out, "leaseDurationSeconds <integer>") {
		t.Errorf("explain: %s", out)
	}

	out := run("", "get", "leases", "-A")
	for _, want := range []string{"NAMESPACE", "NAME", "HOLDER", "AGE", "from-grpc", "worker-7", "from-kubectl", "pod-1", "ops", "team"} {
		if !strings.Contains(out, want) {
			t.Errorf("get leases -A lacks %q:\n%s", want, out)
		}
	}
	if out := run("", "get", "leases", "-A", "--chunk-size", "1", "-o", "name"); strings.Count(out, "lease.coordination.k8s.io/") != 4 {
		t.Errorf("get --chunk-size 1: %s", out)
	}
	out = run("", "get", "lease", "from-grpc", "-n", "ops", "-o", "yaml")
	for _, want := range []string{"holderIdentity: worker-7", "leaseDurationSeconds: 30", "app: db", "leasekeeper.io/fencing-token:", "uid:", "resourceVersion:"} {
		if !strings.Contains(out, want) {
			t.Errorf("-o yaml lacks %q:\n%s", want, out)
		}
	}
	out = run("", "get", "leases", "-n", "team", "-l", "app=web", "-o", "json")
	var list coordinationv1.LeaseList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 3 {
		t.Errorf("get -l -o json: %v\n%s", err, out)
	}
	run("", "annotate", "lease", "from-kubectl", "-n", "team", "owner=me")
	run("", "label", "lease", "from-kubectl", "-n", "team", "tier=front")
	out = run("", "get", "lease", "from-kubectl", "-n", "team", "-o", "jsonpath={.metadata.annotations.owner}/{.metadata.labels.tier}/{.spec.holderIdentity}")
	if out != "me/front/pod-1" {
		t.Errorf("after annotate and label: %q", out)
	}
	if out := run("", "delete", "lease", "from-kubectl", "-n", "team", "--dry-run=server"); !strings.Contains(out, "(server dry run)") {
		t.Errorf("delete --dry-run=server: %s", out)
	}
	out = run("", "delete", "lease", "from-kubectl", "-n", "team")
	if !strings.Contains(out, `"from-kubectl" deleted`) {
		t.Errorf("delete: %s", out)
	}
	out = run("", "get", "leases", "-A", "-o", "name")
	if strings.Contains(out, "from-kubectl") || !strings.Contains(out, "lease.coordination.k8s.io/from-grpc") {
		t.Errorf("after delete: %s", out)
	}
}

// TestK8sDottedElectionID: a client-go LeaseLock candidate with
// kubebuilder's default kind of LeaderElectionID (a DNS-1123 subdomain)
// leads, and hands over to a candidate on another node when it stops. A
// metadata-only informer (what controller-runtime's OnlyMetadata builds)
// on the third node follows the lease through both holdings.
func TestK8sDottedElectionID(t *testing.T) {
	quietKlog(t)
	c := startCluster(t, 3)
	ready(t, c)
	const ns, name = "default", "80807133.tutorial.kubebuilder.io"
	tokens := watchTokens(t, k8sAPI(t, c.procs[2]), ns, name)
	leading := make(chan string, 2)
	var wg sync.WaitGroup
	stops := map[string]context.CancelFunc{}
	for i, p := range c.procs[:2] {
		id := fmt.Sprintf("manager-%d", i)
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
				Client:     clientset(t, k8sAPI(t, p)).CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: id},
			},
			LeaseDuration:   4 * time.Second,
			RenewDeadline:   2 * time.Second,
			RetryPeriod:     250 * time.Millisecond,
			ReleaseOnCancel: true,
			Name:            name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { leading <- id },
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		stops[id] = stop
		wg.Add(1)
		go func() {
			defer wg.Done()
			le.Run(ctx)
		}()
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		wg.Wait()
	})
	first := ""
	select {
	case first = <-leading:
	case <-time.After(15 * time.Second):
		t.Fatalf("no candidate leads %s within 15s", name)
	}
	lease, err := clientset(t, k8sAPI(t, c.procs[2])).CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != first {
		t.Fatalf("lease %s: %v %+v, want held by %s", name, err, lease, first)
	}
	stops[first]()
	select {
	case second := <-leading:
		if second == first {
			t.Fatalf("%s led twice", first)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("nobody took over from %s within 15s", first)
	}
	// Each holding's fencing token reaches the metadata informer.
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case tok := <-tokens:
			seen[tok] = true
		case <-time.After(15 * time.Second):
			t.Fatalf("the metadata informer saw fencing tokens %v, want those of two holdings", seen)
		}
	}
}

// watchTokens runs a metadata-only informer of namespace ns through the
// API at url until the test ends, and sends every fencing token it sees
// on lease name.
func watchTokens(t *testing.T, url, ns, name string) <-chan string {
	t.Helper()
	mc, err := metadata.NewForConfig(&rest.Config{Host: url, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	factory := metadatainformer.NewFilteredSharedInformerFactory(mc, 0, ns, nil)
	inf := factory.ForResource(gvr).Informer()
	tokens := make(chan string, 100)
	note := func(obj any) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok && m.Name == name && m.Annotations[k8sapi.FencingTokenAnnotation] != "" {
			select {
			case tokens <- m.Annotations[k8sapi.FencingTokenAnnotation]:
			default: // the test reads only the first few
			}
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    note,
		UpdateFunc: func(_, obj any) { note(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() {
		close(stop)
		factory.Shutdown()
	})
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("the metadata informer did not sync")
	}
	return tokens
}
