// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The per-request hot path — fetch the current token, set the header — and
// the floor a slice shared by all requests would reach:
//
//	go test -run '^$' -bench HotPath -benchmem -count 6 .
//
// (The README's comparison with golang.org/x/oauth2's ReuseTokenSource is
// a figure measured once: a benchmark of another library has no place in
// this suite.)

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

func hotPathKeeper(b testing.TB) *keeper {
	_, srv := emulator(b, ccemu.Config{})
	k := testKeeper(b, srv, userCreds(), nil, nil)
	if _, err := k.Get(bg()); err != nil {
		b.Fatal(err)
	}
	return k
}

func BenchmarkHotPathLpauth(b *testing.B) {
	k := hotPathKeeper(b)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	h := &Handler{authPrefix: "Bearer "}
	b.ReportAllocs()
	for b.Loop() {
		// As ServeHTTP does: one atomic load, then the header.
		s := k.Current()
		if s == nil {
			b.Fatal("no session")
		}
		h.setAuthorization(req, s)
	}
}

func BenchmarkHotPathLpauthParallel(b *testing.B) {
	k := hotPathKeeper(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		h := &Handler{authPrefix: "Bearer "}
		for pb.Next() {
			s := k.Current()
			if s == nil {
				b.Error("no session")
				return
			}
			h.setAuthorization(req, s)
		}
	})
}

// The floor a slice shared by every request would reach. The handler does
// not do this: request_header edits values in place, so a shared slice
// races (TestProxyRequestHeaderEditAfterLpauthIsPerRequest).
func BenchmarkHotPathFloorSharedSlice(b *testing.B) {
	k := hotPathKeeper(b)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	shared := []string{k.Current().authValue}
	b.ReportAllocs()
	for b.Loop() {
		if k.Current() == nil {
			b.Fatal("no session")
		}
		req.Header["Authorization"] = shared
	}
}

// The whole handler as a server runs it: a fresh request per iteration (a
// clone through caddyhttp.PrepareRequest, as Caddy's server prepares each
// one), through a route list compiled per request, with a next handler that
// does to the request what reverse_proxy does before sending it. lpauth
// beside Caddy's stock headers handler setting the same Authorization, in
// one run:
//
//	go test -run '^$' -bench 'Handler$' -benchmem -count 20 . | tee new.txt
//	benchstat -col /variant new.txt
//
// h3 and h20 are a flat route (the handler, then the proxy) with 3 and 20
// request headers; grouped is example.Caddyfile's layout (the handler
// inside the second of two handle blocks, so a route group is taken before
// it runs); edit has a request_header edit between the handler and the
// proxy, where a retry needs the request as it came.
func BenchmarkHandler(b *testing.B) {
	hb := newHandlerBench(b)
	for _, layout := range []string{"h3", "h20", "grouped", "edit"} {
		for _, variant := range []string{"lpauth", "headers"} {
			b.Run(layout+"/variant="+variant, func(b *testing.B) { hb.run(b, layout, variant) })
		}
	}
}

// handlerBench holds what every sub-benchmark of BenchmarkHandler shares.
type handlerBench struct {
	k      *keeper
	lp     *Handler
	static *headers.Handler
	edit   *headers.Handler
	want   string // the Authorization the proxy must see
}

func newHandlerBench(b testing.TB) *handlerBench {
	k := hotPathKeeper(b)
	hb := &handlerBench{
		k:    k,
		lp:   &Handler{keeper: k, identity: &RequestIdentity{AccountID: ccemu.DefaultAccountID, keeper: k}, RetryBodyLimit: defaultRetryBodyLimit, after: new(perServer[*afterHandler]), placeholders: new(atomic.Pointer[requestPlaceholders])},
		want: k.Current().AuthorizationValue(),
	}
	hb.static = &headers.Handler{Request: &headers.HeaderOps{Set: http.Header{"Authorization": {hb.want}}}}
	hb.edit = &headers.Handler{Request: &headers.HeaderOps{Set: http.Header{"X-Edited": {"yes"}}}}
	for _, h := range []*headers.Handler{hb.static, hb.edit} {
		if err := h.Provision(caddy.Context{}); err != nil {
			b.Fatal(err)
		}
	}
	return hb
}

// proxyStandIn does to the request what reverse_proxy does before it sends
// it (sets its placeholders, reads the header) and answers 200.
type proxyStandIn struct {
	want  string
	calls *atomic.Int64 // so a layout that never reaches it fails
}

// It stands in for reverse_proxy in the route walk too: it leaves the
// request as it came and answers, so lpauth right before it takes no
// snapshot, as before reverse_proxy.
func init() { requestEffects[proxyStandInID] = requestAnswered }

const proxyStandInID = "http.handlers.lpauth_bench_proxy"

func (proxyStandIn) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: proxyStandInID, New: func() caddy.Module { return proxyStandIn{} }}
}

func (p proxyStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	repl.Set("http.reverse_proxy.upstream.address", "127.0.0.1:8080")
	repl.Set("http.reverse_proxy.upstream.host", "127.0.0.1")
	repl.Set("http.reverse_proxy.upstream.port", 8080)
	repl.Set("http.reverse_proxy.upstream.requests", 0)
	if r.Header.Get("Authorization") != p.want {
		return errors.New("no bearer reached the proxy")
	}
	p.calls.Add(1)
	w.WriteHeader(http.StatusOK)
	return nil
}

// server builds the routes of one layout around the handler under test.
func (hb *handlerBench) server(layout string, h caddyhttp.MiddlewareHandler, calls *atomic.Int64) *caddyhttp.Server {
	proxy := proxyStandIn{want: hb.want, calls: calls}
	switch layout {
	case "grouped":
		// example.Caddyfile: handle_path /proactive/* { ... } then handle { ... }
		other := &caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{proxy}}}}
		mine := &caddyhttp.Subroute{Routes: caddyhttp.RouteList{{Handlers: []caddyhttp.MiddlewareHandler{h}}, {Handlers: []caddyhttp.MiddlewareHandler{proxy}}}}
		return &caddyhttp.Server{Routes: caddyhttp.RouteList{
			{Group: "group0", MatcherSets: caddyhttp.MatcherSets{{caddyhttp.MatchPath{"/proactive/*"}}}, Handlers: []caddyhttp.MiddlewareHandler{other}},
			{Group: "group0", Handlers: []caddyhttp.MiddlewareHandler{mine}},
		}}
	case "edit":
		return &caddyhttp.Server{Routes: caddyhttp.RouteList{
			{Handlers: []caddyhttp.MiddlewareHandler{h}},
			{Handlers: []caddyhttp.MiddlewareHandler{hb.edit}},
			{Handlers: []caddyhttp.MiddlewareHandler{proxy}},
		}}
	}
	return &caddyhttp.Server{Routes: caddyhttp.RouteList{
		{Handlers: []caddyhttp.MiddlewareHandler{h}},
		{Handlers: []caddyhttp.MiddlewareHandler{proxy}},
	}}
}

// provisionRoutes builds the middleware of routes made in Go, as Caddy's
// provisioning does for routes loaded from JSON: without it a route runs
// none of its handlers.
func provisionRoutes(t testing.TB, routes caddyhttp.RouteList) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	for i := range routes {
		if err := routes[i].ProvisionHandlers(ctx, nil); err != nil {
			t.Fatal(err)
		}
		for _, h := range routes[i].Handlers {
			if sr, ok := h.(*caddyhttp.Subroute); ok {
				provisionRoutes(t, sr.Routes)
			}
		}
	}
}

// benchRequest is what a legacy client sends: 3 headers, or 20.
func benchRequest(n int) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "/api/account/12345678/campaigns?v=3.4", nil)
	req.Header.Set("User-Agent", "legacy-app/1.0")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Basic bm90OnVzZWQ=")
	for i := 3; i < n; i++ {
		req.Header.Set(fmt.Sprintf("X-Legacy-Header-%02d", i), "some value of a usual length")
	}
	return req
}

func (hb *handlerBench) run(b *testing.B, layout, variant string) {
	var h caddyhttp.MiddlewareHandler = hb.lp
	if variant == "headers" {
		h = hb.static
	}
	var calls atomic.Int64
	srv := hb.server(layout, h, &calls)
	provisionRoutes(b, srv.Routes)
	nHeaders := 3
	if layout == "h20" {
		nHeaders = 20
	}
	base := benchRequest(nHeaders)
	w := &discardWriter{header: http.Header{"Server": {"Caddy"}}}
	// Compiled once, as the server does at provision (a subroute compiles
	// its own routes per request).
	chain := srv.Routes.Compile(caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
	b.ReportAllocs()
	for b.Loop() {
		r := base.Clone(context.Background())
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, srv)
		if err := chain.ServeHTTP(w, r); err != nil {
			b.Fatal(err)
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing but its header map.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// The allocation gate: the whole handler allocates no more per request than
// the stock headers handler setting the same Authorization, with 3 and 20
// request headers and in example.Caddyfile's grouped layout. Allocations
// do not vary from run to run, so one run of each decides.
func TestHandlerAllocatesNoMoreThanHeaders(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation gate: the race detector drops pooled objects on purpose; run without -race")
	}
	hb := newHandlerBench(t)
	for _, layout := range []string{"h3", "h20", "grouped"} {
		lp := testing.Benchmark(func(b *testing.B) { hb.run(b, layout, "lpauth") })
		st := testing.Benchmark(func(b *testing.B) { hb.run(b, layout, "headers") })
		if lp.N == 0 || st.N == 0 {
			t.Fatalf("%s: a benchmark failed (lpauth %d runs, headers %d)", layout, lp.N, st.N)
		}
		t.Logf("%s: lpauth %d allocs/op %d B/op, headers %d allocs/op %d B/op", layout, lp.AllocsPerOp(), lp.AllocedBytesPerOp(), st.AllocsPerOp(), st.AllocedBytesPerOp())
		if lp.AllocsPerOp() > st.AllocsPerOp() {
			t.Errorf("%s: lpauth makes %d allocations per request, the headers handler %d", layout, lp.AllocsPerOp(), st.AllocsPerOp())
		}
	}
}
