// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The per-request hot path — fetch the current token, set the header — next
// to golang.org/x/oauth2's ReuseTokenSource doing the same job:
//
//	go test -run '^$' -bench HotPath -benchmem -count 6 .

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"golang.org/x/oauth2"
)

func hotPathKeeper(b *testing.B) *Keeper {
	_, srv := emulator(b, ccemu.Config{})
	k := testKeeper(b, srv, userCreds(), nil, nil)
	if _, err := k.Session(bg()); err != nil {
		b.Fatal(err)
	}
	return k
}

func BenchmarkHotPathLpauth(b *testing.B) {
	k := hotPathKeeper(b)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		// As ServeHTTP does: one atomic load, then the header.
		s := k.Current()
		if s == nil {
			b.Fatal("no session")
		}
		setAuthorization(req, s)
	}
}

func BenchmarkHotPathLpauthParallel(b *testing.B) {
	k := hotPathKeeper(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for pb.Next() {
			s := k.Current()
			if s == nil {
				b.Error("no session")
				return
			}
			setAuthorization(req, s)
		}
	})
}

// staticSource hands out one long-lived token, as a login would.
type staticSource struct{ tok *oauth2.Token }

func (s staticSource) Token() (*oauth2.Token, error) { return s.tok, nil }

func reuseSource() oauth2.TokenSource {
	tok := &oauth2.Token{AccessToken: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", TokenType: "Bearer", Expiry: time.Now().Add(8 * time.Hour)}
	return oauth2.ReuseTokenSource(tok, staticSource{tok})
}

func BenchmarkHotPathOAuth2Reuse(b *testing.B) {
	ts := reuseSource()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		tok, err := ts.Token()
		if err != nil {
			b.Fatal(err)
		}
		tok.SetAuthHeader(req)
	}
}

func BenchmarkHotPathOAuth2ReuseParallel(b *testing.B) {
	ts := reuseSource()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		for pb.Next() {
			tok, err := ts.Token()
			if err != nil {
				b.Error(err)
				return
			}
			tok.SetAuthHeader(req)
		}
	})
}
