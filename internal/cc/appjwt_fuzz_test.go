// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// roundTripFunc answers requests in memory.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// replyToken is the access_token a reply body carries, if any, as JSON or
// as a form.
func replyToken(body []byte) string {
	var reply struct {
		AccessToken string `json:"access_token"`
	}
	if json.Unmarshal(body, &reply) == nil && reply.AccessToken != "" {
		return reply.AccessToken
	}
	if v, err := url.ParseQuery(string(body)); err == nil {
		return v.Get("access_token")
	}
	return ""
}

// FuzzParseTokenReply feeds Sentinel replies (status, content type, body)
// through the whole exchange, x/oauth2 included: it never panics, never
// accepts a token that is not a header-safe JWT or a lifetime out of
// bounds, and its errors never show the client secret or the token.
func FuzzParseTokenReply(f *testing.F) {
	jwt := testJWT(map[string]any{"exp": 1767229200, "iat": 1767225600})
	f.Add(200, "application/json", []byte(`{"access_token":"`+jwt+`","token_type":"Bearer","expires_in":3600}`))
	f.Add(200, "application/json", []byte(`{"access_token":"`+jwt+`","token_type":"Bearer"}`))
	f.Add(200, "application/json", []byte(`{"access_token":"`+jwt+`\r\nX: 1"}`))
	f.Add(200, "application/json", []byte(`{"access_token":"`+jwt+`","expires_in":3600.5}`))
	f.Add(200, "application/json; charset=utf-8", []byte(`{"expires_in":"-1e400","access_token":"`+jwt+`"}`))
	f.Add(200, "text/plain", []byte("access_token="+jwt+"&expires_in=NaN"))
	f.Add(401, "application/json", []byte(`{"error":"invalid_client","error_description":"`+testAppSecret+`"}`))
	f.Add(429, "application/json", []byte(`{"error":"slow_down","access_token":"`+jwt+`"}`))
	f.Add(500, "text/html", []byte(`<html>down</html>`))
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		status = 200 + (status%400+400)%400
		rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			h := http.Header{"Content-Type": {contentType}, "Retry-After": {"3"}}
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(bytes.NewReader(body)), Request: r}, nil
		})
		c, err := NewClient(ClientConfig{CSDS: "http://127.0.0.1:1", Domain: "http://127.0.0.1:1", Transport: rt})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		cred, err := c.AppToken(bg(), testAppCreds(""), func() time.Time { return now })
		if err == nil {
			if status/100 != 2 {
				t.Fatalf("HTTP %d accepted", status)
			}
			if !isToken(cred.Token) || strings.Count(cred.Token, ".") != 2 {
				t.Fatalf("accepted a token that is not a header-safe JWT: %q", cred.Token)
			}
			if _, err := parseJWT(cred.Token); err != nil {
				t.Fatalf("accepted a token parseJWT refuses: %v", err)
			}
			if cred.Lifetime < minAppJWTLifetime || cred.Lifetime > maxSessionTTL {
				t.Fatalf("lifetime %s out of bounds", cred.Lifetime)
			}
			return
		}
		msg := err.Error()
		for _, s := range []string{testAppSecret, url.QueryEscape(testAppSecret)} {
			if strings.Contains(msg, s) {
				t.Fatalf("error shows the secret: %s", msg)
			}
		}
		if tok := replyToken(body); len(tok) >= 8 && isToken(tok) && strings.Contains(msg, tok) {
			t.Fatalf("error shows the token: %s", msg)
		}
	})
}

// FuzzJWTPayload checks the JWT parser on a token built from a fuzzed
// header and payload, and on a raw token: it never panics, accepts only
// header-safe three-part tokens, answers only its fixed errors (so none
// shows the token), and the lifetime it leads to is bounded.
func FuzzJWTPayload(f *testing.F) {
	f.Add([]byte(`{"alg":"RS256","kid":"appjwt-13-05-17"}`), []byte(`{"exp":1767229200,"iat":1767225600,"aud":"le81823118","azp":"c","iss":"Sentinel"}`), "")
	f.Add([]byte(`{}`), []byte(`{"exp":1e400}`), "a.b.c")
	f.Add([]byte(`null`), []byte(`[]`), "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln\r\n")
	f.Add([]byte(`{"alg":"none"}`), []byte(`{"exp":"1767229200","iat":-1}`), "..")
	fixed := []error{errNoAccessToken, errTokenTooLong, errTokenUnsafe, errNotJWT, errJWTHeader, errJWTPayload, errJWTNumericDate}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, header, payload []byte, raw string) {
		enc := base64.RawURLEncoding.EncodeToString
		for _, tok := range []string{enc(header) + "." + enc(payload) + ".c2ln", raw} {
			cl, err := parseJWT(tok)
			if err == nil {
				if !isToken(tok) || len(tok) > maxJWTLength || strings.Count(tok, ".") != 2 {
					t.Fatalf("accepted %q", tok)
				}
				for _, secs := range []float64{0, 1, 3600} {
					if d, _ := tokenLifetime(secs, cl, now); d < minAppJWTLifetime || d > maxSessionTTL {
						t.Fatalf("lifetime %s out of bounds for %+v", d, cl)
					}
				}
				continue
			}
			known := false
			for _, e := range fixed {
				known = known || err == e
			}
			if !known {
				t.Fatalf("error not one of the fixed texts: %v", err)
			}
		}
	})
}
