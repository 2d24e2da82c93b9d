package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/leasekeeper/leasekeeper/clock"
	"github.com/leasekeeper/leasekeeper/fsm/fsmpb"
	"github.com/leasekeeper/leasekeeper/node/nodetest"
)

// A node closed while proposals keep arriving must still close: an entry
// handed to Raft after its shutdown would never be answered, and the close
// would wait for it forever.
func TestCloseUnderProposals(t *testing.T) {
	for round := range 10 {
		c := nodetest.New(t, 1, clock.New(), nodetest.Options{})
		leader := c.Leader(10 * time.Second)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					_, _ = leader.Propose(ctx, &fsmpb.Command{Op: &fsmpb.Command_Acquire{Acquire: &fsmpb.Acquire{
						Namespace: "default", Name: fmt.Sprintf("l-%d-%d", g, i), Holder: "h", DurationNs: int64(time.Minute),
					}}})
				}
			})
		}
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_ = leader.Close()
		}()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: Close did not return within 20s while proposals arrived", round)
		}
		cancel()
		wg.Wait()
		c.Stop()
	}
}
