package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

// This example takes a lease, uses its fencing token and releases it. It
// needs a running cluster, so it is compiled but not run.
func ExampleClient_Acquire() {
	cfg := client.DefaultConfig()
	cfg.Endpoints = []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}
	c, err := client.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Acquire(ctx, "default", "db-primary", "worker-1", 10*time.Second, 2*time.Second, nil)
	if err != nil {
		log.Fatal(err)
	}
	if !resp.Acquired {
		fmt.Printf("held by %s for up to %v\n", resp.Lease.HolderIdentity, resp.Remaining.AsDuration())
		return
	}
	token := resp.Lease.FencingToken
	fmt.Println("writing with fencing token", token)

	if _, err := c.Release(ctx, "default", "db-primary", "worker-1", token); errors.Is(err, client.ErrStaleToken) {
		fmt.Println("the holding was lost before the release")
	}
}
