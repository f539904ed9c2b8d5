// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// CC keeps one session per user, and so does the emulator by default. These
// run the built binary against it: two holders of one user stop fighting,
// and one outside login costs one re-login.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lpauth "github.com/lpauth/caddy-lpauth"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// Two instances of one CC user without shared storage (two replicas behind
// a load balancer), two clients each, for 20 s: each instance answers the
// first two losses of its session with a login, and the third with the
// conflict wait, so the fight stops after at most 6 login attempts, none
// refused by CC's login rate limit. Then one instance serves and the other
// answers 503 at once, its readiness saying conflict, its log saying why.
func TestE2ETwoHoldersOfOneUserStopFighting(t *testing.T) {
	e2eTier(t)
	for _, tc := range []struct {
		name     string
		user     string
		identity string // replaces the password line
	}{
		{"user login", ccemu.DefaultUsername, "password {env.LP_PASSWORD}"},
		{"application login", ccemu.DefaultAppUser, "app_key " + ccemu.DefaultAppKey + "\n\t\tsecret {env.LP_APP_SECRET}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// CC's login rate limit is unpublished; 10 a minute makes a
			// storm show as 429s.
			emu, srv := emulator(t, ccemu.Config{LoginRate: 10, LoginRateWindow: time.Minute})
			var admins sync.Map // instance URL -> admin port
			insts := launchCluster(t, 2, func(port int) string {
				admin := freePort(t)
				admins.Store("http://"+caddyproc.Addr(port), admin)
				cfg := caddyproc.Proxy{
					Admin:    caddyproc.Addr(admin),
					Addr:     caddyproc.Addr(port),
					CSDS:     srv.URL,
					Password: "{env.LP_PASSWORD}",
					Handlers: "\tlpauth_ready /healthz\n\treverse_proxy " + srv.Listener.Addr().String() + "\n",
				}.Caddyfile()
				cfg = strings.Replace(cfg, "username "+ccemu.DefaultUsername, "username "+tc.user, 1)
				return strings.Replace(cfg, "password {env.LP_PASSWORD}", tc.identity, 1)
			}, "LP_PASSWORD="+ccemu.DefaultPassword, "LP_APP_SECRET="+ccemu.DefaultAppSecret)

			served := steadyGets(t, insts, 2, 20*time.Second)
			c := emu.Counters()
			t.Logf("%s, 20 s: %d login attempts (%d logins, %d ended by a login); served 200/503: instance 1 %d/%d, instance 2 %d/%d",
				tc.name, c.LoginAttempts, c.Logins, c.SessionsEndedByLogin, served[0][200], served[0][503], served[1][200], served[1][503])
			if c.LoginAttempts > 6 {
				t.Errorf("%d login attempts in 20 s, want at most 6", c.LoginAttempts)
			}
			if refused := c.LoginAttempts - c.Logins - c.LoginsRefused; refused != 0 {
				t.Errorf("%d logins refused by the rate limit (429)", refused)
			}

			// Afterwards: one instance serves, the other waits.
			var ready, waiting *clusterInstance
			for i, in := range insts {
				status, rep := readiness(t, in)
				switch {
				case status == 200 && rep.Identities[0].State == lpauth.StateReady:
					ready = in
				case status == 503 && rep.Identities[0].State == lpauth.StateConflict:
					waiting = in
					if until := rep.Identities[0].BackoffUntil; until.Before(time.Now().Add(30 * time.Second)) {
						t.Errorf("instance %d: backoff_until %s, want about a minute ahead", i+1, until)
					}
				default:
					t.Errorf("instance %d: readiness %d %+v", i+1, status, rep)
				}
			}
			if ready == nil || waiting == nil {
				t.Fatal("want one instance ready and one in conflict")
			}
			if status, _ := getStatus(t, ready.url+dataPath("after")); status != 200 {
				t.Errorf("the ready instance answered %d", status)
			}
			start := time.Now()
			status, hdr := getStatus(t, waiting.url+dataPath("after"))
			if status != 503 || hdr.Get("Retry-After") == "" || time.Since(start) > time.Second {
				t.Errorf("the waiting instance: %d Retry-After %q after %s, want 503 at once", status, hdr.Get("Retry-After"), time.Since(start))
			}
			out := waiting.proc.out.String()
			if !strings.Contains(out, "one session per user") || !strings.Contains(out, lpauth.ConflictWaitPhrase) ||
				!strings.Contains(out, "session of "+tc.user+" ended") {
				t.Errorf("the waiting instance's log does not say why:\n%s", out)
			}
			admin, _ := admins.Load(waiting.url)
			if n := shortLivedMetric(t, admin.(int)); n != lpauth.ConflictAfter {
				t.Errorf("caddy_lpauth_short_lived_sessions_total %v on the waiting instance, want %d", n, lpauth.ConflictAfter)
			}
		})
	}
}

// One outside login (a person in the agent workspace, another tool) under
// steady POSTs ends lpauth's session once: it costs exactly one re-login
// and no failed request.
func TestE2EOneOutsideLoginCostsOneRelogin(t *testing.T) {
	e2eTier(t)
	emu, srv := emulator(t, ccemu.Config{})
	port := freePort(t)
	cfg := caddyproc.Proxy{Addr: caddyproc.Addr(port), CSDS: srv.URL, Password: "{env.LP_PASSWORD}", Upstream: srv.Listener.Addr().String()}.Caddyfile()
	startCaddyfile(t, cfg, caddyproc.Addr(port), "LP_PASSWORD="+ccemu.DefaultPassword)
	proxy := "http://" + caddyproc.Addr(port)
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	stopTraffic := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopTraffic()
	var sent, failed atomic.Int64
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body, sum := randomBody(t, 2048)
				status, err := postBody(httpClient, proxy+dataPath(fmt.Sprintf("outside/%d/%d", w, i)), body, sum)
				sent.Add(1)
				if status != 200 || err != nil {
					failed.Add(1)
					t.Errorf("request %d/%d: %d %v", w, i, status, err)
				}
			}
		})
	}
	// Steady traffic before the outside login, and after the re-login.
	steady := func(what string) {
		t.Helper()
		calls := emu.Counters().DataCalls
		eventually(t, 10*time.Second, what, func() bool { return emu.Counters().DataCalls >= calls+100 })
	}
	steady("100 requests served before the outside login")
	outside, err := cc.NewClient(cc.ClientConfig{CSDS: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outside.Login(context.Background(), cc.Credentials{AccountID: ccemu.DefaultAccountID, Username: ccemu.DefaultUsername, Password: ccemu.DefaultPassword}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the re-login after the outside login", func() bool { return emu.Counters().LoginAttempts >= 3 })
	steady("100 requests served after the re-login")
	stopTraffic()
	c := emu.Counters()
	t.Logf("%d requests, %d failed; logins: %d (start, outside, re-login)", sent.Load(), failed.Load(), c.Logins)
	if c.LoginAttempts != 3 || c.SessionsEndedByLogin != 2 {
		t.Errorf("%d login attempts, %d sessions ended by a login; want 3 and 2: one re-login for one outside login", c.LoginAttempts, c.SessionsEndedByLogin)
	}
}

// readiness asks an instance's /healthz (lpauth_ready).
func readiness(t *testing.T, in *clusterInstance) (int, readyReport) {
	t.Helper()
	resp, err := httpClient.Get(in.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep readyReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil || len(rep.Identities) != 1 {
		t.Fatalf("readiness answer: %v %+v", err, rep)
	}
	return resp.StatusCode, rep
}

var shortLivedLine = regexp.MustCompile(`(?m)^caddy_lpauth_short_lived_sessions_total\{[^}]*\} (\d+)`)

// shortLivedMetric reads caddy_lpauth_short_lived_sessions_total from an
// instance's admin /metrics (0 if absent).
func shortLivedMetric(t *testing.T, admin int) int {
	t.Helper()
	resp, err := httpClient.Get(fmt.Sprintf("http://%s/metrics", caddyproc.Addr(admin)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := shortLivedLine.FindSubmatch(raw)
	if m == nil {
		return 0
	}
	var n int
	fmt.Sscan(string(m[1]), &n)
	return n
}
