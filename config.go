// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Config resolution: the handler's fields after placeholders and defaults,
// every field checked with an error that names it, and what makes an
// identity (the keepers' pool key).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// secretFields are the fields whose values must never be shown.
var secretFields = map[string]bool{"password": true, "secret": true, "access_token": true, "access_token_secret": true, "encryption_key": true, "client_secret": true}

// maxRetryBodyLimit bounds retry_body_limit. A buffered body costs about its
// size in RSS and up to about 2.7x while the buffer grows, so one request at
// the ceiling costs under 200 MiB and a few at once stay far below the
// machine; larger bodies are streamed, which costs nothing per byte.
const maxRetryBodyLimit = 64 << 20

// resolved is the configuration after placeholders and defaults.
type resolved struct {
	creds           cc.Credentials
	client          cc.ClientConfig
	refreshInterval time.Duration
	loginTimeout    time.Duration
	retryBodyLimit  int64
	encryptionKey   []byte
	jwt             appJWTConfig // client_id set: an AppJWT instead of a login
	authScheme      string       // "Bearer ", or "" for the bare token
}

// resolve expands `{env.*}` and other global placeholders, fills defaults
// and checks every field; errors name the field.
func (h *Handler) resolve() (resolved, error) {
	var r resolved
	repl := caddy.NewReplacer()
	var firstErr error
	expand := func(field, v string) string {
		if firstErr != nil {
			return v
		}
		out, err := expandField(repl, field, v, secretFields[field])
		if err != nil {
			firstErr = fmt.Errorf("lpauth: %w", err)
		}
		return out
	}
	r.creds = cc.Credentials{
		AccountID:         expand("account_id", h.AccountID),
		Username:          expand("username", h.Username),
		Password:          expand("password", h.Password),
		AppKey:            expand("app_key", h.AppKey),
		Secret:            expand("secret", h.Secret),
		AccessToken:       expand("access_token", h.AccessToken),
		AccessTokenSecret: expand("access_token_secret", h.AccessTokenSecret),
	}
	r.client = cc.ClientConfig{
		CSDS:      expand("csds", h.CSDS),
		Domain:    expand("domain", h.Domain),
		CAFile:    expand("ca_file", h.CAFile),
		UserAgent: "caddy-lpauth",
	}
	r.jwt = appJWTConfig{
		AccountID:    r.creds.AccountID,
		ClientID:     expand("client_id", h.ClientID),
		ClientSecret: expand("client_secret", h.ClientSecret),
		API:          expand("sentinel_api", h.SentinelAPI),
	}
	scheme := expand("auth_scheme", h.AuthScheme)
	encKey := expand("encryption_key", h.EncryptionKey)
	if firstErr != nil {
		return r, firstErr
	}
	if encKey != "" {
		k, err := parseEncryptionKey(encKey)
		if err != nil {
			return r, fmt.Errorf("lpauth: encryption_key: %w", err)
		}
		r.encryptionKey = k
	}
	var err error
	if r.authScheme, err = authSchemeOf(scheme); err != nil {
		return r, err
	}
	c := r.creds
	if c.AccountID == "" {
		return r, errors.New("lpauth: account_id is required")
	}
	if r.jwt.ClientID != "" || r.jwt.ClientSecret != "" || r.jwt.API != "" {
		return r, h.resolveAppJWT(&r)
	}
	switch {
	case c.Username == "":
		return r, errors.New("lpauth: username is required")
	case c.Password != "" && (c.AppKey != "" || c.Secret != ""):
		return r, errors.New("lpauth: give either password (user login) or app_key and secret (application login), not both")
	case c.Password == "" && c.AppKey == "" && c.Secret == "":
		return r, errors.New("lpauth: password (user login) or app_key and secret (application login) is required")
	case c.AppKey != "" && c.Secret == "":
		return r, errors.New("lpauth: secret is required with app_key")
	case c.Secret != "" && c.AppKey == "":
		return r, errors.New("lpauth: app_key is required with secret")
	case c.AppKey == "" && (c.AccessToken != "" || c.AccessTokenSecret != ""):
		return r, errors.New("lpauth: access_token and access_token_secret belong to application login (app_key)")
	}
	return r, h.resolveTuning(&r)
}

// resolveAppJWT checks an AppJWT identity: client_id and client_secret,
// none of the fields of a login, none of the settings that do not apply.
func (h *Handler) resolveAppJWT(r *resolved) error {
	j := &r.jwt
	jwtField := "client_id"
	if j.ClientID == "" {
		jwtField = "client_secret"
		if j.ClientSecret == "" {
			jwtField = "sentinel_api"
		}
	}
	c := r.creds
	for _, f := range []struct{ name, kind, val string }{
		{"username", "user or application login", c.Username},
		{"password", "user login", c.Password},
		{"app_key", "application login", c.AppKey},
		{"secret", "application login", c.Secret},
		{"access_token", "application login", c.AccessToken},
		{"access_token_secret", "application login", c.AccessTokenSecret},
	} {
		if f.val != "" {
			return fmt.Errorf("lpauth: %s (%s) and %s (AppJWT) are fields of two kinds of identity; give those of one", f.name, f.kind, jwtField)
		}
	}
	switch {
	case j.ClientID == "":
		return errors.New("lpauth: client_id is required with " + jwtField)
	case j.ClientSecret == "":
		return errors.New("lpauth: client_secret is required with client_id")
	case j.API != "" && j.API != "v1" && j.API != "v2":
		return fmt.Errorf("lpauth: sentinel_api must be v1 or v2, got %q", j.API)
	case h.RefreshInterval != 0:
		return errors.New("lpauth: refresh_interval does not apply to an AppJWT (client_id): it is renewed at 80% of its lifetime")
	case h.LogoutOnStop != nil:
		return errors.New("lpauth: logout_on_stop does not apply to an AppJWT (client_id): Sentinel has no revocation")
	}
	if j.API == "" {
		j.API = "v2"
	}
	return h.resolveTuning(r)
}

// resolveTuning fills and checks the tuning values.
func (h *Handler) resolveTuning(r *resolved) error {
	var err error
	if r.refreshInterval, err = durationIn("refresh_interval", h.RefreshInterval, defaultRefreshInterval, refreshIntervalRange); err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	if r.loginTimeout, err = durationIn("login_timeout", h.LoginTimeout, defaultLoginTimeout, loginTimeoutRange); err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	switch {
	case h.RetryBodyLimit < 0 || h.RetryBodyLimit > maxRetryBodyLimit:
		return fmt.Errorf("lpauth: retry_body_limit must be between 1 and %d bytes (64MiB), got %d", int64(maxRetryBodyLimit), h.RetryBodyLimit)
	case h.RetryBodyLimit == 0:
		r.retryBodyLimit = defaultRetryBodyLimit
	default:
		r.retryBodyLimit = h.RetryBodyLimit
	}
	h.RetryBodyLimit = r.retryBodyLimit
	return nil
}

// authSchemeOf reads auth_scheme: a word of token68 characters (default
// Bearer), or none for the bare token. It returns the prefix to put before
// the token: "Bearer ", "" for none.
func authSchemeOf(s string) (string, error) {
	switch {
	case s == "":
		return "Bearer ", nil
	case s == "none":
		return "", nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return "", fmt.Errorf("lpauth: auth_scheme must be a word of letters, digits and -._~+/ (or none), got %q", s)
		}
	}
	return s + " ", nil
}

// durationRange is the values a duration field accepts.
type durationRange struct{ min, max time.Duration }

// The bounds of the session-wide durations. CC asks for a refresh every
// 3-5 min and keeps an idle session 8 h: a refresh every millisecond is a
// storm, one every day lets the session die. A login round trip takes well
// under a second; a login_timeout of 1ns fails every login, one of days lets
// requests hang for days.
var (
	refreshIntervalRange = durationRange{time.Second, 4 * time.Hour}
	loginTimeoutRange    = durationRange{time.Second, 5 * time.Minute}
	anyPositive          = durationRange{1, math.MaxInt64}
)

// durationIn returns v, or def when v is zero; a value outside r is an
// error that names the field and the range.
func durationIn(field string, v caddy.Duration, def time.Duration, r durationRange) (time.Duration, error) {
	d := time.Duration(v)
	switch {
	case d == 0:
		return def, nil
	case d < 0 && r == anyPositive:
		return 0, fmt.Errorf("%s must be positive, got %s", field, d)
	case d < r.min || d > r.max:
		return 0, fmt.Errorf("%s must be between %s and %s, got %s", field, shortDuration(r.min), shortDuration(r.max), d)
	}
	return d, nil
}

// shortDuration writes 4h, 5m, 1s rather than 4h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	for _, zero := range []string{"0s", "0m"} {
		if t, ok := strings.CutSuffix(s, zero); ok && len(t) > 0 && !strings.HasSuffix(t, ".") && t[len(t)-1] >= 'a' {
			s = t
		}
	}
	return s
}

// identityKey is the pool key: everything that makes a different session
// (account, user, credentials, where they are sent) and, in cluster mode, a
// different cluster (the storage config and the encryption key). Hashed so
// that no secret is kept as a map key.
func identityKey(r resolved, storage json.RawMessage) string {
	c := r.creds
	key := "lpauth:" + hashOf(c.AccountID, c.Username, c.Password, c.AppKey, c.Secret,
		c.AccessToken, c.AccessTokenSecret, r.client.CSDS, r.client.Domain,
		r.jwt.ClientID, r.jwt.ClientSecret, r.jwt.API)
	if storage != nil {
		key += "|cluster:" + hashOf(string(storage), string(r.encryptionKey))
	}
	return key
}

// identityFields are the fields of an identity other than account and
// user, each hashed (no secret is kept), in the order an error names the
// first that differs.
type identityFields [][2]string

func identityFieldsOf(r resolved, storage json.RawMessage) identityFields {
	c := r.creds
	var f identityFields
	add := func(name, v string) { f = append(f, [2]string{name, hashOf(v)}) }
	add("password", c.Password)
	add("app_key", c.AppKey)
	add("secret", c.Secret)
	add("access_token", c.AccessToken)
	add("access_token_secret", c.AccessTokenSecret)
	add("csds", r.client.CSDS)
	add("domain", r.client.Domain)
	add("storage", string(storage))
	add("encryption_key", string(r.encryptionKey))
	return f
}

// refuseSecondHolder fails the load of a config (owner) that would hold
// two Login Service sessions of one CC user: CC keeps one session per user,
// so each login would end the other's session.
func refuseSecondHolder(owner any, id identity, fields identityFields) error {
	if id.Kind == appJWTKind {
		return nil
	}
	var err error
	keepers.Range(func(_, v any) bool {
		o := v.(pooledKeeper)
		if o.Identity().Kind == appJWTKind || !o.Identity().SameUser(id) || !o.AttachedTo(owner) {
			return true
		}
		for i, f := range fields {
			if o.fields[i] != f {
				err = fmt.Errorf("lpauth: two lpauth blocks log in to account %s as user %q but differ in %s: "+
					"CC keeps one session per user, so each login would end the other's session; give both blocks the same values",
					id.Account, id.Name, f[0])
				return false
			}
		}
		return true
	})
	return err
}

// hashOf hashes parts unambiguously (each prefixed by its length).
func hashOf(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		fmt.Fprintf(h, "%d:%s|", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}
