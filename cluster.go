// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"time"
)

// Cluster mode: the instances of a Caddy cluster share one CC session
// through the storage they already share for certificates. One login and
// one refresh per interval serve the whole cluster: logins and refreshes run
// under the storage's lock, and an instance that only needs the current
// token reads the storage without locking.

// SharedState is the session as the cluster shares it.
type SharedState struct {
	Session     *Session
	LastRefresh time.Time
}

// SharedStore is where a cluster keeps its one session. Load returns nil,
// nil when there is no session or it cannot be read (a blob that does not
// decrypt is absent, not an error that stops traffic).
type SharedStore interface {
	Load(ctx context.Context) (*SharedState, error)
	Save(ctx context.Context, st *SharedState) error
	Delete(ctx context.Context) error
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

func (k *Keeper) store() SharedStore { return k.tuning.Load().Shared }

func (k *Keeper) clustered() bool { return k.tuning.Load().Shared != nil }

// lockGrace is added to the login timeout to bound how long the lock can be
// held: its holder does one login or one refresh, each bounded by the login
// timeout, and two quick storage calls.
const lockGrace = 2 * time.Second

// storeTimeout bounds one storage read or write.
const storeTimeout = 5 * time.Second

// obtainShared gets the cluster's session: the stored one if it is usable,
// else a new login made under the lock and stored for the others.
func (k *Keeper) obtainShared(t *Tuning) (s *Session, adopted bool, err error) {
	if st := k.loadShared(); st != nil && k.usable(st.Session) {
		return st.Session, true, nil // no lock needed just to read
	}
	if err := k.lockShared(t); err != nil {
		if errors.Is(err, ErrClosed) {
			return nil, false, err
		}
		k.storeFailed("lock", err)
		s, err := k.ccLogin(t) // storage down: better a login of our own than no service
		return s, false, err
	}
	defer k.unlockShared()
	if st := k.loadShared(); st != nil && k.usable(st.Session) {
		return st.Session, true, nil // another instance logged in while we waited
	}
	if s, err = k.ccLogin(t); err != nil {
		return nil, false, err
	}
	s.Obtained = k.clock.Now()
	k.saveShared(&SharedState{Session: s, LastRefresh: s.Obtained})
	return s, false, nil
}

// usable says whether a stored session may be adopted: not one this keeper
// already found gone.
func (k *Keeper) usable(s *Session) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return s.Bearer != k.deadBearer
}

// adoptNewer replaces failed with the stored session if another instance
// has already replaced it. One storage read serves every 401 meanwhile.
func (k *Keeper) adoptNewer(failed *Session) *Session {
	v, _, _ := k.flight.Do("shared-load", func() (any, error) { return k.loadShared(), nil })
	st, _ := v.(*SharedState)
	if st == nil || st.Session.Bearer == failed.Bearer || !k.usable(st.Session) {
		return nil
	}
	if k.cur.CompareAndSwap(failed, st.Session) {
		k.emit(k.event(EventAdopted, st.Session))
		k.rescheduleRefresh()
	}
	return k.cur.Load()
}

// refreshShared refreshes for the whole cluster, at most once per interval:
// under the lock, a session another instance refreshed recently is left
// alone, and a session another instance replaced is adopted. It reports
// whether the session is gone (the caller logs in again, which takes the
// lock once more, so one instance logs in and the others adopt).
func (k *Keeper) refreshShared(s *Session) (dead bool) {
	t := k.tuning.Load()
	if err := k.lockShared(t); err != nil {
		if !errors.Is(err, ErrClosed) {
			k.storeFailed("lock", err)
		}
		dead, _ = k.refresh(s)
		return dead
	}
	st := k.loadShared()
	switch {
	case st != nil && st.Session.Bearer != s.Bearer && k.usable(st.Session):
		k.unlockShared()
		if k.cur.CompareAndSwap(s, st.Session) {
			k.emit(k.event(EventAdopted, st.Session))
		}
		return false
	case st != nil && st.Session.Bearer == s.Bearer && k.clock.Now().Sub(st.LastRefresh) < t.RefreshInterval*3/4:
		k.unlockShared()
		return false // another instance refreshed it
	}
	dead, ok := k.refresh(s)
	if ok {
		k.saveShared(&SharedState{Session: s, LastRefresh: k.clock.Now()})
	}
	k.unlockShared()
	return dead
}

// lockShared takes the cluster's lock. No holder keeps it longer than a
// login timeout plus a grace: one held longer was left by an instance that
// died, which file_system storage does not always notice (a former holder's
// freshness updater can keep a dead holder's lock file fresh). Such a lock is
// broken, once; the jitter keeps waiting instances from breaking it together.
func (k *Keeper) lockShared(t *Tuning) error {
	for attempt := 0; ; attempt++ {
		bound := t.LoginTimeout + lockGrace + rand.N(lockGrace)
		ctx, cancel := context.WithTimeout(k.ctx, bound)
		err := k.store().Lock(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case k.ctx.Err() != nil:
			return ErrClosed
		case !errors.Is(err, context.DeadlineExceeded) || attempt > 0:
			return err
		}
		k.storeFailed("lock", fmt.Errorf("held for more than %s, longer than any login; breaking it", bound.Round(time.Second)))
		k.unlockShared()
	}
}

// dropShared removes the stored session after a logout, so that no
// instance adopts it.
func (k *Keeper) dropShared(s *Session) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if st, _ := k.store().Load(ctx); st != nil && st.Session.Bearer != s.Bearer {
		return // already replaced by another instance's login
	}
	if err := k.store().Delete(ctx); err != nil {
		k.storeFailed("delete", err)
	}
}

func (k *Keeper) loadShared() *SharedState {
	ctx, cancel := context.WithTimeout(k.ctx, storeTimeout)
	defer cancel()
	st, err := k.store().Load(ctx)
	if err != nil {
		if k.ctx.Err() == nil {
			k.storeFailed("load", err)
		}
		return nil
	}
	return st
}

func (k *Keeper) saveShared(st *SharedState) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := k.store().Save(ctx, st); err != nil {
		k.storeFailed("save", err)
	}
}

func (k *Keeper) unlockShared() {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := k.store().Unlock(ctx); err != nil {
		k.storeFailed("unlock", err)
	}
}

func (k *Keeper) storeFailed(op string, err error) {
	ev := k.event(EventStoreFailed, nil)
	ev.Err = &storeError{op: op, err: err}
	k.emit(ev)
}

type storeError struct {
	op  string
	err error
}

func (e *storeError) Error() string { return "shared storage " + e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// restoreSession rebuilds a session read from the shared storage.
func restoreSession(p plainState) (*Session, error) {
	u, err := url.Parse(p.BaseURL)
	if err != nil || u.Host == "" || !isToken(p.Bearer) || !isToken(p.CSRF) || !isCookieValue(p.SessionID) {
		return nil, errInvalidStored // the same checks as a login reply's
	}
	s := &Session{
		Bearer: p.Bearer, CSRF: p.CSRF, SessionID: p.SessionID, BaseURL: p.BaseURL,
		TTL: time.Duration(p.TTL) * time.Millisecond, Obtained: p.Obtained,
		authValue: "Bearer " + p.Bearer, host: u.Host,
	}
	return s, nil
}
