// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Handler{})
	caddy.OnExit(func(context.Context) {
		close(exitStarted) // see releasing
		releasing.Wait()
	})
}

// Defaults of the tuning fields.
const (
	DefaultRefreshInterval = 5 * time.Minute
	DefaultRetryBodyLimit  = 1 << 20
	DefaultLoginTimeout    = 10 * time.Second
)

// keepers holds one session keeper per identity. It keeps state across
// config changes: a `caddy reload` with the same identity, and several
// sites with the same identity, share one session.
var keepers = caddy.NewUsagePool()

// Handler logs in to LivePerson Conversational Cloud (CC) and adds
// `Authorization: Bearer <token>` to every request it passes on, replacing
// any Authorization header the client sent. Put it in front of
// `reverse_proxy` to a CC API.
//
// The session is obtained as the config starts (in the background; never
// at provision, so `caddy validate` contacts nothing), kept alive by
// periodic refreshes, and logged out when Caddy stops. When
// upstream answers 401, the handler asks CC whether the session is still
// alive; if not, it logs in again (once, however many requests saw the 401)
// and retries each request once with its buffered body. A 401 that is about
// the endpoint itself (the session is alive) goes to the client.
//
// When no session can be had (CC is down, the credentials are wrong, a
// login is backing off), the handler answers 503 Service Unavailable with a
// `Retry-After` header, as an error that `handle_errors` can shape.
type Handler struct {
	// The CC account (site) id. Required.
	AccountID string `json:"account_id,omitempty"`

	// The CC user: an agent for user login, the bot user for application
	// login. Required.
	Username string `json:"username,omitempty"`

	// The user's password, for user login. Give it as `{env.NAME}` so it
	// never lands in the config. Exactly one of password or app_key+secret.
	Password string `json:"password,omitempty"`

	// Application login: the OAuth2 client_id (or OAuth1 consumer key).
	AppKey string `json:"app_key,omitempty"`

	// Application login: the OAuth2 client_secret (or OAuth1 consumer
	// secret). Give it as `{env.NAME}`.
	Secret string `json:"secret,omitempty"`

	// OAuth1 application login only. Default: "dummy" (the OAuth2 form).
	AccessToken string `json:"access_token,omitempty"`

	// OAuth1 application login only. Default: "dummy" (the OAuth2 form).
	AccessTokenSecret string `json:"access_token_secret,omitempty"`

	// The Domain API base URL. Hosts found through it are spoken to with
	// its scheme. Plain http is accepted only for loopback hosts.
	// Default: https://api.liveperson.net
	CSDS string `json:"csds,omitempty"`

	// The agentVep (login) host, as host[:port] or a URL. When set, the
	// Domain API is not asked. Without a scheme it takes that of csds.
	Domain string `json:"domain,omitempty"`

	// How often the session is refreshed, between 1s and 4h. Default: 5m
	RefreshInterval caddy.Duration `json:"refresh_interval,omitempty"`

	// The largest request body, in bytes, that is buffered so it can be
	// replayed after a 401, at most 64MiB. Larger bodies stream through
	// untouched, and a 401 to them goes to the client. Default: 1MiB
	RetryBodyLimit int64 `json:"retry_body_limit,omitempty"`

	// Bound on one login round trip (Domain API lookup included), and on
	// how long a request waits for a login, between 1s and 5m. Default: 10s
	LoginTimeout caddy.Duration `json:"login_timeout,omitempty"`

	// A PEM file of extra CA certificates trusted for CC, beside the system
	// roots (for corporate TLS proxies).
	CAFile string `json:"ca_file,omitempty"`

	// Cluster mode: the Caddy instances that share this storage share one
	// CC session (one login, one refresh per interval) instead of logging
	// in each on its own. `{}` means Caddy's configured storage (the
	// Caddyfile's `storage` with no argument); otherwise a caddy.storage
	// module, e.g. {"module": "redis", ...}. Default: off.
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`

	// Cluster mode: the key that encrypts the stored session, 32 bytes in
	// base64 or hex (`openssl rand -base64 32`), given as `{env.NAME}`.
	// Default: a key derived from the password or secret with scrypt, so
	// that only instances holding the same credentials can read it.
	EncryptionKey string `json:"encryption_key,omitempty"`

	// Whether stopping Caddy logs the session out. Default: true; false in
	// cluster mode, where the other instances still use the session.
	LogoutOnStop *bool `json:"logout_on_stop,omitempty"`

	// AppJWT: the OAuth 2.0 client id of an application token from
	// Sentinel, for the CC APIs that take only that (Proactive Messaging,
	// the Connector API, v2-scoped APIs). With it no username, password or
	// app_key; refresh_interval and logout_on_stop do not apply (the token
	// is renewed at 80% of its lifetime; Sentinel has no revocation).
	ClientID string `json:"client_id,omitempty"`

	// AppJWT: the OAuth 2.0 client secret. Give it as `{env.NAME}`.
	ClientSecret string `json:"client_secret,omitempty"`

	// AppJWT: Sentinel's token endpoint version, v1 or v2. Default: v2
	SentinelAPI string `json:"sentinel_api,omitempty"`

	// The word before the token in the Authorization header, for any
	// identity: letters, digits and -._~+/, or "none" for the bare token
	// (some CC examples send an AppJWT so). Default: Bearer
	AuthScheme string `json:"auth_scheme,omitempty"`

	keeper     *Keeper
	identity   *RequestIdentity
	authPrefix string                     // the auth_scheme word and a space, or "" for the bare token
	authCache  *atomic.Pointer[authValue] // nil for Bearer: the credential's own value serves
	inner      *innerPlace                // which later handlers bring their own credential
	poolKey    string
	logger     *zap.Logger
	// configuredHost is where the identity goes first, as configured
	// (domain, else csds), to tell identities apart in readiness.
	configuredHost string
}

// IdentityVar is the Caddy request variable under which lpauth leaves a
// *RequestIdentity for the handlers and upstream sources after it.
const IdentityVar = "lpauth.identity"

// RequestIdentity tells later handlers which account the request's session
// belongs to and how to reach that account's CC services. It holds no
// secret.
type RequestIdentity struct {
	AccountID string
	keeper    *Keeper
}

// String shows the account, for a {http.vars.lpauth.identity} placeholder.
func (ri *RequestIdentity) String() string { return ri.AccountID }

// Client returns the CC client of the session's newest configuration.
func (ri *RequestIdentity) Client() *Client { return ri.keeper.Client() }

// IdentityFrom returns what lpauth left in the request, or nil if no lpauth
// handler ran before.
func IdentityFrom(r *http.Request) *RequestIdentity {
	ri, _ := caddyhttp.GetVar(r.Context(), IdentityVar).(*RequestIdentity)
	return ri
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.lpauth",
		New: func() caddy.Module { return new(Handler) },
	}
}

// forEachKeeper calls f for every live keeper.
func forEachKeeper(f func(*Keeper)) {
	keepers.Range(func(_, v any) bool {
		f(v.(pooledKeeper).Keeper)
		return true
	})
}

// pooledKeeper lets the usage pool log the session out when the last
// config using it is unloaded.
type pooledKeeper struct {
	*Keeper
	fields identityFields // what made its identity, hashed
}

// drainLimit bounds how long the release of a keeper whose configuration was
// unloaded by a reload waits for the requests that still hold its
// credential: Caddy cleans up the old configuration at once, with its
// requests in flight, and a logout would fail them.
const drainLimit = 30 * time.Second

// releasing counts keepers releasing in the background after a reload;
// exiting stops their wait (the servers have finished every request by
// then) and the process waits for the releases.
var (
	releasing   sync.WaitGroup
	exitStarted = make(chan struct{})
)

// Destruct logs out once no request holds the session; failures are logged
// through the observer. After a reload with requests still in flight that
// happens in the background, up to drainLimit later; otherwise at once.
func (p pooledKeeper) Destruct() error {
	if caddy.Exiting() || p.InFlight() <= 0 {
		_ = p.Close()
		return nil
	}
	releasing.Add(1)
	draining.Store(p.Keeper, struct{}{})
	go func() {
		defer releasing.Done()
		defer draining.Delete(p.Keeper)
		_ = p.CloseAfterRequests(drainLimit, exitStarted)
	}()
	return nil
}

// draining holds the keepers a reload let go while requests still held
// their credential, until their release is done: out of the pool, but
// still serving those requests, so the admin API lists them.
var draining sync.Map // *Keeper -> struct{}

// forEachDraining calls f for every keeper in draining.
func forEachDraining(f func(*Keeper)) {
	draining.Range(func(k, _ any) bool {
		f(k.(*Keeper))
		return true
	})
}

// Provision expands placeholders, checks the configuration and joins (or
// creates) the keeper of this identity. It does no network I/O. Its
// session-wide settings and instances apply once this config starts.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if bytes.Equal(bytes.TrimSpace(h.StorageRaw), []byte("null")) {
		h.StorageRaw = nil // JSON null is absent, as for every field: no cluster mode
	}
	// Loading the storage module empties StorageRaw: the identity keeps
	// the config as it was given.
	storageRaw := h.StorageRaw
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("lpauth: metrics: %w", err)
	}
	cfg, err := h.resolve()
	if err != nil {
		return err
	}
	client, err := NewClient(cfg.client)
	if err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	settings := Settings{
		Client:          client,
		RefreshInterval: cfg.refreshInterval,
		LoginTimeout:    cfg.loginTimeout,
		LogoutOnStop:    h.StorageRaw == nil,
		Observer:        h.observer(newEventEmitter(ctx), cfg.refreshInterval),
	}
	if h.LogoutOnStop != nil {
		settings.LogoutOnStop = *h.LogoutOnStop
	}
	var src Source = NewLoginSource(cfg.creds)
	public, secret := []string{cfg.creds.AccountID, cfg.creds.Username, cfg.creds.AppKey}, cfg.creds.Password
	if cfg.creds.AppKey != "" {
		secret = cfg.creds.Secret
	}
	if cfg.jwt.ClientID != "" {
		src = NewAppJWTSource(cfg.jwt)
		settings.LogoutOnStop = false // nothing to release
		public, secret = []string{cfg.jwt.AccountID, "app_jwt", cfg.jwt.ClientID, cfg.jwt.API}, cfg.jwt.ClientSecret
	}
	h.inner = new(innerPlace)
	h.authPrefix = cfg.authScheme
	if h.authPrefix != "Bearer " {
		h.authCache = new(atomic.Pointer[authValue])
	}
	if h.StorageRaw != nil {
		storage, err := h.loadStorage(ctx)
		if err != nil {
			return err
		}
		settings.Store = clusterStore(storage, cfg.creds.AccountID, append(public, cfg.client.CSDS, cfg.client.Domain), secret, cfg.encryptionKey)
	} else if cfg.encryptionKey != nil {
		return errors.New("lpauth: encryption_key is only used with storage (cluster mode)")
	}
	fields := identityFieldsOf(cfg, storageRaw)
	if err := refuseSecondHolder(ctx.GetMetricsRegistry(), src.Identity(), fields); err != nil {
		return err
	}
	settings.CAFile = cfg.client.CAFile
	key := identityKey(cfg, storageRaw)
	val, _, err := keepers.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledKeeper{NewKeeper(src, nil, storageRaw != nil), fields}, nil
	})
	if err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	h.poolKey = key
	h.keeper = val.(pooledKeeper).Keeper
	if err := attachConfig(ctx, h.keeper, settings); err != nil {
		return err
	}
	h.identity = &RequestIdentity{AccountID: cfg.creds.AccountID, keeper: h.keeper}
	h.configuredHost = cmp.Or(cfg.client.Domain, cfg.client.CSDS, DefaultCSDS)
	return nil
}

// loadStorage returns the cluster's storage: Caddy's configured one for
// `{}`, else the named caddy.storage module.
func (h *Handler) loadStorage(ctx caddy.Context) (certmagic.Storage, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(h.StorageRaw, &probe); err != nil {
		return nil, fmt.Errorf("lpauth: storage: %w", err)
	}
	if len(probe) == 0 {
		return ctx.Storage(), nil
	}
	if _, ok := probe["module"]; !ok {
		return nil, errors.New(`lpauth: storage: missing "module" (or give {} for Caddy's configured storage)`)
	}
	mod, err := ctx.LoadModule(h, "StorageRaw")
	if err != nil {
		return nil, fmt.Errorf("lpauth: storage: %w", err)
	}
	conv, ok := mod.(caddy.StorageConverter)
	if !ok {
		return nil, fmt.Errorf("lpauth: storage: module %T is not a storage module", mod)
	}
	storage, err := conv.CertMagicStorage()
	if err != nil {
		return nil, fmt.Errorf("lpauth: storage: %w", err)
	}
	return storage, nil
}

// clusterStore is where the cluster of an identity keeps its credential:
// the blob is named after the identity's public parts (account, user or
// client id, hosts), and its key is derived from the identity's own secret
// unless an encryption_key is given.
func clusterStore(storage certmagic.Storage, account string, public []string, secret string, encryptionKey []byte) *storageStore {
	return newStorageStore(storage, account, hashOf(public...), []byte(secret), encryptionKey)
}

// Cleanup releases this config's hold on the keeper; the last one to go
// logs the session out.
func (h *Handler) Cleanup() error {
	if h.poolKey == "" {
		return nil
	}
	_, err := keepers.Delete(h.poolKey)
	h.poolKey = ""
	return err
}

// secretFields are the fields whose values must never be shown.
var secretFields = map[string]bool{"password": true, "secret": true, "access_token": true, "access_token_secret": true, "encryption_key": true, "client_secret": true}

// maxRetryBodyLimit bounds retry_body_limit. A buffered body costs about its
// size in RSS and up to about 2.7x while the buffer grows, so one request at
// the ceiling costs under 200 MiB and a few at once stay far below the
// machine; larger bodies are streamed, which costs nothing per byte.
const maxRetryBodyLimit = 64 << 20

// resolved is the configuration after placeholders and defaults.
type resolved struct {
	creds           Credentials
	client          ClientConfig
	refreshInterval time.Duration
	loginTimeout    time.Duration
	retryBodyLimit  int64
	encryptionKey   []byte
	jwt             AppJWTConfig // client_id set: an AppJWT instead of a login
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
	r.creds = Credentials{
		AccountID:         expand("account_id", h.AccountID),
		Username:          expand("username", h.Username),
		Password:          expand("password", h.Password),
		AppKey:            expand("app_key", h.AppKey),
		Secret:            expand("secret", h.Secret),
		AccessToken:       expand("access_token", h.AccessToken),
		AccessTokenSecret: expand("access_token_secret", h.AccessTokenSecret),
	}
	r.client = ClientConfig{
		CSDS:      expand("csds", h.CSDS),
		Domain:    expand("domain", h.Domain),
		CAFile:    expand("ca_file", h.CAFile),
		UserAgent: "caddy-lpauth",
	}
	r.jwt = AppJWTConfig{
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
		k, err := ParseEncryptionKey(encKey)
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
	if r.refreshInterval, err = durationIn("refresh_interval", h.RefreshInterval, DefaultRefreshInterval, refreshIntervalRange); err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	if r.loginTimeout, err = durationIn("login_timeout", h.LoginTimeout, DefaultLoginTimeout, loginTimeoutRange); err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	switch {
	case h.RetryBodyLimit < 0 || h.RetryBodyLimit > maxRetryBodyLimit:
		return fmt.Errorf("lpauth: retry_body_limit must be between 1 and %d bytes (64MiB), got %d", int64(maxRetryBodyLimit), h.RetryBodyLimit)
	case h.RetryBodyLimit == 0:
		r.retryBodyLimit = DefaultRetryBodyLimit
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
func refuseSecondHolder(owner any, id Identity, fields identityFields) error {
	if id.Mode == AppJWTMode {
		return nil
	}
	var err error
	keepers.Range(func(_, v any) bool {
		o := v.(pooledKeeper)
		if o.Identity().Mode == AppJWTMode || !o.Identity().SameUser(id) || !o.AttachedTo(owner) {
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = pooledKeeper{}
)
