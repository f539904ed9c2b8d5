// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

// Tests of the Sentinel token exchange and of the checks of its reply; the
// AppJWT source over it is tested at the root (appjwt_test.go).

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppJWTObtainV1ExpOnly(t *testing.T) {
	s := newSentinelStub(t)
	clock := newFakeClock()
	// The v1 example has no expires_in: the lifetime comes from exp.
	tok := testJWT(map[string]any{"exp": clock.Now().Add(30 * time.Minute).Unix()})
	s.SetReply(jsonReply(200, map[string]any{"access_token": tok, "token_type": "Bearer"}))
	cred, err := stubClient(t, s).AppToken(bg(), testAppCreds("v1"), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if api, _ := s.Last(); s.Bad.Load() != 0 || api != "v1" {
		t.Fatalf("bad requests %d, api %q", s.Bad.Load(), api)
	}
	if cred.Lifetime != 30*time.Minute {
		t.Errorf("lifetime %s, want 30m from exp", cred.Lifetime)
	}
}

func TestAppJWTDomainAPI(t *testing.T) {
	s := newSentinelStub(t)
	c, err := NewClient(ClientConfig{CSDS: s.Srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	base, err := c.SentinelBaseURL(bg(), testAppAccount)
	if err != nil || base != s.Srv.URL {
		t.Fatalf("SentinelBaseURL = %q, %v; want %q", base, err, s.Srv.URL)
	}
	for range 3 {
		if _, err := c.AppToken(bg(), testAppCreds(""), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Lookups.Load(); n != 1 {
		t.Errorf("%d Domain API lookups, want 1 (cached)", n)
	}
	if s.Tokens.Load() != 3 || s.Bad.Load() != 0 {
		t.Errorf("tokens %d bad %d", s.Tokens.Load(), s.Bad.Load())
	}
}

func TestAppJWTLifetime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) int64 { return now.Add(d).Unix() }
	// A lifetime that rests on this host's clock alone and is under a
	// minute, or an exp already past by that clock: renewed a minute after
	// the fetch (clock skew), not in a loop.
	const skewed = 0
	for _, tc := range []struct {
		name   string
		reply  map[string]any // without access_token
		claims map[string]any
		want   time.Duration // skewed: renewed 60 s after the fetch
	}{
		{"expires_in", map[string]any{"expires_in": 3600}, nil, time.Hour},
		{"expires_in as string", map[string]any{"expires_in": "120"}, nil, 2 * time.Minute},
		{"expires_in shorter than exp", map[string]any{"expires_in": 60}, map[string]any{"exp": at(time.Hour)}, time.Minute},
		{"exp sooner than a huge expires_in", map[string]any{"expires_in": int64(1e15)}, map[string]any{"exp": at(time.Hour)}, time.Hour},
		{"exp − iat shorter than expires_in", map[string]any{"expires_in": 7200}, map[string]any{"exp": at(75 * time.Minute), "iat": at(15 * time.Minute)}, time.Hour},
		{"a short expires_in is used as it is", map[string]any{"expires_in": 4}, map[string]any{"exp": at(4 * time.Second), "iat": at(0)}, 4 * time.Second},
		{"a short exp − iat is used as it is", nil, map[string]any{"exp": at(4 * time.Second), "iat": at(0)}, 4 * time.Second},
		{"exp only", nil, map[string]any{"exp": at(45 * time.Minute)}, 45 * time.Minute},
		{"exp and iat agree", nil, map[string]any{"exp": at(time.Hour), "iat": at(0)}, time.Hour},
		{"exp − iat, whatever this host's clock says", nil, map[string]any{"exp": at(40 * time.Minute), "iat": at(-20 * time.Minute)}, time.Hour},
		{"local clock behind the issuer", nil, map[string]any{"exp": at(75 * time.Minute), "iat": at(15 * time.Minute)}, time.Hour},
		{"local clock far ahead", nil, map[string]any{"exp": at(-time.Hour), "iat": at(-2 * time.Hour)}, time.Hour},
		{"exp passed, no iat: clock skew", nil, map[string]any{"exp": at(-time.Minute)}, skewed},
		{"exp passed, expires_in, no iat: clock skew", map[string]any{"expires_in": 3600}, map[string]any{"exp": at(-time.Minute)}, skewed},
		{"exp in 30 s, no iat: clock skew", nil, map[string]any{"exp": at(30 * time.Second)}, skewed},
		{"exp in 30 s sooner than expires_in, no iat: clock skew", map[string]any{"expires_in": 3600}, map[string]any{"exp": at(30 * time.Second)}, skewed},
		{"exp in 30 s later than expires_in, no iat", map[string]any{"expires_in": 20}, map[string]any{"exp": at(30 * time.Second)}, 20 * time.Second},
		{"exp in 61 s, no iat", nil, map[string]any{"exp": at(61 * time.Second)}, 61 * time.Second},
		{"exp as a float", nil, map[string]any{"exp": float64(at(10*time.Minute)) + 0.5}, 10*time.Minute + 500*time.Millisecond},
		{"neither: one hour", nil, nil, time.Hour},
		{"expires_in 0 means absent", map[string]any{"expires_in": 0}, map[string]any{"exp": at(5 * time.Minute)}, 5 * time.Minute},
		{"negative expires_in means absent", map[string]any{"expires_in": -5}, nil, time.Hour},
		{"huge expires_in is bounded", map[string]any{"expires_in": 1 << 40}, nil, maxSessionTTL},
		{"huge exp is bounded", nil, map[string]any{"exp": 1e15}, maxSessionTTL},
		{"fractional expires_in, rounded down", map[string]any{"expires_in": 3600.5}, nil, time.Hour},
		{"fractional expires_in as a string, rounded down", map[string]any{"expires_in": "1800.9"}, nil, 30 * time.Minute},
		{"expires_in with an exponent", map[string]any{"expires_in": json.RawMessage("1.2e3")}, nil, 20 * time.Minute},
		{"expires_in beyond float64 is bounded", map[string]any{"expires_in": json.RawMessage("1e400")}, nil, maxSessionTTL},
		{"expires_in beyond float64, exp sooner", map[string]any{"expires_in": json.RawMessage("1e400")}, map[string]any{"exp": at(time.Hour)}, time.Hour},
		{"negative fractional expires_in means absent", map[string]any{"expires_in": -5.5}, nil, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSentinelStub(t)
			reply := map[string]any{"access_token": testJWT(tc.claims), "token_type": "Bearer"}
			for k, v := range tc.reply {
				reply[k] = v
			}
			s.SetReply(jsonReply(200, reply))
			cred, err := stubClient(t, s).AppToken(bg(), testAppCreds(""), func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			if cred.ClockSkew != (tc.want == skewed) {
				t.Errorf("clock skew %v, want %v", cred.ClockSkew, tc.want == skewed)
			}
			if tc.want == skewed {
				// The AppJWT source renews a token at 80 % of its
				// lifetime (TestAppJWTRenewAfter at the root): a minute
				// after the fetch. Kept until a little after that
				// renewal, so a failed one is retried before the token
				// is dropped.
				if renew := cred.Lifetime / 5 * 4; renew != time.Minute || cred.Lifetime <= time.Minute || cred.Lifetime > 2*time.Minute {
					t.Errorf("renewed after %s, lifetime %s; want renewed 60 s after the fetch, kept a little longer", renew, cred.Lifetime)
				}
			} else if cred.Lifetime != tc.want {
				t.Errorf("lifetime %s, want %s", cred.Lifetime, tc.want)
			}
			if got := cred.Expires; !got.Equal(now.Add(cred.Lifetime)) {
				t.Errorf("expires %s, want now + %s: measured from the reply's arrival", got, cred.Lifetime)
			}
		})
	}
}

func TestAppJWTFormReply(t *testing.T) {
	s := newSentinelStub(t)
	tok := testJWT(nil)
	s.SetReply(rawReply(200, "application/x-www-form-urlencoded", "access_token="+tok+"&token_type=Bearer&expires_in=90"))
	cred, err := stubClient(t, s).AppToken(bg(), testAppCreds(""), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Token != tok || cred.Lifetime != 90*time.Second {
		t.Errorf("form reply: lifetime %s", cred.Lifetime)
	}
}

func TestAppJWTMalformedReplies(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	hdr := enc([]byte(`{"alg":"RS256"}`))
	pay := enc([]byte(`{"exp":4102444800}`))
	sig := enc([]byte("sig"))
	for _, tc := range []struct {
		name, body string
		want       error
		token      string
	}{
		{"not JSON", `<html>hello</html>`, errReplyNotToken, ""},
		{"no access_token", `{"token_type":"Bearer"}`, errNoAccessToken, ""},
		{"empty access_token", `{"access_token":""}`, errNoAccessToken, ""},
		{"access_token not a string", `{"access_token":12345}`, errReplyNotToken, ""},
		{"opaque token", `{"access_token":"0123456789abcdef0123456789abcdef"}`, errNotJWT, "0123456789abcdef0123456789abcdef"},
		{"two parts", `{"access_token":"` + hdr + "." + pay + `"}`, errNotJWT, hdr + "." + pay},
		{"four parts", `{"access_token":"` + hdr + "." + pay + "." + sig + "." + sig + `"}`, errNotJWT, hdr + "." + pay + "." + sig + "." + sig},
		{"empty signature", `{"access_token":"` + hdr + "." + pay + `."}`, errNotJWT, hdr + "." + pay + "."},
		{"padded base64", `{"access_token":"` + hdr + "." + pay + "." + base64.URLEncoding.EncodeToString([]byte("sig!")) + `"}`, errNotJWT, ""},
		{"standard base64", `{"access_token":"` + base64.StdEncoding.EncodeToString([]byte(`{"alg":"RS256","x":"??>>"}`)) + "." + pay + "." + sig + `"}`, errNotJWT, ""},
		{"header not JSON", `{"access_token":"` + enc([]byte("alg")) + "." + pay + "." + sig + `"}`, errJWTHeader, ""},
		{"header null", `{"access_token":"` + enc([]byte("null")) + "." + pay + "." + sig + `"}`, errJWTHeader, ""},
		{"payload an array", `{"access_token":"` + hdr + "." + enc([]byte(`[1,2]`)) + "." + sig + `"}`, errJWTPayload, ""},
		{"exp a string", `{"access_token":"` + hdr + "." + enc([]byte(`{"exp":"soon"}`)) + "." + sig + `"}`, errJWTNumericDate, ""},
		{"exp negative", `{"access_token":"` + hdr + "." + enc([]byte(`{"exp":-1}`)) + "." + sig + `"}`, errJWTNumericDate, ""},
		{"bad base64 signature", `{"access_token":"` + hdr + "." + pay + "." + sig + `x"}`, errNotJWT, ""},
		{"iat not a number", `{"access_token":"` + hdr + "." + enc([]byte(`{"exp":4102444800,"iat":true}`)) + "." + sig + `"}`, errJWTNumericDate, ""},
		{"CRLF in the token", `{"access_token":"` + hdr + "." + pay + "." + sig + `\r\nX-Injected: 1"}`, errTokenUnsafe, hdr + "." + pay + "." + sig},
		{"space in the token", `{"access_token":"` + hdr + " " + pay + "." + sig + `"}`, errTokenUnsafe, hdr + " " + pay + "." + sig},
		{"non-ASCII in the token", `{"access_token":"` + hdr + "." + pay + "." + sig + `é"}`, errTokenUnsafe, hdr + "." + pay + "." + sig},
		{"too long", `{"access_token":"` + hdr + "." + enc([]byte(`{"x":"`+strings.Repeat("a", maxJWTLength)+`"}`)) + "." + sig + `"}`, errTokenTooLong, ""},
		{"expires_in not a number", `{"access_token":"` + hdr + "." + pay + "." + sig + `","expires_in":"soon"}`, errReplyNotToken, hdr + "." + pay + "." + sig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSentinelStub(t)
			s.SetReply(rawReply(200, "application/json", tc.body))
			cred, err := stubClient(t, s).AppToken(bg(), testAppCreds(""), nil)
			if err == nil {
				t.Fatalf("accepted: lifetime %s", cred.Lifetime)
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				t.Errorf("an invalid reply is an *APIError (it would be taken for a refusal): %v", err)
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			// Not an *APIError (checked above) is what the keeper's retry
			// policy classes as transient.
			noSecret(t, err, tc.token)
		})
	}
}
