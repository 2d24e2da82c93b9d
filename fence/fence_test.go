package fence_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/leasekeeper/leasekeeper/fence"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		resource string
		token    uint64
		wantErr  error
		highest  uint64
	}{
		{name: "first token", resource: "a", token: 5, highest: 5},
		{name: "equal token", resource: "a", token: 5, highest: 5},
		{name: "newer token", resource: "a", token: 7, highest: 7},
		{name: "older token", resource: "a", token: 6, wantErr: fence.ErrStale, highest: 7},
		{name: "other resource is separate", resource: "b", token: 1, highest: 1},
		{name: "zero token", resource: "b", token: 0, wantErr: fence.ErrNoToken, highest: 1},
	}
	g := fence.NewGuard()
	for _, tt := range tests {
		err := g.Check(tt.resource, tt.token)
		if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
			t.Errorf("%s: Check(%q, %d) = %v, want %v", tt.name, tt.resource, tt.token, err, tt.wantErr)
		}
		if got := g.Highest(tt.resource); got != tt.highest {
			t.Errorf("%s: Highest(%q) = %d, want %d", tt.name, tt.resource, got, tt.highest)
		}
	}
}

func TestStaleErrorNamesTokens(t *testing.T) {
	var g fence.Guard
	_ = g.Check("r", 9)
	err := g.Check("r", 3)
	var se *fence.StaleError
	if !errors.As(err, &se) || se.Token != 3 || se.Highest != 9 || se.Resource != "r" {
		t.Fatalf("Check = %#v, want StaleError{r, 3, 9}", err)
	}
}

// TestDoOrdersWrites runs writers with random tokens concurrently: the
// sequence of accepted writes must never go down.
func TestDoOrdersWrites(t *testing.T) {
	g := fence.NewGuard()
	var (
		mu      sync.Mutex
		written []uint64
		wg      sync.WaitGroup
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				tok := uint64((i*7+w*13)%50 + 1)
				_ = g.Do("r", tok, func() error {
					mu.Lock()
					written = append(written, tok)
					mu.Unlock()
					return nil
				})
			}
		}()
	}
	wg.Wait()
	for i := 1; i < len(written); i++ {
		if written[i] < written[i-1] {
			t.Fatalf("write %d has token %d after %d", i, written[i], written[i-1])
		}
	}
	if len(written) == 0 {
		t.Fatal("no write accepted")
	}
}

func TestDoKeepsTokenWhenWriteFails(t *testing.T) {
	g := fence.NewGuard()
	boom := errors.New("disk full")
	if err := g.Do("r", 4, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do = %v, want %v", err, boom)
	}
	if err := g.Check("r", 3); !errors.Is(err, fence.ErrStale) {
		t.Fatalf("Check(3) after a failed write with 4 = %v, want ErrStale", err)
	}
}

func ExampleGuard() {
	g := fence.NewGuard()
	fmt.Println(g.Check("orders", 7)) // holder with token 7 writes
	fmt.Println(g.Check("orders", 8)) // a newer holder writes
	fmt.Println(g.Check("orders", 7)) // the old holder wakes from a pause
	// Output:
	// <nil>
	// <nil>
	// fence: stale fencing token: "orders" got token 7, already accepted 8
}
