// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// settings are what one configuration gives a keeper: the session-wide
// values (one per keeper at a time) and the configuration's own instances,
// used only while that configuration runs.
type settings struct {
	// Session-wide: compared between blocks of one configuration.
	RefreshInterval time.Duration
	LoginTimeout    time.Duration
	// LogoutOnStop releases the credential at Close. Off in cluster mode
	// by default: the other instances still use it.
	LogoutOnStop bool
	// CAFile is the extra CA bundle Client trusts ("" for none); one
	// Client serves the keeper, so blocks must agree on it.
	CAFile string

	// The configuration's instances.
	Client *cc.Client
	// Store, in cluster mode, is where the cluster keeps its one
	// credential; nil on a single instance.
	Store sharedStore
	// Observer, if set, is told of everything that happens to the
	// credential. It is called synchronously and must not block.
	Observer func(event)
}

// use is one configuration's hold on a keeper, from Attach to Detach.
type use struct {
	k        *keeper
	owner    any
	s        settings
	done     <-chan struct{}
	seq      uint64 // order of attachment
	startSeq uint64 // order of start; 0 until started
	refs     int
}

// Attach registers the settings of the configuration owner, whose life
// ends when done is closed (nil: never). Which configuration's settings
// apply is decided anew whenever one attaches, starts, ends or detaches:
// the newest started one that has not ended, else (nothing has started
// yet) the newest attached. So a configuration that is provisioned but
// never starts, as when a reload fails, changes nothing; one that starts
// applies from then on.
//
// Several handlers of one configuration share one use; if they disagree
// on a session-wide value, Attach fails with a *settingsConflict.
func (k *keeper) Attach(owner any, s settings, done <-chan struct{}) (*use, error) {
	if k.clustered != (s.Store != nil) {
		return nil, errors.New("lpauth: a clustered keeper needs a store, a local one none")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, u := range k.uses {
		if u.owner == owner {
			if err := compareSettings(k.id, u.s, s); err != nil {
				return nil, err
			}
			u.refs++
			return u, nil
		}
	}
	k.lastSeq++
	u := &use{k: k, owner: owner, s: s, done: done, seq: k.lastSeq, refs: 1}
	k.uses = append(k.uses, u)
	k.appliedChangedLocked()
	return u, nil
}

// Start marks the configuration as running: from now on its settings
// apply, until a newer one starts. A keeper with no credential begins to
// obtain one at once, in the background, so the first request finds it.
func (u *use) Start() {
	k := u.k
	k.mu.Lock()
	first := u.startSeq == 0
	if first {
		k.lastSeq++
		u.startSeq = k.lastSeq
		k.appliedChangedLocked()
	}
	k.mu.Unlock()
	if first {
		k.heir.Store(nil) // a running configuration uses it again
		k.obtainInBackground()
	}
}

// obtainInBackground starts the single obtain unless there is a credential
// or the keeper is backing off (its retry is planned) or closed.
func (k *keeper) obtainInBackground() {
	if k.cur.Load() == nil {
		k.startObtain()
	}
}

// Detach drops one hold; when the last handler of the configuration lets
// go, its settings no longer apply.
func (u *use) Detach() {
	k := u.k
	k.mu.Lock()
	defer k.mu.Unlock()
	if u.refs == 0 {
		return
	}
	if u.refs--; u.refs > 0 {
		return
	}
	for i, v := range k.uses {
		if v == u {
			k.uses = append(k.uses[:i], k.uses[i+1:]...)
			break
		}
	}
	if c := u.s.Client; c != nil && k.settingsLocked().Client != c {
		c.CloseIdleConnections() // nothing of this configuration needs them now
	}
	k.appliedChangedLocked()
}

// settings returns the settings that apply now. A configuration whose life
// has ended is passed over at once, before it is detached: its instances
// (a storage module) may be closed at any moment after. Without a lock
// while nothing changes: the request path of lpdomain asks for the client.
func (k *keeper) settings() *settings {
	if u := k.applied.Load(); u != nil && !ended(u.done) {
		return &u.s
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.settingsLocked()
}

func (k *keeper) settingsLocked() *settings {
	var best *use
	for _, u := range k.uses {
		if ended(u.done) {
			continue
		}
		if best == nil || u.startSeq > best.startSeq || (u.startSeq == best.startSeq && u.seq > best.seq) {
			best = u
		}
	}
	k.applied.Store(best)
	if best != nil {
		k.fallback = &best.s
	}
	if k.fallback == nil {
		return &settings{LoginTimeout: defaultLoginTimeout, RefreshInterval: defaultRefreshInterval}
	}
	return k.fallback
}

// appliedChangedLocked reschedules the renewal when the settings that apply
// now ask for another interval than the one it was planned with.
func (k *keeper) appliedChangedLocked() {
	now := k.settingsLocked()
	if c := k.cur.Load(); c != nil && !k.closed && k.renewal.every != now.RefreshInterval {
		k.scheduleRenewalLocked(c, now.RefreshInterval)
	}
}

func ended(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// settingsConflict is two blocks of one identity in one configuration that
// disagree on a session-wide setting.
type settingsConflict struct {
	Identity identity
	Setting  string // the Caddyfile name
	A, B     string
}

func (e *settingsConflict) Error() string {
	return fmt.Sprintf("lpauth: two lpauth blocks for account %s, %s %q share one session but disagree on %s: %s and %s",
		e.Identity.Account, e.Identity.Kind, e.Identity.Name, e.Setting, e.A, e.B)
}

func compareSettings(id identity, a, b settings) error {
	conflict := func(name, x, y string) error {
		return &settingsConflict{Identity: id, Setting: name, A: x, B: y}
	}
	switch {
	case a.RefreshInterval != b.RefreshInterval:
		return conflict("refresh_interval", a.RefreshInterval.String(), b.RefreshInterval.String())
	case a.LoginTimeout != b.LoginTimeout:
		return conflict("login_timeout", a.LoginTimeout.String(), b.LoginTimeout.String())
	case a.LogoutOnStop != b.LogoutOnStop:
		return conflict("logout_on_stop", strconv.FormatBool(a.LogoutOnStop), strconv.FormatBool(b.LogoutOnStop))
	case a.CAFile != b.CAFile:
		return conflict("ca_file", pathOrNone(a.CAFile), pathOrNone(b.CAFile))
	}
	return nil
}

func pathOrNone(p string) string {
	if p == "" {
		return "none"
	}
	return p
}

// Keeper is the keeper this use holds.
func (u *use) Keeper() *keeper { return u.k }

// Owner is the configuration the use belongs to.
func (u *use) Owner() any { return u.owner }

// AttachedTo says whether the configuration owner uses the keeper.
func (k *keeper) AttachedTo(owner any) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, u := range k.uses {
		if u.owner == owner {
			return true
		}
	}
	return false
}
