// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

func TestKeeperOneLoginForManyCallers(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(1, 200*time.Millisecond)
	k := testKeeper(t, srv, userCreds(), nil, nil)
	var wg sync.WaitGroup
	got := make([]*credential, 64)
	for i := range got {
		wg.Go(func() {
			s, err := k.Get(bg())
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		})
	}
	wg.Wait()
	for _, s := range got {
		if s != got[0] {
			t.Fatal("callers got different sessions")
		}
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins for 64 concurrent callers, want 1", n)
	}
}

// A keeper whose configuration has not started (caddy validate, a reload
// that fails) contacts nothing.
func TestKeeperNoLoginBeforeStart(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := newKeeper(newLoginSource(userCreds()), nil, false)
	t.Cleanup(func() { _ = k.Close() })
	var started atomic.Int32
	k.obtainHook = func(error) { started.Add(1) } // told before an obtain starts, in Attach's goroutine
	if _, err := k.Attach("test", testSettings(t, srv), nil); err != nil {
		t.Fatal(err)
	}
	if started.Load() != 0 || k.Current() != nil || emu.Counters().LoginAttempts != 0 || emu.Counters().DomainLookups != 0 {
		t.Fatal("the keeper contacted CC before its configuration started")
	}
}

func TestKeeperUnauthorized(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), nil, nil)
	s1, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}

	// The session is alive: the 401 is the endpoint's and no login follows,
	// however many requests see it.
	for range 10 {
		if out := k.Unauthorized(bg(), s1); out.Verdict != verdictPassThrough || out.Credential != nil || out.Err != nil {
			t.Fatalf("401 with a live session: %+v; want the 401 passed on", out)
		}
	}
	n := emu.Counters()
	if n.Logins != 1 || n.Refreshes != 1 {
		t.Fatalf("after 10 endpoint 401s: %d logins, %d refreshes; want 1 and 1 (one check, trusted for 5s)", n.Logins, n.Refreshes)
	}

	// The session is dead: one re-login. (A fresh keeper: the first one
	// trusts its alive answer for 5s.)
	k = testKeeper(t, srv, userCreds(), nil, nil)
	if s1, err = k.Get(bg()); err != nil {
		t.Fatal(err)
	}
	emu.ExpireSessions()
	var wg sync.WaitGroup
	retries := make([]*credential, 32)
	for i := range retries {
		wg.Go(func() {
			out := k.Unauthorized(bg(), s1)
			if out.Verdict != verdictRetry && out.Verdict != verdictRetryLate {
				t.Errorf("after an expiry: %+v, want a retry", out)
			}
			retries[i] = out.Credential
		})
	}
	wg.Wait()
	s2 := k.Current()
	for _, r := range retries {
		if r == nil || r != s2 || r == s1 {
			t.Fatal("a caller was not handed the new session")
		}
	}
	if n := emu.Counters().Logins; n != 3 {
		t.Fatalf("%d logins after an expiry seen by 32 callers, want 3 in all (2 keepers, 1 re-login)", n)
	}

	// A late 401 for the old token: retry with the current one, no login,
	// no refresh.
	before := emu.Counters()
	if out := k.Unauthorized(bg(), s1); out.Verdict != verdictRetryLate || out.Credential != s2 {
		t.Fatalf("late 401: %+v, want RetryLate with the current credential", out)
	}
	if after := emu.Counters(); after.LoginAttempts != before.LoginAttempts || after.Refreshes != before.Refreshes {
		t.Fatalf("a late 401 reached CC: before %+v after %+v", before, after)
	}
}

// The emulator and the keeper share one fake clock: hours of idling take no
// time, and the TTL boundary is exact.
func TestKeeperRefreshKeepsIdleSessionAlive(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{SessionTTL: 8 * time.Hour, Clock: clock})
	k := testKeeper(t, srv, userCreds(), clock, func(tu *settings) { tu.RefreshInterval = 5 * time.Minute })
	s, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	for range 24 * 12 { // a day idle, a refresh every 5 minutes
		clock.Advance(5 * time.Minute)
	}
	if got := dataCall(t, srv, s); got != 200 {
		t.Fatalf("bearer after a day idle past the 8h TTL: %d, want 200", got)
	}
	if n := emu.Counters(); n.Logins != 1 || n.RefreshesOK != 24*12 {
		t.Fatalf("emulator saw %+v; want 1 login and one refresh per 5 minutes (288)", n)
	}

	// Without refreshes, the same idle period kills the session: the check
	// above is not vacuous.
	clock2 := newFakeClock()
	emu2, srv2 := emulator(t, ccemu.Config{SessionTTL: 8 * time.Hour, Clock: clock2})
	k2 := testKeeper(t, srv2, userCreds(), clock2, func(tu *settings) { tu.RefreshInterval = 10 * time.Hour })
	s2, err := k2.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	clock2.Advance(8*time.Hour + time.Nanosecond)
	if got := dataCall(t, srv2, s2); got != 401 || emu2.Counters().Refreshes != 0 {
		t.Fatalf("without refresh the session should have expired: %d", got)
	}
}

func TestKeeperRefresh401LogsInAgainInBackground(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), nil, func(tu *settings) { tu.RefreshInterval = time.Second })
	s1, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	emu.ExpireSessions()
	eventually(t, 3*time.Second, "background re-login after a refresh 401", func() bool {
		cur := k.Current()
		return cur != nil && cur != s1
	})
	if n := emu.Counters().Logins; n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
	if got := dataCall(t, srv, k.Current()); got != 200 {
		t.Fatalf("new session's bearer: %d", got)
	}
}

func TestKeeperLoginTimeout(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(1, 20*time.Second)
	k := testKeeper(t, srv, userCreds(), nil, func(tu *settings) { tu.LoginTimeout = time.Second })
	start := time.Now()
	_, err := k.Get(bg())
	took := time.Since(start)
	var u *unavailableError
	if !errors.As(err, &u) {
		t.Fatalf("hung login: %v, want UnavailableError", err)
	}
	if took > 2*time.Second {
		t.Fatalf("a hung login held the caller %s, login_timeout is 1s", took)
	}
	if u.RetryAfter < 4*time.Second || u.RetryAfter > 6*time.Second {
		t.Fatalf("RetryAfter %s after a timeout, want the 5s transient backoff", u.RetryAfter)
	}
}

func TestKeeperCallerLeavingDoesNotCancelLogin(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(1, 300*time.Millisecond)
	k := testKeeper(t, srv, userCreds(), nil, nil)
	ctx, cancel := context.WithTimeout(bg(), 50*time.Millisecond)
	defer cancel()
	if _, err := k.Get(ctx); err == nil {
		t.Fatal("the caller that left got a session")
	}
	eventually(t, 2*time.Second, "the login to finish for the others", func() bool { return k.Current() != nil })
	if n := emu.Counters().Logins; n != 1 {
		t.Fatalf("%d logins", n)
	}
}

func TestKeeperCloseLogsOut(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), nil, nil)
	s, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if n := emu.Counters().Logouts; n != 1 {
		t.Fatalf("%d logouts on close, want 1", n)
	}
	if got := dataCall(t, srv, s); got != 401 {
		t.Fatalf("bearer after logout: %d", got)
	}
	if _, err := k.Get(bg()); !errors.Is(err, errClosed) {
		t.Fatalf("session after close: %v, want ErrClosed", err)
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("a login started after close: %d attempts", n)
	}
}

// The retry policy, driven through a fake clock: each step asserts the
// announced wait, that no login starts before it is over, and that the
// keeper tries again by itself once it is.
func TestKeeperRetrySchedules(t *testing.T) {
	t.Parallel()
	sec := time.Second
	for _, tc := range []struct {
		name   string
		creds  cc.Credentials
		inject func(*ccemu.Emulator)
		waits  []time.Duration
	}{
		{"5xx: 5s, 10s, 15s, then every 2 min", userCreds(),
			func(e *ccemu.Emulator) { e.FailNextLogins(6, 500, 0) },
			[]time.Duration{5 * sec, 10 * sec, 15 * sec, 120 * sec, 120 * sec, 120 * sec}},
		{"429: at least 5s each time", userCreds(),
			func(e *ccemu.Emulator) { e.FailNextLogins(3, 429, 0) },
			[]time.Duration{5 * sec, 5 * sec, 5 * sec}},
		{"429 with a longer Retry-After is honoured", userCreds(),
			func(e *ccemu.Emulator) { e.FailNextLogins(1, 429, 30*sec) },
			[]time.Duration{30 * sec}},
		{"wrong password: 1 min doubling to 10 min", cc.Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultUsername, Password: "wrong"},
			nil,
			[]time.Duration{60 * sec, 120 * sec, 240 * sec, 480 * sec, 600 * sec, 600 * sec}},
		{"blacklisted (451) backs off like a config error", userCreds(),
			func(e *ccemu.Emulator) { e.FailNextLogins(2, 451, 0) },
			[]time.Duration{60 * sec, 120 * sec}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			emu, srv := emulator(t, ccemu.Config{})
			if tc.inject != nil {
				tc.inject(emu)
			}
			clock := newFakeClock()
			k := testKeeper(t, srv, tc.creds, clock, nil)
			_, err := k.Get(bg())
			for i, want := range tc.waits {
				var u *unavailableError
				if !errors.As(err, &u) {
					t.Fatalf("failure %d: %v, want UnavailableError", i+1, err)
				}
				// The wait itself, with up to 10% jitter (Retry-After exact).
				if u.RetryAfter < want || u.RetryAfter > want+want/10 {
					t.Fatalf("failure %d: wait %s, want %s (+10%%)", i+1, u.RetryAfter, want)
				}
				attempts := emu.Counters().LoginAttempts
				clock.Advance(u.RetryAfter - time.Millisecond)
				if _, err := k.Get(bg()); err == nil || emu.Counters().LoginAttempts != attempts {
					t.Fatalf("failure %d: a login started before the wait was over", i+1)
				}
				clock.Advance(time.Millisecond) // the keeper retries by itself
				eventually(t, 2*time.Second, "the background retry", func() bool { return emu.Counters().LoginAttempts == attempts+1 })
				_, err = k.Get(bg())
			}
			if tc.creds.Password != "wrong" && err != nil {
				t.Fatalf("after the injected failures: %v", err)
			}
		})
	}
}

func TestRetryDelayJitterBounds(t *testing.T) {
	t.Parallel()
	seen := map[time.Duration]bool{}
	for range 200 {
		d := retryDelay(errors.New("connection refused"), failTransient, 1)
		if d < 5*time.Second || d > 5500*time.Millisecond {
			t.Fatalf("jittered delay %s outside [5s, 5.5s]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("only %d distinct delays in 200: no jitter", len(seen))
	}
}

// A periodic refresh says nothing about a 401 that comes later: the session
// may have died in between. Only a check made for a 401 is trusted.
func TestKeeperPeriodicRefreshDoesNotMaskExpiry(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), nil, func(tu *settings) { tu.RefreshInterval = time.Second })
	s1, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Second, "a periodic refresh", func() bool { return emu.Counters().RefreshesOK >= 1 })
	emu.ExpireSessions()
	if out := k.Unauthorized(bg(), s1); out.Verdict != verdictRetry || out.Credential == nil || out.Credential == s1 {
		t.Fatalf("401 right after a periodic refresh and an expiry: %+v; want a retry with a new credential", out)
	}
}
