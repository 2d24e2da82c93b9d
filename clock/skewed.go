package clock

import (
	"fmt"
	"time"
)

// Skewed is a Clock whose time runs at rate times the speed of the base
// clock, from the moment it was made: rate 1.01 runs 1% fast. Chaos runs use
// it to check that leasekeeper stays safe within its documented drift bound
// (and, as a negative control, that it breaks beyond it).
type Skewed struct {
	base  Clock
	start time.Time
	rate  float64
}

// NewSkewed returns a clock running at rate times base's speed.
func NewSkewed(base Clock, rate float64) (*Skewed, error) {
	if !(rate > 0) || rate > 100 {
		return nil, fmt.Errorf("clock: skew rate %v out of range (0, 100]", rate)
	}
	return &Skewed{base: base, start: base.Now(), rate: rate}, nil
}

// Now returns start + elapsed*rate. The monotonic reading of the base is
// kept, shifted by the skew, so Sub and Since stay monotonic.
func (s *Skewed) Now() time.Time {
	elapsed := s.base.Since(s.start)
	return s.start.Add(s.scale(elapsed))
}

// Since returns the skewed time elapsed since t.
func (s *Skewed) Since(t time.Time) time.Duration { return s.Now().Sub(t) }

// NewTimer fires after d of skewed time: d/rate of base time.
func (s *Skewed) NewTimer(d time.Duration) Timer {
	return skewedTimer{s: s, t: s.base.NewTimer(s.unscale(d))}
}

// NewTimerAt fires when the skewed clock reaches t.
func (s *Skewed) NewTimerAt(t time.Time) Timer { return s.NewTimer(t.Sub(s.Now())) }

// After is NewTimer(d).C().
func (s *Skewed) After(d time.Duration) <-chan time.Time { return s.NewTimer(d).C() }

func (s *Skewed) scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.rate)
}

func (s *Skewed) unscale(d time.Duration) time.Duration {
	return time.Duration(float64(d) / s.rate)
}

type skewedTimer struct {
	s *Skewed
	t Timer
}

func (t skewedTimer) C() <-chan time.Time        { return t.t.C() }
func (t skewedTimer) Stop() bool                 { return t.t.Stop() }
func (t skewedTimer) Reset(d time.Duration) bool { return t.t.Reset(t.s.unscale(d)) }
