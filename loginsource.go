// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// LoginSource is the Login Service source: a user or application login
// gives a bearer, a Session_id cookie and a csrf; a refresh every refresh
// interval keeps the session alive (and answers 401 once it is gone); a
// logout ends it.
type LoginSource struct {
	creds Credentials
}

// NewLoginSource returns the Login Service source for creds.
func NewLoginSource(creds Credentials) *LoginSource { return &LoginSource{creds: creds} }

// Identity names the account and the CC user.
func (l *LoginSource) Identity() Identity {
	return Identity{Account: l.creds.AccountID, Mode: l.creds.Mode(), Name: l.creds.Username}
}

// Obtain logs in.
func (l *LoginSource) Obtain(ctx context.Context, c *Client) (*Credential, error) {
	s, err := c.Login(ctx, l.creds)
	if err != nil {
		return nil, err
	}
	return sessionCredential(s), nil
}

// Check refreshes the session: CC has no other way to ask.
func (l *LoginSource) Check(ctx context.Context, c *Client, cred *Credential) error {
	_, err := l.Renew(ctx, c, cred)
	return err
}

// Renew refreshes the session; a refresh 401 means it is gone.
func (l *LoginSource) Renew(ctx context.Context, c *Client, cred *Credential) (*Credential, error) {
	err := c.Refresh(ctx, l.creds.AccountID, cred.state.(*Session))
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == 401 {
		return nil, &goneError{err}
	}
	if err != nil {
		return nil, err
	}
	return cred, nil
}

// RenewAfter is the refresh interval: CC asks for a refresh every 3-5 min.
func (l *LoginSource) RenewAfter(_ *Credential, refreshInterval time.Duration) time.Duration {
	return refreshInterval
}

// Release logs out.
func (l *LoginSource) Release(ctx context.Context, c *Client, cred *Credential) error {
	return c.Logout(ctx, l.creds.AccountID, cred.state.(*Session))
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
func (l *LoginSource) Encode(cred *Credential) ([]byte, error) {
	s := cred.state.(*Session)
	return json.Marshal(storedSession{Bearer: s.Bearer, CSRF: s.CSRF, SessionID: s.SessionID, BaseURL: s.BaseURL, TTL: s.TTL.Milliseconds()})
}

// Decode rebuilds a stored session with the checks a login reply gets.
func (l *LoginSource) Decode(data []byte) (*Credential, error) {
	var p storedSession
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("stored session: %w", err)
	}
	s, err := newSession(p.Bearer, p.CSRF, p.SessionID, p.BaseURL, time.Duration(p.TTL)*time.Millisecond)
	if err != nil {
		return nil, fmt.Errorf("stored session: %w", err)
	}
	return sessionCredential(s), nil
}

func sessionCredential(s *Session) *Credential {
	return newCredential(s.Bearer, s.BaseURL, s.TTL, s)
}

// goneError marks a renewal that found the credential gone; it keeps the
// server's answer for logs.
type goneError struct{ err error }

func (e *goneError) Error() string { return e.err.Error() }
func (e *goneError) Unwrap() []error {
	return []error{e.err, ErrCredentialGone}
}

// Interface guard
var _ Source = (*LoginSource)(nil)
