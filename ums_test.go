// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The agent messaging WebSocket (UMS) through a real Caddy, against the
// emulator's UMS, with a real WebSocket client: the bearer goes into the
// path, a dead session at the handshake costs one re-login, and CC's 4401
// closes start the re-login before the bots reconnect.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/coder/websocket"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// umsPathFor is the messaging WebSocket path of account, without a bearer,
// then suffix.
func umsPathFor(account, suffix string) string {
	return "/ws_api/account/" + account + "/messaging/brand" + suffix + "?v=2.1"
}

// dialUMS opens a socket through the proxy, as a bot with no token would.
func dialUMS(t *testing.T, path string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+proxyAddr+path, nil)
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// mustDialUMS fails the test unless the socket opens (101).
func mustDialUMS(t *testing.T, path string) *websocket.Conn {
	t.Helper()
	c, resp, err := dialUMS(t, path)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: status %d: %v", path, status, err)
	}
	return c
}

// getClock does one GetClock round trip.
func getClock(t *testing.T, c *websocket.Conn, id int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := fmt.Sprintf(`{"kind":"req","id":"%d","type":"GetClock"}`, id)
	if err := c.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
		t.Fatalf("GetClock: %v", err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("GetClock answer: %v", err)
	}
	var resp struct {
		Kind, ReqID, Type string
		Code              int
		Body              struct {
			CurrentTime int64 `json:"currentTime"`
		}
	}
	if err := json.Unmarshal(msg, &resp); err != nil || resp.Code != 200 || resp.Type != "GetClock$Response" || resp.ReqID != fmt.Sprint(id) || resp.Body.CurrentTime == 0 {
		t.Fatalf("GetClock answered %s (%v)", msg, err)
	}
}

// lastHandshake is the emulator's record of the latest UMS handshake.
func lastHandshake(t *testing.T, emu *ccemu.Emulator) ccemu.UMSHandshake {
	t.Helper()
	hs := emu.UMSHandshakes()
	if len(hs) == 0 {
		t.Fatal("the emulator saw no UMS handshake")
	}
	return hs[len(hs)-1]
}

// A bot with no token, with a trailing slash, or with a dummy token of its
// own gets a socket opened with the live bearer and ?v=2.1; GetClock works;
// normal closes cost CC neither a refresh nor a login.
func TestUMSBearerGoesIntoThePath(t *testing.T) {
	emu := loggedInProxy(t)
	live := send(t, "GET", dataPath("who"), nil).echo(t).BearerFingerprint
	for i, suffix := range []string{"", "/", "/dummy-token-of-the-bot"} {
		c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, suffix))
		getClock(t, c, i+1)
		if h := lastHandshake(t, emu); !h.Upgraded || h.Version != "2.1" || h.BearerFingerprint != live || h.Account != ccemu.DefaultAccountID {
			t.Errorf("suffix %q: the emulator saw %+v, want an upgrade with the live bearer (%s) and v=2.1", suffix, h, live)
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Refreshes != 0 || n.UMSUpgrades != 3 {
		t.Fatalf("%+v: want 1 login, no refresh and 3 upgrades", n)
	}
}

// A UMS path naming another account is refused with 403 and never sent
// upstream: the bearer of one account never goes into another's URL.
func TestUMSOtherAccountIsForbidden(t *testing.T) {
	emu := loggedInProxy(t)
	_, resp, err := dialUMS(t, umsPathFor("99999999", ""))
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial of another account's path: status %d, err %v; want 403", status, err)
	}
	if n := emu.Counters().UMSHandshakes; n != 0 {
		t.Fatalf("the emulator saw %d UMS handshakes, want none", n)
	}
}

// A session that died before the handshake: CC answers the upgrade 401,
// lpauth logs in once and retries it with the new bearer in the path; the
// bot sees 101.
func TestUMSDeadSessionAtHandshakeCostsOneRelogin(t *testing.T) {
	emu := loggedInProxy(t)
	emu.ExpireSessions()
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 1)
	if n := emu.Counters(); n.LoginAttempts != 2 || n.UMSHandshake401s != 1 || n.UMSUpgrades != 1 {
		t.Fatalf("%+v: want one re-login, one refused handshake, one upgrade", n)
	}
}

// Eight bots connected; CC ends the session and closes all eight with
// 4401. lpauth logs in again on its own, once, before any bot comes back;
// when they reconnect, every one gets 101 at once and CC sees no other
// login.
func TestUMS4401StartsOneReloginBeforeReconnects(t *testing.T) {
	emu := loggedInProxy(t)
	const bots = 8
	conns := make([]*websocket.Conn, bots)
	for i := range conns {
		conns[i] = mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
		getClock(t, conns[i], i+1)
	}
	emu.ExpireSessions()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _, err := c.Read(ctx)
			if got := websocket.CloseStatus(err); got != 4401 {
				t.Errorf("bot %d: the socket ended with %v (status %d), want 4401", i, err, got)
			}
		})
	}
	wg.Wait()
	handshakes := emu.Counters().UMSHandshakes
	eventually(t, 5*time.Second, "the re-login the 4401s started", func() bool { return emu.Counters().Logins == 2 })
	if n := emu.Counters().UMSHandshakes; n != handshakes {
		t.Fatalf("%d handshakes before the re-login, want none", n-handshakes)
	}
	for i := range bots {
		c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
		getClock(t, c, 100+i)
	}
	if n := emu.Counters(); n.LoginAttempts != 2 || n.UMSHandshake401s != 0 {
		t.Fatalf("%+v: want 2 logins in all and no refused handshake", n)
	}
}

// Bots that reconnect as soon as CC closes their sockets all get 101 on
// the first try, and CC sees one re-login in all.
func TestUMSImmediateReconnectsAfter4401(t *testing.T) {
	emu := loggedInProxy(t)
	const bots = 8
	var wg sync.WaitGroup
	ready := make(chan *websocket.Conn, bots)
	for i := range bots {
		c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
		getClock(t, c, i+1)
		ready <- c
	}
	close(ready)
	emu.ExpireSessions()
	for c := range ready {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4401 {
				t.Errorf("the socket ended with %v, want 4401", err)
				return
			}
			c2, resp, err := dialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
			if err != nil {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("reconnect: status %d: %v", status, err)
				return
			}
			c2.CloseNow()
		})
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins, want 2 (one re-login for 8 bots)", n)
	}
}

// With debug and access logs on, no bearer reaches a log line: not from
// the handshake that succeeds, not from one CC refuses, not from the
// retry; the access log shows the path the bot sent.
func TestUMSNoBearerInLogs(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	global, logFile := fileLog(t, "DEBUG")
	// Under /refused/ an inner lpauth sends the socket to a port where
	// nothing listens: the error path of the proxy logs too.
	refused := "\thandle_path /refused/* {\n" + testProxy(srv, "", "", "").LpauthBlock("\t\t") + "\t\treverse_proxy 127.0.0.1:" + loopbackPort(t) + "\n\t}\n"
	loadCaddy(t, testSite(srv, "", "\tlog {\n\t\toutput file "+logFile+"\n\t}\n"+refused+reverseProxyTo(srv), global))
	if _, resp, err := dialUMS(t, "/refused"+umsPathFor(ccemu.DefaultAccountID, "")); err == nil || resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a socket to a refusing upstream: %v %v; want 502", err, resp)
	}
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, "/bot-dummy"))
	getClock(t, c, 1)
	c.Close(websocket.StatusNormalClosure, "")
	emu.ExpireSessions()
	c = mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 2)
	emu.ExpireSessions() // a 4401 on an open socket
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4401 {
		t.Fatalf("the socket ended with %v, want 4401", err)
	}
	eventually(t, 5*time.Second, "the re-login after the 4401", func() bool { return emu.Counters().Logins == 3 })

	unloadCaddy(t)

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/messaging/brand/bot-dummy", "messaging WebSocket closed for a new token", "retrying after upstream 401", "connection refused"} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Fatalf("the log lacks %q: this test would see nothing", want)
		}
	}
	for _, s := range emu.IssuedSecrets() {
		if bytes.Contains(logs, []byte(s)) {
			t.Errorf("a secret (%d chars) appears in the log", len(s))
		}
	}
}

// CC refuses a handshake with 401 although a refresh says the session is
// alive: lpauth logs in again once and retries, as node-agent-sdk would; a
// second refusal within the one-session window goes to the bot, so a
// handshake that CC keeps refusing cannot turn into a login storm.
func TestUMSRefusedHandshakeWithLiveSession(t *testing.T) {
	emu := loggedInProxy(t)
	emu.FailNextUMSHandshakes(1)
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 1)
	if n := emu.Counters(); n.LoginAttempts != 2 || n.UMSHandshake401s != 1 || n.UMSUpgrades != 1 {
		t.Fatalf("%+v: want one forced re-login, one refused handshake, one upgrade", n)
	}
	emu.FailNextUMSHandshakes(1)
	_, resp, err := dialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a second refusal in the window: err %v, response %v; want the 401 passed on", err, resp)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins, want 2: one forced re-login per window", n)
	}
}

// A bot with an application login (app_key and secret, no user password)
// opens its socket the same way.
func TestUMSApplicationLoginBot(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{Users: map[string]string{}})
	loadCaddy(t, applicationLoginConfig(t, srv))
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 1)
	if n := emu.Counters(); n.Logins != 1 || n.UMSUpgrades != 1 {
		t.Fatalf("%+v: want one application login and one upgrade", n)
	}
}

// A rewrite between lpauth and the proxy may drop the bearer from the
// path or copy it into a log: lpauth warns, once per server, at the first
// messaging WebSocket request.
func TestUMSWarnsOnceOfARewriteAfterIt(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	global, logFile := fileLog(t, "INFO")
	loadCaddy(t, testSite(srv, "", "\thandle {\n\t\turi replace /nothing-here /nothing\n"+"\t"+reverseProxyTo(srv)+"\t}\n", global))
	if r := send(t, "GET", dataPath("plain"), nil); r.status != 200 {
		t.Fatalf("a plain request: %d", r.status)
	}
	for i := range 2 {
		c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
		getClock(t, c, i+1)
		c.Close(websocket.StatusNormalClosure, "")
	}
	unloadCaddy(t)
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(logs, []byte("may rewrite the messaging WebSocket's path")); n != 1 {
		t.Fatalf("the warning appears %d times, want once", n)
	}
}

// A password rotation while a bot's socket is open (stream_close_delay
// keeps it through the reload): the new identity's login ends the old
// session, CC closes the socket with 4401, and the replaced identity's
// keeper does not log in for it. The bot reconnects through the new
// identity: two logins in all.
func TestUMSRotationClosesOldSocketsWithoutLoginByTheOldKeeper(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	global, logFile := fileLog(t, "DEBUG")
	handlers := "\treverse_proxy " + hostport(srv) + " {\n\t\tstream_close_delay 1m\n\t}\n"
	loadCaddy(t, testSite(srv, "", handlers, global))
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 1)

	const rotated = "rotated-ums-pw"
	if err := emu.SetPassword(ccemu.DefaultUsername, rotated, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LPAUTH_TEST_ROTATED", rotated)
	loadCaddy(t, replaceOnce(t, testSite(srv, "", handlers, global), "{env."+testPasswordEnv+"}", "{env.LPAUTH_TEST_ROTATED}"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != 4401 {
		t.Fatalf("the old socket ended with %v, want 4401 (the new login ended its session)", err)
	}
	eventually(t, 5*time.Second, "the old keeper told of the 4401", func() bool {
		logs, _ := os.ReadFile(logFile)
		return bytes.Contains(logs, []byte("messaging WebSocket closed for a new token"))
	})
	c = mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 2)
	if n := emu.Counters(); n.LoginAttempts != 2 || n.Logins != 2 {
		t.Fatalf("%+v: want 2 logins (the first identity's, the rotated one's), none for the old socket's 4401", n)
	}
}

// The UMS path rule, on the escaped path lpauth receives.
func TestUMSPathRule(t *testing.T) {
	base := "/ws_api/account/12345678/messaging/brand"
	for _, tc := range []struct {
		path string
		ums  bool
	}{
		{base, true},
		{base + "/", true},
		{base + "/a-token", true},
		{base + "/a-token/", true},
		{base + "/a/b", false},
		{base + "//", false},
		{"/ws_api/account/12345678/messaging/brand/..", false},
		{"/ws_api/account/12345678/messaging/./brand", false},
		{"/ws_api/account/12345678/messaging/brand/a%2Fb", false},
		{"/ws_api/account/1234%2f5678/messaging/brand", false},
		{"/ws_api/account//messaging/brand", false},
		{"/ws_api/account/12345678/messaging", false},
		{"/ws_api/account/12345678/messaging/brands", false},
		{"/api/account/12345678/messaging/brand", false},
	} {
		r := httptest.NewRequest(http.MethodGet, "http://proxy"+tc.path+"?v=2.1", nil)
		p, ok := umsPathOf(r)
		if ok != tc.ums {
			t.Errorf("%s: UMS %v, want %v", tc.path, ok, tc.ums)
			continue
		}
		if !ok {
			continue
		}
		out := withBearerInPath(r, p, "BEARER")
		if out.URL.Path != base+"/BEARER" || out.URL.RawQuery != "v=2.1" || out.RequestURI != r.RequestURI || r.URL.Path != tc.path || out.URL == r.URL {
			t.Errorf("%s: sent as %s?%s (RequestURI %q), client's path now %s", tc.path, out.URL.Path, out.URL.RawQuery, out.RequestURI, r.URL.Path)
		}
	}
}

// Over HTTP/2 (extended CONNECT) reverse_proxy writes the socket's frames
// through the response writer: they pass unchanged, and a 4401 close split
// across writes is reported once.
func TestUMSCloseWatchOnWrittenFrames(t *testing.T) {
	rec := httptest.NewRecorder()
	var codes []int
	w := &closeWatchWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: rec}, watch: &closeWatch{onClose: func(code int) { codes = append(codes, code) }}}
	text := append([]byte{0x81, 5}, "hello"...)
	closeFrame := append([]byte{0x88, 7, 0x11, 0x31}, "token"...) // 4401
	stream := append(append([]byte{}, text...), closeFrame...)
	for _, part := range [][]byte{stream[:8], stream[8:10], stream[10:]} {
		if n, err := w.Write(part); n != len(part) || err != nil {
			t.Fatalf("write: %d %v", n, err)
		}
	}
	if !bytes.Equal(rec.Body.Bytes(), stream) {
		t.Fatalf("the client got %x, want %x unchanged", rec.Body.Bytes(), stream)
	}
	if !slices.Equal(codes, []int{4401}) {
		t.Fatalf("close codes reported %v, want [4401] once", codes)
	}
}

// The error paths of a handshake, with debug and access logs on: CC
// answers 503, and a bot goes away in the middle of its handshake (the
// session dead, the re-login held). No bearer reaches a log line.
func TestUMSNoBearerInLogsOnHandshakeErrors(t *testing.T) {
	// A handshake CC answers 503, and a bot that goes away in the middle
	// of its handshake (the session dead, the re-login held).
	emu, srv := emulator(t, ccemu.Config{})
	global, logFile := fileLog(t, "DEBUG")
	loadCaddy(t, testSite(srv, "", "\tlog {\n\t\toutput file "+logFile+"\n\t}\n"+reverseProxyTo(srv), global))
	c := mustDialUMS(t, umsPathFor(ccemu.DefaultAccountID, ""))
	getClock(t, c, 1)
	c.CloseNow()
	emu.FailNextUMSHandshakesWith(1, http.StatusServiceUnavailable)
	if _, resp, err := dialUMS(t, umsPathFor(ccemu.DefaultAccountID, "")); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a handshake answered 503: %v %v", err, resp)
	}
	emu.ExpireSessions()
	emu.DelayNextLogins(1, 300*time.Millisecond)
	attempts, logins := emu.Counters().LoginAttempts, emu.Counters().Logins
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", umsPathFor(ccemu.DefaultAccountID, ""), proxyAddr)
	eventually(t, 5*time.Second, "the held re-login to start", func() bool { return emu.Counters().LoginAttempts > attempts })
	conn.Close()
	eventually(t, 5*time.Second, "the held re-login to end", func() bool { return emu.Counters().Logins > logins })
	unloadCaddy(t)
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, []byte(`"status":503`)) {
		t.Fatal("the access log lacks the 503: this test would see nothing")
	}
	for _, s := range emu.IssuedSecrets() {
		if bytes.Contains(logs, []byte(s)) {
			t.Errorf("a secret (%d chars) appears in the log", len(s))
		}
	}
}

// An AppJWT identity leaves a UMS path alone, whatever account it names:
// no bearer goes into it, and it is not refused.
func TestUMSAppJWTIdentityLeavesThePathAlone(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, appJWTSite(srv, ""))
	for _, account := range []string{ccemu.DefaultAccountID, "99999999"} {
		_, resp, err := dialUMS(t, umsPathFor(account, "/bot-token"))
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("account %s: %v %v; want CC's 401 for the bot's own token, passed on unchanged", account, err, resp)
		}
	}
	if n := emu.Counters(); n.UMSHandshakes != 2 || n.UMSUpgrades != 0 {
		t.Fatalf("%+v: want both handshakes sent upstream unchanged, none upgraded", n)
	}
}
