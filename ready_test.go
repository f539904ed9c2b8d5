// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// lpauth_ready through a real Caddy and the emulator. Logins are delayed
// at the emulator (or fail) wherever a test needs "no credential yet", so
// the tests hold whether or not a config logs in as it starts.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// probe asks path for readiness and decodes the answer.
func probe(t *testing.T, path string) (int, readyReport) {
	t.Helper()
	r := send(t, "GET", path, nil)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("probe: status %d, Content-Type %q, body %q", r.status, ct, r.body)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("probe: Cache-Control %q, want no-store", cc)
	}
	if ra := r.header.Get("Retry-After"); ra != "" {
		t.Errorf("probe: Retry-After %q, want none", ra)
	}
	var rep readyReport
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatalf("probe: status %d, body %q: %v", r.status, r.body, err)
	}
	if want := rep.Ready; (r.status == http.StatusOK) != want || (!want && r.status != http.StatusServiceUnavailable) {
		t.Fatalf("probe: status %d with ready=%v", r.status, rep.Ready)
	}
	return r.status, rep
}

// states is "mode:name=state ..." of a readiness answer.
func states(rep readyReport) string {
	var parts []string
	for _, id := range rep.Identities {
		if id.AccountID != ccemu.DefaultAccountID {
			parts = append(parts, "account "+id.AccountID+"!")
		}
		parts = append(parts, id.Kind+":"+id.Name+"="+id.State)
	}
	return strings.Join(parts, " ")
}

// bareSite is the test site with only handlers (whole lines), no
// site-level lpauth.
func bareSite(handlers string) string {
	return fmt.Sprintf("{\n\tadmin %s\n\t%sskip_install_trust\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\nhttp://%s {\n%s}\n", adminAddr, portsGlobal, proxyAddr, handlers)
}

var userIdentity = "user:" + ccemu.DefaultUsername

// The site-level form: before a session 503 with the identity logging in,
// answered at once and without a login; after one proxied request 200.
func TestReadySiteLevel(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(2, 3*time.Second)
	// lpauth_ready written after lpauth: the directive order puts it first.
	loadCaddy(t, testSite(srv, "", "\tlpauth_ready /healthz\n"+reverseProxyTo(srv), ""))

	for range 5 {
		start := time.Now()
		status, rep := probe(t, "/healthz")
		if took := time.Since(start); took > time.Second {
			t.Fatalf("the probe took %s while a login is delayed 3s: it waited for the login", took)
		}
		if status != http.StatusServiceUnavailable || states(rep) != userIdentity+"=logging_in" {
			t.Fatalf("before a session: %d %s, want 503 %s=logging_in", status, states(rep), userIdentity)
		}
	}
	// A login started at config start may be in flight, but none is done,
	// and the probes started none of their own.
	if n := emu.Counters(); n.Logins != 0 || n.LoginAttempts > 1 {
		t.Fatalf("after 5 probes: %d logins, %d attempts; want 0 and at most one (at start)", n.Logins, n.LoginAttempts)
	}

	if r := send(t, "GET", dataPath("first"), nil); r.status != http.StatusOK {
		t.Fatalf("proxied request: %d %s", r.status, r.body)
	}
	status, rep := probe(t, "/healthz")
	if status != http.StatusOK || states(rep) != userIdentity+"=ready" || rep.Identities[0].ConsecutiveFailures != 0 {
		t.Fatalf("after a login: %d %+v, want 200 and ready", status, rep)
	}
	if n := emu.Counters().Logins; n != 1 {
		t.Fatalf("%d logins, want 1", n)
	}
}

// A wrong password: the probe says backing_off, and shows no secret.
func TestReadyBackingOff(t *testing.T) {
	const wrong = "not-the-password-4242"
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyproc.Proxy{
		Admin:    adminAddr,
		Global:   portsGlobal + "skip_install_trust",
		Addr:     proxyAddr,
		CSDS:     srv.URL,
		Password: wrong,
		Handlers: "\tlpauth_ready /healthz\n" + reverseProxyTo(srv),
	}.Caddyfile())

	if r := send(t, "GET", dataPath("denied"), nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("proxied request with a wrong password: %d %s", r.status, r.body)
	}
	r := send(t, "GET", "/healthz", nil)
	for _, secret := range append([]string{wrong, ccemu.DefaultPassword}, emu.IssuedSecrets()...) {
		if secret != "" && strings.Contains(string(r.body), secret) {
			t.Fatalf("the probe's body shows a secret: %s", r.body)
		}
	}
	status, rep := probe(t, "/healthz")
	if status != http.StatusServiceUnavailable || states(rep) != userIdentity+"=backing_off" {
		t.Fatalf("after a failed login: %d %s, want 503 %s=backing_off", status, states(rep), userIdentity)
	}
	id := rep.Identities[0]
	if id.ConsecutiveFailures < 1 || time.Until(id.BackoffUntil) < 30*time.Second {
		t.Fatalf("after a 401 login: %+v, want a failure and a backoff of about a minute", id)
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d login attempts, want 1 (probes start none, the backoff holds)", n)
	}
}

// Two identities, the AppJWT one nested in a handle block: 503 until both
// have a credential.
func TestReadyTwoIdentities(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(2, time.Second)
	emu.DelayNextTokens(2, 5*time.Second)
	loadCaddy(t, testSite(srv, "", "\tlpauth_ready /healthz\n"+
		proactiveBlock(srv, dataPath("proactive/*"))+reverseProxyTo(srv), ""))
	appIdentity := "app_jwt:" + ccemu.DefaultClientID

	status, rep := probe(t, "/healthz")
	if status != http.StatusServiceUnavailable || states(rep) != userIdentity+"=logging_in "+appIdentity+"=logging_in" {
		t.Fatalf("before any credential: %d %s, want 503 and both logging in", status, states(rep))
	}
	if r := send(t, "GET", dataPath("user"), nil); r.status != http.StatusOK {
		t.Fatalf("user request: %d %s", r.status, r.body)
	}
	status, rep = probe(t, "/healthz")
	if status != http.StatusServiceUnavailable || states(rep) != userIdentity+"=ready "+appIdentity+"=logging_in" {
		t.Fatalf("with the user session only: %d %s, want 503, user ready, AppJWT logging in", status, states(rep))
	}
	r := send(t, "GET", dataPath("proactive/send"), nil)
	if r.status != http.StatusOK {
		t.Fatalf("proactive request: %d %s", r.status, r.body)
	}
	if e := r.echo(t); e.CredentialKind != "app_jwt" {
		t.Fatalf("the proactive request reached CC with %q, want an AppJWT", e.CredentialKind)
	}
	status, rep = probe(t, "/healthz")
	if status != http.StatusOK || states(rep) != userIdentity+"=ready "+appIdentity+"=ready" {
		t.Fatalf("with both: %d %s, want 200 and both ready", status, states(rep))
	}
}

// The handle form, with lpauth inside another handle block (no site-level
// lpauth), and an empty block after the directive.
func TestReadyInHandleBlock(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	emu.DelayNextLogins(2, 2*time.Second)
	loadCaddy(t, bareSite(fmt.Sprintf(`	handle /healthz {
		lpauth_ready {
		}
	}
	handle /api/* {
		lpauth {
			account_id %s
			username %s
			password {env.%s}
			csds %s
		}
		reverse_proxy %s
	}
`, ccemu.DefaultAccountID, ccemu.DefaultUsername, testPasswordEnv, srv.URL, hostport(srv))))

	start := time.Now()
	status, rep := probe(t, "/healthz")
	if took := time.Since(start); took > time.Second || status != http.StatusServiceUnavailable || states(rep) != userIdentity+"=logging_in" {
		t.Fatalf("before a session: %d %s in %s, want 503 logging_in at once", status, states(rep), took)
	}
	if r := send(t, "GET", dataPath("first"), nil); r.status != http.StatusOK {
		t.Fatalf("proxied request: %d %s", r.status, r.body)
	}
	if status, rep := probe(t, "/healthz"); status != http.StatusOK || states(rep) != userIdentity+"=ready" {
		t.Fatalf("after a login: %d %s, want 200 ready", status, states(rep))
	}
}

// Two AppJWT identities with the same client id and different Sentinel
// hosts are told apart by the host each is configured with.
func TestReadyTellsIdentitiesApartByHost(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	block := func(path, more string) string {
		return fmt.Sprintf("\thandle %s {\n\t\tlpauth {\n\t\t\taccount_id %s\n\t\t\tclient_id %s\n\t\t\tclient_secret {env.%s}\n\t\t\tcsds %s\n\t\t\t%s\n\t\t}\n\t\treverse_proxy %s\n\t}\n",
			path, ccemu.DefaultAccountID, ccemu.DefaultClientID, testClientSecretEnv, srv.URL, more, hostport(srv))
	}
	other := "http://localhost:" + srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	t.Setenv(testClientSecretEnv, testClientSecret())
	loadCaddy(t, bareSite("\thandle /healthz {\n\t\tlpauth_ready\n\t}\n"+block("/a/*", "")+block("/b/*", "domain "+other)))
	_, rep := probe(t, "/healthz")
	if len(rep.Identities) != 2 || rep.Identities[0].Host != srv.URL || rep.Identities[1].Host != other {
		t.Fatalf("identities %+v, want the hosts %s and %s", rep.Identities, srv.URL, other)
	}
}

// A server without lpauth: 200 and no identity.
func TestReadyWithoutLpauth(t *testing.T) {
	loadCaddy(t, bareSite("\tlpauth_ready\n"))
	status, rep := probe(t, "/anything")
	if status != http.StatusOK || rep.Identities == nil || len(rep.Identities) != 0 {
		t.Fatalf("without lpauth: %d %+v, want 200 and an empty list", status, rep)
	}
}

// The session expires at CC: once a request finds it gone and the new
// login is slow, the probe says logging_in; then ready again.
func TestReadyAfterSessionExpired(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, testSite(srv, "", "\tlpauth_ready /healthz\n"+reverseProxyTo(srv), ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != http.StatusOK {
		t.Fatalf("warm-up: %d", r.status)
	}
	if status, _ := probe(t, "/healthz"); status != http.StatusOK {
		t.Fatalf("logged in, probe %d", status)
	}
	emu.ExpireSessions()
	emu.DelayNextLogins(1, 3*time.Second)
	done := make(chan result, 1)
	go func() { done <- send(t, "GET", dataPath("after-expiry"), nil) }()
	eventually(t, 2*time.Second, "the probe sees the session gone", func() bool {
		status, rep := probe(t, "/healthz")
		return status == http.StatusServiceUnavailable && states(rep) == userIdentity+"=logging_in"
	})
	if r := <-done; r.status != http.StatusOK {
		t.Fatalf("request after expiry: %d %s", r.status, r.body)
	}
	if status, rep := probe(t, "/healthz"); status != http.StatusOK {
		t.Fatalf("after the re-login: %d %s", status, states(rep))
	}
}

// adapt runs the Caddyfile adapter, as `caddy adapt` does.
func adapt(t *testing.T, body string) (string, error) {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(body), nil)
	return string(out), err
}

func TestReadyCaddyfileErrors(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"lpauth_ready /healthz extra", `lpauth_ready: takes no arguments besides a matcher, got "extra"`},
		{"lpauth_ready /healthz {\n\t\ttimeout 1s\n\t}", `lpauth_ready: takes no options, got "timeout"`},
	} {
		_, err := adapt(t, "http://"+proxyAddr+" {\n\t"+c.line+"\n}\n")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.line, err, c.want)
		}
	}
}

// At site level the probe runs after the guards and before lpauth,
// wherever it is written.
func TestReadyOrderedBeforeLpauth(t *testing.T) {
	out, err := adapt(t, `http://`+proxyAddr+` {
	reverse_proxy 127.0.0.1:1
	lpauth {
		account_id 1
		username u
		password {env.P}
	}
	lpauth_ready /healthz
	basic_auth /admin/* {
		admin $2a$14$Zkx19XLiW6VYouLHR5NmfOFU0z2GTNmpkT/5qqR7hx4IjWJPDhjvG
	}
}
`)
	if err != nil {
		t.Fatal(err)
	}
	guard := strings.Index(out, `"handler":"authentication"`)
	ready := strings.Index(out, `"handler":"lpauth_ready"`)
	lpauth := strings.Index(out, `"handler":"lpauth"`)
	if guard < 0 || ready < 0 || lpauth < 0 || !(guard < ready && ready < lpauth) {
		t.Fatalf("handler positions basic_auth %d, lpauth_ready %d, lpauth %d in %s; want them in that order", guard, ready, lpauth, out)
	}
}
