// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Source obtains one kind of credential and looks after it: the Login
// Service session (user or application login) is one, an AppJWT from
// Sentinel another. A Keeper drives a Source and adds everything that does
// not depend on the kind: one obtain at a time, invalidation of only the
// credential that failed, the retry policy, timers, cluster storage, status
// and events. A Source holds no state of its own between calls: whatever a
// credential needs later travels inside it.
//
// Every call takes the CC client of the configuration that applies at the
// moment, and a context that bounds it.
type Source interface {
	// Identity names the account and the user or application, for
	// status, logs and metrics. It holds no secret.
	Identity() Identity

	// Obtain gets a new credential.
	Obtain(ctx context.Context, c *Client) (*Credential, error)

	// Check tells whether cred still works, for an upstream 401 that came
	// back with it: nil means alive (the 401 is the endpoint's own); an
	// error that wraps ErrCredentialGone means gone, and a new one is
	// needed; any other error means the source cannot tell now.
	Check(ctx context.Context, c *Client, cred *Credential) error

	// Renew keeps cred alive, or replaces it: it returns the credential to
	// use from now on (cred itself, or a new one). An error that wraps
	// ErrCredentialGone means cred is gone; any other error leaves cred in
	// use until the next renewal.
	Renew(ctx context.Context, c *Client, cred *Credential) (*Credential, error)

	// RenewAfter is how long after obtaining or renewing cred the next
	// renewal is due, given the configured refresh interval.
	RenewAfter(cred *Credential, refreshInterval time.Duration) time.Duration

	// Release ends cred on the server's side. A source with nothing to
	// end (no revocation exists) returns ErrNothingToRelease, so that
	// nobody reports a logout that did not happen.
	Release(ctx context.Context, c *Client, cred *Credential) error

	// Encode and Decode turn the source's part of a credential into bytes
	// and back, for the cluster's shared storage (which encrypts them).
	// Decode checks what it reads as strictly as Obtain checks a reply.
	Encode(cred *Credential) ([]byte, error)
	Decode(data []byte) (*Credential, error)
}

// ErrNothingToRelease is what Release returns for a credential the issuer
// cannot end (an AppJWT: Sentinel has no revocation).
var ErrNothingToRelease = errors.New("nothing to release")

// ErrCredentialGone is wrapped by a Source's Check or Renew error when the
// credential no longer works (a Login Service refresh answered 401).
var ErrCredentialGone = errors.New("credential is gone")

// Identity names whom a credential is for. It holds no secret.
type Identity struct {
	Account string
	Mode    string // "user", "application", ...
	Name    string // the user name, or the client id
}

// SameUser says whether two identities are the same CC user or application,
// whatever their credentials: a login kind of the Login Service may change
// with a rotation, an application token is never a user's.
func (id Identity) SameUser(o Identity) bool {
	return id.Account == o.Account && id.Name == o.Name && (id.Mode == AppJWTMode) == (o.Mode == AppJWTMode)
}

// Credential is what a Source obtained: the token that goes into the
// Authorization header, and the source's own state that keeps it alive. Its
// secret fields are never shown by String.
type Credential struct {
	Token    string    // the bearer or JWT
	Issuer   string    // scheme://host[:port] of the host that issued it
	Obtained time.Time // when this process obtained (or adopted) it

	// Lifetime is how long the credential lives without renewal, as the
	// issuer announced it (0 if it did not).
	Lifetime time.Duration

	// Expires is when the credential stops working whatever happens
	// (zero: no fixed end, it lives as long as it is renewed). One with an
	// end is served until then even if renewing it fails.
	Expires time.Time

	// ClockSkew: its end rested on this host's clock alone and came within
	// a minute or had passed on arrival (an AppJWT's exp, with no shorter
	// expires_in and no iat), which points at this host's clock being
	// ahead of the issuer's; it is renewed a minute after it was obtained.
	ClockSkew bool

	state any // the source's own, e.g. *Session

	// authValue is "Bearer <token>", built once so that the request path
	// does not concatenate.
	authValue  string
	issuerHost string // host[:port] of Issuer
}

// newCredential builds a credential; the source has checked token.
func newCredential(token, issuer string, lifetime time.Duration, state any) *Credential {
	c := &Credential{Token: token, Issuer: issuer, Lifetime: lifetime, state: state, authValue: "Bearer " + token}
	if u, err := url.Parse(issuer); err == nil {
		c.issuerHost = u.Host
	}
	return c
}

// AuthorizationValue is the value of the Authorization header.
func (c *Credential) AuthorizationValue() string { return c.authValue }

// String never shows a secret: a credential can end up in a %v by accident.
func (c *Credential) String() string {
	if c == nil {
		return "<no credential>"
	}
	return fmt.Sprintf("credential from %s obtained %s", c.Issuer, c.Obtained.Format(time.RFC3339))
}

// GoString keeps %#v as safe as %v.
func (c *Credential) GoString() string { return c.String() }
