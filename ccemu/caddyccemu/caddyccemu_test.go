// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyccemu

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`ccemu {
		account_id   999
		session_ttl  2m
		login_rate   5 30s
		base_uri     localhost:8080
		control_path /_ccemu
		domain_array_form
		client_id      app-1
		client_secret  app-1-secret
		token_lifetime 5s
		token_rate     3 2s
		require_bare_token
		multiple_sessions
		ums_idle_timeout 90s
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		AccountID: "999", SessionTTL: caddy.Duration(2 * time.Minute), LoginRate: 5,
		LoginRateWindow: caddy.Duration(30 * time.Second), BaseURI: "localhost:8080",
		ControlPath: "/_ccemu", DomainArrayForm: true,
		ClientID: "app-1", ClientSecret: "app-1-secret", TokenLifetime: caddy.Duration(5 * time.Second),
		TokenRate: 3, TokenRateWindow: caddy.Duration(2 * time.Second), RequireBareToken: true,
		MultipleSessions: true, UMSIdleTimeout: caddy.Duration(90 * time.Second),
	}
	if h != want {
		t.Errorf("got %+v\nwant %+v", h, want)
	}

	var empty Handler
	if err := empty.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`ccemu`)); err != nil || empty != (Handler{}) {
		t.Errorf("bare directive: %v %+v", err, empty)
	}

	for input, wantErr := range map[string]string{
		"ccemu {\n bogus 1\n}":               "bogus",
		"ccemu {\n session_ttl soon\n}":      "session_ttl",
		"ccemu {\n login_rate many\n}":       "login_rate",
		"ccemu {\n login_rate 1 2 3\n}":      "argument",
		"ccemu {\n account_id\n}":            "argument",
		"ccemu {\n control_path x\n}":        "control_path",
		"ccemu extra":                        "argument",
		"ccemu {\n login_rate 2 never\n}":    "window",
		"ccemu {\n token_lifetime 0s\n}":     "token_lifetime",
		"ccemu {\n token_rate x\n}":          "token_rate",
		"ccemu {\n token_rate 1 0s\n}":       "token_rate",
		"ccemu {\n client_secret\n}":         "argument",
		"ccemu {\n require_bare_token on\n}": "argument",
		"ccemu {\n multiple_sessions yes\n}": "argument",
		"ccemu {\n ums_idle_timeout -1s\n}":  "ums_idle_timeout",
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%q: error %v, want one mentioning %q", input, err, wantErr)
		}
	}
}

// A reload provisions a new Handler before cleaning up the old one; both
// must share one emulator, and the newest tuning must win.
func TestPoolSurvivesReload(t *testing.T) {
	old := &Handler{AccountID: "pool-test", ControlPath: "/_ccemu"}
	if err := old.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	body := strings.NewReader(`{"username":"demo-agent","password":"demo-password"}`)
	_ = old.ServeHTTP(rec, httptest.NewRequest("POST", "/api/account/pool-test/login?v=1.3", body), nil)
	if rec.Code != 200 {
		t.Fatalf("login: %d %s", rec.Code, rec.Body)
	}

	neu := &Handler{AccountID: "pool-test", SessionTTL: caddy.Duration(time.Minute)}
	if err := neu.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if neu.emu != old.emu || neu.emu.Counters().Logins != 1 {
		t.Fatalf("emulator not shared across reload: %+v", neu.emu.Counters())
	}
	rec = httptest.NewRecorder()
	body = strings.NewReader(`{"username":"demo-agent","password":"demo-password"}`)
	_ = neu.ServeHTTP(rec, httptest.NewRequest("POST", "/api/account/pool-test/login", body), nil)
	if !strings.Contains(rec.Body.String(), `"sessionTTl":"60000"`) {
		t.Errorf("new session_ttl not applied: %s", rec.Body)
	}
	// neu has no control_path, so the path reaches the emulator (404).
	rec = httptest.NewRecorder()
	_ = neu.ServeHTTP(rec, httptest.NewRequest("GET", "/_ccemu/counters", nil), nil)
	if rec.Code != http.StatusNotFound {
		t.Errorf("control path without control_path: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	_ = old.ServeHTTP(rec, httptest.NewRequest("GET", "/_ccemu/counters", nil), nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"logins":2`) {
		t.Errorf("control API: %d %s", rec.Code, rec.Body)
	}
	if err := neu.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if _, ok := pool.References(neu.key); ok {
		t.Error("pool entry kept after the last Cleanup")
	}
}

// The Sentinel settings reach the emulator: the client at creation, the
// lifetime again on every provision.
func TestSentinelSettings(t *testing.T) {
	h := &Handler{AccountID: "sentinel-test", ClientID: "app-1", ClientSecret: "app-1-secret",
		TokenLifetime: caddy.Duration(5 * time.Second)}
	if err := h.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	token := func(secret string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/sentinel/api/v2/account/sentinel-test/app/token",
			strings.NewReader("grant_type=client_credentials&client_id=app-1&client_secret="+secret))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		_ = h.ServeHTTP(rec, req, nil)
		return rec
	}
	if rec := token("app-1-secret"); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"expires_in":5}`) {
		t.Errorf("token: %d %s", rec.Code, rec.Body)
	}
	if rec := token("demo-client-secret"); rec.Code != 401 {
		t.Errorf("default secret still accepted: %d", rec.Code)
	}
	if err := (&Handler{TokenRate: -1}).Provision(caddy.Context{}); err == nil {
		t.Error("negative token_rate accepted")
	}
}

// multiple_sessions reaches the emulator, and a reload without it puts
// CC's rule back.
func TestMultipleSessionsSetting(t *testing.T) {
	login := func(h *Handler) string {
		rec := httptest.NewRecorder()
		body := strings.NewReader(`{"username":"demo-agent","password":"demo-password"}`)
		_ = h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/account/ms-test/login?v=1.3", body), nil)
		var r struct{ Bearer string }
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &r) != nil {
			t.Fatalf("login: %d %s", rec.Code, rec.Body)
		}
		return r.Bearer
	}
	alive := func(h *Handler, bearer string) bool {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/api/account/ms-test/x", nil)
		req.Header.Set("Authorization", "Bearer "+bearer)
		_ = h.ServeHTTP(rec, req, nil)
		return rec.Code == 200
	}
	several := &Handler{AccountID: "ms-test", MultipleSessions: true}
	if err := several.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	first := login(several)
	login(several)
	if !alive(several, first) {
		t.Fatal("multiple_sessions: the first session ended at the second login")
	}
	one := &Handler{AccountID: "ms-test"}
	if err := one.Provision(caddy.Context{}); err != nil {
		t.Fatal(err)
	}
	_ = several.Cleanup()
	t.Cleanup(func() { _ = one.Cleanup() })
	second := login(one)
	login(one)
	if alive(one, second) {
		t.Fatal("without multiple_sessions a second login left the first session alive")
	}
}
