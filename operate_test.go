// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Integration tests of what operators use: metrics, the admin API and the
// placeholders. Each test uses an account of its own, because the metric
// collectors are process-wide (they survive reloads on purpose).

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

func accountPath(account, rest string) string { return "/api/account/" + account + "/" + rest }

// scrape reads Caddy's metrics from the admin endpoint and returns the
// value of every lpauth sample line, keyed by name{labels}.
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "caddy_lpauth_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountWhatHappenedAndSurviveReload(t *testing.T) {
	const acct = "88880001"
	emu, srv := emulator(t, ccemu.Config{AccountID: acct})
	cfg := strings.Replace(caddyConfig(srv, "refresh_interval 1h", ""), "account_id 12345678", "account_id "+acct, 1)
	loadCaddy(t, cfg)

	send(t, "GET", accountPath(acct, "x"), nil) // a login
	emu.ExpireSessions()
	send(t, "GET", accountPath(acct, "y"), nil) // 401, a refresh says dead, re-login, retried
	emu.ExpireSessions()
	emu.FailNextLogins(1, 429, 0)
	if r := send(t, "GET", accountPath(acct, "z"), nil); r.status != 503 { // 401, dead, re-login 429
		t.Fatalf("status %d after a login 429", r.status)
	}
	send(t, "GET", accountPath(acct, "z"), nil) // backing off: 503 at once
	eventually(t, 8*time.Second, "the login after the 429 backoff", func() bool { return emu.Counters().Logins == 3 })
	// An endpoint 401 (last: its "alive" answer is trusted for 5s).
	send(t, "GET", accountPath(acct, "always-401"), nil)

	want := map[string]float64{
		`caddy_lpauth_logins_total{account_id="` + acct + `",result="ok"}`:                3,
		`caddy_lpauth_logins_total{account_id="` + acct + `",result="rate_limited"}`:      1,
		`caddy_lpauth_refreshes_total{account_id="` + acct + `",result="ok"}`:             1,
		`caddy_lpauth_refreshes_total{account_id="` + acct + `",result="unauthorized"}`:   2,
		`caddy_lpauth_upstream_unauthorized_total{account_id="` + acct + `"}`:             3,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="passed"}`:          1,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="retried"}`:         1,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="unavailable"}`:     1,
		`caddy_lpauth_unavailable_total{account_id="` + acct + `"}`:                       2,
		`caddy_lpauth_login_duration_seconds_count{account_id="` + acct + `"}`:            4,
		`caddy_lpauth_logouts_total{account_id="` + acct + `",result="ok"}`:               0,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="not_replayable"}`:  0,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="retried_late"}`:    0,
		`caddy_lpauth_logins_total{account_id="` + acct + `",result="unauthorized"}`:      0,
		`caddy_lpauth_refreshes_total{account_id="` + acct + `",result="server_error"}`:   0,
		`caddy_lpauth_logins_total{account_id="` + acct + `",result="server_error"}`:      0,
		`caddy_lpauth_logouts_total{account_id="` + acct + `",result="connection_error"}`: 0,
	}
	check := func(when string) {
		got := scrape(t)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %v, want %v", when, k, got[k], v)
			}
		}
		for k := range got {
			if strings.Contains(k, "demo-agent") || strings.Contains(k, ccemu.DefaultPassword) {
				t.Errorf("%s: a user name or secret in a metric label: %s", when, k)
			}
		}
	}
	check("after the traffic")
	if n := emu.Counters().LoginAttempts; n != 4 {
		t.Fatalf("the emulator saw %d logins, the metrics say 4", n)
	}

	// A reload keeps the counts, and the session.
	loadCaddy(t, strings.Replace(cfg, "refresh_interval 1h", "refresh_interval 2h", 1))
	check("after a reload")
	got := scrape(t)
	age, ok := got[`caddy_lpauth_session_age_seconds{account_id="`+acct+`"}`]
	if !ok || age < 0 || age > 5 {
		t.Fatalf("session age gauge %v (present %v)", age, ok)
	}
}

func TestAdminSessionsAndForcedRelogin(t *testing.T) {
	const acct = "88880002"
	emu, srv := emulator(t, ccemu.Config{AccountID: acct})
	cfg := strings.Replace(caddyConfig(srv, "refresh_interval 1h", ""), "account_id 12345678", "account_id "+acct, 1)
	loadCaddy(t, cfg)
	if r := send(t, "GET", accountPath(acct, "x"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}

	get := func() (string, []Status) {
		resp, err := http.Get("http://" + adminAddr + "/lpauth/sessions?account_id=" + acct)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var st []Status
		if resp.StatusCode != 200 || json.Unmarshal(raw, &st) != nil {
			t.Fatalf("GET /lpauth/sessions: %d %s", resp.StatusCode, raw)
		}
		return string(raw), st
	}
	raw, st := get()
	if len(st) != 1 {
		t.Fatalf("%d sessions listed, want 1: %s", len(st), raw)
	}
	s := st[0]
	if !s.LoggedIn || s.State != StateReady || s.Kind != "user" || s.AccountID != acct || s.Host != srv.URL ||
		s.LoggedInAt.IsZero() || s.NextRefresh.Before(time.Now().Add(59*time.Minute)) || s.ConsecutiveFailures != 0 {
		t.Fatalf("status %+v", s)
	}
	for _, secret := range emu.IssuedSecrets() {
		if strings.Contains(raw, secret) {
			t.Fatalf("a secret (%d chars) in the admin API's answer", len(secret))
		}
	}

	resp, err := http.Post("http://"+adminAddr+"/lpauth/sessions/relogin?account_id="+acct, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok": true`) {
		t.Fatalf("relogin: %d %s", resp.StatusCode, body)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins after one forced re-login, want 2", n)
	}
	// CC ended the replaced session at the new login (one session per
	// user); its logout then finds nothing to end.
	if c := emu.Counters(); c.SessionsEndedByLogin != 1 || c.LiveSessions != 1 {
		t.Fatalf("after a forced re-login: %+v, want the replaced session ended and one live", c)
	}
	if r := send(t, "GET", accountPath(acct, "x"), nil); r.status != 200 || emu.Counters().LoginAttempts != 2 {
		t.Fatalf("after relogin: %d, %d logins", r.status, emu.Counters().LoginAttempts)
	}
	_, st = get()
	if !st[0].LoggedInAt.After(s.LoggedInAt) {
		t.Fatal("logged_in_at did not move forward")
	}

	// Wrong method, unknown account.
	if resp, err := http.Get("http://" + adminAddr + "/lpauth/sessions/relogin"); err != nil || resp.StatusCode != 405 {
		t.Fatalf("GET relogin: %v %v", err, resp.StatusCode)
	}
	if resp, err := http.Post("http://"+adminAddr+"/lpauth/sessions/relogin?account_id=nope", "", nil); err != nil || resp.StatusCode != 404 {
		t.Fatalf("relogin of an unknown account: %v %v", err, resp.StatusCode)
	}
}

func TestPlaceholders(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	host := strings.TrimPrefix(srv.URL, "http://")
	cfg := strings.Replace(caddyConfig(srv, "", ""), "\treverse_proxy "+host+"\n", "\treverse_proxy "+host+` {
		header_down X-Account {http.lpauth.account_id}
		header_down X-Domain {http.lpauth.domain}
		header_down X-Age {http.lpauth.session_age}
		header_down X-Retried {http.lpauth.retried}
	}
`, 1)
	loadCaddy(t, cfg)
	r := send(t, "GET", dataPath("x"), nil)
	if r.status != 200 || r.header.Get("X-Account") != ccemu.DefaultAccountID || r.header.Get("X-Domain") != host ||
		r.header.Get("X-Retried") != "false" || r.header.Get("X-Age") != "0" {
		t.Fatalf("placeholders on a plain request: %d %v", r.status, r.header)
	}
	// The age is in whole seconds of the real clock: one must pass.
	time.Sleep(1100 * time.Millisecond)
	if r = send(t, "GET", dataPath("x"), nil); r.header.Get("X-Age") != "1" {
		t.Fatalf("session age after 1.1s: %q", r.header.Get("X-Age"))
	}
	emu.ExpireSessions()
	r = send(t, "GET", dataPath("x"), nil)
	if r.status != 200 || r.header.Get("X-Retried") != "true" || r.header.Get("X-Age") != "0" {
		t.Fatalf("placeholders on a retried request (the new session's age): %d %v", r.status, r.header)
	}
}

// A reload that replaces an identity (a rotated password) while a request
// still holds the old session: /lpauth/sessions lists the old identity,
// "replaced" with its request in flight, until it is released; a relogin
// acts on the live identity only.
func TestAdminListsReplacedIdentityUntilReleased(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "", ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d", r.status)
	}
	slow := make(chan int)
	go func() { slow <- send(t, "GET", dataPath("slow")+"?delay=3s", nil).status }()
	eventually(t, 5*time.Second, "the slow request to hold the session", func() bool {
		st := adminSessions(t)
		return len(st) == 1 && st[0].InFlight == 1
	})

	const rotated = "rotated-admin-pw"
	if err := emu.SetPassword(ccemu.DefaultUsername, rotated, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LPAUTH_TEST_ROTATED", rotated)
	loadCaddy(t, strings.Replace(caddyConfig(srv, "", ""), "{env."+testPasswordEnv+"}", "{env.LPAUTH_TEST_ROTATED}", 1))
	eventually(t, 5*time.Second, "the new identity's login", func() bool { return emu.Counters().Logins == 2 })
	st := adminSessions(t)
	if len(st) != 2 || st[0].Replaced || !st[1].Replaced || st[1].InFlight != 1 {
		t.Fatalf("sessions during the old identity's request: %+v; want the new one, then the old one replaced with 1 in flight", st)
	}

	resp, err := http.Post("http://"+adminAddr+"/lpauth/sessions/relogin", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var results []reloginResult
	if err := json.NewDecoder(resp.Body).Decode(&results); err != nil || len(results) != 1 || results[0].Replaced {
		t.Fatalf("relogin answered %v %+v; want the live identity only", err, results)
	}
	resp.Body.Close()

	if status := <-slow; status != 200 {
		t.Fatalf("the request that held the old session: %d", status)
	}
	eventually(t, 5*time.Second, "the old identity to be released", func() bool { return len(adminSessions(t)) == 1 })
}

// adminSessions reads GET /lpauth/sessions.
func adminSessions(t *testing.T) []Status {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/lpauth/sessions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st []Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
