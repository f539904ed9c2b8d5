// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// End-to-end tests of the binary ./xcaddy.sh builds, run with
// example.Caddyfile and demo.env exactly as the README tells users to.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// The quick start's files, at the repository root; a test runs in its
// package's directory.
const (
	exampleCaddyfile = "../example.Caddyfile"
	demoEnv          = "../demo.env"
)

var hexSecret = regexp.MustCompile(`[0-9a-f]{64}`)

// quickStart runs example.Caddyfile with demo.env as the README tells users
// to: its own emulator on emuPort, the proxy on proxyPort, CC (the Domain
// API and the upstream) at ccPort. It returns the process and its
// environment, for `caddy reload`.
func quickStart(t *testing.T, admin, emuPort, proxyPort, ccPort int) (*caddyProc, []string) {
	t.Helper()
	return quickStartConfig(t, exampleCaddyfile, admin, emuPort, proxyPort, ccPort)
}

// quickStartConfig is quickStart with another Caddyfile (a variant of the
// example's).
func quickStartConfig(t *testing.T, config string, admin, emuPort, proxyPort, ccPort int) (*caddyProc, []string) {
	t.Helper()
	env := caddyEnv(t,
		fmt.Sprintf("LP_ADMIN=localhost:%d", admin),
		"LP_EMULATOR_ADDR="+caddyproc.Addr(emuPort),
		"LP_PROXY_ADDR="+caddyproc.Addr(proxyPort),
		"LP_CSDS=http://"+caddyproc.Addr(ccPort),
		"LP_UPSTREAM=http://"+caddyproc.Addr(ccPort),
		"LP_PROACTIVE_UPSTREAM=http://"+caddyproc.Addr(ccPort),
	)
	return startCaddy(t, env, caddyproc.Addr(proxyPort), "run", "--config", config, "--envfile", demoEnv), env
}

// The quick start as a user runs it: one process serves the emulator and
// the proxy.
func TestE2EQuickStart(t *testing.T) {
	e2eTier(t)
	admin, emuPort, proxyPort := freePort(t), freePort(t), freePort(t)
	p, env := quickStart(t, admin, emuPort, proxyPort, emuPort)
	proxy := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	control := fmt.Sprintf("http://127.0.0.1:%d/_ccemu", emuPort)

	// Both identities log in as the config starts, before any request: the
	// readiness probe (which never logs in) turns 200, and the first
	// request finds the session and costs no login.
	var ready struct {
		Ready      bool `json:"ready"`
		Identities []struct {
			Mode, State string
		} `json:"identities"`
	}
	eventually(t, 10*time.Second, "readiness after the logins at start", func() bool {
		return getJSON(t, "GET", proxy+"/healthz", &ready) == 200 && ready.Ready
	})
	var counters ccemu.Counters
	getJSON(t, "GET", control+"/counters", &counters)
	if counters.Logins != 1 || counters.TokenRequestsOK != 1 || counters.DataCalls != 0 || len(ready.Identities) != 2 {
		t.Fatalf("before the first request: %+v, readiness %+v; want 1 login, 1 token, no data call, 2 identities", counters, ready)
	}
	var echo echoReply
	if st := getJSON(t, "GET", proxy+dataPath("hello"), &echo); st != 200 || !echo.AuthorizationSent {
		t.Fatalf("quick-start request: %d %+v", st, echo)
	}
	if getJSON(t, "GET", control+"/counters", &counters); counters.LoginAttempts != 1 {
		t.Fatalf("the first request logged in: %d login attempts", counters.LoginAttempts)
	}
	// The per-service prefixes find their host through the Domain API.
	for _, prefix := range []string{"/msghist", "/acctcfg"} {
		if st := getJSON(t, "GET", proxy+prefix+dataPath("svc"), &echo); st != 200 || echo.Path != dataPath("svc") || !echo.AuthorizationSent {
			t.Fatalf("%s: %d %+v", prefix, st, echo)
		}
	}
	body, sum := randomBody(t, 200<<10)
	if _, err := postBody(httpClient, proxy+dataPath("messages"), body, sum); err != nil {
		t.Fatal(err)
	}
	// The Proactive Messaging path carries an AppJWT from Sentinel, not the
	// user's session.
	if st := getJSON(t, "GET", proxy+"/proactive"+dataPath("campaigns"), &echo); st != 200 || echo.CredentialKind != "app_jwt" || echo.Path != dataPath("campaigns") {
		t.Fatalf("/proactive: %d %+v", st, echo)
	}
	if echo = (echoReply{}); getJSON(t, "GET", proxy+dataPath("user"), &echo) != 200 || echo.CredentialKind != "session" {
		t.Fatalf("the user path: %+v", echo)
	}

	// Expire the session through the emulator's control API: the next
	// request still succeeds, after exactly one re-login.
	var expired map[string]int
	if st := getJSON(t, "POST", control+"/expire", &expired); st != 200 || expired["expired"] != 1 {
		t.Fatalf("expire: %d %v", st, expired)
	}
	if st := getJSON(t, "GET", proxy+dataPath("again"), &echo); st != 200 {
		t.Fatalf("after expiry: %d", st)
	}
	getJSON(t, "GET", control+"/counters", &counters)
	if counters.Logins != 2 || counters.LoginAttempts != 2 {
		t.Fatalf("counters %+v; want 2 logins", counters)
	}

	// A bot with no token opens the messaging WebSocket through the
	// /ws_api/* block: the bearer goes into the path, GetClock answers.
	ws := dialUMS(t, fmt.Sprintf("ws://127.0.0.1:%d/ws_api/account/%s/messaging/brand?v=2.1", proxyPort, ccemu.DefaultAccountID))
	umsGetClock(t, ws, 1)

	// caddy reload (forced: the same file) keeps the session, the
	// emulator's counters (its sessions live in a usage pool too), and,
	// thanks to stream_close_delay, the open socket.
	reload := exec.Command(builtCaddy(t), "reload", "--force", "--config", exampleCaddyfile, "--address", fmt.Sprintf("localhost:%d", admin))
	reload.Env = env
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
	if st := getJSON(t, "GET", proxy+dataPath("after-reload"), &echo); st != 200 {
		t.Fatalf("after reload: %d", st)
	}
	getJSON(t, "GET", control+"/counters", &counters)
	if counters.LoginAttempts != 2 || counters.TokenRequests != 1 {
		t.Fatalf("reload logged in again or fetched another token: %+v", counters)
	}
	umsGetClock(t, ws, 2)
	if counters.UMSUpgrades != 1 || counters.UMSClosesByClient+counters.UMSCloses4401 != 0 {
		t.Fatalf("the socket did not live through the reload: %+v", counters)
	}
	ws.Close(websocket.StatusNormalClosure, "")

	p.stop(t, 10*time.Second)
	logs := p.out.String()
	if !strings.Contains(logs, "logged in to CC") {
		t.Fatalf("no login line in caddy's log:\n%s", logs)
	}
	if strings.Contains(logs, ccemu.DefaultPassword) || strings.Contains(logs, ccemu.DefaultClientSecret) || hexSecret.MatchString(logs) {
		t.Fatalf("a secret shows in caddy's log:\n%s", logs)
	}
}

// With the emulator in a process of its own, stopping the proxy must log
// its session out.
func TestE2EStopLogsOut(t *testing.T) {
	e2eTier(t)
	emuPort := freePort(t)
	emuAddr := caddyproc.Addr(emuPort)
	startCaddyfile(t, caddyproc.Emulator("", emuAddr), emuAddr)

	admin, unusedEmu, proxyPort := freePort(t), freePort(t), freePort(t)
	p, _ := quickStart(t, admin, unusedEmu, proxyPort, emuPort)
	if st := getJSON(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", proxyPort)+dataPath("x"), nil); st != 200 {
		t.Fatalf("status %d", st)
	}
	p.stop(t, 10*time.Second)
	var counters ccemu.Counters
	getJSON(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/_ccemu/counters", emuPort), &counters)
	if counters.Logins != 1 || counters.Logouts != 1 || counters.LiveSessions != 0 {
		t.Fatalf("after stopping the proxy: %+v; want 1 login and 1 logout", counters)
	}
}

// caddy validate and caddy adapt provision the module without contacting
// CC, and the adapted JSON holds no secret given through {env.*}.
func TestE2EValidateContactsNothing(t *testing.T) {
	e2eTier(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan string, 64) // the clients' addresses, in the order accepted
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	csds := "http://" + l.Addr().String()
	env := caddyEnv(t, "LP_CSDS="+csds, "LP_UPSTREAM="+csds, "LP_PASSWORD=s3cret-not-in-json", "LP_CLIENT_SECRET=jwt-s3cret-not-in-json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	validate := exec.CommandContext(ctx, builtCaddy(t), "validate", "--config", exampleCaddyfile, "--envfile", demoEnv)
	validate.Env = env
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	adapt := exec.CommandContext(ctx, builtCaddy(t), "adapt", "--config", exampleCaddyfile, "--envfile", demoEnv)
	adapt.Env = env
	out, err := adapt.Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v", err)
	}
	if bytes.Contains(out, []byte("s3cret-not-in-json")) || !bytes.Contains(out, []byte("{env.LP_PASSWORD}")) || !bytes.Contains(out, []byte("{env.LP_CLIENT_SECRET}")) {
		t.Fatalf("adapted JSON should hold the placeholder, not the password:\n%s", out)
	}
	// Both processes have exited, so a connection either made is queued
	// ahead of this probe's: the listener accepts in order, and whatever
	// comes before the probe is theirs.
	probe, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	probeAddr := probe.LocalAddr().String()
	probe.Close()
	var theirs []string
	for addr := ""; addr != probeAddr; {
		select {
		case addr = <-accepted:
			if addr != probeAddr {
				theirs = append(theirs, addr)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the probe connection was not accepted within 10s")
		}
	}
	if len(theirs) != 0 {
		t.Fatalf("caddy validate/adapt opened %d connections to the Domain API", len(theirs))
	}

	// A bad value fails validation and names the field.
	env = caddyEnv(t, "LP_CSDS=http://api.liveperson.net")
	validate = exec.CommandContext(ctx, builtCaddy(t), "validate", "--config", exampleCaddyfile, "--envfile", demoEnv)
	validate.Env = env
	out, err = validate.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("csds")) || !bytes.Contains(out, []byte("plain http is allowed only for loopback")) {
		t.Fatalf("caddy validate with a plain-http remote csds: %v\n%s", err, out)
	}
}
