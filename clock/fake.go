package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when told to. Timers fire inside Advance,
// in deadline order, so a test decides exactly when a deadline passes.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{} // closed and replaced whenever timers change
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since returns the fake time elapsed since t.
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// NewTimer returns a timer that fires when the fake time reaches now+d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	f.arm(t, d)
	return t
}

// NewTimerAt returns a timer that fires when the fake time reaches t.
func (f *Fake) NewTimerAt(t time.Time) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	f.arm(ft, t.Sub(f.now))
	return ft
}

// After is NewTimer(d).C().
func (f *Fake) After(d time.Duration) <-chan time.Time { return f.NewTimer(d).C() }

// Advance moves the fake time forward by d and fires every timer whose
// deadline is reached, earliest first.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.now.Add(d)
	for {
		sort.Slice(f.timers, func(i, j int) bool { return f.timers[i].when.Before(f.timers[j].when) })
		if len(f.timers) == 0 || f.timers[0].when.After(end) {
			break
		}
		t := f.timers[0]
		f.timers = f.timers[1:]
		t.active = false
		if t.when.After(f.now) {
			f.now = t.when
		}
		select {
		case t.c <- f.now:
		default:
		}
	}
	f.now = end
	f.notify()
}

// Set moves the fake time to t (forward only) and fires what is due.
func (f *Fake) Set(t time.Time) {
	if d := t.Sub(f.Now()); d > 0 {
		f.Advance(d)
	}
}

// Timers returns how many timers are waiting to fire.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitForTimers returns a channel that is closed once at least n timers are
// waiting, so a test can advance time only after the code under test has
// armed its timer. The done channel abandons the wait.
func (f *Fake) WaitForTimers(n int, done <-chan struct{}) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		defer close(out)
		for {
			f.mu.Lock()
			ok, ch := len(f.timers) >= n, f.changed
			f.mu.Unlock()
			if ok {
				return
			}
			select {
			case <-ch:
			case <-done:
				return
			}
		}
	}()
	return out
}

func (f *Fake) arm(t *fakeTimer, d time.Duration) {
	if d < 0 {
		d = 0
	}
	t.when = f.now.Add(d)
	if d == 0 {
		select {
		case t.c <- f.now:
		default:
		}
		return
	}
	t.active = true
	f.timers = append(f.timers, t)
	f.notify()
}

func (f *Fake) remove(t *fakeTimer) bool {
	if !t.active {
		return false
	}
	t.active = false
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			break
		}
	}
	f.notify()
	return true
}

func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

type fakeTimer struct {
	f      *Fake
	c      chan time.Time
	when   time.Time
	active bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	return t.f.remove(t)
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.f.remove(t)
	t.f.arm(t, d)
	return was
}
