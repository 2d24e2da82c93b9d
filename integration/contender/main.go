// Command contender is a test program for the integration suite: it runs
// goroutines that each take one fenced Mutex in a loop, and writes one line
// per holding (token, start and end on this machine's clock) so the test
// can check order and mutual exclusion across processes.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/leasekeeper/leasekeeper/client"
)

func main() {
	endpoints := flag.String("endpoints", "", "cluster gRPC addresses")
	name := flag.String("lock", "contended", "lock name")
	workers := flag.Int("workers", 2, "contending goroutines")
	duration := flag.Duration("duration", 10*time.Second, "how long to contend")
	hold := flag.Duration("hold", 10*time.Millisecond, "how long each holding does its work")
	out := flag.String("out", "", "output file")
	flag.Parse()

	cfg := client.DefaultConfig()
	cfg.Endpoints = strings.Split(*endpoints, ",")
	c, err := client.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	var mu sync.Mutex

	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		m, err := client.NewMutex(c, *name, client.WithTTL(5*time.Second))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				h, err := m.Lock(ctx)
				if err != nil {
					continue
				}
				start := time.Now()
				time.Sleep(*hold) // the protected work
				end := time.Now()
				// A holding counts only while it was valid by the
				// holder's own deadline.
				valid := h.Valid()
				_ = m.Unlock(context.Background())
				mu.Lock()
				fmt.Fprintf(w, "%d %d %d %v\n", h.Token(), start.UnixNano(), end.UnixNano(), valid)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
