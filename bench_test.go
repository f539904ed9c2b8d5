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
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

func hotPathKeeper(b *testing.B) *keeper {
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

// staticSource hands out one long-lived token, as a login would.
// The whole handler on the fast path, beside Caddy's stock headers handler
// setting the same Authorization value, on the same request and writer, in
// one run: what lpauth costs per request over a static header.
//
//	go test -run '^$' -bench Handler -benchmem -count 6 .
func BenchmarkHandler(b *testing.B) {
	k := hotPathKeeper(b)
	lp := &Handler{keeper: k, identity: &RequestIdentity{AccountID: ccemu.DefaultAccountID, keeper: k}, RetryBodyLimit: defaultRetryBodyLimit}
	static := &headers.Handler{Request: &headers.HeaderOps{Set: http.Header{"Authorization": {k.Current().AuthorizationValue()}}}}
	if err := static.Provision(caddy.Context{}); err != nil {
		b.Fatal(err)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("Authorization") != k.Current().AuthorizationValue() {
			return errors.New("no bearer reached the next handler")
		}
		w.WriteHeader(http.StatusOK)
		return nil
	})
	for _, tc := range []struct {
		name string
		h    caddyhttp.MiddlewareHandler
	}{{"lpauth", lp}, {"headers", static}} {
		b.Run(tc.name, func(b *testing.B) {
			w := &discardWriter{header: http.Header{"Server": {"Caddy"}}}
			req := httptest.NewRequest(http.MethodGet, "/api/account/1/x", nil)
			req.Header.Set("User-Agent", "legacy-app/1.0")
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Authorization", "Basic bm90OnVzZWQ=")
			req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), w, nil)
			b.ReportAllocs()
			for b.Loop() {
				if err := tc.h.ServeHTTP(w, req, next); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discardWriter is a ResponseWriter that keeps nothing but its header map.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
