// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package testkit holds the small helpers the tests of every package
// share (the root package, internal/cc, ccemu, e2e), so each is written
// once.
package testkit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Eventually polls cond until it holds, or fails the test when within has
// passed. A test waits on a counter or a state this way, never on a sleep.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // the poll's interval: real time passes between looks
	}
}

// CountingListener serves a handler (an emulator) on another loopback
// address and counts the calls that carry a bearer (data API calls), so a
// test can tell which host a request reached. A second listener of the same
// emulator accepts the first one's bearer.
type CountingListener struct {
	Srv   *httptest.Server
	Calls atomic.Int64
}

// NewCountingListener starts a CountingListener for h, closed at the end
// of the test.
func NewCountingListener(t testing.TB, h http.Handler) *CountingListener {
	t.Helper()
	l := &CountingListener{}
	l.Srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			l.Calls.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(l.Srv.Close)
	return l
}

// Hostport is srv's host:port, for a Caddyfile.
func Hostport(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// RandomBody is n random bytes and their SHA-256 in hex.
func RandomBody(t testing.TB, n int) ([]byte, string) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}
