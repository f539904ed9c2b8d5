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
	UserPid            string `json:"userPid"` // undocumented; node-agent-sdk reads it
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
	delay := e.delayLogins.take()
	e.mu.Unlock()

	// Read the body before sleeping: net/http only notices a vanished
	// client (and cancels the context) once the body has been consumed.
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, maxLoginBody))
	if !sleepCtx(r.Context(), delay) {
		return // the client is gone; nobody reads the answer
	}

	e.mu.Lock()
	if status := e.failLogins.take(); status != 0 {
		retry := e.failLogins.retryAfter
		e.mu.Unlock()
		setRetryAfter(w, retry)
		if status == http.StatusInternalServerError {
			writeJSON(w, status, map[string]string{"error": msgLeLogin})
			return
		}
		e.writeError(w, status, codeInjected, injectedMessage(status))
		return
	}
	if !e.loginRate.allow(e.now()) {
		e.mu.Unlock()
		w.Header().Set("Retry-After", loginRetryAfter)
		e.writeError(w, http.StatusTooManyRequests, codeRateLimited,
			"Too many login attempts, retry after "+loginRetryAfter+" seconds")
		return
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
		e.mu.Lock() // SetPassword may change it
		pw, found := e.users[req.Username]
		e.mu.Unlock()
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
		e.mu.Lock()
		e.counters.LoginsRefused++
		e.mu.Unlock()
		e.writeError(w, http.StatusUnauthorized, codeBadCreds, "Authentication failed: invalid username or credentials")
		return
	}

	s := &session{id: randHex(20), csrf: randHex(32), bearer: randHex(32), loginName: req.Username}
	now := e.now()
	e.mu.Lock()
	ttl := e.ttl
	s.deadline = now.Add(ttl)
	e.endOthersLocked(s, now)
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
			UserPid:            userPid(e.accountID, req.Username),
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

// userPid derives a stable UUID-shaped string for a user, the form of the
// undocumented config.userPid.
func userPid(account, user string) string {
	sum := sha256.Sum256([]byte("pid|" + account + "|" + user))
	h := hex.EncodeToString(sum[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
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

// echo is the data API's answer; it never carries a credential or cookies.
type echo struct {
	Account              string `json:"account"`
	Method               string `json:"method"`
	Path                 string `json:"path"`
	Query                string `json:"query"`
	BodyLength           int64  `json:"body_length"`
	BodySHA256           string `json:"body_sha256"`
	ContentType          string `json:"content_type"`
	AuthorizationPresent bool   `json:"authorization_present"`
	AuthorizationScheme  string `json:"authorization_scheme"` // "Bearer" as sent, or "" for a bare token
	CredentialKind       string `json:"credential_kind"`      // credSession or credAppJWT
	BearerFingerprint    string `json:"bearer_fingerprint"`   // of the credential, whichever kind
	CookiePresent        bool   `json:"cookie_present"`
	UserAgent            string `json:"user_agent"`
	XRequestID           string `json:"x_request_id"`
	LoginName            string `json:"login_name"` // the session's user
	ClientID             string `json:"client_id"`  // the AppJWT's azp
}

// Credential kinds the echo reports.
const (
	credSession = "session"
	credAppJWT  = "app_jwt"
)

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
	if !sleepCtx(r.Context(), delay) || !e.holdData(r.Context()) {
		return
	}

	cred, scheme, hasAuth := credential(r)
	var kind, loginName, clientID, refusal string
	msg := msgBearer
	if id == e.accountID && rest != "always-401" && !strings.HasPrefix(rest, "always-401/") && cred != "" {
		now := e.now()
		e.mu.Lock()
		if e.requireBare && scheme != "" {
			msg = msgBareRequired
		} else if s := e.byBearer[cred]; s != nil {
			if now.After(s.deadline) {
				e.dropLocked(s.id, s)
			} else {
				kind, loginName = credSession, s.loginName
			}
		} else if t := e.tokens[cred]; t != nil && now.Before(t.exp) {
			kind, clientID = credAppJWT, t.clientID
		}
		e.mu.Unlock()
		if kind == "" && msg == msgBearer {
			refusal = e.jwtProblem(cred, now)
		}
	}
	if kind == "" {
		// Drain so a client still uploading sees the 401 rather than a reset.
		_, _ = io.CopyN(io.Discard, r.Body, maxUnauthDrain)
		e.mu.Lock()
		e.counters.UnauthorizedDataCalls++
		e.mu.Unlock()
		if refusal != "" {
			// A JWT-shaped credential gets the messaging APIs' body.
			setUnauthorizedHeaders(w)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"code": 0, "message": refusal})
			return
		}
		e.writeUnauthorized(w, msg)
		return
	}

	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		e.writeError(w, http.StatusBadRequest, codeBadRequest, "Could not read request body")
		return
	}
	e.mu.Lock()
	switch {
	case status >= 200 && status < 300:
		e.counters.DataCalls++
		if kind == credAppJWT {
			e.counters.AppJWTDataCalls++
		}
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
		AuthorizationScheme:  scheme,
		CredentialKind:       kind,
		BearerFingerprint:    BearerFingerprint(cred),
		CookiePresent:        len(r.Cookies()) > 0,
		UserAgent:            r.UserAgent(),
		XRequestID:           r.Header.Get("X-Request-Id"),
		LoginName:            loginName,
		ClientID:             clientID,
	})
}

// BearerFingerprint returns the short fingerprint by which the emulator
// names a credential where it must not show it: the data API's
// bearer_fingerprint and UMSHandshake.BearerFingerprint. It is the first 4
// bytes of the credential's SHA-256 in hex, enough for a test to tell
// which of its tokens was used.
func BearerFingerprint(credential string) string {
	fp := sha256.Sum256([]byte(credential))
	return hex.EncodeToString(fp[:4])
}

// writeUnauthorized refuses a credential as the data API does: 401, the
// envelope with internal code 1 and the headers a client may look at. UMS
// handshakes are refused the same way.
func (e *Emulator) writeUnauthorized(w http.ResponseWriter, msg string) {
	setUnauthorizedHeaders(w)
	e.writeError(w, http.StatusUnauthorized, codeBearer, msg)
}

func setUnauthorizedHeaders(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="ccemu"`)
	w.Header().Set("X-Ccemu-Error", "unauthorized")
}

// credential reads the Authorization header: "Bearer <token>" (the word in
// any case; scheme is the word as sent) or a bare token (no space; scheme
// ""). Any other form yields no credential. present says whether an
// Authorization header was sent at all.
func credential(r *http.Request) (cred, scheme string, present bool) {
	a := r.Header.Get("Authorization")
	if a == "" {
		return "", "", false
	}
	word, tok, ok := strings.Cut(a, " ")
	if !ok {
		return a, "", true
	}
	if !strings.EqualFold(word, "Bearer") {
		return "", "", true
	}
	return strings.TrimSpace(tok), word, true
}
