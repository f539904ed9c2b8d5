// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
)

// newUMSServer is newServer plus Close at the end of the test, so no
// socket or sweep outlives it.
func newUMSServer(t *testing.T, cfg Config) (*Emulator, *httptest.Server) {
	t.Helper()
	e, srv := newServer(t, cfg)
	t.Cleanup(func() { _ = e.Close() }) // before srv.Close (cleanups run last first)
	return e, srv
}

func umsURL(srv *httptest.Server, account, token, tail string) string {
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws_api/account/" + account + "/messaging/brand/" + token + tail
}

// dialUMS opens a socket that must upgrade.
func dialUMS(t *testing.T, u string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", u, err, status)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// refusedUMS dials a socket that must not upgrade and returns the answer.
func refusedUMS(t *testing.T, u string) reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, nil)
	if err == nil {
		_ = c.CloseNow()
		t.Fatalf("dial %s upgraded", u)
	}
	if resp == nil {
		t.Fatalf("dial %s: no HTTP answer: %v", u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Upgrade") != "" || resp.StatusCode == http.StatusSwitchingProtocols {
		t.Errorf("refused handshake carries Upgrade %q, status %d", resp.Header.Get("Upgrade"), resp.StatusCode)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// call sends one request frame and reads the answer.
func call(t *testing.T, c *websocket.Conn, req string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(req)); err != nil {
		t.Fatalf("write %s: %v", req, err)
	}
	typ, b, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("read answer to %s: %v (type %v)", req, err, typ)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return m
}

// closedWith waits, at most within, for the server to close c and returns
// its close frame. Frames before it are skipped.
func closedWith(t *testing.T, c *websocket.Conn, within time.Duration) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("no close frame within %v: %v", within, err)
		}
		return ce
	}
}

func TestUMSUpgradeAndGetClock(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clk := newFakeClock(start)
	e, srv := newUMSServer(t, Config{Clock: clk})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))

	for _, typ := range []string{"GetClock", ".GetClock"} {
		got := call(t, c, `{"kind":"req","id":"7","type":"`+typ+`"}`)
		want := map[string]any{"kind": "resp", "reqId": "7", "code": float64(200), "type": "GetClock$Response",
			"body": map[string]any{"currentTime": float64(start.UnixMilli())}}
		if b1, b2 := mustJSON(t, got), mustJSON(t, want); b1 != b2 {
			t.Errorf("%s: got %s, want %s", typ, b1, b2)
		}
	}
	// A numeric id comes back as sent.
	if got := call(t, c, `{"kind":"req","id":8,"type":"GetClock"}`); got["reqId"] != float64(8) {
		t.Errorf("numeric id: %v", got)
	}
	for req, wantID := range map[string]any{
		`{"kind":"req","id":"9","type":".ams.cm.AgentRequestConversation","body":{}}`: "9",
		`{"kind":"req","id":"10"}`: "10",
		`not json`:                 nil,
		`{"kind":"notification"}`:  nil,
	} {
		got := call(t, c, req)
		msg, _ := got["body"].(map[string]any)["msg"].(string)
		if got["kind"] != "resp" || got["code"] != float64(400) || got["reqId"] != wantID || msg == "" {
			t.Errorf("%s: got %v, want a 400 answer with reqId %v and a message", req, got, wantID)
		}
	}
	if got := call(t, c, `{"kind":"req","id":"11","type":".ams.Foo"}`); !strings.Contains(got["body"].(map[string]any)["msg"].(string), "unsupported") {
		t.Errorf("unsupported type: %v", got)
	}

	// A ping is answered; the pong is read by a concurrent Read.
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read(context.Background())
		read <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"kind":"req","id":"12","type":"GetClock"}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatalf("read after ping: %v", err)
	}

	got := e.Counters()
	if got.UMSHandshakes != 1 || got.UMSUpgrades != 1 || got.UMSOpenSockets != 1 || got.UMSGetClocks != 4 ||
		got.UMSRequests != 9 || got.UMSHandshake401s != 0 {
		t.Errorf("counters %+v", got)
	}
	hs := e.UMSHandshakes()
	want := UMSHandshake{Account: DefaultAccountID, BearerFingerprint: BearerFingerprint(s.bearer), Version: "2.1", Upgraded: true}
	if len(hs) != 1 || hs[0] != want {
		t.Errorf("UMSHandshakes %+v, want [%+v]", hs, want)
	}
	// The data API names the bearer by the same fingerprint.
	if fp := s.data(t, srv, "/x").json(t)["bearer_fingerprint"]; fp != want.BearerFingerprint {
		t.Errorf("data API fingerprint %v, UMS %s", fp, want.BearerFingerprint)
	}

	// The client closes: counted, and the socket is no longer open.
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the client's close to be counted", func() bool {
		c := e.Counters()
		return c.UMSClosesByClient == 1 && c.UMSOpenSockets == 0
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The older form: v=2 and a trailing slash after the bearer.
func TestUMSTrailingSlashAndV2(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "/?v=2"))
	if got := call(t, c, `{"kind":"req","id":"1","type":"GetClock"}`); got["code"] != float64(200) {
		t.Errorf("GetClock: %v", got)
	}
	dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "")) // no v: accepted by default
	if hs := e.UMSHandshakes(); len(hs) != 2 || hs[0].Version != "2" || hs[1].Version != "" || !hs[1].Upgraded {
		t.Errorf("UMSHandshakes %+v", hs)
	}
}

func TestUMSHandshakeRefused(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	live := mustLogin(t, srv, appBody())
	dead := mustLogin(t, srv, userBody())
	if r := dead.refresh(t, srv, "logout", dead.csrf); r.status != 200 {
		t.Fatalf("logout: %d", r.status)
	}
	_, otherSrv := newUMSServer(t, Config{AccountID: "87654321"})
	r := post(t, otherSrv.URL+"/api/account/87654321/login?v=1.3", userBody(), nil)
	var other struct{ Bearer string }
	if r.status != 200 || json.Unmarshal(r.body, &other) != nil {
		t.Fatalf("login at the other account: %d %s", r.status, r.body)
	}
	appJWT := mustToken(t, srv, false)

	for name, u := range map[string]string{
		"unknown":                    umsURL(srv, DefaultAccountID, strings.Repeat("ab", 32), "?v=2.1"),
		"logged out":                 umsURL(srv, DefaultAccountID, dead.bearer, "?v=2.1"),
		"other account's bearer":     umsURL(srv, DefaultAccountID, other.Bearer, "?v=2.1"),
		"other account in the path":  umsURL(srv, "87654321", live.bearer, "?v=2.1"),
		"AppJWT":                     umsURL(srv, DefaultAccountID, appJWT, "?v=2.1"),
		"empty":                      umsURL(srv, DefaultAccountID, "", "?v=2.1"),
		"AppJWT with trailing slash": umsURL(srv, DefaultAccountID, appJWT, "/?v=2"),
	} {
		r := refusedUMS(t, u)
		envelope(t, r, 401, codeBearer, "UNAUTHORIZED")
		if r.header.Get("WWW-Authenticate") == "" || r.header.Get("X-Ccemu-Error") != "unauthorized" {
			t.Errorf("%s: headers %v, want the data API's", name, r.header)
		}
	}
	// The same 401 as the data API's for the same token.
	data := do(t, "GET", srv.URL+"/api/account/"+DefaultAccountID+"/x", nil, map[string]string{"Authorization": "Bearer " + dead.bearer})
	ums := refusedUMS(t, umsURL(srv, DefaultAccountID, dead.bearer, "?v=2.1"))
	if de, ue := envelope(t, data, 401, codeBearer, "UNAUTHORIZED"), envelope(t, ums, 401, codeBearer, "UNAUTHORIZED"); de["message"] != ue["message"] {
		t.Errorf("UMS message %v, data API %v", ue["message"], de["message"])
	}

	envelope(t, refusedUMS(t, umsURL(srv, DefaultAccountID, live.bearer, "?v=3")), 400, codeBadRequest, "BAD_REQUEST")
	envelope(t, post(t, strings.Replace(umsURL(srv, DefaultAccountID, live.bearer, "?v=2.1"), "ws", "http", 1), "", nil),
		405, codeMethod, "METHOD_NOT_ALLOWED")
	// Not the brand path: not UMS.
	envelope(t, refusedUMS(t, strings.Replace(umsURL(srv, DefaultAccountID, live.bearer, ""), "brand", "consumer", 1)),
		404, codeNotFound, "NOT_FOUND")
	// A live bearer without an upgrade is no socket either.
	if r := do(t, "GET", strings.Replace(umsURL(srv, DefaultAccountID, live.bearer, "?v=2.1"), "ws", "http", 1), nil, nil); r.status != http.StatusUpgradeRequired {
		t.Errorf("plain GET with a live bearer: %d", r.status)
	}

	// A live bearer and the upgrade headers, but no valid key: Accept
	// refuses it after the socket was counted, which it must undo.
	hdr := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
	if r := do(t, "GET", strings.Replace(umsURL(srv, DefaultAccountID, live.bearer, "?v=2.1"), "ws", "http", 1), nil, hdr); r.status != http.StatusBadRequest {
		t.Errorf("handshake without a key: %d %s", r.status, r.body)
	}

	c := e.Counters()
	if c.UMSHandshakes != 12 || c.UMSHandshake401s != 8 || c.UMSUpgrades != 0 || c.UMSOpenSockets != 0 ||
		c.UMSClosesByClient != 0 {
		t.Errorf("counters %+v", c)
	}
	hs := e.UMSHandshakes()
	for _, h := range hs {
		if h.Upgraded {
			t.Errorf("recorded as upgraded: %+v", h)
		}
	}
	if len(hs) != 12 {
		t.Errorf("%d handshakes logged, want 12", len(hs))
	}
	// The live bearer still works: nothing above ended its session.
	dialUMS(t, umsURL(srv, DefaultAccountID, live.bearer, "?v=2.1"))
}

func TestUMSRequireVersion(t *testing.T) {
	t.Parallel()
	_, srv := newUMSServer(t, Config{RequireVersion: true})
	s := mustLogin(t, srv, userBody())
	envelope(t, refusedUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "")), 400, codeBadRequest, "BAD_REQUEST")
	dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
}

// FailNextUMSHandshakes refuses live bearers, then lets them in again;
// it works over the control path too.
func TestFailNextUMSHandshakes(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	u := umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1")
	e.FailNextUMSHandshakes(2)
	for range 2 {
		envelope(t, refusedUMS(t, u), 401, codeBearer, "UNAUTHORIZED")
	}
	dialUMS(t, u)
	if r := post(t, srv.URL+"/_ccemu/fail-ums-handshakes?count=1", "", nil); r.status != 200 || string(r.body) != `{"count":1,"status":401}` {
		t.Fatalf("control: %d %s", r.status, r.body)
	}
	envelope(t, refusedUMS(t, u), 401, codeBearer, "UNAUTHORIZED")
	// An overloaded messaging host: a 5xx, not counted as a 401.
	if r := post(t, srv.URL+"/_ccemu/fail-ums-handshakes?count=1&status=503", "", nil); r.status != 200 || string(r.body) != `{"count":1,"status":503}` {
		t.Fatalf("control: %d %s", r.status, r.body)
	}
	if r := refusedUMS(t, u); r.status != 503 {
		t.Fatalf("a handshake after status=503: %d %s", r.status, r.body)
	}
	// The refusals ended nothing: refresh says the session is alive.
	if r := s.refresh(t, srv, "refresh", s.csrf); r.status != 200 {
		t.Errorf("refresh: %d", r.status)
	}
	e.FailNextUMSHandshakes(3)
	e.FailNextUMSHandshakes(0) // cancels
	dialUMS(t, u)
	if c := e.Counters(); c.UMSHandshake401s != 3 || c.UMSUpgrades != 2 {
		t.Errorf("counters %+v", c)
	}
}

// A socket closes with 4401 within 1 s of its session's end, whatever
// ends it.
func TestUMSClosesWhenSessionEnds(t *testing.T) {
	t.Parallel()
	for name, end := range map[string]func(t *testing.T, e *Emulator, srv *httptest.Server, s sess){
		"expire control": func(t *testing.T, _ *Emulator, srv *httptest.Server, _ sess) {
			post(t, srv.URL+"/_ccemu/expire", "", nil)
		},
		"ExpireSessions": func(_ *testing.T, e *Emulator, _ *httptest.Server, _ sess) { e.ExpireSessions() },
		"logout": func(t *testing.T, _ *Emulator, srv *httptest.Server, s sess) {
			if r := s.refresh(t, srv, "logout", s.csrf); r.status != 200 {
				t.Fatalf("logout: %d", r.status)
			}
		},
		"login of the same user": func(t *testing.T, _ *Emulator, srv *httptest.Server, _ sess) {
			mustLogin(t, srv, userBody())
		},
		"password change ending sessions": func(t *testing.T, _ *Emulator, srv *httptest.Server, _ sess) {
			r := post(t, srv.URL+"/_ccemu/set-password?user="+DefaultUsername+"&end_sessions=true",
				url.Values{"password": {"new-pw"}}.Encode(), formHdr)
			if r.status != 200 {
				t.Fatalf("set-password: %d %s", r.status, r.body)
			}
		},
		"reset": func(_ *testing.T, e *Emulator, _ *httptest.Server, _ sess) { e.Reset() },
		"TTL by the sweep": func(_ *testing.T, e *Emulator, _ *httptest.Server, _ sess) {
			e.clock.(*fakeClock).Advance(DefaultSessionTTL + time.Millisecond)
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e, srv := newUMSServer(t, Config{Clock: newFakeClock(time.Now())})
			s := mustLogin(t, srv, userBody())
			c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
			bot := mustLogin(t, srv, appBody()) // another user: its socket must outlive the end of s
			cb := dialUMS(t, umsURL(srv, DefaultAccountID, bot.bearer, "?v=2.1"))
			call(t, c, `{"kind":"req","id":"1","type":"GetClock"}`)

			end(t, e, srv, s)
			ce := closedWith(t, c, time.Second)
			if ce.Code != 4401 || ce.Reason != "token expired" {
				t.Errorf("closed with %d %q, want 4401 \"token expired\"", ce.Code, ce.Reason)
			}
			if name == "reset" || strings.HasPrefix(name, "expire") || name == "ExpireSessions" || name == "TTL by the sweep" {
				closedWith(t, cb, time.Second) // these end every session
				return
			}
			if got := call(t, cb, `{"kind":"req","id":"2","type":"GetClock"}`); got["code"] != float64(200) {
				t.Errorf("the other user's socket: %v", got)
			}
			if got := e.Counters(); got.UMSCloses4401 != 1 || got.UMSOpenSockets != 1 || got.UMSUpgrades != 2 {
				t.Errorf("counters %+v", got)
			}
		})
	}
}

// Refresh keeps the session, and so the socket, alive past the first
// deadline; the sweep closes it only at the extended one. With several
// sessions allowed, a second login ends nothing.
func TestUMSRefreshKeepsSocket(t *testing.T) {
	t.Parallel()
	clk := newFakeClock(time.Now())
	e, srv := newUMSServer(t, Config{Clock: clk, SessionTTL: time.Hour, MultipleSessions: true})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	clk.Advance(50 * time.Minute)
	if r := s.refresh(t, srv, "refresh", s.csrf); r.status != 200 {
		t.Fatal(r.status)
	}
	mustLogin(t, srv, userBody())
	clk.Advance(50 * time.Minute) // past the first deadline, not the refreshed one
	// Two sweep periods, then the socket must still answer: a sweep
	// counts in real time, so waiting is the only way to see it did
	// nothing.
	deadline := time.Now().Add(2 * umsSweepEvery)
	for time.Now().Before(deadline) {
		if got := call(t, c, `{"kind":"req","id":"1","type":"GetClock"}`); got["code"] != float64(200) {
			t.Fatalf("GetClock: %v", got)
		}
	}
	clk.Advance(11 * time.Minute)
	if ce := closedWith(t, c, time.Second); ce.Code != 4401 {
		t.Errorf("closed with %v, want 4401", ce)
	}
	if got := e.Counters(); got.UMSCloses4401 != 1 || got.LiveSessions != 0 {
		t.Errorf("counters %+v", got)
	}
}

// A request on a socket whose session has run out (before the sweep saw
// it) gets no answer but the 4401.
func TestUMSRequestAfterExpiry(t *testing.T) {
	t.Parallel()
	clk := newFakeClock(time.Now())
	_, srv := newUMSServer(t, Config{Clock: clk})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	clk.Advance(DefaultSessionTTL + time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Write(ctx, websocket.MessageText, []byte(`{"kind":"req","id":"1","type":"GetClock"}`))
	_, b, err := c.Read(ctx)
	if websocket.CloseStatus(err) != 4401 {
		t.Errorf("read after expiry: %q %v, want close 4401", b, err)
	}
}

func TestUMSIdle(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	e, srv := newUMSServer(t, Config{UMSIdleTimeout: idle})
	s := mustLogin(t, srv, userBody())

	// Silent: closed 1000 "idle", not before the timeout.
	began := time.Now()
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	ce := closedWith(t, c, idle+time.Second)
	if el := time.Since(began); el < idle {
		t.Errorf("closed after %v, before the idle timeout %v", el, idle)
	}
	if ce.Code != websocket.StatusNormalClosure || ce.Reason != "idle" {
		t.Errorf("closed with %d %q, want 1000 \"idle\"", ce.Code, ce.Reason)
	}

	// Requests and pings keep a socket alive past the timeout. A longer
	// timeout here, so that a slow scheduler (-race, a busy machine)
	// cannot stretch a gap between two frames past it.
	const longer = time.Second
	e.SetUMSIdleTimeout(longer)
	c = dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	read := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				read <- err
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for end := time.Now().Add(2 * longer); time.Now().Before(end); {
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("ping: %v", err)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"kind":"req","id":"1","type":"GetClock"}`)); err != nil {
			t.Fatalf("write: %v", err)
		}
		select {
		case err := <-read:
			t.Fatalf("closed while active: %v", err)
		case <-time.After(longer / 10):
		}
	}
	if c := e.Counters(); c.UMSClosesIdle != 1 || c.UMSOpenSockets != 1 {
		t.Errorf("counters %+v", c)
	}
	select {
	case err := <-read:
		if ce := (websocket.CloseError{}); !errors.As(err, &ce) || ce.Reason != "idle" {
			t.Errorf("closed with %v, want idle", err)
		}
	case <-time.After(longer + time.Second):
		t.Error("not closed once silent")
	}
}

// The idle timeout changed over the control path applies to open sockets.
func TestUMSIdleTimeoutControl(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	call(t, c, `{"kind":"req","id":"1","type":"GetClock"}`)
	if r := post(t, srv.URL+"/_ccemu/ums-idle-timeout?timeout=200ms", "", nil); r.status != 200 || string(r.body) != `{"timeout":"200ms"}` {
		t.Fatalf("control: %d %s", r.status, r.body)
	}
	if ce := closedWith(t, c, time.Second); ce.Reason != "idle" {
		t.Errorf("closed with %v", ce)
	}
	for _, q := range []string{"", "?timeout=0", "?timeout=soon"} {
		envelope(t, post(t, srv.URL+"/_ccemu/ums-idle-timeout"+q, "", nil), 400, codeBadRequest, "BAD_REQUEST")
	}
	e.SetUMSIdleTimeout(0) // back to the default
	if e.ums.idleTimeout != DefaultUMSIdleTimeout {
		t.Errorf("idle timeout %v after 0", e.ums.idleTimeout)
	}
}

// The counters and the handshake log over the control path.
func TestUMSControlCounters(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	call(t, c, `{"kind":"req","id":"1","type":".GetClock"}`)
	refusedUMS(t, umsURL(srv, DefaultAccountID, "nope", "?v=2"))
	e.ExpireSessions()
	closedWith(t, c, time.Second)

	r := do(t, "GET", srv.URL+"/_ccemu/counters", nil, nil)
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]float64{
		"ums_handshakes": 2, "ums_handshake_401s": 1, "ums_upgrades": 1, "ums_requests": 1, "ums_get_clocks": 1,
		"ums_closes_4401": 1, "ums_closes_idle": 0, "ums_closes_shutdown": 0, "ums_closes_by_client": 0, "ums_open_sockets": 0,
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	r = do(t, "GET", srv.URL+"/_ccemu/ums-handshakes", nil, nil)
	want := `{"handshakes":[{"account":"` + DefaultAccountID + `","bearer_fingerprint":"` + BearerFingerprint(s.bearer) +
		`","version":"2.1","upgraded":true},{"account":"` + DefaultAccountID + `","bearer_fingerprint":"` +
		BearerFingerprint("nope") + `","version":"2","upgraded":false}]}`
	if r.status != 200 || string(r.body) != want {
		t.Errorf("ums-handshakes: %d %s\nwant %s", r.status, r.body, want)
	}
	if strings.Contains(string(r.body), s.bearer) {
		t.Error("the handshake log leaks the bearer")
	}
	if r := post(t, srv.URL+"/_ccemu/ums-handshakes", "", nil); r.status != 405 {
		t.Errorf("POST ums-handshakes: %d", r.status)
	}
	e.Reset()
	r = do(t, "GET", srv.URL+"/_ccemu/ums-handshakes", nil, nil)
	if string(r.body) != `{"handshakes":[]}` {
		t.Errorf("after reset: %s", r.body)
	}
}

// Close closes the sockets with 1001, refuses new ones with 503 and leaves
// no goroutine behind. Not parallel, so the goroutine check sees only this
// test's.
func TestUMSCloseLeavesNothing(t *testing.T) {
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	bot := mustLogin(t, srv, appBody())
	c1 := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	c2 := dialUMS(t, umsURL(srv, DefaultAccountID, bot.bearer, "?v=2.1"))
	if n := umsGoroutines(); n == 0 {
		t.Fatal("no socket or sweep goroutine seen: the check below would prove nothing")
	}
	closed := make(chan error, 1)
	go func() { closed <- e.Close() }()
	for _, c := range []*websocket.Conn{c1, c2} {
		if ce := closedWith(t, c, 5*time.Second); ce.Code != websocket.StatusGoingAway {
			t.Errorf("closed with %v, want 1001", ce)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	// Close has waited for them; a goroutine may still be returning from
	// its last deferred call.
	testkit.Eventually(t, 5*time.Second, "no UMS goroutine left after Close", func() bool { return umsGoroutines() == 0 })
	if c := e.Counters(); c.UMSClosesShutdown != 2 || c.UMSOpenSockets != 0 {
		t.Errorf("counters %+v", c)
	}
	envelope(t, refusedUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1")), 503, codeUnavailable, "SERVICE_UNAVAILABLE")
	if err := e.Close(); err != nil { // twice is fine
		t.Fatal(err)
	}
	// The rest of the emulator still works.
	if r := s.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("data call after Close: %d", r.status)
	}
}

// umsGoroutines counts goroutines running the emulator's UMS code.
func umsGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "ccemu.(*Emulator).serveUMS") || strings.Contains(g, "ccemu.(*Emulator).umsSweep") {
			n++
		}
	}
	return n
}

// The sweep runs only while sockets are open.
func TestUMSSweepStopsWithLastSocket(t *testing.T) {
	t.Parallel()
	e, srv := newUMSServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	c := dialUMS(t, umsURL(srv, DefaultAccountID, s.bearer, "?v=2.1"))
	call(t, c, `{"kind":"req","id":"1","type":"GetClock"}`)
	e.mu.Lock()
	running := e.ums.sweepStop != nil
	e.mu.Unlock()
	if !running {
		t.Fatal("no sweep while a socket is open")
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	testkit.Eventually(t, 5*time.Second, "the sweep to stop", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.ums.sweepStop == nil
	})
}
