// Package fence protects a resource with fencing tokens.
//
// A lock holder can be paused (GC, SIGSTOP, a slow disk) past the end of its
// holding without noticing, and then write as if it still held the lock. A
// fenced resource closes that gap: every write carries the holding's fencing
// token, and the resource refuses a token lower than the highest it has
// seen. leasekeeper tokens rise strictly with every new holding, so a
// paused old holder is refused as soon as a newer holder has written once.
//
// Guard is the bookkeeping for such a resource: it remembers the highest
// token per resource name. Equal tokens are accepted (one holding writes
// many times); older ones are refused with an error matching ErrStale.
package fence

import (
	"errors"
	"fmt"
	"sync"
)

// Errors of Guard.
var (
	// ErrStale means a token is lower than one the resource has accepted.
	ErrStale = errors.New("fence: stale fencing token")
	// ErrNoToken means the token is 0, which no holding ever has.
	ErrNoToken = errors.New("fence: missing fencing token")
)

// StaleError is the error of a refused token. It matches ErrStale.
type StaleError struct {
	Resource string
	Token    uint64 // the refused token
	Highest  uint64 // the highest token accepted for Resource
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%v: %q got token %d, already accepted %d", ErrStale, e.Resource, e.Token, e.Highest)
}

// Is makes errors.Is(err, ErrStale) true.
func (e *StaleError) Is(target error) bool { return target == ErrStale }

// Guard remembers the highest fencing token accepted per resource. It is
// safe for concurrent use. The zero Guard is ready to use.
type Guard struct {
	mu      sync.Mutex
	highest map[string]uint64
}

// NewGuard returns an empty Guard.
func NewGuard() *Guard { return &Guard{} }

// Check accepts token for resource if it is at least the highest accepted
// so far, and records it; it returns a *StaleError otherwise.
//
// Check alone leaves a gap between the check and the write it guards: a
// newer holder could check and write in between. Use Do when the write must
// be ordered with the check.
func (g *Guard) Check(resource string, token uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.checkLocked(resource, token)
}

func (g *Guard) checkLocked(resource string, token uint64) error {
	if token == 0 {
		return ErrNoToken
	}
	if g.highest == nil {
		g.highest = make(map[string]uint64)
	}
	if h := g.highest[resource]; token < h {
		return &StaleError{Resource: resource, Token: token, Highest: h}
	}
	g.highest[resource] = token
	return nil
}

// Do runs write if token is accepted for resource, holding the guard while
// it runs, so that no other token can be checked between the check and the
// write. If write fails the token stays recorded: a holding that was
// accepted once keeps older ones out. Do must not be called from write.
func (g *Guard) Do(resource string, token uint64, write func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.checkLocked(resource, token); err != nil {
		return err
	}
	return write()
}

// Highest returns the highest token accepted for resource, 0 if none.
func (g *Guard) Highest(resource string) uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.highest[resource]
}
