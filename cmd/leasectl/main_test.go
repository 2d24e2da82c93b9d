package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/auth"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// leasectl runs the CLI in-process against srv.
func leasectl(t *testing.T, srv *clienttest.Server, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	if srv != nil {
		args = append([]string{"--endpoints", srv.Addr, "--timeout", "5s"}, args...)
	}
	code = run(args, &out, &errOut)
	return out.String(), errOut.String(), code
}

// mustRun runs the CLI and fails the test unless it exits with want.
func mustRun(t *testing.T, srv *clienttest.Server, want int, args ...string) string {
	t.Helper()
	out, errOut, code := leasectl(t, srv, args...)
	if code != want {
		t.Fatalf("leasectl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out
}

// seed stores two leases in namespace default and one in jobs.
func seed(srv *clienttest.Server) {
	// 5h30m ago prints as 5h30m for a whole minute, so slow runs do not flake.
	created := timestamppb.New(time.Now().Add(-(5*time.Hour + 30*time.Minute + time.Second)))
	srv.Put(&pb.Lease{
		Name: "db", HolderIdentity: "alice", FencingToken: 7, LeaseTransitions: 2,
		LeaseDuration: durationpb.New(10 * time.Second), GracePeriod: durationpb.New(2 * time.Second),
		Labels: map[string]string{"app": "db"}, CreateTime: created, RenewTime: created, AcquireTime: created,
		History: []*pb.Holding{
			{HolderIdentity: "alice", FencingToken: 7, StartTime: created},
			{HolderIdentity: "bob", FencingToken: 3, StartTime: created, EndTime: created, EndReason: "expired"},
		},
	})
	srv.Put(&pb.Lease{Name: "cache", LeaseDuration: durationpb.New(time.Second), CreateTime: created, Labels: map[string]string{"app": "cache"}})
	srv.Put(&pb.Lease{Namespace: "jobs", Name: "cron", HolderIdentity: "carol", FencingToken: 8, CreateTime: created})
}

func TestUsageErrors(t *testing.T) {
	srv := clienttest.Start(t)
	tests := []struct {
		name string
		args []string
	}{
		{name: "unknown command", args: []string{"frobnicate"}},
		{name: "unknown flag", args: []string{"get", "leases", "--bogus"}},
		{name: "unknown resource", args: []string{"get", "pods"}},
		{name: "no resource", args: []string{"get"}},
		{name: "bad output", args: []string{"get", "leases", "-o", "xml"}},
		{name: "name with -A", args: []string{"get", "lease", "db", "-A"}},
		{name: "acquire without holder", args: []string{"acquire", "db"}},
		{name: "acquire without name", args: []string{"acquire", "--holder", "a"}},
		{name: "acquire bad duration", args: []string{"acquire", "db", "--holder", "a", "--duration", "soon"}},
		{name: "renew without token", args: []string{"renew", "db", "--holder", "a"}},
		{name: "release bad token", args: []string{"release", "db", "--holder", "a", "--token", "-1"}},
		{name: "describe without name", args: []string{"describe", "lease"}},
		{name: "delete wrong resource", args: []string{"delete", "pod", "db"}},
		{name: "watch two names", args: []string{"watch", "a", "b"}},
		{name: "cluster unknown", args: []string{"cluster", "explode"}},
		{name: "bad endpoints", args: []string{"get", "leases", "--endpoints", "nohostport"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := leasectl(t, srv, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr: %s", code, exitUsage, errOut)
			}
			if !strings.HasPrefix(errOut, "leasectl: ") || strings.Count(errOut, "\n") != 1 {
				t.Errorf("stderr = %q, want one line starting with \"leasectl: \"", errOut)
			}
			if out != "" {
				t.Errorf("stdout = %q, want nothing", out)
			}
		})
	}
	if got := srv.Calls("List") + srv.Calls("Get") + srv.Calls("Acquire"); got != 0 {
		t.Errorf("usage errors reached the server %d times", got)
	}
}

func TestHelp(t *testing.T) {
	out := mustRun(t, nil, exitOK, "--help")
	if !strings.Contains(out, "acquire") || !strings.Contains(out, "LEASECTL_ENDPOINTS") {
		t.Errorf("help lacks commands or env: %s", out)
	}
}

func TestAcquireRenewRelease(t *testing.T) {
	srv := clienttest.Start(t)

	out := mustRun(t, srv, exitOK, "acquire", "db", "--holder", "alice", "--duration", "1.5s", "--grace", "2s", "-l", "app=db", "-l", "tier=1")
	if want := "acquired default/db holder=alice token=1 duration=1.5s grace=2s remaining=3.5s\n"; out != want {
		t.Errorf("acquire:\n got %q\nwant %q", out, want)
	}
	out = mustRun(t, srv, exitOK, "acquire", "db", "--holder", "alice", "--duration", "1.5s")
	if !strings.HasPrefix(out, "renewed default/db holder=alice token=1") {
		t.Errorf("acquire again: %q, want renewed", out)
	}
	out = mustRun(t, srv, exitHeld, "acquire", "db", "--holder", "bob")
	if !strings.HasPrefix(out, "held default/db holder=alice token=1") {
		t.Errorf("acquire by bob: %q, want held by alice", out)
	}

	out = mustRun(t, srv, exitHeld, "acquire", "db", "--holder", "bob", "-o", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("acquire -o json: %v\n%s", err, out)
	}
	for k, want := range map[string]any{"holderIdentity": "alice", "fencingToken": 1.0, "acquired": false, "leaseDurationSeconds": 1.5, "remainingSeconds": 3.5} {
		if got[k] != want {
			t.Errorf("acquire -o json: %s = %v, want %v", k, got[k], want)
		}
	}
	if labels, _ := got["labels"].(map[string]any); labels["app"] != "db" || labels["tier"] != "1" {
		t.Errorf("labels = %v, want app=db, tier=1", got["labels"])
	}

	out = mustRun(t, srv, exitOK, "renew", "db", "--holder", "alice", "--token", "1", "-o", "json")
	var renewed map[string]any
	if err := json.Unmarshal([]byte(out), &renewed); err != nil {
		t.Fatalf("renew -o json: %v\n%s", err, out)
	}
	// A renewal from the command line is recorded: a new version, whose
	// renewTime is this renewal's.
	if renewed["holderIdentity"] != "alice" || renewed["resourceVersion"].(float64) <= got["resourceVersion"].(float64) {
		t.Errorf("renew -o json: %v, want alice's holding at a version after %v", renewed, got["resourceVersion"])
	}
	out = mustRun(t, srv, exitOK, "renew", "db", "--holder", "alice", "--token", "1")
	if !strings.HasPrefix(out, "renewed default/db holder=alice token=1") {
		t.Errorf("renew: %q", out)
	}
	_, errOut, code := leasectl(t, srv, "renew", "db", "--holder", "alice", "--token", "2")
	if want := `Error from server (FailedPrecondition): lease "default/db": `; code != exitError || !strings.HasPrefix(errOut, want) || strings.Count(errOut, "\n") != 1 {
		t.Errorf("renew with a wrong token: exit %d, stderr %q; want 1 and one line starting %q", code, errOut, want)
	}
	out = mustRun(t, srv, exitOK, "release", "db", "--holder", "alice", "--token", "1")
	if out != "released default/db holder=alice token=1\n" {
		t.Errorf("release: %q", out)
	}
	out = mustRun(t, srv, exitOK, "-n", "jobs", "acquire", "db", "--holder", "bob", "-o", "yaml")
	if !strings.Contains(out, "holderIdentity: bob\n") || !strings.Contains(out, "namespace: jobs\n") {
		t.Errorf("acquire -o yaml:\n%s", out)
	}
}

func TestServerErrors(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Inject("Acquire", func(context.Context) error {
		return status.Error(codes.InvalidArgument, "name \"DB\" is not a DNS-1123 label")
	})

	_, errOut, code := leasectl(t, srv, "acquire", "DB", "--holder", "a")
	if code != exitError {
		t.Errorf("exit %d, want %d", code, exitError)
	}
	if want := "Error from server (InvalidArgument): lease \"default/DB\": name \"DB\" is not a DNS-1123 label\n"; errOut != want {
		t.Errorf("stderr:\n got %q\nwant %q", errOut, want)
	}
	_, errOut, code = leasectl(t, srv, "get", "lease", "nope")
	if want := "Error from server (NotFound): lease \"default/nope\" not found\n"; code != exitError || errOut != want {
		t.Errorf("get missing lease: exit %d, stderr %q, want %q", code, errOut, want)
	}
}

func TestFailoverAndEnvEndpoints(t *testing.T) {
	down, up := clienttest.Start(t), clienttest.Start(t)
	down.Inject("", clienttest.Unavailable)
	seed(up)
	t.Setenv("LEASECTL_ENDPOINTS", down.Addr+","+up.Addr)

	out := mustRun(t, nil, exitOK, "get", "leases")
	if !strings.Contains(out, "db") {
		t.Errorf("get leases through failover:\n%s", out)
	}
	if down.Calls("List") == 0 {
		t.Errorf("LEASECTL_ENDPOINTS not used: the first endpoint was never called")
	}
}

func TestGetTable(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)

	tests := []struct {
		name string
		args []string
		want []string // lines, with runs of spaces squeezed to one
	}{
		{
			name: "list",
			args: []string{"get", "leases"},
			want: []string{"NAME HOLDER AGE", "cache <none> 5h30m", "db alice 5h30m"},
		},
		{
			name: "all namespaces",
			args: []string{"get", "leases", "-A"},
			want: []string{"NAMESPACE NAME HOLDER AGE", "default cache <none> 5h30m", "default db alice 5h30m", "jobs cron carol 5h30m"},
		},
		{
			name: "selector",
			args: []string{"get", "leases", "-l", "app=db"},
			want: []string{"NAME HOLDER AGE", "db alice 5h30m"},
		},
		{
			name: "namespace",
			args: []string{"get", "lease", "-n", "jobs"},
			want: []string{"NAME HOLDER AGE", "cron carol 5h30m"},
		},
		{
			name: "wide list",
			args: []string{"get", "leases", "-o", "wide"},
			want: []string{"NAME HOLDER AGE TOKEN TRANSITIONS DURATION EXPIRES IN", "cache <none> 5h30m 0 0 1s -", "db alice 5h30m 7 2 10s 12s"},
		},
		{
			name: "wide list serializable",
			args: []string{"get", "leases", "-o", "wide", "--serializable"},
			want: []string{"NAME HOLDER AGE TOKEN TRANSITIONS DURATION EXPIRES IN", "cache <none> 5h30m 0 0 1s -", "db alice 5h30m 7 2 10s -"},
		},
		{
			name: "wide single",
			args: []string{"get", "lease", "db", "-o", "wide"},
			want: []string{"NAME HOLDER AGE TOKEN TRANSITIONS DURATION EXPIRES IN", "db alice 5h30m 7 2 10s 12s"},
		},
		{
			name: "wide single serializable",
			args: []string{"get", "lease", "db", "-o", "wide", "--serializable"},
			want: []string{"NAME HOLDER AGE TOKEN TRANSITIONS DURATION EXPIRES IN", "db alice 5h30m 7 2 10s -"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := mustRun(t, srv, exitOK, tt.args...)
			got := strings.Split(strings.TrimRight(out, "\n"), "\n")
			for i := range got {
				got[i] = strings.Join(strings.Fields(got[i]), " ")
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}

	_, errOut, code := leasectl(t, srv, "get", "leases", "-n", "empty")
	if code != exitOK || errOut != "No leases found in empty namespace.\n" {
		t.Errorf("empty list: exit %d, stderr %q", code, errOut)
	}
}

func TestGetJSONAndYAML(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)

	out := mustRun(t, srv, exitOK, "get", "lease", "db", "-o", "json")
	var lease map[string]any
	if err := json.Unmarshal([]byte(out), &lease); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	for _, k := range []string{"namespace", "name", "holderIdentity", "leaseDurationSeconds", "gracePeriodSeconds",
		"acquireTime", "renewTime", "leaseTransitions", "fencingToken", "labels", "resourceVersion", "createTime", "history"} {
		if _, ok := lease[k]; !ok {
			t.Errorf("get -o json lacks %q:\n%s", k, out)
		}
	}
	if h := lease["history"].([]any)[1].(map[string]any); h["endReason"] != "expired" || h["holderIdentity"] != "bob" || h["endTime"] == nil {
		t.Errorf("history[1] = %v, want bob's expired holding", h)
	}

	out = mustRun(t, srv, exitOK, "get", "leases", "-A", "-o", "json")
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Items) != 3 {
		t.Fatalf("get leases -o json: %v, %d items\n%s", err, len(list.Items), out)
	}
	if list.Items[2]["namespace"] != "jobs" || list.Items[2]["fencingToken"] != 8.0 {
		t.Errorf("items[2] = %v", list.Items[2])
	}
	if _, ok := list.Items[0]["renewTime"]; ok {
		t.Errorf("renewTime of a lease that never had one is present: %v", list.Items[0])
	}

	out = mustRun(t, srv, exitOK, "get", "leases", "-n", "empty", "-o", "json")
	if strings.Join(strings.Fields(out), "") != `{"items":[]}` {
		t.Errorf("empty list -o json = %q", out)
	}

	out = mustRun(t, srv, exitOK, "get", "leases", "-o", "yaml")
	var fromYAML struct {
		Items []map[string]any `json:"items"`
	}
	if err := yaml.Unmarshal([]byte(out), &fromYAML); err != nil || len(fromYAML.Items) != 2 {
		t.Fatalf("get leases -o yaml: %v\n%s", err, out)
	}
	if fromYAML.Items[1]["holderIdentity"] != "alice" || fromYAML.Items[1]["leaseDurationSeconds"] != 10.0 {
		t.Errorf("yaml items[1] = %v", fromYAML.Items[1])
	}
}

func TestDescribe(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)
	out := mustRun(t, srv, exitOK, "describe", "lease", "db")
	for _, want := range []string{
		"Name:", "db", "Namespace:", "Labels:", "app=db", "Holder:", "alice", "Fencing Token:", "7",
		"Lease Duration:", "10s", "Grace Period:", "2s", "Remaining:", "12s", "Lease Transitions:", "2",
		"History:", "HOLDER", "REASON", "bob", "expired",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}
	_, errOut, code := leasectl(t, srv, "describe", "lease", "nope")
	if code != exitError || !strings.Contains(errOut, "not found") {
		t.Errorf("describe missing: exit %d, stderr %q", code, errOut)
	}
}

func TestDelete(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)
	if out := mustRun(t, srv, exitOK, "delete", "lease", "db"); out != "lease \"default/db\" deleted\n" {
		t.Errorf("delete: %q", out)
	}
	mustRun(t, srv, exitError, "delete", "lease", "db")
}

func TestClusterStatus(t *testing.T) {
	srv := clienttest.Start(t)
	srv.SetStatus(&pb.StatusResponse{
		Id: "n2", Leader: "n1", LeaderGrpcAddr: "127.0.0.1:7001", Term: 4, CommitIndex: 42, AppliedIndex: 41, State: "follower",
		Members: []*pb.Member{
			{Id: "n1", RaftAddr: "127.0.0.1:8001", GrpcAddr: "127.0.0.1:7001", Suffrage: "voter", State: "leader"},
			{Id: "n2", RaftAddr: "127.0.0.1:8002", GrpcAddr: "127.0.0.1:7002", Suffrage: "voter", State: "follower", CommandVersion: 3},
		},
	})

	out := mustRun(t, srv, exitOK, "cluster", "status")
	for _, want := range []string{"Leader:", "n1 (127.0.0.1:7001)", "Term:", "4", "Commit Index:", "42", "Applied Index:", "41",
		"ID", "RAFT ADDR", "GRPC ADDR", "SUFFRAGE", "STATE", "CMD VERSION", "127.0.0.1:8002", "follower   3"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, out)
		}
	}

	out = mustRun(t, srv, exitOK, "cluster", "status", "-o", "json")
	keys, err := topKeys([]byte(out))
	if err != nil {
		t.Fatalf("cluster status -o json: %v\n%s", err, out)
	}
	if want := []string{"leader", "term", "commitIndex", "appliedIndex", "members"}; strings.Join(keys[:5], ",") != strings.Join(want, ",") {
		t.Errorf("keys = %v, want %v first", keys, want)
	}
	var st struct {
		Leader       string           `json:"leader"`
		Term         uint64           `json:"term"`
		CommitIndex  uint64           `json:"commitIndex"`
		AppliedIndex uint64           `json:"appliedIndex"`
		Members      []map[string]any `json:"members"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if st.Leader != "n1" || st.Term != 4 || st.CommitIndex != 42 || st.AppliedIndex != 41 || len(st.Members) != 2 {
		t.Errorf("status = %+v", st)
	}
	wantMember := map[string]any{"id": "n2", "raftAddr": "127.0.0.1:8002", "grpcAddr": "127.0.0.1:7002", "suffrage": "voter", "state": "follower", "commandVersion": 3.0}
	if fmt.Sprint(st.Members[1]) != fmt.Sprint(wantMember) {
		t.Errorf("members[1] = %v, want %v", st.Members[1], wantMember)
	}
}

// topKeys returns the keys of a JSON object in their order.
func topKeys(b []byte) ([]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var keys []string
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return keys, nil
		}
		switch tok := tok.(type) {
		case json.Delim:
			if tok == '{' || tok == '[' {
				depth++
			} else {
				depth--
			}
		case string:
			if depth == 1 {
				if _, ok := raw[tok]; ok {
					keys = append(keys, tok)
					// Skip the value.
					var v json.RawMessage
					if err := dec.Decode(&v); err != nil {
						return nil, err
					}
				}
			}
		}
	}
}

// syncBuffer is a bytes.Buffer that a running watch writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch runs leasectl watch until the returned stop is called; stop
// returns the exit code.
func startWatch(t *testing.T, srv *clienttest.Server, out, errOut *syncBuffer, args ...string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args = append([]string{"--endpoints", srv.Addr, "watch"}, args...)
	code := make(chan int, 1)
	go func() { code <- runContext(ctx, args, out, errOut) }()
	return func() int {
		cancel()
		return <-code
	}
}

func waitFor(t *testing.T, buf *syncBuffer, lines int) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(buf.String(), "\n") < lines {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %d lines, got:\n%s", lines, buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return buf.String()
}

func TestWatch(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv) // revisions 1 (db), 2 (cache), 3 (jobs/cron)

	var out, errOut syncBuffer
	stop := startWatch(t, srv, &out, &errOut, "db")
	waitFor(t, &out, 1)
	srv.Emit(pb.WatchEvent_RENEWED, "default", "db")
	srv.Emit(pb.WatchEvent_RENEWED, "default", "cache")
	srv.Emit(pb.WatchEvent_DELETED, "default", "db")
	got := waitFor(t, &out, 3)
	if code := stop(); code != exitOK {
		t.Errorf("watch stopped with exit %d, want 0; stderr %s", code, errOut.String())
	}
	want := "ADDED default/db holder=alice token=7 rev=1\n" +
		"RENEWED default/db holder=alice token=7 rev=4\n" +
		"DELETED default/db holder=alice token=7 rev=6\n"
	if got != want {
		t.Errorf("watch db:\n got %q\nwant %q", got, want)
	}
}

func TestWatchJSONAllNamespaces(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)

	var out, errOut syncBuffer
	stop := startWatch(t, srv, &out, &errOut, "-A", "--rev", "1", "-o", "json")
	got := waitFor(t, &out, 2)
	if code := stop(); code != exitOK {
		t.Errorf("watch stopped with exit %d, want 0; stderr %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	var ev struct {
		Type     string         `json:"type"`
		Revision uint64         `json:"revision"`
		Lease    map[string]any `json:"lease"`
	}
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil {
		t.Fatalf("line %q: %v", lines[1], err)
	}
	if ev.Type != "ADDED" || ev.Revision != 3 || ev.Lease["namespace"] != "jobs" || ev.Lease["holderIdentity"] != "carol" {
		t.Errorf("second event = %+v, want ADDED jobs/cron at revision 3", ev)
	}
}

func TestWatchResumes(t *testing.T) {
	srv := clienttest.Start(t)
	seed(srv)
	// The first stream fails at once; the resumed one must start after the
	// revision given, since none was printed.
	var failed sync.Once
	srv.Inject("WatchBatches", func(context.Context) error {
		err := status.Error(codes.Unavailable, "leader lost")
		ran := false
		failed.Do(func() { ran = true })
		if ran {
			return err
		}
		return nil
	})
	var out, errOut syncBuffer
	stop := startWatch(t, srv, &out, &errOut, "--rev", "1")
	got := waitFor(t, &out, 1)
	if code := stop(); code != exitOK {
		t.Errorf("watch stopped with exit %d, want 0", code)
	}
	if got != "ADDED default/cache holder= token=0 rev=2\n" {
		t.Errorf("watch after resume: %q", got)
	}
	if !strings.Contains(errOut.String(), "resuming after revision 1") {
		t.Errorf("stderr = %q, want a resume note", errOut.String())
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{90 * time.Second, "90s"},
		{5*time.Minute + 3*time.Second, "5m3s"},
		{5 * time.Minute, "5m"},
		{42 * time.Minute, "42m"},
		{5*time.Hour + 30*time.Minute, "5h30m"},
		{30 * time.Hour, "30h"},
		{3*24*time.Hour + 4*time.Hour, "3d4h"},
		{100 * 24 * time.Hour, "100d"},
		{3 * 365 * 24 * time.Hour, "3y"},
		{10 * 365 * 24 * time.Hour, "10y"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestHashTokenFromStdin: the token can come from standard input, so it
// need not appear on a command line.
func TestHashTokenFromStdin(t *testing.T) {
	for _, args := range [][]string{nil, {"-"}} {
		var out bytes.Buffer
		cmd := (&app{stdout: &out}).hashTokenCmd()
		cmd.SetIn(strings.NewReader("s3cret-token\n"))
		cmd.SetArgs(args)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("hash-token %v: %v", args, err)
		}
		if got, want := out.String(), auth.HashToken("s3cret-token")+"\n"; got != want {
			t.Fatalf("hash-token %v from stdin printed %q, want %q", args, got, want)
		}
	}
	cmd := (&app{stdout: io.Discard}).hashTokenCmd()
	cmd.SetIn(strings.NewReader("\n"))
	cmd.SetArgs(nil)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "empty token") {
		t.Fatalf("hash-token of an empty line: %v, want an error", err)
	}
}

// One-shot commands fail over within --timeout from a node that answers
// nothing (its connection open, its calls held: a frozen node) or that
// refuses, and name the nodes they tried when they give up.
func TestOneShotCommandsFailOver(t *testing.T) {
	silent, refusing, up := clienttest.Start(t), clienttest.Start(t), clienttest.Start(t)
	silent.Inject("", clienttest.Hang)
	refusing.Inject("", clienttest.Unavailable)
	seed(up)
	for _, args := range [][]string{
		{"get", "lease", "db"}, // a call on the Calls stream, or unary before it is open
		{"get", "leases"},      // a unary call
		{"cluster", "status"},  // the cluster API
		{"renew", "db", "--holder", "alice", "--token", "7"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			start := time.Now()
			var out, errOut bytes.Buffer
			eps := strings.Join([]string{silent.Addr, refusing.Addr, up.Addr}, ",")
			code := run(append([]string{"--endpoints", eps, "--timeout", "6s"}, args...), &out, &errOut)
			if code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
			}
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("took %v with a --timeout of 6s", took)
			}
		})
	}

	var out, errOut bytes.Buffer
	eps := strings.Join([]string{silent.Addr, refusing.Addr}, ",")
	code := run([]string{"--endpoints", eps, "--timeout", "1s", "get", "lease", "db"}, &out, &errOut)
	if code != 1 {
		t.Fatalf("exit %d with no node answering, want 1\nstderr: %s", code, errOut.String())
	}
	for _, want := range []string{silent.Addr + " (no answer", refusing.Addr + " (Unavailable: no leader known)"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr %q does not say %q", errOut.String(), want)
		}
	}
	t.Logf("leasectl gave up with: %s", strings.TrimSpace(errOut.String()))
}

func TestDescribeLockDelay(t *testing.T) {
	srv := clienttest.Start(t)
	srv.Put(&pb.Lease{Name: "db", FencingToken: 7, LeaseDuration: durationpb.New(10 * time.Second), LockDelay: durationpb.New(15 * time.Second), LockDelayed: true})
	srv.Put(&pb.Lease{Name: "plain", HolderIdentity: "alice", FencingToken: 8, LeaseDuration: durationpb.New(10 * time.Second)})
	out := mustRun(t, srv, exitOK, "describe", "lease", "db")
	for _, want := range []string{"Lock Delay:", "15s", "Remaining:", "<lock delay"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe of a delayed lease lacks %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, srv, exitOK, "describe", "lease", "plain"); !strings.Contains(out, "Lock Delay:") || !strings.Contains(out, "<none>") {
		t.Errorf("describe of a lease without a lock delay:\n%s", out)
	}
}
