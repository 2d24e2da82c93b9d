package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/leasekeeper/leasekeeper/api/leasekeeper/v1"
	"github.com/leasekeeper/leasekeeper/client"
	"github.com/leasekeeper/leasekeeper/client/clienttest"
)

// BenchmarkCallsGet measures the client's side of a call on a Calls
// stream: one Get against an in-process fake node, serially and from many
// goroutines, with and without a deadline on the call's context.
func BenchmarkCallsGet(b *testing.B) {
	s := clienttest.Start(b)
	s.Put(&pb.Lease{Name: "x", HolderIdentity: "me", FencingToken: 1})
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{s.Addr}
	c, err := client.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// The first call dials (on the unary path); the next open the stream.
	for range 2 {
		if _, err := c.Get(context.Background(), "", "x", true); err != nil {
			b.Fatal(err)
		}
	}
	get := func(ctx context.Context) {
		if _, err := c.Get(ctx, "", "x", true); err != nil && !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			get(context.Background())
		}
	})
	b.Run("serial-deadline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			get(ctx)
			cancel()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				get(context.Background())
			}
		})
	})
	if n := s.Calls("Calls"); n != 1 {
		b.Errorf("%d Calls streams opened, want 1", n)
	}
}
