// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/sentinelstub"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
)

// emulator starts a CC emulator over real HTTP on loopback.
func emulator(t testing.TB, cfg ccemu.Config) (*ccemu.Emulator, *httptest.Server) {
	t.Helper()
	emu := ccemu.New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { DropDomainAnswers(srv.URL) })
	return emu, srv
}

func userCreds() Credentials {
	return Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultUsername, Password: ccemu.DefaultPassword}
}

func appCreds() Credentials {
	return Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultAppUser, AppKey: ccemu.DefaultAppKey, Secret: ccemu.DefaultAppSecret}
}

func testClient(t testing.TB, srv *httptest.Server) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{CSDS: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dataCall calls the emulator's data API with the session's bearer.
func dataCall(t testing.TB, srv *httptest.Server, s *Session) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/account/"+ccemu.DefaultAccountID+"/probe", nil)
	req.Header.Set("Authorization", "Bearer "+s.Bearer)
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

// fakeClock is a Clock whose time moves only when the test says so. The
// wire client only reads it: it sets no timers.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(time.Duration, func()) func() bool {
	panic("fakeClock: the wire client sets no timers")
}

// Advance moves time forward.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func bg() context.Context { return context.Background() }

// The Sentinel stand-in the AppJWT tests share (internal/sentinelstub).
const (
	testAppAccount = sentinelstub.Account
	testAppClient  = sentinelstub.Client
	testAppSecret  = sentinelstub.Secret
)

type sentinelStub = sentinelstub.Stub

func newSentinelStub(t testing.TB) *sentinelStub { return sentinelstub.New(t, DropDomainAnswers) }

var (
	jsonReply = sentinelstub.JSONReply
	rawReply  = sentinelstub.RawReply
	testJWT   = sentinelstub.JWT
)

// testAppCreds are the stub's application, with the token API version.
func testAppCreds(api string) AppCredentials {
	return AppCredentials{AccountID: testAppAccount, ClientID: testAppClient, ClientSecret: testAppSecret, API: api}
}

// stubClient speaks to the stub with it as the configured domain, so the
// Domain API is not asked.
func stubClient(t testing.TB, s *sentinelStub) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{CSDS: s.Srv.URL, Domain: s.Srv.URL, UserAgent: "lpauth-test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
