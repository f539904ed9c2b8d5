// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
	"github.com/lpauth/caddy-lpauth/internal/sentinelstub"
)

// The Sentinel stand-in the AppJWT tests share (internal/sentinelstub).
const (
	testAppAccount = sentinelstub.Account
	testAppClient  = sentinelstub.Client
	testAppSecret  = sentinelstub.Secret
)

type sentinelStub = sentinelstub.Stub

func newSentinelStub(t testing.TB) *sentinelStub { return sentinelstub.New(t, cc.DropDomainAnswers) }

var (
	jsonReply = sentinelstub.JSONReply
	rawReply  = sentinelstub.RawReply
	testJWT   = sentinelstub.JWT
)

func testAppJWTConfig(api string, now func() time.Time) appJWTConfig {
	return appJWTConfig{AccountID: testAppAccount, ClientID: testAppClient, ClientSecret: testAppSecret, API: api, Now: now}
}

// stubClient speaks to the stub with it as the configured domain, so the
// Domain API is not asked.
func stubClient(t testing.TB, s *sentinelStub) *cc.Client {
	t.Helper()
	c, err := cc.NewClient(cc.ClientConfig{CSDS: s.Srv.URL, Domain: s.Srv.URL, UserAgent: "lpauth-test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// appJWTFixture is a stub, a clock the test moves, a source on that
// clock and a client of the stub.
func appJWTFixture(t testing.TB, api string) (*sentinelStub, *fakeClock, *appJWTSource, *cc.Client) {
	t.Helper()
	s := newSentinelStub(t)
	clock := newFakeClock()
	return s, clock, newAppJWTSource(testAppJWTConfig(api, clock.Now)), stubClient(t, s)
}

func TestAppJWTObtainV2(t *testing.T) {
	s := newSentinelStub(t)
	clock := newFakeClock()
	src := newAppJWTSource(testAppJWTConfig("", clock.Now))
	tok := testJWT(map[string]any{"exp": clock.Now().Add(2 * time.Hour).Unix()})
	s.SetReply(jsonReply(200, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 1200}))

	cred, err := src.Obtain(bg(), stubClient(t, s))
	if err != nil {
		t.Fatal(err)
	}
	api, ua := s.Last()
	if s.Bad.Load() != 0 || s.Tokens.Load() != 1 || api != "v2" {
		t.Fatalf("requests: good %d, bad %d, api %q", s.Tokens.Load(), s.Bad.Load(), api)
	}
	if ua != "lpauth-test" {
		t.Errorf("User-Agent %q", ua)
	}
	if cred.Token != tok || cred.AuthorizationValue() != "Bearer "+tok || cred.Issuer != s.Srv.URL {
		t.Errorf("credential: issuer %q, token as sent: %v", cred.Issuer, cred.Token == tok)
	}
	if cred.Lifetime != 20*time.Minute {
		t.Errorf("lifetime %s, want expires_in's 20m (it wins over exp)", cred.Lifetime)
	}
	if got, want := cred.Expires, clock.Now().Add(20*time.Minute); !got.Equal(want) {
		t.Errorf("expires %s, want %s", got, want)
	}
	if id := src.Identity(); id != (identity{Account: testAppAccount, Kind: "app_jwt", Name: testAppClient}) {
		t.Errorf("identity %+v", id)
	}
	if err := src.Release(bg(), stubClient(t, s), cred); !errors.Is(err, errNothingToRelease) {
		t.Errorf("release: %v, want ErrNothingToRelease", err)
	}
	if s.Tokens.Load() != 1 {
		t.Errorf("release made a request")
	}
	if strings.Contains(cred.String(), tok) || strings.Contains(fmt.Sprintf("%#v %v", cred, cred), tok) {
		t.Errorf("credential String shows the token")
	}
}

func TestAppJWTErrors(t *testing.T) {
	for _, tc := range []struct {
		name       string
		secret     string
		reply      func(http.ResponseWriter, *http.Request)
		status     int
		message    string
		retryAfter time.Duration
		class      failureClass
	}{
		{"wrong secret", "wrong", nil, 401, "invalid_client", 0, failConfig},
		{"bad request", testAppSecret, rawReply(400, "application/json", `{"error":"invalid_grant","error_description":"no such grant"}`), 400, "invalid_grant: no such grant", 0, failConfig},
		{"401 echoing the secret", testAppSecret, rawReply(401, "application/json", `{"error":"invalid_client","error_description":"bad secret `+testAppSecret+`"}`), 401, "invalid_client: bad secret …", 0, failConfig},
		{"401 echoing the form", testAppSecret, rawReply(401, "text/plain", `client_secret=s3cret-Value%21%2F%2B%3D rejected`), 401, "", 0, failConfig},
		{"400 echoing a form token", testAppSecret, rawReply(400, "text/plain", `access_token=abcdefgh12345678`), 400, "", 0, failConfig},
		{"429 with Retry-After", testAppSecret, rawReply(429, "application/json", `{"error":"too_many_requests"}`, "Retry-After", "7"), 429, "too_many_requests", 7 * time.Second, failRateLimit},
		{"500 plain text", testAppSecret, rawReply(500, "text/plain", `internal failure`), 500, "", 0, failTransient},
		{"503 HTML", testAppSecret, rawReply(503, "text/html", `<html>down</html>`), 503, "", 0, failTransient},
		{"CC envelope", testAppSecret, rawReply(500, "application/json", `{"error":{"message":"LeLogin failed","internalCode":3}}`), 500, "LeLogin failed", 0, failTransient},
		{"redirect is not followed", testAppSecret, rawReply(302, "text/plain", "", "Location", "http://127.0.0.1:1/elsewhere"), 302, "", 0, failTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSentinelStub(t)
			s.SetReply(tc.reply)
			cfg := testAppJWTConfig("", nil)
			cfg.ClientSecret = tc.secret
			_, err := newAppJWTSource(cfg).Obtain(bg(), stubClient(t, s))
			var apiErr *cc.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err %T %v, want *APIError", err, err)
			}
			if apiErr.Op != "token" || apiErr.StatusCode != tc.status || apiErr.RetryAfter != tc.retryAfter {
				t.Errorf("%+v", apiErr)
			}
			if tc.message != "" && apiErr.Message != tc.message {
				t.Errorf("message %q, want %q", apiErr.Message, tc.message)
			}
			if got := classify(err); got != tc.class {
				t.Errorf("class %d, want %d", got, tc.class)
			}
			noSecret(t, err, "s3cret-Value%21", "abcdefgh12345678")
		})
	}

	t.Run("OAuth error in a 200", func(t *testing.T) {
		s := newSentinelStub(t)
		s.SetReply(rawReply(200, "application/json", `{"error":"invalid_client"}`))
		_, err := newAppJWTSource(testAppJWTConfig("", nil)).Obtain(bg(), stubClient(t, s))
		var apiErr *cc.APIError
		if err == nil || errors.As(err, &apiErr) || !strings.Contains(err.Error(), "invalid_client") {
			t.Errorf("err = %v, want an invalid reply naming the code", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		s := newSentinelStub(t)
		c := stubClient(t, s)
		s.Srv.Close()
		_, err := newAppJWTSource(testAppJWTConfig("", nil)).Obtain(bg(), c)
		var apiErr *cc.APIError
		if err == nil || errors.As(err, &apiErr) || classify(err) != failTransient {
			t.Errorf("err = %v", err)
		}
		noSecret(t, err)
	})
	t.Run("invalid config", func(t *testing.T) {
		s := newSentinelStub(t)
		cfg := testAppJWTConfig("v3", nil)
		if err := cfg.Validate(); err == nil {
			t.Error("v3 accepted")
		}
		if _, err := newAppJWTSource(cfg).Obtain(bg(), stubClient(t, s)); err == nil || s.Tokens.Load()+s.Bad.Load() != 0 {
			t.Errorf("obtain with an invalid config: %v", err)
		}
		cfg = testAppJWTConfig("", nil)
		cfg.ClientSecret = ""
		if err := cfg.Validate(); err == nil {
			t.Error("no secret accepted")
		}
	})
}

func TestAppJWTNoSecretInString(t *testing.T) {
	cfg := testAppJWTConfig("v1", nil)
	src := newAppJWTSource(cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v %#v", cfg, cfg), fmt.Sprint(src), fmt.Sprintf("%+v %#v", src, src)} {
		if strings.Contains(s, testAppSecret) {
			t.Errorf("shows the secret: %s", s)
		}
	}
}

func TestAppJWTRenewAfter(t *testing.T) {
	s, clock, src, c := appJWTFixture(t, "")
	s.SetReply(jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": 100}))
	cred, err := src.Obtain(bg(), c)
	if err != nil {
		t.Fatal(err)
	}
	// Before the keeper sets Obtained, the start is expiry − lifetime.
	if d := src.RenewAfter(cred, time.Minute); d != 80*time.Second {
		t.Errorf("RenewAfter without Obtained = %s, want 80s", d)
	}
	cred.Obtained = clock.Now()
	if d := src.RenewAfter(cred, time.Minute); d != 80*time.Second {
		t.Errorf("RenewAfter = %s, want 80s (80 %% of 100 s)", d)
	}
	clock.Advance(50 * time.Second)
	if d := src.RenewAfter(cred, time.Minute); d != 30*time.Second {
		t.Errorf("RenewAfter at 50 s = %s, want 30s", d)
	}
	clock.Advance(40 * time.Second)
	if d := src.RenewAfter(cred, time.Minute); d != 0 {
		t.Errorf("RenewAfter past due = %s, want 0", d)
	}

	// A failed renewal: the error, and the current token kept (the keeper
	// retries it: TestAppJWTKeeperRetriesFailedRenewal).
	s.SetReply(rawReply(500, "text/plain", "down"))
	next, err := src.Renew(bg(), c, cred)
	if err == nil || next != nil || errors.Is(err, errCredentialGone) {
		t.Fatalf("renew against a 500: %v, %v", next, err)
	}

	// A successful renewal: a new credential, with a fresh schedule.
	s.SetReply(jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": 200}))
	next, err = src.Renew(bg(), c, cred)
	if err != nil {
		t.Fatal(err)
	}
	if next == cred || next.Token == cred.Token || next.Lifetime != 200*time.Second {
		t.Fatalf("renewal did not give a new token")
	}
	next.Obtained = clock.Now()
	if d := src.RenewAfter(next, time.Minute); d != 160*time.Second {
		t.Errorf("RenewAfter of the new token = %s, want 160s", d)
	}
}

func TestAppJWTCheckWindow(t *testing.T) {
	s, clock, src, c := appJWTFixture(t, "")
	for _, tc := range []struct {
		expiresIn int
		window    time.Duration
	}{
		{3600, 30 * time.Second}, // min(30 s, 30 min)
		{20, 10 * time.Second},   // min(30 s, 10 s)
	} {
		s.SetReply(jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": tc.expiresIn}))
		cred, err := src.Obtain(bg(), c)
		if err != nil {
			t.Fatal(err)
		}
		cred.Obtained = clock.Now()
		before := s.Tokens.Load()
		clock.Advance(tc.window - time.Millisecond)
		if err := src.Check(bg(), c, cred); err != nil {
			t.Errorf("lifetime %ds: a token younger than the %s window: %v, want alive", tc.expiresIn, tc.window, err)
		}
		clock.Advance(time.Millisecond)
		err = src.Check(bg(), c, cred)
		if !errors.Is(err, errCredentialGone) {
			t.Errorf("lifetime %ds: a token at the %s window: %v, want gone", tc.expiresIn, tc.window, err)
		}
		noSecret(t, err, cred.Token)
		if s.Tokens.Load() != before {
			t.Errorf("Check made a request")
		}
	}
}

func TestAppJWTEncodeDecode(t *testing.T) {
	s := newSentinelStub(t)
	clock := newFakeClock()
	src := newAppJWTSource(testAppJWTConfig("", clock.Now))
	s.SetReply(jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": 600}))
	cred, err := src.Obtain(bg(), stubClient(t, s))
	if err != nil {
		t.Fatal(err)
	}
	data, err := src.Encode(cred)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	back, err := src.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if back.Token != cred.Token || back.Issuer != cred.Issuer || back.Lifetime != cred.Lifetime ||
		!back.Expires.Equal(cred.Expires) || back.AuthorizationValue() != cred.AuthorizationValue() {
		t.Errorf("round trip: issuer %q lifetime %s expires %s", back.Issuer, back.Lifetime, back.Expires)
	}
	if _, err := src.Encode(&credential{Token: cred.Token}); err == nil {
		t.Error("Encode of a credential that is not an AppJWT")
	}

	var p storedAppJWT
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	// The checks are internal/cc's; their errors are fixed texts.
	for _, tc := range []struct {
		name   string
		change func(*storedAppJWT)
		want   string
	}{
		{"opaque token", func(p *storedAppJWT) { p.Token = "0123456789abcdef" }, "the token is not a JWT (three base64url parts)"},
		{"CRLF in the token", func(p *storedAppJWT) { p.Token += "\r\nX-Injected: 1" }, "the token has characters not allowed in an HTTP header"},
		{"no token", func(p *storedAppJWT) { p.Token = "" }, "no access_token"},
		{"zero lifetime", func(p *storedAppJWT) { p.LifetimeMS = 0 }, "lifetime out of range"},
		{"huge lifetime", func(p *storedAppJWT) { p.LifetimeMS = 1 << 62 }, "lifetime out of range"},
		{"expired", func(p *storedAppJWT) { p.ExpiresMS = clock.Now().Add(-time.Second).UnixMilli() }, "the token has expired"},
		{"expiry far ahead", func(p *storedAppJWT) { p.ExpiresMS = clock.Now().Add(365 * 24 * time.Hour).UnixMilli() }, "expiry too far ahead"},
		{"no issuer", func(p *storedAppJWT) { p.Issuer = "" }, "bad issuer"},
		{"plain http elsewhere", func(p *storedAppJWT) { p.Issuer = "http://sentinel.example" }, "bad issuer"},
		{"issuer with a path trick", func(p *storedAppJWT) { p.Issuer = "https://a@b" }, "bad issuer"},
	} {
		q := p
		tc.change(&q)
		bad, _ := json.Marshal(q)
		_, err := src.Decode(bad)
		if err == nil || err.Error() != "stored token: "+tc.want {
			t.Errorf("%s: %v, want stored token: %s", tc.name, err, tc.want)
		}
		noSecret(t, err, q.Token)
	}
	for _, garbage := range []string{"", "null", "[]", `{"token":`, "\x00"} {
		if _, err := src.Decode([]byte(garbage)); err == nil {
			t.Errorf("Decode(%q) accepted", garbage)
		}
	}
}

// TestAppJWTKeeper drives the source through a keeper: one fetch for
// concurrent callers, the renewal at 80 % of the lifetime, a 401 past the
// window replaced by one new token.
func TestAppJWTKeeper(t *testing.T) {
	s := newSentinelStub(t)
	clock := newFakeClock()
	src := newAppJWTSource(testAppJWTConfig("", clock.Now))
	s.SetReply(func(w http.ResponseWriter, r *http.Request) {
		jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": 100})(w, r)
	})
	k := newKeeper(src, clock, false)
	use, err := k.Attach("test", settings{Client: stubClient(t, s), RefreshInterval: 5 * time.Minute, LoginTimeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	use.Start()
	t.Cleanup(func() { _ = k.Close() })

	var wg sync.WaitGroup
	creds := make([]*credential, 16)
	for i := range creds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds[i], _ = k.Get(context.Background())
		}()
	}
	wg.Wait()
	first := creds[0]
	for _, c := range creds {
		if c == nil || c != first {
			t.Fatal("callers got different or no credentials")
		}
	}
	if n := s.Tokens.Load(); n != 1 {
		t.Fatalf("%d fetches for 16 callers", n)
	}
	clock.Advance(79 * time.Second)
	if n := s.Tokens.Load(); n != 1 {
		t.Fatalf("renewed before 80 %%: %d fetches", n)
	}
	clock.Advance(time.Second)
	eventually(t, 5*time.Second, "renewal at 80 %", func() bool { return s.Tokens.Load() == 2 && k.Current() != first })
	second := k.Current()

	// A 401 for a token younger than the window goes to the client.
	if out := k.Unauthorized(bg(), second); out.Verdict != verdictPassThrough {
		t.Errorf("a 401 for a young token: verdict %d, want PassThrough", out.Verdict)
	}
	clock.Advance(31 * time.Second)
	out := k.Unauthorized(bg(), second)
	if out.Verdict != verdictRetry || out.Credential == nil || out.Credential == second {
		t.Errorf("a 401 past the window: verdict %d", out.Verdict)
	}
	if n := s.Tokens.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
}

// A renewal that keeps failing is retried as the retry policy says (5 s,
// then 10 s, for a 5xx), the current token served meanwhile, until it
// expires: then it is dropped.
func TestAppJWTKeeperRetriesFailedRenewal(t *testing.T) {
	s, clock, src, c := appJWTFixture(t, "")
	s.SetReply(jsonReply(200, map[string]any{"access_token": testJWT(nil), "expires_in": 100}))
	k := startedKeeper(t, src, clock, settings{Client: c, RefreshInterval: time.Hour, LoginTimeout: 5 * time.Second})
	eventually(t, 5*time.Second, "the token at start", func() bool { return k.Current() != nil })
	cred := k.Current()
	s.SetReply(rawReply(500, "text/plain", "down"))
	fetches := func() int64 { return s.Tokens.Load() }
	n := fetches()
	step := func(d time.Duration, want int64, what string) {
		t.Helper()
		clock.Advance(d)
		// The renewal and its retries run in the timers' calls, inside
		// Advance: nothing more is in flight once the count is reached.
		eventually(t, 2*time.Second, what, func() bool { return fetches() == n+want })
		if got := fetches() - n; got != want {
			t.Fatalf("%s: %d fetches, want %d", what, got, want)
		}
	}
	step(80*time.Second, 1, "the renewal at 80 %")
	step(4900*time.Millisecond, 1, "nothing before the 5 s gap")
	step(700*time.Millisecond, 2, "the retry after 5 s")
	step(9900*time.Millisecond, 2, "nothing before the 10 s gap")
	step(1200*time.Millisecond, 3, "the retry after 10 s")
	if k.Current() != cred {
		t.Fatal("the current token was not served while its renewal failed")
	}
	clock.Advance(time.Minute) // past its end
	eventually(t, 2*time.Second, "the expired token dropped", func() bool { return k.Current() != cred })
}
