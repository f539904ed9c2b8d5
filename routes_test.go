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
			kind = "lpauth:" + lp.keeper.Identity().Mode
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
		got = append(got, id.Mode+":"+id.Name)
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
