// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The AppJWT source: an application token from Sentinel, CC's OAuth 2.0
// authorisation server, through the client_credentials grant. Sentinel
// issues no refresh token and has no revocation: a new token is fetched
// before the current one expires, and nothing is released at stop.
//
// The exchange goes through golang.org/x/oauth2/clientcredentials. What it
// does well: the form body, the OAuth 2.0 error envelope (error,
// error_description), expires_in as a number or a numeric string, a bound
// on the reply it reads. Where it gets in the way, and what this file does
// about it:
//
//   - Its errors are not CC's: a refusal is an *oauth2.RetrieveError whose
//     Error() prints the raw body. tokenError maps it to an *APIError
//     (status, OAuth error code and description, Retry-After from the
//     response it keeps) so the keeper's retry policy applies, and scrubs
//     the client secret and any access_token from the text.
//   - Its parse errors of a 2xx reply quote JSON syntax errors, which can
//     show a character of the token: they become fixed messages.
//   - It computes Expiry from time.Now, not from an injectable clock, and
//     drops ExpiresIn: the lifetime is read from the raw expires_in field
//     (Token.Extra) instead.
//   - An expires_in in a JSON reply that is not an integer (3600.5,
//     "1800.9", 1.2e3) fails the whole reply as unparsable, where the
//     number would do: oauthTransport rounds it down before x/oauth2
//     reads the reply (wholeExpiresIn).
//   - It sets neither Accept nor User-Agent: oauthHTTPClient adds them.
//   - AuthStyle must be set to AuthStyleInParams: the default auto-detect
//     first sends the secret in a Basic header and, after any error, sends
//     the request again, which doubles every failed fetch.

// AppJWTMode is the Identity.Mode of the AppJWT source.
const AppJWTMode = "app_jwt"

const (
	// defaultAppJWTLifetime applies when neither expires_in nor exp says:
	// "An AppJWT is valid for one hour".
	defaultAppJWTLifetime = time.Hour
	// minAppJWTLifetime keeps a nonsense lifetime the reply states (0,
	// negative) from renewing in a tight loop.
	minAppJWTLifetime = time.Second
	// skewRenewal: a token whose end rests on this host's clock alone and
	// comes within it (or has passed) points at a clock ahead of Sentinel's,
	// not at a token that short; it is renewed this long after its fetch.
	skewRenewal = time.Minute
	// skewLifetime is how long such a token is kept: renewed at 80 %, so
	// skewRenewal after the fetch, and served a little beyond while a
	// failed renewal is retried.
	skewLifetime = skewRenewal * 5 / 4
	// maxAppJWTCheckWindow bounds the window within which a 401 for a
	// young token is the endpoint's own answer.
	maxAppJWTCheckWindow = 30 * time.Second
	// maxJWTLength bounds a token that goes into every request's header.
	maxJWTLength = 16 << 10
)

// AppJWTConfig configures the AppJWT source.
type AppJWTConfig struct {
	AccountID    string
	ClientID     string // OAuth2 client_credentials client id
	ClientSecret string
	// API is the Sentinel token endpoint version: "v1" or "v2"; "" = v2.
	API string
	// Now is the clock the token's age and expiry are measured with (the
	// keeper's, so that Credential.Obtained is comparable); nil = time.Now.
	Now func() time.Time
}

// Validate checks what the source needs, without naming a secret.
func (c AppJWTConfig) Validate() error {
	switch {
	case c.AccountID == "":
		return errors.New("app_jwt: no account_id")
	case c.ClientID == "":
		return errors.New("app_jwt: no client_id")
	case c.ClientSecret == "":
		return errors.New("app_jwt: no client_secret")
	case c.API != "" && c.API != "v1" && c.API != "v2":
		return fmt.Errorf("app_jwt: sentinel_api %q: want v1 or v2", c.API)
	}
	return nil
}

// String never shows the secret.
func (c AppJWTConfig) String() string {
	api := c.API
	if api == "" {
		api = "v2"
	}
	return fmt.Sprintf("account %s, AppJWT (%s) for client %q", c.AccountID, api, c.ClientID)
}

// GoString keeps %#v as safe as %v.
func (c AppJWTConfig) GoString() string { return c.String() }

// AppJWTSource obtains AppJWTs from Sentinel and renews each at 80 % of its
// lifetime.
type AppJWTSource struct {
	cfg AppJWTConfig
	now func() time.Time
}

// NewAppJWTSource returns the AppJWT source for cfg. Call cfg.Validate at
// provisioning; Obtain refuses an invalid cfg too.
func NewAppJWTSource(cfg AppJWTConfig) *AppJWTSource {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &AppJWTSource{cfg: cfg, now: now}
}

// String never shows the secret.
func (a *AppJWTSource) String() string { return a.cfg.String() }

// GoString keeps %#v as safe as %v.
func (a *AppJWTSource) GoString() string { return a.String() }

// Identity names the account and the client id.
func (a *AppJWTSource) Identity() Identity {
	return Identity{Account: a.cfg.AccountID, Mode: AppJWTMode, Name: a.cfg.ClientID}
}

// appJWTMark marks a credential as this source's. Its expiry is the
// credential's Expires; a renewal that fails is retried by the keeper, as
// the retry policy says, until then.
type appJWTMark struct{}

// Obtain fetches a token.
func (a *AppJWTSource) Obtain(ctx context.Context, c *Client) (*Credential, error) {
	return a.fetch(ctx, c)
}

// Check answers an upstream 401 without asking Sentinel (it has no way to
// ask): a token younger than the window is alive, so the 401 is the
// endpoint's own (a missing scope, say); an older one is taken as gone, and
// the keeper fetches one new token for every caller. Window = min(30 s,
// half the token's lifetime), the age measured from cred.Obtained.
func (a *AppJWTSource) Check(_ context.Context, _ *Client, cred *Credential) error {
	window := min(maxAppJWTCheckWindow, cred.Lifetime/2)
	age := a.now().Sub(cred.Obtained)
	if age < window {
		return nil
	}
	return &goneError{fmt.Errorf("token: refused upstream at age %s (past the %s window)", age.Round(time.Millisecond), window)}
}

// Renew fetches a new token. On failure the current one stays in use (it
// is valid until it expires); the error never wraps ErrCredentialGone.
func (a *AppJWTSource) Renew(ctx context.Context, c *Client, _ *Credential) (*Credential, error) {
	return a.fetch(ctx, c)
}

// RenewAfter is the time left until 80 % of cred's lifetime, measured from
// cred.Obtained (from its expiry less its lifetime, before the keeper has
// set Obtained); never negative.
func (a *AppJWTSource) RenewAfter(cred *Credential, _ time.Duration) time.Duration {
	lifetime := cred.Lifetime
	if lifetime <= 0 {
		lifetime = defaultAppJWTLifetime
	}
	start := cred.Obtained
	if start.IsZero() {
		start = cred.Expires.Add(-lifetime)
	}
	return max(start.Add(lifetime/5*4).Sub(a.now()), 0)
}

// Release does nothing: Sentinel has no revocation.
func (a *AppJWTSource) Release(context.Context, *Client, *Credential) error {
	return ErrNothingToRelease
}

// tokenURL is Sentinel's token endpoint under base. v1 carries v and
// grant_type in the query, as the docs show; x/oauth2 also puts grant_type
// in the body.
func (a *AppJWTSource) tokenURL(base string) string {
	acct := url.PathEscape(a.cfg.AccountID)
	if a.cfg.API == "v1" {
		return base + "/sentinel/api/account/" + acct + "/app/token?v=1.0&grant_type=client_credentials"
	}
	return base + "/sentinel/api/v2/account/" + acct + "/app/token"
}

// fetch is the client_credentials exchange.
func (a *AppJWTSource) fetch(ctx context.Context, c *Client) (*Credential, error) {
	if err := a.cfg.Validate(); err != nil {
		return nil, err
	}
	base, err := c.SentinelBaseURL(ctx, a.cfg.AccountID)
	if err != nil {
		return nil, err
	}
	cc := clientcredentials.Config{
		ClientID:     a.cfg.ClientID,
		ClientSecret: a.cfg.ClientSecret,
		TokenURL:     a.tokenURL(base),
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, c.oauthHTTPClient()))
	if err != nil {
		err = a.tokenError(err)
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			c.forgetSentinel(a.cfg.AccountID)
		}
		return nil, err
	}
	cred, err := a.credential(tok.AccessToken, tok.Extra("expires_in"), base)
	if err != nil {
		return nil, fmt.Errorf("token: invalid reply: %w", err)
	}
	return cred, nil
}

// credential checks a token reply and builds the credential. Its errors are
// fixed texts: they never show the token.
func (a *AppJWTSource) credential(token string, expiresIn any, issuer string) (*Credential, error) {
	claims, err := parseJWT(token)
	if err != nil {
		return nil, err
	}
	secs, err := expiresInSeconds(expiresIn)
	if err != nil {
		return nil, err
	}
	now := a.now() // the reply's arrival
	lifetime, skew := tokenLifetime(secs, claims, now)
	cred := newCredential(token, issuer, lifetime, appJWTMark{})
	cred.Expires = now.Add(lifetime)
	cred.ClockSkew = skew
	return cred, nil
}

// The checks of a token reply and of a stored token, as fixed texts.
var (
	errNoAccessToken  = errors.New("no access_token")
	errTokenTooLong   = errors.New("the token is too long")
	errTokenUnsafe    = errors.New("the token has characters not allowed in an HTTP header")
	errNotJWT         = errors.New("the token is not a JWT (three base64url parts)")
	errJWTHeader      = errors.New("the JWT header is not a JSON object")
	errJWTPayload     = errors.New("the JWT payload is not a JSON object")
	errJWTNumericDate = errors.New("the JWT exp or iat claim is not a positive number")
	errExpiresIn      = errors.New("expires_in is not a number")
	errReplyNotToken  = errors.New("not an OAuth token reply")
	errReplyRead      = errors.New("reading the reply failed")

	// Decode's
	errStoredNotJSON   = errors.New("not JSON")
	errStoredLifetime  = errors.New("lifetime out of range")
	errStoredExpired   = errors.New("the token has expired")
	errStoredNoIssuer  = errors.New("bad issuer")
	errStoredFarExpiry = errors.New("expiry too far ahead")
)

// jwtClaims are the claims lpauth reads; the signature is not verified
// (lpauth is the client, not the audience).
type jwtClaims struct {
	exp, iat       float64 // seconds since the epoch
	hasExp, hasIat bool
}

// parseJWT checks that token is a well-formed, header-safe JWT: three
// base64url parts, the first two JSON objects, exp and iat (when present)
// positive numbers. It returns only the errors above.
func parseJWT(token string) (jwtClaims, error) {
	var cl jwtClaims
	switch {
	case token == "":
		return cl, errNoAccessToken
	case len(token) > maxJWTLength:
		return cl, errTokenTooLong
	case !isToken(token):
		return cl, errTokenUnsafe
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return cl, errNotJWT
	}
	var raw [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.Strict().DecodeString(p)
		if err != nil || len(b) == 0 {
			return cl, errNotJWT
		}
		raw[i] = b
	}
	var header map[string]json.RawMessage
	if json.Unmarshal(raw[0], &header) != nil || header == nil {
		return cl, errJWTHeader
	}
	var payload map[string]json.RawMessage
	if json.Unmarshal(raw[1], &payload) != nil || payload == nil {
		return cl, errJWTPayload
	}
	var ok bool
	if v, present := payload["exp"]; present {
		if cl.exp, ok = numericDate(v); !ok {
			return cl, errJWTNumericDate
		}
		cl.hasExp = true
	}
	if v, present := payload["iat"]; present {
		if cl.iat, ok = numericDate(v); !ok {
			return cl, errJWTNumericDate
		}
		cl.hasIat = true
	}
	return cl, nil
}

// numericDate reads a JWT NumericDate: a positive JSON number.
func numericDate(raw json.RawMessage) (float64, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// expiresInSeconds reads expires_in as x/oauth2 hands it over: a float64
// (JSON), an int64 or a string (form replies), nil when absent, in whole
// seconds, rounded down. 0 means absent; a value that is no number is
// refused.
func expiresInSeconds(v any) (float64, error) {
	var f float64
	switch x := v.(type) {
	case nil:
		return 0, nil
	case float64:
		f = x
	case int64:
		f = float64(x)
	case json.Number:
		var err error
		if f, err = strconv.ParseFloat(string(x), 64); err != nil {
			return 0, errExpiresIn
		}
	case string:
		x = strings.TrimSpace(x)
		if x == "" {
			return 0, nil
		}
		var err error
		if f, err = strconv.ParseFloat(x, 64); err != nil || math.IsNaN(f) {
			return 0, errExpiresIn
		}
	default:
		return 0, errExpiresIn
	}
	return max(math.Floor(f), 0), nil
}

// tokenLifetime is the token's lifetime from its arrival at now: the
// smallest of expires_in, exp − iat when the JWT has both, and exp − now
// when it has exp without iat; one hour when none is known; within
// [minAppJWTLifetime, maxSessionTTL]. A lifetime the reply states
// (expires_in, exp − iat) is used however short. When the smallest is
// exp − now, it rests on this host's clock alone: under skewRenewal (or
// past), it says more about a clock ahead of Sentinel's than about the
// token, and skew is true with skewLifetime, so that the token is renewed
// a minute after its fetch instead of in a loop.
func tokenLifetime(expiresIn float64, cl jwtClaims, now time.Time) (lifetime time.Duration, skew bool) {
	var d time.Duration // the smallest known; 0: none
	shorter := func(v time.Duration) {
		if v > 0 && (d == 0 || v < d) {
			d = v
		}
	}
	if expiresIn > 0 {
		shorter(secondsDuration(expiresIn))
	}
	switch {
	case cl.hasExp && cl.hasIat && cl.exp > cl.iat:
		shorter(secondsDuration(cl.exp - cl.iat))
	case cl.hasExp:
		left := cl.exp - float64(now.UnixNano())/1e9
		if left < skewRenewal.Seconds() && (d == 0 || left < d.Seconds()) {
			return skewLifetime, true
		}
		shorter(secondsDuration(left))
	}
	if d == 0 {
		d = defaultAppJWTLifetime
	}
	return min(max(d, minAppJWTLifetime), maxSessionTTL), false
}

// secondsDuration converts seconds to a duration within [0, maxSessionTTL]
// (a huge value must not overflow).
func secondsDuration(s float64) time.Duration {
	switch {
	case !(s > 0):
		return 0
	case s >= maxSessionTTL.Seconds():
		return maxSessionTTL
	}
	return time.Duration(s * float64(time.Second))
}

// tokenError turns what x/oauth2 returned into lpauth's errors: a refusal
// is an *APIError (Op "token") so that the retry policy applies; a
// transport error keeps its cause; anything else is an invalid reply with a
// fixed text. None shows the client secret or a token.
func (a *AppJWTSource) tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		secrets := a.secretsIn(re.Body)
		code := scrubbed(re.ErrorCode, 64, secrets...)
		if re.Response.StatusCode/100 == 2 {
			// An OAuth error in a 2xx answer: a broken reply, not a
			// refusal the config class should wait out.
			return fmt.Errorf("token: invalid reply: OAuth error %q in an HTTP %d answer", code, re.Response.StatusCode)
		}
		e := parseAPIError("token", re.Response, re.Body, secrets...)
		if re.ErrorCode != "" {
			msg := re.ErrorCode
			if re.ErrorDescription != "" {
				msg += ": " + re.ErrorDescription
			}
			e.Message = scrubbed(msg, maxErrorText, secrets...)
		}
		return e
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return fmt.Errorf("token: %w", err) // the URL holds no secret
	}
	switch msg := err.Error(); {
	case strings.Contains(msg, "missing access_token"):
		err = errNoAccessToken
	case strings.HasPrefix(msg, "oauth2: cannot fetch token"):
		err = errReplyRead
	default:
		err = errReplyNotToken
	}
	return fmt.Errorf("token: invalid reply: %w", err)
}

// secretsIn is what a token answer's text must not show: the client
// secret (a server may echo the request) and any access_token the body
// carries, as JSON or as a form.
func (a *AppJWTSource) secretsIn(body []byte) []string {
	secrets := []string{a.cfg.ClientSecret}
	var reply struct {
		AccessToken json.RawMessage `json:"access_token"`
	}
	if json.Unmarshal(body, &reply) == nil {
		var s string
		if json.Unmarshal(reply.AccessToken, &s) == nil {
			secrets = append(secrets, s)
		} else if len(reply.AccessToken) > 0 {
			secrets = append(secrets, string(reply.AccessToken))
		}
	}
	form, _ := url.ParseQuery(string(body))
	return append(secrets, form["access_token"]...)
}

// storedAppJWT is an AppJWT as the cluster stores it.
type storedAppJWT struct {
	Token      string `json:"token"`
	Issuer     string `json:"issuer"`
	LifetimeMS int64  `json:"lifetime_ms"`
	ExpiresMS  int64  `json:"expires_unix_ms"`
}

// Encode stores the token, its issuer, lifetime and expiry.
func (a *AppJWTSource) Encode(cred *Credential) ([]byte, error) {
	if _, ok := cred.state.(appJWTMark); !ok {
		return nil, errors.New("app_jwt: not an AppJWT credential")
	}
	return json.Marshal(storedAppJWT{Token: cred.Token, Issuer: cred.Issuer, LifetimeMS: cred.Lifetime.Milliseconds(), ExpiresMS: cred.Expires.UnixMilli()})
}

// Decode rebuilds a stored AppJWT with the checks a token reply gets; an
// expired one is refused, so that the reader fetches a new one.
func (a *AppJWTSource) Decode(data []byte) (*Credential, error) {
	var p storedAppJWT
	if json.Unmarshal(data, &p) != nil {
		return nil, fmt.Errorf("stored token: %w", errStoredNotJSON)
	}
	if _, err := parseJWT(p.Token); err != nil {
		return nil, fmt.Errorf("stored token: %w", err)
	}
	lifetime := time.Duration(p.LifetimeMS) * time.Millisecond
	if p.LifetimeMS < minAppJWTLifetime.Milliseconds() || p.LifetimeMS > maxSessionTTL.Milliseconds() {
		return nil, fmt.Errorf("stored token: %w", errStoredLifetime)
	}
	u, err := validateHost(p.Issuer, "", hostConfigured)
	if err != nil || p.Issuer != u.String() {
		return nil, fmt.Errorf("stored token: %w", errStoredNoIssuer)
	}
	now := a.now()
	expires := time.UnixMilli(p.ExpiresMS)
	switch {
	case !expires.After(now):
		return nil, fmt.Errorf("stored token: %w", errStoredExpired)
	case expires.Sub(now) > maxSessionTTL:
		return nil, fmt.Errorf("stored token: %w", errStoredFarExpiry)
	}
	cred := newCredential(p.Token, u.String(), lifetime, appJWTMark{})
	cred.Expires = expires
	return cred, nil
}

// Interface guards
var _ Source = (*AppJWTSource)(nil)
