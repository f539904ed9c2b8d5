// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// What the request that reaches upstream carries, through a real Caddy:
// the retry after a re-login sees the request as it came, and a client's
// Connection header cannot make the bearer hop-by-hop.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// recordingUpstream serves the emulator's data API (or any handler) and
// keeps the headers of every request it received, as reverse_proxy sent
// them.
type recordingUpstream struct {
	*httptest.Server
	mu  sync.Mutex
	got []http.Header
}

func newRecordingUpstream(t *testing.T, serve http.Handler) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, r.Header.Clone())
		u.mu.Unlock()
		serve.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

// received returns the headers recorded since the last call.
func (u *recordingUpstream) received() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	got := u.got
	u.got = nil
	return got
}

// A handler after lpauth that edits a header value in place (a replace)
// must see the value as the client sent it on the retry too, not its own
// first edit.
func TestRequestRetryKeepsHeaderValuesAsTheyCame(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	up := newRecordingUpstream(t, emu)
	loadCaddy(t, testSite(srv, "", "\thandle {\n\t\trequest_header X-Tag \"a\" \"ab\"\n\t\treverse_proxy "+hostport(up.Server)+"\n\t}\n", ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	up.received()

	emu.ExpireSessions()
	if r := send(t, "GET", dataPath("tagged"), nil, "X-Tag", "a"); r.status != 200 {
		t.Fatalf("retried request: %d %s", r.status, r.body)
	}
	got := up.received()
	if len(got) != 2 {
		t.Fatalf("upstream saw %d requests, want the first attempt and one retry", len(got))
	}
	for i, h := range got {
		if v := h.Values("X-Tag"); !slices.Equal(v, []string{"ab"}) {
			t.Errorf("attempt %d reached upstream with X-Tag %q, want exactly [\"ab\"]", i+1, v)
		}
	}
	if n := emu.Counters(); n.LoginAttempts != 2 {
		t.Fatalf("%+v; want one re-login", n)
	}
}

// A rewrite between lpauth and the proxy changes the path on the first
// attempt; the retry after a re-login must run it on the path as it came,
// not on its own first result (which would rewrite it twice). Beside it,
// lpauth right before the proxy (no copy taken) sends the retry as it came
// too.
func TestRequestRetryAfterRewriteSeesPathAsItCame(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, testSite(srv, "", "\thandle /api/account/"+ccemu.DefaultAccountID+"/rw/* {\n\t\turi replace /rw/ /rw/again/\n\t\treverse_proxy "+hostport(srv)+"\n\t}\n"+
		"\thandle {\n\t\treverse_proxy "+hostport(srv)+"\n\t}\n", ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	for _, tc := range []struct{ path, want string }{
		{dataPath("rw/x?q=1"), "/api/account/" + ccemu.DefaultAccountID + "/rw/again/x"},
		{dataPath("plain/x?q=1"), "/api/account/" + ccemu.DefaultAccountID + "/plain/x"},
	} {
		emu.ExpireSessions()
		before := emu.Counters().LoginAttempts
		r := send(t, "GET", tc.path, nil, "X-Tag", "kept")
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", tc.path, r.status, r.body)
		}
		if e := r.echo(t); e.Path != tc.want || e.Query != "q=1" {
			t.Errorf("the retry of %s reached upstream as %s?%s, want %s?q=1", tc.path, e.Path, e.Query, tc.want)
		}
		if n := emu.Counters().LoginAttempts - before; n != 1 {
			t.Fatalf("%d logins for %s, want one re-login (so the request was retried)", n, tc.path)
		}
	}
}

// A client's Connection header naming Authorization, in any case, in a
// list or in several headers, must not strip the injected bearer; the other
// tokens keep their meaning (a header they name is still not forwarded, an
// upgrade is still one).
func TestRequestConnectionHeaderCannotDropBearer(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	up := newRecordingUpstream(t, emu)
	loadCaddy(t, testSite(srv, "", reverseProxyTo(up.Server), ""))
	plain := send(t, "GET", dataPath("plain"), nil)
	if plain.status != 200 {
		t.Fatalf("warm-up: %d %s", plain.status, plain.body)
	}
	bearer := plain.echo(t).BearerFingerprint
	up.received()

	for _, tc := range []struct {
		name       string
		connection []string
		upgrade    bool
	}{
		{"alone", []string{"Authorization"}, false},
		{"lower case in a list", []string{"keep-alive, authorization"}, false},
		{"with a hop-by-hop header", []string{"keep-alive, AUTHORIZATION, X-Request-Id"}, false},
		{"several headers", []string{"keep-alive", "Authorization ,X-Request-Id", "aUtHoRiZaTiOn"}, false},
		{"with an upgrade", []string{"Upgrade, Authorization"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, proxyURL+dataPath("connection"), nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header["Connection"] = tc.connection
			req.Header.Set("Authorization", "Basic Zm9vOmJhcg==")
			req.Header.Set("X-Request-Id", "hop")
			if tc.upgrade {
				req.Header.Set("Upgrade", "lpauth-test")
			}
			r := do(t, req)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			e := r.echo(t)
			if !e.AuthorizationSent || e.BearerFingerprint != bearer {
				t.Fatalf("upstream did not get our bearer: %+v", e)
			}
			got := up.received()
			if len(got) != 1 {
				t.Fatalf("upstream saw %d requests, want 1", len(got))
			}
			named := slices.ContainsFunc(tc.connection, func(v string) bool { return strings.Contains(strings.ToLower(v), "x-request-id") })
			if hop := got[0].Get("X-Request-Id") != ""; hop == named {
				t.Errorf("X-Request-Id forwarded: %v; the client's Connection named it: %v", hop, named)
			}
			if u := got[0].Get("Upgrade"); tc.upgrade != (u == "lpauth-test") {
				t.Errorf("Upgrade %q reached upstream; the client asked for one: %v", u, tc.upgrade)
			}
		})
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.UnauthorizedDataCalls != 0 || n.Refreshes != 0 {
		t.Fatalf("%+v; want 1 login, no 401 and no liveness check", n)
	}
}

// do sends req to the proxy.
func do(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: body}
}

// What is left of the client's Connection header(s): every other token, in
// order, and no header at all when Authorization was all it named.
func TestRequestConnectionTokensLeft(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"keep-alive"}, []string{"keep-alive"}},
		{[]string{"Authorization"}, nil},
		{[]string{" authorization ,AUTHORIZATION"}, nil},
		{[]string{"keep-alive, authorization, X-Hop"}, []string{"keep-alive, X-Hop"}},
		{[]string{"Upgrade", "Authorization", "x-hop ,authorization"}, []string{"Upgrade", "x-hop"}},
		{[]string{"Authorizations, Authorization-X"}, []string{"Authorizations, Authorization-X"}},
	} {
		h := http.Header{"Connection": slices.Clone(tc.in)}
		keepAuthorizationEndToEnd(h)
		got, ok := h["Connection"]
		if !slices.Equal(got, tc.want) || ok != (tc.want != nil) {
			t.Errorf("Connection %q became %q (present: %v), want %q", tc.in, got, ok, tc.want)
		}
	}
}

// A client's Authorization trailer never goes upstream, announced or sent,
// whether lpauth buffered the body for a retry or streamed it; other
// trailers pass.
func TestRequestAuthorizationTrailerIsDropped(t *testing.T) {
	type seen struct {
		announced, sent []string // trailer names announced, and those with a value after the body
		auth            string
	}
	var mu sync.Mutex
	var got []seen
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var s seen
		for k := range r.Trailer {
			s.announced = append(s.announced, k)
		}
		io.Copy(io.Discard, r.Body)
		for k, v := range r.Trailer {
			if len(v) > 0 {
				s.sent = append(s.sent, k)
			}
		}
		s.auth = r.Trailer.Get("Authorization")
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}))
	t.Cleanup(up.Close)
	_, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, testSite(srv, "retry_body_limit 1KiB", reverseProxyTo(up), ""))
	for _, tc := range []struct {
		name string
		size int
	}{{"buffered for a retry", 100}, {"streamed", 4096}} {
		t.Run(tc.name, func(t *testing.T) {
			body := strings.Repeat("x", tc.size)
			req, err := http.NewRequest(http.MethodPost, proxyURL+dataPath("trailer"), io.NopCloser(strings.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1 // chunked, so trailers can follow
			req.Trailer = http.Header{"Authorization": {"Bearer client-trailer-token"}, "X-Checksum": {"abc"}}
			if r := do(t, req); r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			mu.Lock()
			s := got[len(got)-1]
			mu.Unlock()
			if slices.Contains(s.announced, "Authorization") || slices.Contains(s.sent, "Authorization") || s.auth != "" {
				t.Errorf("upstream got the client's Authorization trailer: announced %v, sent %v", s.announced, s.sent)
			}
			if !slices.Contains(s.sent, "X-Checksum") {
				t.Errorf("the other trailer did not pass: announced %v, sent %v", s.announced, s.sent)
			}
		})
	}
}
