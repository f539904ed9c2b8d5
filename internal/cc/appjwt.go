// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

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

// The AppJWT: an application token from Sentinel, CC's OAuth 2.0
// authorisation server, through the client_credentials grant. Sentinel
// issues no refresh token and has no revocation.
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

const (
	// DefaultAppJWTLifetime applies when neither expires_in nor exp says:
	// "An AppJWT is valid for one hour".
	DefaultAppJWTLifetime = time.Hour
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
	// maxJWTLength bounds a token that goes into every request's header.
	maxJWTLength = 16 << 10
)

// AppCredentials identify an application to Sentinel.
type AppCredentials struct {
	AccountID    string
	ClientID     string // OAuth2 client_credentials client id
	ClientSecret string
	// API is the Sentinel token endpoint version: "v1" or "v2"; "" = v2.
	API string
}

// String never shows the secret.
func (a AppCredentials) String() string {
	return fmt.Sprintf("account %s, client %q", a.AccountID, a.ClientID)
}

// GoString keeps %#v as safe as %v.
func (a AppCredentials) GoString() string { return a.String() }

// AppToken is an AppJWT as Sentinel issued it (or as storage kept it),
// checked: a header-safe JWT, and its lifetime within bounds.
type AppToken struct {
	Token    string        // the JWT
	Issuer   string        // scheme://host[:port] of the Sentinel host
	Lifetime time.Duration // as the reply (or the JWT) states it, bounded
	Expires  time.Time     // the arrival plus the lifetime

	// ClockSkew: its end rested on this host's clock alone and came
	// within a minute or had passed on arrival (see tokenLifetime).
	ClockSkew bool
}

// tokenURL is Sentinel's token endpoint under base. v1 carries v and
// grant_type in the query, as the docs show; x/oauth2 also puts grant_type
// in the body.
func (a AppCredentials) tokenURL(base string) string {
	acct := url.PathEscape(a.AccountID)
	if a.API == "v1" {
		return base + "/sentinel/api/account/" + acct + "/app/token?v=1.0&grant_type=client_credentials"
	}
	return base + "/sentinel/api/v2/account/" + acct + "/app/token"
}

// AppToken is the client_credentials exchange with the account's Sentinel.
// now is the clock the token's arrival, and so its expiry, is measured
// with; nil = time.Now. Its errors never show the client secret or a
// token: a refusal is an *APIError (Op "token"), an invalid reply a fixed
// text.
func (c *Client) AppToken(ctx context.Context, a AppCredentials, now func() time.Time) (*AppToken, error) {
	if now == nil {
		now = time.Now
	}
	base, err := c.SentinelBaseURL(ctx, a.AccountID)
	if err != nil {
		return nil, err
	}
	cc := clientcredentials.Config{
		ClientID:     a.ClientID,
		ClientSecret: a.ClientSecret,
		TokenURL:     a.tokenURL(base),
		AuthStyle:    oauth2.AuthStyleInParams,
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, c.oauthHTTPClient()))
	if err != nil {
		err = a.tokenError(err)
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			c.forgetSentinel(a.AccountID)
		}
		return nil, err
	}
	t, err := appToken(tok.AccessToken, tok.Extra("expires_in"), base, now)
	if err != nil {
		return nil, fmt.Errorf("token: invalid reply: %w", err)
	}
	return t, nil
}

// appToken checks a token reply and builds the token. Its errors are
// fixed texts: they never show the token.
func appToken(token string, expiresIn any, issuer string, now func() time.Time) (*AppToken, error) {
	claims, err := parseJWT(token)
	if err != nil {
		return nil, err
	}
	secs, err := expiresInSeconds(expiresIn)
	if err != nil {
		return nil, err
	}
	arrived := now() // the reply's arrival
	lifetime, skew := tokenLifetime(secs, claims, arrived)
	return &AppToken{Token: token, Issuer: issuer, Lifetime: lifetime, Expires: arrived.Add(lifetime), ClockSkew: skew}, nil
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

	// StoredAppToken's
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
		d = DefaultAppJWTLifetime
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
func (a AppCredentials) tokenError(err error) error {
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
func (a AppCredentials) secretsIn(body []byte) []string {
	secrets := []string{a.ClientSecret}
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

// StoredAppToken rebuilds an AppJWT kept in storage (its lifetime and
// expiry in Unix milliseconds) with the checks a token reply gets; an
// expired one is refused, so that the reader fetches a new one. Its errors
// are fixed texts.
func StoredAppToken(token, issuer string, lifetimeMS, expiresMS int64, now time.Time) (*AppToken, error) {
	if _, err := parseJWT(token); err != nil {
		return nil, err
	}
	if lifetimeMS < minAppJWTLifetime.Milliseconds() || lifetimeMS > maxSessionTTL.Milliseconds() {
		return nil, errStoredLifetime
	}
	u, err := validateHost(issuer, "", hostConfigured)
	if err != nil || issuer != u.String() {
		return nil, errStoredNoIssuer
	}
	expires := time.UnixMilli(expiresMS)
	switch {
	case !expires.After(now):
		return nil, errStoredExpired
	case expires.Sub(now) > maxSessionTTL:
		return nil, errStoredFarExpiry
	}
	return &AppToken{Token: token, Issuer: u.String(), Lifetime: time.Duration(lifetimeMS) * time.Millisecond, Expires: expires}, nil
}
