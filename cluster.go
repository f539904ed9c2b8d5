// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Cluster mode: the instances of a Caddy cluster share one credential
// through the storage they already share for certificates. One obtain and
// one renewal per interval serve the whole cluster: obtains and renewals
// run under the storage's lock, and an instance that only needs the current
// token reads the storage without locking.
//
// Every operation keeps the store it started with to its end: a lock is
// released through the very storage instance that took it, even if a reload
// has replaced that configuration meanwhile.

// sharedStore is where a cluster keeps its one credential, as opaque bytes
// the store encrypts. Load returns nil, nil when there is none or it cannot
// be read (a blob that does not decrypt is absent, not an error that stops
// traffic).
type sharedStore interface {
	Load(ctx context.Context) ([]byte, error)
	Save(ctx context.Context, data []byte) error
	Delete(ctx context.Context) error
	Lock(ctx context.Context) error
	Unlock(ctx context.Context) error
}

// sharedRecord is what the cluster stores: the source's encoding of the
// credential and when it was obtained and last renewed.
type sharedRecord struct {
	Credential  json.RawMessage `json:"credential"`
	Obtained    time.Time       `json:"obtained"`
	LastRenewal time.Time       `json:"last_renewal"`
}

// sharedCred is a stored credential, decoded.
type sharedCred struct {
	cred        *credential
	lastRenewal time.Time
}

// lockGrace is added to the login timeout to bound how long the lock can be
// held: its holder does one obtain or one renewal, each bounded by the
// login timeout, and two quick storage calls.
const lockGrace = 2 * time.Second

// storeTimeout bounds one storage read or write.
const storeTimeout = 5 * time.Second

// clusterState is what a clustered keeper keeps of the cluster.
type clusterState struct {
	// solo was obtained while the storage failed: known to no other
	// instance.
	solo *credential
}

// This file is the one place where a cluster differs from a single
// instance: where a credential comes from, how a renewal is shared, and
// what happens to it at the end. Whether a keeper is clustered is fixed
// when it is made, from its storage setting. Each call gets the settings
// snapshot its whole operation uses.

// obtainCredential gets a credential: this process's own, or the
// cluster's: the stored one if it is usable, else a new one obtained under
// the lock and stored for the others (adopted reports one another instance
// obtained).
func (k *keeper) obtainCredential(s *settings) (c *credential, adopted bool, err error) {
	if !k.clustered {
		c, err := k.sourceObtain(s)
		return c, false, err
	}
	if sh := k.loadShared(s); sh != nil && k.adoptable(sh.cred) {
		k.adopting(s, sh.cred)
		return sh.cred, true, nil // no lock needed just to read
	}
	sh, err := k.lockOrAdopt(s, func(sh *sharedCred) bool { return k.adoptable(sh.cred) })
	if sh != nil {
		k.adopting(s, sh.cred)
		return sh.cred, true, nil // stored by the lock's holder while we waited for it
	}
	if err != nil {
		if errors.Is(err, errClosed) {
			return nil, false, err
		}
		k.storeFailed(s, "lock", err)
		c, err := k.sourceObtain(s) // storage down: better a login of our own than no service
		if err == nil {
			k.obtainedAlone(c)
		}
		return c, false, err
	}
	defer k.unlockShared(s)
	if sh := k.loadShared(s); sh != nil && k.adoptable(sh.cred) {
		k.adopting(s, sh.cred)
		return sh.cred, true, nil // another instance obtained it while we waited
	}
	c, err = k.sourceObtain(s)
	if err != nil {
		return nil, false, err
	}
	c.Obtained = k.clock.Now()
	if !k.saveShared(s, c, c.Obtained) {
		k.obtainedAlone(c)
	}
	return c, false, nil
}

// renewCredential keeps c alive: an error that wraps errCredentialGone
// means c is gone, any other that the renewal failed and c is still in
// use. A cluster renews at most once per interval: under the lock, a
// credential another instance renewed recently is left alone, and one
// another instance replaced is adopted. When c is gone the caller obtains
// again, which takes the lock once more, so one instance obtains and the
// others adopt.
func (k *keeper) renewCredential(s *settings, c *credential) error {
	if !k.clustered {
		_, err := k.sourceRenew(s, c)
		return err
	}
	replaces := func(sh *sharedCred) bool {
		return sh.cred.Token != c.Token && k.adoptable(sh.cred) && !k.soloOutlives(c, sh)
	}
	sh, err := k.lockOrAdopt(s, replaces)
	if sh != nil {
		k.adoptInPlaceOf(s, c, sh.cred)
		return nil
	}
	if err != nil {
		if !errors.Is(err, errClosed) {
			k.storeFailed(s, "lock", err)
		}
		next, err := k.sourceRenew(s, c)
		if err == nil && next != c {
			k.obtainedAlone(next)
		}
		return err
	}
	defer k.unlockShared(s)
	sh = k.loadShared(s)
	switch {
	case sh == nil && k.isSolo(c), sh != nil && k.soloOutlives(c, sh):
		// Obtained while the storage failed, and nothing stored since: it
		// is renewed and stored below, not replaced.
	case sh != nil && replaces(sh):
		k.adoptInPlaceOf(s, c, sh.cred)
		return nil
	case sh != nil && sh.cred.Token == c.Token && c.Expires.IsZero() && k.clock.Now().Sub(sh.lastRenewal) < s.RefreshInterval*3/4:
		// Kept alive in place (a session refresh), and by another
		// instance moments ago. (One with an end is replaced when renewed:
		// the same token stored means nobody has.)
		k.takeSolo(c) // stored: the cluster's now
		return nil    // another instance renewed it
	}
	next, err := k.sourceRenew(s, c)
	if err == nil && k.saveShared(s, next, k.clock.Now()) {
		k.takeSolo(c) // stored: the cluster's now
	}
	return err
}

// soloOutlives says whether c, obtained while the storage failed, is to be
// kept over the stored sh: nothing was stored or renewed since c's login.
// If c is alive it is then the user's one session (CC keeps one per user),
// and the stored one, from before, is dead. (A session stored or renewed
// since outlived c's login: that one is adopted.)
func (k *keeper) soloOutlives(c *credential, sh *sharedCred) bool {
	return k.isSolo(c) && !later(sh.cred.Obtained, sh.lastRenewal).After(c.Obtained)
}

// adoptInPlaceOf makes stored, read from the storage, the credential in
// place of c.
func (k *keeper) adoptInPlaceOf(s *settings, c, stored *credential) {
	if k.cur.CompareAndSwap(c, stored) {
		k.emit(s, k.event(eventAdopted, stored))
		k.adopting(s, stored)
	}
}

// storedSince returns the credential stored for the cluster that was
// obtained or renewed after since (so not one of those that ended then),
// or nil: read without the lock, for a keeper that may adopt only such a
// one.
func (k *keeper) storedSince(s *settings, since time.Time) *credential {
	if !k.clustered {
		return nil
	}
	sh := k.loadShared(s)
	if sh == nil || !k.adoptable(sh.cred) || !later(sh.cred.Obtained, sh.lastRenewal).After(since) {
		return nil
	}
	return sh.cred
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// adoptNewer replaces failed with the stored credential if another
// instance has already replaced it. One storage read serves every 401
// meanwhile.
func (k *keeper) adoptNewer(s *settings, failed *credential) *credential {
	if !k.clustered {
		return nil
	}
	v, _, _ := k.flight.Do("shared-load", func() (any, error) { return k.loadShared(s), nil })
	sh, _ := v.(*sharedCred)
	if sh == nil || sh.cred.Token == failed.Token || !k.adoptable(sh.cred) {
		return nil
	}
	if k.cur.CompareAndSwap(failed, sh.cred) {
		k.emit(s, k.event(eventAdopted, sh.cred))
		k.adopting(s, sh.cred)
		k.mu.Lock()
		if !k.closed {
			k.scheduleRenewalLocked(sh.cred, s.RefreshInterval)
		}
		k.mu.Unlock()
	}
	return k.cur.Load()
}

// releaseCredential ends c when the keeper closes; a cluster's is removed
// from the storage too, so that no instance adopts it.
func (k *keeper) releaseCredential(s *settings, c *credential) error {
	if !k.clustered {
		return k.release(s, c)
	}
	err := k.release(s, c)
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if sh := k.decodeShared(s.Store.Load(ctx)); sh != nil && sh.cred.Token != c.Token {
		return err // already replaced by another instance's obtain
	}
	if derr := s.Store.Delete(ctx); derr != nil {
		k.storeFailed(s, "delete", derr)
	}
	return err
}

// abandon disposes of c, obtained by this process but not to be used (the
// keeper closed while obtaining it): released, unless it is stored for the
// other instances of a cluster.
func (k *keeper) abandon(s *settings, c *credential) {
	if !k.clustered {
		_ = k.release(s, c)
	}
}

// While an instance waits for the cluster's lock it reads the stored
// credential, so that it adopts the one the lock's holder stores as soon as
// it is there, instead of when its own Lock returns (storages poll their
// locks about once a second): first watchFirst after it began to wait (a
// quick login is often stored by then), the gap doubling to watchEvery. At
// most 50 reads a second per instance once settled, and only while it
// waits for the lock.
const (
	watchFirst = 5 * time.Millisecond
	watchEvery = 20 * time.Millisecond
)

// lockOrAdopt takes the cluster's lock, or, should another instance store
// a credential that adopt accepts while it waits, returns that one without
// the lock (a lock acquired after all is released at once, in the
// background, through the same storage instance).
func (k *keeper) lockOrAdopt(s *settings, adopt func(*sharedCred) bool) (*sharedCred, error) {
	ctx, cancel := context.WithCancel(k.ctx)
	locked := make(chan error, 1)
	go func() { locked <- k.lockShared(ctx, s) }()
	gap := watchFirst
	timer := time.NewTimer(gap)
	defer timer.Stop()
	watch := timer.C
	for {
		select {
		case err := <-locked:
			cancel()
			return nil, err
		case <-watch:
			sh, err := k.loadSharedQuietly(s)
			if err != nil {
				watch = nil // the storage fails: its Lock will say so, once
				continue
			}
			if sh == nil || !adopt(sh) {
				gap = min(2*gap, watchEvery)
				timer.Reset(gap)
				continue
			}
			cancel()
			go func() {
				if <-locked == nil {
					k.unlockShared(s)
				}
			}()
			return sh, nil
		}
	}
}

// lockShared takes the cluster's lock, unless ctx ends first. No holder keeps it longer than a
// login timeout plus a grace: one held longer was left by an instance that
// died, which file_system storage does not always notice (a former holder's
// freshness updater can keep a dead holder's lock file fresh). Such a lock is
// broken, once; the jitter keeps waiting instances from breaking it together.
func (k *keeper) lockShared(parent context.Context, s *settings) error {
	for attempt := 0; ; attempt++ {
		bound := s.LoginTimeout + lockGrace + rand.N(lockGrace)
		ctx, cancel := context.WithTimeout(parent, bound)
		err := s.Store.Lock(ctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case parent.Err() != nil:
			return errClosed
		case !errors.Is(err, context.DeadlineExceeded) || attempt > 0:
			return err
		}
		k.storeFailed(s, "lock", fmt.Errorf("held for more than %s, longer than any login; breaking it", bound.Round(time.Second)))
		k.unlockShared(s)
	}
}

func (k *keeper) unlockShared(s *settings) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := s.Store.Unlock(ctx); err != nil {
		k.storeFailed(s, "unlock", err)
	}
}

func (k *keeper) loadShared(s *settings) *sharedCred {
	sh, err := k.loadSharedQuietly(s)
	if err != nil && k.ctx.Err() == nil {
		k.storeFailed(s, "load", err)
	}
	return sh
}

// loadSharedQuietly is loadShared without reporting a failure.
func (k *keeper) loadSharedQuietly(s *settings) (*sharedCred, error) {
	ctx, cancel := context.WithTimeout(k.ctx, storeTimeout)
	defer cancel()
	data, err := s.Store.Load(ctx)
	return k.decodeShared(data, err), err
}

// decodeShared reads a stored record; anything unreadable is absent.
func (k *keeper) decodeShared(data []byte, err error) *sharedCred {
	if err != nil || data == nil {
		return nil
	}
	var rec sharedRecord
	if json.Unmarshal(data, &rec) != nil {
		return nil
	}
	c, err := k.src.Decode(rec.Credential)
	if err != nil {
		return nil
	}
	c.Obtained = rec.Obtained
	return &sharedCred{cred: c, lastRenewal: rec.LastRenewal}
}

// saveShared stores c for the other instances and reports whether it could.
func (k *keeper) saveShared(s *settings, c *credential, lastRenewal time.Time) bool {
	enc, err := k.src.Encode(c)
	if err == nil {
		var data []byte
		if data, err = json.Marshal(sharedRecord{Credential: enc, Obtained: c.Obtained, LastRenewal: lastRenewal}); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			err = s.Store.Save(ctx, data)
			cancel()
		}
	}
	if err != nil {
		k.storeFailed(s, "save", err)
	}
	return err == nil
}

// A credential obtained while the storage failed is known to this instance
// alone: once the instance adopts the stored one, nobody uses it, and left
// alone it would live on at CC until its TTL (one more live session per
// instance and outage).

// obtainedAlone notes that c, about to be used, is in no storage.
func (k *keeper) obtainedAlone(c *credential) {
	k.mu.Lock()
	k.cluster.solo = c
	k.mu.Unlock()
}

// isSolo says whether c is the credential this keeper obtained alone.
func (k *keeper) isSolo(c *credential) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster.solo != nil && k.cluster.solo.Token == c.Token
}

// takeSolo forgets c as obtained alone (it is stored now, or gone, or
// released elsewhere) and reports whether it was.
func (k *keeper) takeSolo(c *credential) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.takeSoloLocked(c)
}

func (k *keeper) takeSoloLocked(c *credential) bool {
	if k.cluster.solo == nil || k.cluster.solo.Token != c.Token {
		return false
	}
	k.cluster.solo = nil
	return true
}

// adopting is told that stored, read from the storage, replaces the one in
// use: the one obtained alone, if any and not stored itself, is released,
// once, in the background (the caller may be a request), with the settings
// of the operation that adopts.
func (k *keeper) adopting(s *settings, stored *credential) {
	k.mu.Lock()
	solo := k.cluster.solo
	k.cluster.solo = nil
	k.mu.Unlock()
	if solo != nil && solo.Token != stored.Token {
		k.releaseInBackground(s, solo)
	}
}

func (k *keeper) storeFailed(s *settings, op string, err error) {
	ev := k.event(eventStoreFailed, nil)
	ev.Err = &storeError{op: op, err: err}
	k.emit(s, ev)
}

type storeError struct {
	op  string
	err error
}

func (e *storeError) Error() string { return "shared storage " + e.op + ": " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }
