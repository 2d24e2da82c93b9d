package main

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/netutil"
)

// TestHTTPConnectionLimit: a server behind the connection limit leaves a
// connection past it unserved until one of those it holds closes.
func TestHTTPConnectionLimit(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}),
		ReadHeaderTimeout: time.Minute}
	const limit = 2
	serveHTTP(hs, netutil.LimitListener(lis, limit), "test", hclog.NewNullLogger())
	defer hs.Close()
	url := "http://" + lis.Addr().String() + "/"
	var held []net.Conn
	for range limit { // connections that send nothing hold their slots
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// The server accepts connections in order, so it takes those two and
	// leaves the request's connection in the accept queue, unanswered.
	cl := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := cl.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("a request past the limit of %d connections was answered", limit)
	}
	held[0].Close()
	cl.Timeout = 10 * time.Second
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("after a connection closed: %v, want an answer", err)
	}
	resp.Body.Close()
	held[1].Close()
}
