package leasing

import (
	"reflect"
	"testing"
	"time"
)

// delayOf is the lock delay that the expiry of a's holding begins.
func delayOf(a Holding, d time.Duration) Holding {
	return Holding{Key: a.Key, Token: a.Token, TTL: d, Delay: true}
}

// TestLockDelayEndsAfterItsDeadline: an expiry that began a lock delay is
// followed, strictly after the delay on the leader's clock, by a proposal
// to end it; a waiter joining meanwhile does not move its end, and the
// leader proposes nothing before it.
func TestLockDelayEndsAfterItsDeadline(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	a := Holding{Key: key("a"), Token: 7, RenewIndex: 3, TTL: time.Second}
	d := delayOf(a, 5*time.Second)
	h.promote(a)
	h.advance(time.Second + time.Nanosecond)
	c := h.expectCall()
	// The FSM applies the Expire: the holding ends and the delay begins,
	// in the same applied batch.
	h.m.Ended(a.Key)
	h.m.Delayed(Holding{Key: a.Key, Token: a.Token, TTL: 5 * time.Second})
	c.reply <- nil
	h.expectQuiet()
	h.wantLen(1)
	h.wantRemaining(a.Key, 5*time.Second, true)

	h.advance(3 * time.Second)
	h.m.Delayed(d) // a waiter joined the delayed lease
	h.wantRemaining(a.Key, 2*time.Second, true)
	h.advance(2 * time.Second) // at the delay's end: not yet past it
	h.expectQuiet()
	h.advance(time.Nanosecond)
	c = h.expectCall()
	if !reflect.DeepEqual(c.holdings, []Holding{d}) || c.term != testTerm {
		t.Fatalf("proposal %+v in term %d, want %+v in %d", c.holdings, c.term, []Holding{d}, testTerm)
	}
	// A renewal cannot touch a delay.
	if h.m.Extend(a) {
		t.Fatal("Extend of the expired holding succeeded during its delay")
	}
	h.applyExpire(c) // the EndDelay applied: the FSM reports the lease free
	h.expectQuiet()
	h.wantLen(0)
}

// TestPromoteRestartsLockDelay: a new leader gives every delay it tracked
// as a follower a fresh full length from its promotion, and so does a
// leader promoted again: a leader change lengthens a delay, never
// shortens it.
func TestPromoteRestartsLockDelay(t *testing.T) {
	for _, tt := range []struct {
		name     string
		follower bool // tracked while demoted, or began while promoted
	}{
		{"tracked as a follower", true},
		{"while promoted", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, DefaultConfig())
			d := Holding{Key: key("a"), Token: 9, TTL: 4 * time.Second, Delay: true}
			if !tt.follower {
				h.promote()
			}
			h.m.Delayed(d)
			h.advance(3 * time.Second)
			if !tt.follower {
				h.m.Demote()
			}
			h.advance(2 * time.Second) // past the delay as the old leader counted it
			h.m.Promote(testTerm+1, nil)
			h.wantRemaining(d.Key, 4*time.Second, true)
			h.advance(4 * time.Second)
			h.expectQuiet()
			h.advance(time.Nanosecond)
			c := h.expectCall()
			if !reflect.DeepEqual(c.holdings, []Holding{d}) || c.term != testTerm+1 {
				t.Fatalf("proposal %+v in term %d, want %+v in %d", c.holdings, c.term, []Holding{d}, testTerm+1)
			}
			h.applyExpire(c)
			h.expectQuiet()
		})
	}
}

// TestFailedEndDelayRetried: an EndDelay that failed (it may still commit:
// ending a delay late is safe) is proposed again after RetryInterval, and
// a delay that the FSM ended meanwhile is not.
func TestFailedEndDelayRetried(t *testing.T) {
	h := newHarness(t, DefaultConfig())
	retry := h.m.cfg.RetryInterval
	d := Holding{Key: key("a"), Token: 2, TTL: time.Second, Delay: true}
	h.promote(d)
	h.advance(time.Second + time.Nanosecond)
	c := h.expectCall()
	c.reply <- errBoom
	h.expectQuiet()
	h.wantRemaining(d.Key, retry, true)
	h.advance(retry + time.Nanosecond)
	c = h.expectCall()
	if !reflect.DeepEqual(c.holdings, []Holding{d}) {
		t.Fatalf("retry proposed %+v, want %+v", c.holdings, []Holding{d})
	}
	// The first proposal committed after all: the delay ended, and the
	// lease went to a waiter, whose holding the manager now tracks.
	w := Holding{Key: key("a"), Token: 3, RenewIndex: 20, TTL: 2 * time.Second}
	h.m.Ended(d.Key)
	h.m.Held(w)
	c.reply <- nil
	h.expectQuiet()
	h.wantLen(1)
	h.wantRemaining(w.Key, 2*time.Second, true)
}
