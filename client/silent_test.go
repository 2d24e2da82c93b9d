package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
	"github.com/leasekeeper/leasekeeper/clock"
)

// A node that holds its calls forever stands in for a frozen one: its
// connection stays open and nothing answers.

// silentPair starts a, the node the client follows, and b, with the lease
// "db" on both, and a client of [a, b] on a fake clock whose Calls stream
// to a is open.
func silentPair(t *testing.T) (a, b *clienttest.Server, c *client.Client, fake *clock.Fake) {
	t.Helper()
	a, b = clienttest.Start(t), clienttest.Start(t)
	for _, s := range []*clienttest.Server{a, b} {
		s.Put(&pb.Lease{Name: "db", HolderIdentity: "alice", FencingToken: 1})
	}
	fake = clock.NewFake(time.Unix(1_000_000, 0))
	c = lkClient(t, []string{a.Addr, b.Addr}, func(cfg *client.Config) { cfg.Clock = fake })
	for range 2 { // the first call dials a, the second opens the stream
		if _, err := c.Get(context.Background(), "", "db", true); err != nil {
			t.Fatal(err)
		}
	}
	if a.ViaCalls("Get") != 1 {
		t.Fatalf("the Calls stream to a is not in use")
	}
	return a, b, c, fake
}

// getViaA makes b silent too, so that a Get goes back to a once its
// attempt on b ran out of time, and returns once a has answered it.
func getViaA(t *testing.T, c *client.Client, b *clienttest.Server, fake *clock.Fake) {
	t.Helper()
	b.Inject("Get", clienttest.Hang)
	n := b.Calls("Get")
	res := goGet(c, context.Background())
	waitUntil(t, 5*time.Second, "the Get reaches b", func() bool { return b.Calls("Get") == n+1 })
	fake.Advance(client.DefaultAttemptTimeout)
	if err := recvWithin(t, res, 5*time.Second, "the Get on a"); err != nil {
		t.Fatalf("Get on a again: %v", err)
	}
}

// goGet runs a Get in the background.
func goGet(c *client.Client, ctx context.Context) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, "", "db", true)
		res <- err
	}()
	return res
}

// A call on the Calls stream that a silent node does not answer within
// Config.AttemptTimeout on the client's clock moves to the next endpoint
// at once, without a backoff; the stream, silent since the call, is given
// up, and the node is asked again only on a new one.
func TestSilentNodeCallFailsOver(t *testing.T) {
	a, b, c, fake := silentPair(t)
	a.Inject("Get", clienttest.Hang)
	res := goGet(c, context.Background())
	waitUntil(t, 5*time.Second, "the Get reaches a", func() bool { return a.ViaCalls("Get") == 2 })
	closedWithin(t, fake.WaitForTimers(1, nil), 5*time.Second, "the Calls stream's timer")
	fake.Advance(client.DefaultAttemptTimeout - time.Millisecond)
	select {
	case err := <-res:
		t.Fatalf("the Get ended before its limit: %v", err)
	default:
	}
	fake.Advance(time.Millisecond)
	if err := recvWithin(t, res, 5*time.Second, "the Get on b"); err != nil {
		t.Fatalf("Get: %v", err)
	}
	if b.Calls("Get") != 1 {
		t.Errorf("b answered %d Gets, want 1", b.Calls("Get"))
	}

	// Back to a (b refuses): the silent stream was given up.
	a.Inject("Get", nil)
	getViaA(t, c, b, fake)
	if got := a.Calls("Calls"); got != 2 {
		t.Errorf("a saw %d Calls streams, want 2: the silent one was not given up", got)
	}
}

// A call past its limit on a stream that answers other calls fails over
// alone: the node is slow on that call, not silent, and the stream stays.
func TestSlowCallFailsOverAlone(t *testing.T) {
	a, b, c, fake := silentPair(t)
	a.Inject("Delete", clienttest.Hang)
	res := make(chan error, 1)
	go func() {
		_, err := c.Delete(context.Background(), "", "db")
		res <- err
	}()
	waitUntil(t, 5*time.Second, "the Delete reaches a", func() bool { return a.Calls("Delete") == 1 })
	if _, err := c.Get(context.Background(), "", "db", true); err != nil { // a answers this one
		t.Fatal(err)
	}
	closedWithin(t, fake.WaitForTimers(1, nil), 5*time.Second, "the Calls stream's timer")
	fake.Advance(client.DefaultAttemptTimeout)
	if err := recvWithin(t, res, 5*time.Second, "the Delete on b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if b.Calls("Delete") != 1 {
		t.Errorf("b answered %d Deletes, want 1", b.Calls("Delete"))
	}
	getViaA(t, c, b, fake)
	if got := a.Calls("Calls"); got != 1 {
		t.Errorf("a saw %d Calls streams, want 1: a stream that answers was given up", got)
	}
}

// With a deadline, an attempt gets a third of the time left, so a Get with
// a 4s deadline whose node is silent is answered by the next one within it
// (the issue: three attempts on the same silent node, then the deadline).
// On the unary path too, where the limit travels as the call's deadline.
func TestSilentNodeGetWithinDeadline(t *testing.T) {
	for _, unary := range []bool{false, true} {
		t.Run(map[bool]string{false: "calls", true: "unary"}[unary], func(t *testing.T) {
			a, b := clienttest.Start(t), clienttest.Start(t)
			for _, s := range []*clienttest.Server{a, b} {
				s.Put(&pb.Lease{Name: "db", HolderIdentity: "alice", FencingToken: 1})
			}
			c := lkClient(t, []string{a.Addr, b.Addr}, func(cfg *client.Config) { cfg.UnaryCalls = unary })
			warm(t, c)
			warm(t, c)
			a.Inject("Get", clienttest.Hang)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			start := time.Now()
			if _, err := c.Get(ctx, "", "db", false); err != nil {
				t.Fatalf("Get: %v", err)
			}
			took := time.Since(start)
			// 4s/3 on a, then b, which answers at once (unless dialling
			// it takes long on a loaded machine).
			if took < 1200*time.Millisecond {
				t.Errorf("Get took %v, want about 1.33s", took)
			}
			if b.Calls("Get") == 0 {
				t.Errorf("b answered no Get")
			}
			t.Logf("Get answered by the next node after %v", took.Round(time.Millisecond))
		})
	}
}

// When every node is silent the call gives up at its deadline and names
// the nodes it tried.
func TestSilentNodesNamed(t *testing.T) {
	a, b := clienttest.Start(t), clienttest.Start(t)
	a.Inject("", clienttest.Hang)
	b.Inject("", clienttest.Hang)
	c := newClient(t, a.Addr, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.Get(ctx, "", "db", false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get: %v, want context.DeadlineExceeded", err)
	}
	for _, want := range []string{a.Addr + " (no answer", b.Addr + " (no answer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// A watch that brings nothing (not even progress) for three progress
// intervals on the client's clock is given up: Recv fails with
// ErrUnavailable naming the node, and the next watch opens elsewhere.
func TestWatchGivesUpSilentNode(t *testing.T) {
	a, b := clienttest.Start(t), clienttest.Start(t)
	b.Put(&pb.Lease{Name: "db"})
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	c := lkClient(t, []string{a.Addr, b.Addr}, func(cfg *client.Config) {
		cfg.Clock = fake
		cfg.WatchProgressInterval = 100 * time.Millisecond
	})
	a.PauseWatches()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the watch open on a", func() bool { return a.Calls("WatchBatches") == 1 })
	closedWithin(t, fake.WaitForTimers(1, nil), 5*time.Second, "the watch's timer")
	fake.Advance(3 * 100 * time.Millisecond)
	_, err = w.Recv()
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), a.Addr) || !strings.Contains(err.Error(), "silent") {
		t.Fatalf("Recv: %v, want ErrUnavailable naming %s as silent", err, a.Addr)
	}
	w, err = c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Recv(); err != nil || ev.GetLease().GetName() != "db" {
		t.Fatalf("Recv on b: %v, %v", ev, err)
	}
}

// The client keeps the progress it asked for to itself; a caller that
// asks for progress gets it.
func TestWatchProgressReachesOnlyWhoAsked(t *testing.T) {
	a := clienttest.Start(t)
	c := newClient(t, a.Addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	quiet, err := c.Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	asked, err := c.Watch(ctx, &pb.WatchRequest{ProgressInterval: durationpb.New(client.MinWatchProgressInterval)})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // longer than the client's own interval, 100ms
		if ev, err := asked.Recv(); err != nil || ev.GetType() != pb.WatchEvent_PROGRESS {
			t.Fatalf("Recv: %v, %v; want PROGRESS", ev, err)
		}
	}
	rev := a.Emit(pb.WatchEvent_ADDED, "default", "db")
	if ev, err := quiet.Recv(); err != nil || ev.GetType() != pb.WatchEvent_ADDED || ev.GetRevision() != rev {
		t.Fatalf("Recv: %v, %v; want the ADDED event first", ev, err)
	}
}

// A Lock whose first attempt meets a silent node takes the lease on the
// next one; its local deadline counts from the attempt that was answered,
// so a duration shorter than the attempt's limit still leaves a holding.
func TestLockAfterSilentNodeKeepsItsDeadline(t *testing.T) {
	a, b, c, fake := silentPair(t)
	a.Inject("Acquire", clienttest.Hang)
	m := mustMutex(t, c, "free", client.WithTTL(time.Second), client.WithGrace(0))
	res := make(chan error, 1)
	go func() {
		_, err := m.Lock(context.Background())
		res <- err
	}()
	waitUntil(t, 5*time.Second, "the Acquire reaches a", func() bool { return a.Calls("Acquire") == 1 })
	closedWithin(t, fake.WaitForTimers(1, nil), 5*time.Second, "the Calls stream's timer")
	fake.Advance(client.DefaultAttemptTimeout)
	if err := recvWithin(t, res, 5*time.Second, "the Lock on b"); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	h := m.Holding()
	if b.Calls("Acquire") != 1 || !h.Valid() {
		t.Fatalf("acquires on b %d, holding valid %v; want 1, true", b.Calls("Acquire"), h.Valid())
	}
	if want := fake.Now().Add(time.Second * 99 / 100).Add(-client.DefaultMargin); !h.Deadline().Equal(want) {
		t.Errorf("deadline %v, want %v: from the answered attempt's send", h.Deadline(), want)
	}
	h.Abandon()
}
