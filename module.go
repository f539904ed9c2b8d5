// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/internal/cc"
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
	defaultRefreshInterval = 5 * time.Minute
	defaultRetryBodyLimit  = 1 << 20
	defaultLoginTimeout    = 10 * time.Second
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

	keeper     *keeper
	identity   *RequestIdentity
	authPrefix string                     // the auth_scheme word and a space, or "" for the bare token
	authCache  *atomic.Pointer[authValue] // nil for Bearer: the credential's own value serves
	after      *perServer[*afterHandler]  // what the routes after it imply, per server instance
	counters   *requestCounters           // the request path's metrics, resolved at provision
	// placeholders is the provider of the last credential seen.
	placeholders *atomic.Pointer[requestPlaceholders]
	poolKey      string
	logger       *zap.Logger
	// configuredHost is where the identity goes first, as configured
	// (domain, else csds), to tell identities apart in readiness.
	configuredHost string
}

// IdentityVar is the Caddy request variable under which lpauth leaves a
// *RequestIdentity for the handlers and upstream sources after it.
// Exported for other Caddy modules; IdentityFrom reads it for them.
const IdentityVar = "lpauth.identity"

// RequestIdentity tells later handlers which account the request's session
// belongs to and how to reach that account's CC services. It holds no
// secret. Exported for other Caddy modules, which get it with IdentityFrom.
type RequestIdentity struct {
	AccountID string
	keeper    *keeper
}

// String shows the account, for a {http.vars.lpauth.identity} placeholder.
func (ri *RequestIdentity) String() string { return ri.AccountID }

// Client returns the CC client of the session's newest configuration.
func (ri *RequestIdentity) Client() *cc.Client { return ri.keeper.Client() }

// IdentityFrom returns what lpauth left in the request, or nil if no lpauth
// handler ran before. Exported for other Caddy modules (an upstream source
// or a handler after lpauth).
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
func forEachKeeper(f func(*keeper)) {
	keepers.Range(func(_, v any) bool {
		f(v.(pooledKeeper).keeper)
		return true
	})
}

// pooledKeeper lets the usage pool log the session out when the last
// config using it is unloaded.
type pooledKeeper struct {
	*keeper
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
	draining.Store(p.keeper, struct{}{})
	go func() {
		defer releasing.Done()
		defer draining.Delete(p.keeper)
		_ = p.CloseAfterRequests(drainLimit, exitStarted)
	}()
	return nil
}

// draining holds the keepers a reload let go while requests still held
// their credential, until their release is done: out of the pool, but
// still serving those requests, so the admin API lists them.
var draining sync.Map // *keeper -> struct{}

// forEachDraining calls f for every keeper in draining.
func forEachDraining(f func(*keeper)) {
	draining.Range(func(k, _ any) bool {
		f(k.(*keeper))
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
	client, err := cc.NewClient(cfg.client)
	if err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	settings := settings{
		Client:          client,
		RefreshInterval: cfg.refreshInterval,
		LoginTimeout:    cfg.loginTimeout,
		LogoutOnStop:    h.StorageRaw == nil,
		Observer:        h.observer(newEventEmitter(ctx), cfg.refreshInterval),
	}
	if h.LogoutOnStop != nil {
		settings.LogoutOnStop = *h.LogoutOnStop
	}
	var src source = newLoginSource(cfg.creds)
	public, secret := []string{cfg.creds.AccountID, cfg.creds.Username, cfg.creds.AppKey}, cfg.creds.Password
	if cfg.creds.AppKey != "" {
		secret = cfg.creds.Secret
	}
	if cfg.jwt.ClientID != "" {
		src = newAppJWTSource(cfg.jwt)
		settings.LogoutOnStop = false // nothing to release
		public, secret = []string{cfg.jwt.AccountID, "app_jwt", cfg.jwt.ClientID, cfg.jwt.API}, cfg.jwt.ClientSecret
	}
	h.after = new(perServer[*afterHandler])
	h.placeholders = new(atomic.Pointer[requestPlaceholders])
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
	config, err := configOf(ctx)
	if err != nil {
		return err
	}
	if err := refuseSecondHolder(config, src.Identity(), fields); err != nil {
		return err
	}
	settings.CAFile = cfg.client.CAFile
	key := identityKey(cfg, storageRaw)
	val, _, err := keepers.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledKeeper{newKeeper(src, nil, storageRaw != nil), fields}, nil
	})
	if err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	h.poolKey = key
	h.keeper = val.(pooledKeeper).keeper
	if err := attachConfig(ctx, h.keeper, settings); err != nil {
		return err
	}
	h.identity = &RequestIdentity{AccountID: cfg.creds.AccountID, keeper: h.keeper}
	h.counters = newRequestCounters(cfg.creds.AccountID)
	h.configuredHost = cmp.Or(cfg.client.Domain, cfg.client.CSDS, cc.DefaultCSDS)
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

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = pooledKeeper{}
)
