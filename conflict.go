// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// CC keeps one session per user: a Login Service login ends the user's
// older session. Two holders of one user (two instances without shared
// storage, a person in the agent workspace, another tool) would each answer
// the loss of their session with a login that ends the other's, at the
// rate of traffic. The keeper notices such a conflict by how short its
// sessions live and stops fighting it.

import (
	"errors"
	"fmt"
	"time"
)

// ShortLivedWindow is how long a session must live for its death to be an
// ordinary one. A Login Service session found dead (its refresh answered
// 401) younger than this was most likely ended by another login of the
// same user. Exported for the tests of the built binary (e2e/).
const ShortLivedWindow = 60 * time.Second

// ConflictAfter short-lived sessions in a row start the conflict wait: the
// first ones may be a person who logged in once to look at something.
// Exported for the tests of the built binary (e2e/), which read it from
// the short-lived sessions metric.
const ConflictAfter = 3

// ConflictPeekEvery bounds how often a clustered keeper in the conflict
// wait reads the shared storage for a session another member obtained.
// Exported for the tests of the built binary (e2e/), whose bound on a
// cluster's recovery includes it.
const ConflictPeekEvery = time.Second

// conflict is what the keeper knows of the short-lived sessions of its
// user. It is guarded by the keeper's mutex.
type conflict struct {
	shortLived int       // short-lived sessions in a row
	waiting    bool      // in the wait: no login before the keeper's nextAttempt
	lastLoss   time.Time // when the last short-lived session was found dead
	lastPeek   time.Time // cluster: the last read of the storage while waiting
}

// errConflict is wrapped by the error of a keeper in the conflict wait.
var errConflict = errors.New("CC keeps one session per user, and another client is logged in as this user")

// conflictError is why a keeper in the conflict wait does not log in.
type conflictError struct {
	shortLived int
	cause      error // CC's answer to the refresh that found the last one dead
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("%d sessions in a row ended less than %s after login (last refresh: %v): %s",
		e.shortLived, ShortLivedWindow, e.cause, errConflict.Error())
}

func (e *conflictError) Unwrap() []error { return []error{errConflict, e.cause} }

// sessionDiedLocked is told that the Login Service session c is dead (CC
// answered its refresh 401) and fills in ev, the session_lost event. It
// counts c's death only if c is this keeper's current session and its
// first death seen here: a session replaced meanwhile (an operator's
// relogin, an adoption) or a keeper replaced by a rotation does not count.
// After the ConflictAfter-th short-lived session in a row it starts the
// wait: the next login waits as after a configuration error, never less
// than the window.
func (k *keeper) sessionDiedLocked(c *credential, err error, ev *event) {
	if k.id.Kind == appJWTKind || k.closed || k.successor() != nil ||
		k.dead.has(c.Token) || !sameToken(k.cur.Load(), c) {
		return
	}
	now := k.clock.Now()
	lived := max(now.Sub(c.Obtained), 0) // another host's clock may be ahead
	cf := &k.conflict
	if lived >= ShortLivedWindow {
		cf.shortLived = 0
		return
	}
	cf.shortLived++
	cf.lastLoss = now
	ev.ShortLived = true
	if cf.shortLived < ConflictAfter {
		return
	}
	delay := max(retryDelay(nil, failConfig, cf.shortLived-ConflictAfter+1), ShortLivedWindow)
	cf.waiting = true
	k.retry.next = now.Add(delay)
	k.retry.lastErr = &conflictError{shortLived: cf.shortLived, cause: err}
	if k.retry.stop != nil {
		k.retry.stop()
	}
	k.retry.stop = k.clock.AfterFunc(delay, k.retryObtain)
	ev.NextAttempt = k.retry.next
}

// inConflictLocked says whether the keeper is waiting out a conflict now.
func (k *keeper) inConflictLocked() bool {
	return k.conflict.waiting && k.retry.next.After(k.clock.Now())
}

// peekDuringConflict is the cluster's way out of the wait: the wait blocks
// logins, not adopting the session another member stored since this
// keeper's last loss. At most one storage read per ConflictPeekEvery.
func (k *keeper) peekDuringConflict() *credential {
	k.mu.Lock()
	now := k.clock.Now()
	if !k.inConflictLocked() || now.Sub(k.conflict.lastPeek) < ConflictPeekEvery {
		k.mu.Unlock()
		return nil
	}
	k.conflict.lastPeek = now
	since := k.conflict.lastLoss
	k.mu.Unlock()
	s := k.settings()
	c := k.storedSince(s, since)
	if c == nil {
		return nil
	}
	k.mu.Lock()
	if k.closed || k.cur.Load() != nil {
		k.mu.Unlock()
		return k.cur.Load()
	}
	k.conflict.waiting = false
	k.retry.failures, k.retry.class, k.retry.next, k.retry.lastErr = 0, 0, time.Time{}, nil
	if k.retry.stop != nil {
		k.retry.stop()
		k.retry.stop = nil
	}
	k.cur.Store(c)
	k.scheduleRenewalLocked(c, s.RefreshInterval)
	k.mu.Unlock()
	k.emit(s, k.event(eventAdopted, c))
	k.adopting(s, c)
	return c
}

// sameToken says whether a and b are the same session or token, whatever
// their pointers: an adopted credential is a new pointer to the same token.
func sameToken(a, b *credential) bool {
	return a != nil && b != nil && a.Token == b.Token
}
