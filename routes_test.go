// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The route walker on route trees a real Caddy adapted from a Caddyfile and
// provisioned; the server is taken from a request's context, where handlers
// find it.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

func init() {
	caddy.RegisterModule(serverGrab{})
	httpcaddyfile.RegisterHandlerDirective("lpauth_test_grab", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return serverGrab{}, nil
	})
	httpcaddyfile.RegisterDirectiveOrder("lpauth_test_grab", httpcaddyfile.Before, "basic_auth")

	caddy.RegisterModule(new(reachProbe))
	httpcaddyfile.RegisterHandlerDirective("lpauth_test_probe", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		h.Next()
		return new(reachProbe), nil
	})
	// Where lpauth goes (its own order is registered after forward_auth
	// too, so this one comes before it and before lpauth_ready).
	httpcaddyfile.RegisterDirectiveOrder("lpauth_test_probe", httpcaddyfile.After, "forward_auth")
}

// grabbedServer is the server of the last request serverGrab answered.
var grabbedServer atomic.Pointer[caddyhttp.Server]

// serverGrab is a test handler that keeps its request's server and answers
// 204.
type serverGrab struct{}

func (serverGrab) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.lpauth_test_grab", New: func() caddy.Module { return serverGrab{} }}
}

func (serverGrab) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	grabbedServer.Store(srv)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// proactiveBlock is a handle block whose own lpauth holds the emulator's
// AppJWT, in front of reverse_proxy to srv.
func proactiveBlock(srv *httptest.Server, path string) string {
	lpauth := caddyproc.Proxy{CSDS: srv.URL, ClientSecret: testClientSecret()}.LpauthBlock("\t\t")
	return "\thandle " + path + " {\n" + lpauth + "\t\treverse_proxy " + hostport(srv) + "\n\t}\n"
}

// loadedServer loads handlers after a site-level lpauth and returns the
// server that serves them.
func loadedServer(t *testing.T, srv *httptest.Server, handlers string) *caddyhttp.Server {
	t.Helper()
	loadCaddy(t, testSite(srv, "", "\tlpauth_test_grab /grab\n"+handlers, ""))
	grabbedServer.Store(nil)
	if r := send(t, "GET", "/grab", nil); r.status != http.StatusNoContent {
		t.Fatalf("GET /grab: %d %s", r.status, r.body)
	}
	s := grabbedServer.Load()
	if s == nil {
		t.Fatal("no server in the request context")
	}
	return s
}

// chainMatches tells whether a request to path passes every level of chain.
func chainMatches(t *testing.T, chain []caddyhttp.MatcherSets, path string) bool {
	t.Helper()
	req := httptest.NewRequest("GET", proxyURL+path, nil)
	req = req.WithContext(context.WithValue(req.Context(), caddy.ReplacerCtxKey, caddy.NewReplacer()))
	for _, sets := range chain {
		ok, err := sets.AnyMatchWithError(req)
		if err != nil {
			t.Fatalf("matching %s: %v", path, err)
		}
		if !ok {
			return false
		}
	}
	return true
}

func TestWalkRoutesNestedLpauth(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	s := loadedServer(t, srv, proactiveBlock(srv, "/proactive/*")+
		"\thandle {\n\t\treverse_proxy "+hostport(srv)+"\n\t}\n")

	type seen struct {
		kind  string
		chain []caddyhttp.MatcherSets
	}
	var visits []seen
	walkRoutes(s.Routes, func(chain []caddyhttp.MatcherSets, h caddyhttp.MiddlewareHandler) bool {
		kind := fmt.Sprintf("%T", h)
		if lp, ok := h.(*Handler); ok {
			kind = "lpauth:" + lp.keeper.Identity().Kind
		}
		visits = append(visits, seen{kind, chain})
		return true
	})
	var kinds []string
	for _, v := range visits {
		kinds = append(kinds, v.kind)
	}
	t.Logf("visited %v", kinds)

	// In request order: the site-level lpauth before the handle blocks,
	// the AppJWT lpauth inside the /proactive/* one, both proxies.
	var user, app *seen
	proxies := 0
	for i := range visits {
		switch v := &visits[i]; v.kind {
		case "lpauth:user":
			if app != nil {
				t.Error("the nested AppJWT lpauth was visited before the site-level one")
			}
			user = v
		case "lpauth:app_jwt":
			app = v
		case "*reverseproxy.Handler":
			proxies++
		}
	}
	if user == nil || app == nil || proxies != 2 {
		t.Fatalf("visited %v: want both lpauth handlers and both reverse_proxy handlers", kinds)
	}
	if len(app.chain) <= len(user.chain) {
		t.Errorf("the nested lpauth's chain (%d levels) is not deeper than the site-level one's (%d)", len(app.chain), len(user.chain))
	}
	for _, c := range []struct {
		who   string
		chain []caddyhttp.MatcherSets
		path  string
		want  bool
	}{
		{"site-level lpauth", user.chain, "/proactive/x", true},
		{"site-level lpauth", user.chain, "/other", true},
		{"nested lpauth", app.chain, "/proactive/x", true},
		{"nested lpauth", app.chain, "/other", false},
	} {
		if got := chainMatches(t, c.chain, c.path); got != c.want {
			t.Errorf("%s: chain matches %s = %v, want %v", c.who, c.path, got, c.want)
		}
	}

	// Stopping: the walk ends at the first lpauth.
	n := 0
	walkRoutes(s.Routes, func(_ []caddyhttp.MatcherSets, h caddyhttp.MiddlewareHandler) bool {
		n++
		_, isLpauth := h.(*Handler)
		return !isLpauth
	})
	if want := indexOf(kinds, "lpauth:user") + 1; n != want {
		t.Errorf("a walk stopped at the first lpauth made %d visits, want %d", n, want)
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// lpauthHandlersOf finds the handlers of the routes, of handle_errors and
// of named routes (invoke), each once, in that order.
func TestLpauthHandlersOf(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	s := loadedServer(t, srv, proactiveBlock(srv, "/proactive/*")+proactiveBlock(srv, "/connector/*")+fmt.Sprintf(`	handle /named/* {
		invoke bot
	}
	reverse_proxy %[1]s
	handle_errors {
		lpauth {
			account_id %[2]s
			username %[3]s
			app_key %[4]s
			secret %[5]s
			csds %[6]s
		}
		respond "failed" 502
	}
}
&(bot) {
	lpauth {
		account_id %[2]s
		username other-bot
		app_key %[4]s
		secret %[5]s
		csds %[6]s
	}
	reverse_proxy %[1]s
`, hostport(srv), ccemu.DefaultAccountID, ccemu.DefaultAppUser, ccemu.DefaultAppKey, ccemu.DefaultAppSecret, srv.URL))

	var got []string
	for _, h := range lpauthHandlersOf(s) {
		id := h.keeper.Identity()
		got = append(got, id.Kind+":"+id.Name)
	}
	want := []string{
		"user:" + ccemu.DefaultUsername,
		"app_jwt:" + ccemu.DefaultClientID, // /proactive/*
		"app_jwt:" + ccemu.DefaultClientID, // /connector/*: another handler, the same identity
		"application:" + ccemu.DefaultAppUser,
		"application:other-bot",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lpauth handlers %v, want %v", got, want)
	}
	if lpauthHandlersOf(nil) != nil {
		t.Error("a nil server has lpauth handlers")
	}
}

// reachProbe is a test handler that stands where an lpauth handler would
// and answers 204, saying in headers whether, for this very request (as
// Caddy dispatched it, route groups included), the walk from it certainly
// reaches another lpauth or lpauth_ready; and what it says when the request
// does not tell which route groups are taken.
type reachProbe struct {
	_ byte // not zero-sized: each instance has an address of its own
}

func (*reachProbe) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.lpauth_test_probe", New: func() caddy.Module { return new(reachProbe) }}
}

func (p *reachProbe) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	place := placeOf(srv, p)
	if place == nil {
		return fmt.Errorf("the probe is not in its server's routes")
	}
	blind := r.WithContext(context.WithValue(r.Context(), routeGroupsKey, nil))
	w.Header().Set("Lpauth-Test-Reaches", strconv.FormatBool(place.reaches(r, bringsOwnCredential)))
	w.Header().Set("Lpauth-Test-Reaches-Blind", strconv.FormatBool(place.reaches(blind, bringsOwnCredential)))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// What certainly runs after a handler, asked by a probe in its place in
// configs a real Caddy adapted from Caddyfiles: "yes" means another lpauth
// (or lpauth_ready) runs for that request whatever happens, with nothing
// before it that might answer or forward the request.
func TestReachesAfterHandler(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	user := caddyproc.Proxy{CSDS: srv.URL, Password: "{env." + testPasswordEnv + "}"}.LpauthBlock
	app := caddyproc.Proxy{CSDS: srv.URL, ClientSecret: testClientSecret()}.LpauthBlock
	proxy := "reverse_proxy " + hostport(srv) + "\n"
	// block is a Caddyfile block: head, then lines one level deeper.
	block := func(indent, head string, lines ...string) string {
		var b strings.Builder
		b.WriteString(indent + head + " {\n")
		for _, l := range lines {
			if !strings.HasPrefix(l, indent+"\t") {
				l = indent + "\t" + l
			}
			b.WriteString(l)
		}
		b.WriteString(indent + "}\n")
		return b.String()
	}
	type probe struct {
		path        string
		want, blind bool // blind: without the request's route groups
	}
	same := func(path string, want bool) probe { return probe{path, want, want} }
	for _, c := range []struct {
		name   string
		body   string // the site's directives
		more   string // other sites on the same server
		probes []probe
	}{{
		name: "README layout: a proxy after it in its handle_path block",
		body: block("\t", "handle_path /proactive/*", "lpauth_test_probe\n", proxy) +
			block("\t", "handle", user("\t\t"), proxy),
		probes: []probe{same("/proactive/x", false)},
	}, {
		name: "sibling handle blocks, this one first: the catch-all is of its group",
		body: block("\t", "handle /proactive/*", "lpauth_test_probe\n") +
			block("\t", "handle", user("\t\t"), proxy),
		probes: []probe{same("/proactive/x", false)},
	}, {
		name: "sibling handle blocks, the catch-all written first",
		body: block("\t", "handle", user("\t\t"), proxy) +
			block("\t", "handle /proactive/*", "lpauth_test_probe\n"),
		probes: []probe{same("/proactive/x", false)},
	}, {
		name: "route blocks have no group",
		body: block("\t", "route /proactive/*", "lpauth_test_probe\n") +
			block("\t", "route", user("\t\t"), proxy),
		probes: []probe{same("/proactive/x", true)},
	}, {
		name: "a later route whose matcher does not match",
		body: block("\t", "route /p/*", "lpauth_test_probe\n") +
			block("\t", "route /q/*", user("\t\t"), proxy) +
			block("\t", "route", proxy),
		probes: []probe{same("/p/x", false)},
	}, {
		name: "site level, handle blocks with an lpauth or lpauth_ready of their own",
		body: "\tlpauth_test_probe\n" +
			block("\t", "handle /proactive/*", app("\t\t"), proxy) +
			block("\t", "handle /healthz", "lpauth_ready\n") +
			block("\t", "handle", proxy),
		probes: []probe{same("/proactive/x", true), same("/healthz", true), same("/other", false)},
	}, {
		name: "site level, nested handle blocks",
		body: "\tlpauth_test_probe\n" +
			block("\t", "handle /a/*",
				block("\t\t", "handle /a/b/*", app("\t\t\t"), "\t\t\t"+proxy),
				block("\t\t", "handle", "\t\t\trespond 404\n")) +
			block("\t", "handle", proxy),
		probes: []probe{same("/a/b/x", true), same("/a/c", false), same("/z", false)},
	}, {
		name: "site level, handle_path: a matcher after its rewrite is unsure",
		body: "\tlpauth_test_probe\n" +
			block("\t", "handle_path /p/*", app("\t\t"), proxy) +
			block("\t", "handle_path /q/*",
				block("\t\t", "handle /r/*", app("\t\t\t"), "\t\t\t"+proxy),
				block("\t\t", "handle", "\t\t\t"+proxy)) +
			block("\t", "handle_path /s/*",
				block("\t\t", "handle /r/*", app("\t\t\t"), "\t\t\t"+proxy),
				block("\t\t", "handle", app("\t\t\t"), "\t\t\t"+proxy)) +
			block("\t", "handle_path /t/*",
				block("\t\t", "handle /t/*", app("\t\t\t"), "\t\t\t"+proxy),
				block("\t\t", "handle", "\t\t\t"+proxy)) +
			block("\t", "handle_path /v/*",
				block("\t\t", "handle /w/*", "\t\t\t"+proxy),
				block("\t\t", "handle", app("\t\t\t"), "\t\t\t"+proxy)),
		probes: []probe{
			same("/p/x", true),    // no matcher after the rewrite
			same("/q/r/x", false), // the proxy if /r/* does not match
			same("/s/r/x", true),  // an lpauth either way
			same("/t/x", false),   // /t/* matched the URI before the rewrite, not after
			same("/v/w/x", false), // /w/* matches after the rewrite: the proxy
		},
	}, {
		name: "a respond in between",
		body: "\tlpauth_test_probe\n" +
			block("\t", "route", "respond /stop 403\n", app("\t\t"), proxy),
		probes: []probe{same("/stop", false), same("/go", true)},
	}, {
		name: "encode and request_header pass the request on",
		body: "\tlpauth_test_probe\n\tencode gzip\n\trequest_header X-Test yes\n" +
			block("\t", "handle /p/*", app("\t\t"), proxy),
		probes: []probe{same("/p/x", true), same("/q", false)},
	}, {
		name: "uri and method change the request: matchers after them are unsure",
		body: block("\t", "route /u/*", "lpauth_test_probe\n", "uri strip_prefix /u\n",
			block("\t\t", "handle /x/*", app("\t\t\t"))) +
			block("\t", "route /m/*", "lpauth_test_probe\n", "method POST\n", app("\t\t")),
		probes: []probe{same("/u/x/y", false), same("/m/x", true)},
	}, {
		name:   "nothing after a terminal route: the next site",
		body:   "\tlpauth_test_probe\n",
		more:   block("", fmt.Sprintf("http://:%d", httpPort), user("\t"), proxy),
		probes: []probe{same("/x", false)},
	}, {
		name:   "handle_errors never counts",
		body:   "\tlpauth_test_probe\n" + block("\t", "handle_errors", app("\t\t"), "respond 502\n"),
		probes: []probe{same("/x", false)},
	}, {
		name: "a group an earlier route did not take",
		body: block("\t", "route",
			block("\t\t", "handle /x/*", "\t\t\trespond 403\n"),
			"lpauth_test_probe\n",
			block("\t\t", "handle", app("\t\t\t"), "\t\t\t"+proxy)),
		// Without the request's groups, the earlier handle block's group
		// counts as taken.
		probes: []probe{{"/y", true, false}},
	}} {
		t.Run(c.name, func(t *testing.T) {
			loadCaddy(t, bareSite(c.body)+c.more)
			for _, p := range c.probes {
				r := send(t, "GET", p.path, nil)
				got := r.header.Get("Lpauth-Test-Reaches")
				if r.status != http.StatusNoContent || got == "" {
					t.Fatalf("GET %s did not reach the probe: %d %s", p.path, r.status, r.body)
				}
				if got != strconv.FormatBool(p.want) {
					t.Errorf("GET %s: reaches %s, want %v", p.path, got, p.want)
				}
				if blind := r.header.Get("Lpauth-Test-Reaches-Blind"); blind != strconv.FormatBool(p.blind) {
					t.Errorf("GET %s, the route groups unknown: reaches %s, want %v", p.path, blind, p.blind)
				}
			}
		})
	}
}

// What each lpauth handler's retry must restore: a copy of the request
// only where a handler that can run between it and the handler that
// answers may change the request; the route groups only where a route
// after it is in one. The site-level handler comes first; an inner one,
// when the layout has it, second.
func TestRetryNeedsAfterHandler(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	up := hostport(srv)
	copyReq, groups := retryNeeds{request: true}, retryNeeds{groups: true}
	both, none := retryNeeds{request: true, groups: true}, retryNeeds{}
	for _, tc := range []struct {
		name     string
		handlers string
		want     []retryNeeds
	}{
		{"proxy right after", "\treverse_proxy " + up + "\n", []retryNeeds{none}},
		{"request_header between", "\trequest_header X-Tag b\n\treverse_proxy " + up + "\n", []retryNeeds{copyReq}},
		{"uri before lpauth in directive order", "\turi strip_prefix /cc\n\treverse_proxy " + up + "\n", []retryNeeds{none}},
		// A lone handle block is in no group: Caddy's adapter drops it.
		{"uri in a handle block", "\thandle {\n\t\turi strip_prefix /cc\n\t\treverse_proxy " + up + "\n\t}\n", []retryNeeds{copyReq}},
		{"rewrite in a handle block", "\thandle /x/* {\n\t\trewrite * /y{uri}\n\t\treverse_proxy " + up + "\n\t}\n\thandle {\n\t\treverse_proxy " + up + "\n\t}\n", []retryNeeds{both}},
		{"encode edits If-None-Match", "\tencode gzip\n\treverse_proxy " + up + "\n", []retryNeeds{copyReq}},
		{"handle blocks of proxies and respond", "\thandle /a/* {\n\t\treverse_proxy " + up + "\n\t}\n\thandle {\n\t\trespond 404\n\t}\n", []retryNeeds{groups}},
		{"response header only", "\thandle {\n\t\theader X-Served lpauth\n\t\treverse_proxy " + up + "\n\t}\n", []retryNeeds{none}},
		{"header_up edits the proxy's copy", "\treverse_proxy " + up + " {\n\t\theader_up X-Tag b\n\t}\n", []retryNeeds{none}},
		{"handle_response runs on the request", "\treverse_proxy " + up + " {\n\t\t@bad status 500\n\t\thandle_response @bad {\n\t\t\trespond 502\n\t\t}\n\t}\n", []retryNeeds{copyReq}},
		// The inner handler's sibling handle block is in its group: skipped.
		{"an inner lpauth sets the header", proactiveBlock(srv, "/proactive/*") + "\thandle {\n\t\treverse_proxy " + up + "\n\t}\n", []retryNeeds{both, none}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := loadedServer(t, srv, tc.handlers)
			var got []retryNeeds
			for _, h := range lpauthHandlersOf(s) {
				p := placeOf(s, h)
				got = append(got, retryNeeds{request: !p.requestUntouched(), groups: p.groupsAfter()})
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("retry needs %+v, want %+v for\n%s", got, tc.want, tc.handlers)
			}
		})
	}
}

// Which lpauth handlers have a URI rewrite after them, which the messaging
// WebSocket's bearer in the path would not survive (lpauth warns).
func TestRewritesAfterHandler(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	up := hostport(srv)
	for _, tc := range []struct {
		name, handlers string
		want           []bool
	}{
		{"proxy right after", "\treverse_proxy " + up + "\n", []bool{false}},
		{"uri before lpauth in directive order", "\turi strip_prefix /cc\n\treverse_proxy " + up + "\n", []bool{false}},
		{"uri in a handle block", "\thandle {\n\t\turi strip_prefix /cc\n\t\treverse_proxy " + up + "\n\t}\n", []bool{true}},
		{"handle_path strips after a site-level lpauth", "\thandle_path /ums/* {\n\t\treverse_proxy " + up + "\n\t}\n", []bool{true}},
		{"reverse_proxy's own rewrite", "\treverse_proxy " + up + " {\n\t\trewrite /other{uri}\n\t}\n", []bool{true}},
		{"request_header only", "\trequest_header X-Tag b\n\treverse_proxy " + up + "\n", []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := loadedServer(t, srv, tc.handlers)
			var got []bool
			for _, h := range lpauthHandlersOf(s) {
				got = append(got, placeOf(s, h).rewritesAfter())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("rewrites after %v, want %v for\n%s", got, tc.want, tc.handlers)
			}
		})
	}
}
