// Package clock is the time source of leasekeeper. Servers and clients take a
// Clock instead of calling time.Now, so tests can drive time by hand (Fake)
// and chaos runs can make a node's clock run fast or slow (Skewed).
//
// Every decision about lease validity uses durations measured on one Clock,
// never a comparison of two machines' wall clocks.
package clock

import "time"

// Clock tells the time and makes timers.
type Clock interface {
	// Now returns the current time. For the real clock it carries Go's
	// monotonic reading, so Sub and Since are immune to wall-clock steps.
	Now() time.Time
	// Since returns the time elapsed since t.
	Since(t time.Time) time.Duration
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
	// NewTimerAt returns a timer that fires once the clock reaches t. Unlike
	// NewTimer(t.Sub(Now())), it cannot fire late when the clock moves
	// between reading it and arming the timer (it matters for a Fake).
	NewTimerAt(t time.Time) Timer
	// After is NewTimer(d).C().
	After(d time.Duration) <-chan time.Time
}

// Timer is a one-shot timer, like *time.Timer.
type Timer interface {
	// C delivers the time when the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it was active.
	Stop() bool
	// Reset makes the timer fire after d; it reports whether it was active.
	Reset(d time.Duration) bool
}

// Real is the system clock.
type Real struct{}

// New returns the system clock.
func New() Clock { return Real{} }

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Since returns time.Since(t).
func (Real) Since(t time.Time) time.Duration { return time.Since(t) }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTimerAt fires when the monotonic clock reaches t (t should come from
// Now, so that it carries a monotonic reading).
func (Real) NewTimerAt(t time.Time) Timer { return realTimer{time.NewTimer(time.Until(t))} }

// After wraps time.After.
func (Real) After(d time.Duration) <-chan time.Time { return time.After(d) }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
