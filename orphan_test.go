// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// With the shared storage down and a CC expiry meanwhile, each instance
// logs in alone (better a session of its own than none). Once the storage
// is back, the renewals bring them to one stored session, and each
// instance that adopts it logs out the session it obtained alone, once:
// one live session is left, not one per instance.
//
// The emulator lets a user hold several sessions here: under CC's rule
// each solo login ends the one before, and no solo session would be left
// alive for the release to matter (that case is the next test).
func TestClusterSoloSessionsReleasedAfterStorageOutage(t *testing.T) {
	t.Parallel()
	const n = 3
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{MultipleSessions: true})
	var down atomic.Bool
	ks := outageKeepers(t, srv, clock, &down, n)
	if c := emu.Counters(); c.Logins != 1 || c.LiveSessions != 1 {
		t.Fatalf("before the outage: %+v, want one shared session", c)
	}

	// The storage goes down and CC ends the session: a 401 on each
	// instance, each logs in alone.
	down.Store(true)
	emu.ExpireSessions()
	for _, k := range ks {
		if out := k.Unauthorized(bg(), k.Current()); out.Verdict != verdictRetry {
			t.Fatalf("401 after an expiry with the storage down: %+v, want a retry with a session of its own", out)
		}
	}
	if c := emu.Counters(); c.Logins != 1+n || c.LiveSessions != n {
		t.Fatalf("during the outage: %+v, want %d solo sessions", c, n)
	}

	// The storage is back: the next renewals agree on one session.
	down.Store(false)
	for range 3 {
		clock.Advance(time.Minute)
	}
	shared := ks[0].Current()
	for i, k := range ks {
		if c := k.Current(); c == nil || c.Token != shared.Token {
			t.Fatalf("instance %d does not hold the shared session after the outage", i)
		}
	}
	eventually(t, 5*time.Second, "the solo sessions to be logged out", func() bool {
		c := emu.Counters()
		return c.LiveSessions == 1 && c.Logouts == n-1
	})
	for range 3 {
		clock.Advance(time.Minute)
	}
	for _, k := range ks {
		k.releases.Wait() // a second logout would run in the background
	}
	if c := emu.Counters(); c.LiveSessions != 1 || c.Logouts != n-1 || c.Logins != 1+n {
		t.Fatalf("after the outage: %+v; want 1 live session, %d logouts (each solo session once), no more logins", c, n-1)
	}
	if got := dataCall(t, srv, shared); got != 200 {
		t.Fatalf("the shared session: %d", got)
	}
}

// Under CC's rule (one session per user), the solo logins of a storage
// outage end each other's sessions: one is left alive. When the storage is
// back that one is stored and adopted by every instance, rather than the
// stored session from before the outage (dead) being adopted and the live
// one logged out; at most one more login, and every instance is served.
func TestClusterLiveSoloSessionIsStoredAfterStorageOutage(t *testing.T) {
	t.Parallel()
	const n = 3
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{})
	var down atomic.Bool
	ks := outageKeepers(t, srv, clock, &down, n)
	down.Store(true)
	emu.ExpireSessions()
	for _, k := range ks {
		if out := k.Unauthorized(bg(), k.Current()); out.Verdict != verdictRetry {
			t.Fatalf("401 after an expiry with the storage down: %+v, want a retry with a session of its own", out)
		}
	}
	live := ks[n-1].Current()
	if c := emu.Counters(); c.Logins != 1+n || c.LiveSessions != 1 || dataCall(t, srv, live) != 200 {
		t.Fatalf("during the outage: %+v, want %d logins and the last one's session alive", c, 1+n)
	}

	down.Store(false)
	for range 3 {
		clock.Advance(time.Minute)
	}
	var shared *credential
	eventually(t, 5*time.Second, "every instance to hold one session", func() bool { // a re-login runs in the background
		shared = ks[0].Current()
		for _, k := range ks {
			if c := k.Current(); c == nil || shared == nil || c.Token != shared.Token {
				return false
			}
		}
		return true
	})
	if got := dataCall(t, srv, shared); got != 200 {
		t.Fatalf("the shared session: %d", got)
	}
	if c := emu.Counters(); c.Logins > 2+n || c.LiveSessions != 1 {
		t.Fatalf("after the outage: %+v; want 1 live session and at most one more login", c)
	}
}

// outageKeepers are n logged-in keepers of one cluster on file storage,
// refreshing every minute of clock, whose storage fails while down is set.
func outageKeepers(t *testing.T, srv *httptest.Server, clock cc.Clock, down *atomic.Bool, n int) []*keeper {
	t.Helper()
	dir := t.TempDir()
	ks := make([]*keeper, n)
	for i := range ks {
		var calls atomic.Int32
		ks[i] = testKeeper(t, srv, userCreds(), clock, func(tu *settings) {
			tu.Store = &guardedStore{sharedStore: loginClusterStore(&certmagic.FileStorage{Path: dir}, userCreds(), srv.URL, nil), closed: down, calls: &calls}
			tu.LogoutOnStop, tu.RefreshInterval = false, time.Minute
		})
		if _, err := ks[i].Get(bg()); err != nil {
			t.Fatal(err)
		}
	}
	return ks
}
