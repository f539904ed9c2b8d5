// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package ccemu emulates the parts of LivePerson Conversational Cloud that a
// client of the Login Service needs: the Domain API (CSDS), the Login Service
// (agentVep: login, refresh, logout), Sentinel's application tokens (OAuth
// 2.0 client_credentials, AppJWT), a protected data API that echoes what
// it received and the agent messaging WebSocket (UMS) as far as its login
// contract goes. It is meant for tests (mount it on an
// httptest.Server), for demos and for users who want to exercise their own
// apps without a real account. Besides the standard library it imports
// only github.com/coder/websocket, for the UMS socket: a well-kept library
// does WebSocket framing and the close handshake better than code of ours.
//
// # Endpoints (Emulator.ServeHTTP)
//
//	GET  /api/account/{id}/service/{service}/baseURI.json?version=1.0
//	     {"service":"agentVep","account":"12345678","baseURI":"<host>"}
//	     (or {"baseURIs":[...]} with Config.DomainArrayForm). Also answered
//	     under the legacy prefix /csdr/account/{id}/service/....
//	GET  /api/account/{id}/service/baseURI.json?version=1.0
//	     {"baseURIs":[{"service","account","baseURI"},...]} for every known
//	     service (agentVep, msgHist, facadeMsg, sentinel, ...).
//	     A host set with SetServiceHost replaces the default for its
//	     service in both forms.
//	POST /api/account/{id}/login?v=1.3   (v=1.2 too; missing v accepted
//	     unless Config.RequireVersion)
//	     body {"username","password"} (user login) or
//	     {"username","appKey","secret","accessToken","accessTokenSecret"}
//	     (application login; the two token values are ignored). Answers
//	     the documented body (csrf, wsuk, config, csdsCollectionResponse,
//	     accountData, sessionTTl as a string of ms, bearer) and sets the
//	     Session_id cookie. config also carries the undocumented userPid
//	     (a string) that LivePerson's node-agent-sdk reads.
//	POST /api/account/{id}/refresh       Session_id cookie + {"csrf":"..."};
//	     200 with an empty body; extends the idle deadline to now+TTL.
//	POST /api/account/{id}/logout        same checks; ends the session.
//	ANY  /api/account/{id}/<anything else>
//	     the data API: needs "Authorization: Bearer <credential>" or the
//	     bare "Authorization: <credential>" (only the bare form with
//	     RequireBareToken), where the credential is the bearer of a live
//	     session or a live AppJWT. Answers a JSON echo of the request
//	     (method, path, query, body length and SHA-256, header facts,
//	     credential_kind "session" or "app_jwt", authorization_scheme
//	     "Bearer" as sent or "" for a bare token, a short fingerprint of the
//	     credential; never the credential or cookies).
//	     ?delay=500ms sleeps (max 30s) before the credential is checked;
//	     ?status=418 answers that status on an authorised call;
//	     /api/account/{id}/always-401 always answers 401. An expired,
//	     revoked or foreign JWT answers 401 {"code":0,"message":"jwt
//	     expired"} (or "jwt revoked", "invalid signature", "jwt malformed"),
//	     as CC's messaging APIs do.
//
// Sentinel is served on the host the Domain API names for service
// "sentinel" (the emulator's own host unless SetServiceHost moves it):
//
//	POST /sentinel/api/v2/account/{id}/app/token
//	     Content-Type: application/x-www-form-urlencoded,
//	     body client_id=...&client_secret=...&grant_type=client_credentials.
//	     200 {"access_token":"<JWT>","token_type":"Bearer","expires_in":N}.
//	POST /sentinel/api/account/{id}/app/token?v=1.0&grant_type=client_credentials
//	     v1: body client_id=...&client_secret=...; every parameter may be
//	     in the query or the body (older pages put all four in the query);
//	     v, when present, must be 1.0. 200 without expires_in.
//	GET  /sentinel/well-known/jwks
//	     {"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid","n","e"}]}
//
// UMS, the agent messaging WebSocket, is served on the host the Domain API
// names for services facadeMsg and asyncMessagingEnt (the emulator's own
// host unless SetServiceHost moves them), as CC serves it there:
//
//	GET  /ws_api/account/{id}/messaging/brand/{bearer}?v=2.1   (v=2 too; a
//	     trailing slash after the bearer is the same path; missing v
//	     accepted unless Config.RequireVersion, any other v is a 400)
//	     upgrades to a WebSocket only when {bearer} is the bearer of a live
//	     Login Service session of account {id}. A dead, unknown or foreign
//	     bearer, an AppJWT (not a UMS credential), a wrong {id} and a
//	     FailNextUMSHandshakes answer 401 with the data API's envelope
//	     (internalCode 1) and no upgrade; after Close, 503.
//
// On the socket, text frames carry JSON requests:
// {"kind":"req","id":"1","type":"GetClock"} (or ".GetClock", as
// node-agent-sdk spells it) is answered
// {"kind":"resp","reqId":"1","code":200,"type":"GetClock$Response","body":{"currentTime":<ms>}}
// with Config.Clock's time; any other request gets "code":400 and a body
// {"msg":...} naming the problem. Pings get pongs. A socket closes with
// 4401 "token expired" when its session ends, however it ends (TTL,
// logout, a login of the same user, SetPassword, ExpireSessions, Reset):
// at once where the emulator ends it, and within a sweep period (250 ms)
// when the session only runs past its deadline by Config.Clock. A socket
// with no frame from the client (request, ping or pong) for the UMS idle
// timeout (default 60 s, real time) closes with 1000 "idle". Close closes
// the open sockets with 1001 and stops the sweep; call it when the
// emulator is no longer served.
//
// Both token endpoints also take the client's credentials as HTTP Basic
// (RFC 6749 section 2.3.1, each half form-encoded) instead of the
// client_id/client_secret parameters, so golang.org/x/oauth2/clientcredentials
// works with any AuthStyle; Basic plus client_secret in the parameters is
// refused. A parameter given twice is refused. Only grant_type
// client_credentials is served. The AppJWT is RS256 with header kid and
// claims exp, iat, aud ("le" + account), azp (the client id), scope, iss
// "Sentinel" and a unique jti, signed with an RSA key (2048 bits) the
// emulator generates on first use. Errors are OAuth 2.0 bodies
// {"error":"...","error_description":"..."}: 400 invalid_request (missing
// grant_type, wrong Content-Type, malformed or repeated parameters) or
// unsupported_grant_type, 401 invalid_client (with WWW-Authenticate: Basic),
// 429 too_many_requests with Retry-After, 5xx server_error or
// temporarily_unavailable (injected).
//
// Errors use the Login Service envelope
//
//	{"error":{"time":"Sep 22, 2016 4:10:15 PM","message":"...","internalCode":N,"responseStatus":"UNAUTHORIZED"}}
//
// with internalCode 1 for a rejected bearer, 4 for a missing or expired
// session and 10 for a CSRF mismatch. An injected 500 on login answers the
// real-world string variant {"error":"LeLogin1 failed - ..."}.
//
// # Sessions
//
// The session TTL is idle: a session dies when now > last login or refresh +
// TTL (default 8h). Data calls do not extend it. CC keeps one session per
// user, and so does the emulator: a successful login (user or application
// login) ends every other live session of that user, whose bearer, refresh
// and logout then get 401 as for an unknown session (counted in
// sessions_ended_by_login). AppJWTs are not sessions and are never ended
// this way. Config.MultipleSessions (or SetMultipleSessions) lets a user
// hold several live sessions, for a test that needs them. A session's end
// also closes its UMS sockets with 4401. "Now" is
// Config.Clock's time (real time by default), so a test with a fake clock
// expires sessions and moves the login rate-limit window by advancing it.
//
// # Defaults
//
// Account DefaultAccountID, one user DefaultUsername/DefaultPassword, one
// application login DefaultAppUser/DefaultAppKey/DefaultAppSecret and one
// Sentinel client DefaultClientID/DefaultClientSecret; no login or token rate
// limit; the Domain API points every service at Config.BaseURI or, when that
// is empty, the request's Host so that clients come back to the emulator.
// SetServiceHost points one service elsewhere (another listener, to test
// clients that route per service).
//
// AppJWTs live for the token lifetime (default 1h, Config.TokenLifetime or
// SetTokenLifetime), measured on Config.Clock: a token is refused from
// issue + lifetime on. expires_in is the lifetime in whole seconds and exp
// that instant, both rounded down, so a client never expects more life than
// the token has.
//
// # Knobs
//
// FailNextLogins, DelayNextLogins, FailNextRefreshes, FailNextDomainLookups,
// HoldNextDataCalls, ReleaseDataCalls,
// ExpireSessions, SetPassword, SetSessionTTL, SetLoginRate, SetServiceHost,
// SetMultipleSessions,
// FailNextTokens, DelayNextTokens, SetTokenRate, SetTokenLifetime,
// RevokeTokens, RequireBareToken, FailNextUMSHandshakes and
// SetUMSIdleTimeout change behaviour at run time; Counters,
// LoginAttemptTimes, UMSHandshakes and IssuedSecrets let tests observe it.
// ControlHandler exposes the same knobs (never the secrets) over HTTP.
package ccemu

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults used when the corresponding Config field is empty.
const (
	DefaultAccountID = "12345678"
	DefaultUsername  = "demo-agent"
	DefaultPassword  = "demo-password"
	DefaultAppUser   = "demo-bot"
	DefaultAppKey    = "demo-app-key"
	DefaultAppSecret = "demo-app-secret"

	// DefaultSessionTTL is the documented sessionTTl of 28800000 ms.
	DefaultSessionTTL = 8 * time.Hour
	// DefaultLoginRateWindow is the window LoginRate counts in.
	DefaultLoginRateWindow = time.Minute
	// MaxDataDelay caps the data API's ?delay= parameter.
	MaxDataDelay = 30 * time.Second
)

// Internal codes carried in the error envelope. 1, 4 and 10 are the ones
// clients are likely to look at.
const (
	codeBearer        = 1
	codeBadRequest    = 2
	codeBadCreds      = 3
	codeNoSession     = 4
	codeBadAccount    = 5
	codeRateLimited   = 6
	codeNotFound      = 7
	codeMethod        = 8
	codeInjected      = 9
	codeCSRF          = 10
	loginRetryAfter   = "5" // seconds; the app-login page says wait 5 s after a 429
	maxUnauthDrain    = 128 << 20
	maxLoginBody      = 1 << 20
	sessionCookieName = "Session_id"
)

// Messages clients may match on.
const (
	msgBearer    = "Bearer token is missing, invalid or expired"
	msgNoSession = "Session does not exist or expired"
	msgCSRF      = "CSRF token invalid! The CSRF token on request does not match the CSRF token on the session"
	msgLeLogin   = "LeLogin1 failed - invalid url received from app server"
)

// services is what the all-services lookup lists; every one points at the
// emulator's host.
var services = []string{
	"agentVep", "msgHist", "accountConfigReadOnly", "accountConfigReadWrite",
	"leDataReporting", "facadeMsg", "sentinel", "idp", "smt", "engHistDomain",
	"asyncMessaging", "asyncMessagingEnt", "msdkgw", "msgEwtAPI", "pusher",
	"rtbf", "swift", "faasGW", "faasUI", "messagingRestApiDomain",
	"liveEngageUI", "visitorFeed", "etool",
}

// App is an application (bot) login: the bot user's name plus its API key.
type App struct{ Username, AppKey, Secret string }

// Config configures an Emulator. The zero value is usable.
type Config struct {
	// AccountID is the only account the emulator knows; default DefaultAccountID.
	AccountID string
	// Users maps username to password; nil means {DefaultUsername: DefaultPassword}.
	Users map[string]string
	// Apps are the accepted application logins; nil means one
	// {DefaultAppUser, DefaultAppKey, DefaultAppSecret}.
	Apps []App
	// SessionTTL is the idle TTL; default DefaultSessionTTL. Reported to
	// clients as sessionTTl, a string of milliseconds.
	SessionTTL time.Duration
	// LoginRate is the number of login attempts accepted per LoginRateWindow
	// before 429; 0 means unlimited.
	LoginRate int
	// LoginRateWindow defaults to DefaultLoginRateWindow.
	LoginRateWindow time.Duration
	// BaseURI is the host[:port] the Domain API answers; "" means the
	// request's Host, so clients come back to the emulator.
	BaseURI string
	// DomainArrayForm makes the single-service lookup answer
	// {"baseURIs":[...]} (as the current docs show) instead of the object
	// form real clients read.
	DomainArrayForm bool
	// RequireVersion makes a login or a UMS handshake without ?v= a 400;
	// by default it is accepted.
	RequireVersion bool
	// MultipleSessions lets one user hold several live sessions. By
	// default, as in CC, a successful login ends the user's other sessions.
	MultipleSessions bool
	// Clock is where every reading of the time comes from (session
	// deadlines, the rate-limit windows, login attempt times,
	// serverCurrentTime, the error envelope's time, the iat and exp of
	// AppJWTs and their expiry); nil means real time.
	Clock Clock

	// ClientID and ClientSecret are the one Sentinel application (OAuth 2.0
	// client) the token endpoints accept; empty means DefaultClientID /
	// DefaultClientSecret.
	ClientID, ClientSecret string
	// TokenLifetime is the lifetime of the AppJWTs issued (expires_in, exp
	// - iat); default DefaultTokenLifetime.
	TokenLifetime time.Duration
	// TokenScope is the scope claim of the AppJWTs; default DefaultTokenScope.
	TokenScope string
	// TokenRate is the number of token requests accepted per
	// TokenRateWindow before 429; 0 means unlimited.
	TokenRate int
	// TokenRateWindow defaults to DefaultTokenRateWindow.
	TokenRateWindow time.Duration
	// RequireBareToken makes the data API accept credentials only without
	// the "Bearer " word (see Emulator.RequireBareToken); by default both
	// forms are accepted.
	RequireBareToken bool

	// UMSIdleTimeout is how long a UMS socket may go without a frame from
	// the client before it is closed with 1000 "idle"; default
	// DefaultUMSIdleTimeout (see Emulator.SetUMSIdleTimeout).
	UMSIdleTimeout time.Duration
}

// Counters reports what the emulator has seen since New or Reset.
type Counters struct {
	DomainLookups         int64 `json:"domain_lookups"`
	LoginAttempts         int64 `json:"login_attempts"` // every POST to /login, whatever its outcome
	Logins                int64 `json:"logins"`         // successful logins
	LoginsRefused         int64 `json:"logins_refused"` // logins answered 401 for a wrong username, password, app key or secret
	Refreshes             int64 `json:"refreshes"`      // every refresh call
	RefreshesOK           int64 `json:"refreshes_ok"`
	Logouts               int64 `json:"logouts"`                 // successful logouts
	DataCalls             int64 `json:"data_calls"`              // data API calls answered 2xx
	UnauthorizedDataCalls int64 `json:"unauthorized_data_calls"` // data API calls answered 401
	AppJWTDataCalls       int64 `json:"app_jwt_data_calls"`      // the DataCalls made with an AppJWT
	LiveSessions          int   `json:"live_sessions"`
	// HeldDataCalls is how many data API calls HoldNextDataCalls holds
	// now, before their credential is checked.
	HeldDataCalls int `json:"held_data_calls"`
	// SessionsEndedByLogin counts live sessions ended because their user
	// logged in again (one session per user).
	SessionsEndedByLogin int64 `json:"sessions_ended_by_login"`

	// Sentinel. Every token request counts in TokenRequests and, once
	// answered, in exactly one of the TokenRequests* results: ok (200),
	// invalid_client (401), rate_limited (429), server_error (5xx, i.e.
	// injected) or bad_request (any other 4xx: a bad or missing
	// grant_type, a malformed request, a wrong method).
	TokenRequests              int64 `json:"token_requests"`
	TokenRequestsOK            int64 `json:"token_requests_ok"`
	TokenRequestsInvalidClient int64 `json:"token_requests_invalid_client"`
	TokenRequestsBadRequest    int64 `json:"token_requests_bad_request"`
	TokenRequestsRateLimited   int64 `json:"token_requests_rate_limited"`
	TokenRequestsServerError   int64 `json:"token_requests_server_error"`
	TokensIssued               int64 `json:"tokens_issued"` // AppJWTs signed (equals TokenRequestsOK)
	LiveTokens                 int   `json:"live_tokens"`   // issued, unexpired and not revoked

	// UMS, the agent messaging WebSocket. Every request on its path counts
	// in UMSHandshakes. Every socket opened counts in UMSUpgrades and,
	// once the emulator or the client has ended it, in exactly one of the
	// UMSCloses* counters (counted when the emulator decides to close,
	// before the close frame is sent), so UMSUpgrades = UMSOpenSockets +
	// the UMSCloses* counters.
	UMSHandshakes     int64 `json:"ums_handshakes"`
	UMSHandshake401s  int64 `json:"ums_handshake_401s"` // dead, unknown, foreign or AppJWT token, or FailNextUMSHandshakes
	UMSUpgrades       int64 `json:"ums_upgrades"`
	UMSRequests       int64 `json:"ums_requests"`         // data frames received on sockets
	UMSGetClocks      int64 `json:"ums_get_clocks"`       // GetClock requests answered
	UMSCloses4401     int64 `json:"ums_closes_4401"`      // closed because their session ended
	UMSClosesIdle     int64 `json:"ums_closes_idle"`      // closed 1000 "idle"
	UMSClosesShutdown int64 `json:"ums_closes_shutdown"`  // closed 1001 by Close
	UMSClosesByClient int64 `json:"ums_closes_by_client"` // ended by the client: its close frame or a broken connection
	UMSOpenSockets    int   `json:"ums_open_sockets"`
}

type session struct {
	id, csrf, bearer string
	loginName        string
	deadline         time.Time
}

// Emulator is an in-memory Conversational Cloud. It is safe for concurrent
// use; create it with New.
type Emulator struct {
	accountID       string
	users           map[string]string
	apps            []App
	baseURI         string
	domainArrayForm bool
	requireVersion  bool
	clock           Clock

	mu          sync.Mutex
	ttl         time.Duration
	multiple    bool // MultipleSessions
	loginRate   rateLimit
	sessions    map[string]*session
	byBearer    map[string]*session
	failLogins  injection
	delayLogins delays
	failRefresh injection
	failDomain  injection
	svcHosts    map[string]string // SetServiceHost overrides
	hold        holds             // HoldNextDataCalls
	counters    Counters
	attempts    []time.Time
	secrets     []string

	sentinel // the Sentinel side: application tokens
	ums      umsState
}

// New returns an Emulator configured by cfg; empty fields take the defaults
// documented on Config.
func New(cfg Config) *Emulator {
	e := &Emulator{
		accountID:       cfg.AccountID,
		baseURI:         cfg.BaseURI,
		domainArrayForm: cfg.DomainArrayForm,
		requireVersion:  cfg.RequireVersion,
		clock:           cfg.Clock,
		users:           map[string]string{},
		sessions:        map[string]*session{},
		byBearer:        map[string]*session{},
	}
	if e.accountID == "" {
		e.accountID = DefaultAccountID
	}
	if e.clock == nil {
		e.clock = realClock{}
	}
	if cfg.Users == nil {
		e.users[DefaultUsername] = DefaultPassword
	}
	for u, p := range cfg.Users {
		e.users[u] = p
		e.secrets = append(e.secrets, p)
	}
	if cfg.Users == nil {
		e.secrets = append(e.secrets, DefaultPassword)
	}
	if cfg.Apps == nil {
		e.apps = []App{{DefaultAppUser, DefaultAppKey, DefaultAppSecret}}
	} else {
		e.apps = append([]App(nil), cfg.Apps...)
	}
	for _, a := range e.apps {
		e.secrets = append(e.secrets, a.Secret)
	}
	e.SetSessionTTL(cfg.SessionTTL)
	e.SetLoginRate(cfg.LoginRate, cfg.LoginRateWindow)
	e.multiple = cfg.MultipleSessions
	e.initSentinel(cfg)
	e.ums.open = map[*umsSocket]struct{}{}
	e.SetUMSIdleTimeout(cfg.UMSIdleTimeout)
	return e
}

// now reads the configured clock.
func (e *Emulator) now() time.Time { return e.clock.Now() }

// AccountID returns the account the emulator answers for.
func (e *Emulator) AccountID() string { return e.accountID }

// SetSessionTTL sets the idle TTL for sessions created or refreshed from now
// on; d <= 0 restores DefaultSessionTTL.
func (e *Emulator) SetSessionTTL(d time.Duration) { e.setDuration(&e.ttl, d, DefaultSessionTTL) }

// setDuration sets *p to d, or to def when d <= 0, under e.mu.
func (e *Emulator) setDuration(p *time.Duration, d, def time.Duration) {
	if d <= 0 {
		d = def
	}
	e.mu.Lock()
	*p = d
	e.mu.Unlock()
}

// SetLoginRate limits login attempts to n per window (sliding) and forgets
// earlier attempts; n <= 0 means unlimited and window <= 0 means
// DefaultLoginRateWindow.
func (e *Emulator) SetLoginRate(n int, window time.Duration) {
	e.mu.Lock()
	e.loginRate.set(n, window, DefaultLoginRateWindow)
	e.mu.Unlock()
}

// rateLimit is a sliding-window limit: at most n accepted calls per window.
type rateLimit struct {
	n      int
	window time.Duration
	log    []time.Time // accepted calls still inside the window
}

// set changes the limit and forgets earlier calls, so a new limit starts
// with a clean window; n <= 0 means unlimited, window <= 0 means def.
func (l *rateLimit) set(n int, window, def time.Duration) {
	if window <= 0 {
		window = def
	}
	l.n, l.window, l.log = max(n, 0), window, nil
}

// allow records a call at now and reports whether the limit lets it
// through. The caller holds e.mu.
func (l *rateLimit) allow(now time.Time) bool {
	if l.n <= 0 {
		return true
	}
	cut := now.Add(-l.window)
	keep := l.log[:0]
	for _, t := range l.log {
		if t.After(cut) {
			keep = append(keep, t)
		}
	}
	l.log = keep
	if len(l.log) >= l.n {
		return false
	}
	l.log = append(l.log, now)
	return true
}

// delays is a delay knob: the next left calls wait d.
// holds keeps data API calls waiting until released.
type holds struct {
	left    int           // calls still to hold
	held    int           // calls held now
	release chan struct{} // closed to let them go
}

// HoldNextDataCalls holds the next n data API calls before their
// credential is checked, until ReleaseDataCalls (or the client goes away):
// a test knows a request is upstream, with the credential it carries, once
// Counters().HeldDataCalls says so, and decides when CC answers it.
func (e *Emulator) HoldNextDataCalls(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hold.left = max(n, 0)
	if e.hold.release == nil {
		e.hold.release = make(chan struct{})
	}
}

// ReleaseDataCalls lets every held data API call go on and holds no more.
func (e *Emulator) ReleaseDataCalls() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hold.left = 0
	if e.hold.release != nil {
		close(e.hold.release)
		e.hold.release = nil
	}
}

// holdData waits while the call is to be held; false if the client left.
func (e *Emulator) holdData(ctx context.Context) bool {
	e.mu.Lock()
	if e.hold.left <= 0 || e.hold.release == nil {
		e.mu.Unlock()
		return true
	}
	e.hold.left--
	e.hold.held++
	release := e.hold.release
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.hold.held--
		e.mu.Unlock()
	}()
	select {
	case <-release:
		return true
	case <-ctx.Done():
		return false
	}
}

type delays struct {
	left int
	d    time.Duration
}

// take uses up one delay, if any is left. The caller holds e.mu.
func (k *delays) take() time.Duration {
	if k.left <= 0 {
		return 0
	}
	k.left--
	return k.d
}

// FailNextLogins makes the next n login attempts answer status with the
// error envelope (500 answers the string variant seen in the wild). A status
// outside 400-599 means 500. retryAfter > 0 adds a Retry-After header in whole
// seconds (rounded up). n <= 0 cancels the knob.
func (e *Emulator) FailNextLogins(n int, status int, retryAfter time.Duration) {
	e.arm(&e.failLogins, n, status, retryAfter)
}

// DelayNextLogins makes the next n login attempts wait d before answering; the
// wait ends early when the client goes away. n <= 0 cancels the knob.
func (e *Emulator) DelayNextLogins(n int, d time.Duration) { e.setDelay(&e.delayLogins, n, d) }

// setDelay sets a delay knob; n <= 0 cancels it.
func (e *Emulator) setDelay(knob *delays, n int, d time.Duration) {
	e.mu.Lock()
	*knob = delays{max(n, 0), d}
	e.mu.Unlock()
}

// FailNextRefreshes makes the next n refresh calls answer status (outside
// 400-599 means 500) before any session check. n <= 0 cancels the knob.
func (e *Emulator) FailNextRefreshes(n int, status int) {
	e.arm(&e.failRefresh, n, status, 0)
}

// FailNextDomainLookups makes the next n Domain API lookups (single and
// all-services forms) answer status (outside 400-599 means 500) with the
// error envelope. n <= 0 cancels the knob.
func (e *Emulator) FailNextDomainLookups(n int, status int) {
	e.arm(&e.failDomain, n, status, 0)
}

// SetServiceHost makes the Domain API answer host (host[:port], no scheme)
// for service, in the single and all-services forms, instead of the
// default. A service name the emulator does not list becomes known. host ""
// restores the default (and forgets a service that was not listed).
func (e *Emulator) SetServiceHost(service, host string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if host == "" {
		delete(e.svcHosts, service)
		return
	}
	if e.svcHosts == nil {
		e.svcHosts = map[string]string{}
	}
	e.svcHosts[service] = host
}

// ExpireSessions ends every session as if its TTL had run out and returns how
// many were live.
func (e *Emulator) ExpireSessions() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := e.liveLocked(e.now())
	e.sessions = map[string]*session{}
	e.byBearer = map[string]*session{}
	e.umsSessionEndedLocked(nil)
	return n
}

// SetPassword changes user's password, as CC does when a password is
// rotated: from now on the old password is refused as any wrong password
// is (401, the same body) and the new one logs the user in. With
// endSessions every live session of that user (however it logged in) ends
// at once, as ExpireSessions does for all; without, sessions already open
// stay alive until their TTL. The new password joins IssuedSecrets. An
// unknown user or an empty password is an error.
func (e *Emulator) SetPassword(user, password string, endSessions bool) error {
	_, err := e.setPassword(user, password, endSessions)
	return err
}

// setPassword is SetPassword; it also returns how many live sessions ended.
func (e *Emulator) setPassword(user, password string, endSessions bool) (int, error) {
	if password == "" {
		return 0, errEmptyPassword
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.users[user]; !ok {
		return 0, fmt.Errorf("%w %q", errUnknownUser, user)
	}
	e.users[user] = password
	e.secrets = append(e.secrets, password)
	if !endSessions {
		return 0, nil
	}
	now, ended := e.now(), 0
	for id, s := range e.sessions {
		if s.loginName != user {
			continue
		}
		if !now.After(s.deadline) {
			ended++
		}
		e.dropLocked(id, s)
	}
	return ended, nil
}

// SetMultipleSessions turns CC's one-session-per-user rule off (allowed)
// or back on, for logins from now on.
func (e *Emulator) SetMultipleSessions(allowed bool) {
	e.mu.Lock()
	e.multiple = allowed
	e.mu.Unlock()
}

// endOthersLocked ends the live sessions of keep's user other than keep, as
// CC does at a login unless several are allowed.
func (e *Emulator) endOthersLocked(keep *session, now time.Time) {
	if e.multiple {
		return
	}
	for id, s := range e.sessions {
		if s == keep || s.loginName != keep.loginName {
			continue
		}
		if !now.After(s.deadline) {
			e.counters.SessionsEndedByLogin++
		}
		e.dropLocked(id, s)
	}
}

// SetPassword's errors.
var (
	errEmptyPassword = errors.New("ccemu: empty password")
	errUnknownUser   = errors.New("ccemu: unknown user")
)

// Reset clears the fault knobs, counters, login attempt times, the rate-limit
// histories, the UMS handshake log, all sessions (their UMS sockets close
// with 4401 first) and all AppJWTs. The session TTL, login rate, token
// lifetime, token rate, RequireBareToken, SetMultipleSessions, the UMS idle
// timeout and service hosts stay as set, and IssuedSecrets keeps its
// history because old secrets may still be in logs.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.umsSessionEndedLocked(nil)
	e.ums.failNext, e.ums.log = 0, nil
	e.failLogins, e.delayLogins, e.failRefresh, e.failDomain = injection{}, delays{}, injection{}, injection{}
	if e.hold.release != nil {
		close(e.hold.release) // a held call goes on
	}
	e.hold = holds{}
	e.counters = Counters{}
	e.attempts = nil
	e.loginRate.log = nil
	e.sessions = map[string]*session{}
	e.byBearer = map[string]*session{}
	e.resetSentinelLocked()
}

// Counters returns a snapshot of the counters.
func (e *Emulator) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.counters
	now := e.now()
	c.LiveSessions = e.liveLocked(now)
	c.HeldDataCalls = e.hold.held
	c.LiveTokens = e.liveTokensLocked(now)
	c.UMSOpenSockets = len(e.ums.open)
	return c
}

// LoginAttemptTimes returns the start time of every login attempt, in order.
func (e *Emulator) LoginAttemptTimes() []time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Time(nil), e.attempts...)
}

// IssuedSecrets returns every bearer, csrf, Session_id and AppJWT value ever
// issued plus every configured password, app secret and client secret, so
// tests can check that none of them leaks into logs. It is deliberately not exposed over HTTP.
func (e *Emulator) IssuedSecrets() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.secrets...)
}

// liveLocked counts unexpired sessions and drops expired ones.
func (e *Emulator) liveLocked(now time.Time) int {
	n := 0
	for id, s := range e.sessions {
		if now.After(s.deadline) {
			e.dropLocked(id, s)
			continue
		}
		n++
	}
	return n
}

// dropLocked ends a session, and with it its UMS sockets.
func (e *Emulator) dropLocked(id string, s *session) {
	delete(e.sessions, id)
	delete(e.byBearer, s.bearer)
	e.umsSessionEndedLocked(s)
}

// ServeHTTP answers the Domain API, the Login Service, Sentinel, the data
// API and UMS handshakes.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/account/"):
		p = strings.TrimPrefix(p, "/api/account/")
	case strings.HasPrefix(p, "/sentinel/"):
		e.sentinelCall(w, r, strings.TrimPrefix(p, "/sentinel/"))
		return
	case strings.HasPrefix(p, "/ws_api/"):
		e.umsHandshake(w, r, strings.TrimPrefix(p, "/ws_api/"))
		return
	case strings.HasPrefix(p, "/csdr/account/"):
		// The legacy prefix only ever served the Domain API.
		id, rest, _ := strings.Cut(strings.TrimPrefix(p, "/csdr/account/"), "/")
		if svc, ok := domainPath(rest); ok && id != "" {
			e.domain(w, r, id, svc)
			return
		}
		e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
		return
	default:
		e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
		return
	}
	id, rest, _ := strings.Cut(p, "/")
	if id == "" {
		e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
		return
	}
	if svc, ok := domainPath(rest); ok {
		e.domain(w, r, id, svc)
		return
	}
	switch rest {
	case "login":
		e.login(w, r, id)
	case "refresh":
		e.sessionCall(w, r, id, false)
	case "logout":
		e.sessionCall(w, r, id, true)
	default:
		e.data(w, r, id, rest)
	}
}

// domainPath recognises "service/baseURI.json" (svc "") and
// "service/{svc}/baseURI.json".
func domainPath(rest string) (svc string, ok bool) {
	rest, ok = strings.CutPrefix(rest, "service/")
	if !ok {
		return "", false
	}
	if rest == "baseURI.json" {
		return "", true
	}
	svc, ok = strings.CutSuffix(rest, "/baseURI.json")
	if !ok || svc == "" || strings.Contains(svc, "/") {
		return "", false
	}
	return svc, true
}

type serviceURI struct {
	Service string `json:"service"`
	Account string `json:"account"`
	BaseURI string `json:"baseURI"`
}

type baseURIs struct {
	BaseURIs []serviceURI `json:"baseURIs"`
}

func (e *Emulator) host(r *http.Request) string {
	if e.baseURI != "" {
		return e.baseURI
	}
	if r.Host != "" {
		return r.Host
	}
	return "localhost"
}

// serviceHosts returns a copy of the SetServiceHost overrides.
func (e *Emulator) serviceHosts() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.svcHosts)
}

// allServices lists the known services, then any extra ones that
// SetServiceHost named, in name order. The login reply's
// csdsCollectionResponse uses it too, so both agree.
func (e *Emulator) allServices(r *http.Request) []serviceURI {
	hosts := e.serviceHosts()
	h := e.host(r)
	out := make([]serviceURI, 0, len(services)+len(hosts))
	for _, s := range services {
		out = append(out, serviceURI{s, e.accountID, cmp.Or(hosts[s], h)})
	}
	var extra []string
	for s := range hosts {
		if !slices.Contains(services, s) {
			extra = append(extra, s)
		}
	}
	slices.Sort(extra)
	for _, s := range extra {
		out = append(out, serviceURI{s, e.accountID, hosts[s]})
	}
	return out
}

func (e *Emulator) domain(w http.ResponseWriter, r *http.Request, id, svc string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		e.methodNotAllowed(w, "GET, HEAD")
		return
	}
	if e.failedInjected(w, &e.counters.DomainLookups, &e.failDomain) || !e.knownAccount(w, id) {
		return
	}
	if v := r.URL.Query().Get("version"); v != "" && v != "1.0" {
		e.writeError(w, http.StatusBadRequest, codeBadRequest, "Unsupported version "+v)
		return
	}
	if svc == "" {
		writeJSON(w, http.StatusOK, baseURIs{e.allServices(r)})
		return
	}
	host, set := e.serviceHosts()[svc]
	// Case-sensitive, as in the real Domain API.
	if !set && !slices.Contains(services, svc) {
		e.writeError(w, http.StatusNotFound, codeNotFound, "Service "+svc+" not found")
		return
	}
	if !set {
		host = e.host(r)
	}
	one := serviceURI{svc, e.accountID, host}
	if e.domainArrayForm {
		writeJSON(w, http.StatusOK, baseURIs{[]serviceURI{one}})
		return
	}
	writeJSON(w, http.StatusOK, one)
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait ran.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// failedInjected counts a call and answers it with an injected failure, if
// one is due.
func (e *Emulator) failedInjected(w http.ResponseWriter, counter *int64, f *injection) bool {
	e.mu.Lock()
	*counter++
	status := f.take()
	e.mu.Unlock()
	if status != 0 {
		e.writeError(w, status, codeInjected, http.StatusText(status))
	}
	return status != 0
}

// knownAccount answers 401 for an account the emulator does not serve.
func (e *Emulator) knownAccount(w http.ResponseWriter, id string) bool {
	if id != e.accountID {
		e.writeError(w, http.StatusUnauthorized, codeBadAccount, "Unknown site "+id)
		return false
	}
	return true
}

// injection is a fault knob: the next left calls answer status, with a
// Retry-After of retryAfter where the endpoint supports one.
type injection struct {
	left, status int
	retryAfter   time.Duration
}

// arm sets the knob f under e.mu; a status outside 400-599 means 500, n <= 0
// cancels it.
func (e *Emulator) arm(f *injection, n, status int, retryAfter time.Duration) {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	e.mu.Lock()
	*f = injection{max(n, 0), status, retryAfter}
	e.mu.Unlock()
}

// take uses up one injected failure, if any is left, and returns its
// status (0: none left). The caller holds e.mu.
func (f *injection) take() int {
	if f.left <= 0 {
		return 0
	}
	f.left--
	return f.status
}

// setRetryAfter sets Retry-After to d in whole seconds, rounded up; d <= 0
// sets nothing.
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		secs := int64((d + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
}

// randHex returns n random bytes hex-encoded; crypto/rand.Read never fails
// (it aborts the program instead).
func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func (e *Emulator) methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	e.writeError(w, http.StatusMethodNotAllowed, codeMethod, "Method not allowed")
}

// errTime mimics the Java date format of the documented CSRF error.
const errTimeLayout = "Jan 2, 2006 3:04:05 PM"

type errorBody struct {
	Time           string `json:"time"`
	Message        string `json:"message"`
	InternalCode   int    `json:"internalCode"`
	ResponseStatus string `json:"responseStatus"`
}

// responseStatus turns 429 into "TOO_MANY_REQUESTS", as the Java enum does.
func responseStatus(status int) string {
	t := http.StatusText(status)
	if t == "" {
		return strconv.Itoa(status)
	}
	t = strings.NewReplacer(" ", "_", "-", "_", "'", "").Replace(t)
	return strings.ToUpper(t)
}

func (e *Emulator) writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]errorBody{"error": {
		Time:           e.now().UTC().Format(errTimeLayout),
		Message:        msg,
		InternalCode:   code,
		ResponseStatus: responseStatus(status),
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// errBadBody is returned when a JSON body cannot be decoded.
var errBadBody = errors.New("bad body")

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxLoginBody))
	if err := dec.Decode(v); err != nil {
		return errBadBody
	}
	return nil
}

// numericString derives a stable decimal id from s.
func numericString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return strconv.FormatUint(uint64(binary.BigEndian.Uint32(sum[:4])), 10)
}
