package transport

import (
	"errors"
	"testing"
)

// TestNoConnAfterClose: a call still running when the server closes (a
// forward, a confirmation round) gets no new connection to another node,
// so none outlives Close.
func TestNoConnAfterClose(t *testing.T) {
	s, err := New(DefaultConfig(), nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.conn("127.0.0.1:1"); err != nil {
		t.Fatalf("before Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.conn("127.0.0.1:2"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: got %v, want ErrClosed", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) != 0 {
		t.Fatalf("%d connections kept after Close", len(s.conns))
	}
}
