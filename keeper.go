// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
	"golang.org/x/sync/singleflight"
)

// aliveTrust is how long a check made for a 401 answers further 401s with
// the same credential, whatever it found: an endpoint that always answers
// 401, or a Login Service that fails the check, costs at most one check per
// aliveTrust.
const aliveTrust = 5 * time.Second

// releaseTimeout bounds the release (logout) when the keeper closes.
const releaseTimeout = 3 * time.Second

// obtainWaitSlack lets an obtain's own timeout report before a waiter gives
// up, so the waiter sees the real reason.
const obtainWaitSlack = 50 * time.Millisecond

// errClosed is returned once the keeper has begun closing.
var errClosed = errors.New("session keeper is closed")

// errUnverified is wrapped by the error of an Unavailable verdict when the
// check after a 401 could not tell whether the credential is alive (the
// Login Service failed or timed out).
var errUnverified = errors.New("cannot tell whether the CC session is alive")

// unavailableError means no credential can be had now.
type unavailableError struct {
	RetryAfter time.Duration // until the next attempt may start
	Err        error         // why
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("lpauth: no CC session (next attempt in %s): %v", e.RetryAfter.Round(time.Second), e.Err)
}

func (e *unavailableError) Unwrap() error { return e.Err }

// keeper owns one credential of one identity: it obtains it on demand
// (once, however many callers ask at the same time), renews it on a timer,
// obtains a new one when the old one is gone, backs off after failures as
// CC's retry policy asks, and releases it on Close. How a credential is
// obtained, checked, renewed and released is its source's business; whether
// the credential is this process's own or the cluster's is fixed when the
// keeper is made (cluster.go is where that makes a difference). The settings it works with are those of
// the configuration that applies (see Attach).
type keeper struct {
	src       source
	id        identity
	clock     cc.Clock
	clustered bool // shares its credential through a storage (cluster.go)
	cur       atomic.Pointer[credential]
	flight    singleflight.Group

	ctx    context.Context // ends at Close; obtains and renewals run on it
	cancel context.CancelFunc

	applied atomic.Pointer[use] // whose settings apply, while its config lives

	mu       sync.Mutex
	uses     []*use    // the configurations attached, oldest first
	fallback *settings // the last that applied, once none is live
	lastSeq  uint64
	closed   bool
	obtained bool        // an obtain has succeeded before
	retry    retryState  // after failed obtains
	checked  checkResult // the last check made for a 401
	dead     deadTokens  // the credentials last found gone: never adopt them again
	conflict conflict    // short-lived sessions: another holder of the user
	cluster  clusterState
	renewal  renewalSchedule
	// forcedAt is when a refused messaging WebSocket handshake last made
	// this keeper log in although its session checked alive.
	forcedAt time.Time

	// heir is the keeper of the same CC user whose configuration replaced
	// this one's (a rotated password or secret): once set, this keeper
	// never obtains again, and a 401 it sees is answered from the heir's
	// credential.
	heir     atomic.Pointer[keeper]
	inflight atomic.Int64 // requests holding this keeper's credential

	releases sync.WaitGroup // releases running in the background

	// obtainHook, when set (by tests), is told, in the caller's goroutine,
	// of every obtain about to start in the background (nil) or refused
	// (why: replaced, backing off, closed).
	obtainHook func(refused error)
}

// newKeeper returns a keeper of src's credential. It does no network I/O:
// the first Get obtains. A nil clock means the real one. A clustered keeper
// (one credential for every instance sharing a storage) needs every
// configuration attached to it to carry a Store, a local one none.
func newKeeper(src source, clock cc.Clock, clustered bool) *keeper {
	if clock == nil {
		clock = cc.RealClock{}
	}
	k := &keeper{src: src, id: src.Identity(), clock: clock, clustered: clustered}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	return k
}

// Identity names the account and user the keeper's credential is for.
func (k *keeper) Identity() identity { return k.id }

// Current returns the live credential, or nil. It takes no lock.
func (k *keeper) Current() *credential { return k.cur.Load() }

// Get returns the live credential, obtaining one if there is none. It waits
// for an obtain at most the login timeout, and not at all while backing
// off; then it returns an *unavailableError. A caller that goes away does
// not cancel the obtain others wait for.
func (k *keeper) Get(ctx context.Context) (*credential, error) {
	if c := k.cur.Load(); c != nil {
		return c, nil
	}
	return k.awaitObtain(ctx)
}

// verdict is what to do with a request whose upstream answered 401.
type verdict int

// The verdicts.
const (
	// verdictRetry: retry the request once with outcome.Credential, a new
	// one.
	verdictRetry verdict = iota
	// verdictRetryLate: the 401 came back for a credential that had already been
	// replaced (here or, in a cluster, by another instance); retry once
	// with the current one.
	verdictRetryLate
	// verdictPassThrough: the credential is alive, so the 401 is the endpoint's
	// own (a permission, a missing resource) and goes to the client.
	verdictPassThrough
	// verdictUnavailable: no credential can be had, or the check after the 401
	// could not tell whether the credential is alive (outcome.Err wraps
	// errUnverified); outcome.Err, an *unavailableError, says why and
	// when to come back. The 401 cannot be passed on: it may be the
	// session's, which the client cannot act on.
	verdictUnavailable
)

// outcome is the keeper's answer to an upstream 401.
type outcome struct {
	Verdict    verdict
	Credential *credential // for verdictRetry and verdictRetryLate
	Err        error       // for verdictUnavailable: an *unavailableError
}

// Unauthorized is called when upstream answered 401 to a request sent with
// failed. Only failed is invalidated, and only once it is known to be gone:
// one check, and one new obtain, serve every 401 meanwhile.
func (k *keeper) Unauthorized(ctx context.Context, failed *credential) outcome {
	if h := k.successor(); h != nil {
		// On its way out: the CC user's credential is the heir's now. A
		// login with this keeper's credentials may fail (the password
		// changed) or end the heir's session (one session per user).
		if sameToken(h.cur.Load(), failed) {
			return h.Unauthorized(ctx, failed)
		}
		c, err := h.Get(ctx)
		if err != nil {
			return outcome{Verdict: verdictUnavailable, Err: err}
		}
		return outcome{Verdict: verdictRetryLate, Credential: c}
	}
	cur := k.cur.Load()
	if cur != nil && !sameToken(cur, failed) {
		return outcome{Verdict: verdictRetryLate, Credential: cur}
	}
	if cur != nil {
		if c := k.adoptNewer(k.settings(), failed); c != nil {
			return outcome{Verdict: verdictRetryLate, Credential: c}
		}
		switch err := k.check(failed); {
		case err == nil:
			return outcome{Verdict: verdictPassThrough}
		case !errors.Is(err, errCredentialGone):
			return outcome{Verdict: verdictUnavailable, Err: err}
		}
	}
	c, err := k.awaitObtain(ctx)
	if err != nil {
		return outcome{Verdict: verdictUnavailable, Err: err}
	}
	return outcome{Verdict: verdictRetry, Credential: c}
}

// UnauthorizedLater handles a 401 that cannot be retried (its body was
// streamed) in the background, so that the next requests find a live
// credential.
func (k *keeper) UnauthorizedLater(failed *credential) {
	go k.Unauthorized(k.ctx, failed)
}

// Relogin replaces the credential with a new one now, through the same
// single obtain, skipping any backoff (an operator asked for it). The old
// credential is released once the new one is in place.
func (k *keeper) Relogin(ctx context.Context) (*credential, error) {
	old := k.cur.Load()
	k.mu.Lock()
	if old != nil {
		k.dead.add(old.Token)
		k.takeSoloLocked(old) // released below, not again when another is adopted
	}
	if !k.closed {
		k.retry.next = time.Time{}
	}
	k.mu.Unlock()
	if old != nil {
		k.dropCurrent(old)
	}
	c, err := k.awaitObtain(ctx)
	if err == nil && old != nil && !sameToken(c, old) {
		k.releaseInBackground(k.settings(), old)
	}
	return c, err
}

// ReloginRefused answers a messaging WebSocket handshake CC refused with
// 401 although a refresh says the session is alive (node-agent-sdk logs in
// again on it): one forced re-login per one-session window
// (ShortLivedWindow), never while backing off or in the conflict wait, and
// never by a replaced or closed keeper. It returns the credential to retry
// the handshake with, or nil to pass the 401 on.
func (k *keeper) ReloginRefused(ctx context.Context, refused *credential) *credential {
	k.mu.Lock()
	now := k.clock.Now()
	switch cur := k.cur.Load(); {
	case k.closed || k.successor() != nil || k.id.Kind == appJWTKind || k.retry.next.After(now):
		k.mu.Unlock()
		return nil
	case cur != nil && !sameToken(cur, refused):
		k.mu.Unlock()
		return cur // replaced meanwhile: retry with the new one
	case !k.forcedAt.IsZero() && now.Sub(k.forcedAt) < ShortLivedWindow:
		k.mu.Unlock()
		return nil
	}
	k.forcedAt = now
	k.mu.Unlock()
	c, err := k.Relogin(ctx)
	if err != nil {
		return nil
	}
	return c
}

// The states of a keeper, as Status and the readiness probe report them.
const (
	StateReady      = "ready"       // a live credential
	StateLoggingIn  = "logging_in"  // none yet, and not backing off: the next request (or a login in flight) gets one
	StateBackingOff = "backing_off" // the last login failed; no attempt before backoff_until
	StateConflict   = "conflict"    // sessions keep ending soon after login (one session per user); no login before backoff_until
)

// Status describes the credential for operators: the admin API's JSON. It
// holds no secret. Exported, with the State values, for the tests of the
// built binary (e2e/), which decode the admin API into it.
type Status struct {
	AccountID           string    `json:"account_id"`
	Kind                string    `json:"login_mode"`
	Username            string    `json:"username"`
	Host                string    `json:"host,omitempty"`
	State               string    `json:"state"` // ready, logging_in, backing_off or conflict
	LoggedIn            bool      `json:"logged_in"`
	LoggedInAt          time.Time `json:"logged_in_at,omitzero"`
	Expires             time.Time `json:"expires,omitzero"` // a credential with a fixed end (an AppJWT)
	LastRefresh         time.Time `json:"last_refresh,omitzero"`
	LastRefreshResult   string    `json:"last_refresh_result,omitempty"`
	NextRefresh         time.Time `json:"next_refresh,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	BackoffUntil        time.Time `json:"backoff_until,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
	// Replaced: a newer configuration's identity serves this CC user now
	// (a rotated password or secret); this one is released once its
	// requests have finished.
	Replaced bool  `json:"replaced,omitempty"`
	InFlight int64 `json:"in_flight"`
}

// Status reports the keeper's state.
func (k *keeper) Status() Status {
	st := Status{AccountID: k.id.Account, Kind: k.id.Kind, Username: k.id.Name, Replaced: k.successor() != nil, InFlight: max(k.inflight.Load(), 0)}
	if c := k.cur.Load(); c != nil {
		st.LoggedIn, st.LoggedInAt, st.Host, st.Expires = true, c.Obtained, c.Issuer, c.Expires
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st.LastRefresh, st.LastRefreshResult = k.renewal.last, k.renewal.lastResult
	if st.LoggedIn {
		st.NextRefresh = k.renewal.next
	}
	st.ConsecutiveFailures = k.retry.failures
	switch {
	case st.LoggedIn:
		st.State = StateReady
	case k.inConflictLocked():
		st.State = StateConflict
	case k.retry.next.After(k.clock.Now()):
		st.State = StateBackingOff
	default:
		st.State = StateLoggingIn
	}
	if k.retry.next.After(k.clock.Now()) {
		st.BackoffUntil = k.retry.next
	}
	if k.retry.lastErr != nil {
		st.LastError = k.retry.lastErr.Error()
	}
	return st
}

// Client returns the CC client of the configuration that applies.
func (k *keeper) Client() *cc.Client { return k.settings().Client }

// Close stops the timers and releases the credential (if the settings that
// applied last say so), bounded by a few seconds. Nothing is obtained
// afterwards.
func (k *keeper) Close() error { return k.CloseAfterRequests(0, nil) }

// CloseAfterRequests is Close, with the release put off until the requests
// that hold the credential (BeginRequest, not yet EndRequest) have
// finished: at most wait, and no longer once stop is closed. Meanwhile the
// credential is still served to them and nothing new is obtained.
func (k *keeper) CloseAfterRequests(wait time.Duration, stop <-chan struct{}) error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	k.stopTimersLocked()
	k.mu.Unlock()
	k.drain(wait, stop)
	k.cancel()
	c := k.cur.Swap(nil)
	s := k.settings()
	// Nothing of this keeper talks to CC any more: its pooled connections
	// would otherwise stay open until Go's idle timeout.
	defer k.closeClients()
	if c == nil || !s.LogoutOnStop || k.heirHolds(c) {
		return nil
	}
	return k.releaseCredential(s, c)
}

// closeClients closes the idle connections of every CC client the keeper
// still holds: the attached configurations' and the last that applied.
func (k *keeper) closeClients() {
	k.mu.Lock()
	clients := make([]*cc.Client, 0, len(k.uses)+1)
	for _, u := range k.uses {
		clients = append(clients, u.s.Client)
	}
	if k.fallback != nil {
		clients = append(clients, k.fallback.Client)
	}
	k.mu.Unlock()
	for _, c := range clients {
		if c != nil {
			c.CloseIdleConnections()
		}
	}
}

// heirHolds says whether the keeper that replaced this one serves c's
// token itself (a cluster's stored session, adopted with the new
// credentials): releasing it would end the heir's session.
func (k *keeper) heirHolds(c *credential) bool {
	h := k.successor()
	if h == nil {
		return false
	}
	hc := h.cur.Load()
	return hc != nil && hc.Token == c.Token
}

// BeginRequest counts a request that holds the keeper's credential until
// its EndRequest, so that a release waits for it (CloseAfterRequests).
func (k *keeper) BeginRequest() { k.inflight.Add(1) }

// EndRequest ends what BeginRequest began.
func (k *keeper) EndRequest() { k.inflight.Add(-1) }

// InFlight is the number of requests holding the credential now.
func (k *keeper) InFlight() int64 { return k.inflight.Load() }

// drainPoll is how often a release waiting for requests looks again.
const drainPoll = 10 * time.Millisecond

func (k *keeper) drain(wait time.Duration, stop <-chan struct{}) {
	if wait <= 0 || k.inflight.Load() <= 0 {
		return
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for k.inflight.Load() > 0 {
		select {
		case <-deadline.C:
			return
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// Supersede hands the CC user over to next, the keeper of the same user
// whose configuration has started in place of this one's: from now on this
// keeper obtains nothing (obtain refuses, whatever starts it: a 401, a
// retry, a renewal), and Get and Unauthorized answer from next (or with an
// *unavailableError while next has no credential). The current credential
// is still served to the requests that hold it, until Close.
func (k *keeper) Supersede(next *keeper) {
	if next != k && next != nil {
		k.heir.Store(next)
	}
}

// successor is the keeper that last replaced this one, following a chain
// of replacements while they drain; nil if none.
func (k *keeper) successor() *keeper {
	h := k.heir.Load()
	for i := 0; h != nil && i < 8; i++ {
		n := h.heir.Load()
		if n == nil || n == k {
			break
		}
		h = n
	}
	return h
}

// errReplaced: an obtain asked of a keeper whose CC user another keeper
// serves now.
var errReplaced = errors.New("lpauth: this identity was replaced by a newer configuration")

// releaseInBackground releases c without making the caller wait for it.
func (k *keeper) releaseInBackground(s *settings, c *credential) {
	k.releases.Add(1)
	go func() {
		defer k.releases.Done()
		_ = k.release(s, c)
	}()
}

// release ends c through the source and reports it.
func (k *keeper) release(s *settings, c *credential) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	start := k.clock.Now()
	err := k.src.Release(ctx, s.Client, c)
	if errors.Is(err, errNothingToRelease) {
		return nil // nothing was sent: nothing to report
	}
	ev := k.event(eventLogout, c)
	ev.Duration = k.clock.Now().Sub(start)
	if err != nil {
		ev.Kind, ev.Err = eventLogoutFailed, err
	}
	k.emit(s, ev)
	return err
}

func (k *keeper) awaitObtain(ctx context.Context) (*credential, error) {
	if h := k.successor(); h != nil {
		return h.Get(ctx)
	}
	if err := k.unavailableNow(); err != nil {
		if c := k.peekDuringConflict(); c != nil {
			return c, nil
		}
		return nil, err
	}
	ch := k.flight.DoChan("obtain", k.obtain)
	wait := time.NewTimer(k.settings().LoginTimeout + obtainWaitSlack)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, k.unavailable(r.Err)
		}
		return r.Val.(*credential), nil
	case <-ctx.Done():
		return nil, &unavailableError{RetryAfter: time.Second, Err: ctx.Err()}
	case <-wait.C:
		return nil, &unavailableError{RetryAfter: time.Second, Err: errors.New("login still in progress")}
	}
}

// unavailableNow says why no obtain may start now: closed, or backing off.
func (k *keeper) unavailableNow() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return &unavailableError{RetryAfter: time.Second, Err: errClosed}
	}
	if wait := k.retry.next.Sub(k.clock.Now()); wait > 0 {
		return &unavailableError{RetryAfter: wait, Err: k.retry.lastErr}
	}
	return nil
}

func (k *keeper) unavailable(err error) error {
	var u *unavailableError
	if errors.As(err, &u) {
		return u
	}
	if u, ok := k.unavailableNow().(*unavailableError); ok {
		u.Err = err
		return u
	}
	return &unavailableError{RetryAfter: time.Second, Err: err}
}

// obtain is the body of the single obtain in flight. One settings snapshot
// serves it from start to end: a reload meanwhile does not change the
// client, the timeout or the storage instance half way.
func (k *keeper) obtain() (any, error) {
	if c := k.cur.Load(); c != nil {
		return c, nil // another obtain finished just before this one began
	}
	if k.successor() != nil {
		return nil, errReplaced
	}
	if err := k.unavailableNow(); err != nil {
		return nil, err
	}
	s := k.settings()
	start := k.clock.Now()
	c, adopted, err := k.obtainCredential(s)
	took := k.clock.Now().Sub(start)

	k.mu.Lock()
	if err != nil {
		ev := k.failedObtainLocked(err)
		k.mu.Unlock()
		ev.Duration = took
		k.emit(s, ev)
		return nil, err
	}
	if k.closed {
		k.mu.Unlock()
		if !adopted {
			k.abandon(s, c)
		}
		return nil, errClosed
	}
	k.retry.failures, k.retry.class, k.retry.next, k.retry.lastErr = 0, 0, time.Time{}, nil
	k.conflict.waiting = false
	if !adopted {
		c.Obtained = k.clock.Now()
	}
	k.cur.Store(c)
	k.scheduleRenewalLocked(c, s.RefreshInterval)
	relogin := k.obtained
	k.obtained = true
	k.mu.Unlock()
	kind := eventLogin
	if adopted {
		kind = eventAdopted
	}
	ev := k.event(kind, c)
	ev.Duration, ev.Relogin = took, relogin
	k.emit(s, ev)
	return c, nil
}

// sourceObtain asks the source for a new credential, bounded by the login
// timeout.
func (k *keeper) sourceObtain(s *settings) (*credential, error) {
	ctx, cancel := context.WithTimeout(k.ctx, s.LoginTimeout)
	defer cancel()
	c, err := k.src.Obtain(ctx, s.Client)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = &timeoutError{after: s.LoginTimeout, err: err}
	}
	return c, err
}

// failedObtainLocked records a failed obtain and schedules the next attempt
// in the background, so the credential comes back without a request paying
// for it.
func (k *keeper) failedObtainLocked(err error) event {
	class := classify(err)
	if class != k.retry.class {
		k.retry.failures = 0
	}
	k.retry.class = class
	k.retry.failures++
	k.conflict.waiting = false // a login was tried: what holds it back now is its failure
	delay := retryDelay(err, class, k.retry.failures)
	k.retry.next = k.clock.Now().Add(delay)
	k.retry.lastErr = err
	if !k.closed {
		if k.retry.stop != nil {
			k.retry.stop()
		}
		k.retry.stop = k.clock.AfterFunc(delay, k.retryObtain)
	}
	ev := k.event(eventLoginFailed, nil)
	ev.Err, ev.Failures, ev.NextAttempt = err, k.retry.failures, k.retry.next
	return ev
}

func (k *keeper) retryObtain() {
	if k.cur.Load() == nil {
		k.startObtain()
	}
}

// startObtain starts the single obtain in the background (or joins the one
// in flight), unless none may start now.
func (k *keeper) startObtain() {
	refused := k.unavailableNow()
	if k.successor() != nil {
		refused = errReplaced
	}
	if k.obtainHook != nil {
		k.obtainHook(refused)
	}
	if refused == nil {
		k.flight.DoChan("obtain", k.obtain)
	}
}

// checkResult is what a check made for a 401 found, and until when it
// answers further 401s with the same credential.
type checkResult struct {
	token string
	until time.Time
	err   error // nil: alive
}

// answer is the result as check returns it at now.
func (r checkResult) answer(now time.Time) error {
	if r.err == nil || errors.Is(r.err, errCredentialGone) {
		return r.err
	}
	return &unavailableError{RetryAfter: max(r.until.Sub(now), time.Second), Err: &unverifiedError{r.err}}
}

// check asks the source, through one check shared by every caller
// meanwhile, whether c is alive: nil if it is, an error wrapping
// errCredentialGone if it is gone (it is dropped, if still current), else
// an *unavailableError wrapping errUnverified. Whatever it finds answers
// further 401s with c for aliveTrust: a check that fails must not be
// repeated for every 401 (a refresh storm while CC is down), nor count as
// a death (a login storm on a CC hiccup).
func (k *keeper) check(c *credential) error {
	k.mu.Lock()
	r := k.checked
	k.mu.Unlock()
	if r.token == c.Token && k.clock.Now().Before(r.until) {
		return r.answer(k.clock.Now())
	}
	v, _, _ := k.flight.Do("check:"+c.Token, func() (any, error) {
		s := k.settings()
		ctx, cancel := context.WithTimeout(k.ctx, s.LoginTimeout)
		start := k.clock.Now()
		err := k.src.Check(ctx, s.Client, c)
		cancel()
		k.renewed(s, c, k.clock.Now().Sub(start), errors.Is(err, errCredentialGone), err)
		// Remembered only from a check made for a 401: a periodic
		// renewal a moment ago says nothing about a 401 now.
		r := checkResult{token: c.Token, until: k.clock.Now().Add(aliveTrust), err: err}
		k.mu.Lock()
		k.checked = r
		k.mu.Unlock()
		return r, nil
	})
	return v.(checkResult).answer(k.clock.Now())
}

// sourceRenew renews c through the source; a new credential the source
// returns takes c's place. An error that wraps errCredentialGone means c is
// gone (and dropped); any other leaves c in use.
func (k *keeper) sourceRenew(s *settings, c *credential) (*credential, error) {
	ctx, cancel := context.WithTimeout(k.ctx, s.LoginTimeout)
	start := k.clock.Now()
	next, err := k.src.Renew(ctx, s.Client, c)
	cancel()
	k.renewed(s, c, k.clock.Now().Sub(start), errors.Is(err, errCredentialGone), err)
	if err != nil {
		return c, err
	}
	if next != c {
		next.Obtained = k.clock.Now()
		k.cur.CompareAndSwap(c, next)
	}
	return next, nil
}

// renewed records a renewal or check of c and, if c is gone, drops it.
func (k *keeper) renewed(s *settings, c *credential, took time.Duration, gone bool, err error) {
	ev := k.event(eventRefresh, c)
	ev.Duration = took
	switch {
	case gone:
		ev.Kind, ev.Err = eventSessionLost, err
	case err != nil:
		ev.Kind, ev.Err = eventRefreshFailed, err
	}
	k.mu.Lock()
	k.renewal.last, k.renewal.lastResult = k.clock.Now(), "ok"
	if err != nil {
		k.renewal.lastResult = err.Error()
	}
	if gone {
		ev.Lived = max(k.clock.Now().Sub(c.Obtained), 0)
		k.sessionDiedLocked(c, err, &ev)
		k.dead.add(c.Token)
		k.takeSoloLocked(c) // nothing left to release
	}
	k.mu.Unlock()
	if gone {
		k.dropCurrent(c)
	}
	k.emit(s, ev)
}

// dropCurrent drops the current credential if it is c's token.
func (k *keeper) dropCurrent(c *credential) {
	if cur := k.cur.Load(); sameToken(cur, c) {
		k.cur.CompareAndSwap(cur, nil)
	}
}

// adoptable says whether a credential read from elsewhere may be adopted:
// not one this keeper already found gone.
func (k *keeper) adoptable(c *credential) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.dead.has(c.Token)
}

// deadTokens remembers the last few tokens found gone. More than one: after
// a storage outage the stored session from before and the one obtained
// alone may both be dead, and neither may be adopted.
type deadTokens struct {
	list [4]string
	next int
}

func (d *deadTokens) add(token string) {
	if !d.has(token) {
		d.list[d.next] = token
		d.next = (d.next + 1) % len(d.list)
	}
}

func (d *deadTokens) has(token string) bool {
	return token != "" && slices.Contains(d.list[:], token)
}

func (k *keeper) event(kind eventKind, c *credential) event {
	ev := event{Kind: kind, Account: k.id.Account, LoginKind: k.id.Kind, Username: k.id.Name, Clustered: k.clustered}
	if c != nil {
		ev.Host, ev.Lifetime, ev.ClockSkew = c.Issuer, c.Lifetime, c.ClockSkew
	}
	return ev
}

func (k *keeper) emit(s *settings, ev event) {
	if s.Observer != nil {
		s.Observer(ev)
	}
}

// timeoutError marks an obtain cut at the login timeout.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("login timed out after %s: %v", e.after, e.err)
}
func (e *timeoutError) Unwrap() error { return e.err }
func (e *timeoutError) Timeout() bool { return true }

// unverifiedError is a check that could not tell; it keeps the cause.
type unverifiedError struct{ err error }

func (e *unverifiedError) Error() string   { return errUnverified.Error() + ": " + e.err.Error() }
func (e *unverifiedError) Unwrap() []error { return []error{e.err, errUnverified} }
