// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// With the shared storage down and a CC expiry meanwhile, each instance
// logs in alone (better a session of its own than none). Once the storage
// is back, the renewals bring them to one stored session, and each
// instance that adopts it logs out the session it obtained alone, once:
// one live session is left, not one per instance.
func TestClusterSoloSessionsReleasedAfterStorageOutage(t *testing.T) {
	t.Parallel()
	const n = 3
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	var down atomic.Bool
	ks := make([]*Keeper, n)
	for i := range ks {
		var calls atomic.Int32
		ks[i] = testKeeper(t, srv, userCreds(), clock, func(tu *Settings) {
			tu.Store = &guardedStore{SharedStore: loginClusterStore(&certmagic.FileStorage{Path: dir}, userCreds(), srv.URL, nil), closed: &down, calls: &calls}
			tu.LogoutOnStop, tu.RefreshInterval = false, time.Minute
		})
		if _, err := ks[i].Get(bg()); err != nil {
			t.Fatal(err)
		}
	}
	if c := emu.Counters(); c.Logins != 1 || c.LiveSessions != 1 {
		t.Fatalf("before the outage: %+v, want one shared session", c)
	}

	// The storage goes down and CC ends the session: a 401 on each
	// instance, each logs in alone.
	down.Store(true)
	emu.ExpireSessions()
	for _, k := range ks {
		if out := k.Unauthorized(bg(), k.Current()); out.Verdict != Retry {
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
	time.Sleep(100 * time.Millisecond) // a second logout would run in the background
	if c := emu.Counters(); c.LiveSessions != 1 || c.Logouts != n-1 || c.Logins != 1+n {
		t.Fatalf("after the outage: %+v; want 1 live session, %d logouts (each solo session once), no more logins", c, n-1)
	}
	if got := dataCall(t, srv, shared); got != 200 {
		t.Fatalf("the shared session: %d", got)
	}
}
