// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// How lpauth authenticates: the credential-source interface, the credential
// and identity it yields, and the two sources, the Login Service session
// (user or application login) and the AppJWT from Sentinel. The wire
// protocol of both is internal/cc's.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// source obtains one kind of credential and looks after it: the Login
// Service session (user or application login) is one, an AppJWT from
// Sentinel another. A keeper drives a source and adds everything that does
// not depend on the kind: one obtain at a time, invalidation of only the
// credential that failed, the retry policy, timers, cluster storage, status
// and events. A source holds no state of its own between calls: whatever a
// credential needs later travels inside it.
//
// Every call takes the CC client of the configuration that applies at the
// moment, and a context that bounds it.
type source interface {
	// Identity names the account and the user or application, for
	// status, logs and metrics. It holds no secret.
	Identity() identity

	// Obtain gets a new credential.
	Obtain(ctx context.Context, c *cc.Client) (*credential, error)

	// Check tells whether cred still works, for an upstream 401 that came
	// back with it: nil means alive (the 401 is the endpoint's own); an
	// error that wraps errCredentialGone means gone, and a new one is
	// needed; any other error means the source cannot tell now.
	Check(ctx context.Context, c *cc.Client, cred *credential) error

	// Renew keeps cred alive, or replaces it: it returns the credential to
	// use from now on (cred itself, or a new one). An error that wraps
	// errCredentialGone means cred is gone; any other error leaves cred in
	// use until the next renewal.
	Renew(ctx context.Context, c *cc.Client, cred *credential) (*credential, error)

	// RenewAfter is how long after obtaining or renewing cred the next
	// renewal is due, given the configured refresh interval.
	RenewAfter(cred *credential, refreshInterval time.Duration) time.Duration

	// Release ends cred on the server's side. A source with nothing to
	// end (no revocation exists) returns errNothingToRelease, so that
	// nobody reports a logout that did not happen.
	Release(ctx context.Context, c *cc.Client, cred *credential) error

	// Encode and Decode turn the source's part of a credential into bytes
	// and back, for the cluster's shared storage (which encrypts them).
	// Decode checks what it reads as strictly as Obtain checks a reply.
	Encode(cred *credential) ([]byte, error)
	Decode(data []byte) (*credential, error)
}

// errNothingToRelease is what Release returns for a credential the issuer
// cannot end (an AppJWT: Sentinel has no revocation).
var errNothingToRelease = errors.New("nothing to release")

// errCredentialGone is wrapped by a source's Check or Renew error when the
// credential no longer works (a Login Service refresh answered 401).
var errCredentialGone = errors.New("credential is gone")

// identity names whom a credential is for. It holds no secret.
type identity struct {
	Account string
	Kind    string // the kind of login: "user", "application" or "app_jwt" (appJWTKind)
	Name    string // the user name, or the client id
}

// SameUser says whether two identities are the same CC user or application,
// whatever their credentials: a login kind of the Login Service may change
// with a rotation, an application token is never a user's.
func (id identity) SameUser(o identity) bool {
	return id.Account == o.Account && id.Name == o.Name && (id.Kind == appJWTKind) == (o.Kind == appJWTKind)
}

// credential is what a source obtained: the token that goes into the
// Authorization header, and the source's own state that keeps it alive. Its
// secret fields are never shown by String.
type credential struct {
	Token    string    // the bearer or JWT
	Issuer   string    // scheme://host[:port] of the host that issued it
	Obtained time.Time // when this process obtained (or adopted) it

	// Lifetime is how long the credential lives without renewal, as the
	// issuer announced it (0 if it did not).
	Lifetime time.Duration

	// Expires is when the credential stops working whatever happens
	// (zero: no fixed end, it lives as long as it is renewed). One with an
	// end is served until then even if renewing it fails.
	Expires time.Time

	// ClockSkew: its end rested on this host's clock alone and came within
	// a minute or had passed on arrival (an AppJWT's exp, with no shorter
	// expires_in and no iat), which points at this host's clock being
	// ahead of the issuer's; it is renewed a minute after it was obtained.
	ClockSkew bool

	state any // the source's own, e.g. *cc.Session

	// authValue is "Bearer <token>", built once so that the request path
	// does not concatenate.
	authValue  string
	issuerHost string // host[:port] of Issuer
}

// newCredential builds a credential; the source has checked token.
func newCredential(token, issuer string, lifetime time.Duration, state any) *credential {
	c := &credential{Token: token, Issuer: issuer, Lifetime: lifetime, state: state, authValue: "Bearer " + token}
	if u, err := url.Parse(issuer); err == nil {
		c.issuerHost = u.Host
	}
	return c
}

// AuthorizationValue is the value of the Authorization header.
func (c *credential) AuthorizationValue() string { return c.authValue }

// String never shows a secret: a credential can end up in a %v by accident.
func (c *credential) String() string {
	if c == nil {
		return "<no credential>"
	}
	return fmt.Sprintf("credential from %s obtained %s", c.Issuer, c.Obtained.Format(time.RFC3339))
}

// GoString keeps %#v as safe as %v.
func (c *credential) GoString() string { return c.String() }

// loginSource is the Login Service source: a user or application login
// gives a bearer, a Session_id cookie and a csrf; a refresh every refresh
// interval keeps the session alive (and answers 401 once it is gone); a
// logout ends it.
type loginSource struct {
	creds cc.Credentials
}

// newLoginSource returns the Login Service source for creds.
func newLoginSource(creds cc.Credentials) *loginSource { return &loginSource{creds: creds} }

// Identity names the account and the CC user.
func (l *loginSource) Identity() identity {
	return identity{Account: l.creds.AccountID, Kind: l.creds.Kind(), Name: l.creds.Username}
}

// Obtain logs in.
func (l *loginSource) Obtain(ctx context.Context, c *cc.Client) (*credential, error) {
	s, err := c.Login(ctx, l.creds)
	if err != nil {
		return nil, err
	}
	return sessionCredential(s), nil
}

// Check refreshes the session: CC has no other way to ask.
func (l *loginSource) Check(ctx context.Context, c *cc.Client, cred *credential) error {
	_, err := l.Renew(ctx, c, cred)
	return err
}

// Renew refreshes the session; a refresh 401 means it is gone.
func (l *loginSource) Renew(ctx context.Context, c *cc.Client, cred *credential) (*credential, error) {
	err := c.Refresh(ctx, l.creds.AccountID, cred.state.(*cc.Session))
	var apiErr *cc.APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == 401 {
		return nil, &goneError{err}
	}
	if err != nil {
		return nil, err
	}
	return cred, nil
}

// RenewAfter is the refresh interval: CC asks for a refresh every 3-5 min.
func (l *loginSource) RenewAfter(_ *credential, refreshInterval time.Duration) time.Duration {
	return refreshInterval
}

// Release logs out.
func (l *loginSource) Release(ctx context.Context, c *cc.Client, cred *credential) error {
	return c.Logout(ctx, l.creds.AccountID, cred.state.(*cc.Session))
}

// storedSession is a session as the cluster stores it.
type storedSession struct {
	Bearer    string `json:"bearer"`
	CSRF      string `json:"csrf"`
	SessionID string `json:"session_id"`
	BaseURL   string `json:"base_url"`
	TTL       int64  `json:"ttl_ms,omitempty"`
}

// Encode stores the session's parts.
func (l *loginSource) Encode(cred *credential) ([]byte, error) {
	s := cred.state.(*cc.Session)
	return json.Marshal(storedSession{Bearer: s.Bearer, CSRF: s.CSRF, SessionID: s.SessionID, BaseURL: s.BaseURL, TTL: s.TTL.Milliseconds()})
}

// Decode rebuilds a stored session with the checks a login reply gets.
func (l *loginSource) Decode(data []byte) (*credential, error) {
	var p storedSession
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("stored session: %w", err)
	}
	s, err := cc.NewSession(p.Bearer, p.CSRF, p.SessionID, p.BaseURL, time.Duration(p.TTL)*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("stored session: %w", err)
	}
	return sessionCredential(s), nil
}

func sessionCredential(s *cc.Session) *credential {
	return newCredential(s.Bearer, s.BaseURL, s.TTL, s)
}

// goneError marks a renewal that found the credential gone; it keeps the
// server's answer for logs.
type goneError struct{ err error }

func (e *goneError) Error() string { return e.err.Error() }
func (e *goneError) Unwrap() []error {
	return []error{e.err, errCredentialGone}
}

// Interface guard
var _ source = (*loginSource)(nil)

// The AppJWT source: an application token from Sentinel, CC's OAuth 2.0
// authorisation server, through the client_credentials grant (the exchange
// and the checks of its reply are internal/cc's). Sentinel issues no
// refresh token and has no revocation: a new token is fetched before the
// current one expires, and nothing is released at stop.

// appJWTKind is the Identity.Kind of the AppJWT source.
const appJWTKind = "app_jwt"

// maxAppJWTCheckWindow bounds the window within which a 401 for a young
// token is the endpoint's own answer.
const maxAppJWTCheckWindow = 30 * time.Second

// appJWTConfig configures the AppJWT source.
type appJWTConfig struct {
	AccountID    string
	ClientID     string // OAuth2 client_credentials client id
	ClientSecret string
	// API is the Sentinel token endpoint version: "v1" or "v2"; "" = v2.
	API string
	// Now is the clock the token's age and expiry are measured with (the
	// keeper's, so that credential.Obtained is comparable); nil = time.Now.
	Now func() time.Time
}

// Validate checks what the source needs, without naming a secret.
func (c appJWTConfig) Validate() error {
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
func (c appJWTConfig) String() string {
	api := c.API
	if api == "" {
		api = "v2"
	}
	return fmt.Sprintf("account %s, AppJWT (%s) for client %q", c.AccountID, api, c.ClientID)
}

// GoString keeps %#v as safe as %v.
func (c appJWTConfig) GoString() string { return c.String() }

// appJWTSource obtains AppJWTs from Sentinel and renews each at 80 % of its
// lifetime.
type appJWTSource struct {
	cfg appJWTConfig
	now func() time.Time
}

// newAppJWTSource returns the AppJWT source for cfg. Call cfg.Validate at
// provisioning; Obtain refuses an invalid cfg too.
func newAppJWTSource(cfg appJWTConfig) *appJWTSource {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &appJWTSource{cfg: cfg, now: now}
}

// String never shows the secret.
func (a *appJWTSource) String() string { return a.cfg.String() }

// GoString keeps %#v as safe as %v.
func (a *appJWTSource) GoString() string { return a.String() }

// Identity names the account and the client id.
func (a *appJWTSource) Identity() identity {
	return identity{Account: a.cfg.AccountID, Kind: appJWTKind, Name: a.cfg.ClientID}
}

// appJWTMark marks a credential as this source's. Its expiry is the
// credential's Expires; a renewal that fails is retried by the keeper, as
// the retry policy says, until then.
type appJWTMark struct{}

// Obtain fetches a token.
func (a *appJWTSource) Obtain(ctx context.Context, c *cc.Client) (*credential, error) {
	return a.fetch(ctx, c)
}

// Check answers an upstream 401 without asking Sentinel (it has no way to
// ask): a token younger than the window is alive, so the 401 is the
// endpoint's own (a missing scope, say); an older one is taken as gone, and
// the keeper fetches one new token for every caller. Window = min(30 s,
// half the token's lifetime), the age measured from cred.Obtained.
func (a *appJWTSource) Check(_ context.Context, _ *cc.Client, cred *credential) error {
	window := min(maxAppJWTCheckWindow, cred.Lifetime/2)
	age := a.now().Sub(cred.Obtained)
	if age < window {
		return nil
	}
	return &goneError{fmt.Errorf("token: refused upstream at age %s (past the %s window)", age.Round(time.Millisecond), window)}
}

// Renew fetches a new token. On failure the current one stays in use (it
// is valid until it expires); the error never wraps errCredentialGone.
func (a *appJWTSource) Renew(ctx context.Context, c *cc.Client, _ *credential) (*credential, error) {
	return a.fetch(ctx, c)
}

// RenewAfter is the time left until 80 % of cred's lifetime, measured from
// cred.Obtained (from its expiry less its lifetime, before the keeper has
// set Obtained); never negative.
func (a *appJWTSource) RenewAfter(cred *credential, _ time.Duration) time.Duration {
	lifetime := cred.Lifetime
	if lifetime <= 0 {
		lifetime = cc.DefaultAppJWTLifetime
	}
	start := cred.Obtained
	if start.IsZero() {
		start = cred.Expires.Add(-lifetime)
	}
	return max(start.Add(lifetime/5*4).Sub(a.now()), 0)
}

// Release does nothing: Sentinel has no revocation.
func (a *appJWTSource) Release(context.Context, *cc.Client, *credential) error {
	return errNothingToRelease
}

// fetch is the client_credentials exchange.
func (a *appJWTSource) fetch(ctx context.Context, c *cc.Client) (*credential, error) {
	if err := a.cfg.Validate(); err != nil {
		return nil, err
	}
	tok, err := c.AppToken(ctx, cc.AppCredentials{AccountID: a.cfg.AccountID, ClientID: a.cfg.ClientID, ClientSecret: a.cfg.ClientSecret, API: a.cfg.API}, a.now)
	if err != nil {
		return nil, err
	}
	return appJWTCredential(tok), nil
}

// appJWTCredential is the credential of a checked token.
func appJWTCredential(t *cc.AppToken) *credential {
	cred := newCredential(t.Token, t.Issuer, t.Lifetime, appJWTMark{})
	cred.Expires = t.Expires
	cred.ClockSkew = t.ClockSkew
	return cred
}

// storedAppJWT is an AppJWT as the cluster stores it.
type storedAppJWT struct {
	Token      string `json:"token"`
	Issuer     string `json:"issuer"`
	LifetimeMS int64  `json:"lifetime_ms"`
	ExpiresMS  int64  `json:"expires_unix_ms"`
}

// Encode stores the token, its issuer, lifetime and expiry.
func (a *appJWTSource) Encode(cred *credential) ([]byte, error) {
	if _, ok := cred.state.(appJWTMark); !ok {
		return nil, errors.New("app_jwt: not an AppJWT credential")
	}
	return json.Marshal(storedAppJWT{Token: cred.Token, Issuer: cred.Issuer, LifetimeMS: cred.Lifetime.Milliseconds(), ExpiresMS: cred.Expires.UnixMilli()})
}

// errStoredNotJSON: what Decode read is not a stored AppJWT at all.
var errStoredNotJSON = errors.New("not JSON")

// Decode rebuilds a stored AppJWT with the checks a token reply gets; an
// expired one is refused, so that the reader fetches a new one.
func (a *appJWTSource) Decode(data []byte) (*credential, error) {
	var p storedAppJWT
	if json.Unmarshal(data, &p) != nil {
		return nil, fmt.Errorf("stored token: %w", errStoredNotJSON)
	}
	tok, err := cc.StoredAppToken(p.Token, p.Issuer, p.LifetimeMS, p.ExpiresMS, a.now())
	if err != nil {
		return nil, fmt.Errorf("stored token: %w", err)
	}
	return appJWTCredential(tok), nil
}

// Interface guards
var _ source = (*appJWTSource)(nil)
