// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The AppJWT source through a real Caddy and the emulator's Sentinel.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

const testClientSecretEnv = "LPAUTH_TEST_CLIENT_SECRET"

// appJWTSite is a site whose lpauth holds an AppJWT (extra inside its
// block), in front of reverse_proxy to the emulator.
func appJWTSite(srv *httptest.Server, extra string) string {
	p := testProxy(srv, extra, reverseProxyTo(srv), "")
	p.ClientSecret = testClientSecret()
	return p.Caddyfile()
}

// testClientSecret is the client_secret the tests give: the emulator's
// demo one, through the environment.
func testClientSecret() string {
	if os.Getenv(testClientSecretEnv) == "" {
		os.Setenv(testClientSecretEnv, ccemu.DefaultClientSecret)
	}
	return "{env." + testClientSecretEnv + "}"
}

// appJWTProxy loads appJWTSite against a new emulator whose tokens live
// lifetime, and fetches a first token with one request.
func appJWTProxy(t *testing.T, lifetime time.Duration) *ccemu.Emulator {
	t.Helper()
	emu, srv := emulator(t, ccemu.Config{TokenLifetime: lifetime})
	loadCaddy(t, appJWTSite(srv, ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	return emu
}

func TestAppJWTOneFetchForManyRequests(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, appJWTSite(srv, ""))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			r := send(t, "GET", dataPath(fmt.Sprintf("p/%d", i)), nil, "Authorization", "Basic bm90OnVzZWQ=")
			if r.status != 200 {
				t.Errorf("status %d: %s", r.status, r.body)
				return
			}
			if e := r.echo(t); e.CredentialKind != "app_jwt" || e.AuthScheme != "Bearer" {
				t.Errorf("upstream got %+v, want an AppJWT after Bearer", e)
			}
		})
	}
	wg.Wait()
	if n := emu.Counters(); n.TokenRequests != 1 || n.LoginAttempts != 0 {
		t.Fatalf("%d token requests and %d logins for 32 concurrent requests, want 1 and 0", n.TokenRequests, n.LoginAttempts)
	}
}

func TestAppJWTV1AndBareToken(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{RequireBareToken: true})
	loadCaddy(t, appJWTSite(srv, "sentinel_api v1\n\t\tauth_scheme none"))
	r := send(t, "GET", dataPath("bare"), nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if e := r.echo(t); e.CredentialKind != "app_jwt" || e.AuthScheme != "" {
		t.Fatalf("upstream got %+v, want the bare AppJWT", e)
	}
	if n := emu.Counters().TokenRequestsOK; n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}

// A short lifetime under steady traffic: renewed at 80 %, in the
// background; no request sees a 401 or waits for a fetch.
//
// The token's exp is whole seconds, so the lifetime lpauth reckons is
// between 9 and 10 s: renewed 7.2-8 s after it arrived, with at least
// 1.8 s left, which the 1 s fetch fits with room for a busy machine (a
// 6 s lifetime left as little as 0 s, and a CI run once saw it).
func TestAppJWTRenewedBeforeExpiry(t *testing.T) {
	emu := appJWTProxy(t, 10*time.Second)
	start := time.Now()
	emu.DelayNextTokens(100, time.Second) // a renewal a request waited for would show
	var mu sync.Mutex
	var slowest time.Duration
	var wg sync.WaitGroup
	for c := range 4 {
		wg.Go(func() {
			pace := time.NewTicker(20 * time.Millisecond) // steady traffic across the renewals: real time must pass
			defer pace.Stop()
			for i := 0; time.Since(start) < 17*time.Second; i++ {
				<-pace.C
				r := send(t, "GET", dataPath(fmt.Sprintf("steady/%d/%d", c, i)), nil)
				if r.status != 200 {
					t.Errorf("status %d during renewals: %s", r.status, r.body)
					return
				}
				mu.Lock()
				slowest = max(slowest, r.took)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// The warm-up's fetch, then one renewal 7.2-8 s later and one 8.2-9 s
	// after that, each taking 1 s: two or three fetches in 17 s.
	if n := emu.Counters().TokenRequestsOK; n < 2 || n > 3 {
		t.Fatalf("%d token fetches in 17 s with a 10 s lifetime, want 2 or 3", n)
	}
	// A request that waited for a fetch would take its whole second; the
	// margin is for a machine busy with other tests.
	if slowest >= 800*time.Millisecond {
		t.Fatalf("a request took %s: it waited for a renewal (each takes 1s)", slowest)
	}
	if n := emu.Counters().UnauthorizedDataCalls; n != 0 {
		t.Fatalf("%d data calls answered 401", n)
	}
}

// Sentinel fails: the current token is served until it expires, then 503,
// then lpauth recovers by itself.
func TestAppJWTFailedRenewalServesUntilExpiry(t *testing.T) {
	emu := appJWTProxy(t, 5*time.Second)
	obtained := time.Now()
	emu.FailNextTokens(1000, 500, 0)
	// Renewal is due at 4s; half a second of margin before the end at 5s
	// (the emulator rounds the lifetime down to whole seconds).
	pace := time.NewTicker(100 * time.Millisecond) // requests spread until the token's real end
	defer pace.Stop()
	for ; time.Since(obtained) < 4500*time.Millisecond; <-pace.C {
		if r := send(t, "GET", dataPath("still"), nil); r.status != 200 {
			t.Fatalf("status %d %s after the renewal failed, before the token expired", r.status, time.Since(obtained).Round(time.Millisecond))
		}
	}
	if n := emu.Counters().TokenRequestsServerError; n < 1 {
		t.Fatalf("%d failed renewals before the end: the test saw no failing renewal", n)
	}
	eventually(t, 3*time.Second, "503 once the token has expired", func() bool {
		return send(t, "GET", dataPath("expired"), nil).status == 503
	})
	emu.FailNextTokens(0, 500, 0)
	eventually(t, 20*time.Second, "recovery once Sentinel answers again", func() bool {
		return send(t, "GET", dataPath("back"), nil).status == 200
	})
}

// All tokens revoked: one fetch for a burst of 401s, every body intact.
func TestAppJWTRevokedOneFetchForABurst(t *testing.T) {
	emu := appJWTProxy(t, 8*time.Second) // window 4s, renewal at 6.4s
	time.Sleep(4200 * time.Millisecond)  // the token must age past its window in real time: then a 401 means gone
	emu.RevokeTokens()
	before := emu.Counters().TokenRequests
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			body, sum := randomBody(t, 500+i*37)
			r := send(t, "POST", dataPath(fmt.Sprintf("burst/%d", i)), body)
			if r.status != 200 {
				t.Errorf("status %d: %s", r.status, r.body)
				return
			}
			if e := r.echo(t); e.BodySHA256 != sum {
				t.Error("body altered")
			}
		})
	}
	wg.Wait()
	if n := emu.Counters().TokenRequests - before; n != 1 {
		t.Fatalf("%d token fetches for 64 requests after a revocation, want 1", n)
	}

	// A 401 for a token younger than the window is the endpoint's own.
	before = emu.Counters().TokenRequests
	for range 5 {
		if r := send(t, "GET", dataPath("always-401"), nil); r.status != 401 {
			t.Fatalf("always-401 endpoint: %d", r.status)
		}
	}
	if n := emu.Counters().TokenRequests - before; n != 0 {
		t.Fatalf("%d token fetches for an endpoint's own 401s with a young token, want 0", n)
	}
}

func TestAppJWTWrongSecretFast503s(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	t.Setenv("LPAUTH_TEST_WRONG_SECRET", "not-the-secret")
	loadCaddy(t, strings.Replace(appJWTSite(srv, ""), "{env."+testClientSecretEnv+"}", "{env.LPAUTH_TEST_WRONG_SECRET}", 1))
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		r := send(t, "GET", dataPath("x"), nil)
		if r.status != 503 || r.header.Get("Retry-After") == "" {
			t.Fatalf("status %d, Retry-After %q with a wrong client secret", r.status, r.header.Get("Retry-After"))
		}
		if r.took > time.Second {
			t.Fatalf("a 503 took %s", r.took)
		}
		if bytes.Contains(r.body, []byte("not-the-secret")) {
			t.Fatal("the secret is in the answer")
		}
	}
	if n := emu.Counters().TokenRequests; n < 1 || n > 3 {
		t.Fatalf("%d token requests in 3s with a wrong secret, want 1 (at most 3)", n)
	}
}

func TestAppJWTConfigErrors(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	base := appJWTSite(srv, "")
	for _, tc := range []struct{ extra, want string }{
		{"username bot", "username (user or application login) and client_id (AppJWT) are fields of two kinds of identity"},
		{"password pw", "password (user login) and client_id (AppJWT)"},
		{"app_key k", "app_key (application login) and client_id (AppJWT)"},
		{"refresh_interval 5m", "refresh_interval does not apply to an AppJWT"},
		{"logout_on_stop true", "logout_on_stop does not apply to an AppJWT"},
		{"access_token t", "access_token (application login) and client_id (AppJWT)"},
		{"sentinel_api v3", "sentinel_api must be v1 or v2"},
		{"auth_scheme Bear:er", "auth_scheme must be a word"},
	} {
		assertLoadError(t, strings.Replace(base, "\t\tcsds ", "\t\t"+tc.extra+"\n\t\tcsds ", 1), "caddyfile", tc.want)
	}
	assertLoadError(t, strings.Replace(base, "\t\tclient_secret {env."+testClientSecretEnv+"}\n", "", 1), "caddyfile", "client_secret is required with client_id")
}

// The admin API and the metrics show the AppJWT identity, its expiry and
// next renewal, and no token or client secret.
func TestAppJWTOperability(t *testing.T) {
	emu := appJWTProxy(t, 10*time.Minute)
	var raw []byte
	for _, path := range []string{"/lpauth/sessions", "/metrics", "/config/"} {
		resp, err := httpClient.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, secret := range emu.IssuedSecrets() {
			if len(secret) >= 8 && strings.Contains(string(b), secret) {
				t.Fatalf("a secret (%d chars) in the admin API's %s", len(secret), path)
			}
		}
		if path == "/lpauth/sessions" {
			raw = b
		}
	}
	var st []Status
	if err := json.Unmarshal(raw, &st); err != nil || len(st) != 1 {
		t.Fatalf("sessions: %s", raw)
	}
	s := st[0]
	now := time.Now()
	if !s.LoggedIn || s.Kind != "app_jwt" || s.Username != ccemu.DefaultClientID ||
		s.Expires.Before(now.Add(9*time.Minute)) || s.Expires.After(now.Add(10*time.Minute)) ||
		s.NextRefresh.Before(now.Add(7*time.Minute)) || s.NextRefresh.After(now.Add(8*time.Minute)) {
		t.Fatalf("status %+v: want app_jwt, expiry in 10m and renewal at 80%% (8m)", s)
	}
}

// Reloads that change an identity (sentinel_api v1, v2, v1, …) leave no
// connections to CC behind: a keeper let go closes its client's idle ones,
// instead of leaving them to Go's 90 s idle timeout.
func TestReloadsThatChangeIdentityLeaveNoConnections(t *testing.T) {
	emu := ccemu.New(ccemu.Config{})
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(emu)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(func() { cc.DropDomainAnswers(srv.URL) })
	const reloads = 20
	for i := range reloads {
		api := "v1"
		if i%2 == 1 {
			api = "v2"
		}
		loadCaddy(t, appJWTSite(srv, "sentinel_api "+api))
		eventually(t, 5*time.Second, "the token fetch at start", func() bool { return emu.Counters().TokenRequestsOK == int64(i+1) })
	}
	// The running identity may keep one connection (two while its Domain
	// API lookup and token fetch overlap).
	eventually(t, 5*time.Second, "the let-go identities' connections to close", func() bool { return open.Load() <= 2 })
	t.Logf("%d connections to CC open after %d reloads that changed the identity", open.Load(), reloads)
}
