// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultCSDS is the Domain API base of LivePerson Conversational Cloud.
const DefaultCSDS = "https://api.liveperson.net"

// loginVersion is the `v` query parameter of the Login Service API.
const loginVersion = "1.3"

// maxErrorBody bounds how much of an error response is read and kept.
const maxErrorBody = 16 << 10

// maxRetryAfter caps a Retry-After from CC, whether in seconds or a date.
const maxRetryAfter = 24 * time.Hour

// maxSessionTTL caps the sessionTTl CC announces (in ms, a huge value would
// overflow a time.Duration).
const maxSessionTTL = 30 * 24 * time.Hour

// Credentials identify the CC user the proxy acts as. Exactly one of
// Password or AppKey+Secret is set.
type Credentials struct {
	AccountID string
	Username  string
	Password  string // user login

	AppKey            string // application login: OAuth2 client_id (or OAuth1 consumer key)
	Secret            string // OAuth2 client_secret (or OAuth1 consumer secret)
	AccessToken       string // OAuth1 only; empty = "dummy"
	AccessTokenSecret string // OAuth1 only; empty = "dummy"
}

// Mode names the login flavour, for logs.
func (c Credentials) Mode() string {
	if c.AppKey != "" {
		return "application"
	}
	return "user"
}

// String never shows a secret: Credentials can end up in a %v by accident.
func (c Credentials) String() string {
	return fmt.Sprintf("account %s, %s login as %q", c.AccountID, c.Mode(), c.Username)
}

// GoString keeps %#v as safe as %v.
func (c Credentials) GoString() string { return c.String() }

// Session is one logged-in CC session: what the Login Service source keeps
// inside its credential. Its fields are secrets; String redacts them.
type Session struct {
	Bearer    string
	CSRF      string
	SessionID string        // value of the Session_id cookie
	TTL       time.Duration // sessionTTl as CC announced it (0 if absent)
	BaseURL   string        // scheme://host of the agentVep host that issued it
}

// newSession is the one way a session is built, from a login reply or from
// the cluster's storage: the bearer goes into the Authorization header of
// every request, the Session_id into a cookie and the csrf into the refresh
// body, so a broken or hostile value must fail here rather than inject a
// header or break every request. The errors never show the values: they are
// secrets.
func newSession(bearer, csrf, sessionID, baseURL string, ttl time.Duration) (*Session, error) {
	switch {
	case bearer == "":
		return nil, errors.New("no bearer")
	case csrf == "":
		return nil, errors.New("no csrf")
	case sessionID == "":
		return nil, errors.New("no Session_id cookie")
	case !isToken(bearer):
		return nil, errors.New("the bearer has characters not allowed in an HTTP header")
	case !isToken(csrf):
		return nil, errors.New("the csrf has characters not allowed in an HTTP header")
	case !isCookieValue(sessionID):
		return nil, errors.New("the Session_id cookie has characters not allowed in a cookie")
	}
	if u, err := url.Parse(baseURL); err != nil || u.Host == "" {
		return nil, errors.New("no login host")
	}
	return &Session{Bearer: bearer, CSRF: csrf, SessionID: sessionID, BaseURL: baseURL, TTL: min(max(ttl, 0), maxSessionTTL)}, nil
}

// String never shows a secret.
func (s *Session) String() string {
	if s == nil {
		return "<no session>"
	}
	return "session at " + s.BaseURL
}

// GoString keeps %#v as safe as %v.
func (s *Session) GoString() string { return s.String() }

// APIError is a non-2xx answer of the Domain API or the Login Service.
type APIError struct {
	Op             string        // "domain lookup", "login", "refresh", "logout"
	StatusCode     int           // HTTP status
	InternalCode   int           // error.internalCode, 0 if absent
	Message        string        // error.message, or the plain-string error
	ResponseStatus string        // error.responseStatus, if present
	RetryAfter     time.Duration // from the Retry-After header, 0 if absent
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.StatusCode)
	if e.InternalCode != 0 {
		fmt.Fprintf(&b, " (internal code %d)", e.InternalCode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// parseAPIError reads CC's error envelope and its real-world variants:
// {"error":{"time","message","internalCode","responseStatus"}} (time as
// text or ISO, responseStatus optional), {"error":"plain text"}, or a body
// that is not JSON at all. Its text is scrubbed of secrets (see scrub.go).
func parseAPIError(op string, resp *http.Response, body []byte, secrets ...string) *APIError {
	e := &APIError{Op: op, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Error) > 0 {
		// Each field is read on its own, so that one of an unexpected
		// type (a numeric responseStatus) does not lose the others.
		var text string
		var obj struct {
			Message        json.RawMessage `json:"message"`
			InternalCode   json.RawMessage `json:"internalCode"`
			ResponseStatus json.RawMessage `json:"responseStatus"`
		}
		switch {
		case json.Unmarshal(env.Error, &text) == nil:
			e.Message = text
		case json.Unmarshal(env.Error, &obj) == nil:
			e.Message = looseString(obj.Message)
			e.ResponseStatus = looseString(obj.ResponseStatus)
			e.InternalCode = parseLooseInt(obj.InternalCode)
		}
	} else if len(body) > 0 && !bytes.ContainsAny(body, "{}<") {
		e.Message = string(body)
	}
	// CC's text ends up in log lines: no secret, no control characters,
	// bounded.
	e.Message = scrubbed(e.Message, maxErrorText, secrets...)
	e.ResponseStatus = scrubbed(e.ResponseStatus, 64, secrets...)
	return e
}

// maxErrorText bounds the text of an APIError, in runes.
const maxErrorText = 200

// looseString reads a JSON string, or keeps a number or literal as text;
// "" for anything else.
func looseString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// cleanText makes text from outside safe for a log line: invalid UTF-8
// becomes U+FFFD; control characters (CR, LF, ESC, ...), format characters
// (bidi overrides, zero-width) and line separators become spaces; the
// result is trimmed and cut to at most n runes.
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
	return truncate(strings.TrimSpace(s), n)
}

// parseLooseInt accepts 10 or "10": the envelope's producers disagree.
func parseLooseInt(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(s))
	}
	return n
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or
// unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// truncate cuts s to at most n runes (never inside one), marking the cut
// with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	runes := 0
	for i := range s {
		if runes == n {
			return s[:i] + "…"
		}
		runes++
	}
	return s
}

// ClientConfig sets up a Client.
type ClientConfig struct {
	// CSDS is the Domain API base URL; empty = DefaultCSDS.
	CSDS string
	// Domain, when set, is the agentVep host (optionally with a scheme) and
	// the Domain API is not asked.
	Domain string
	// CAFile is an optional PEM bundle trusted in addition to the system
	// roots.
	CAFile string
	// UserAgent is sent on every call.
	UserAgent string
	// Transport overrides the HTTP transport (tests). Nil = a clone of
	// http.DefaultTransport, which honours HTTPS_PROXY and NO_PROXY.
	Transport http.RoundTripper
}

// Client speaks to the Domain API and the Login Service API. It is safe for
// concurrent use and holds no session state of its own.
type Client struct {
	csds      *url.URL
	domain    *url.URL // nil: ask the Domain API
	userAgent string
	http      *http.Client
	clock     Clock // of the login host's Domain API answers; nil = real time
}

// NewClient checks the configuration and builds a client. It does no
// network I/O.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.CSDS == "" {
		cfg.CSDS = DefaultCSDS
	}
	csds, err := validateHost(cfg.CSDS, "", hostConfigured)
	if err != nil {
		return nil, fmt.Errorf("csds: %w", err)
	}
	c := &Client{csds: csds, userAgent: cfg.UserAgent}
	if cfg.Domain != "" {
		if c.domain, err = validateHost(cfg.Domain, csds.Scheme, hostConfigured); err != nil {
			return nil, fmt.Errorf("domain: %w", err)
		}
	}
	rt := cfg.Transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.CAFile != "" {
			pool, err := loadCAFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		rt = tr
	}
	// No cookie jar: Session_id is sent explicitly, so a jar's Secure and
	// domain rules cannot silently drop it.
	c.http = &http.Client{
		Transport: rt,
		// CC's login endpoints do not redirect; following one could
		// send credentials somewhere unexpected.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// CloseIdleConnections releases pooled connections, for a client that is
// being replaced.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

type loginRequest struct {
	Username          string `json:"username"`
	Password          string `json:"password,omitempty"`
	AppKey            string `json:"appKey,omitempty"`
	Secret            string `json:"secret,omitempty"`
	AccessToken       string `json:"accessToken,omitempty"`
	AccessTokenSecret string `json:"accessTokenSecret,omitempty"`
}

type loginReply struct {
	Bearer     string          `json:"bearer"`
	CSRF       string          `json:"csrf"`
	SessionTTL json.RawMessage `json:"sessionTTl"`
}

// Login performs a user or application login and returns the new session.
func (c *Client) Login(ctx context.Context, cr Credentials) (*Session, error) {
	base, err := c.LoginBaseURL(ctx, cr.AccountID)
	if err != nil {
		return nil, err
	}
	req := loginRequest{Username: cr.Username}
	if cr.AppKey != "" {
		req.AppKey, req.Secret = cr.AppKey, cr.Secret
		req.AccessToken, req.AccessTokenSecret = orDummy(cr.AccessToken), orDummy(cr.AccessTokenSecret)
	} else {
		req.Password = cr.Password
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	body, resp, err := c.do(ctx, "login", http.MethodPost, c.accountURL(base, cr.AccountID, "login")+"?v="+loginVersion, payload, "",
		cr.Password, cr.Secret, cr.AccessToken, cr.AccessTokenSecret)
	if err != nil {
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			c.ForgetDomain(cr.AccountID)
		}
		return nil, err
	}
	sess, err := parseLoginReply(body, resp.Cookies(), base)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return sess, nil
}

// parseLoginReply reads a login answer's body and its Session_id cookie.
func parseLoginReply(body []byte, cookies []*http.Cookie, baseURL string) (*Session, error) {
	var reply loginReply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, fmt.Errorf("reply is not JSON: %w", err)
	}
	var sessionID string
	for _, ck := range cookies {
		if ck.Name == "Session_id" {
			sessionID = ck.Value
		}
	}
	var ttl time.Duration
	if ms := parseLooseInt(reply.SessionTTL); ms > 0 {
		ttl = maxSessionTTL
		if int64(ms) < int64(maxSessionTTL/time.Millisecond) {
			ttl = time.Duration(ms) * time.Millisecond
		}
	}
	sess, err := newSession(reply.Bearer, reply.CSRF, sessionID, baseURL, ttl)
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return sess, nil
}

// isToken reports whether s is visible ASCII only (no space, no control, no
// non-ASCII byte), as a token in a header must be.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// isCookieValue reports whether s is RFC 6265 cookie-octets only, so that it
// is sent back exactly as received (Go quotes or drops anything else).
func isCookieValue(s string) bool {
	return isToken(s) && !strings.ContainsAny(s, `",;\`)
}

func orDummy(s string) string {
	if s == "" {
		return "dummy"
	}
	return s
}

// Refresh keeps the session alive. An *APIError with status 401 means the
// session is gone.
func (c *Client) Refresh(ctx context.Context, account string, s *Session) error {
	return c.sessionCall(ctx, "refresh", account, s)
}

// Logout ends the session on CC's side.
func (c *Client) Logout(ctx context.Context, account string, s *Session) error {
	return c.sessionCall(ctx, "logout", account, s)
}

func (c *Client) sessionCall(ctx context.Context, op, account string, s *Session) error {
	payload, err := json.Marshal(struct {
		CSRF string `json:"csrf"`
	}{s.CSRF})
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	_, _, err = c.do(ctx, op, http.MethodPost, c.accountURL(s.BaseURL, account, op)+"?v="+loginVersion, payload, s.SessionID,
		s.SessionID, s.CSRF, s.Bearer)
	return err
}

func (c *Client) accountURL(base, account, method string) string {
	return base + "/api/account/" + url.PathEscape(account) + "/" + method
}

// do sends one request and returns the body of a 2xx answer, or an
// *APIError whose text is scrubbed of secrets, the values the request
// carried that an answer might quote. Transport errors are wrapped with op;
// the URL they name holds no secret.
func (c *Client) do(ctx context.Context, op, method, target string, payload []byte, sessionID string, secrets ...string) ([]byte, *http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if sessionID != "" {
		req.AddCookie(&http.Cookie{Name: "Session_id", Value: sessionID})
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	limit := int64(maxErrorBody)
	if resp.StatusCode/100 == 2 {
		limit = 4 << 20 // a login reply carries account data; bound it anyway
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading reply: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, nil, parseAPIError(op, resp, data, secrets...)
	}
	return data, resp, nil
}
