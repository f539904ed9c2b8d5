// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// clusterKeepers builds n keepers, as n Caddy instances would have, each
// with its own client, sharing one file_system storage directory.
func clusterKeepers(t *testing.T, srv *httptest.Server, dir string, n int, clock cc.Clock, tune func(*settings)) []*keeper {
	t.Helper()
	ks := make([]*keeper, n)
	for i := range ks {
		storage := &certmagic.FileStorage{Path: dir}
		ks[i] = testKeeper(t, srv, userCreds(), clock, func(tu *settings) {
			tu.Store = loginClusterStore(storage, userCreds(), srv.URL, nil)
			tu.LogoutOnStop = false
			if tune != nil {
				tune(tu)
			}
		})
	}
	return ks
}

func TestClusterOneLoginOneRelogin(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(1, 300*time.Millisecond)
	ks := clusterKeepers(t, srv, t.TempDir(), 3, nil, nil)

	var wg sync.WaitGroup
	for _, k := range ks {
		for range 20 {
			wg.Go(func() {
				if _, err := k.Get(bg()); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins for 3 instances starting under load, want 1", n)
	}
	first := ks[0].Current()
	for _, k := range ks {
		if k.Current().Token != first.Token {
			t.Fatal("instances hold different sessions")
		}
	}

	// Server-side expiry seen by every instance at once: one re-login.
	emu.ExpireSessions()
	for _, k := range ks {
		failed := k.Current()
		for range 10 {
			wg.Go(func() {
				out := k.Unauthorized(bg(), failed)
				if (out.Verdict != verdictRetry && out.Verdict != verdictRetryLate) || out.Credential.Token == first.Token {
					t.Errorf("after expiry: %+v", out)
				}
			})
		}
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins in all after an expiry seen by 3 instances, want 2", n)
	}
	for _, k := range ks {
		if got := dataCall(t, srv, k.Current()); got != 200 {
			t.Fatalf("an instance's session after the re-login: %d", got)
		}
	}

	if n := emu.Counters().SessionsEndedByLogin; n != 0 {
		t.Fatalf("%d sessions ended by another member's login, want 0 (one session per user)", n)
	}

	// An instance that joins later adopts the stored session.
	joiner := clusterKeepers(t, srv, storageDirOf(ks[0]), 1, nil, nil)[0]
	if s, err := joiner.Get(bg()); err != nil || s.Token != ks[0].Current().Token {
		t.Fatalf("late joiner: %v", err)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("a late joiner logged in: %d logins", n)
	}
}

// storeOf returns the storage a clustered keeper uses now.
func storeOf(k *keeper) *storageStore { return k.settings().Store.(*storageStore) }

// storageDirOf returns the directory of a keeper's file storage.
func storageDirOf(k *keeper) string {
	return storeOf(k).storage.(*certmagic.FileStorage).Path
}

func TestClusterRefreshOncePerIntervalAndOneReloginAfterRefresh401(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{Clock: clock})
	ks := clusterKeepers(t, srv, t.TempDir(), 3, clock, func(tu *settings) { tu.RefreshInterval = 5 * time.Minute })
	for _, k := range ks {
		if _, err := k.Get(bg()); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		clock.Advance(5 * time.Minute)
	}
	// 3 instances, each ticking 5 times: alone they would refresh 15 times.
	if n := emu.Counters().Refreshes; n != 5 {
		t.Fatalf("%d refreshes by 3 instances in 5 intervals, want one per interval", n)
	}

	// A refresh finds the session gone: one instance logs in again, the
	// others adopt its session.
	emu.ExpireSessions()
	clock.Advance(5 * time.Minute)
	eventually(t, 10*time.Second, "every instance to hold the new session", func() bool {
		for _, k := range ks {
			if s := k.Current(); s == nil || dataCall(t, srv, s) != 200 {
				return false
			}
		}
		return true
	})
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins after a refresh 401 seen across the cluster, want 2 in all", n)
	}
}

func TestClusterBlobIsEncryptedAndAuthenticated(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	k := clusterKeepers(t, srv, dir, 1, nil, nil)[0]
	if _, err := k.Get(bg()); err != nil {
		t.Fatal(err)
	}
	var blobs [][]byte
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(path, ".json") {
			b, _ := os.ReadFile(path)
			blobs = append(blobs, b)
		}
		return nil
	})
	if len(blobs) != 1 {
		t.Fatalf("%d session blobs in storage, want 1", len(blobs))
	}
	for _, secret := range emu.IssuedSecrets() {
		if bytes.Contains(blobs[0], []byte(secret)) {
			t.Fatalf("a secret (%d chars) in clear in the stored blob", len(secret))
		}
	}
	store := storeOf(k)
	if sh := k.decodeShared(store.Load(bg())); sh == nil || sh.cred.Token != k.Current().Token {
		t.Fatalf("own blob does not load: %v", sh)
	}

	// Other credentials cannot read it: absent, not an error.
	other := userCreds()
	other.Password = "another-password"
	wrong := loginClusterStore(store.storage, other, srv.URL, nil)
	if st, err := wrong.Load(bg()); st != nil || err != nil {
		t.Fatalf("a store with another password read the blob: %v %v", st, err)
	}
	// A tampered blob is absent too.
	raw, _ := store.storage.Load(bg(), store.key)
	raw[len(raw)-10] ^= 1
	store.storage.Store(bg(), store.key, raw)
	if st, err := store.Load(bg()); st != nil || err != nil {
		t.Fatalf("a tampered blob loaded: %v %v", st, err)
	}
}

func TestClusterEncryptionKey(t *testing.T) {
	t.Parallel()
	_, srv := emulator(t, ccemu.Config{})
	storage := &certmagic.FileStorage{Path: t.TempDir()}
	key, err := parseEncryptionKey("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"credential":{"bearer":"0123456789abcdef"}}`)
	a := loginClusterStore(storage, userCreds(), srv.URL, key)
	if err := a.Save(bg(), payload); err != nil {
		t.Fatal(err)
	}
	b := loginClusterStore(storage, userCreds(), srv.URL, key)
	if got, _ := b.Load(bg()); !bytes.Equal(got, payload) {
		t.Fatalf("the same key cannot read the blob: %q", got)
	}
	otherKey, _ := parseEncryptionKey(strings.Repeat("ab", 32))
	if st, _ := loginClusterStore(storage, userCreds(), srv.URL, otherKey).Load(bg()); st != nil {
		t.Fatal("another key read the blob")
	}
	if st, _ := loginClusterStore(storage, userCreds(), srv.URL, nil).Load(bg()); st != nil {
		t.Fatal("a derived key read a blob written with an encryption_key")
	}
	for _, bad := range []string{"short", strings.Repeat("a", 44), ""} {
		if _, err := parseEncryptionKey(bad); err == nil {
			t.Errorf("encryption key %q accepted", bad)
		}
	}
}

func TestClusterLogoutOnlyWhenAsked(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	k := clusterKeepers(t, srv, dir, 1, nil, nil)[0]
	if _, err := k.Get(bg()); err != nil {
		t.Fatal(err)
	}
	k.Close()
	if n := emu.Counters().Logouts; n != 0 {
		t.Fatalf("cluster mode logged out on stop by default: %d", n)
	}
	k2 := clusterKeepers(t, srv, dir, 1, nil, func(tu *settings) { tu.LogoutOnStop = true })[0]
	if _, err := k2.Get(bg()); err != nil {
		t.Fatal(err)
	}
	k2.Close()
	if n := emu.Counters().Logouts; n != 1 {
		t.Fatalf("logout_on_stop: %d logouts", n)
	}
	if st, _ := storeOf(k2).Load(context.Background()); st != nil {
		t.Fatal("the logged-out session is still stored for others to adopt")
	}
}
