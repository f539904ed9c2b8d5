// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"fmt"
	"time"
)

// EventKind names what happened to the session.
type EventKind int

// The events a keeper reports.
const (
	EventLogin         EventKind = iota // a login succeeded
	EventLoginFailed                    // a login failed; NextAttempt says when the next one may start
	EventRefresh                        // a refresh succeeded
	EventRefreshFailed                  // a refresh failed, but the session may still be alive
	EventSessionLost                    // CC said the session is gone (refresh 401); a re-login follows
	EventLogout                         // logout succeeded
	EventLogoutFailed                   // logout failed
	EventAdopted                        // cluster mode: took the session another instance obtained
	EventStoreFailed                    // cluster mode: the shared storage failed; working on our own
)

var eventNames = [...]string{"login", "login failed", "refresh", "refresh failed", "session lost", "logout", "logout failed", "adopted", "store failed"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("event(%d)", int(k))
}

// Event is one thing that happened to a keeper's session. It carries no
// secret.
type Event struct {
	Kind        EventKind
	Account     string
	Mode        string // "user" or "application"
	Username    string
	Host        string        // agentVep base URL, when known
	Err         error         // for failures
	Duration    time.Duration // of the round trip
	Failures    int           // consecutive failed logins
	NextAttempt time.Time     // for EventLoginFailed, and EventSessionLost that starts the conflict wait
	Relogin     bool          // for EventLogin: an earlier session existed
	// Lifetime is how long the credential lives without renewal, as its
	// issuer announced it (0 if unknown).
	Lifetime time.Duration
	// ClockSkew: the credential's end suggests this host's clock is ahead
	// of its issuer's (Credential.ClockSkew).
	ClockSkew bool
	// For EventSessionLost: how long the session lived (from its obtain
	// time, the stored one if adopted), and whether it counted as
	// short-lived (one session per user: another login ended it).
	Lived      time.Duration
	ShortLived bool
	// Clustered: the keeper shares its session through storage.
	Clustered bool
}
