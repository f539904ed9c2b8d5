// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestClientUserLoginRefreshLogout(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	c := testClient(t, srv)

	s, err := c.Login(bg(), userCreds())
	if err != nil {
		t.Fatal(err)
	}
	if !hex64.MatchString(s.Bearer) || !hex64.MatchString(s.CSRF) || s.SessionID == "" {
		t.Fatalf("login gave an incomplete session: bearer %d chars, csrf %d chars, Session_id set %v", len(s.Bearer), len(s.CSRF), s.SessionID != "")
	}
	if s.TTL != 8*time.Hour {
		t.Errorf("TTL = %s, want the emulator's 8h (sessionTTl is a string of ms)", s.TTL)
	}
	if s.BaseURL != srv.URL {
		t.Errorf("BaseURL = %q, want the host the Domain API named, %q", s.BaseURL, srv.URL)
	}
	if got := dataCall(t, srv, s); got != 200 {
		t.Fatalf("data call with the new bearer: %d", got)
	}
	if err := c.Refresh(bg(), ccemu.DefaultAccountID, s); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if err := c.Logout(bg(), ccemu.DefaultAccountID, s); err != nil {
		t.Fatalf("logout: %v", err)
	}
	err = c.Refresh(bg(), ccemu.DefaultAccountID, s)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("refresh after logout: %v, want a 401 APIError", err)
	}
	if got := dataCall(t, srv, s); got != 401 {
		t.Fatalf("data call after logout: %d, want 401", got)
	}
	n := emu.Counters()
	if n.Logins != 1 || n.RefreshesOK != 1 || n.Logouts != 1 {
		t.Fatalf("emulator saw %+v", n)
	}
}

func TestClientApplicationLogin(t *testing.T) {
	t.Parallel()
	_, srv := emulator(t, ccemu.Config{})
	c := testClient(t, srv)
	s, err := c.Login(bg(), appCreds())
	if err != nil {
		t.Fatal(err)
	}
	if got := dataCall(t, srv, s); got != 200 {
		t.Fatalf("data call with the app session: %d", got)
	}
	bad := appCreds()
	bad.Secret = "wrong"
	_, err = c.Login(bg(), bad)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("app login with a wrong secret: %v, want a 401 APIError", err)
	}
}

func TestClientDomainLookup(t *testing.T) {
	t.Parallel()
	for _, arrayForm := range []bool{false, true} {
		emu, srv := emulator(t, ccemu.Config{DomainArrayForm: arrayForm})
		c := testClient(t, srv)
		for range 3 {
			if _, err := c.Login(bg(), userCreds()); err != nil {
				t.Fatalf("array form %v: %v", arrayForm, err)
			}
		}
		if n := emu.Counters().DomainLookups; n != 1 {
			t.Errorf("array form %v: %d Domain API lookups for 3 logins, want 1 (cached)", arrayForm, n)
		}
	}
}

func TestClientFixedDomainSkipsDomainAPI(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	// The Domain API base points nowhere: only the fixed domain may be used.
	c, err := NewClient(ClientConfig{CSDS: "http://127.0.0.1:1", Domain: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(bg(), userCreds()); err != nil {
		t.Fatal(err)
	}
	if n := emu.Counters().DomainLookups; n != 0 {
		t.Fatalf("%d Domain API lookups with a fixed domain", n)
	}
	// A bare host takes the scheme of csds.
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err = NewClient(ClientConfig{CSDS: "http://127.0.0.1:1", Domain: host})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Login(bg(), userCreds()); err != nil {
		t.Fatal(err)
	}
}

func TestClientCSRFMismatch(t *testing.T) {
	t.Parallel()
	_, srv := emulator(t, ccemu.Config{})
	c := testClient(t, srv)
	s, err := c.Login(bg(), userCreds())
	if err != nil {
		t.Fatal(err)
	}
	forged := *s
	forged.CSRF = strings.Repeat("0", 64)
	err = c.Refresh(bg(), ccemu.DefaultAccountID, &forged)
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.InternalCode != 10 {
		t.Fatalf("refresh with a wrong csrf: %#v", err)
	}
	if !strings.Contains(apiErr.Message, "CSRF") || apiErr.ResponseStatus != "UNAUTHORIZED" {
		t.Fatalf("envelope not parsed: %+v", apiErr)
	}
}

func TestSchemeRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		csds, domain string
		wantErr      string
	}{
		{csds: "https://api.liveperson.net"},
		{csds: "http://127.0.0.1:9090"},
		{csds: "http://localhost:9090"},
		{csds: "http://[::1]:9090"},
		{csds: "http://api.liveperson.net", wantErr: "plain http is allowed only for loopback"},
		{csds: "ftp://api.liveperson.net", wantErr: "scheme must be https"},
		{csds: "api.liveperson.net", wantErr: "missing scheme"},
		{csds: "https://api.liveperson.net", domain: "va.agentvep.liveperson.net"},
		{csds: "https://api.liveperson.net", domain: "http://va.agentvep.liveperson.net", wantErr: "domain:"},
		{csds: "http://127.0.0.1:9090", domain: "va.agentvep.liveperson.net", wantErr: "plain http"},
		{csds: "https://user:pw@api.liveperson.net", wantErr: "only scheme, host"},
	} {
		_, err := NewClient(ClientConfig{CSDS: tc.csds, Domain: tc.domain})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("csds %q domain %q: unexpected error %v", tc.csds, tc.domain, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("csds %q domain %q: error %v, want one containing %q", tc.csds, tc.domain, err, tc.wantErr)
		}
	}
}

// A plain-http Domain API that names a non-loopback host must not make the
// client send credentials there in clear.
func TestSchemeRuleAppliesToDomainAPIAnswer(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{BaseURI: "va.agentvep.liveperson.net"})
	_, err := testClient(t, srv).Login(bg(), userCreds())
	if err == nil || !strings.Contains(err.Error(), "plain http is allowed only for loopback") {
		t.Fatalf("login through an http Domain API naming a remote host: %v", err)
	}
	if n := emu.Counters().LoginAttempts; n != 0 {
		t.Fatalf("%d login attempts reached the emulator", n)
	}
}

func TestParseAPIError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, retryAfter string
		want                   APIError
	}{
		{"documented envelope",
			`{"error":{"time":"Sep 22, 2016 4:10:15 PM","message":"CSRF token invalid!","internalCode":10,"responseStatus":"UNAUTHORIZED"}}`, "",
			APIError{StatusCode: 401, InternalCode: 10, Message: "CSRF token invalid!", ResponseStatus: "UNAUTHORIZED"}},
		{"ISO time, no responseStatus",
			`{"error":{"time":"2018-03-21T13:27:24.985-04:00","message":"Not authorized","internalCode":1}}`, "",
			APIError{StatusCode: 401, InternalCode: 1, Message: "Not authorized"}},
		{"plain string error",
			`{"error":"LeLogin1 failed - invalid url received from app server"}`, "",
			APIError{StatusCode: 401, Message: "LeLogin1 failed - invalid url received from app server"}},
		{"internal code as a string", `{"error":{"message":"x","internalCode":"7"}}`, "",
			APIError{StatusCode: 401, InternalCode: 7, Message: "x"}},
		{"html body", `<html><body>Bad gateway</body></html>`, "",
			APIError{StatusCode: 401}},
		{"plain text body", `upstream connect error`, "",
			APIError{StatusCode: 401, Message: "upstream connect error"}},
		{"empty body with Retry-After", ``, "7",
			APIError{StatusCode: 401, RetryAfter: 7 * time.Second}},
	} {
		resp := &http.Response{StatusCode: 401, Header: http.Header{}}
		if tc.retryAfter != "" {
			resp.Header.Set("Retry-After", tc.retryAfter)
		}
		got := parseAPIError("login", resp, []byte(tc.body))
		tc.want.Op = "login"
		if *got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, *got, tc.want)
		}
	}
	if d := parseRetryAfter(time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat), time.Now()); d < 80*time.Second || d > 91*time.Second {
		t.Errorf("Retry-After as an HTTP date: %s", d)
	}
}

// Credentials and sessions end up in %v by accident; they must not show
// their secrets there.
func TestSecretsNotFormatted(t *testing.T) {
	t.Parallel()
	_, srv := emulator(t, ccemu.Config{})
	s, err := testClient(t, srv).Login(bg(), userCreds())
	if err != nil {
		t.Fatal(err)
	}
	cr := appCreds()
	cr.Password = ccemu.DefaultPassword
	text := fmt.Sprintf("%v %+v %#v %s %v %+v %#v", cr, cr, cr, s, s, s, s)
	for _, secret := range []string{ccemu.DefaultPassword, ccemu.DefaultAppSecret, s.Bearer, s.CSRF, s.SessionID} {
		if strings.Contains(text, secret) {
			t.Fatalf("a secret shows in formatted output: %s", text)
		}
	}
}
