// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The renewal schedule and the retry policy: when a keeper renews its
// credential, and how long it waits after a failed obtain.

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// retryState is what a keeper knows of its failed obtains, and when it may
// try again.
type retryState struct {
	failures int // consecutive failed obtains of class
	class    failureClass
	next     time.Time // no obtain before
	lastErr  error
	stop     func() bool // cancels the planned retry
}

// renewalSchedule is the keeper's renewal timer and what Status shows of it.
type renewalSchedule struct {
	stop       func() bool
	every      time.Duration // the refresh interval it was planned with
	next       time.Time
	last       time.Time
	lastResult string
	failures   int // consecutive failed renewals of a credential with an end
}

// renewTick keeps the credential alive; one found gone is replaced in the
// background. A credential with an end whose renewal fails is served until
// that end, the renewal retried as the retry policy says meanwhile; then it
// is dropped and a new one obtained.
func (k *keeper) renewTick() {
	c := k.cur.Load()
	if c == nil {
		return // the next obtain schedules the next renewal
	}
	if !c.Expires.IsZero() && !k.clock.Now().Before(c.Expires) {
		if k.cur.CompareAndSwap(c, nil) {
			ev := k.event(eventSessionLost, c)
			ev.Err = errExpired
			k.emit(k.settings(), ev)
		}
		k.retryObtain()
		return
	}
	s := k.settings()
	err := k.renewCredential(s, c)
	if errors.Is(err, errCredentialGone) {
		k.retryObtain()
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	next := k.cur.Load()
	if next == nil || k.closed {
		return
	}
	r := &k.renewal
	if err == nil || next != c || c.Expires.IsZero() {
		r.failures = 0
		k.scheduleRenewalLocked(next, s.RefreshInterval)
		return
	}
	r.failures++
	delay := min(retryDelay(err, classify(err), r.failures), c.Expires.Sub(k.clock.Now()))
	k.scheduleLocked(max(delay, 0), s.RefreshInterval)
}

// errExpired is why a credential whose end came is dropped.
var errExpired = errors.New("credential expired; its renewal failed until its end")

// scheduleRenewalLocked plans the next renewal of c, replacing any planned.
func (k *keeper) scheduleRenewalLocked(c *credential, every time.Duration) {
	k.scheduleLocked(k.src.RenewAfter(c, every), every)
}

func (k *keeper) scheduleLocked(d, every time.Duration) {
	r := &k.renewal
	if r.stop != nil {
		r.stop()
	}
	r.stop, r.every, r.next = k.clock.AfterFunc(d, k.renewTick), every, k.clock.Now().Add(d)
}

func (k *keeper) stopTimersLocked() {
	for _, stop := range []func() bool{k.retry.stop, k.renewal.stop} {
		if stop != nil {
			stop()
		}
	}
	k.retry.stop, k.renewal.stop = nil, nil
	k.renewal.next = time.Time{}
}

type failureClass int

const (
	failRateLimit failureClass = iota + 1 // 429
	failConfig                            // other 4xx: wrong password, blacklisted (451), bad request
	failTransient                         // 5xx, timeouts, connection errors
)

func classify(err error) failureClass {
	var apiErr *cc.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.StatusCode == 429:
			return failRateLimit
		case apiErr.StatusCode >= 400 && apiErr.StatusCode < 500:
			return failConfig
		}
	}
	return failTransient
}

// The retry policy: gaps from the end of a failed login to the start of the
// next, as CC's retry-policy recommendations give them.
var (
	rateLimitDelay  = 5 * time.Second
	configDelay     = time.Minute
	configDelayMax  = 10 * time.Minute
	transientDelays = []time.Duration{5 * time.Second, 10 * time.Second, 15 * time.Second}
	transientSlow   = 2 * time.Minute
)

// retryDelay returns the gap before the next login after the n-th
// consecutive failure of class, plus up to 10% jitter; a longer Retry-After
// from CC wins. A wrong password must never lock the CC user, hence the
// slow doubling for configuration errors.
func retryDelay(err error, class failureClass, n int) time.Duration {
	var d time.Duration
	switch class {
	case failRateLimit:
		d = rateLimitDelay
	case failConfig:
		d = configDelay
		for i := 1; i < n && d < configDelayMax; i++ {
			d *= 2
		}
		d = min(d, configDelayMax)
	default:
		if n <= len(transientDelays) {
			d = transientDelays[n-1]
		} else {
			d = transientSlow
		}
	}
	d += rand.N(d/10 + 1)
	var apiErr *cc.APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > d {
		d = apiErr.RetryAfter
	}
	return d
}
