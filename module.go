// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
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
// The session is obtained lazily by the first request that needs it, kept
// alive by periodic refreshes, and logged out when Caddy stops. When
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

	// How often the session is refreshed. Default: 5m
	RefreshInterval caddy.Duration `json:"refresh_interval,omitempty"`

	// The largest request body, in bytes, that is buffered so it can be
	// replayed after a 401. Larger bodies stream through untouched, and a
	// 401 to them goes to the client. Default: 1MiB
	RetryBodyLimit int64 `json:"retry_body_limit,omitempty"`

	// Bound on one login round trip (Domain API lookup included), and on
	// how long a request waits for a login. Default: 10s
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

	keeper   *Keeper
	identity *RequestIdentity
	poolKey  string
	logger   *zap.Logger
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
type pooledKeeper struct{ *Keeper }

// Destruct logs out; failures are already logged through the observer.
func (p pooledKeeper) Destruct() error {
	_ = p.Close()
	return nil
}

// Provision expands placeholders, checks the configuration and joins (or
// creates) the keeper of this identity. It does no network I/O.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
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
	tuning := Tuning{
		Client:          client,
		RefreshInterval: cfg.refreshInterval,
		LoginTimeout:    cfg.loginTimeout,
		Observer:        h.observe,
		LogoutOnStop:    h.StorageRaw == nil,
	}
	if h.LogoutOnStop != nil {
		tuning.LogoutOnStop = *h.LogoutOnStop
	}
	key := identityKey(cfg)
	if h.StorageRaw != nil {
		// The storage config is part of the identity: another storage is
		// another cluster.
		key += "|cluster:" + hashOf(string(h.StorageRaw), string(cfg.encryptionKey))
		storage, err := h.loadStorage(ctx)
		if err != nil {
			return err
		}
		tuning.Shared = newStorageStore(storage, cfg.creds, cfg.client.CSDS, cfg.client.Domain, cfg.encryptionKey)
	} else if cfg.encryptionKey != nil {
		return errors.New("lpauth: encryption_key is only used with storage (cluster mode)")
	}
	val, _, err := keepers.LoadOrNew(key, func() (caddy.Destructor, error) {
		return pooledKeeper{NewKeeper(cfg.creds, nil, tuning)}, nil
	})
	if err != nil {
		return fmt.Errorf("lpauth: %w", err)
	}
	h.poolKey = key
	h.keeper = val.(pooledKeeper).Keeper
	h.keeper.Configure(tuning)
	h.identity = &RequestIdentity{AccountID: cfg.creds.AccountID, keeper: h.keeper}
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
var secretFields = map[string]bool{"password": true, "secret": true, "access_token": true, "access_token_secret": true, "encryption_key": true}

// maxRetryBodyLimit bounds retry_body_limit: buffering more per request than
// this is never what anyone wants, and the arithmetic stays far from overflow.
const maxRetryBodyLimit = 1 << 40

// resolved is the configuration after placeholders and defaults.
type resolved struct {
	creds           Credentials
	client          ClientConfig
	refreshInterval time.Duration
	loginTimeout    time.Duration
	retryBodyLimit  int64
	encryptionKey   []byte
}

// resolve expands `{env.*}` and other global placeholders, fills defaults
// and checks every field; errors name the field.
func (h *Handler) resolve() (resolved, error) {
	var r resolved
	repl := caddy.NewReplacer()
	var firstErr error
	expand := func(field, v string) string {
		if v == "" || firstErr != nil {
			return v
		}
		out, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			if secretFields[field] {
				// The replacer's message quotes the value: an inline
				// secret with braces in it would be echoed. A lone
				// {env.NAME} names only the variable, which is safe.
				if name, ok := strings.CutPrefix(v, "{env."); ok && strings.Count(v, "{") == 1 && strings.HasSuffix(name, "}") {
					err = fmt.Errorf("%s is unset or empty", v)
				} else {
					err = errors.New("a placeholder in it is unknown or empty (give secrets as {env.NAME}; escape literal braces as \\{ \\})")
				}
			}
			firstErr = fmt.Errorf("lpauth: %s: %w", field, err)
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
	c := r.creds
	switch {
	case c.AccountID == "":
		return r, errors.New("lpauth: account_id is required")
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
	var err error
	if r.refreshInterval, err = positiveOr("refresh_interval", h.RefreshInterval, DefaultRefreshInterval); err != nil {
		return r, fmt.Errorf("lpauth: %w", err)
	}
	if r.loginTimeout, err = positiveOr("login_timeout", h.LoginTimeout, DefaultLoginTimeout); err != nil {
		return r, fmt.Errorf("lpauth: %w", err)
	}
	switch {
	case h.RetryBodyLimit < 0 || h.RetryBodyLimit > maxRetryBodyLimit:
		return r, fmt.Errorf("lpauth: retry_body_limit must be between 1 and %d bytes (1TiB), got %d", int64(maxRetryBodyLimit), h.RetryBodyLimit)
	case h.RetryBodyLimit == 0:
		r.retryBodyLimit = DefaultRetryBodyLimit
	default:
		r.retryBodyLimit = h.RetryBodyLimit
	}
	h.RetryBodyLimit = r.retryBodyLimit
	return r, nil
}

// positiveOr returns v, or def when v is zero; a negative v is an error
// that names the field.
func positiveOr(field string, v caddy.Duration, def time.Duration) (time.Duration, error) {
	switch {
	case v < 0:
		return 0, fmt.Errorf("%s must be positive, got %s", field, time.Duration(v))
	case v == 0:
		return def, nil
	}
	return time.Duration(v), nil
}

// identityKey hashes what makes a session: account, user, credentials and
// where they are sent. Hashed so that no secret is kept as a map key.
func identityKey(r resolved) string {
	c := r.creds
	return "lpauth:" + hashOf(c.AccountID, c.Username, c.Password, c.AppKey, c.Secret,
		c.AccessToken, c.AccessTokenSecret, r.client.CSDS, r.client.Domain)
}

// hashOf hashes parts unambiguously (each prefixed by its length).
func hashOf(parts ...string) string {
	h := sha256.New()
	for _, part := range parts {
		fmt.Fprintf(h, "%d:%s|", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ServeHTTP adds the bearer and handles an upstream 401.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	caddyhttp.SetVar(r.Context(), IdentityVar, h.identity)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Set("http.lpauth.account_id", h.identity) // a Stringer: no boxing per request
		repl.Set("http.lpauth.retried", false)
	}
	sess := h.keeper.Current() // the fast path: one atomic load
	if sess == nil {
		var err error
		if sess, err = h.keeper.Session(r.Context()); err != nil {
			return h.unavailable(w, err)
		}
	}
	body, replayable, err := h.bufferBody(r)
	if err != nil {
		return err
	}
	if cur := h.keeper.Current(); cur != nil {
		sess = cur // reading the body may have taken a while
	}
	setAuthorization(r, sess)
	setSessionPlaceholders(repl, sess)

	if !replayable {
		rec := newHoldBackWriter(w, false)
		defer rec.release()
		err := next.ServeHTTP(rec, r)
		if rec.status == http.StatusUnauthorized {
			// Too late to retry this one, but the next requests should
			// find a live session.
			h.countUnauthorized("not_replayable")
			h.keeper.UnauthorizedLater(sess)
		}
		return err
	}

	// What the first attempt may change, kept for a retry: the response
	// header map (a held-back 401 fills it) and the request.
	var before headerSnapshot
	before.take(w.Header())
	var orig requestState
	orig.take(r)
	groups, satisfied := routeGroups(r)
	rec := newHoldBackWriter(w, true)
	defer rec.release()
	err = next.ServeHTTP(rec, r)
	if err != nil || !rec.held {
		return err // streamed through, or nothing written
	}
	late := h.keeper.Current() != sess && h.keeper.Current() != nil
	retry, err := h.keeper.Unauthorized(r.Context(), sess)
	if retry == nil && err == nil {
		h.countUnauthorized("passed")
		return rec.writeHeld() // the 401 is the endpoint's own
	}
	// Nothing of the held-back 401 may leak into what replaces it.
	before.restore(w.Header())
	if err != nil {
		h.countUnauthorized("unavailable")
		return h.unavailable(w, err)
	}
	if late {
		h.countUnauthorized("retried_late")
	} else {
		h.countUnauthorized("retried")
	}
	// The retry runs the same routes on the request as it came: handlers
	// after this one (handle_path, rewrite, request_header) changed it.
	orig.restore(r)
	r.Body = io.NopCloser(bytes.NewReader(body))
	forgetGroupsSince(groups, satisfied)
	setAuthorization(r, retry)
	setSessionPlaceholders(repl, retry)
	if repl != nil {
		repl.Set("http.lpauth.retried", true)
	}
	if c := h.logger.Check(zapcore.DebugLevel, "retrying after upstream 401"); c != nil {
		c.Write(zap.String("account_id", h.identity.AccountID), zap.String("uri", r.RequestURI), zap.Bool("token_already_replaced", late))
	}
	return next.ServeHTTP(w, r)
}

func (h *Handler) countUnauthorized(outcome string) {
	metricUpstream401.WithLabelValues(h.identity.AccountID).Inc()
	metricRetries.WithLabelValues(h.identity.AccountID, outcome).Inc()
}

// requestState is what later handlers may change on a request.
type requestState struct {
	url        url.URL
	requestURI string
	method     string
	host       string
	headerMap  http.Header
	header     headerSnapshot
}

func (s *requestState) take(r *http.Request) {
	s.url, s.requestURI, s.method, s.host, s.headerMap = *r.URL, r.RequestURI, r.Method, r.Host, r.Header
	s.header.take(r.Header)
}

func (s *requestState) restore(r *http.Request) {
	u := s.url
	r.URL, r.RequestURI, r.Method, r.Host, r.Header = &u, s.requestURI, s.method, s.host, s.headerMap
	s.header.restore(r.Header)
}

// headerSnapshot remembers a header map's entries: the value slices
// themselves, not copies, in arrays that stay on the stack for the usual
// small maps. Handlers add values by appending, which leaves the remembered
// slices as they were; a value edited in place (a header replace operation)
// is the one change a restore does not undo.
type headerSnapshot struct {
	n     int
	keys  [16]string
	vals  [16][]string
	spill http.Header // for larger maps
}

func (s *headerSnapshot) take(h http.Header) {
	if len(h) > len(s.keys) {
		s.spill = make(http.Header, len(h))
		for k, v := range h {
			s.spill[k] = v
		}
		return
	}
	for k, v := range h {
		s.keys[s.n], s.vals[s.n] = k, v
		s.n++
	}
}

func (s *headerSnapshot) restore(h http.Header) {
	clear(h)
	for k, v := range s.spill {
		h[k] = v
	}
	for i := range s.n {
		h[s.keys[i]] = s.vals[i]
	}
}

// routeGroupsKey is where Caddy records, per request, the route groups
// already satisfied: of the routes in one group (the Caddyfile's handle
// blocks), only the first matching one runs.
// (Boxed once: a string-typed key passed to Context.Value allocates.)
var routeGroupsKey any = caddy.CtxKey("route_group")

// routeGroups returns the request's group record and the groups satisfied
// before this handler ran (nil when none, the usual case: no allocation).
func routeGroups(r *http.Request) (map[string]struct{}, []string) {
	groups, _ := r.Context().Value(routeGroupsKey).(map[string]struct{})
	if len(groups) == 0 {
		return groups, nil
	}
	satisfied := make([]string, 0, len(groups))
	for g := range groups {
		satisfied = append(satisfied, g)
	}
	return groups, satisfied
}

// forgetGroupsSince drops the groups the first attempt satisfied, so the
// retry runs the same handle block again instead of skipping it.
func forgetGroupsSince(groups map[string]struct{}, satisfied []string) {
	for g := range groups {
		if !slices.Contains(satisfied, g) {
			delete(groups, g)
		}
	}
}

// setAuthorization replaces whatever Authorization the client sent. The
// slice is fresh per request, at the cost of one small allocation: Caddy's
// header replace operations (request_header, header) edit values in place,
// so a slice shared between requests would be a data race.
func setAuthorization(r *http.Request, s *Session) {
	r.Header["Authorization"] = []string{s.authValue}
}

// setSessionPlaceholders sets the placeholders that describe the session.
func setSessionPlaceholders(repl *caddy.Replacer, s *Session) {
	if repl != nil {
		repl.Set("http.lpauth.domain", (*sessionHost)(s))
		repl.Set("http.lpauth.session_age", (*sessionAge)(s))
	}
}

// sessionHost and sessionAge render the placeholders when they are used:
// pointers box into an interface without allocating, strings do not.
type sessionHost Session

func (h *sessionHost) String() string { return h.host }

// sessionAge is the session's age in whole seconds.
type sessionAge Session

func (a *sessionAge) String() string {
	return strconv.FormatInt(int64(time.Since(a.Obtained)/time.Second), 10)
}

// bufferBody reads a body of up to the limit so it can be replayed. A
// larger one is put back together (what was read, then the rest) and
// streamed. It returns the buffered bytes and whether the request can be
// replayed.
func (h *Handler) bufferBody(r *http.Request) ([]byte, bool, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	limit := h.RetryBodyLimit
	if r.ContentLength > limit {
		return nil, false, nil
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		// Trust the client's length only so far: the body may never come.
		buf.Grow(int(min(r.ContentLength, 1<<20)) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, false, caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
		}
		return nil, false, caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("lpauth: reading request body: %w", err))
	}
	if n > limit {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf.Bytes()), r.Body), r.Body}
		return nil, false, nil
	}
	r.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
	return buf.Bytes(), true, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// unavailable answers 503 with Retry-After, as an error handle_errors can
// shape.
func (h *Handler) unavailable(w http.ResponseWriter, err error) error {
	wait := time.Second
	var u *UnavailableError
	if errors.As(err, &u) && u.RetryAfter > wait {
		wait = u.RetryAfter
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	metricUnavailable.WithLabelValues(h.identity.AccountID).Inc()
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}

func (h *Handler) observe(ev Event) {
	recordEvent(ev)
	h.logEvent(ev)
}

// logEvent logs what the keeper reports. No field carries a secret.
func (h *Handler) logEvent(ev Event) {
	fields := []zap.Field{
		zap.String("account_id", ev.Account),
		zap.String("login", ev.Mode),
		zap.String("username", ev.Username),
	}
	if ev.Host != "" {
		fields = append(fields, zap.String("host", ev.Host))
	}
	if ev.Duration > 0 {
		fields = append(fields, zap.Duration("duration", ev.Duration))
	}
	if ev.Err != nil {
		fields = append(fields, zap.Error(ev.Err))
		var apiErr *APIError
		if errors.As(ev.Err, &apiErr) {
			fields = append(fields, zap.Int("status", apiErr.StatusCode))
		}
	}
	switch ev.Kind {
	case EventLogin:
		h.logger.Info("logged in to CC", append(fields, zap.Bool("relogin", ev.Relogin))...)
	case EventLoginFailed:
		fields = append(fields, zap.Int("consecutive_failures", ev.Failures),
			zap.Time("next_attempt", ev.NextAttempt))
		if classify(ev.Err) == failConfig {
			h.logger.Error("CC login refused: check account_id, username and credentials; retrying slowly so the user is not locked", fields...)
		} else {
			h.logger.Warn("CC login failed", fields...)
		}
	case EventRefresh:
		h.logger.Debug("refreshed CC session", fields...)
	case EventRefreshFailed:
		h.logger.Warn("CC session refresh failed; will try again", fields...)
	case EventSessionLost:
		h.logger.Warn("CC session is gone; logging in again", fields...)
	case EventLogout:
		h.logger.Info("logged out of CC", fields...)
	case EventAdopted:
		h.logger.Info("adopted the cluster's CC session", fields...)
	case EventStoreFailed:
		h.logger.Warn("cluster storage failed; continuing on this instance's own", fields...)
	case EventLogoutFailed:
		var apiErr *APIError
		if errors.As(ev.Err, &apiErr) {
			h.logger.Warn("CC logout failed", fields...)
		} else {
			// Typical at shutdown of a one-process demo, whose emulator
			// stops listening first.
			h.logger.Debug("CC logout failed", fields...)
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Destructor            = pooledKeeper{}
)
