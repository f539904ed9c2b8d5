// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Tests of the lpdomain upstream source: unit tests of its cache against
// the emulator, and integration tests (caddytest, not parallel) of
// reverse_proxy routing through it.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// provisionDomain provisions d outside Caddy and records its logs.
func provisionDomain(t testing.TB, d *DomainUpstreams) *observer.ObservedLogs {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := d.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	d.logger = zap.New(core)
	t.Cleanup(func() { _ = d.Cleanup() })
	return logs
}

func getDial(t testing.TB, d *DomainUpstreams) (string, error) {
	t.Helper()
	ups, err := d.GetUpstreams(httptest.NewRequest("GET", "/", nil))
	if err != nil {
		return "", err
	}
	if len(ups) != 1 {
		t.Fatalf("%d upstreams, want 1", len(ups))
	}
	return ups[0].Dial, nil
}

// heldDomainAPI passes the emulator's Domain API answers through, or
// holds them until released, so that a test can tell whether a request
// waited for a lookup. It counts the lookups that arrive.
type heldDomainAPI struct {
	next    http.Handler
	arrived atomic.Int64
	mu      sync.Mutex
	gate    chan struct{} // nil: pass through
}

func (h *heldDomainAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "/service/") {
		h.arrived.Add(1)
		h.mu.Lock()
		gate := h.gate
		h.mu.Unlock()
		if gate != nil {
			<-gate
		}
	}
	h.next.ServeHTTP(w, r)
}

func (h *heldDomainAPI) hold() {
	h.mu.Lock()
	h.gate = make(chan struct{})
	h.mu.Unlock()
}

func (h *heldDomainAPI) release() {
	h.mu.Lock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
	h.mu.Unlock()
}

// getDialAtOnce is getDial for a request that must not wait for the
// Domain API (held by the test): waiting would end in a deadline error.
func getDialAtOnce(t testing.TB, d *DomainUpstreams) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ups, err := d.GetUpstreams(httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the request waited for the Domain API: %v", err)
	}
	if err != nil {
		return "", err
	}
	return ups[0].Dial, nil
}

// setLpdomainClock makes the lpdomain sources provisioned during the test
// (those of caddytest configs too) run on clock.
func setLpdomainClock(t *testing.T, clock cc.Clock) {
	lpdomainClock.Lock()
	prev := lpdomainClock.c
	lpdomainClock.c = clock
	lpdomainClock.Unlock()
	t.Cleanup(func() {
		lpdomainClock.Lock()
		lpdomainClock.c = prev
		lpdomainClock.Unlock()
	})
}

func TestUpstreamCacheSharesRenewsAndSurvivesOutage(t *testing.T) {
	emu := ccemu.New(ccemu.Config{})
	api := &heldDomainAPI{next: emu}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(api.release) // before the server closes: it waits for held requests
	t.Cleanup(func() { cc.DropDomainAnswers(srv.URL) })
	clock := newFakeClock()
	const refresh = 400 * time.Millisecond
	d := &DomainUpstreams{Service: "msgHist", AccountID: ccemu.DefaultAccountID, CSDS: srv.URL, Refresh: caddy.Duration(refresh), clock: clock}
	logs := provisionDomain(t, d)
	// confirmed is the clock's time when the Domain API last answered one of
	// d's lookups: the resolver reports a lookup once it has recorded it.
	var confirmed atomic.Pointer[time.Time]
	report := d.report
	d.report = func(r cc.DomainReport) {
		if r.Err == nil {
			now := clock.Now()
			confirmed.Store(&now)
		}
		report(r)
	}
	want := hostport(srv)
	lookups := func() int64 { return emu.Counters().DomainLookups }
	// renewed waits until the answer is confirmed at the clock's now.
	renewed := func() {
		t.Helper()
		eventually(t, 5*time.Second, "the renewal to be recorded", func() bool {
			at := confirmed.Load()
			return at != nil && at.Equal(clock.Now())
		})
	}
	warnings := func() int {
		return logs.FilterMessage("CC Domain API lookup failed; still using the last known host").Len()
	}

	// Cold: concurrent requests share one lookup, held until all started.
	api.hold()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if dial, err := getDial(t, d); err != nil || dial != want {
				t.Errorf("cold: %q, %v; want %s", dial, err, want)
			}
		})
	}
	eventually(t, 5*time.Second, "the cold lookup to arrive", func() bool { return api.arrived.Load() == 1 })
	api.release()
	wg.Wait()
	if n := lookups(); n != 1 {
		t.Fatalf("%d Domain API lookups for 32 concurrent cold requests, want 1", n)
	}

	// Fresh: no I/O.
	for range 100 {
		if dial, _ := getDial(t, d); dial != want {
			t.Fatalf("fresh: %q", dial)
		}
	}
	if n := lookups(); n != 1 {
		t.Fatalf("%d lookups after 100 fresh requests, want still 1", n)
	}

	// Stale: served at once (the Domain API is held) while one background
	// lookup renews it.
	clock.Advance(refresh)
	api.hold()
	for range 20 {
		if dial, err := getDialAtOnce(t, d); err != nil || dial != want {
			t.Fatalf("stale: %q, %v", dial, err)
		}
	}
	eventually(t, 5*time.Second, "the background renewal to arrive", func() bool { return api.arrived.Load() == 2 })
	api.release()
	renewed()
	// Every stale request returned before the release, so any renewal
	// they started has arrived by now.
	if n := api.arrived.Load(); n != 2 {
		t.Fatalf("%d lookups: 20 stale requests started more than one renewal", n)
	}

	// Outage: the last good host is still served, a warning is logged, and
	// the Domain API is asked again only after the retry delay.
	emu.FailNextDomainLookups(100, 500)
	clock.Advance(refresh)
	if dial, err := getDial(t, d); err != nil || dial != want {
		t.Fatalf("during the outage: %q, %v", dial, err)
	}
	eventually(t, 5*time.Second, "the failed renewal's warning", func() bool { return warnings() == 1 })
	for range 50 {
		if dial, err := getDial(t, d); err != nil || dial != want {
			t.Fatalf("during the outage: %q, %v", dial, err)
		}
	}
	clock.Advance(d.retryDelay - time.Millisecond)
	for range 50 {
		if dial, err := getDial(t, d); err != nil || dial != want {
			t.Fatalf("during the outage, within the retry delay: %q, %v", dial, err)
		}
	}
	if n := lookups(); n != 3 {
		t.Fatalf("%d lookups, want 3: a failed lookup was retried within the retry delay", n)
	}
	clock.Advance(time.Millisecond)
	if dial, err := getDial(t, d); err != nil || dial != want {
		t.Fatalf("during the outage, after the retry delay: %q, %v", dial, err)
	}
	eventually(t, 5*time.Second, "the retry's warning", func() bool { return warnings() == 2 })
	if n := lookups(); n != 4 {
		t.Fatalf("%d lookups, want 4: one retry after the retry delay", n)
	}
	warned := logs.FilterMessage("CC Domain API lookup failed; still using the last known host").All()
	if f := warned[0].ContextMap(); f["service"] != "msgHist" || f["host"] != want || !strings.Contains(fmt.Sprint(f["error"]), "HTTP 500") {
		t.Fatalf("warning fields %v", f)
	}

	// A service never resolved: the error goes back, and within the retry
	// delay it is answered at once (the Domain API is held) without asking
	// again.
	cold := &DomainUpstreams{Service: "leDataReporting", AccountID: ccemu.DefaultAccountID, CSDS: srv.URL, Refresh: caddy.Duration(refresh), clock: clock}
	provisionDomain(t, cold)
	before := api.arrived.Load()
	if _, err := getDial(t, cold); err == nil || !strings.Contains(err.Error(), "lpdomain: service leDataReporting of account 12345678: domain lookup: HTTP 500") {
		t.Fatalf("cold lookup during the outage: %v", err)
	}
	api.hold()
	if _, err := getDialAtOnce(t, cold); err == nil || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("repeat within the retry delay: %v, want the cached failure", err)
	}
	api.release()
	if n := api.arrived.Load() - before; n != 1 {
		t.Fatalf("%d lookups for two cold requests within the retry delay, want 1", n)
	}
	emu.FailNextDomainLookups(0, 0)
	clock.Advance(cold.retryDelay)
	if dial, err := getDial(t, cold); err != nil || dial != want {
		t.Fatalf("after the outage: %q, %v", dial, err)
	}
}

func TestUpstreamNoAccount(t *testing.T) {
	d := &DomainUpstreams{Service: "msgHist"}
	provisionDomain(t, d)
	if _, err := getDial(t, d); err != errNoAccount {
		t.Fatalf("error %v, want %v", err, errNoAccount)
	}
}

func TestUpstreamProvision(t *testing.T) {
	t.Setenv("LPAUTH_TEST_ACCOUNT", ccemu.DefaultAccountID)
	t.Setenv("LPAUTH_TEST_EMPTY", "")
	d := &DomainUpstreams{Service: "msgHist", AccountID: "{env.LPAUTH_TEST_ACCOUNT}"}
	provisionDomain(t, d)
	if d.account != ccemu.DefaultAccountID || d.refresh != cc.DefaultDomainRefresh ||
		d.lookupTimeout != cc.DefaultDomainLookupTimeout || d.client.CSDS() != cc.DefaultCSDS || d.ownCSDS {
		t.Fatalf("defaults: account %q refresh %s timeout %s csds %s own %v", d.account, d.refresh, d.lookupTimeout, d.client.CSDS(), d.ownCSDS)
	}
	for _, tc := range []struct {
		d    DomainUpstreams
		want string
	}{
		{DomainUpstreams{}, "lpdomain: service is required"},
		{DomainUpstreams{Service: "msg Hist"}, "lpdomain: service"},
		{DomainUpstreams{Service: "msgHist", CSDS: "http://api.liveperson.net"}, "plain http is allowed only for loopback"},
		{DomainUpstreams{Service: "msgHist", CSDS: "ftp://x"}, "lpdomain: csds:"},
		{DomainUpstreams{Service: "msgHist", Refresh: -1}, "lpdomain: refresh must be positive"},
		{DomainUpstreams{Service: "msgHist", LookupTimeout: -1}, "lpdomain: lookup_timeout must be positive"},
		{DomainUpstreams{Service: "msgHist", AccountID: "{env.LPAUTH_TEST_EMPTY}"}, "lpdomain: account_id:"},
	} {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := tc.d.Provision(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.d, err, tc.want)
		}
	}
}

func TestUpstreamCaddyfile(t *testing.T) {
	var d DomainUpstreams
	err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`lpdomain accountConfigReadOnly {
		account_id {env.ACCOUNT}
		csds http://127.0.0.1:9090
		refresh 30s
		lookup_timeout 2s
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := DomainUpstreams{Service: "accountConfigReadOnly", AccountID: "{env.ACCOUNT}", CSDS: "http://127.0.0.1:9090",
		Refresh: caddy.Duration(30 * time.Second), LookupTimeout: caddy.Duration(2 * time.Second)}
	if d.Service != want.Service || d.AccountID != want.AccountID || d.CSDS != want.CSDS || d.Refresh != want.Refresh || d.LookupTimeout != want.LookupTimeout {
		t.Fatalf("got %+v, want %+v", d, want)
	}
	for input, service := range map[string]string{
		"lpdomain msgHist":                        "msgHist",
		"lpdomain {\n service leDataReporting\n}": "leDataReporting",
	} {
		var d DomainUpstreams
		if err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input)); err != nil || d.Service != service {
			t.Errorf("%q: service %q, %v", input, d.Service, err)
		}
	}
	for input, want := range map[string]string{
		"lpdomain msgHist {\n bogus 1\n}":                 `lpdomain: unrecognized subdirective "bogus"`,
		"lpdomain msgHist {\n refresh soon\n}":            "lpdomain: refresh:",
		"lpdomain msgHist {\n refresh 0s\n}":              "lpdomain: refresh: must be positive",
		"lpdomain msgHist {\n lookup_timeout -1s\n}":      "lpdomain: lookup_timeout: must be positive",
		"lpdomain msgHist {\n lookup_timeout\n}":          "lpdomain: lookup_timeout needs a value",
		"lpdomain msgHist {\n csds a b\n}":                "lpdomain: csds takes one value",
		"lpdomain msgHist {\n refresh 1m\n refresh 2m\n}": "lpdomain: refresh given more than once",
		"lpdomain msgHist {\n service x\n}":               "lpdomain: service given more than once",
		"lpdomain msgHist accountConfigReadOnly":          "one service name expected",
		"lpdomain":                                        "a service name is required",
	} {
		var d DomainUpstreams
		err := d.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", input, err, want)
		}
	}
}

// domainCaddyConfig is caddyConfig's site with lpauth at site level and
// routes (handle_path blocks) instead of one reverse_proxy.
func domainCaddyConfig(srv *httptest.Server, routes, global string) string {
	return testSite(srv, "", routes+"\thandle {\n\t\trespond 404\n\t}\n", global)
}

// route proxies prefix to a service found through the Domain API; block
// goes inside `dynamic lpdomain <service> { }`.
func route(prefix, service, block string) string {
	return fmt.Sprintf(`	handle_path %s/* {
		reverse_proxy {
			dynamic lpdomain %s {
				%s
			}
			header_up Host {upstream_hostport}
		}
	}
`, prefix, service, block)
}

func TestUpstreamTwoServicesOneCaddyfile(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	other := testkit.NewCountingListener(t, emu) // a second host of the same CC
	emu.SetServiceHost("accountConfigReadOnly", hostport(other.Srv))
	loadCaddy(t, domainCaddyConfig(srv,
		route("/svc1", "msgHist", "")+route("/svc2", "accountConfigReadOnly", "refresh 10m"), ""))
	// The login at start asks the Domain API once; lpdomain shares it.
	eventually(t, 5*time.Second, "the login at start", func() bool { return emu.Counters().Logins == 1 })
	if n := emu.Counters().DomainLookups; n != 1 {
		t.Fatalf("loading the config asked the Domain API %d times, want once (the login at start)", n)
	}
	for i := 1; i <= 5; i++ {
		r := send(t, "GET", "/svc1"+dataPath("history"), nil)
		if r.status != 200 {
			t.Fatalf("/svc1: %d %s", r.status, r.body)
		}
		if e := r.echo(t); e.Path != dataPath("history") || !e.AuthorizationSent {
			t.Fatalf("/svc1 echo %+v", e)
		}
		if n := emu.Counters().DataCalls; n != int64(2*i-1) || other.Calls.Load() != int64(i-1) {
			t.Fatalf("/svc1 (msgHist, the default host) reached the other host: data calls %d, other host %d", n, other.Calls.Load())
		}
		r = send(t, "GET", "/svc2"+dataPath("config"), nil)
		if r.status != 200 {
			t.Fatalf("/svc2: %d %s", r.status, r.body)
		}
		if e := r.echo(t); e.Path != dataPath("config") || !e.AuthorizationSent {
			t.Fatalf("/svc2 echo %+v", e)
		}
		if other.Calls.Load() != int64(i) {
			t.Fatalf("/svc2 (accountConfigReadOnly) did not reach its host: %d calls there", other.Calls.Load())
		}
	}
	// One lookup each for agentVep (login), msgHist and accountConfigReadOnly.
	if n := emu.Counters(); n.DomainLookups != 3 || n.Logins != 1 {
		t.Fatalf("10 requests: %+v; want 3 Domain API lookups and 1 login", n)
	}
	if r := send(t, "GET", "/elsewhere", nil); r.status != 404 {
		t.Fatalf("unrouted path: %d", r.status)
	}
}

func TestUpstreamDomainAPIDownKeepsLastHost(t *testing.T) {
	clock := newFakeClock()
	setLpdomainClock(t, clock)
	emu, srv := emulator(t, ccemu.Config{})
	other := testkit.NewCountingListener(t, emu)
	emu.SetServiceHost("msgHist", hostport(other.Srv))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	loadCaddy(t, domainCaddyConfig(srv, route("/svc1", "msgHist", "refresh 1s"),
		fmt.Sprintf("log {\n\t\toutput file %s\n\t}", logFile)))
	if r := send(t, "GET", "/svc1"+dataPath("x"), nil); r.status != 200 || other.Calls.Load() != 1 {
		t.Fatalf("first request: %d, %d calls at the msgHist host", r.status, other.Calls.Load())
	}
	lookups := emu.Counters().DomainLookups
	const warning = "CC Domain API lookup failed; still using the last known host"
	warnings := func() int {
		logs, _ := os.ReadFile(logFile)
		return strings.Count(string(logs), warning)
	}
	// served sends n requests and checks each reached the last good host.
	served := func(n int) {
		t.Helper()
		before := other.Calls.Load()
		for i := range n {
			if r := send(t, "GET", "/svc1"+dataPath("x"), nil); r.status != 200 {
				t.Fatalf("request %d while the Domain API fails: %d %s", i, r.status, r.body)
			}
		}
		if got := other.Calls.Load() - before; got != int64(n) {
			t.Fatalf("%d of %d requests reached the last good host", got, n)
		}
	}

	emu.FailNextDomainLookups(100, 500)
	emu.SetServiceHost("msgHist", "") // were the Domain API asked and answering, msgHist would move
	clock.Advance(time.Second)        // refresh 1s: stale
	served(1)
	eventually(t, 5*time.Second, "the failed renewal's warning", func() bool { return warnings() == 1 })
	served(20)
	if failed := emu.Counters().DomainLookups - lookups; failed != 1 {
		t.Fatalf("%d Domain API lookups within the retry delay, want 1", failed)
	}
	clock.Advance(time.Second) // the retry delay: min(5s, refresh)
	served(1)
	eventually(t, 5*time.Second, "the retry's warning", func() bool { return warnings() == 2 })
	served(20)
	if failed := emu.Counters().DomainLookups - lookups; failed != 2 {
		t.Fatalf("%d Domain API lookups after one retry delay, want 2", failed)
	}

	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), warning) {
		t.Fatalf("no warning about the failed lookup in the log:\n%s", logs)
	}
	for _, s := range emu.IssuedSecrets() {
		if strings.Contains(string(logs), s) {
			t.Errorf("a secret (%d chars) appears in the log", len(s))
		}
	}
}

func TestUpstreamHostChangePickedUpAfterRefresh(t *testing.T) {
	clock := newFakeClock()
	setLpdomainClock(t, clock)
	emu, srv := emulator(t, ccemu.Config{})
	moved := testkit.NewCountingListener(t, emu)
	loadCaddy(t, domainCaddyConfig(srv, route("/svc1", "msgHist", "refresh 1s"), ""))
	if r := send(t, "GET", "/svc1"+dataPath("x"), nil); r.status != 200 || moved.Calls.Load() != 0 {
		t.Fatalf("first request: %d", r.status)
	}
	emu.SetServiceHost("msgHist", hostport(moved.Srv))
	clock.Advance(time.Second) // refresh 1s: stale, renewed in the background
	eventually(t, 5*time.Second, "requests to reach the moved host", func() bool {
		if r := send(t, "GET", "/svc1"+dataPath("x"), nil); r.status != 200 {
			t.Fatalf("status %d while the host moves", r.status)
		}
		return moved.Calls.Load() > 0
	})
	// Once moved, every request goes to the new host.
	oldHost := emu.Counters().DataCalls - moved.Calls.Load()
	for range 5 {
		if r := send(t, "GET", "/svc1"+dataPath("x"), nil); r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
	}
	if got := emu.Counters().DataCalls - moved.Calls.Load(); got != oldHost {
		t.Fatalf("%d requests still reached the old host after the move", got-oldHost)
	}
}

func TestUpstreamExplicitAccountWithoutLpauth(t *testing.T) {
	emu, srv := emulator(t, ccemu.Config{})
	other := testkit.NewCountingListener(t, emu)
	emu.SetServiceHost("msgHist", hostport(other.Srv))
	t.Setenv("LPAUTH_TEST_ACCOUNT", ccemu.DefaultAccountID)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	loadCaddy(t, fmt.Sprintf(`{
	admin %s
	%s	skip_install_trust
	auto_https off
	default_bind 127.0.0.1
	log {
		output file %s
	}
}
http://%s {
	handle_path /explicit/* {
		reverse_proxy {
			dynamic lpdomain msgHist {
				account_id {env.LPAUTH_TEST_ACCOUNT}
				csds %s
				lookup_timeout 5s
			}
		}
	}
	handle_path /noaccount/* {
		reverse_proxy {
			dynamic lpdomain msgHist
		}
	}
}
`, adminAddr, portsGlobal, logFile, proxyAddr, srv.URL))
	// The app brings its own bearer here: no lpauth runs.
	sess, err := testClient(t, srv).Login(bg(), userCreds())
	if err != nil {
		t.Fatal(err)
	}
	before := emu.Counters().DomainLookups
	r := send(t, "GET", "/explicit"+dataPath("x"), nil, "Authorization", "Bearer "+sess.Bearer)
	if r.status != 200 || other.Calls.Load() != 1 {
		t.Fatalf("explicit account_id and csds: %d %s, %d calls at the msgHist host", r.status, r.body, other.Calls.Load())
	}
	if e := r.echo(t); e.BearerFingerprint != fingerprint(sess.Bearer) {
		t.Fatalf("the client's bearer did not pass through: %+v", e)
	}
	if n := emu.Counters().DomainLookups - before; n != 1 {
		t.Fatalf("%d Domain API lookups, want 1", n)
	}

	// Neither account_id nor lpauth: reverse_proxy has no upstream.
	for range 3 {
		if r := send(t, "GET", "/noaccount"+dataPath("x"), nil); r.status != http.StatusServiceUnavailable {
			t.Fatalf("no account: %d %s, want 503", r.status, r.body)
		}
	}
	if r := send(t, "GET", "/explicit"+dataPath("x"), nil, "Authorization", "Bearer "+sess.Bearer); r.status != 200 {
		t.Fatalf("after the no-account requests: %d", r.status)
	}
	if n := emu.Counters().DomainLookups - before; n != 1 {
		t.Fatalf("%d Domain API lookups, want still 1", n)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), errNoAccount.Error()) {
		t.Fatalf("the log lacks %q:\n%s", errNoAccount, logs)
	}
}

func TestUpstreamConfigErrorsNameTheField(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	for block, want := range map[string]string{
		"bogus 1":                        `lpdomain: unrecognized subdirective \"bogus\"`,
		"refresh soon":                   "lpdomain: refresh:",
		"csds http://api.liveperson.net": "plain http is allowed only for loopback",
	} {
		assertLoadError(t, domainCaddyConfig(srv, route("/svc1", "msgHist", block), ""), "caddyfile", want)
	}
}
