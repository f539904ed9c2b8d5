// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// aliveTrust is how long a successful refresh answers "is the session
// alive?" for further 401s, so an endpoint that always answers 401 costs at
// most one refresh per aliveTrust.
const aliveTrust = 5 * time.Second

// logoutTimeout bounds the logout when the keeper closes.
const logoutTimeout = 3 * time.Second

// loginWaitSlack lets a login's own timeout report before a waiter gives
// up, so the waiter sees the real reason.
const loginWaitSlack = 50 * time.Millisecond

// ErrClosed is returned once the keeper has begun logging out.
var ErrClosed = errors.New("session keeper is closed")

// Clock is the keeper's source of time; tests inject one to drive long
// backoff schedules.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d and returns a
	// function that cancels the call.
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) AfterFunc(d time.Duration, f func()) func() bool {
	return time.AfterFunc(d, f).Stop
}

// Tuning holds what a reload may change without a new login.
type Tuning struct {
	Client          *Client
	RefreshInterval time.Duration
	LoginTimeout    time.Duration
	// Observer, if set, is told of every login, refresh and logout. It is
	// called synchronously and must not block.
	Observer func(Event)
	// LogoutOnStop logs the session out at Close. Off in cluster mode by
	// default: the other instances still use the session.
	LogoutOnStop bool
	// Shared, in cluster mode, is where the cluster keeps its one session;
	// nil on a single instance. A keeper stays in the mode it started in;
	// the store itself is replaced on reload, as it belongs to a config.
	Shared SharedStore
}

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
	NextAttempt time.Time     // for EventLoginFailed
	Relogin     bool          // for EventLogin: an earlier session existed
}

// UnavailableError means no session can be had now.
type UnavailableError struct {
	RetryAfter time.Duration // until the next login attempt may start
	Err        error         // why
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("lpauth: no CC session (next attempt in %s): %v", e.RetryAfter.Round(time.Second), e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Keeper owns one CC session: it logs in on demand (once, however many
// callers ask at the same time), refreshes the session on a timer, logs in
// again when CC says the session is gone, backs off after failures as CC's
// retry policy asks, and logs out on Close.
type Keeper struct {
	creds  Credentials
	clock  Clock
	tuning atomic.Pointer[Tuning]
	cur    atomic.Pointer[Session]
	flight singleflight.Group

	ctx    context.Context // ends at Close; logins and refreshes run on it
	cancel context.CancelFunc

	mu          sync.Mutex
	closed      bool
	loggedIn    bool // a login has succeeded before
	failures    int  // consecutive failed logins of failClass
	failClass   failureClass
	nextAttempt time.Time
	lastErr     error
	stopRetry   func() bool
	stopRefresh func() bool
	aliveBearer string
	aliveUntil  time.Time
	deadBearer  string // bearer of the session last found gone: never adopt it again

	// For Status only.
	lastRefresh       time.Time
	lastRefreshResult string
	nextRefresh       time.Time
}

// NewKeeper returns a keeper for creds. It does no network I/O: the first
// Session call logs in. A nil clock means the real one.
func NewKeeper(creds Credentials, clock Clock, t Tuning) *Keeper {
	if clock == nil {
		clock = realClock{}
	}
	k := &Keeper{creds: creds, clock: clock}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	k.tuning.Store(&t)
	return k
}

// Configure applies the tuning of the newest configuration.
func (k *Keeper) Configure(t Tuning) {
	old := k.tuning.Swap(&t)
	if old.Client != nil && old.Client != t.Client {
		old.Client.CloseIdleConnections()
	}
	if old.RefreshInterval != t.RefreshInterval {
		k.mu.Lock()
		if !k.closed && k.cur.Load() != nil {
			k.scheduleRefreshLocked(t.RefreshInterval)
		}
		k.mu.Unlock()
	}
}

// Current returns the live session, or nil. It takes no lock.
func (k *Keeper) Current() *Session { return k.cur.Load() }

// Session returns the live session, logging in if there is none. It waits
// for a login at most the login timeout, and not at all while backing off;
// then it returns an *UnavailableError. A caller that goes away does not
// cancel the login others wait for.
func (k *Keeper) Session(ctx context.Context) (*Session, error) {
	if s := k.cur.Load(); s != nil {
		return s, nil
	}
	return k.awaitLogin(ctx)
}

// Unauthorized is called when upstream answered 401 to a request sent with
// failed. It returns the session to retry with, or (nil, nil) when the 401
// is about the endpoint and belongs to the client.
func (k *Keeper) Unauthorized(ctx context.Context, failed *Session) (*Session, error) {
	cur := k.cur.Load()
	if cur != nil && cur != failed {
		return cur, nil // a late 401: the token was already replaced
	}
	if cur == nil {
		return k.awaitLogin(ctx)
	}
	if k.clustered() {
		if s := k.adoptNewer(failed); s != nil {
			return s, nil // another instance already replaced it
		}
	}
	if !k.sessionDead(failed) {
		return nil, nil
	}
	return k.awaitLogin(ctx)
}

// Relogin replaces the session with a fresh one now, through the same
// single login path, skipping any backoff (an operator asked for it). The
// old session is logged out once the new one is in place.
func (k *Keeper) Relogin(ctx context.Context) (*Session, error) {
	old := k.cur.Load()
	k.mu.Lock()
	if old != nil {
		k.deadBearer = old.Bearer
	}
	if !k.closed {
		k.nextAttempt = time.Time{}
	}
	k.mu.Unlock()
	if old != nil {
		k.cur.CompareAndSwap(old, nil)
	}
	s, err := k.awaitLogin(ctx)
	if err == nil && old != nil && s != old {
		go func() { _ = k.logout(old) }()
	}
	return s, err
}

// Status describes the session for operators. It holds no secret.
type Status struct {
	AccountID           string    `json:"account_id"`
	Mode                string    `json:"login_mode"`
	Username            string    `json:"username"`
	Host                string    `json:"host,omitempty"`
	LoggedIn            bool      `json:"logged_in"`
	LoggedInAt          time.Time `json:"logged_in_at,omitzero"`
	LastRefresh         time.Time `json:"last_refresh,omitzero"`
	LastRefreshResult   string    `json:"last_refresh_result,omitempty"`
	NextRefresh         time.Time `json:"next_refresh,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	BackoffUntil        time.Time `json:"backoff_until,omitzero"`
	LastError           string    `json:"last_error,omitempty"`
}

// Status reports the keeper's state.
func (k *Keeper) Status() Status {
	st := Status{AccountID: k.creds.AccountID, Mode: k.creds.Mode(), Username: k.creds.Username}
	if s := k.cur.Load(); s != nil {
		st.LoggedIn, st.LoggedInAt, st.Host = true, s.Obtained, s.BaseURL
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st.LastRefresh, st.LastRefreshResult = k.lastRefresh, k.lastRefreshResult
	if st.LoggedIn {
		st.NextRefresh = k.nextRefresh
	}
	st.ConsecutiveFailures = k.failures
	if k.nextAttempt.After(k.clock.Now()) {
		st.BackoffUntil = k.nextAttempt
	}
	if k.lastErr != nil {
		st.LastError = k.lastErr.Error()
	}
	return st
}

// Client returns the CC client of the newest configuration.
func (k *Keeper) Client() *Client { return k.tuning.Load().Client }

// UnauthorizedLater handles a 401 that cannot be retried (its body was
// streamed) in the background, so that the next requests find a live
// session.
func (k *Keeper) UnauthorizedLater(failed *Session) {
	go func() { _, _ = k.Unauthorized(k.ctx, failed) }()
}

// Close stops the timers and logs the session out, bounded by a few
// seconds. No login starts afterwards.
func (k *Keeper) Close() error {
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	k.stopTimersLocked()
	k.mu.Unlock()
	k.cancel()
	s := k.cur.Swap(nil)
	if s == nil || !k.tuning.Load().LogoutOnStop {
		return nil
	}
	err := k.logout(s)
	if k.clustered() {
		k.dropShared(s)
	}
	return err
}

func (k *Keeper) logout(s *Session) error {
	t := k.tuning.Load()
	ctx, cancel := context.WithTimeout(context.Background(), logoutTimeout)
	defer cancel()
	start := k.clock.Now()
	err := t.Client.Logout(ctx, k.creds.AccountID, s)
	ev := k.event(EventLogout, s)
	ev.Duration = k.clock.Now().Sub(start)
	if err != nil {
		ev.Kind, ev.Err = EventLogoutFailed, err
	}
	k.emit(ev)
	return err
}

func (k *Keeper) awaitLogin(ctx context.Context) (*Session, error) {
	if err := k.unavailableNow(); err != nil {
		return nil, err
	}
	ch := k.flight.DoChan("login", k.login)
	wait := time.NewTimer(k.tuning.Load().LoginTimeout + loginWaitSlack)
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, k.unavailable(r.Err)
		}
		return r.Val.(*Session), nil
	case <-ctx.Done():
		return nil, &UnavailableError{RetryAfter: time.Second, Err: ctx.Err()}
	case <-wait.C:
		return nil, &UnavailableError{RetryAfter: time.Second, Err: errors.New("login still in progress")}
	}
}

// unavailableNow says why no login may start now: closed, or backing off.
func (k *Keeper) unavailableNow() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return &UnavailableError{RetryAfter: time.Second, Err: ErrClosed}
	}
	if wait := k.nextAttempt.Sub(k.clock.Now()); wait > 0 {
		return &UnavailableError{RetryAfter: wait, Err: k.lastErr}
	}
	return nil
}

func (k *Keeper) unavailable(err error) error {
	var u *UnavailableError
	if errors.As(err, &u) {
		return u
	}
	if u, ok := k.unavailableNow().(*UnavailableError); ok {
		u.Err = err
		return u
	}
	return &UnavailableError{RetryAfter: time.Second, Err: err}
}

// login is the body of the single login in flight.
func (k *Keeper) login() (any, error) {
	if s := k.cur.Load(); s != nil {
		return s, nil // another login finished just before this one began
	}
	if err := k.unavailableNow(); err != nil {
		return nil, err
	}
	t := k.tuning.Load()
	start := k.clock.Now()
	var s *Session
	var adopted bool
	var err error
	if k.clustered() {
		s, adopted, err = k.obtainShared(t)
	} else {
		s, err = k.ccLogin(t)
	}
	took := k.clock.Now().Sub(start)

	k.mu.Lock()
	if err != nil {
		ev := k.failedLoginLocked(err)
		k.mu.Unlock()
		ev.Duration = took
		k.emit(ev)
		return nil, err
	}
	if k.closed {
		k.mu.Unlock()
		if !adopted && !k.clustered() {
			_ = k.logout(s)
		}
		return nil, ErrClosed
	}
	k.failures, k.failClass, k.nextAttempt, k.lastErr = 0, 0, time.Time{}, nil
	if !adopted {
		s.Obtained = k.clock.Now()
	}
	k.cur.Store(s)
	k.scheduleRefreshLocked(t.RefreshInterval)
	relogin := k.loggedIn
	k.loggedIn = true
	k.mu.Unlock()
	kind := EventLogin
	if adopted {
		kind = EventAdopted
	}
	ev := k.event(kind, s)
	ev.Duration, ev.Relogin = took, relogin
	k.emit(ev)
	return s, nil
}

// ccLogin logs in to CC, bounded by the login timeout.
func (k *Keeper) ccLogin(t *Tuning) (*Session, error) {
	ctx, cancel := context.WithTimeout(k.ctx, t.LoginTimeout)
	defer cancel()
	s, err := t.Client.Login(ctx, k.creds)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = &timeoutError{after: t.LoginTimeout, err: err}
	}
	return s, err
}

// failedLoginLocked records a failed login and schedules the next attempt in
// the background, so the session comes back without a request paying for it.
func (k *Keeper) failedLoginLocked(err error) Event {
	class := classify(err)
	if class != k.failClass {
		k.failures = 0
	}
	k.failClass = class
	k.failures++
	delay := retryDelay(err, class, k.failures)
	k.nextAttempt = k.clock.Now().Add(delay)
	k.lastErr = err
	if !k.closed {
		if k.stopRetry != nil {
			k.stopRetry()
		}
		k.stopRetry = k.clock.AfterFunc(delay, k.retryLogin)
	}
	ev := k.event(EventLoginFailed, nil)
	ev.Err, ev.Failures, ev.NextAttempt = err, k.failures, k.nextAttempt
	return ev
}

func (k *Keeper) retryLogin() {
	if k.cur.Load() == nil {
		k.flight.DoChan("login", k.login)
	}
}

// sessionDead asks CC, through one refresh shared by every caller meanwhile,
// whether s is still alive; a dead session is dropped (only if it is still
// the current one). A refresh that fails for another reason cannot tell, and
// counts as alive: a CC hiccup must not start a login storm.
func (k *Keeper) sessionDead(s *Session) bool {
	k.mu.Lock()
	trusted := k.aliveBearer == s.Bearer && k.clock.Now().Before(k.aliveUntil)
	k.mu.Unlock()
	if trusted {
		return false
	}
	dead, _, _ := k.flight.Do("alive:"+s.Bearer, func() (any, error) {
		dead, ok := k.refresh(s)
		if ok {
			// Trusted only from a check made for a 401: a periodic
			// refresh a moment ago says nothing about a 401 now.
			k.mu.Lock()
			k.aliveBearer, k.aliveUntil = s.Bearer, k.clock.Now().Add(aliveTrust)
			k.mu.Unlock()
		}
		return dead, nil
	})
	return dead.(bool)
}

// refresh refreshes s and reports whether CC said it is gone, and whether
// the refresh succeeded.
func (k *Keeper) refresh(s *Session) (dead, ok bool) {
	t := k.tuning.Load()
	ctx, cancel := context.WithTimeout(k.ctx, t.LoginTimeout)
	start := k.clock.Now()
	err := t.Client.Refresh(ctx, k.creds.AccountID, s)
	cancel()
	ev := k.event(EventRefresh, s)
	ev.Duration = k.clock.Now().Sub(start)
	var apiErr *APIError
	switch {
	case err == nil:
	case errors.As(err, &apiErr) && apiErr.StatusCode == 401:
		ev.Kind, ev.Err = EventSessionLost, err
		dead = true
	default:
		ev.Kind, ev.Err = EventRefreshFailed, err
	}
	k.mu.Lock()
	k.lastRefresh, k.lastRefreshResult = k.clock.Now(), "ok"
	if err != nil {
		k.lastRefreshResult = err.Error()
	}
	if dead {
		k.deadBearer = s.Bearer
	}
	k.mu.Unlock()
	k.emit(ev)
	if dead {
		k.cur.CompareAndSwap(s, nil)
	}
	return dead, err == nil
}

// refreshTick keeps the session alive; a session CC says is gone is
// replaced in the background.
func (k *Keeper) refreshTick() {
	s := k.cur.Load()
	if s == nil {
		return // the next login schedules the next refresh
	}
	var dead bool
	if k.clustered() {
		dead = k.refreshShared(s)
	} else {
		dead, _ = k.refresh(s)
	}
	if dead {
		k.retryLogin()
		return
	}
	k.rescheduleRefresh()
}

// rescheduleRefresh plans the next refresh of whatever session is current.
func (k *Keeper) rescheduleRefresh() {
	k.mu.Lock()
	if !k.closed && k.cur.Load() != nil {
		k.scheduleRefreshLocked(k.tuning.Load().RefreshInterval)
	}
	k.mu.Unlock()
}

func (k *Keeper) scheduleRefreshLocked(d time.Duration) {
	if k.stopRefresh != nil {
		k.stopRefresh()
	}
	k.stopRefresh = k.clock.AfterFunc(d, k.refreshTick)
	k.nextRefresh = k.clock.Now().Add(d)
}

func (k *Keeper) stopTimersLocked() {
	for _, stop := range []func() bool{k.stopRetry, k.stopRefresh} {
		if stop != nil {
			stop()
		}
	}
	k.stopRetry, k.stopRefresh = nil, nil
	k.nextRefresh = time.Time{}
}

func (k *Keeper) event(kind EventKind, s *Session) Event {
	ev := Event{Kind: kind, Account: k.creds.AccountID, Mode: k.creds.Mode(), Username: k.creds.Username}
	if s != nil {
		ev.Host = s.BaseURL
	}
	return ev
}

func (k *Keeper) emit(ev Event) {
	if obs := k.tuning.Load().Observer; obs != nil {
		obs(ev)
	}
}

// timeoutError marks a login cut at the login timeout.
type timeoutError struct {
	after time.Duration
	err   error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("login timed out after %s: %v", e.after, e.err)
}
func (e *timeoutError) Unwrap() error { return e.err }
func (e *timeoutError) Timeout() bool { return true }

type failureClass int

const (
	failNone      failureClass = iota
	failRateLimit              // 429
	failConfig                 // other 4xx: wrong password, blacklisted (451), bad request
	failTransient              // 5xx, timeouts, connection errors
)

func classify(err error) failureClass {
	var apiErr *APIError
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
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > d {
		d = apiErr.RetryAfter
	}
	return d
}
