// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// While the Login Service fails the verifying refresh and the session is
// dead, 401s arrive in waves: a failed check is remembered like one that
// found the session alive, so there is at most one per aliveTrust, and
// the clients meanwhile are told to come back (503 with Retry-After), not
// handed a 401 they cannot act on. Once the Login Service answers again,
// the next check finds the session gone and one re-login serves everyone.
func TestKeeperFailedCheckIsRememberedForAliveTrust(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, k, s1 := loggedInKeeper(t, clock)
	emu.ExpireSessions()
	emu.FailNextRefreshes(1000, 503)

	const waves, clients = 12, 4 // a wave every 500ms for 6s
	for w := range waves {
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				out := k.Unauthorized(bg(), s1)
				var u *unavailableError
				if out.Verdict != verdictUnavailable || !errors.As(out.Err, &u) || !errors.Is(out.Err, errUnverified) {
					t.Errorf("wave %d: %+v while the check cannot tell; want Unavailable for ErrUnverified", w, out)
					return
				}
				if u.RetryAfter < time.Second || u.RetryAfter > aliveTrust {
					t.Errorf("wave %d: Retry-After %s, want 1s to %s (until the next check)", w, u.RetryAfter, aliveTrust)
				}
			})
		}
		wg.Wait()
		clock.Advance(500 * time.Millisecond)
	}
	// 6s of fake time: checks at 0s and 5s.
	if n := emu.Counters().Refreshes; n > 2 {
		t.Fatalf("%d refresh calls for %d waves of %d 401s over %s while refresh fails; want at most one per %s",
			n, waves, clients, time.Duration(waves)*500*time.Millisecond, aliveTrust)
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins while the check could not tell, want only the first", n)
	}

	// The Login Service is back: the next check after the window finds
	// the session gone; one re-login, and the request is retried.
	emu.FailNextRefreshes(0, 0)
	clock.Advance(aliveTrust)
	before := emu.Counters().Refreshes
	out := k.Unauthorized(bg(), s1)
	if out.Verdict != verdictRetry || out.Credential == nil || out.Credential == s1 {
		t.Fatalf("after the Login Service came back: %+v, want a retry with a new credential", out)
	}
	if n := emu.Counters(); n.Refreshes != before+1 || n.Logins != 2 {
		t.Fatalf("recovery took %d refreshes and %d logins in all, want 1 more refresh and 2 logins", n.Refreshes-before, n.Logins)
	}
}

// A check that found the session alive is still trusted as before: the
// endpoint's own 401 passes through, one check per aliveTrust.
func TestKeeperAliveCheckStillPassesThrough(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, k, s1 := loggedInKeeper(t, clock)
	for range 12 {
		if out := k.Unauthorized(bg(), s1); out.Verdict != verdictPassThrough {
			t.Fatalf("401 with a live session: %+v, want PassThrough", out)
		}
		clock.Advance(500 * time.Millisecond)
	}
	if n := emu.Counters().Refreshes; n != 2 {
		t.Fatalf("%d refreshes in 6s of endpoint 401s, want 2 (one per %s)", n, aliveTrust)
	}
}

// The same on the real clock, as the issue measured it: 4 clients that
// send again as soon as they are answered, for 5s, against a Login
// Service that answers refresh with 503.
func TestKeeperFailedCheckRefreshCallsIn5s(t *testing.T) {
	t.Parallel()
	emu, k, s1 := loggedInKeeper(t, nil)
	emu.ExpireSessions()
	emu.FailNextRefreshes(1<<30, 503)
	var wg sync.WaitGroup
	stop := time.Now().Add(5 * time.Second)
	var answers [4]int
	for i := range answers {
		wg.Go(func() {
			pace := time.NewTicker(time.Millisecond) // callers spread over the 5 s the checks are counted in
			defer pace.Stop()
			for ; time.Now().Before(stop); <-pace.C {
				k.Unauthorized(bg(), s1)
				answers[i]++
			}
		})
	}
	wg.Wait()
	n := emu.Counters().Refreshes
	t.Logf("%d refresh calls in 5s for %v 401s from 4 clients", n, answers)
	if n > 2 {
		t.Fatalf("%d refresh calls in 5s, want at most 2 (one per %s, the window may end once in 5s)", n, aliveTrust)
	}
}

// loggedInKeeper is a keeper on clock (nil: the real one) that has logged
// in to a fresh emulator.
func loggedInKeeper(t *testing.T, clock cc.Clock) (*ccemu.Emulator, *keeper, *credential) {
	t.Helper()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), clock, nil)
	c, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	return emu, k, c
}
