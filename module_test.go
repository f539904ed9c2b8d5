// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Integration tests: a real Caddy (caddytest, in this process) runs lpauth in
// front of reverse_proxy to the CC emulator, served over HTTP on loopback.
// caddytest replaces the one running config on each load, so these tests
// must not run in parallel with each other.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// The in-process Caddy's ports. LPAUTH_TEST_PORT_OFFSET moves all of them,
// so that two checkouts can run their suites on one machine at once.
var (
	portOffset = testPortOffset()
	adminPort  = 2999 + portOffset
	adminAddr  = fmt.Sprintf("localhost:%d", adminPort)
	httpPort   = 9080 + portOffset
	httpsPort  = 9443 + portOffset
	proxyAddr  = fmt.Sprintf("127.0.0.1:%d", httpPort)
	proxyURL   = "http://" + proxyAddr
	// portsGlobal is the global options block's lines for these ports.
	portsGlobal = fmt.Sprintf("http_port %d\n\thttps_port %d\n\t", httpPort, httpsPort)
)

// caddytest's own helpers (AssertLoadError) post to its default admin port.
func init() { caddytest.Default.AdminPort = adminPort }

func testPortOffset() int {
	n, err := strconv.Atoi(os.Getenv("LPAUTH_TEST_PORT_OFFSET"))
	if err != nil || n < 0 || n > 20000 {
		return 0
	}
	return n
}

const testPasswordEnv = "LPAUTH_TEST_PASSWORD"

// caddyConfig returns a Caddyfile with lpauth in front of reverse_proxy to
// the emulator. extra goes inside the lpauth block; global into the global
// options.
func caddyConfig(srv *httptest.Server, extra, global string) string {
	return testSite(srv, extra, reverseProxyTo(srv), global)
}

// loggedInProxy loads the default config against a new emulator and logs
// in with a first request.
func loggedInProxy(t *testing.T) *ccemu.Emulator {
	t.Helper()
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "", ""))
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d", r.status)
	}
	return emu
}

// reverseProxyTo is the Caddyfile line that proxies to srv.
func reverseProxyTo(srv *httptest.Server) string { return "\treverse_proxy " + hostport(srv) + "\n" }

// testSite is the caddytest config every integration test starts from:
// lpauth at site level (extra inside its block), then handlers.
func testSite(srv *httptest.Server, extra, handlers, global string) string {
	return testProxy(srv, extra, handlers, global).Caddyfile()
}

// testProxy is testSite before it is written out.
func testProxy(srv *httptest.Server, extra, handlers, global string) caddyproc.Proxy {
	return caddyproc.Proxy{
		Admin:    adminAddr,
		Global:   portsGlobal + "skip_install_trust\n\t" + global,
		Addr:     proxyAddr,
		CSDS:     srv.URL,
		Password: "{env." + testPasswordEnv + "}",
		Lpauth:   extra,
		Handlers: handlers,
	}
}

// caddytestTier skips the test with -short, which runs the unit tier only.
// Every way into the in-process Caddy (loadCaddy, loadCaddyAs,
// assertLoadError, loadWithModuleSubscriptions) starts with it.
func caddytestTier(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("caddytest tier (an in-process Caddy): run without -short")
	}
}

// loadCaddy loads a config into the in-process Caddy. Without -short, a
// caddytest that skips (its prerequisites missing) fails instead: these
// tests are the point of CI.
func loadCaddy(t *testing.T, config string) *caddytest.Tester {
	t.Helper()
	return loadCaddyAs(t, config, "caddyfile")
}

// loadCaddyAs is loadCaddy for a config in the given adapter's format
// ("json" for Caddy's own).
func loadCaddyAs(t *testing.T, config, adapter string) *caddytest.Tester {
	t.Helper()
	caddytestTier(t)
	if os.Getenv(testPasswordEnv) == "" {
		os.Setenv(testPasswordEnv, ccemu.DefaultPassword)
	}
	httpClient.CloseIdleConnections()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	loaded := false
	defer func() {
		if !loaded {
			t.Error("caddytest did not load the config (skipped or failed)")
		}
	}()
	tester.InitServer(config, adapter)
	loaded = !t.Failed()
	justLoaded.Store(loaded)
	return tester
}

// assertLoadError loads a config that must fail and checks that the error
// names want. Unlike caddytest.AssertLoadError it survives the admin
// endpoint restarting around a load (seen as an EOF on a kept-alive
// connection): it uses a fresh connection each time and tries again.
func assertLoadError(t *testing.T, config, adapter, want string) {
	t.Helper()
	caddytestTier(t)
	if os.Getenv(testPasswordEnv) == "" {
		os.Setenv(testPasswordEnv, ccemu.DefaultPassword)
	}
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/load", strings.NewReader(config))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/"+adapter)
		if adapter == "json" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Close = true
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if attempt == 3 {
				t.Fatalf("loading a config that must fail: %v", err)
			}
			unloadCaddy(t) // starts the in-process Caddy if it is not running
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Fatalf("a config that must fail with %q loaded", want)
		}
		if !strings.Contains(string(body), want) {
			t.Errorf("expected error %q but got %q", want, body)
		}
		return
	}
}

// unloadCaddy replaces the config with one without lpauth, which is what
// stopping Caddy does to the module.
func unloadCaddy(t *testing.T) {
	t.Helper()
	loadCaddy(t, "{\n\tadmin "+adminAddr+"\n\tskip_install_trust\n\tauto_https off\n}\n")
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// justLoaded is set by a load and cleared by the next send.
var justLoaded atomic.Bool

type echoReply struct {
	Method            string `json:"method"`
	Path              string `json:"path"`
	Query             string `json:"query"`
	BodyLength        int64  `json:"body_length"`
	BodySHA256        string `json:"body_sha256"`
	AuthorizationSent bool   `json:"authorization_present"`
	BearerFingerprint string `json:"bearer_fingerprint"`
	CookiePresent     bool   `json:"cookie_present"`
	CredentialKind    string `json:"credential_kind"`
	AuthScheme        string `json:"authorization_scheme"`
}

type result struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

func send(t testing.TB, method, path string, body []byte, hdr ...string) result {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, proxyURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	resp, err := httpClient.Do(req)
	if err != nil && justLoaded.Swap(false) {
		// A connection accepted as Caddy swapped configs may be reset
		// (with or without lpauth): the first request after a load is
		// sent once more, on a new connection.
		httpClient.CloseIdleConnections()
		if req.GetBody != nil {
			req.Body, err = req.GetBody()
		}
		if err == nil {
			resp, err = httpClient.Do(req)
		}
	}
	justLoaded.Store(false)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return result{}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: reading body: %v", method, path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: data, took: time.Since(start)}
}

// sendChunked POSTs body with no Content-Length, so that it goes chunked,
// and fails the test if the request did not leave that way.
func sendChunked(t testing.TB, path string, body []byte) result {
	t.Helper()
	wire := &wireHead{}
	client := &http.Client{Timeout: httpClient.Timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &recordingConn{Conn: c, head: wire}, nil
		},
	}}
	req, err := http.NewRequest(http.MethodPost, proxyURL+path, io.MultiReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if head := wire.String(); !strings.Contains(head, "\r\nTransfer-Encoding: chunked\r\n") || strings.Contains(head, "\r\nContent-Length:") {
		t.Fatalf("the request went out as %q, want chunked with no length", head)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: reading body: %v", path, err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: data}
}

// wireHead keeps the head of what a client wrote: its request line and
// headers, up to the blank line.
type wireHead struct {
	mu sync.Mutex
	b  []byte
}

func (w *wireHead) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	head, _, _ := bytes.Cut(w.b, []byte("\r\n\r\n"))
	return string(head) + "\r\n"
}

type recordingConn struct {
	net.Conn
	head *wireHead
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.head.mu.Lock()
	if len(c.head.b) < 8<<10 {
		c.head.b = append(c.head.b, p[:min(len(p), 8<<10)]...)
	}
	c.head.mu.Unlock()
	return c.Conn.Write(p)
}

func (r result) echo(t testing.TB) echoReply {
	t.Helper()
	var e echoReply
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d, body is not the emulator's echo: %q", r.status, r.body)
	}
	return e
}

func dataPath(rest string) string { return "/api/account/" + ccemu.DefaultAccountID + "/" + rest }

func fingerprint(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:8]
}

func TestProxyInjectsBearerReplacingClientHeader(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "", ""))
	// The config logs in as it starts, before any request.
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })
	for range 5 {
		r := send(t, "GET", dataPath("conversations"), nil, "Authorization", "Basic Zm9vOmJhcg==")
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		e := r.echo(t)
		if !e.AuthorizationSent || e.BearerFingerprint == fingerprint("Zm9vOmJhcg==") {
			t.Fatalf("upstream did not get our bearer: %+v", e)
		}
	}
	if n := emu.Counters(); n.Logins != 1 || n.DomainLookups != 1 {
		t.Fatalf("5 requests: %+v; want 1 Domain API lookup and 1 login", n)
	}
}

// Caddy's request_header (ordered after lpauth) edits header values in
// place; each request must own its Authorization value, or this races.
func TestProxyRequestHeaderEditAfterLpauthIsPerRequest(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, testSite(srv, "", "\trequest_header Authorization Bearer Bearer\n"+reverseProxyTo(srv), ""))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for j := range 10 {
				if r := send(t, "GET", dataPath(fmt.Sprintf("edit/%d/%d", i, j)), nil); r.status != 200 || !r.echo(t).AuthorizationSent {
					t.Errorf("status %d: %s", r.status, r.body)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := emu.Counters(); n.LoginAttempts != 1 || n.UnauthorizedDataCalls != 0 {
		t.Fatalf("%+v; want 1 login and no 401", n)
	}
}

func TestProxyConcurrentPOSTsAfterExpiry(t *testing.T) {
	emu := loggedInProxy(t)
	emu.ExpireSessions()
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			body, sum := randomBody(t, 16<<10+i*997)
			r := send(t, "POST", dataPath(fmt.Sprintf("messages/%d", i)), body, "Content-Type", "application/octet-stream")
			if r.status != 200 {
				t.Errorf("POST %d: status %d: %s", i, r.status, r.body)
				return
			}
			if e := r.echo(t); e.BodySHA256 != sum || e.BodyLength != int64(len(body)) {
				t.Errorf("POST %d: upstream got %d bytes sha %s, sent %d sha %s", i, e.BodyLength, e.BodySHA256, len(body), sum)
			}
		})
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins in all, want 2 (one re-login for 64 requests)", n)
	}
}

// A body of unknown length (chunked) below the limit is buffered and
// replayed whole after a re-login, like one with a Content-Length.
func TestProxyChunkedBodyReplayedAfterExpiry(t *testing.T) {
	emu := loggedInProxy(t)
	emu.ExpireSessions()
	body, sum := randomBody(t, 200<<10)
	r := sendChunked(t, dataPath("chunked"), body)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if e := r.echo(t); e.BodySHA256 != sum || e.BodyLength != int64(len(body)) {
		t.Fatalf("upstream got %d bytes sha %s, sent %d sha %s", e.BodyLength, e.BodySHA256, len(body), sum)
	}
	if n := emu.Counters(); n.LoginAttempts != 2 || n.UnauthorizedDataCalls != 1 {
		t.Fatalf("%+v; want one 401, then one re-login and the replay", n)
	}
}

func TestProxyLate401RetriesWithoutLogin(t *testing.T) {
	emu := loggedInProxy(t)
	emu.HoldNextDataCalls(1)
	slow := make(chan result)
	go func() { slow <- send(t, "GET", dataPath("slow"), nil) }()
	eventually(t, 5*time.Second, "the slow request upstream, with the old token", func() bool { return emu.Counters().HeldDataCalls == 1 })
	emu.ExpireSessions()
	if r := send(t, "GET", dataPath("fast"), nil); r.status != 200 {
		t.Fatalf("request after expiry: %d", r.status)
	}
	before := emu.Counters()
	emu.ReleaseDataCalls()
	if r := <-slow; r.status != 200 {
		t.Fatalf("late 401 was not retried with the current token: %d %s", r.status, r.body)
	}
	after := emu.Counters()
	if after.LoginAttempts != 2 || after.Refreshes != before.Refreshes || before.Refreshes != 1 {
		t.Fatalf("before the late 401 %+v, after %+v; want 2 logins and the single check refresh", before, after)
	}
}

func TestProxyEndpoint401GoesToClient(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "", ""))
	for range 20 {
		r := send(t, "GET", dataPath("always-401"), nil)
		if r.status != 401 || r.header.Get("WWW-Authenticate") == "" || !bytes.Contains(r.body, []byte("internalCode")) {
			t.Fatalf("endpoint 401 not passed on whole: %d %v %s", r.status, r.header, r.body)
		}
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Refreshes != 1 {
		t.Fatalf("20 endpoint 401s: %+v; want 1 login and 1 refresh", n)
	}
}

func TestProxyFailedReloginGivesClean503(t *testing.T) {
	emu := loggedInProxy(t)
	emu.ExpireSessions()
	emu.FailNextLogins(100, 500, 0)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			body, _ := randomBody(t, 4096)
			r := send(t, "POST", dataPath(fmt.Sprintf("x/%d", i)), body)
			if r.status != 503 {
				t.Errorf("status %d, want 503", r.status)
			}
			if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
			}
			for _, h := range []string{"WWW-Authenticate", "X-Ccemu-Error"} {
				if r.header.Get(h) != "" {
					t.Errorf("the held-back 401's %s leaked into the 503", h)
				}
			}
			if cl := r.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(r.body)) {
				t.Errorf("Content-Length %s but %d bytes: the 401's length leaked", cl, len(r.body))
			}
			if bytes.Contains(r.body, []byte("Bearer token")) {
				t.Errorf("the 401's body leaked: %s", r.body)
			}
			if ct := r.header.Get("Content-Type"); strings.Contains(ct, "json") {
				t.Errorf("the 401's Content-Type leaked: %s", ct)
			}
		})
	}
	wg.Wait()
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d login attempts, want 2 (the failed re-login shared, then backing off)", n)
	}
}

func TestProxyWrongPasswordFast503s(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	t.Setenv("LPAUTH_TEST_WRONG", "not-the-password")
	cfg := strings.Replace(caddyConfig(srv, "", ""), "{env."+testPasswordEnv+"}", "{env.LPAUTH_TEST_WRONG}", 1)
	loadCaddy(t, cfg)
	deadline := time.Now().Add(8 * time.Second)
	n := 0
	pace := time.NewTicker(100 * time.Millisecond) // requests spread over the 8 s the backoff is measured on
	defer pace.Stop()
	for ; time.Now().Before(deadline); <-pace.C {
		r := send(t, "GET", dataPath("x"), nil)
		n++
		if r.status != 503 {
			t.Fatalf("status %d with a wrong password", r.status)
		}
		if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); ra < 1 {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
		// Waiting for a login would take up to login_timeout (10s).
		if n > 1 && r.took > time.Second {
			t.Fatalf("a 503 during backoff took %s", r.took)
		}
	}
	if a := emu.Counters().LoginAttempts; a < 1 || a > 3 {
		t.Fatalf("%d login attempts in 8s with a wrong password, want 1 to 3", a)
	}
}

func TestProxyLogin429DelaysNextLogin(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	emu.FailNextLogins(1, 429, 0)
	loadCaddy(t, caddyConfig(srv, "", ""))
	r := send(t, "GET", dataPath("x"), nil)
	if r.status != 503 {
		t.Fatalf("status %d after a login 429", r.status)
	}
	if ra, _ := strconv.Atoi(r.header.Get("Retry-After")); ra < 5 {
		t.Fatalf("Retry-After %q after a login 429, want at least 5", r.header.Get("Retry-After"))
	}
	eventually(t, 10*time.Second, "a request to succeed after the 429", func() bool {
		return send(t, "GET", dataPath("x"), nil).status == 200
	})
	times := emu.LoginAttemptTimes()
	if len(times) != 2 {
		t.Fatalf("%d login attempts, want 2", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < 5*time.Second {
		t.Fatalf("next login %s after a 429, want at least 5s", gap)
	}
}

func TestProxyHungLoginCutAtLoginTimeout(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "login_timeout 1s", ""))
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })
	// The request finds the session gone and waits for the re-login, which
	// hangs: it is cut at login_timeout.
	emu.ExpireSessions()
	emu.DelayNextLogins(1, 30*time.Second)
	r := send(t, "GET", dataPath("x"), nil)
	if r.status != 503 {
		t.Fatalf("status %d", r.status)
	}
	if r.took < 900*time.Millisecond || r.took > 3*time.Second {
		t.Fatalf("answered after %s, want about the 1s login_timeout", r.took)
	}
}

// A streamed response (server-sent events) reaches the client as the
// upstream flushes it, not when it ends.
func TestProxyStreamedResponsePassesAsFlushed(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	release := make(chan struct{})
	var bearer atomic.Value
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(release) })
	loadCaddy(t, testSite(srv, "", reverseProxyTo(up), ""))

	type firstEvent struct {
		status int
		line   string
		err    error
	}
	first := make(chan firstEvent, 1)
	go func() {
		resp, err := httpClient.Get(proxyURL + dataPath("events"))
		if err != nil {
			first <- firstEvent{err: err}
			return
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		first <- firstEvent{resp.StatusCode, line, err}
	}()
	select {
	case ev := <-first:
		if ev.err != nil || ev.status != 200 || ev.line != "data: first\n" {
			t.Fatalf("status %d, first line %q, %v", ev.status, ev.line, ev.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event was held back until the stream ends")
	}
	if b, _ := bearer.Load().(string); !strings.HasPrefix(b, "Bearer ") || emu.Counters().Logins != 1 {
		t.Fatalf("the upstream got Authorization %q after %d logins", b, emu.Counters().Logins)
	}
}

// A connection upgrade (as WebSockets use) goes through lpauth: the upgrade
// request carries the bearer, and bytes then flow both ways.
func TestProxyUpgradedConnectionWorks(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || r.Header.Get("Upgrade") != "lpauth-echo" {
			http.Error(w, "want a bearer and an upgrade", http.StatusBadRequest)
			return
		}
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: lpauth-echo\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			rw.WriteString(strings.ToUpper(line))
			rw.Flush()
		}
	}))
	t.Cleanup(up.Close)
	loadCaddy(t, testSite(srv, "", reverseProxyTo(up), ""))

	conn, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: lpauth-echo\r\n\r\n", dataPath("socket"), proxyAddr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, msg := range []string{"hello\n", "still here\n"} {
		io.WriteString(conn, msg)
		if got, err := br.ReadString('\n'); err != nil || got != strings.ToUpper(msg) {
			t.Fatalf("through the upgraded connection: %q, %v", got, err)
		}
	}
	// An upgraded connection may last for hours: a logout after a reload
	// does not wait for it.
	forEachKeeper(func(k *keeper) {
		if n := k.InFlight(); n != 0 {
			t.Errorf("an open upgraded connection counts as %d requests in flight", n)
		}
	})
}

func TestProxyBodyAboveLimitStreams(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "retry_body_limit 1KiB", ""))
	big, sum := randomBody(t, 256<<10)
	r := send(t, "POST", dataPath("upload"), big)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if e := r.echo(t); e.BodySHA256 != sum {
		t.Fatal("a streamed body arrived altered")
	}
	// Unknown length (chunked), still above the limit: the bytes read while
	// deciding must be put back in front.
	if e := sendChunked(t, dataPath("upload"), big).echo(t); e.BodySHA256 != sum {
		t.Fatal("a chunked body above the limit arrived altered")
	}

	// After an expiry, a body above the limit cannot be replayed: its 401
	// goes to the client, and the re-login still happens for the next.
	emu.ExpireSessions()
	if r := send(t, "POST", dataPath("upload"), big); r.status != 401 {
		t.Fatalf("unreplayable request after expiry: %d, want the 401", r.status)
	}
	eventually(t, 5*time.Second, "the re-login after an unreplayable 401", func() bool {
		return emu.Counters().Logins == 2
	})
	small, smallSum := randomBody(t, 1000)
	if r := send(t, "POST", dataPath("upload"), small); r.status != 200 || r.echo(t).BodySHA256 != smallSum {
		t.Fatalf("next request: %d", r.status)
	}
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins", n)
	}
}

// A client's Content-Length is not an allocation order: a huge declared
// length below a huge retry_body_limit must not make Caddy reserve it.
func TestProxyHugeDeclaredLengthIsNotPreallocated(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "retry_body_limit 64MiB", ""))
	conn, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	// Expect: 100-continue makes Go's server answer 100 when the handler
	// first reads the body: the sign that lpauth is reading it.
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 67108864\r\nExpect: 100-continue\r\n\r\n", dataPath("x"), proxyAddr)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("waiting for lpauth to read the body: %q %v", line, err)
	}
	fmt.Fprint(conn, "only this")
	conn.Close()
	if r := send(t, "GET", dataPath("y"), nil); r.status != 200 {
		t.Fatalf("after a request that declared 500 GiB: %d", r.status)
	}
}

func TestProxyReloadKeepsSessionAndStopLogsOut(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "refresh_interval 1h", ""))
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	// Same identity, new tuning: the session stays, and the new refresh
	// interval applies.
	loadCaddy(t, caddyConfig(srv, "refresh_interval 1s", ""))
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d after reload", r.status)
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Logouts != 0 {
		t.Fatalf("after reload: %+v; want the one login and no logout", n)
	}
	eventually(t, 5*time.Second, "the reloaded refresh_interval to apply", func() bool {
		return emu.Counters().RefreshesOK >= 2
	})
	unloadCaddy(t)
	if n := emu.Counters(); n.Logouts != 1 || n.LiveSessions != 0 {
		t.Fatalf("after stop: %+v; want 1 logout", n)
	}
}

func TestProxyTwoSitesShareOneSession(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	cfg := caddyConfig(srv, "", "") + strings.Replace(
		strings.SplitN(caddyConfig(srv, "", ""), "}\n", 2)[1], proxyAddr, fmt.Sprintf("127.0.0.1:%d", httpPort+1), 1)
	loadCaddy(t, cfg)
	for _, base := range []string{proxyURL, fmt.Sprintf("http://127.0.0.1:%d", httpPort+1)} {
		resp, err := httpClient.Get(base + dataPath("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", base, resp.StatusCode)
		}
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins for two sites with one identity", n)
	}
}

// applicationLoginConfig is caddyConfig with the emulator's application
// login (app_key and secret) instead of the user's password.
func applicationLoginConfig(t *testing.T, srv *httptest.Server) string {
	t.Setenv("LPAUTH_TEST_APP_SECRET", ccemu.DefaultAppSecret)
	return replaceOnce(t, caddyConfig(srv, "", ""),
		"username demo-agent\n\t\tpassword {env."+testPasswordEnv+"}",
		"username demo-bot\n\t\tapp_key demo-app-key\n\t\tsecret {env.LPAUTH_TEST_APP_SECRET}")
}

func TestProxyApplicationLogin(t *testing.T) {
	// No user accounts: only the application login can succeed, so a
	// rewrite that left the user login in place fails the test.
	emu, srv := emulator(t, ccemu.Config{Users: map[string]string{}})
	loadCaddy(t, applicationLoginConfig(t, srv))
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if n := emu.Counters().Logins; n != 1 {
		t.Fatalf("%d logins", n)
	}
}

func TestProxySiteLevelCoversNestedHandles(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	host := strings.TrimPrefix(srv.URL, "http://")
	cfg := strings.Replace(caddyConfig(srv, "", ""), "\treverse_proxy "+host+"\n",
		"\thandle_path /cc/* {\n\t\treverse_proxy "+host+"\n\t}\n\thandle {\n\t\trespond 404\n\t}\n", 1)
	if cfg == caddyConfig(srv, "", "") {
		t.Fatal("config rewrite failed")
	}
	loadCaddy(t, cfg)
	if r := send(t, "GET", "/cc"+dataPath("x"), nil); r.status != 200 || r.echo(t).Path != dataPath("x") {
		t.Fatalf("status %d through handle_path: %s", r.status, r.body)
	}
	// The retry after a 401 runs the same handle block again (Caddy skips
	// a handle group already satisfied by the first attempt otherwise).
	emu.ExpireSessions()
	body, sum := randomBody(t, 5000)
	if r := send(t, "POST", "/cc"+dataPath("y"), body); r.status != 200 || r.echo(t).BodySHA256 != sum {
		t.Fatalf("retried request through handle_path: %d %q", r.status, r.body)
	}
	if n := emu.Counters().Logins; n != 2 {
		t.Fatalf("%d logins", n)
	}
}

func TestProxyJSONConfig(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddyAs(t, fmt.Sprintf(`{
		"admin": {"listen": %q},
		"apps": {"http": {"servers": {"proxy": {
			"listen": [%q],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [
				{"handler": "lpauth", "account_id": "12345678", "username": "demo-agent",
				 "password": "{env.%s}", "csds": %q,
				 "refresh_interval": "2m", "login_timeout": 3000000000, "retry_body_limit": 2048},
				{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
			]}]
		}}}}
	}`, adminAddr, proxyAddr, testPasswordEnv, srv.URL, strings.TrimPrefix(srv.URL, "http://")), "json")
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if n := emu.Counters().Logins; n != 1 {
		t.Fatalf("%d logins", n)
	}
}

// JSON null means absent, for every field: "storage": null is no cluster
// mode, so stopping logs the session out as a single instance does.
func TestProxyJSONNullStorageIsAbsent(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddyAs(t, fmt.Sprintf(`{
		"admin": {"listen": %q},
		"apps": {"http": {"servers": {"proxy": {
			"listen": [%q],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [
				{"handler": "lpauth", "account_id": "12345678", "username": "demo-agent",
				 "password": "{env.%s}", "csds": %q, "storage": null, "logout_on_stop": null,
				 "encryption_key": null, "refresh_interval": null},
				{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
			]}]
		}}}}
	}`, adminAddr, proxyAddr, testPasswordEnv, srv.URL, strings.TrimPrefix(srv.URL, "http://")), "json")
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	unloadCaddy(t)
	if c := emu.Counters(); c.Logins != 1 || c.Logouts != 1 {
		t.Fatalf("%+v: want 1 login and the logout at stop of a single instance", c)
	}
}

// Every secret the session used: the password, and every bearer, csrf and
// Session_id the emulator issued, must stay out of debug logs, errors and
// the admin API.
func TestProxyNoSecretsInDebugLogs(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	global, logFile := fileLog(t, "DEBUG")
	loadCaddy(t, caddyConfig(srv, "refresh_interval 1s", global)+"\n")
	// A login, a normal call, an endpoint 401, an expiry with re-login and
	// retry, refreshes, a failed login, and a logout.
	send(t, "GET", dataPath("x"), nil, "Authorization", "Bearer client-token")
	emu.ExpireSessions()
	body, _ := randomBody(t, 100)
	if r := send(t, "POST", dataPath("y"), body); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	send(t, "GET", dataPath("always-401"), nil)
	refreshed := emu.Counters().RefreshesOK
	eventually(t, 3*time.Second, "a periodic refresh", func() bool { return emu.Counters().RefreshesOK > refreshed })
	emu.ExpireSessions()
	emu.FailNextLogins(1, 401, 0)
	attempts := emu.Counters().LoginAttempts
	// The refresh finds the session gone; the re-login is refused.
	eventually(t, 3*time.Second, "the refused re-login", func() bool { return emu.Counters().LoginAttempts > attempts })
	if r := send(t, "GET", dataPath("z"), nil); r.status != 503 {
		t.Fatalf("status %d while the login backs off", r.status)
	}

	resp, err := http.Get("http://" + adminAddr + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	adminConfig, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	unloadCaddy(t)

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"logged in to CC", "upstream 401", "CC login refused"} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Fatalf("the debug log lacks %q: this test would see nothing", want)
		}
	}
	secrets := emu.IssuedSecrets()
	if len(secrets) < 6 {
		t.Fatalf("only %d secrets issued", len(secrets))
	}
	for _, s := range secrets {
		if bytes.Contains(logs, []byte(s)) {
			t.Errorf("a secret (%d chars) appears in the debug log", len(s))
		}
		if bytes.Contains(adminConfig, []byte(s)) {
			t.Errorf("a secret (%d chars) appears in the admin API's /config/", len(s))
		}
	}
}

// Cluster mode from a Caddyfile: the session lands, sealed with the
// encryption_key, in the configured storage, and survives a restart.
func TestProxyClusterModeFromCaddyfile(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	t.Setenv("LPAUTH_TEST_ENC_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	cfg := caddyConfig(srv, "storage file_system {\n\t\t\troot "+dir+"\n\t\t}\n\t\tencryption_key {env.LPAUTH_TEST_ENC_KEY}", "")
	loadCaddy(t, cfg)
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "lpauth", "sessions", ccemu.DefaultAccountID, "*.json"))
	if len(matches) != 1 {
		t.Fatalf("stored sessions: %v", matches)
	}
	blob, _ := os.ReadFile(matches[0])
	if !bytes.Contains(blob, []byte(`"kdf":"key"`)) {
		t.Fatalf("the blob was not sealed with the encryption_key: %s", blob)
	}
	// A restart: stopping does not log out (the cluster still uses the
	// session) and the restarted instance adopts the stored session.
	unloadCaddy(t)
	loadCaddy(t, cfg)
	if r := send(t, "GET", dataPath("y"), nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Logouts != 0 {
		t.Fatalf("after a restart in cluster mode: %+v; want the stored session adopted, no logout", n)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	t.Setenv("LPAUTH_TEST_EMPTY", "")
	base := caddyConfig(srv, "", "")
	for _, tc := range []struct{ change, want string }{
		{"bogus 1", `unrecognized subdirective \"bogus\"`},
		{"refresh_interval soon", "refresh_interval"},
		{"refresh_interval -5s", "refresh_interval: must be positive"},
		{"refresh_interval 1ms", "refresh_interval must be between 1s and 4h, got 1ms"},
		{"refresh_interval 5h", "refresh_interval must be between 1s and 4h, got 5h0m0s"},
		{"login_timeout 1ns", "login_timeout must be between 1s and 5m, got 1ns"},
		{"login_timeout 1000h", "login_timeout must be between 1s and 5m, got 1000h0m0s"},
		{"retry_body_limit lots", "retry_body_limit"},
		{"login_timeout", "login_timeout needs a value"},
		{"csds http://api.liveperson.net", "plain http is allowed only for loopback"},
		{"app_key demo-app-key", "not both"},
		{"account_id 2", "account_id given more than once"},
		{"domain ftp://x", "domain:"},
		{"ca_file /nonexistent/ca.pem", "ca_file"},
		{"logout_on_stop maybe", "logout_on_stop"},
		{"encryption_key MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "encryption_key is only used with storage"},
		{"storage\n\t\tencryption_key tooshort", "encryption_key: must be 32 bytes"},
		{"storage no_such_storage", "caddy.storage.no_such_storage"},
	} {
		cfg := base
		switch {
		case tc.change == "account_id 2":
			cfg = strings.Replace(cfg, "account_id 12345678", "account_id 12345678\n\t\taccount_id 2", 1)
		case strings.HasPrefix(tc.change, "csds "):
			cfg = strings.Replace(cfg, "csds "+srv.URL, tc.change, 1)
		default:
			cfg = strings.Replace(cfg, "\t\tcsds ", "\t\t"+tc.change+"\n\t\tcsds ", 1)
		}
		assertLoadError(t, cfg, "caddyfile", tc.want)
	}
	assertLoadError(t, strings.Replace(base, "{env."+testPasswordEnv+"}", "{env.LPAUTH_TEST_EMPTY}", 1),
		"caddyfile", "password: {env.LPAUTH_TEST_EMPTY} is unset or empty")
	assertLoadError(t, strings.Replace(base, "account_id 12345678\n", "", 1), "caddyfile", "account_id is required")
	// A secret file that is missing or empty names the field and the file.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{empty, "/nonexistent/lp_password"} {
		assertLoadError(t, strings.Replace(base, "{env."+testPasswordEnv+"}", "{file."+path+"}", 1),
			"caddyfile", "password: {file."+path+"}: the file is missing, unreadable or empty")
	}
}

// Turning cluster mode on by a reload, with a storage module of its own:
// the identity takes in the storage config as given (loading the module
// empties the field it came in), so the reload makes a clustered identity
// rather than failing on the running local one.
func TestReloadIntoClusterModeWithStorageModule(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, "", ""))
	if r := send(t, "GET", dataPath("local"), nil); r.status != 200 {
		t.Fatalf("local: %d", r.status)
	}
	dir := t.TempDir()
	loadCaddy(t, caddyConfig(srv, "storage file_system {\n\t\t\troot "+dir+"\n\t\t}", ""))
	if r := send(t, "GET", dataPath("clustered"), nil); r.status != 200 {
		t.Fatalf("clustered: %d", r.status)
	}
	eventually(t, 5*time.Second, "the session stored for the cluster", func() bool {
		found := false
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && strings.HasSuffix(p, ".json") && strings.Contains(p, "lpauth") {
				found = true
			}
			return nil
		})
		return found
	})
	if n := emu.Counters().Logins; n != 2 {
		t.Errorf("%d logins, want 2: the clustered identity is a new one", n)
	}
}
