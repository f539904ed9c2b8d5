// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package sentinelstub is a stand-in for Sentinel's token endpoints that
// the tests of the AppJWT exchange (internal/cc) and of the AppJWT source
// (the root package) share: each request in the documented forms is
// checked, counted and answered as the test says.
package sentinelstub

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The application the stub knows.
const (
	Account = "le81823118"
	Client  = "test-client"
	Secret  = "s3cret-Value!/+="
)

// sentinelStub answers Sentinel's token endpoints in the documented forms:
// v2 POST /sentinel/api/v2/account/{id}/app/token, v1 the same without v2
// and with ?v=1.0&grant_type=client_credentials; a form body with
// client_id, client_secret and grant_type=client_credentials. A request in
// another form gets 400 invalid_request and is counted as bad. reply
// answers a good request; nil = a JWT valid for an hour with expires_in.
type Stub struct {
	Srv     *httptest.Server
	Tokens  atomic.Int64 // good token requests
	Bad     atomic.Int64 // requests in a form the docs do not give
	Lookups atomic.Int64 // Domain API lookups of "sentinel"

	mu      sync.Mutex
	reply   func(w http.ResponseWriter, r *http.Request)
	lastAPI string // v1 or v2, of the last good request
	lastUA  string
}

// New starts a stub on loopback, stopped when the test ends; forget, if
// set, is called with its URL then (to drop cached Domain API answers).
func New(t testing.TB, forget func(url string)) *Stub {
	t.Helper()
	s := &Stub{}
	s.Srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Srv.Close)
	if forget != nil {
		t.Cleanup(func() { forget(s.Srv.URL) })
	}
	return s
}

// Last returns the API version (v1, v2) and User-Agent of the last good
// token request.
func (s *Stub) Last() (api, userAgent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAPI, s.lastUA
}

// SetReply sets how a good request is answered (nil: the default).
func (s *Stub) SetReply(f func(w http.ResponseWriter, r *http.Request)) {
	s.mu.Lock()
	s.reply = f
	s.mu.Unlock()
}

func (s *Stub) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/api/account/"+Account+"/service/sentinel/baseURI.json" && r.URL.RawQuery == "version=1.0" {
		s.Lookups.Add(1)
		fmt.Fprintf(w, `{"service":"sentinel","account":%q,"baseURI":%q}`, Account, s.Srv.Listener.Addr().String())
		return
	}
	api := ""
	switch {
	case r.URL.Path == "/sentinel/api/v2/account/"+Account+"/app/token" && r.URL.RawQuery == "":
		api = "v2"
	case r.URL.Path == "/sentinel/api/account/"+Account+"/app/token" &&
		r.URL.Query().Get("v") == "1.0" && r.URL.Query().Get("grant_type") == "client_credentials" && len(r.URL.Query()) == 2:
		api = "v1"
	}
	ct := r.Header.Get("Content-Type")
	if r.Method != http.MethodPost || api == "" || ct != "application/x-www-form-urlencoded" || r.ParseForm() != nil ||
		r.PostForm.Get("client_id") != Client || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_secret") == "" || r.Header.Get("Authorization") != "" {
		s.Bad.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		return
	}
	if r.PostForm.Get("client_secret") != Secret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	s.Tokens.Add(1)
	s.mu.Lock()
	s.lastAPI, s.lastUA = api, r.Header.Get("User-Agent")
	reply := s.reply
	s.mu.Unlock()
	if reply == nil {
		reply = JSONReply(200, map[string]any{"access_token": JWT(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}), "token_type": "Bearer", "expires_in": 3600})
	}
	reply(w, r)
}

// JSONReply answers status and v as JSON.
func JSONReply(status int, v any) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
}

// RawReply answers status, content type and body as given.
func RawReply(status int, contentType, body string, header ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

var jwtSeq atomic.Int64

// JWT builds a JWT shaped like Sentinel's, with the claims given and a
// signature nobody checks; each is unique.
func JWT(claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]any{"kid": "appjwt-13-05-17", "typ": "JWT", "alg": "RS256"})
	full := map[string]any{"aud": Account, "azp": Client, "scope": "msg.consumer", "iss": "Sentinel", "jti": jwtSeq.Add(1)}
	for k, v := range claims {
		full[k] = v
	}
	p, _ := json.Marshal(full)
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString([]byte("signature"))
}

// NoSecret fails the test if err, in any of its printed forms, shows the
// stub's client secret or any of tokens.
func NoSecret(t testing.TB, err error, tokens ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error() + fmt.Sprintf(" %v %+v %#v", err, err, err)
	for _, s := range append([]string{Secret, "s3cret"}, tokens...) {
		if s != "" && strings.Contains(msg, s) {
			t.Errorf("error shows a secret %q: %s", s, msg)
		}
	}
}
