// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// loginVersion is the `v` query parameter of the Login Service API.
const loginVersion = "1.3"

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

// Kind names the login flavour, for logs.
func (c Credentials) Kind() string {
	if c.AppKey != "" {
		return "application"
	}
	return "user"
}

// String never shows a secret: Credentials can end up in a %v by accident.
func (c Credentials) String() string {
	return fmt.Sprintf("account %s, %s login as %q", c.AccountID, c.Kind(), c.Username)
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

// NewSession is the one way a session is built, from a login reply or from
// the cluster's storage: the bearer goes into the Authorization header of
// every request, the Session_id into a cookie and the csrf into the refresh
// body, so a broken or hostile value must fail here rather than inject a
// header or break every request. The errors never show the values: they are
// secrets.
func NewSession(bearer, csrf, sessionID, baseURL string, ttl time.Duration) (*Session, error) {
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
	sess, err := NewSession(reply.Bearer, reply.CSRF, sessionID, baseURL, ttl)
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
