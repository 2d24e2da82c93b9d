package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/examples/fencedstore"
	"github.com/leasekeeper/leasekeeper/internal/lktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDemo runs the demo against an in-process cluster and store.
func TestDemo(t *testing.T) {
	cl := lktest.Start(t, 3, clock.New())
	cl.Leader(10 * time.Second)
	store := httptest.NewServer(fencedstore.New())
	defer store.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"-endpoints", strings.Join(cl.Endpoints, ","), "-store", store.URL, "-ttl", "500ms"}, &out)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	want := `worker-a: locked
worker-a: write "a-1" accepted
worker-a: paused, keeping its token
worker-b: locked once the lock expired, token higher: true
worker-b: write "b-1" accepted
worker-a: resumed, writing with its old token
worker-a: write "a-2" rejected: 409 stale fencing token
store: greeting="b-1", written by worker-b: true
`
	if got := out.String(); got != want {
		t.Fatalf("demo printed:\n%s\nwant:\n%s", got, want)
	}
}
