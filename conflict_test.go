// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// lostEvents records the session_lost events a keeper reports.
type lostEvents struct {
	mu   sync.Mutex
	list []event
}

func (l *lostEvents) observe(ev event) {
	if ev.Kind == eventSessionLost {
		l.mu.Lock()
		l.list = append(l.list, ev)
		l.mu.Unlock()
	}
}

func (l *lostEvents) shortLived() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, ev := range l.list {
		if ev.ShortLived {
			n++
		}
	}
	return n
}

func (l *lostEvents) last() event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.list[len(l.list)-1]
}

// outsideLogin logs the keeper's user in as another client would, which
// ends the keeper's session (one session per user).
func outsideLogin(t *testing.T, srv *httptest.Server, creds cc.Credentials) {
	t.Helper()
	if _, err := testClient(t, srv).Login(bg(), creds); err != nil {
		t.Fatal(err)
	}
}

// loseSession ends k's session from outside after it lived `lived` on the
// keeper's clock and returns what the keeper makes of the 401 that follows.
func loseSession(t *testing.T, srv *httptest.Server, k *keeper, clock *fakeClock, lived time.Duration) outcome {
	t.Helper()
	c, err := k.Get(bg())
	if err != nil {
		t.Fatalf("no session before the loss: %v", err)
	}
	clock.Advance(lived)
	outsideLogin(t, srv, userCreds())
	return k.Unauthorized(bg(), c)
}

func conflictKeeper(t *testing.T, clock *fakeClock) (*ccemu.Emulator, *httptest.Server, *keeper, *lostEvents) {
	t.Helper()
	emu, srv := emulator(t, ccemu.Config{})
	lost := new(lostEvents)
	k := testKeeper(t, srv, userCreds(), clock, func(s *settings) { s.Observer = lost.observe })
	eventually(t, 5*time.Second, "the login at start", func() bool { return k.Current() != nil })
	return emu, srv, k, lost
}

// The first two short-lived sessions are answered with a login at once; the
// third starts the wait (503 at once, Retry-After at least the window, state
// conflict), the wait ends in one login by itself, and the next short-lived
// session doubles it.
func TestConflictThirdShortLivedSessionStartsTheWait(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv, k, lost := conflictKeeper(t, clock)

	for i := 1; i <= 2; i++ {
		logins := emu.Counters().Logins
		out := loseSession(t, srv, k, clock, time.Second)
		if out.Verdict != verdictRetry {
			t.Fatalf("short-lived session %d: verdict %v (%v), want Retry with a new login", i, out.Verdict, out.Err)
		}
		if got := emu.Counters().Logins; got != logins+2 { // the outside one and ours
			t.Fatalf("short-lived session %d: %d logins, want 2", i, got-logins)
		}
		if ev := lost.last(); !ev.ShortLived || ev.Lived != time.Second || !ev.NextAttempt.IsZero() {
			t.Fatalf("session_lost %d: %+v", i, ev)
		}
	}

	logins := emu.Counters().LoginAttempts
	out := loseSession(t, srv, k, clock, 2*time.Second)
	var u *unavailableError
	if out.Verdict != verdictUnavailable || !errors.As(out.Err, &u) || !errors.Is(out.Err, errConflict) {
		t.Fatalf("third short-lived session: %+v, want Unavailable for a conflict", out)
	}
	if u.RetryAfter < ShortLivedWindow || u.RetryAfter > ShortLivedWindow*11/10 {
		t.Fatalf("first wait %s, want 1 min (+10%%)", u.RetryAfter)
	}
	if ev := lost.last(); !ev.ShortLived || ev.NextAttempt.Sub(clock.Now()) != u.RetryAfter {
		t.Fatalf("session_lost that starts the wait: %+v", ev)
	}
	st := k.Status()
	if st.State != StateConflict || !st.BackoffUntil.Equal(clock.Now().Add(u.RetryAfter)) {
		t.Fatalf("status %+v, want state conflict until the next attempt", st)
	}
	// Requests meanwhile: 503 at once, never a wait, never a login.
	start := time.Now()
	if _, err := k.Get(bg()); !errors.Is(err, errConflict) {
		t.Fatalf("Get in the wait: %v", err)
	}
	if time.Since(start) > time.Second || emu.Counters().LoginAttempts != logins+1 {
		t.Fatal("a request in the wait waited or logged in")
	}
	clock.Advance(u.RetryAfter - time.Millisecond)
	if emu.Counters().LoginAttempts != logins+1 {
		t.Fatal("a login before the wait was over")
	}
	clock.Advance(time.Millisecond)
	eventually(t, 5*time.Second, "the login at the end of the wait", func() bool { return k.Current() != nil })
	if got := emu.Counters().LoginAttempts; got != logins+2 {
		t.Fatalf("%d login attempts at the end of the wait, want 1", got-logins-1)
	}
	if st := k.Status(); st.State != StateReady {
		t.Fatalf("state %q after the wait, want ready", st.State)
	}

	// Still short-lived: the wait doubles.
	out = loseSession(t, srv, k, clock, time.Second)
	if !errors.As(out.Err, &u) || u.RetryAfter < 2*time.Minute || u.RetryAfter > 2*time.Minute*11/10 {
		t.Fatalf("fourth short-lived session: %+v, want a 2 min wait", out)
	}

	// An operator's relogin skips the wait, not the count: the next
	// short-lived session waits again, 4 min.
	if _, err := k.Relogin(bg()); err != nil {
		t.Fatalf("relogin in the wait: %v", err)
	}
	out = loseSession(t, srv, k, clock, time.Second)
	if !errors.As(out.Err, &u) || u.RetryAfter < 4*time.Minute || u.RetryAfter > 4*time.Minute*11/10 {
		t.Fatalf("after a relogin: %+v, want a 4 min wait", out)
	}

	// A session that lives the window resets the count: the next losses are
	// answered at once again, twice.
	clock.Advance(u.RetryAfter)
	eventually(t, 5*time.Second, "the login at the end of the wait", func() bool { return k.Current() != nil })
	for i, lived := range []time.Duration{ShortLivedWindow, time.Second, time.Second} {
		if out := loseSession(t, srv, k, clock, lived); out.Verdict != verdictRetry {
			t.Fatalf("loss %d after a session lived the window: %+v, want Retry", i+1, out)
		}
	}
}

// A session that lived its ordinary life (hours) is replaced at once, each
// time, and never counts.
func TestConflictLongLivedSessionsAreReplacedAtOnce(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	_, srv, k, lost := conflictKeeper(t, clock)
	for i := range 5 {
		if out := loseSession(t, srv, k, clock, 3*time.Hour); out.Verdict != verdictRetry {
			t.Fatalf("loss %d: %+v", i+1, out)
		}
	}
	if n := lost.shortLived(); n != 0 {
		t.Fatalf("%d short-lived sessions counted for sessions of 3 h", n)
	}
}

// What is never counted: a check that could not tell, a session replaced by
// an operator's relogin, a loss seen by a replaced keeper.
func TestConflictExclusions(t *testing.T) {
	t.Parallel()
	t.Run("a check that could not tell", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		emu, srv, k, lost := conflictKeeper(t, clock)
		loseSession(t, srv, k, clock, time.Second)
		c, _ := k.Get(bg())
		emu.FailNextRefreshes(1, 500)
		if out := k.Unauthorized(bg(), c); out.Verdict != verdictUnavailable || !errors.Is(out.Err, errUnverified) {
			t.Fatalf("a 500 on the check: %+v", out)
		}
		clock.Advance(aliveTrust)
		if out := loseSession(t, srv, k, clock, time.Second); out.Verdict != verdictRetry {
			t.Fatalf("the second short-lived session after an unverified check: %+v, want Retry", out)
		}
		if n := lost.shortLived(); n != 2 {
			t.Fatalf("%d short-lived sessions counted, want 2", n)
		}
	})
	t.Run("an operator's relogin", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		_, srv, k, lost := conflictKeeper(t, clock)
		for range 2 {
			loseSession(t, srv, k, clock, time.Second)
		}
		old := k.Current()
		clock.Advance(time.Second)
		if _, err := k.Relogin(bg()); err != nil {
			t.Fatal(err)
		}
		// The old session, ended by the relogin, comes back in a 401.
		if out := k.Unauthorized(bg(), old); out.Verdict != verdictRetryLate {
			t.Fatalf("a 401 for the session the relogin replaced: %+v", out)
		}
		if n := lost.shortLived(); n != 2 {
			t.Fatalf("%d short-lived sessions counted, want 2", n)
		}
	})
	t.Run("a replaced keeper", func(t *testing.T) {
		t.Parallel()
		clock := newFakeClock()
		_, srv, old, lost := conflictKeeper(t, clock)
		heir := testKeeper(t, srv, userCreds(), clock, nil) // its login at start ends old's session
		eventually(t, 5*time.Second, "the heir's login", func() bool { return heir.Current() != nil })
		old.Supersede(heir)
		clock.Advance(time.Second)
		old.renewTick() // its refresh finds the session dead, a second after its login
		if old.Current() != nil {
			t.Fatal("the replaced keeper's session is still current")
		}
		if len(lost.list) != 1 {
			t.Fatalf("%d session_lost events, want 1", len(lost.list))
		}
		if n := lost.shortLived(); n != 0 {
			t.Fatalf("a replaced keeper counted %d short-lived sessions", n)
		}
		if st := old.Status(); st.State == StateConflict {
			t.Fatal("a replaced keeper entered the conflict wait")
		}
	})
}

// Two keepers of one user that share nothing (two instances without
// storage) fight for a bounded number of logins: each answers its first two
// losses at once and then waits, so between them at most 6 logins (2 at
// start, 2 each after), and one holds the session.
func TestConflictTwoHoldersStopFighting(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{})
	a := testKeeper(t, srv, userCreds(), clock, nil)
	eventually(t, 5*time.Second, "a's login", func() bool { return a.Current() != nil })
	b := testKeeper(t, srv, userCreds(), clock, nil)
	eventually(t, 5*time.Second, "b's login", func() bool { return b.Current() != nil })
	for range 20 {
		clock.Advance(100 * time.Millisecond)
		for _, k := range []*keeper{a, b} {
			if c := k.Current(); c != nil && dataCall(t, srv, c) == http.StatusUnauthorized {
				k.Unauthorized(bg(), c)
			}
		}
	}
	if n := emu.Counters().LoginAttempts; n > 6 {
		t.Fatalf("%d login attempts, want at most 6", n)
	}
	states := map[string]int{a.Status().State: 1}
	states[b.Status().State]++
	if states[StateReady] != 1 || states[StateConflict] != 1 {
		t.Fatalf("states %v, want one ready and one in conflict", states)
	}
}

// In cluster mode the wait blocks logins, not adoption: a member in the wait
// adopts the session another member stored after its last loss, with no
// login of its own, at most one storage read a second.
func TestConflictClusterMemberAdoptsInTheWait(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{})
	clustered := clusteredOn(t.TempDir(), srv, false)
	k := testKeeper(t, srv, userCreds(), clock, clustered)
	eventually(t, 5*time.Second, "the login at start", func() bool { return k.Current() != nil })
	for range 3 {
		loseSession(t, srv, k, clock, time.Second)
	}
	if st := k.Status(); st.State != StateConflict {
		t.Fatalf("state %q after three short-lived sessions, want conflict", st.State)
	}
	other := testKeeper(t, srv, userCreds(), clock, clustered)
	eventually(t, 5*time.Second, "the other member's start", func() bool { return other.Current() != nil })
	clock.Advance(time.Second)
	if _, err := other.Relogin(bg()); err != nil { // it adopted the dead one at start
		t.Fatal(err)
	}
	logins := emu.Counters().LoginAttempts
	clock.Advance(ConflictPeekEvery)
	c, err := k.Get(bg())
	if err != nil || c.Token != other.Current().Token {
		t.Fatalf("the member in the wait did not adopt the stored session: %v", err)
	}
	if emu.Counters().LoginAttempts != logins {
		t.Fatal("adopting in the wait logged in")
	}
	if st := k.Status(); st.State != StateReady {
		t.Fatalf("state %q after adopting, want ready", st.State)
	}
	if got := dataCall(t, srv, c); got != http.StatusOK {
		t.Fatalf("the adopted session answered %d", got)
	}
}
