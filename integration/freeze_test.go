package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
)

// These tests stop the node a client follows with SIGSTOP: its connections
// stay open and nothing answers. The stopped node is a follower, and the
// client lists it first, so it is the node the client follows. (A frozen
// leader is a different fault: the followers that forward to it wait on
// it, which the nodes' own forwarding must bound.) The clients use
// DefaultConfig.

// followerFirst waits for a leader and returns a follower and every
// endpoint with that follower's first.
func (c *cluster) followerFirst() (*proc, []string) {
	c.t.Helper()
	leader := c.leader(15 * time.Second)
	var f *proc
	eps := []string{}
	for _, p := range c.procs {
		if p != leader && f == nil {
			f = p
			continue
		}
		eps = append(eps, p.grpc)
	}
	return f, append([]string{f.grpc}, eps...)
}

// freeze stops p with SIGSTOP until the test ends.
func (c *cluster) freeze(p *proc) {
	c.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
}

func TestFrozenFollowerGet(t *testing.T) {
	c := startCluster(t, 3)
	f, eps := c.followerFirst()
	if _, err := c.client().Acquire(ctxT(t, 10*time.Second), "default", "db", "alice", time.Minute, 0, nil); err != nil {
		t.Fatal(err)
	}
	cl := c.client(eps...)
	// Serializable reads, answered by the follower itself: a forwarded
	// call would name the leader, and the client would follow it.
	for range 2 { // the second goes on the Calls stream
		if _, err := cl.Get(ctxT(t, 10*time.Second), "default", "warm-up", true); !errors.Is(err, client.ErrNotFound) {
			t.Fatal(err)
		}
	}
	c.freeze(f)
	start := time.Now()
	g, err := cl.Get(ctxT(t, 4*time.Second), "default", "db", false)
	if err != nil || g.GetLease().GetHolderIdentity() != "alice" {
		t.Fatalf("Get with the followed node stopped: %v, %v", g, err)
	}
	t.Logf("Get answered %v after SIGSTOP of the followed node (4s deadline)", time.Since(start).Round(time.Millisecond))
}

func TestFrozenFollowerLock(t *testing.T) {
	c := startCluster(t, 3)
	f, eps := c.followerFirst()
	cl := c.client(eps...)
	if _, err := cl.Status(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	c.freeze(f)
	m, err := client.NewMutex(cl, "free", client.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := make(chan error, 1)
	go func() {
		_, err := m.Lock(context.Background())
		res <- err
	}()
	select {
	case err := <-res:
		if err != nil {
			t.Fatalf("Lock: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Lock on a free lease not done within 3s of SIGSTOP of the followed node")
	}
	t.Logf("Lock took %v", time.Since(start).Round(time.Millisecond))
	if err := m.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// The leading candidate is a leasectl elect process, killed with SIGKILL
// while the node the other candidate follows is stopped: the other leads
// within LeaseDuration + 3s.
func TestFrozenFollowerElector(t *testing.T) {
	c := startCluster(t, 3)
	f, eps := c.followerFirst()
	const ttl = 3 * time.Second
	a := exec.Command(ctlBinary, "--endpoints", strings.Join(c.endpoints(), ","), "elect", "frozen", "--identity", "a",
		"--ttl", ttl.String(), "--renew-deadline", "2s", "--retry", "500ms")
	out, err := a.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	leading, exited := make(chan struct{}), make(chan struct{})
	go func() {
		rest := waitFor(out, "leading ")
		close(leading)
		_, _ = io.Copy(io.Discard, rest)
		_ = a.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = a.Process.Kill()
		<-exited
	})
	select {
	case <-leading:
	case <-exited:
		t.Fatal("leasectl elect ended before leading")
	case <-time.After(15 * time.Second):
		t.Fatal("leasectl elect not leading within 15s")
	}

	events := make(chan string, 10)
	cl := c.client(eps...)
	le, err := client.NewLeaderElector(cl, client.ElectorConfig{
		Name: "frozen", Identity: "b", LeaseDuration: ttl, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		Callbacks: client.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { events <- "b leads"; <-ctx.Done() },
			OnNewLeader:      func(id string) { events <- "leader " + id },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { _ = le.Run(ctx) })
	next := func(d time.Duration) string {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(d):
			t.Fatalf("no news from b within %v", d)
		}
		return ""
	}
	for e := next(15 * time.Second); e != "leader a"; e = next(15 * time.Second) {
	}
	c.freeze(f)
	died := time.Now()
	_ = a.Process.Signal(syscall.SIGKILL)
	for e := next(ttl + 3*time.Second); e != "b leads"; e = next(ttl + 3*time.Second - time.Since(died)) {
	}
	t.Logf("b leads %v after the leader's process died (LeaseDuration %v), its node stopped", time.Since(died).Round(time.Millisecond), ttl)
}

// waitFor reads r until a line starts with prefix, and returns r to be
// drained.
func waitFor(r io.Reader, prefix string) io.Reader {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, prefix) || err != nil {
			return br
		}
	}
}

// A Monitor whose node is stopped keeps a renewing member Ready: its watch
// resumes on another node and sees the renewals.
func TestFrozenFollowerMonitor(t *testing.T) {
	c := startCluster(t, 3)
	f, eps := c.followerFirst()
	const ttl = 3 * time.Second
	hb, err := client.NewHeartbeat(c.client(eps[1:]...), "nodes", "n1", client.WithTTL(ttl), client.WithGrace(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan client.MemberEvent, 64)
	m, err := client.NewMonitor(c.client(eps...), "nodes", client.WithMemberEvents(events))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { _ = hb.Run(ctx) })
	wg.Go(func() { _ = m.Run(ctx) })
	for {
		select {
		case ev := <-events:
			if ev.Member.State != client.StateReady {
				continue
			}
		case <-time.After(15 * time.Second):
			t.Fatal("n1 never Ready")
		}
		break
	}
	c.freeze(f)
	froze := time.Now()
	deadline := froze.Add(15 * time.Second)
	for {
		if ms := m.Members(); len(ms) == 1 && ms[0].LastHeartbeat.After(froze.Add(2*ttl)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal seen through another node: %+v", m.Members())
		}
		time.Sleep(50 * time.Millisecond) // polling the monitor's state: it has no event for "nothing changed"
	}
	for {
		select {
		case ev := <-events:
			t.Errorf("member event while the node was stopped: %s %s -> %s", ev.Member.Name, ev.From, ev.Member.State)
			continue
		default:
		}
		break
	}
	t.Logf("n1 stayed Ready for %v with the monitor's node stopped", time.Since(froze).Round(time.Millisecond))
}

// leasectl watch, following a node that is then stopped, resumes on
// another and prints every change once, in order.
func TestFrozenFollowerWatch(t *testing.T) {
	c := startCluster(t, 3)
	f, eps := c.followerFirst()
	w := c.client()
	// A first write elsewhere: --rev 0 would replay nothing.
	if _, err := w.Acquire(ctxT(t, 10*time.Second), "default", "first", "me", time.Minute, 0, nil); err != nil {
		t.Fatal(err)
	}
	list, err := w.List(ctxT(t, 10*time.Second), &pb.ListRequest{Namespace: "w"})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	write := func(i int) {
		r, err := w.Acquire(ctxT(t, 10*time.Second), "w", fmt.Sprintf("l%d", i), "me", time.Minute, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("rev=%d", r.GetLease().GetResourceVersion()))
	}
	write(0) // the watch starts from the list, before it
	cmd := exec.Command(ctlBinary, "--endpoints", strings.Join(eps, ","), "watch", "-n", "w", "--rev", fmt.Sprint(list.GetRevision()))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	})
	var got []string
	expect := func() {
		t.Helper()
		for len(got) < len(want) {
			select {
			case l := <-lines:
				got = append(got, l[strings.LastIndex(l, " ")+1:])
			case <-time.After(15 * time.Second):
				t.Fatalf("printed %v, want %v", got, want)
			}
		}
	}
	expect()
	c.freeze(f)
	for i := 1; i < 11; i++ {
		write(i)
	}
	expect()
	write(11) // a repeated event would be printed before this one
	expect()
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("printed %v, want %v", got, want)
	}
}

// TestClusterHealthWithAFrozenNode: `leasectl cluster health` asks every
// endpoint at once, so two stopped nodes cost one --timeout, not two, and
// the live node's answer is still reported (it may have stepped down, as
// it lost its quorum).
func TestClusterHealthWithAFrozenNode(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.leader(15 * time.Second)
	var frozen []*proc
	for _, p := range c.procs {
		if p != leader {
			frozen = append(frozen, p)
			c.freeze(p)
		}
	}
	const timeout = 3 * time.Second
	start := time.Now()
	out, code, err := ctlAt(c.endpoints(), "--timeout", timeout.String(), "cluster", "health")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if code != 1 {
		t.Fatalf("cluster health with two nodes stopped: exit %d, want 1\n%s", code, out)
	}
	for _, p := range frozen {
		if !regexp.MustCompile(regexp.QuoteMeta(p.grpc) + `\s+UNREACHABLE`).MatchString(out) {
			t.Errorf("stopped node %s not reported unreachable:\n%s", p.grpc, out)
		}
	}
	if !regexp.MustCompile(regexp.QuoteMeta(leader.grpc) + `\s+(SERVING|NOT_SERVING)\s+n\d`).MatchString(out) {
		t.Errorf("live node %s: its answer is not reported:\n%s", leader.grpc, out)
	}
	if took >= 2*timeout {
		t.Errorf("cluster health took %v with two stopped nodes: the probes waited one after the other (--timeout %v)", took.Round(time.Millisecond), timeout)
	}
}
