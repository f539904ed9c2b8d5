// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
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
