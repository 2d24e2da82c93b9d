package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

// warm makes one call, which dials the endpoint (on the unary path, as the
// connection is not ready yet), so the next calls go on a Calls stream.
func warm(t *testing.T, c *client.Client) {
	t.Helper()
	if _, err := c.Get(context.Background(), "", "warm-up", true); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("warm-up Get: %v, want ErrNotFound", err)
	}
}

func TestCallsShareOneStream(t *testing.T) {
	a := clienttest.Start(t)
	c := newClient(t, a.Addr)
	warm(t, c)
	var wg sync.WaitGroup
	errs := make(chan error, 16*10)
	for g := range 16 {
		wg.Go(func() {
			for i := range 10 {
				name := fmt.Sprintf("l-%d-%d", g, i)
				r, err := c.Acquire(context.Background(), "", name, "me", time.Minute, 0, nil)
				if err == nil && !r.Acquired {
					err = fmt.Errorf("%s not acquired", name)
				}
				if err == nil {
					_, err = c.Release(context.Background(), "", name, "me", r.Lease.FencingToken)
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Calls("Calls"); got != 1 {
		t.Errorf("%d Calls streams opened, want 1", got)
	}
	if got := a.ViaCalls("Acquire") + a.ViaCalls("Release"); got != 320 {
		t.Errorf("%d calls came on the stream, want all 320", got)
	}
	// Errors keep their code, message and details on the stream.
	r, _ := c.Acquire(context.Background(), "", "db", "me", time.Minute, 0, nil)
	_, err := c.Renew(context.Background(), "", "db", "me", r.Lease.FencingToken+1)
	if !errors.Is(err, client.ErrStaleToken) || status.Code(err) != codes.FailedPrecondition {
		t.Errorf("renew with a wrong token: %v, want ErrStaleToken", err)
	}
	if a.ViaCalls("Renew") != 1 {
		t.Errorf("the renewal did not come on the stream")
	}
}

func TestUnaryCallsConfig(t *testing.T) {
	a := clienttest.Start(t)
	c := lkClient(t, []string{a.Addr}, func(cfg *client.Config) { cfg.UnaryCalls = true })
	warm(t, c)
	warm(t, c)
	if a.Calls("Calls") != 0 || a.ViaCalls("Get") != 0 || a.Calls("Get") != 2 {
		t.Errorf("streams %d, gets %d of which %d on a stream; want 0, 2, 0", a.Calls("Calls"), a.Calls("Get"), a.ViaCalls("Get"))
	}
}

func TestCallsFallBackToUnary(t *testing.T) {
	a := clienttest.Start(t)
	a.DisableCalls()
	c := newClient(t, a.Addr)
	for range 5 {
		warm(t, c)
	}
	if a.Calls("Get") != 5 || a.ViaCalls("Get") != 0 {
		t.Errorf("gets %d, on a stream %d; want 5, 0", a.Calls("Get"), a.ViaCalls("Get"))
	}
	if got := a.Calls("Calls"); got != 1 {
		t.Errorf("%d Calls streams tried, want 1 (then never again)", got)
	}
}

// What a message on a shared stream cannot carry goes on the unary path:
// call options, outgoing metadata, and requests too large for the stream.
func TestCallsLeaveSomeCallsUnary(t *testing.T) {
	a := clienttest.Start(t)
	c := newClient(t, a.Addr)
	warm(t, c)
	warm(t, c)
	if a.ViaCalls("Get") != 1 {
		t.Fatalf("the second Get did not come on the stream")
	}
	get := &pb.GetRequest{Name: "x"}
	if _, err := c.Leases().Get(context.Background(), get, grpc.WaitForReady(true)); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get with a call option: %v", err)
	}
	md := metadata.AppendToOutgoingContext(context.Background(), "k", "v")
	if _, err := c.Leases().Get(md, get); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get with metadata: %v", err)
	}
	if a.Calls("Get") != 4 || a.ViaCalls("Get") != 1 {
		t.Errorf("gets %d, on the stream %d; want 4, 1", a.Calls("Get"), a.ViaCalls("Get"))
	}
	// 5 MiB of labels: over the node's 4 MiB limit. The refusal is this
	// call's alone, and the stream goes on serving.
	big := map[string]string{"big": strings.Repeat("x", 5<<20)}
	_, err := c.Acquire(context.Background(), "", "big", "me", time.Minute, 0, big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("huge acquire: %v, want ResourceExhausted", err)
	}
	warm(t, c)
	if a.ViaCalls("Get") != 2 || a.Calls("Calls") != 1 {
		t.Errorf("after the huge call: %d gets on the stream, %d streams; want 2, 1", a.ViaCalls("Get"), a.Calls("Calls"))
	}
}

func TestBrokenCallsStreamFailsOver(t *testing.T) {
	a, b := clienttest.Start(t), clienttest.Start(t)
	a.Inject("Acquire", clienttest.Hang)
	c := newClient(t, a.Addr, b.Addr)
	warm(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		r, err := c.Acquire(ctx, "", "db", "me", time.Minute, 0, nil)
		if err == nil && !r.Acquired {
			err = errors.New("not acquired")
		}
		done <- err
	}()
	waitUntil(t, 10*time.Second, "the acquire reaches a", func() bool { return a.ViaCalls("Acquire") == 1 })
	a.Stop()
	if err := <-done; err != nil {
		t.Fatalf("acquire after a's stream broke: %v", err)
	}
	if b.Calls("Acquire") != 1 {
		t.Errorf("b saw %d acquires, want the retry", b.Calls("Acquire"))
	}
}

func TestCallContextReachesTheNode(t *testing.T) {
	a := clienttest.Start(t)
	ended := make(chan error, 1)
	a.Inject("Acquire", func(ctx context.Context) error {
		<-ctx.Done()
		ended <- ctx.Err()
		return status.FromContextError(ctx.Err()).Err()
	})
	c := newClient(t, a.Addr)
	warm(t, c)

	// Cancelled: the attempt's limit travels, but the cancel message ends
	// the node's side of the call at once. It is sent on a stream that
	// answered something since the call went out (the Get): a stream that
	// did not may be silent, and the node ends the call at its limit.
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "", "db", "me", time.Minute, 0, nil)
		res <- err
	}()
	waitUntil(t, 10*time.Second, "the acquire reaches a", func() bool { return a.ViaCalls("Acquire") == 1 })
	warm(t, c)
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled acquire: %v, want context.Canceled", err)
	}
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Errorf("the node's call ended with %v, want context.Canceled", err)
	}

	// A deadline travels with the call.
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(ctx, "", "db", "me", time.Minute, 0, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("acquire past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if err := <-ended; !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		t.Errorf("the node's call ended with %v", err)
	}
	if a.ViaCalls("Acquire") != 2 {
		t.Errorf("%d acquires on the stream, want 2", a.ViaCalls("Acquire"))
	}
}

func watchNames(t *testing.T, c *client.Client, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, &pb.WatchRequest{Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for range n {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("after %v: %v", names, err)
		}
		names = append(names, ev.GetLease().GetName())
	}
	return names
}

func TestWatchHandsOutBatchedEvents(t *testing.T) {
	for _, batches := range []bool{true, false} {
		t.Run(fmt.Sprintf("batches=%v", batches), func(t *testing.T) {
			a := clienttest.Start(t)
			if !batches {
				a.DisableWatchBatches()
			}
			c := newClient(t, a.Addr)
			var want []string
			for i := range 5 {
				name := fmt.Sprintf("l%d", i)
				if _, err := c.Acquire(context.Background(), "", name, "me", time.Minute, 0, nil); err != nil {
					t.Fatal(err)
				}
				want = append(want, name)
			}
			for range 2 { // the second watch after a fallback goes to Watch at once
				if got := watchNames(t, c, 5); strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("events for %v, want %v", got, want)
				}
			}
			wb, w := a.Calls("WatchBatches"), a.Calls("Watch")
			if batches && (wb != 2 || w != 0) || !batches && (wb != 1 || w != 2) {
				t.Errorf("WatchBatches opened %d times, Watch %d", wb, w)
			}
		})
	}
}
