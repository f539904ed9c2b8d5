// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// A configuration that starts obtains its credential in the background:
// nobody asked for it yet.
func TestKeeperObtainsAtStart(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	k := testKeeper(t, srv, userCreds(), nil, nil)
	eventually(t, 5*time.Second, "a login after Start", func() bool { return k.Current() != nil })
	if n := emu.Counters().Logins; n != 1 {
		t.Fatalf("%d logins at start, want 1", n)
	}
	// A second start of the same keeper (another config) adds nothing.
	var started atomic.Int32
	k.obtainHook = func(error) { started.Add(1) } // told before an obtain starts, in Start's goroutine
	use, err := k.Attach("another", testSettings(t, srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	use.Start()
	if n := emu.Counters().LoginAttempts; n != 1 || started.Load() != 0 {
		t.Fatalf("%d login attempts after a second start of a logged-in keeper, want 1", n)
	}
}

// Once replaced, a keeper never logs in again: a 401 it sees is answered
// with its heir's credential.
func TestKeeperReplacedNeverLogsInAgain(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	old := testKeeper(t, srv, userCreds(), nil, nil)
	oldCred, err := old.Get(bg())
	if err != nil {
		t.Fatal(err)
	}
	emu.ExpireSessions() // the old session ends
	heir := testKeeper(t, srv, userCreds(), nil, nil)
	eventually(t, 5*time.Second, "the heir's login at start", func() bool { return heir.Current() != nil })
	old.Supersede(heir)
	if !old.Status().Replaced {
		t.Fatal("status does not say replaced")
	}

	out := old.Unauthorized(bg(), oldCred)
	if out.Verdict != verdictRetryLate || out.Credential != heir.Current() {
		t.Fatalf("verdict %v (%v), want a retry with the heir's credential", out.Verdict, out.Err)
	}
	if got := dataCall(t, srv, out.Credential); got != http.StatusOK {
		t.Fatalf("the heir's credential answered %d", got)
	}
	// Once the old credential is dropped, Get answers from the heir too.
	old.cur.Store(nil)
	if c, err := old.Get(bg()); err != nil || c != heir.Current() {
		t.Fatalf("Get on the replaced keeper: %v, %v", c, err)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d login attempts, want 2: the replaced keeper logged in again", n)
	}
}

// A replaced keeper that was backing off after a failed login does not try
// again when its retry falls due.
func TestKeeperReplacedDropsItsRetry(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	clock := newFakeClock()
	emu.FailNextLogins(1, http.StatusInternalServerError, 0)
	old := testKeeper(t, srv, userCreds(), clock, nil)
	eventually(t, 5*time.Second, "the failed login at start", func() bool { return old.Status().ConsecutiveFailures == 1 })
	heir := testKeeper(t, srv, userCreds(), clock, nil)
	eventually(t, 5*time.Second, "the heir's login at start", func() bool { return heir.Current() != nil })
	old.Supersede(heir)
	var refused atomic.Value
	old.obtainHook = func(err error) { refused.Store(fmt.Sprint(err)) }
	clock.Advance(10 * time.Minute) // the retry falls due, in this goroutine
	if got := refused.Load(); got != errReplaced.Error() {
		t.Fatalf("the retry that fell due: %v, want it refused as replaced", got)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d login attempts, want 2 (the failed one and the heir's)", n)
	}
}

// The release waits for the requests that hold the credential, and no
// longer than its bound.
func TestKeeperReleaseWaitsForRequests(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	var loggedOut atomic.Int64 // when the logout ended, in Unix nanoseconds
	k := testKeeper(t, srv, userCreds(), nil, func(s *settings) {
		s.Observer = func(ev event) {
			if ev.Kind == eventLogout {
				loggedOut.Store(time.Now().UnixNano())
			}
		}
	})
	if _, err := k.Get(bg()); err != nil {
		t.Fatal(err)
	}
	k.BeginRequest()
	closed := make(chan struct{})
	go func() { _ = k.CloseAfterRequests(10*time.Second, nil); close(closed) }()
	eventually(t, 5*time.Second, "the release to begin", func() bool { return errors.Is(k.unavailableNow(), errClosed) })
	start := time.Now()
	k.EndRequest()
	<-closed
	if took := time.Since(start); took > time.Second {
		t.Fatalf("release took %s after the last request ended", took)
	}
	if n := emu.Counters().Logouts; n != 1 {
		t.Fatalf("%d logouts, want 1", n)
	}
	if at := loggedOut.Load(); at < start.UnixNano() {
		t.Fatalf("logged out %s before the request in flight ended", time.Duration(start.UnixNano()-at))
	}

	// A request that never ends holds the release no longer than the bound.
	k2 := testKeeper(t, srv, userCreds(), nil, nil)
	if _, err := k2.Get(bg()); err != nil {
		t.Fatal(err)
	}
	k2.BeginRequest()
	start = time.Now()
	_ = k2.CloseAfterRequests(500*time.Millisecond, nil)
	if took := time.Since(start); took < 400*time.Millisecond || took > 3*time.Second {
		t.Fatalf("release with a stuck request took %s, want about the 500ms bound", took)
	}
	if n := emu.Counters().Logouts; n != 2 {
		t.Fatalf("%d logouts, want 2", n)
	}
}

// A rotated client secret is the same hand-over for an AppJWT: the replaced
// keeper fetches nothing more, and a 401 it sees gets the heir's token.
func TestKeeperReplacedAppJWTFetchesNothing(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	keeper := func() *keeper {
		cfg := appJWTConfig{AccountID: ccemu.DefaultAccountID, ClientID: ccemu.DefaultClientID, ClientSecret: ccemu.DefaultClientSecret}
		k := startedKeeper(t, newAppJWTSource(cfg), nil, testSettings(t, srv))
		eventually(t, 5*time.Second, "the token at start", func() bool { return k.Current() != nil })
		return k
	}
	old := keeper()
	oldCred := old.Current()
	heir := keeper()
	old.Supersede(heir)
	emu.RevokeTokens()
	out := old.Unauthorized(bg(), oldCred)
	if out.Verdict != verdictRetryLate || out.Credential != heir.Current() {
		t.Fatalf("verdict %v (%v), want a retry with the heir's token", out.Verdict, out.Err)
	}
	if n := emu.Counters().TokenRequests; n != 2 {
		t.Fatalf("%d token requests, want 2 (one per keeper at start): the replaced keeper fetched again", n)
	}
}

// In a cluster the new identity adopts the stored session (the same token)
// instead of logging in: the replaced keeper must not log it out, even
// with logout_on_stop on.
func TestKeeperReplacedKeepsTheSessionItsHeirAdopted(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	clustered := clusteredOn(t.TempDir(), srv, true)
	old := testKeeper(t, srv, userCreds(), nil, clustered)
	eventually(t, 5*time.Second, "the login at start", func() bool { return old.Current() != nil })
	heir := testKeeper(t, srv, userCreds(), nil, clustered)
	eventually(t, 5*time.Second, "the heir's adoption at start", func() bool { return heir.Current() != nil })
	if heir.Current().Token != old.Current().Token {
		t.Fatal("the heir did not adopt the stored session")
	}
	old.Supersede(heir)
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if n := emu.Counters(); n.Logouts != 0 || n.Logins != 1 {
		t.Fatalf("%d logouts, %d logins: the replaced keeper logged out the session its heir serves", n.Logouts, n.Logins)
	}
	if got := dataCall(t, srv, heir.Current()); got != http.StatusOK {
		t.Fatalf("the heir's session answered %d", got)
	}
}

// The heir of a cluster rotation adopts the stored session: the same token
// as a new credential. A draining request whose session died meanwhile must
// be retried with a new session, not with the dead token again.
func TestKeeperReplacedRetriesDeadAdoptedSessionWithANewOne(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	old, heir := adoptedRotation(t, srv)
	failed := old.Current()
	emu.ExpireSessions()
	out := old.Unauthorized(bg(), failed)
	if out.Verdict != verdictRetry || out.Credential == nil || out.Credential.Token == failed.Token {
		t.Fatalf("a 401 for the dead session the heir adopted: %+v, want Retry with a new session", out)
	}
	if got := dataCall(t, srv, out.Credential); got != http.StatusOK {
		t.Fatalf("the retry's session answered %d", got)
	}
	if heir.Current().Token != out.Credential.Token {
		t.Fatal("the retry did not use the heir's new session")
	}
}

// A relogin asked of a replaced keeper answers with the heir's session; when
// that is the very session the replaced keeper held (adopted), it is not
// logged out.
func TestKeeperReplacedReloginKeepsTheHeirsSession(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	old, heir := adoptedRotation(t, srv)
	c, err := old.Relogin(bg())
	if err != nil || c.Token != heir.Current().Token {
		t.Fatalf("relogin of a replaced keeper: %v, want the heir's session", err)
	}
	old.releases.Wait() // a release would run in the background
	if n := emu.Counters(); n.Logouts != 0 || n.Logins != 1 {
		t.Fatalf("%d logouts, %d logins: the relogin ended the heir's session", n.Logouts, n.Logins)
	}
	if got := dataCall(t, srv, heir.Current()); got != http.StatusOK {
		t.Fatalf("the heir's session answered %d", got)
	}
}

// adoptedRotation is a cluster rotation: old logged in and stored its
// session, heir adopted it (the same token, another credential) and
// replaced old.
func adoptedRotation(t *testing.T, srv *httptest.Server) (old, heir *keeper) {
	t.Helper()
	clustered := clusteredOn(t.TempDir(), srv, true)
	old = testKeeper(t, srv, userCreds(), nil, clustered)
	eventually(t, 5*time.Second, "the login at start", func() bool { return old.Current() != nil })
	heir = testKeeper(t, srv, userCreds(), nil, clustered)
	eventually(t, 5*time.Second, "the heir's adoption at start", func() bool { return heir.Current() != nil })
	if heir.Current().Token != old.Current().Token || heir.Current() == old.Current() {
		t.Fatal("the heir did not adopt the stored session as a credential of its own")
	}
	old.Supersede(heir)
	return old, heir
}

// clusteredOn makes a keeper's settings those of a cluster member on file
// storage in dir.
func clusteredOn(dir string, srv *httptest.Server, logoutOnStop bool) func(*settings) {
	return func(s *settings) {
		s.Store = loginClusterStore(&certmagic.FileStorage{Path: dir}, userCreds(), srv.URL, nil)
		s.LogoutOnStop = logoutOnStop
	}
}
