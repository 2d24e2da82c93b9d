package clock

import (
	"testing"
	"time"
)

func TestFakeTimersFireInOrderOnAdvance(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimerAt(time.Unix(1, 0))
	f.Advance(999 * time.Millisecond)
	select {
	case <-a.C():
		t.Fatal("2s timer fired at 999ms")
	case <-b.C():
		t.Fatal("1s timer fired at 999ms")
	default:
	}
	f.Advance(time.Millisecond)
	if got := <-b.C(); !got.Equal(time.Unix(1, 0)) {
		t.Fatalf("1s timer fired at %v", got)
	}
	if a.Stop() != true || f.Timers() != 0 {
		t.Fatalf("stop of a pending timer: timers left %d", f.Timers())
	}
	f.Advance(time.Hour)
	select {
	case <-a.C():
		t.Fatal("stopped timer fired")
	default:
	}
}

func TestFakeTimerAtIsNotLateAfterAnAdvance(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	target := f.Now().Add(time.Second)
	f.Advance(900 * time.Millisecond) // the clock moves before the timer is armed
	tm := f.NewTimerAt(target)
	f.Advance(100 * time.Millisecond)
	select {
	case <-tm.C():
	default:
		t.Fatal("timer armed for an instant did not fire at that instant")
	}
	past := f.NewTimerAt(time.Unix(0, 0))
	select {
	case <-past.C():
	default:
		t.Fatal("timer for a past instant did not fire at once")
	}
}

func TestSkewedRunsAtRate(t *testing.T) {
	base := NewFake(time.Unix(100, 0))
	s, err := NewSkewed(base, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	start := s.Now()
	base.Advance(2 * time.Second)
	if got := s.Since(start); got != 3*time.Second {
		t.Fatalf("skewed elapsed %v, want 3s", got)
	}
	tm := s.NewTimer(3 * time.Second) // 2s of base time
	base.Advance(1999 * time.Millisecond)
	select {
	case <-tm.C():
		t.Fatal("skewed timer fired early")
	default:
	}
	base.Advance(time.Millisecond)
	select {
	case <-tm.C():
	default:
		t.Fatal("skewed timer did not fire")
	}
	for _, bad := range []float64{0, -1, 101} {
		if _, err := NewSkewed(base, bad); err == nil {
			t.Errorf("rate %v accepted", bad)
		}
	}
}
