// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"cmp"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/big"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Sentinel defaults, used when the corresponding Config field is empty.
const (
	// DefaultClientID and DefaultClientSecret are the demo application's
	// OAuth 2.0 client credentials.
	DefaultClientID     = "demo-client"
	DefaultClientSecret = "demo-client-secret"
	// DefaultTokenLifetime is the documented AppJWT lifetime ("valid for
	// one hour").
	DefaultTokenLifetime = time.Hour
	// DefaultTokenScope is the scope claim of the tokens issued.
	DefaultTokenScope = "msg.consumer"
	// DefaultTokenRateWindow is the window TokenRate counts in.
	DefaultTokenRateWindow = time.Second
	// TokenIssuer is the iss claim, as in Sentinel's AppJWTs.
	TokenIssuer = "Sentinel"
	// GrantClientCredentials is the only grant_type the token endpoints take.
	GrantClientCredentials = "client_credentials"
)

const (
	tokenRetryAfter = time.Second // a token 429 asks for at least 1 s
	maxTokenBody    = 64 << 10
	rsaBits         = 2048
	formType        = "application/x-www-form-urlencoded"
	msgBareRequired = "Authorization must carry the bare token, without the Bearer word"
)

// appToken is an issued AppJWT that has not been revoked.
type appToken struct {
	clientID string
	exp      time.Time // dead from exp on (RFC 7519: not on or after)
}

// sentinel is the Emulator's Sentinel state; its mutable fields are guarded
// by Emulator.mu.
type sentinel struct {
	clientID, clientSecret, scope string

	keyOnce sync.Once // the key is generated on first use: New stays cheap
	key     *rsa.PrivateKey
	kid     string

	lifetime    time.Duration
	tokenRate   rateLimit
	failTokens  injection
	delayTokens delays
	requireBare bool
	tokens      map[string]*appToken // live (unrevoked) tokens by value
}

func (e *Emulator) initSentinel(cfg Config) {
	e.clientID = cmp.Or(cfg.ClientID, DefaultClientID)
	e.clientSecret = cmp.Or(cfg.ClientSecret, DefaultClientSecret)
	e.scope = cmp.Or(cfg.TokenScope, DefaultTokenScope)
	e.requireBare = cfg.RequireBareToken
	e.tokens = map[string]*appToken{}
	e.secrets = append(e.secrets, e.clientSecret)
	e.SetTokenLifetime(cfg.TokenLifetime)
	e.SetTokenRate(cfg.TokenRate, cfg.TokenRateWindow)
}

// resetSentinelLocked clears the token knobs, the rate-limit history and
// every token (Reset). The caller holds e.mu.
func (e *Emulator) resetSentinelLocked() {
	e.failTokens, e.delayTokens = injection{}, delays{}
	e.tokenRate.log = nil
	e.tokens = map[string]*appToken{}
}

// SetTokenLifetime sets the lifetime of the AppJWTs issued from now on;
// d <= 0 restores DefaultTokenLifetime. Tokens already issued keep theirs.
func (e *Emulator) SetTokenLifetime(d time.Duration) {
	e.setDuration(&e.lifetime, d, DefaultTokenLifetime)
}

// SetTokenRate limits token requests to n per window (sliding; beyond it
// 429 with Retry-After: 1) and forgets earlier requests; n <= 0 means
// unlimited and window <= 0 means DefaultTokenRateWindow.
func (e *Emulator) SetTokenRate(n int, window time.Duration) {
	e.mu.Lock()
	e.tokenRate.set(n, window, DefaultTokenRateWindow)
	e.mu.Unlock()
}

// FailNextTokens makes the next n token requests answer status (outside
// 400-599 means 500) with an OAuth 2.0 error body, before any check of the
// request. retryAfter > 0 adds a Retry-After header in whole seconds
// (rounded up). n <= 0 cancels the knob.
func (e *Emulator) FailNextTokens(n int, status int, retryAfter time.Duration) {
	e.arm(&e.failTokens, n, status, retryAfter)
}

// DelayNextTokens makes the next n token requests wait d before answering;
// the wait ends early when the client goes away. n <= 0 cancels the knob.
func (e *Emulator) DelayNextTokens(n int, d time.Duration) { e.setDelay(&e.delayTokens, n, d) }

// RevokeTokens makes every AppJWT issued so far invalid (the data API
// answers 401 "jwt revoked") and returns how many were still live. Tokens
// issued afterwards are valid.
func (e *Emulator) RevokeTokens() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.liveTokensLocked(e.now())
	e.tokens = map[string]*appToken{}
	return n
}

// RequireBareToken(true) makes the data API accept a credential (session
// bearer or AppJWT) only without the "Bearer " word, as some CC APIs are
// shown to take it; with false (the default) both forms are accepted.
func (e *Emulator) RequireBareToken(required bool) {
	e.mu.Lock()
	e.requireBare = required
	e.mu.Unlock()
}

// ClientID returns the client id of the Sentinel application.
func (e *Emulator) ClientID() string { return e.clientID }

// liveTokensLocked counts live tokens and drops expired ones.
func (e *Emulator) liveTokensLocked(now time.Time) int {
	for v, t := range e.tokens {
		if !now.Before(t.exp) {
			delete(e.tokens, v)
		}
	}
	return len(e.tokens)
}

// sentinelCall routes what follows /sentinel/.
func (e *Emulator) sentinelCall(w http.ResponseWriter, r *http.Request, rest string) {
	if rest == "well-known/jwks" {
		e.jwks(w, r)
		return
	}
	v1 := false
	p, ok := strings.CutPrefix(rest, "api/v2/account/")
	if !ok {
		p, v1 = strings.CutPrefix(rest, "api/account/")
	}
	id, tail, _ := strings.Cut(p, "/")
	if (!ok && !v1) || id == "" || tail != "app/token" {
		e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
		return
	}
	e.token(w, r, id, v1)
}

// tokenReply is the token endpoints' 200 body; v1 has no expires_in.
type tokenReply struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in,omitempty"`
}

type oauthErr struct {
	status     int
	code, desc string
}

// token serves both token endpoints: v2 (v1 false) and v1.
func (e *Emulator) token(w http.ResponseWriter, r *http.Request, id string, v1 bool) {
	e.mu.Lock()
	e.counters.TokenRequests++
	delay := e.delayTokens.take()
	e.mu.Unlock()
	// Read the body before sleeping, as login does.
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxTokenBody+1))
	if !sleepCtx(r.Context(), delay) {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		e.oauthError(w, oauthErr{http.StatusMethodNotAllowed, "invalid_request", "use POST"})
		return
	}
	now := e.now()
	e.mu.Lock()
	status, retry := e.failTokens.take(), e.failTokens.retryAfter
	if status == 0 && !e.tokenRate.allow(now) {
		status, retry = http.StatusTooManyRequests, tokenRetryAfter
	}
	e.mu.Unlock()
	if status != 0 {
		setRetryAfter(w, retry)
		e.oauthError(w, injectedOAuth(status))
		return
	}
	if readErr != nil || len(raw) > maxTokenBody {
		e.oauthError(w, oauthErr{http.StatusBadRequest, "invalid_request", "unreadable or oversized body"})
		return
	}
	clientID, fail := e.checkTokenRequest(r, raw, id, v1)
	if fail.status != 0 {
		if fail.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="sentinel"`)
		}
		e.oauthError(w, fail)
		return
	}

	tok, exp := e.signToken(clientID, now)
	e.mu.Lock()
	if len(e.tokens) >= 256 {
		e.liveTokensLocked(now) // keep a long run's map small
	}
	e.tokens[tok] = &appToken{clientID: clientID, exp: exp}
	e.secrets = append(e.secrets, tok)
	e.counters.TokenRequestsOK++
	e.counters.TokensIssued++
	e.mu.Unlock()
	reply := tokenReply{AccessToken: tok, TokenType: "Bearer"}
	if !v1 {
		reply.ExpiresIn = max(int64(exp.Sub(now)/time.Second), 1)
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, reply)
}

// checkTokenRequest validates a token request and authenticates its client;
// it returns the client id or the OAuth 2.0 error to answer.
//
// Parameters come from the form body; v1 also reads them from the query
// (the documented v1 form puts grant_type there, older pages all four). A
// parameter given twice is an invalid_request (RFC 6749 section 3.2),
// except that v1 takes the same value in both the query and the body (what
// golang.org/x/oauth2 sends for a token URL that carries grant_type). The
// client authenticates with client_id + client_secret parameters or with
// HTTP Basic (RFC 6749 section 2.3.1: both halves form-encoded), not both.
func (e *Emulator) checkTokenRequest(r *http.Request, raw []byte, id string, v1 bool) (string, oauthErr) {
	bad := func(desc string) (string, oauthErr) {
		return "", oauthErr{http.StatusBadRequest, "invalid_request", desc}
	}
	q := r.URL.Query()
	if v, ok := q["v"]; v1 && ok && (len(v) != 1 || v[0] != "1.0") {
		return bad("unsupported v (want 1.0)")
	}
	if len(raw) > 0 {
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != formType {
			return bad("Content-Type must be " + formType)
		}
	}
	body, err := url.ParseQuery(string(raw))
	if err != nil {
		return bad("malformed form body")
	}
	var repeated string
	param := func(name string) string {
		vals, inQuery := body[name], q[name]
		if !v1 {
			inQuery = nil
		}
		if len(vals) > 1 || len(inQuery) > 1 || (len(vals) == 1 && len(inQuery) == 1 && vals[0] != inQuery[0]) {
			repeated = name
		}
		if len(vals) == 0 {
			vals = inQuery
		}
		if len(vals) == 0 {
			return ""
		}
		return vals[0]
	}
	grant := param("grant_type")
	cid, secret := param("client_id"), param("client_secret")
	switch {
	case repeated != "":
		return bad("parameter " + repeated + " repeated")
	case grant == "":
		return bad("grant_type is required")
	case grant != GrantClientCredentials:
		return "", oauthErr{http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported"}
	}
	if bid, bsecret, basic := r.BasicAuth(); basic {
		if secret != "" || (cid != "" && cid != formUnescape(bid)) {
			return bad("more than one client authentication method")
		}
		cid, secret = formUnescape(bid), formUnescape(bsecret)
	}
	invalid := oauthErr{http.StatusUnauthorized, "invalid_client", "client authentication failed"}
	switch {
	case cid == "" || secret == "":
		invalid.desc = "client authentication required"
		return "", invalid
	case id != e.accountID:
		invalid.desc = "unknown account " + id
		return "", invalid
	case !equal(cid, e.clientID) || !equal(secret, e.clientSecret):
		return "", invalid
	}
	return cid, oauthErr{}
}

// formUnescape undoes the form encoding of a Basic credential half; a value
// that is not valid form encoding is taken as it is.
func formUnescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// injectedOAuth is the error an injected or rate-limit status answers.
func injectedOAuth(status int) oauthErr {
	switch {
	case status == http.StatusUnauthorized:
		return oauthErr{status, "invalid_client", "client authentication failed"}
	case status == http.StatusTooManyRequests:
		return oauthErr{status, "too_many_requests", "too many token requests, retry later"}
	case status == http.StatusServiceUnavailable:
		return oauthErr{status, "temporarily_unavailable", http.StatusText(status)}
	case status >= 500:
		return oauthErr{status, "server_error", http.StatusText(status)}
	}
	return oauthErr{status, "invalid_request", http.StatusText(status)}
}

// oauthError answers an OAuth 2.0 error body and counts it by result.
func (e *Emulator) oauthError(w http.ResponseWriter, f oauthErr) {
	e.mu.Lock()
	switch {
	case f.status == http.StatusUnauthorized:
		e.counters.TokenRequestsInvalidClient++
	case f.status == http.StatusTooManyRequests:
		e.counters.TokenRequestsRateLimited++
	case f.status >= 500:
		e.counters.TokenRequestsServerError++
	default:
		e.counters.TokenRequestsBadRequest++
	}
	e.mu.Unlock()
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, f.status, map[string]string{"error": f.code, "error_description": f.desc})
}

// signingKey returns the emulator's RSA key and its kid, generating them on
// first use.
func (e *Emulator) signingKey() (*rsa.PrivateKey, string) {
	e.keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			panic("ccemu: generating the signing key: " + err.Error())
		}
		sum := sha256.Sum256(k.N.Bytes())
		e.key, e.kid = k, "ccemu-"+hex.EncodeToString(sum[:6])
	})
	return e.key, e.kid
}

type jwtHeader struct {
	Kid string `json:"kid"`
	Typ string `json:"typ"`
	Alg string `json:"alg"`
}

// jwtClaims are an AppJWT's claims, in the order of the documented example.
type jwtClaims struct {
	Exp   int64  `json:"exp"`
	Iat   int64  `json:"iat"`
	Aud   string `json:"aud"`
	Azp   string `json:"azp"`
	Scope string `json:"scope"`
	Iss   string `json:"iss"`
	Jti   string `json:"jti"`
}

var b64 = base64.RawURLEncoding

// signToken returns a new RS256 AppJWT for clientID issued at now, and the
// instant it dies. The exp claim is whole seconds, rounded down, so a client
// that reads it never expects more life than the token has.
func (e *Emulator) signToken(clientID string, now time.Time) (string, time.Time) {
	key, kid := e.signingKey()
	e.mu.Lock()
	exp := now.Add(e.lifetime)
	e.mu.Unlock()
	h, _ := json.Marshal(jwtHeader{Kid: kid, Typ: "JWT", Alg: "RS256"})
	c, _ := json.Marshal(jwtClaims{
		Exp: exp.Unix(), Iat: now.Unix(), Aud: "le" + e.accountID, Azp: clientID,
		Scope: e.scope, Iss: TokenIssuer, Jti: randHex(16),
	})
	signed := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, sum[:])
	if err != nil {
		panic("ccemu: signing a token: " + err.Error())
	}
	return signed + "." + b64.EncodeToString(sig), exp
}

// jwtProblem says why a JWT-shaped value that is not a live token of this
// emulator is refused, in the words of the jsonwebtoken library CC's
// messaging APIs answer with ("jwt expired"); "" means it is not JWT-shaped.
func (e *Emulator) jwtProblem(tok string, now time.Time) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	var h jwtHeader
	var c jwtClaims
	hb, err1 := b64.DecodeString(parts[0])
	cb, err2 := b64.DecodeString(parts[1])
	sig, err3 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || json.Unmarshal(hb, &h) != nil || json.Unmarshal(cb, &c) != nil {
		return "jwt malformed"
	}
	key, kid := e.signingKey()
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if h.Alg != "RS256" || h.Kid != kid || rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, sum[:], sig) != nil {
		return "invalid signature"
	}
	if c.Aud != "le"+e.accountID || c.Iss != TokenIssuer {
		return "jwt audience invalid"
	}
	if now.Unix() >= c.Exp {
		return "jwt expired"
	}
	return "jwt revoked"
}

type jwk struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// jwks answers GET /sentinel/well-known/jwks: the public signing key.
func (e *Emulator) jwks(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		e.methodNotAllowed(w, "GET, HEAD")
		return
	}
	key, kid := e.signingKey()
	pub := key.PublicKey
	writeJSON(w, http.StatusOK, map[string][]jwk{"keys": {{
		Kty: "RSA", Use: "sig", Alg: "RS256", Kid: kid,
		N: b64.EncodeToString(pub.N.Bytes()),
		E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
}
