// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

// attachConfig gives the keeper this config's settings. They apply from
// the moment the config starts (its events app's "started", which Caddy
// emits only for a config that loaded whole, never for `caddy validate`)
// and stop applying when its context is done, which Caddy does before it
// cleans up any module: so a failed reload, provisioned and then cancelled,
// changes nothing, and a storage instance is let go before it is closed.
func attachConfig(ctx caddy.Context, k *keeper, s settings) error {
	events, err := configOf(ctx)
	if err != nil {
		return err
	}
	use, err := k.Attach(events, s, ctx.Done())
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, use.Detach)
	if err := events.On("started", startOnEvent{use}); err != nil {
		return fmt.Errorf("lpauth: events app: %w", err)
	}
	return nil
}

// configOf returns what tells one loaded config from another: its events
// app, one instance shared by all its modules (their contexts differ per
// server), the one whose "started" says the config runs.
func configOf(ctx caddy.Context) (*caddyevents.App, error) {
	app, err := ctx.App("events")
	if err != nil {
		return nil, fmt.Errorf("lpauth: events app: %w", err)
	}
	return app.(*caddyevents.App), nil
}

// startOnEvent starts a Use when its config's "started" event arrives.
type startOnEvent struct{ use *use }

func (s startOnEvent) Handle(context.Context, caddy.Event) error {
	s.use.Start()
	replaceOthersOf(s.use.Keeper(), s.use.Owner())
	return nil
}

// replaceOthersOf hands the CC user of k over to k in every other keeper of
// that user that the starting configuration owner does not use: they belong
// to the configuration being replaced (the password or secret changed), and
// must not log in again while their requests finish.
func replaceOthersOf(k *keeper, owner any) {
	forEachKeeper(func(o *keeper) {
		if o != k && o.Identity().SameUser(k.Identity()) && !o.AttachedTo(owner) {
			o.Supersede(k)
		}
	})
}

// Interface guard
var _ caddyevents.Handler = startOnEvent{}
