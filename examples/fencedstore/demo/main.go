// Command demo shows a fencing token saving a store from a paused lock
// holder. Two workers share a leasekeeper lock on the store:
//
//  1. worker-a takes the lock and writes with its token;
//  2. worker-a pauses (a GC pause, a SIGSTOP): its renewals stop and the
//     lock expires, but nothing tells its paused code;
//  3. worker-b takes the lock (a higher token) and writes;
//  4. worker-a resumes and writes with its old token: the store refuses it
//     with 409 Conflict, so worker-b's value survives.
//
// Run a cluster and the store first:
//
//	go run ./examples/fencedstore/server -listen 127.0.0.1:8080 &
//	go run ./examples/fencedstore/demo -endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 -store http://127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/examples/fencedstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	endpoints := fs.String("endpoints", strings.Join(client.DefaultEndpoints, ","), "leasekeeper gRPC endpoints")
	store := fs.String("store", "http://127.0.0.1:8080", "base URL of the fenced store")
	lockName := fs.String("lock", "fencedstore-demo", "name of the lock")
	ttl := fs.Duration("ttl", time.Second, "lease duration of the lock")
	if err := fs.Parse(args); err != nil {
		return err
	}
	newClient := func() (*client.Client, error) {
		cfg := client.DefaultConfig()
		cfg.Endpoints = strings.Split(*endpoints, ",")
		// Closing worker-a's client stands in for a frozen process: it
		// must leave the lock to expire, not release it.
		cfg.AbandonOnClose = true
		return client.New(cfg)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	opts := []client.Option{client.WithTTL(*ttl), client.WithGrace(0)}

	// worker-a has its own client, so that pausing it stops its renewals.
	ca, err := newClient()
	if err != nil {
		return err
	}
	defer ca.Close()
	a, err := client.NewMutex(ca, *lockName, append(opts, client.WithIdentity("worker-a"))...)
	if err != nil {
		return err
	}
	ha, err := a.Lock(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "worker-a: locked")
	report(out, "worker-a", "a-1", fencedstore.Put(ctx, hc, *store, "greeting", "a-1", ha.Token()))

	// The pause: worker-a's process stops, so its renewals stop. Its
	// client notices the local deadline (Lost closes), but the paused code
	// does not run to see it. Closing the client stands in for the frozen
	// renewals: with AbandonOnClose it does not release the lock.
	fmt.Fprintln(out, "worker-a: paused, keeping its token")
	ca.Close()

	cb, err := newClient()
	if err != nil {
		return err
	}
	defer cb.Close()
	b, err := client.NewMutex(cb, *lockName, append(opts, client.WithIdentity("worker-b"))...)
	if err != nil {
		return err
	}
	hb, err := b.Lock(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "worker-b: locked once the lock expired, token higher: %v\n", hb.Token() > ha.Token())
	report(out, "worker-b", "b-1", fencedstore.Put(ctx, hc, *store, "greeting", "b-1", hb.Token()))

	// worker-a resumes where it stopped, unaware that it lost the lock.
	fmt.Fprintln(out, "worker-a: resumed, writing with its old token")
	report(out, "worker-a", "a-2", fencedstore.Put(ctx, hc, *store, "greeting", "a-2", ha.Token()))

	v, tok, err := fencedstore.Get(ctx, hc, *store, "greeting")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "store: greeting=%q, written by worker-b: %v\n", v, tok == hb.Token())
	return b.Unlock(ctx)
}

func report(out io.Writer, who, value string, err error) {
	switch {
	case err == nil:
		fmt.Fprintf(out, "%s: write %q accepted\n", who, value)
	case errors.Is(err, fencedstore.ErrStale):
		fmt.Fprintf(out, "%s: write %q rejected: 409 stale fencing token\n", who, value)
	default:
		fmt.Fprintf(out, "%s: write %q failed: %v\n", who, value, err)
	}
}
