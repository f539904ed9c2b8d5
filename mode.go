// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import "time"

// mode is the one place where a cluster differs from a single instance:
// where a credential comes from, how a renewal is shared, and what happens
// to it at the end. A keeper's mode is fixed when the keeper is made. Each
// call gets the settings snapshot its whole operation uses.
type mode interface {
	// obtain gets a credential: this process's own, or the cluster's
	// (adopted reports one another instance obtained).
	obtain(k *Keeper, s *Settings) (c *Credential, adopted bool, err error)
	// renew keeps c alive; an error that wraps ErrCredentialGone means c
	// is gone, any other that the renewal failed and c is still in use.
	renew(k *Keeper, s *Settings, c *Credential) error
	// adoptNewer returns the credential that has already replaced failed
	// elsewhere, or nil.
	adoptNewer(k *Keeper, s *Settings, failed *Credential) *Credential
	// storedSince returns the credential stored for the cluster that was
	// obtained or renewed after since (so not one of those that ended
	// then), or nil.
	storedSince(k *Keeper, s *Settings, since time.Time) *Credential
	// release ends c when the keeper closes.
	release(k *Keeper, s *Settings, c *Credential) error
	// abandon disposes of c, obtained by this process but not to be used
	// (the keeper closed while obtaining it).
	abandon(k *Keeper, s *Settings, c *Credential)
}

// localMode: the credential is this process's own.
type localMode struct{}

func (localMode) obtain(k *Keeper, s *Settings) (*Credential, bool, error) {
	c, err := k.sourceObtain(s)
	return c, false, err
}

func (localMode) renew(k *Keeper, s *Settings, c *Credential) error {
	_, err := k.sourceRenew(s, c)
	return err
}

func (localMode) adoptNewer(*Keeper, *Settings, *Credential) *Credential { return nil }

func (localMode) storedSince(*Keeper, *Settings, time.Time) *Credential { return nil }

func (localMode) release(k *Keeper, s *Settings, c *Credential) error { return k.release(s, c) }

func (localMode) abandon(k *Keeper, s *Settings, c *Credential) { _ = k.release(s, c) }
