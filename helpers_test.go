// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
	"github.com/lpauth/caddy-lpauth/internal/sentinelstub"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
)

// emulator starts a CC emulator over real HTTP on loopback.
func emulator(t testing.TB, cfg ccemu.Config) (*ccemu.Emulator, *httptest.Server) {
	t.Helper()
	emu := ccemu.New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { cc.DropDomainAnswers(srv.URL) })
	return emu, srv
}

func userCreds() cc.Credentials {
	return cc.Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultUsername, Password: ccemu.DefaultPassword}
}

func appCreds() cc.Credentials {
	return cc.Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultAppUser, AppKey: ccemu.DefaultAppKey, Secret: ccemu.DefaultAppSecret}
}

func testClient(t testing.TB, srv *httptest.Server) *cc.Client {
	t.Helper()
	c, err := cc.NewClient(cc.ClientConfig{CSDS: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testKeeper builds a keeper of the Login Service source against srv, with
// one started configuration; it is closed when the test ends. With tune
// setting a Store, the keeper is clustered.
func testKeeper(t testing.TB, srv *httptest.Server, creds cc.Credentials, clock cc.Clock, tune func(*settings)) *keeper {
	t.Helper()
	s := testSettings(t, srv)
	if tune != nil {
		tune(&s)
	}
	return startedKeeper(t, newLoginSource(creds), clock, s)
}

// testSettings are the settings testKeeper starts from.
func testSettings(t testing.TB, srv *httptest.Server) settings {
	return settings{Client: testClient(t, srv), RefreshInterval: time.Hour, LoginTimeout: 5 * time.Second, LogoutOnStop: true}
}

// startedKeeper is a keeper of src with one started configuration of
// settings s (clustered if s has a Store), closed when the test ends.
func startedKeeper(t testing.TB, src source, clock cc.Clock, s settings) *keeper {
	t.Helper()
	k := newKeeper(src, clock, s.Store != nil)
	use, err := k.Attach("test", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	use.Start()
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// loginClusterStore is the cluster store of a login identity, named and
// keyed as Provision does it.
func loginClusterStore(storage certmagic.Storage, c cc.Credentials, csds string, key []byte) *storageStore {
	secret := c.Password
	if c.AppKey != "" {
		secret = c.Secret
	}
	return clusterStore(storage, c.AccountID, []string{c.AccountID, c.Username, c.AppKey, csds, ""}, secret, key)
}

// dataCall calls the emulator's data API with the credential's bearer.
// It takes a keeper's *Credential or a client's *Session.
func dataCall(t testing.TB, srv *httptest.Server, cred any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/account/"+ccemu.DefaultAccountID+"/probe", nil)
	switch c := cred.(type) {
	case *credential:
		req.Header.Set("Authorization", c.AuthorizationValue())
	case *cc.Session:
		req.Header.Set("Authorization", "Bearer "+c.Bearer)
	default:
		t.Fatalf("dataCall: %T", cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// eventually, hostport, randomBody and noSecret are the shared test kit's
// (internal/testkit, internal/sentinelstub).
var (
	eventually = testkit.Eventually
	hostport   = testkit.Hostport
	randomBody = testkit.RandomBody
	noSecret   = sentinelstub.NoSecret
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, ft)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !ft.stopped
		ft.stopped = true
		return was
	}
}

// Advance moves time forward and runs the timers that fell due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*fakeTimer
	rest := c.timers[:0]
	for _, ft := range c.timers {
		switch {
		case ft.stopped:
		case !ft.at.After(c.now):
			ft.stopped = true
			due = append(due, ft)
		default:
			rest = append(rest, ft)
		}
	}
	c.timers = rest
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, ft := range due {
		ft.f()
	}
}

func bg() context.Context { return context.Background() }

// fileLog returns global options that send Caddy's log at level (INFO,
// DEBUG; DEBUG also turns on debug mode) to a file of the test's, and
// that file.
func fileLog(t testing.TB, level string) (global, file string) {
	file = filepath.Join(t.TempDir(), "caddy.log")
	global = fmt.Sprintf("log {\n\t\toutput file %s\n\t\tlevel %s\n\t}", file, level)
	if level == "DEBUG" {
		global += "\n\tdebug"
	}
	return global, file
}

// replaceOnce edits a generated config: old must be in s, or the test
// fails (a silent no-op would test the unedited config).
func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("config edit: %q is not in the config", old)
	}
	return strings.Replace(s, old, new, 1)
}
