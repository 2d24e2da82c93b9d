package leasing

import (
	"errors"
	"math"
	"time"
)

// Config tunes the expiry loop. Build it from DefaultConfig: a zero field is
// invalid rather than silently defaulted, so a typo in wiring shows up in New.
type Config struct {
	// ExpiryBatchSize caps the holdings in one Expire proposal, so a mass
	// expiry (say, after a partition healed) does not become one huge Raft
	// entry.
	ExpiryBatchSize int
	// MaxExpiryRate caps the holdings expired per second, 0 meaning no cap.
	// It spreads a mass expiry over time so that renewals, which share the
	// Raft log with expiries, keep getting through.
	MaxExpiryRate float64
	// RetryInterval is how long a holding waits before it is proposed again
	// after a failed proposal; it keeps a leader that cannot commit from
	// spinning.
	RetryInterval time.Duration
	// ProposeTimeout bounds each proposal, so one stuck proposal cannot stall
	// every later expiry.
	ProposeTimeout time.Duration

	// UnsafeIgnoreDoubt breaks a safety rule on purpose: Extend renews a
	// holding without the log even while an Expire of it that was given up
	// on may still commit, so that Expire can end a holding whose renewal
	// was just acknowledged. Only the chaos suite's negative control sets
	// it (lease-node --unsafe-test-fault ignore-expire-doubt); never in
	// production.
	UnsafeIgnoreDoubt bool
}

// DefaultConfig returns the settings leasekeeper runs with.
func DefaultConfig() Config {
	return Config{
		ExpiryBatchSize: 5000,
		MaxExpiryRate:   0,
		RetryInterval:   250 * time.Millisecond,
		ProposeTimeout:  5 * time.Second,
	}
}

// Validate reports the first invalid field, naming it.
func (c Config) Validate() error {
	switch {
	case c.ExpiryBatchSize <= 0:
		return errors.New("leasing: ExpiryBatchSize must be > 0")
	case math.IsNaN(c.MaxExpiryRate) || math.IsInf(c.MaxExpiryRate, 0) || c.MaxExpiryRate < 0:
		return errors.New("leasing: MaxExpiryRate must be >= 0 and finite (0 = unlimited)")
	case c.RetryInterval <= 0:
		return errors.New("leasing: RetryInterval must be > 0")
	case c.ProposeTimeout <= 0:
		return errors.New("leasing: ProposeTimeout must be > 0")
	}
	return nil
}
