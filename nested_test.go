// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// nestedSite is a site-level lpauth with the demo user, and a handle block
// whose own lpauth holds an AppJWT: two lpauth handlers on every request
// under /api/account/<id>/proactive/.
func nestedSite(srv *httptest.Server, lpauthExtra string) string {
	return testSite(srv, lpauthExtra, proactiveBlock(srv, dataPath("proactive/*"))+"\thandle {\n"+reverseProxyTo(srv)+"\t}\n"+"\thandle /healthz {\n\t\tlpauth_ready\n\t}\n", "")
}

// The inner handler's credential goes upstream; the outer one's identity
// being down neither holds up nor fails the inner path.
func TestNestedInnerCredentialWithOuterDown(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(1000, 30*time.Second) // the user's logins hang
	loadCaddy(t, nestedSite(srv, "login_timeout 2s"))
	for i := range 5 {
		r := send(t, "GET", dataPath("proactive/campaigns"), nil, "Authorization", "Basic bm90OnVzZWQ=")
		if r.status != 200 {
			t.Fatalf("request %d on the AppJWT path: status %d %s", i, r.status, r.body)
		}
		if e := r.echo(t); e.CredentialKind != "app_jwt" {
			t.Fatalf("upstream got %+v, want the inner handler's AppJWT", e)
		}
		if r.took > time.Second {
			t.Fatalf("request %d on the AppJWT path took %s: it waited for the outer handler's login", i, r.took)
		}
	}
	// The probe, in a handle block after the site-level lpauth, answers
	// at once too.
	if r := send(t, "GET", "/healthz", nil); r.status != 503 || r.took > time.Second {
		t.Fatalf("probe: %d after %s, want an immediate 503 (the user is not logged in)", r.status, r.took)
	}
	// The user's path still needs the user's session.
	if r := send(t, "GET", dataPath("other"), nil); r.status != 503 {
		t.Fatalf("the user's path without a session: %d", r.status)
	}
}

// A 401 for the inner handler's credential is the inner handler's: the
// outer one asks the Login Service nothing and logs in no one.
func TestNestedOuterIgnoresInnerCredential401(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, nestedSite(srv, ""))
	eventually(t, 5*time.Second, "the logins at start", func() bool {
		c := emu.Counters()
		return c.Logins == 1 && c.TokenRequestsOK == 1
	})
	for range 10 {
		if r := send(t, "GET", dataPath("proactive/x")+"?status=401", nil); r.status != 401 {
			t.Fatalf("always-401 on the AppJWT path: %d %s", r.status, r.body)
		}
	}
	c := emu.Counters()
	if c.Refreshes != 0 || c.LoginAttempts != 1 {
		t.Fatalf("the outer handler acted on the inner one's 401s: %d refreshes, %d login attempts", c.Refreshes, c.LoginAttempts)
	}
	if c.TokenRequests > 2 {
		t.Fatalf("%d token requests for 10 always-401 answers, want at most one new one per window", c.TokenRequests)
	}
}

// readmeLayout is example.Caddyfile's proxy site: lpauth_ready at site
// level, an AppJWT identity in handle_path /proactive/*, the user session
// in handle_path /msghist/* and in a catch-all handle after them, each
// proxying to upstream.
func readmeLayout(csds *httptest.Server, upstream string) string {
	user := caddyproc.Proxy{CSDS: csds.URL, Password: "{env." + testPasswordEnv + "}", Lpauth: "login_timeout 1s"}.LpauthBlock("\t\t")
	app := caddyproc.Proxy{CSDS: csds.URL, ClientSecret: testClientSecret(), Lpauth: "login_timeout 1s"}.LpauthBlock("\t\t")
	proxy := "\t\treverse_proxy " + upstream + "\n"
	return bareSite("\tlpauth_ready /healthz\n" +
		"\thandle_path /proactive/* {\n" + app + proxy + "\t}\n" +
		"\thandle_path /msghist/* {\n" + user + proxy + "\t}\n" +
		"\thandle {\n" + user + proxy + "\t}\n")
}

// In the README's layout, an identity without a credential (Sentinel down;
// the user's login in flight) sends nothing upstream, whatever identity
// the handle block after its own holds: its requests get the 503 with
// Retry-After, also where the upstream would answer 200 to anything, and
// the other identity's paths keep working.
func TestNestedReadmeLayoutNothingUpstreamWithoutCredential(t *testing.T) {
	for _, upstream := range []string{"emulator", "answers 200 to anything"} {
		for _, c := range []struct {
			name     string
			down     func(*ccemu.Emulator)
			failing  []string // paths of the identity without a credential
			working  string   // a path of the other identity
			workKind string
		}{{
			name:     "Sentinel down",
			down:     func(emu *ccemu.Emulator) { emu.FailNextTokens(1000, 503, 0) },
			failing:  []string{"/proactive" + dataPath("campaigns")},
			working:  dataPath("hello"),
			workKind: "session",
		}, {
			name:     "user login in flight",
			down:     func(emu *ccemu.Emulator) { emu.DelayNextLogins(1000, 30*time.Second) },
			failing:  []string{"/msghist" + dataPath("conversations"), dataPath("hello")},
			working:  "/proactive" + dataPath("campaigns"),
			workKind: "app_jwt",
		}} {
			t.Run(upstream+"/"+c.name, func(t *testing.T) {
				emu, csds := emulator(t, ccemu.Config{})
				var serve http.Handler = emu
				if upstream != "emulator" {
					serve = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
				}
				up := newRecordingUpstream(t, serve)
				c.down(emu)
				loadCaddy(t, readmeLayout(csds, hostport(up.Server)))
				for i := range 3 {
					for _, path := range c.failing {
						r := send(t, "GET", path, nil, "Authorization", "Basic bm90OnVzZWQ=")
						if n, err := strconv.Atoi(r.header.Get("Retry-After")); r.status != 503 || err != nil || n < 1 {
							t.Errorf("GET %s (%d): %d with Retry-After %q, want 503 with Retry-After", path, i, r.status, r.header.Get("Retry-After"))
						}
					}
					r := send(t, "GET", c.working, nil)
					if r.status != 200 {
						t.Fatalf("GET %s, the other identity's path: %d %s", c.working, r.status, r.body)
					}
					if upstream == "emulator" {
						if e := r.echo(t); e.CredentialKind != c.workKind {
							t.Fatalf("GET %s: upstream got %+v, want the %s credential", c.working, e, c.workKind)
						}
					}
				}
				got := up.received()
				without := 0
				for _, h := range got {
					if h.Get("Authorization") == "" {
						without++
					}
				}
				if without != 0 {
					t.Errorf("%d of %d requests reached the upstream without Authorization", without, len(got))
				}
				if len(got) == 0 {
					t.Error("no request reached the upstream: the test proves nothing")
				}
			})
		}
	}
}
