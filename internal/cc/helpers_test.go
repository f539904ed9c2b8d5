// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
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

// countingListener serves an emulator on another loopback address and
// counts the calls that carry a bearer (data API calls), so a test can tell
// which host a request reached. A second listener of the same emulator
// accepts the first one's bearer.
type countingListener struct {
	srv   *httptest.Server
	calls atomic.Int64
}

func newCountingListener(t testing.TB, h http.Handler) *countingListener {
	t.Helper()
	l := &countingListener{}
	l.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			l.calls.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func hostport(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // the poll's interval: real time passes between looks
	}
}

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

const (
	testAppAccount = "le81823118"
	testAppClient  = "test-client"
	testAppSecret  = "s3cret-Value!/+="
)

// sentinelStub answers Sentinel's token endpoints in the documented forms:
// v2 POST /sentinel/api/v2/account/{id}/app/token, v1 the same without v2
// and with ?v=1.0&grant_type=client_credentials; a form body with
// client_id, client_secret and grant_type=client_credentials. A request in
// another form gets 400 invalid_request and is counted as bad. reply
// answers a good request; nil = a JWT valid for an hour with expires_in.
// (The root package's tests have the same stub, for the AppJWT source.)
type sentinelStub struct {
	srv     *httptest.Server
	tokens  atomic.Int64 // good token requests
	bad     atomic.Int64 // requests in a form the docs do not give
	lookups atomic.Int64 // Domain API lookups of "sentinel"

	mu      sync.Mutex
	reply   func(w http.ResponseWriter, r *http.Request)
	lastAPI string
	lastUA  string
}

func newSentinelStub(t testing.TB) *sentinelStub {
	t.Helper()
	s := &sentinelStub{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	t.Cleanup(func() { DropDomainAnswers(s.srv.URL) })
	return s
}

func (s *sentinelStub) setReply(f func(w http.ResponseWriter, r *http.Request)) {
	s.mu.Lock()
	s.reply = f
	s.mu.Unlock()
}

func (s *sentinelStub) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/api/account/"+testAppAccount+"/service/sentinel/baseURI.json" && r.URL.RawQuery == "version=1.0" {
		s.lookups.Add(1)
		fmt.Fprintf(w, `{"service":"sentinel","account":%q,"baseURI":%q}`, testAppAccount, s.srv.Listener.Addr().String())
		return
	}
	api := ""
	switch {
	case r.URL.Path == "/sentinel/api/v2/account/"+testAppAccount+"/app/token" && r.URL.RawQuery == "":
		api = "v2"
	case r.URL.Path == "/sentinel/api/account/"+testAppAccount+"/app/token" &&
		r.URL.Query().Get("v") == "1.0" && r.URL.Query().Get("grant_type") == "client_credentials" && len(r.URL.Query()) == 2:
		api = "v1"
	}
	ct := r.Header.Get("Content-Type")
	if r.Method != http.MethodPost || api == "" || ct != "application/x-www-form-urlencoded" || r.ParseForm() != nil ||
		r.PostForm.Get("client_id") != testAppClient || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_secret") == "" || r.Header.Get("Authorization") != "" {
		s.bad.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		return
	}
	if r.PostForm.Get("client_secret") != testAppSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	s.tokens.Add(1)
	s.mu.Lock()
	s.lastAPI, s.lastUA = api, r.Header.Get("User-Agent")
	reply := s.reply
	s.mu.Unlock()
	if reply == nil {
		reply = jsonReply(200, map[string]any{"access_token": testJWT(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}), "token_type": "Bearer", "expires_in": 3600})
	}
	reply(w, r)
}

// jsonReply answers status and v as JSON.
func jsonReply(status int, v any) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
}

// rawReply answers status, content type and body as given.
func rawReply(status int, contentType, body string, header ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

var jwtSeq atomic.Int64

// testJWT builds a JWT shaped like Sentinel's, with the claims given and a
// signature nobody checks; each is unique.
func testJWT(claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]any{"kid": "appjwt-13-05-17", "typ": "JWT", "alg": "RS256"})
	full := map[string]any{"aud": testAppAccount, "azp": testAppClient, "scope": "msg.consumer", "iss": "Sentinel", "jti": jwtSeq.Add(1)}
	for k, v := range claims {
		full[k] = v
	}
	p, _ := json.Marshal(full)
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString([]byte("signature"))
}

// testAppCreds are the stub's application, with the token API version.
func testAppCreds(api string) AppCredentials {
	return AppCredentials{AccountID: testAppAccount, ClientID: testAppClient, ClientSecret: testAppSecret, API: api}
}

// stubClient speaks to the stub with it as the configured domain, so the
// Domain API is not asked.
func stubClient(t testing.TB, s *sentinelStub) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{CSDS: s.srv.URL, Domain: s.srv.URL, UserAgent: "lpauth-test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSecret fails if err shows the client secret or any of the tokens.
func noSecret(t testing.TB, err error, tokens ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error() + fmt.Sprintf(" %v %+v %#v", err, err, err)
	for _, s := range append([]string{testAppSecret, "s3cret"}, tokens...) {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error shows a secret %q: %s", s, msg)
		}
	}
}
