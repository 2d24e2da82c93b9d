package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/examples/fencedstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0"}, pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	url := strings.TrimSpace(line[strings.Index(line, "http://"):])

	hc := &http.Client{Timeout: 5 * time.Second}
	if err := fencedstore.Put(ctx, hc, url, "k", "v", 3); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if v, tok, err := fencedstore.Get(ctx, hc, url, "k"); err != nil || v != "v" || tok != 3 {
		t.Fatalf("Get = %q, %d, %v", v, tok, err)
	}
	hc.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run = %v", err)
	}
}
