// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func tokenURL(srv *httptest.Server, v1 bool) string {
	if v1 {
		return srv.URL + "/sentinel/api/account/" + DefaultAccountID + "/app/token?v=1.0&grant_type=client_credentials"
	}
	return srv.URL + "/sentinel/api/v2/account/" + DefaultAccountID + "/app/token"
}

var formHdr = map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

// demoForm is the documented body; v1 sends grant_type in the query instead.
func demoForm(v1 bool) string {
	f := url.Values{"client_id": {DefaultClientID}, "client_secret": {DefaultClientSecret}}
	if !v1 {
		f.Set("grant_type", GrantClientCredentials)
	}
	return f.Encode()
}

// mustToken fetches a token in the documented form of v1 or v2.
func mustToken(t *testing.T, srv *httptest.Server, v1 bool) string {
	t.Helper()
	r := post(t, tokenURL(srv, v1), demoForm(v1), formHdr)
	if r.status != 200 {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	tok, _ := r.json(t)["access_token"].(string)
	if tok == "" {
		t.Fatalf("no access_token: %s", r.body)
	}
	return tok
}

// oauthErrorIs checks an OAuth 2.0 error answer.
func oauthErrorIs(t *testing.T, r reply, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (%s)", r.status, status, r.body)
	}
	m := r.json(t)
	if m["error"] != code || m["error_description"] == "" || len(m) != 2 {
		t.Errorf("body %s, want error %q with a description", r.body, code)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", r.header.Get("Cache-Control"))
	}
}

// appCall is a data API call with a credential, with or without "Bearer ".
func appCall(t *testing.T, srv *httptest.Server, cred string, bearerWord bool) reply {
	t.Helper()
	if bearerWord {
		cred = "Bearer " + cred
	}
	return do(t, "GET", srv.URL+"/api/account/"+DefaultAccountID+"/proactive", nil, map[string]string{"Authorization": cred})
}

// jwtRefused checks the messaging APIs' 401 for a JWT.
func jwtRefused(t *testing.T, r reply, msg string) {
	t.Helper()
	if r.status != 401 || string(r.body) != `{"code":0,"message":"`+msg+`"}` {
		t.Errorf("got %d %s, want 401 with message %q", r.status, r.body, msg)
	}
}

func decodeSegment(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

func TestSentinelTokenV2AndJWKS(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	_, srv := newServer(t, Config{Clock: newFakeClock(start)})

	r := post(t, tokenURL(srv, false), demoForm(false), formHdr)
	if r.status != 200 || r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("token: %d %v %s", r.status, r.header, r.body)
	}
	var reply struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   *int64 `json:"expires_in"`
	}
	if err := json.Unmarshal(r.body, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.TokenType != "Bearer" || reply.ExpiresIn == nil || *reply.ExpiresIn != 3600 {
		t.Errorf("reply %s", r.body)
	}
	parts := strings.Split(reply.AccessToken, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", reply.AccessToken)
	}
	var hdr map[string]string
	var claims map[string]any
	decodeSegment(t, parts[0], &hdr)
	decodeSegment(t, parts[1], &claims)
	if hdr["alg"] != "RS256" || hdr["typ"] != "JWT" || !strings.HasPrefix(hdr["kid"], "ccemu-") {
		t.Errorf("header %v", hdr)
	}
	want := map[string]any{
		"iat": float64(start.Unix()), "exp": float64(start.Unix() + 3600), "aud": "le" + DefaultAccountID,
		"azp": DefaultClientID, "scope": DefaultTokenScope, "iss": "Sentinel",
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %#v, want %#v", k, claims[k], v)
		}
	}
	if jti, _ := claims["jti"].(string); jti == "" || len(claims) != 7 {
		t.Errorf("claims %v", claims)
	}
	// Every token has its own jti, even issued in the same instant.
	var other map[string]any
	decodeSegment(t, strings.Split(mustToken(t, srv, false), ".")[1], &other)
	if other["jti"] == claims["jti"] {
		t.Error("two tokens share a jti")
	}

	// The JWKS verifies the signature.
	jr := do(t, "GET", srv.URL+"/sentinel/well-known/jwks", nil, nil)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(jr.body, &set); err != nil || jr.status != 200 || len(set.Keys) != 1 {
		t.Fatalf("jwks: %d %s", jr.status, jr.body)
	}
	k := set.Keys[0]
	if k["kty"] != "RSA" || k["alg"] != "RS256" || k["use"] != "sig" || k["kid"] != hdr["kid"] {
		t.Errorf("jwk %v", k)
	}
	n, err1 := base64.RawURLEncoding.DecodeString(k["n"])
	eb, err2 := base64.RawURLEncoding.DecodeString(k["e"])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(eb).Int64())}
	if pub.N.BitLen() != 2048 {
		t.Errorf("key of %d bits", pub.N.BitLen())
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("signature does not verify with the JWKS: %v", err)
	}
	if r := post(t, srv.URL+"/sentinel/well-known/jwks", "", nil); r.status != 405 {
		t.Errorf("POST jwks: %d", r.status)
	}
}

// The Domain API names Sentinel's host like any other service's.
func TestSentinelHost(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	own := srv.Listener.Addr().String()
	if r := lookupOne(t, srv.URL, "sentinel"); !strings.Contains(string(r.body), `"baseURI":"`+own+`"`) {
		t.Errorf("sentinel lookup: %s", r.body)
	}
	other := httptest.NewServer(e)
	defer other.Close()
	e.SetServiceHost("sentinel", other.Listener.Addr().String())
	if got := lookupAll(t, srv.URL)["sentinel"]; got != other.Listener.Addr().String() {
		t.Fatalf("sentinel host %q", got)
	}
	// A token from the other listener is good on this one: one emulator.
	tok := mustToken(t, other, false)
	if r := appCall(t, srv, tok, true); r.status != 200 {
		t.Errorf("data with a token from the sentinel host: %d %s", r.status, r.body)
	}
}

func TestSentinelTokenV1(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t, Config{})
	v1 := srv.URL + "/sentinel/api/account/" + DefaultAccountID + "/app/token"

	r := post(t, tokenURL(srv, true), demoForm(true), formHdr)
	if r.status != 200 {
		t.Fatalf("v1: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["token_type"] != "Bearer" || m["access_token"] == "" || len(m) != 2 {
		t.Errorf("v1 reply has more or less than access_token and token_type: %s", r.body)
	}
	for name, req := range map[string]struct{ url, body string }{
		"grant in body": {v1 + "?v=1.0", demoForm(false)},
		"all in query":  {v1 + "?v=1.0&" + demoForm(false), ""},
		"without v":     {v1 + "?grant_type=client_credentials", demoForm(true)},
		"split creds":   {v1 + "?v=1.0&grant_type=client_credentials&client_id=" + DefaultClientID, "client_secret=" + DefaultClientSecret},
	} {
		if r := post(t, req.url, req.body, formHdr); r.status != 200 {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}
	oauthErrorIs(t, post(t, v1+"?v=2.0&grant_type=client_credentials", demoForm(true), formHdr), 400, "invalid_request")
	// The same value in the query and the body is what x/oauth2 sends for a
	// token URL that carries grant_type; two values are not.
	if r := post(t, v1+"?v=1.0&grant_type=client_credentials", demoForm(false), formHdr); r.status != 200 {
		t.Errorf("grant in query and body: %d %s", r.status, r.body)
	}
	oauthErrorIs(t, post(t, v1+"?v=1.0&grant_type=password", demoForm(false), formHdr), 400, "invalid_request")
	oauthErrorIs(t, post(t, v1+"?v=1.0&grant_type=client_credentials&grant_type=client_credentials", demoForm(true), formHdr),
		400, "invalid_request")
	// v2 reads the form only: a grant_type in its query does not count.
	oauthErrorIs(t, post(t, tokenURL(srv, false)+"?grant_type=client_credentials", demoForm(true), formHdr), 400, "invalid_request")
}

func basicHdr(id, secret string) map[string]string {
	req, _ := http.NewRequest("POST", "/", nil)
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	return map[string]string{"Content-Type": formHdr["Content-Type"], "Authorization": req.Header.Get("Authorization")}
}

func TestSentinelBasicAuth(t *testing.T) {
	t.Parallel()
	const id, secret = "app 1", "s3cr:t/+&="
	_, srv := newServer(t, Config{ClientID: id, ClientSecret: secret})
	grant := "grant_type=client_credentials"
	for _, v1 := range []bool{false, true} {
		body := grant
		if v1 {
			body = ""
		}
		r := post(t, tokenURL(srv, v1), body, basicHdr(id, secret))
		if r.status != 200 {
			t.Fatalf("basic v1=%v: %d %s", v1, r.status, r.body)
		}
		var claims map[string]any
		decodeSegment(t, strings.Split(r.json(t)["access_token"].(string), ".")[1], &claims)
		if claims["azp"] != id {
			t.Errorf("azp %v", claims["azp"])
		}
	}
	// The same client id in the body as well is tolerated; a secret there is
	// a second authentication method.
	if r := post(t, tokenURL(srv, false), grant+"&client_id="+url.QueryEscape(id), basicHdr(id, secret)); r.status != 200 {
		t.Errorf("basic + same client_id: %d %s", r.status, r.body)
	}
	oauthErrorIs(t, post(t, tokenURL(srv, false), grant+"&client_id=other", basicHdr(id, secret)), 400, "invalid_request")
	oauthErrorIs(t, post(t, tokenURL(srv, false), grant+"&client_secret=x", basicHdr(id, secret)), 400, "invalid_request")
	r := post(t, tokenURL(srv, false), grant, basicHdr(id, "wrong"))
	oauthErrorIs(t, r, 401, "invalid_client")
	if r.header.Get("WWW-Authenticate") != `Basic realm="sentinel"` {
		t.Errorf("WWW-Authenticate %q", r.header.Get("WWW-Authenticate"))
	}
	// The defaults are gone when Config names another client.
	oauthErrorIs(t, post(t, tokenURL(srv, false), demoForm(false), formHdr), 401, "invalid_client")
}

func TestSentinelErrors(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	v2 := tokenURL(srv, false)
	with := func(kv ...string) string {
		f := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			f.Add(kv[i], kv[i+1])
		}
		return f.Encode()
	}
	cid, sec, gt := "client_id", "client_secret", "grant_type"
	for name, c := range map[string]struct {
		url, body string
		hdr       map[string]string
		status    int
		code      string
	}{
		"wrong secret":   {v2, with(cid, DefaultClientID, sec, "nope", gt, GrantClientCredentials), formHdr, 401, "invalid_client"},
		"unknown client": {v2, with(cid, "who", sec, DefaultClientSecret, gt, GrantClientCredentials), formHdr, 401, "invalid_client"},
		"no secret":      {v2, with(cid, DefaultClientID, gt, GrantClientCredentials), formHdr, 401, "invalid_client"},
		"no client":      {v2, with(gt, GrantClientCredentials), formHdr, 401, "invalid_client"},
		"other account": {srv.URL + "/sentinel/api/v2/account/999/app/token", demoForm(false), formHdr,
			401, "invalid_client"},
		"no grant":        {v2, with(cid, DefaultClientID, sec, DefaultClientSecret), formHdr, 400, "invalid_request"},
		"password grant":  {v2, with(cid, DefaultClientID, sec, DefaultClientSecret, gt, "password"), formHdr, 400, "unsupported_grant_type"},
		"refresh grant":   {v2, with(cid, DefaultClientID, sec, DefaultClientSecret, gt, "refresh_token"), formHdr, 400, "unsupported_grant_type"},
		"repeated grant":  {v2, demoForm(false) + "&grant_type=client_credentials", formHdr, 400, "invalid_request"},
		"json body":       {v2, `{"client_id":"demo-client"}`, map[string]string{"Content-Type": "application/json"}, 400, "invalid_request"},
		"no content type": {v2, demoForm(false), nil, 400, "invalid_request"},
		"bad form":        {v2, "a=%zz", formHdr, 400, "invalid_request"},
		"huge body":       {v2, strings.Repeat("x", maxTokenBody+1), formHdr, 400, "invalid_request"},
	} {
		t.Run(name, func(t *testing.T) {
			r := post(t, c.url, c.body, c.hdr)
			oauthErrorIs(t, r, c.status, c.code)
			if bytes.Contains(r.body, []byte(DefaultClientSecret)) {
				t.Errorf("error echoes the secret: %s", r.body)
			}
		})
	}
	// The charset parameter does not matter.
	if r := post(t, v2, demoForm(false), map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}); r.status != 200 {
		t.Errorf("with charset: %d %s", r.status, r.body)
	}
	r := do(t, "GET", v2, nil, nil)
	oauthErrorIs(t, r, 405, "invalid_request")
	if r.header.Get("Allow") != "POST" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
	for _, p := range []string{"/sentinel/api/v2/account/12345678/app/other", "/sentinel/api/v3/account/1/app/token", "/sentinel/"} {
		envelope(t, post(t, srv.URL+p, demoForm(false), formHdr), 404, codeNotFound, "NOT_FOUND")
	}
	c := e.Counters()
	want := Counters{
		TokenRequests: 15, TokenRequestsOK: 1, TokensIssued: 1, LiveTokens: 1,
		TokenRequestsInvalidClient: 5, TokenRequestsBadRequest: 9,
	}
	if c != want {
		t.Errorf("counters\n got %+v\nwant %+v", c, want)
	}
}

func TestSentinelFaults(t *testing.T) {
	t.Parallel()
	clk := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, srv := newServer(t, Config{Clock: clk})
	v2 := tokenURL(srv, false)

	e.FailNextTokens(2, 503, 2500*time.Millisecond)
	for range 2 {
		r := post(t, v2, demoForm(false), formHdr)
		oauthErrorIs(t, r, 503, "temporarily_unavailable")
		if r.header.Get("Retry-After") != "3" {
			t.Errorf("Retry-After %q, want 3", r.header.Get("Retry-After"))
		}
	}
	mustToken(t, srv, false)
	e.FailNextTokens(1, 500, 0)
	r := post(t, v2, demoForm(false), formHdr)
	oauthErrorIs(t, r, 500, "server_error")
	if r.header.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q without one asked", r.header.Get("Retry-After"))
	}
	e.FailNextTokens(1, 429, 5*time.Second)
	r = post(t, v2, demoForm(false), formHdr)
	oauthErrorIs(t, r, 429, "too_many_requests")
	if r.header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	e.FailNextTokens(1, 401, 0)
	oauthErrorIs(t, post(t, v2, demoForm(false), formHdr), 401, "invalid_client")
	e.FailNextTokens(1, 200, 0) // outside 400-599: 500
	oauthErrorIs(t, post(t, v2, demoForm(false), formHdr), 500, "server_error")
	e.FailNextTokens(5, 502, 0)
	e.FailNextTokens(0, 502, 0) // cancels
	mustToken(t, srv, true)

	// The rate limit slides on the clock and answers Retry-After: 1.
	e.SetTokenRate(2, time.Second)
	mustToken(t, srv, false)
	mustToken(t, srv, true)
	r = post(t, v2, demoForm(false), formHdr)
	oauthErrorIs(t, r, 429, "too_many_requests")
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("rate-limit Retry-After %q", r.header.Get("Retry-After"))
	}
	clk.Advance(time.Second)
	mustToken(t, srv, false)
	e.SetTokenRate(0, 0)
	mustToken(t, srv, false)

	e.DelayNextTokens(1, 300*time.Millisecond)
	begin := time.Now()
	mustToken(t, srv, false)
	if el := time.Since(begin); el < 300*time.Millisecond {
		t.Errorf("delayed token took %v", el)
	}
	begin = time.Now()
	mustToken(t, srv, false)
	if el := time.Since(begin); el >= 300*time.Millisecond {
		t.Errorf("second token still delayed: %v", el)
	}
	c := e.Counters()
	if c.TokenRequests != 15 || c.TokenRequestsOK != 8 || c.TokensIssued != 8 || c.TokenRequestsServerError != 4 ||
		c.TokenRequestsRateLimited != 2 || c.TokenRequestsInvalidClient != 1 || c.TokenRequestsBadRequest != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestSentinelDelayHonoursCancel(t *testing.T) {
	t.Parallel()
	e := checkDelayHonoursCancel(t, func(e *Emulator) { e.DelayNextTokens(1, 20*time.Second) },
		func(srv *httptest.Server) (string, string) { return tokenURL(srv, false), demoForm(false) })
	if c := e.Counters(); c.TokensIssued != 0 || c.TokenRequests != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestSentinelLifetimeAndData(t *testing.T) {
	t.Parallel()
	clk := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, srv := newServer(t, Config{Clock: clk, TokenLifetime: 90 * time.Second})
	r := post(t, tokenURL(srv, false), demoForm(false), formHdr)
	if got := r.json(t)["expires_in"]; got != float64(90) {
		t.Errorf("expires_in %v, want Config.TokenLifetime", got)
	}
	tok := r.json(t)["access_token"].(string)

	fp := sha256.Sum256([]byte(tok))
	for _, bearerWord := range []bool{true, false} {
		r := appCall(t, srv, tok, bearerWord)
		if r.status != 200 {
			t.Fatalf("bearer word %v: %d %s", bearerWord, r.status, r.body)
		}
		if bytes.Contains(r.body, []byte(tok)) || bytes.Contains(r.body, []byte(strings.Split(tok, ".")[2])) {
			t.Fatalf("echo leaks the token: %s", r.body)
		}
		var got echo
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		scheme := map[bool]string{true: "Bearer", false: ""}[bearerWord]
		if got.CredentialKind != "app_jwt" || got.AuthorizationScheme != scheme || got.ClientID != DefaultClientID ||
			got.LoginName != "" || !got.AuthorizationPresent || got.BearerFingerprint != hex.EncodeToString(fp[:4]) {
			t.Errorf("echo %+v", got)
		}
	}
	// A session bearer goes either way too.
	s := mustLogin(t, srv, userBody())
	for _, bearerWord := range []bool{true, false} {
		m := appCall(t, srv, s.bearer, bearerWord).json(t)
		if m["credential_kind"] != "session" || m["login_name"] != DefaultUsername || m["client_id"] != "" {
			t.Errorf("session, bearer word %v: %v", bearerWord, m)
		}
	}

	clk.Advance(90*time.Second - time.Nanosecond)
	if r := appCall(t, srv, tok, true); r.status != 200 {
		t.Errorf("just before expiry: %d %s", r.status, r.body)
	}
	if c := e.Counters(); c.LiveTokens != 1 || c.AppJWTDataCalls != 3 || c.DataCalls != 5 {
		t.Errorf("counters %+v", c)
	}
	clk.Advance(time.Nanosecond)
	jwtRefused(t, appCall(t, srv, tok, true), "jwt expired")
	jwtRefused(t, appCall(t, srv, tok, false), "jwt expired")
	if c := e.Counters(); c.LiveTokens != 0 || c.UnauthorizedDataCalls != 2 {
		t.Errorf("counters after expiry %+v", c)
	}

	e.SetTokenLifetime(3 * time.Second)
	r = post(t, tokenURL(srv, false), demoForm(false), formHdr)
	if got := r.json(t)["expires_in"]; got != float64(3) {
		t.Errorf("expires_in %v after SetTokenLifetime", got)
	}
	// A sub-second remainder is rounded down in expires_in and exp.
	e.SetTokenLifetime(2500 * time.Millisecond)
	clk.Advance(700 * time.Millisecond)
	r = post(t, tokenURL(srv, false), demoForm(false), formHdr)
	var claims jwtClaims
	decodeSegment(t, strings.Split(r.json(t)["access_token"].(string), ".")[1], &claims)
	if got := r.json(t)["expires_in"]; got != float64(2) || claims.Exp != clk.Now().Add(2500*time.Millisecond).Unix() {
		t.Errorf("expires_in %v exp %d at %v", got, claims.Exp, clk.Now())
	}
	e.SetTokenLifetime(0)
	if got := post(t, tokenURL(srv, false), demoForm(false), formHdr).json(t)["expires_in"]; got != float64(3600) {
		t.Errorf("expires_in %v after SetTokenLifetime(0)", got)
	}
}

func TestSentinelRevokeAndForeignTokens(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	a, b := mustToken(t, srv, false), mustToken(t, srv, true)
	if n := e.RevokeTokens(); n != 2 {
		t.Errorf("RevokeTokens %d, want 2", n)
	}
	jwtRefused(t, appCall(t, srv, a, true), "jwt revoked")
	jwtRefused(t, appCall(t, srv, b, false), "jwt revoked")
	c := mustToken(t, srv, false)
	if r := appCall(t, srv, c, true); r.status != 200 {
		t.Errorf("token issued after revocation: %d %s", r.status, r.body)
	}
	if n := e.RevokeTokens(); n != 1 {
		t.Errorf("second RevokeTokens %d", n)
	}

	// Another emulator's token, a forged signature and garbage.
	_, otherSrv := newServer(t, Config{})
	jwtRefused(t, appCall(t, srv, mustToken(t, otherSrv, false), true), "invalid signature")
	parts := strings.Split(c, ".")
	jwtRefused(t, appCall(t, srv, parts[0]+"."+parts[1]+"."+parts[2][:len(parts[2])-4]+"AAAA", true), "invalid signature")
	jwtRefused(t, appCall(t, srv, "a.b.c", true), "jwt malformed")
	// Not JWT-shaped: the Login Service envelope, as for any bad bearer.
	envelope(t, appCall(t, srv, "not-a-jwt", false), 401, codeBearer, "UNAUTHORIZED")
	// A live token for another account's path is refused too.
	d := mustToken(t, srv, false)
	r := do(t, "GET", srv.URL+"/api/account/999/x", nil, map[string]string{"Authorization": "Bearer " + d})
	envelope(t, r, 401, codeBearer, "UNAUTHORIZED")
	r = do(t, "GET", srv.URL+"/api/account/"+DefaultAccountID+"/always-401", nil, map[string]string{"Authorization": "Bearer " + d})
	envelope(t, r, 401, codeBearer, "UNAUTHORIZED")

	// Reset forgets tokens but keeps the lifetime.
	e.SetTokenLifetime(time.Minute)
	e.Reset()
	jwtRefused(t, appCall(t, srv, d, true), "jwt revoked")
	if got := post(t, tokenURL(srv, false), demoForm(false), formHdr).json(t)["expires_in"]; got != float64(60) {
		t.Errorf("Reset changed the lifetime: expires_in %v", got)
	}
}

func TestRequireBareToken(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{RequireBareToken: true})
	tok := mustToken(t, srv, false)
	s := mustLogin(t, srv, userBody())
	for _, cred := range []string{tok, s.bearer} {
		env := envelope(t, appCall(t, srv, cred, true), 401, codeBearer, "UNAUTHORIZED")
		if env["message"] != msgBareRequired {
			t.Errorf("message %v", env["message"])
		}
		if r := appCall(t, srv, cred, false); r.status != 200 || r.json(t)["authorization_scheme"] != "" {
			t.Errorf("bare: %d %s", r.status, r.body)
		}
	}
	e.RequireBareToken(false)
	for _, cred := range []string{tok, s.bearer} {
		if r := appCall(t, srv, cred, true); r.status != 200 || r.json(t)["authorization_scheme"] != "Bearer" {
			t.Errorf("with Bearer after RequireBareToken(false): %d %s", r.status, r.body)
		}
	}
}

func TestSentinelControlAPI(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	ctl := srv.URL + "/_ccemu"
	v2 := tokenURL(srv, false)
	ok := func(path string) {
		t.Helper()
		if r := post(t, ctl+path, "", nil); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
	}

	ok("/fail-tokens?count=1&status=503&retry_after=2s")
	r := post(t, v2, demoForm(false), formHdr)
	oauthErrorIs(t, r, 503, "temporarily_unavailable")
	if r.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	ok("/delay-tokens?count=1&delay=200ms")
	start := time.Now()
	tok := mustToken(t, srv, false)
	if time.Since(start) < 200*time.Millisecond {
		t.Error("delay-tokens had no effect")
	}
	ok("/token-lifetime?lifetime=3s")
	if got := post(t, v2, demoForm(false), formHdr).json(t)["expires_in"]; got != float64(3) {
		t.Errorf("expires_in %v after token-lifetime", got)
	}
	ok("/token-rate?n=1&window=1m")
	mustToken(t, srv, true)
	oauthErrorIs(t, post(t, v2, demoForm(false), formHdr), 429, "too_many_requests")
	ok("/token-rate?n=0")

	ok("/require-bare-token?required=true")
	if r := appCall(t, srv, tok, true); r.status != 401 {
		t.Errorf("require-bare-token=true: %d", r.status)
	}
	ok("/require-bare-token?required=false")
	if r := appCall(t, srv, tok, true); r.status != 200 {
		t.Errorf("require-bare-token=false: %d", r.status)
	}

	cr := do(t, "GET", ctl+"/counters", nil, nil)
	var c controlCounters
	if err := json.Unmarshal(cr.body, &c); err != nil {
		t.Fatal(err)
	}
	if c.TokenRequests != 5 || c.TokensIssued != 3 || c.TokenRequestsOK != 3 || c.TokenRequestsServerError != 1 ||
		c.TokenRequestsRateLimited != 1 || c.LiveTokens != 3 || c.AppJWTDataCalls != 1 {
		t.Errorf("counters %s", cr.body)
	}
	for _, s := range e.IssuedSecrets() {
		if bytes.Contains(cr.body, []byte(s)) {
			t.Errorf("counters leak a secret")
		}
	}
	if r := post(t, ctl+"/revoke-tokens", "", nil); string(r.body) != `{"revoked":3}` {
		t.Errorf("revoke-tokens: %s", r.body)
	}
	jwtRefused(t, appCall(t, srv, tok, true), "jwt revoked")

	for u, param := range map[string]string{
		"/fail-tokens?status=200":         "status",
		"/fail-tokens?count=x":            "count",
		"/fail-tokens?retry_after=soon":   "retry_after",
		"/delay-tokens":                   "delay",
		"/token-rate":                     "n",
		"/token-rate?n=1&window=0":        "window",
		"/token-lifetime":                 "lifetime",
		"/token-lifetime?lifetime=-1s":    "lifetime",
		"/require-bare-token":             "required",
		"/require-bare-token?required=ja": "required",
	} {
		env := envelope(t, post(t, ctl+u, "", nil), 400, codeBadRequest, "BAD_REQUEST")
		if msg, _ := env["message"].(string); !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", u, msg, param)
		}
	}
	if r := do(t, "GET", ctl+"/revoke-tokens", nil, nil); r.status != 405 {
		t.Errorf("GET revoke-tokens: %d", r.status)
	}
}

func TestSentinelIssuedSecrets(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{ClientSecret: "client-secret-x"})
	r := post(t, tokenURL(srv, false), "grant_type=client_credentials&client_id=demo-client&client_secret=client-secret-x", formHdr)
	tok, _ := r.json(t)["access_token"].(string)
	got := e.IssuedSecrets()
	if tok == "" || !slices.Contains(got, tok) || !slices.Contains(got, "client-secret-x") || slices.Contains(got, DefaultClientSecret) {
		t.Errorf("IssuedSecrets %v lacks the token or the client secret (%d %s)", len(got), r.status, r.body)
	}
	if !slices.Contains(New(Config{}).IssuedSecrets(), DefaultClientSecret) {
		t.Error("default client secret missing")
	}
}
