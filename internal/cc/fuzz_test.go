// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

// Fuzz targets for the CC text the client reads: error bodies and
// Retry-After headers, Domain API answers, login replies (token replies and
// JWTs are in appjwt_fuzz_test.go, the Caddyfile and JSON config at the
// root). Each asserts properties, not only "does not panic", and their seed
// corpora (f.Add below and testdata/fuzz/<name>) run as ordinary tests
// under `go test`.
//
// To fuzz one target for real:
//
//	go test -run '^$' -fuzz '^FuzzParseLoginReply$' -fuzztime 60s ./internal/cc

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/http/httpguts"
)

// unsafeInLog reports runes that must not reach a log line or an error
// text from outside: control characters (CR, LF, ESC, ...), format
// characters (bidi overrides, zero-width) and line/paragraph separators.
func unsafeInLog(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

func FuzzParseAPIError(f *testing.F) {
	// Real-world bodies live in testdata/fuzz/FuzzParseAPIError; these are
	// the obvious small cases.
	f.Add(401, "", []byte(""))
	f.Add(429, "5", []byte(`{"error":{"message":"Too many login attempts, retry after 5 seconds","internalCode":429}}`))
	f.Add(401, "", []byte(`{"error":{"message":"x","internalCode":"7"}}`))
	f.Add(500, "", []byte(`upstream connect error`))
	f.Add(503, "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`{"error":null}`))
	f.Add(503, "86401", []byte(`{"error":[1,2]}`))
	f.Add(0, "-3", []byte(`{"error":{"message":"\u202egnp.exe","internalCode":1e3}}`))

	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		resp := &http.Response{StatusCode: status, Header: http.Header{}}
		if retryAfter != "" {
			resp.Header["Retry-After"] = []string{retryAfter}
		}
		e := parseAPIError("login", resp, body)
		if e.Op != "login" || e.StatusCode != status {
			t.Fatalf("op/status not preserved: %+v", e)
		}
		if e.RetryAfter < 0 || e.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter %v from %q: want 0..24h", e.RetryAfter, retryAfter)
		}
		for what, s := range map[string]string{"Message": e.Message, "ResponseStatus": e.ResponseStatus} {
			if !utf8.ValidString(s) {
				t.Fatalf("%s is not valid UTF-8: %q", what, s)
			}
			if n := utf8.RuneCountInString(strings.TrimSuffix(s, "…")); n > 200 {
				t.Fatalf("%s has %d runes, want at most 200 (+ ellipsis)", what, n)
			}
			if i := strings.IndexFunc(s, unsafeInLog); i >= 0 {
				t.Fatalf("%s carries a control character at %d: %q", what, i, s)
			}
		}
		msg := e.Error()
		if !utf8.ValidString(msg) || strings.IndexFunc(msg, unsafeInLog) >= 0 {
			t.Fatalf("Error() is not safe for a log line: %q", msg)
		}

		// A clean message in any documented shape is kept verbatim, and
		// so is a numeric internal code.
		var env struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(body, &env) != nil {
			return
		}
		var want string
		var obj struct {
			Message      *string `json:"message"`
			InternalCode *int    `json:"internalCode"`
		}
		if json.Unmarshal(env.Error, &want) != nil {
			if json.Unmarshal(env.Error, &obj) != nil || obj.Message == nil {
				return
			}
			want = *obj.Message
			if obj.InternalCode != nil && e.InternalCode != *obj.InternalCode {
				t.Fatalf("internal code %d, want %d", e.InternalCode, *obj.InternalCode)
			}
		}
		clean := utf8.ValidString(want) && utf8.RuneCountInString(want) <= 200 &&
			strings.IndexFunc(want, unsafeInLog) < 0 && want == strings.TrimSpace(want)
		if clean && e.Message != want {
			t.Fatalf("message %q, want %q", e.Message, want)
		}
	})
}

// hostileInHost are the characters that, in a host the Domain API names,
// could make a login go somewhere else than that host.
func hostileInHost(s string) bool {
	return strings.ContainsAny(s, `/@?#\`) ||
		strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// checkLoginTarget asserts that a base URL accepted by validateHost sends
// the login URL built from it (as Client.Login builds it) to u's own host,
// and that the host is plain.
func checkLoginTarget(t *testing.T, raw string, u *url.URL) {
	t.Helper()
	if u.Scheme != "https" && u.Scheme != "http" {
		t.Fatalf("%q: scheme %q", raw, u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		t.Fatalf("%q: accepted with user/query/fragment: %#v", raw, u)
	}
	if u.Host == "" || hostileInHost(u.Host) || strings.ContainsRune(u.Host, '%') {
		t.Fatalf("%q: accepted with host %q", raw, u.Host)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		t.Fatalf("%q: plain http to a non-loopback host", raw)
	}
	target := u.String() + "/api/account/" + url.PathEscape("1234") + "/login?v=" + loginVersion
	req, err := http.NewRequest(http.MethodPost, target, nil)
	if err != nil {
		t.Fatalf("%q: login URL %q does not parse: %v", raw, target, err)
	}
	if req.URL.Host != u.Host || req.URL.Scheme != u.Scheme || req.URL.User != nil {
		t.Fatalf("%q: login would go to %s://%s, not %s://%s", raw, req.URL.Scheme, req.URL.Host, u.Scheme, u.Host)
	}
}

func FuzzParseDomainReply(f *testing.F) {
	f.Add([]byte(`{"service":"agentVep","account":"1234","baseURI":"va.agentvep.liveperson.net"}`), "agentVep")
	f.Add([]byte(`{"baseURI":"127.0.0.1:9090"}`), "agentVep")
	f.Add([]byte(`{"baseURI":"[::1]:9090"}`), "agentVep")
	f.Add([]byte(`{"baseURI":"evil.com#@va.agentvep.liveperson.net"}`), "agentVep")
	f.Add([]byte(`{"baseURI":"evil.com/@va.agentvep.liveperson.net"}`), "agentVep")
	f.Add([]byte(`{"baseURI":"https://evil.com"}`), "https://user@evil.com/x")
	f.Add([]byte(`null`), "http://localhost:9090/")

	f.Fuzz(func(t *testing.T, body []byte, service string) {
		host, err := parseDomainReply(body, service)
		if err != nil {
			if host != "" {
				t.Fatalf("host %q returned with error %v", host, err)
			}
		} else {
			if host == "" || host != strings.TrimSpace(host) {
				t.Fatalf("host %q: want non-empty and trimmed", host)
			}
			// The resolver's check of an answered host must refuse
			// anything that is not a plain host[:port], and otherwise keep
			// exactly that host.
			u, err := validateHost(host, "https", hostAnswered)
			if hostileInHost(host) && err == nil {
				t.Fatalf("Domain API host %q accepted as %s", host, u)
			}
			if err == nil {
				checkLoginTarget(t, host, u)
				if u.Scheme != "https" || u.Host != host || u.Path != "" {
					t.Fatalf("Domain API host %q became %s", host, u)
				}
			}
			if u, err := validateHost(host, "http", hostAnswered); err == nil && !isLoopback(u.Hostname()) {
				t.Fatalf("Domain API host %q accepted over plain http", host)
			}
			// The same holds for a configured bare host[:port].
			if u, err := validateHost(host, "https", hostConfigured); err == nil && hostileInHost(host) && !strings.Contains(host, "://") {
				t.Fatalf("validateHost accepted configured bare host %q as %s", host, u)
			}
		}

		// validateHost on its own, as the csds and domain settings use it.
		for _, scheme := range []string{"", "https", "http"} {
			u, err := validateHost(service, scheme, hostConfigured)
			if err != nil {
				continue
			}
			checkLoginTarget(t, service, u)
			if raw := strings.TrimSpace(service); !strings.Contains(raw, "://") {
				if u.Host != raw || u.Path != "" || u.Scheme != scheme {
					t.Fatalf("bare %q with scheme %q became %s", raw, scheme, u)
				}
			}
		}
	})
}

// cookieSafe is what the Session_id value must be to be sent back exactly
// as received: RFC 6265 cookie-octets.
func cookieSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\' {
			return false
		}
	}
	return true
}

// plainToken is the alphabet of every token CC is known to issue (hex) or
// might (base64url, JWT): anything in it must be accepted.
func plainToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0) {
			return false
		}
	}
	return true
}

func FuzzParseLoginReply(f *testing.F) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	f.Add([]byte(`{"csrf":"`+hex64+`","bearer":"`+hex64+`","sessionTTl":"28800000"}`), "8A4C2E61D1E5F0A7")
	f.Add([]byte(`{"csrf":"c","bearer":"b","sessionTTl":28800000}`), "s")
	f.Add([]byte(`{"csrf":"c","bearer":"b","sessionTTl":"9223372036854775807"}`), "s")
	f.Add([]byte(`{"csrf":"c","bearer":"b","sessionTTl":"-1"}`), "s")
	f.Add([]byte(`{"csrf":"c","bearer":"b\r\nX-Injected: 1"}`), "s")
	f.Add([]byte(`{"csrf":"c","bearer":"b"}`), "s; Path=/")
	f.Add([]byte(`{"csrf":"c","bearer":"b"}`), "")
	f.Add([]byte(`{"csrf":"","bearer":"b"}`), "s")

	f.Fuzz(func(t *testing.T, body []byte, cookieValue string) {
		var cookies []*http.Cookie
		if cookieValue != "" {
			cookies = append(cookies, &http.Cookie{Name: "Session_id", Value: cookieValue})
		}
		sess, err := parseLoginReply(body, cookies, "https://va.agentvep.liveperson.net")

		var fields struct{ Bearer, CSRF string }
		decoded := json.Unmarshal(body, &fields) == nil
		if decoded && plainToken(fields.Bearer) && plainToken(fields.CSRF) && plainToken(cookieValue) && cookieSafe(cookieValue) && err != nil {
			t.Fatalf("a plain login reply was refused: %v", err)
		}
		if err != nil {
			if sess != nil {
				t.Fatal("session returned with an error")
			}
			for _, secret := range []string{fields.Bearer, fields.CSRF, cookieValue} {
				if len(secret) >= 4 && strings.Contains(err.Error(), secret) {
					t.Fatalf("error %q shows a secret", err)
				}
			}
			return
		}
		if sess.Bearer == "" || sess.CSRF == "" || sess.SessionID == "" {
			t.Fatalf("empty secret in a successful parse: %+v", *sess)
		}
		if sess.Bearer != fields.Bearer || sess.CSRF != fields.CSRF || sess.SessionID != cookieValue {
			t.Fatal("session values differ from the reply's")
		}
		if sess.TTL < 0 || sess.TTL > 30*24*time.Hour {
			t.Fatalf("TTL %v: want 0..30 days", sess.TTL)
		}
		av := "Bearer " + sess.Bearer // the credential's AuthorizationValue
		for what, v := range map[string]string{"bearer": sess.Bearer, "csrf": sess.CSRF, "Session_id": sess.SessionID} {
			if !httpguts.ValidHeaderFieldValue(v) || strings.ContainsAny(v, " \t\r\n") {
				t.Fatalf("%s is not safe in a header: %q", what, v)
			}
		}
		if !httpguts.ValidHeaderFieldValue(av) {
			t.Fatalf("Authorization value is not a valid header value: %q", av)
		}
		// Session_id goes back exactly as received (not quoted, not cut)...
		req, _ := http.NewRequest(http.MethodPost, "https://va.agentvep.liveperson.net/", nil)
		req.AddCookie(&http.Cookie{Name: "Session_id", Value: sess.SessionID})
		if got := req.Header.Get("Cookie"); got != "Session_id="+sess.SessionID {
			t.Fatalf("Session_id would be sent as %q", got)
		}
		// ...and so does csrf in the refresh body.
		payload, _ := json.Marshal(struct {
			CSRF string `json:"csrf"`
		}{sess.CSRF})
		var back struct{ CSRF string }
		if json.Unmarshal(payload, &back) != nil || back.CSRF != sess.CSRF {
			t.Fatalf("csrf does not survive the refresh body: %q", sess.CSRF)
		}
	})
}
