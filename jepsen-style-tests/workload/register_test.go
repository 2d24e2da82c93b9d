package workload

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/checker"
	"github.com/leasekeeper/leasekeeper/jepsen-style-tests/history"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRegisterGuards feeds a register the writes of a holder that lost its
// lock and kept writing: the monotonic guard refuses the stale ones and the
// fenced-register checker passes; the broken guard takes them and the
// checker fails.
func TestRegisterGuards(t *testing.T) {
	tests := []struct {
		guard string
		valid bool
	}{
		{"monotonic", true},
		{"broken", false},
	}
	for _, tt := range tests {
		t.Run(tt.guard, func(t *testing.T) {
			rec := history.NewRecorder()
			r := NewRegister("mutex-0", NewGuard(tt.guard), rec)
			r.Write(0, "a", 3, "a1", false)
			r.Write(1, "b", 5, "b1", false) // b took the lock over
			stale := r.Write(0, "a", 3, "a2", true)
			if stale != !tt.valid {
				t.Errorf("stale write accepted = %v, want %v", stale, !tt.valid)
			}
			h := rec.History(history.Meta{})
			if got := checker.FencedRegister(h); got.Valid != tt.valid {
				t.Errorf("fenced-register valid = %v, want %v: %s", got.Valid, tt.valid, got.Summary)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"default with endpoints", func(c *Config) {}, true},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, false},
		{"more mutex clients than clients", func(c *Config) { c.MutexClients = 11 }, false},
		{"drift out of range", func(c *Config) { c.MaxDrift = 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Endpoints = []string{"127.0.0.1:1"}
			tt.edit(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}
