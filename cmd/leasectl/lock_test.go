package main

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
)

// syncBuffer is declared in main_test.go.

// cluster starts a real in-process cluster and a client of it.
func cluster(t *testing.T) (*lktest.Cluster, *client.Client) {
	t.Helper()
	cl := lktest.Start(t, 3, clock.New())
	cl.Leader(10 * time.Second)
	// Every member registers its command version (semaphore queues need
	// the newest); before that the leader refuses the newer commands.
	for deadline := time.Now().Add(10 * time.Second); cl.Leader(10*time.Second).CommandVersion() != fsm.CommandVersion; {
		if time.Now().After(deadline) {
			t.Fatal("the cluster never applied the newest command version")
		}
		time.Sleep(10 * time.Millisecond) // members register every 200ms
	}
	cfg := client.DefaultConfig()
	cfg.Endpoints = cl.Endpoints
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return cl, c
}

// started is a leasectl run in the background.
type started struct {
	stdout, stderr *syncBuffer
	code           chan int
	cancel         context.CancelFunc
}

// start runs leasectl against cl in the background until it ends or the
// test cancels it.
func start(t *testing.T, cl *lktest.Cluster, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &started{stdout: &syncBuffer{}, stderr: &syncBuffer{}, code: make(chan int, 1), cancel: cancel}
	args = append([]string{"--endpoints", strings.Join(cl.Endpoints, ","), "--timeout", "5s"}, args...)
	go func() { s.code <- runContext(ctx, args, s.stdout, s.stderr) }()
	t.Cleanup(func() {
		cancel()
		<-s.code
	})
	return s
}

// exit waits for the run to end and returns its code.
func (s *started) exit(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case code := <-s.code:
		s.code <- code // for the cleanup
		return code
	case <-time.After(within):
		t.Fatalf("leasectl still running after %v\nstdout: %s\nstderr: %s", within, s.stdout, s.stderr)
	}
	return 0
}

// waitOutput polls the output for want: a child process's output offers
// no event to wait on.
func waitOutput(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("output never showed %q:\n%s", want, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitHeld watches the lease until someone holds it and returns the holding.
func waitHeld(t *testing.T, c *client.Client, name string) *pb.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Every event from the first revision on: the acquire may be it.
	w, err := c.Watch(ctx, &pb.WatchRequest{Namespace: "default", Name: name, StartRevision: 0, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("waiting for %s to be held: %v", name, err)
		}
		if ev.GetLease().GetHolderIdentity() != "" {
			return ev.GetLease()
		}
	}
}

func holderOf(t *testing.T, c *client.Client, name string) string {
	t.Helper()
	resp, err := c.Get(context.Background(), "default", name, false)
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetLease().GetHolderIdentity()
}

func TestLockRunsCommand(t *testing.T) {
	cl, c := cluster(t)
	s := start(t, cl, "lock", "job", "--ttl", "2s", "--identity", "runner", "--",
		"sh", "-c", `echo "token=$LEASE_FENCING_TOKEN holder=$LEASE_HOLDER name=$LEASE_NAMESPACE/$LEASE_NAME"; exit 7`)
	if code := s.exit(t, 10*time.Second); code != 7 {
		t.Fatalf("exit %d, want the command's 7\nstderr: %s", code, s.stderr)
	}
	if got := s.stdout.String(); !strings.Contains(got, "token=1 holder=runner name=default/job") {
		t.Fatalf("command saw %q, want token=1 holder=runner name=default/job", got)
	}
	if h := holderOf(t, c, "job"); h != "" {
		t.Fatalf("lock still held by %q after the command exited", h)
	}
}

func TestLockStopsCommandWhenLost(t *testing.T) {
	cl, c := cluster(t)
	s := start(t, cl, "lock", "job", "--ttl", "900ms", "--kill-grace", "5s", "--", "sleep", "30")
	waitHeld(t, c, "job")
	// Deleting the lease ends the holding: the next renewal is refused.
	if _, err := c.Delete(context.Background(), "default", "job"); err != nil {
		t.Fatal(err)
	}
	if code := s.exit(t, 10*time.Second); code != 128+15 {
		t.Fatalf("exit %d, want 143 (SIGTERM)\nstderr: %s", code, s.stderr)
	}
	if !strings.Contains(s.stderr.String(), "lock lost") {
		t.Fatalf("stderr does not report the loss: %s", s.stderr)
	}
}

func TestLockInterruptStopsCommandAndReleases(t *testing.T) {
	cl, c := cluster(t)
	s := start(t, cl, "lock", "job", "--", "sh", "-c", "echo started; exec sleep 30")
	// The command runs: the holding reached the server and leasectl heard
	// of it (a lease held on the server alone may still be an acquire in
	// flight, which an interrupt abandons with exit 1).
	waitOutput(t, s.stdout, "started\n")
	s.cancel()
	if code := s.exit(t, 10*time.Second); code != 128+15 {
		t.Fatalf("exit %d, want 143\nstderr: %s", code, s.stderr)
	}
	if h := holderOf(t, c, "job"); h != "" {
		t.Fatalf("lock still held by %q after leasectl was interrupted", h)
	}
}

func TestLockNoWaitWhenHeld(t *testing.T) {
	cl, c := cluster(t)
	if r, err := c.Acquire(context.Background(), "default", "job", "other", time.Minute, 0, nil); err != nil || !r.Acquired {
		t.Fatalf("Acquire: %v %v", r, err)
	}
	s := start(t, cl, "lock", "job", "--no-wait", "--", "true")
	if code := s.exit(t, 10*time.Second); code != exitHeld {
		t.Fatalf("exit %d, want %d\nstderr: %s", code, exitHeld, s.stderr)
	}
	if !strings.Contains(s.stderr.String(), "held by other") {
		t.Fatalf("stderr = %s, want the holder named", s.stderr)
	}
}

// TestLockSlots: with --slots 2, two commands run at once on the two
// slots of a semaphore, a third waits until one exits and then gets its
// slot, and --no-wait on a full semaphore exits 3.
func TestLockSlots(t *testing.T) {
	cl, c := cluster(t)
	run := func(id string) *started {
		return start(t, cl, "lock", "pool", "--slots", "2", "--identity", id, "--",
			"sh", "-c", `echo "$LEASE_HOLDER on $LEASE_NAME token $LEASE_FENCING_TOKEN"; exec sleep 30`)
	}
	a, b := run("a"), run("b")
	waitOutput(t, a.stdout, "a on pool-")
	waitOutput(t, b.stdout, "b on pool-")
	third := run("c")
	full := start(t, cl, "lock", "pool", "--slots", "2", "--no-wait", "--", "true")
	if code := full.exit(t, 10*time.Second); code != exitHeld {
		t.Fatalf("--no-wait on a full semaphore: exit %d, want %d\nstderr: %s", code, exitHeld, full.stderr)
	}
	if !strings.Contains(full.stderr.String(), "all 2 slots of default/pool are held") {
		t.Fatalf("stderr = %s, want the full semaphore named", full.stderr)
	}
	if strings.Contains(third.stdout.String(), "c on") {
		t.Fatalf("a third command ran while two held the slots: %s", third.stdout)
	}
	slot := strings.Fields(a.stdout.String())[2]
	a.cancel()
	if code := a.exit(t, 10*time.Second); code != 128+15 {
		t.Fatalf("a: exit %d, want 143\nstderr: %s", code, a.stderr)
	}
	waitOutput(t, third.stdout, "c on "+slot+" token ")
	for _, p := range []*started{b, third} {
		p.cancel()
		p.exit(t, 10*time.Second)
	}
	for _, s := range []string{"pool-0", "pool-1"} {
		if h := holderOf(t, c, s); h != "" {
			t.Fatalf("%s still held by %q after every command ended", s, h)
		}
	}
}

func TestLockUsage(t *testing.T) {
	for _, args := range [][]string{
		{"lock", "job"},
		{"lock", "job", "sleep", "1"},
		{"lock", "--", "sleep", "1"},
		{"lock", "--lock-delay", "-1s", "job", "--", "true"},
		{"lock", "--slots", "0", "job", "--", "true"},
		{"elect", "e"},
		{"elect", "e", "--identity", "a", "extra"},
		{"observe"},
		{"get", "nodes", "extra"},
	} {
		_, _, code := leasectl(t, nil, args...)
		if code != exitUsage {
			t.Errorf("leasectl %s: exit %d, want %d", strings.Join(args, " "), code, exitUsage)
		}
	}
}

func TestElectAndObserve(t *testing.T) {
	cl, c := cluster(t)
	obs := start(t, cl, "observe", "e")
	waitOutput(t, obs.stdout, "leader: <none>\n")

	el := start(t, cl, "elect", "e", "--identity", "alice", "--ttl", "1s", "--renew-deadline", "700ms", "--retry", "200ms")
	waitOutput(t, el.stdout, "leading default/e as alice token=")
	waitOutput(t, el.stdout, "leader: alice\n")
	waitOutput(t, obs.stdout, "leader: alice\n")

	el.cancel()
	if code := el.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("elect exit %d\nstderr: %s", code, el.stderr)
	}
	if !strings.Contains(el.stdout.String(), "stopped leading\n") {
		t.Fatalf("elect output lacks the end of leadership:\n%s", el.stdout)
	}
	// Interrupted, elect released the lease: observers see it free at once.
	waitOutput(t, obs.stdout, "leader: alice\nleader: <none>\n")
	if h := holderOf(t, c, "e"); h != "" {
		t.Fatalf("lease still held by %q", h)
	}
}

func TestElectRunsCommand(t *testing.T) {
	cl, c := cluster(t)
	s := start(t, cl, "elect", "e", "--identity", "bob", "--ttl", "1s", "--renew-deadline", "700ms", "--retry", "200ms",
		"--", "sh", "-c", `echo "running as $LEASE_HOLDER"; exit 5`)
	if code := s.exit(t, 10*time.Second); code != 5 {
		t.Fatalf("exit %d, want the command's 5\nstdout: %s\nstderr: %s", code, s.stdout, s.stderr)
	}
	if !strings.Contains(s.stdout.String(), "running as bob\n") {
		t.Fatalf("stdout = %s", s.stdout)
	}
	if h := holderOf(t, c, "e"); h != "" {
		t.Fatalf("lease still held by %q after the command exited", h)
	}
}

func TestGetNodes(t *testing.T) {
	cl, c := cluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	hb, err := client.NewHeartbeat(c, "", "worker-1", client.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- hb.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitFor := func() {
		for hb.Holding() == nil {
			select {
			case err := <-done:
				t.Fatalf("heartbeat ended: %v", err)
			case <-time.After(5 * time.Millisecond): // no event for the first holding
			}
		}
	}
	waitFor()
	s := start(t, cl, "get", "nodes")
	if code := s.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, s.stderr)
	}
	lines := strings.Split(strings.TrimSpace(s.stdout.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME STATUS LAST HEARTBEAT AGE" {
		t.Fatalf("get nodes =\n%s", s.stdout)
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[0] != "worker-1" || f[1] != "Ready" || !strings.HasSuffix(f[2], "s") || f[3] != "ago" {
		t.Fatalf("row %q, want worker-1 Ready Ns ago AGE", lines[1])
	}

	s = start(t, cl, "get", "nodes", "-n", "default")
	if code := s.exit(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d\nstderr: %s", code, s.stderr)
	}
	if !strings.Contains(s.stderr.String(), "No nodes found in default namespace") {
		t.Fatalf("get nodes -n default: stdout %q stderr %q", s.stdout, s.stderr)
	}
}
