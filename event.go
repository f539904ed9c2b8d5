// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"fmt"
	"time"
)

// eventKind names what happened to the session.
type eventKind int

// The events a keeper reports.
const (
	eventLogin         eventKind = iota // a login succeeded
	eventLoginFailed                    // a login failed; NextAttempt says when the next one may start
	eventRefresh                        // a refresh succeeded
	eventRefreshFailed                  // a refresh failed, but the session may still be alive
	eventSessionLost                    // CC said the session is gone (refresh 401); a re-login follows
	eventLogout                         // logout succeeded
	eventLogoutFailed                   // logout failed
	eventAdopted                        // cluster mode: took the session another instance obtained
	eventStoreFailed                    // cluster mode: the shared storage failed; working on our own
)

var eventNames = [...]string{"login", "login failed", "refresh", "refresh failed", "session lost", "logout", "logout failed", "adopted", "store failed"}

func (k eventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// event is one thing that happened to a keeper's session. It carries no
// secret.
type event struct {
	Kind        eventKind
	Account     string
	LoginKind   string // the identity's Kind: "user", "application" or "app_jwt"
	Username    string
	Host        string        // agentVep base URL, when known
	Err         error         // for failures
	Duration    time.Duration // of the round trip
	Failures    int           // consecutive failed logins
	NextAttempt time.Time     // for eventLoginFailed, and eventSessionLost that starts the conflict wait
	Relogin     bool          // for eventLogin: an earlier session existed
	// Lifetime is how long the credential lives without renewal, as its
	// issuer announced it (0 if unknown).
	Lifetime time.Duration
	// ClockSkew: the credential's end suggests this host's clock is ahead
	// of its issuer's (credential.ClockSkew).
	ClockSkew bool
	// For eventSessionLost: how long the session lived (from its obtain
	// time, the stored one if adopted), and whether it counted as
	// short-lived (one session per user: another login ended it).
	Lived      time.Duration
	ShortLived bool
	// Clustered: the keeper shares its session through storage.
	Clustered bool
}
