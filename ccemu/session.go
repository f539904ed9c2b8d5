// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type loginRequest struct {
	Username          string `json:"username"`
	Password          string `json:"password"`
	AppKey            string `json:"appKey"`
	Secret            string `json:"secret"`
	AccessToken       string `json:"accessToken"`
	AccessTokenSecret string `json:"accessTokenSecret"`
}

type loginConfig struct {
	LoginName          string `json:"loginName"`
	UserID             string `json:"userId"`
	UserPrivileges     []int  `json:"userPrivileges"`
	ServerCurrentTime  int64  `json:"serverCurrentTime"`
	TimeDiff           int64  `json:"timeDiff"`
	ServerTimeZoneName string `json:"serverTimeZoneName"`
	ServerTimeGMTDiff  int64  `json:"serverTimeGMTDiff"`
	IsLPA              bool   `json:"isLPA"`
	IsAdmin            bool   `json:"isAdmin"`
	AccountTimeZoneID  string `json:"accountTimeZoneId"`
}

type agentGroup struct {
	ID      int    `json:"id"`
	Deleted bool   `json:"deleted"`
	Name    string `json:"name"`
}

type accountData struct {
	AgentGroupsData struct {
		Items    []agentGroup `json:"items"`
		Revision int          `json:"revision"`
	} `json:"agentGroupsData"`
}

// loginResponse keeps the documented key order, bearer last.
type loginResponse struct {
	CSRF                   string      `json:"csrf"`
	WSUK                   string      `json:"wsuk"`
	Config                 loginConfig `json:"config"`
	CSDSCollectionResponse baseURIs    `json:"csdsCollectionResponse"`
	AccountData            accountData `json:"accountData"`
	SessionTTL             string      `json:"sessionTTl"`
	Bearer                 string      `json:"bearer"`
}

func (e *Emulator) login(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPost {
		e.methodNotAllowed(w, http.MethodPost)
		return
	}
	e.mu.Lock()
	e.counters.LoginAttempts++
	e.attempts = append(e.attempts, e.now())
	var delay time.Duration
	if e.delayLogins > 0 {
		e.delayLogins--
		delay = e.delay
	}
	e.mu.Unlock()

	// Read the body before sleeping: net/http only notices a vanished
	// client (and cancels the context) once the body has been consumed.
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxLoginBody))
	if !sleepCtx(r.Context(), delay) {
		return // the client is gone; nobody reads the answer
	}

	e.mu.Lock()
	if status := e.failLogins.take(); status != 0 {
		retry := e.failRetry
		e.mu.Unlock()
		if retry > 0 {
			secs := int64((retry + time.Second - 1) / time.Second)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		}
		if status == http.StatusInternalServerError {
			writeJSON(w, status, map[string]string{"error": msgLeLogin})
			return
		}
		e.writeError(w, status, codeInjected, injectedMessage(status))
		return
	}
	if e.rateN > 0 {
		now := e.now()
		cut := now.Add(-e.rateWindow)
		keep := e.rateLog[:0]
		for _, t := range e.rateLog {
			if t.After(cut) {
				keep = append(keep, t)
			}
		}
		e.rateLog = keep
		if len(e.rateLog) >= e.rateN {
			e.mu.Unlock()
			w.Header().Set("Retry-After", loginRetryAfter)
			e.writeError(w, http.StatusTooManyRequests, codeRateLimited,
				"Too many login attempts, retry after "+loginRetryAfter+" seconds")
			return
		}
		e.rateLog = append(e.rateLog, now)
	}
	e.mu.Unlock()

	if !e.knownAccount(w, id) {
		return
	}
	q := r.URL.Query()
	if v, ok := q["v"]; ok || e.requireVersion {
		if !ok || len(v) != 1 || (v[0] != "1.3" && v[0] != "1.2") {
			e.writeError(w, http.StatusBadRequest, codeBadRequest, "Invalid or missing query parameter v (supported: 1.2, 1.3)")
			return
		}
	}
	var req loginRequest
	if readErr != nil || json.Unmarshal(raw, &req) != nil {
		e.writeError(w, http.StatusBadRequest, codeBadRequest, "Malformed JSON body")
		return
	}
	var ok, app bool
	switch {
	case req.Username != "" && req.Password != "":
		pw, found := e.users[req.Username]
		ok = found && equal(pw, req.Password)
	case req.Username != "" && req.AppKey != "" && req.Secret != "":
		app = true
		for _, a := range e.apps {
			if a.Username == req.Username && equal(a.AppKey, req.AppKey) && equal(a.Secret, req.Secret) {
				ok = true
			}
		}
	default:
		e.writeError(w, http.StatusBadRequest, codeBadRequest,
			"Body must carry username and password, or username, appKey and secret")
		return
	}
	if !ok {
		e.writeError(w, http.StatusUnauthorized, codeBadCreds, "Authentication failed: invalid username or credentials")
		return
	}

	s := &session{id: randHex(20), csrf: randHex(32), bearer: randHex(32), loginName: req.Username}
	now := e.now()
	e.mu.Lock()
	ttl := e.ttl
	s.deadline = now.Add(ttl)
	e.sessions[s.id] = s
	e.byBearer[s.bearer] = s
	e.secrets = append(e.secrets, s.id, s.csrf, s.bearer)
	e.counters.Logins++
	e.mu.Unlock()

	var wsuk [8]byte
	_, _ = rand.Read(wsuk[:])
	privileges := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if app {
		privileges = []int{1, 2, 3}
	}
	resp := loginResponse{
		CSRF: s.csrf,
		WSUK: strconv.FormatUint(binary.BigEndian.Uint64(wsuk[:])%1e15, 10),
		Config: loginConfig{
			LoginName:          req.Username,
			UserID:             numericString(req.Username),
			UserPrivileges:     privileges,
			ServerCurrentTime:  now.UnixMilli(),
			ServerTimeZoneName: "UTC",
			AccountTimeZoneID:  "UTC",
		},
		CSDSCollectionResponse: baseURIs{e.allServices(r)},
		SessionTTL:             strconv.FormatInt(ttl.Milliseconds(), 10),
		Bearer:                 s.bearer,
	}
	resp.AccountData.AgentGroupsData.Items = []agentGroup{{ID: -1, Name: "Main Group"}}
	resp.AccountData.AgentGroupsData.Revision = 1
	setSessionCookie(w, r, s.id, false)
	writeJSON(w, http.StatusOK, resp)
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, id string, clear bool) {
	c := &http.Cookie{Name: sessionCookieName, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil}
	if clear {
		c.Value, c.MaxAge = "", -1
	}
	http.SetCookie(w, c)
}

func injectedMessage(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "Too many login attempts, retry after " + loginRetryAfter + " seconds"
	case http.StatusUnavailableForLegalReasons:
		return "Account or user is blacklisted"
	case http.StatusUnauthorized:
		return "Authentication failed: invalid username or credentials"
	}
	return http.StatusText(status)
}

// sessionCall serves refresh and logout, which share their checks.
func (e *Emulator) sessionCall(w http.ResponseWriter, r *http.Request, id string, logout bool) {
	if r.Method != http.MethodPost {
		e.methodNotAllowed(w, http.MethodPost)
		return
	}
	if !logout && e.failedInjected(w, &e.counters.Refreshes, &e.failRefresh) || !e.knownAccount(w, id) {
		return
	}
	var sid string
	if c, err := r.Cookie(sessionCookieName); err == nil {
		sid = c.Value
	}
	var body struct {
		CSRF string `json:"csrf"`
	}
	bodyErr := decodeBody(r, &body)

	now := e.now()
	e.mu.Lock()
	s := e.sessions[sid]
	if s != nil && now.After(s.deadline) {
		e.dropLocked(sid, s)
		s = nil
	}
	if s == nil {
		e.mu.Unlock()
		e.writeError(w, http.StatusUnauthorized, codeNoSession, msgNoSession)
		return
	}
	if bodyErr != nil || !equal(body.CSRF, s.csrf) {
		e.mu.Unlock()
		e.writeError(w, http.StatusUnauthorized, codeCSRF, msgCSRF)
		return
	}
	if logout {
		e.dropLocked(sid, s)
		e.counters.Logouts++
	} else {
		s.deadline = now.Add(e.ttl)
		e.counters.RefreshesOK++
	}
	e.mu.Unlock()
	setSessionCookie(w, r, sid, logout)
	w.WriteHeader(http.StatusOK)
}

// echo is the data API's answer; it never carries the bearer or cookies.
type echo struct {
	Account              string `json:"account"`
	Method               string `json:"method"`
	Path                 string `json:"path"`
	Query                string `json:"query"`
	BodyLength           int64  `json:"body_length"`
	BodySHA256           string `json:"body_sha256"`
	ContentType          string `json:"content_type"`
	AuthorizationPresent bool   `json:"authorization_present"`
	BearerFingerprint    string `json:"bearer_fingerprint"`
	CookiePresent        bool   `json:"cookie_present"`
	UserAgent            string `json:"user_agent"`
	XRequestID           string `json:"x_request_id"`
	LoginName            string `json:"login_name"`
}

func (e *Emulator) data(w http.ResponseWriter, r *http.Request, id, rest string) {
	q := r.URL.Query()
	var delay time.Duration
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxDataDelay {
			e.writeError(w, http.StatusBadRequest, codeBadRequest, "Invalid query parameter delay (a Go duration, at most 30s)")
			return
		}
		delay = d
	}
	status := http.StatusOK
	if v := q.Get("status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 200 || n > 599 {
			e.writeError(w, http.StatusBadRequest, codeBadRequest, "Invalid query parameter status (200-599)")
			return
		}
		status = n
	}
	if !sleepCtx(r.Context(), delay) {
		return
	}

	bearer, hasAuth := bearerToken(r)
	var loginName string
	ok := false
	if id == e.accountID && rest != "always-401" && !strings.HasPrefix(rest, "always-401/") && bearer != "" {
		now := e.now()
		e.mu.Lock()
		if s := e.byBearer[bearer]; s != nil {
			if now.After(s.deadline) {
				e.dropLocked(s.id, s)
			} else {
				ok, loginName = true, s.loginName
			}
		}
		e.mu.Unlock()
	}
	if !ok {
		// Drain so a client still uploading sees the 401 rather than a reset.
		_, _ = io.CopyN(io.Discard, r.Body, maxUnauthDrain)
		e.mu.Lock()
		e.counters.UnauthorizedDataCalls++
		e.mu.Unlock()
		w.Header().Set("WWW-Authenticate", `Bearer realm="ccemu"`)
		w.Header().Set("X-Ccemu-Error", "unauthorized")
		e.writeError(w, http.StatusUnauthorized, codeBearer, msgBearer)
		return
	}

	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		e.writeError(w, http.StatusBadRequest, codeBadRequest, "Could not read request body")
		return
	}
	fp := sha256.Sum256([]byte(bearer))
	e.mu.Lock()
	switch {
	case status >= 200 && status < 300:
		e.counters.DataCalls++
	case status == http.StatusUnauthorized:
		e.counters.UnauthorizedDataCalls++
	}
	e.mu.Unlock()
	writeJSON(w, status, echo{
		Account:              id,
		Method:               r.Method,
		Path:                 r.URL.Path,
		Query:                r.URL.RawQuery,
		BodyLength:           n,
		BodySHA256:           hex.EncodeToString(h.Sum(nil)),
		ContentType:          r.Header.Get("Content-Type"),
		AuthorizationPresent: hasAuth,
		BearerFingerprint:    hex.EncodeToString(fp[:4]),
		CookiePresent:        len(r.Cookies()) > 0,
		UserAgent:            r.UserAgent(),
		XRequestID:           r.Header.Get("X-Request-Id"),
		LoginName:            loginName,
	})
}

// bearerToken returns the token of an "Authorization: Bearer" header (scheme
// case-insensitive) and whether any Authorization header was sent.
func bearerToken(r *http.Request) (string, bool) {
	a := r.Header.Get("Authorization")
	if a == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(a, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}
