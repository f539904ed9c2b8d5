// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// A configuration that is attached but never starts (a failed reload)
// changes nothing; one that starts applies from its start; one whose
// context is done stops applying at once, before it is detached.
func TestKeeperSettingsApplyFromStart(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	clock := newFakeClock()
	k := newKeeper(newLoginSource(userCreds()), clock, false)
	t.Cleanup(func() { _ = k.Close() })
	var eventsA, eventsB atomic.Int32
	settings := func(every time.Duration, events *atomic.Int32) settings {
		return settings{Client: testClient(t, srv), RefreshInterval: every, LoginTimeout: 5 * time.Second,
			Observer: func(event) { events.Add(1) }}
	}

	a, err := k.Attach("A", settings(time.Hour, &eventsA), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	if _, err := k.Get(bg()); err != nil {
		t.Fatal(err)
	}
	if got := k.Status().NextRefresh.Sub(clock.Now()); got != time.Hour {
		t.Fatalf("next refresh in %s, want A's 1h", got)
	}

	// B is provisioned, never started, then its context is done.
	bDone := make(chan struct{})
	b, err := k.Attach("B", settings(time.Second, &eventsB), bDone)
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Status().NextRefresh.Sub(clock.Now()); got != time.Hour {
		t.Fatalf("a config that has not started moved the next refresh to %s from now", got)
	}
	clock.Advance(10 * time.Second)
	if n := emu.Counters().Refreshes; n != 0 {
		t.Fatalf("%d refreshes 10s after a config with refresh_interval 1s was attached but not started", n)
	}
	close(bDone)
	b.Detach()
	clock.Advance(time.Hour)
	if n := emu.Counters().RefreshesOK; n != 1 {
		t.Fatalf("%d refreshes an hour on, want A's one", n)
	}
	if eventsB.Load() != 0 || eventsA.Load() < 2 {
		t.Fatalf("events: %d to A, %d to the config that never started; want them all with A", eventsA.Load(), eventsB.Load())
	}

	// C starts: its interval applies from then on, rescheduled at once.
	cDone := make(chan struct{})
	c, err := k.Attach("C", settings(time.Minute, &eventsB), cDone)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	if got := k.Status().NextRefresh.Sub(clock.Now()); got != time.Minute {
		t.Fatalf("next refresh in %s after C started, want C's 1m", got)
	}
	a.Detach() // the old config goes, as a good reload cleans it up
	clock.Advance(time.Minute)
	if n := emu.Counters().RefreshesOK; n != 2 {
		t.Fatalf("%d refreshes a minute after C started, want 2", n)
	}

	// C's context ends: nothing of it applies any more, even before its
	// Detach runs; the last settings serve only what must still happen
	// (a logout at Close).
	close(cDone)
	if s := k.settings(); s.RefreshInterval != time.Minute {
		t.Fatalf("with no live config, the last settings should remain for Close: %s", s.RefreshInterval)
	}
	c.Detach()
	c.Detach() // a second Detach of the same hold is harmless
}

// The storage instance an operation starts with is the one it ends with,
// and a configuration whose context is done is never handed to a new one.
func TestKeeperStorageOfEndedConfigIsNotUsed(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	k := newKeeper(newLoginSource(userCreds()), nil, true)
	t.Cleanup(func() { _ = k.Close() })
	store := func(closed *atomic.Bool, calls *atomic.Int32) sharedStore {
		return &guardedStore{sharedStore: loginClusterStore(&certmagic.FileStorage{Path: dir}, userCreds(), srv.URL, nil), closed: closed, calls: calls}
	}
	var closedA, closedB atomic.Bool
	var callsA, callsB atomic.Int32
	a, err := k.Attach("A", settings{Client: testClient(t, srv), RefreshInterval: time.Hour, LoginTimeout: 5 * time.Second, Store: store(&closedA, &callsA)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	bDone := make(chan struct{})
	b, err := k.Attach("B", settings{Client: testClient(t, srv), RefreshInterval: time.Hour, LoginTimeout: 5 * time.Second, Store: store(&closedB, &callsB)}, bDone)
	if err != nil {
		t.Fatal(err)
	}
	// B, newer, started; then its context ends and Caddy closes its
	// storage, in that order, before B is detached.
	b.Start()
	close(bDone)
	closedB.Store(true)
	s1, err := k.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	emu.ExpireSessions()
	if out := k.Unauthorized(bg(), s1); out.Verdict != verdictRetry {
		t.Fatalf("after an expiry: %+v", out)
	}
	if callsB.Load() != 0 {
		t.Fatalf("%d calls to the storage of a config whose context is done", callsB.Load())
	}
	if callsA.Load() == 0 {
		t.Fatal("the running config's storage was not used")
	}
}

// guardedStore counts its calls and fails every one once closed, as
// caddy-storage-redis does after its Cleanup.
type guardedStore struct {
	sharedStore
	closed *atomic.Bool
	calls  *atomic.Int32
}

var errStoreClosed = errors.New("storage is closed")

func (g *guardedStore) use() error {
	g.calls.Add(1)
	if g.closed.Load() {
		return errStoreClosed
	}
	return nil
}

func (g *guardedStore) Load(ctx context.Context) ([]byte, error) {
	if err := g.use(); err != nil {
		return nil, err
	}
	return g.sharedStore.Load(ctx)
}

func (g *guardedStore) Save(ctx context.Context, data []byte) error {
	if err := g.use(); err != nil {
		return err
	}
	return g.sharedStore.Save(ctx, data)
}

func (g *guardedStore) Lock(ctx context.Context) error {
	if err := g.use(); err != nil {
		return err
	}
	return g.sharedStore.Lock(ctx)
}

func (g *guardedStore) Unlock(ctx context.Context) error {
	if err := g.use(); err != nil {
		return err
	}
	return g.sharedStore.Unlock(ctx)
}

func TestKeeperConflictingSettingsInOneConfig(t *testing.T) {
	t.Parallel()
	_, srv := emulator(t, ccemu.Config{})
	k := newKeeper(newLoginSource(userCreds()), nil, false)
	t.Cleanup(func() { _ = k.Close() })
	base := settings{Client: testClient(t, srv), RefreshInterval: 5 * time.Minute, LoginTimeout: 10 * time.Second}
	if _, err := k.Attach("cfg", base, nil); err != nil {
		t.Fatal(err)
	}
	same := base
	same.Client = testClient(t, srv) // an instance: never compared
	if _, err := k.Attach("cfg", same, nil); err != nil {
		t.Fatalf("two blocks that agree: %v", err)
	}
	for _, tc := range []struct {
		change func(*settings)
		want   []string
	}{
		{func(s *settings) { s.RefreshInterval = time.Minute }, []string{"refresh_interval", "5m0s", "1m0s"}},
		{func(s *settings) { s.LoginTimeout = 3 * time.Second }, []string{"login_timeout", "10s", "3s"}},
		{func(s *settings) { s.LogoutOnStop = true }, []string{"logout_on_stop", "false", "true"}},
	} {
		other := base
		tc.change(&other)
		_, err := k.Attach("cfg", other, nil)
		var conflict *settingsConflict
		if !errors.As(err, &conflict) {
			t.Fatalf("conflicting %s: %v, want a SettingsConflict", tc.want[0], err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q does not name %s", err, w)
			}
		}
		if strings.Contains(err.Error(), ccemu.DefaultPassword) {
			t.Errorf("the error shows the password: %s", err)
		}
	}
	// Another config of the same identity may differ.
	other := base
	other.RefreshInterval = time.Minute
	if _, err := k.Attach("next config", other, nil); err != nil {
		t.Fatalf("another config with another refresh_interval: %v", err)
	}
}
