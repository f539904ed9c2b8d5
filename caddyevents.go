// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

func init() {
	caddy.RegisterModule(eventOrigin{})
}

// Names of the Caddy events lpauth emits, one per change of a session's
// state.
const (
	caddyEventLogin       = "lpauth.login"
	caddyEventLoginFailed = "lpauth.login_failed"
	caddyEventSessionLost = "lpauth.session_lost"
	caddyEventLogout      = "lpauth.logout"
	caddyEventAdopted     = "lpauth.adopted"
	caddyEventStoreFailed = "lpauth.store_failed"
)

// eventEmitter publishes a keeper's state changes through Caddy's events
// app, so that subscribers (`events { on lpauth.login_failed exec ... }`)
// can act on them. Their origin is the module eventOriginID. Every event
// carries this data, none of it secret:
//
//	account_id  the CC account
//	mode        user, application or app_jwt
//	username    the CC user name, or the AppJWT's client id
//	host        the host that issued the credential ("" when not known)
//
// and some events more:
//
//	lpauth.login         a session was obtained.
//	                     replaced: true if an earlier session existed (a re-login)
//	lpauth.login_failed  a login failed.
//	                     status: CC's HTTP status, 0 if none came (timeout, connection)
//	                     reason: the error text
//	                     consecutive_failures: failed logins in a row, this one included
//	                     next_attempt: when the next login may start, RFC 3339 UTC
//	lpauth.session_lost  CC said the session is gone; a re-login follows,
//	                     unless the keeper waits out a conflict.
//	                     lived_seconds: how long the session lived
//	                     short_lived: true if it lived less than 60 s, counted
//	                       towards the conflict wait (one session per user)
//	                     next_attempt: only when this loss starts the conflict
//	                       wait: when the next login may start, RFC 3339 UTC
//	lpauth.logout        the session was logged out (at stop).
//	lpauth.adopted       cluster mode: took the session another instance obtained.
//	lpauth.store_failed  cluster mode: the shared storage failed; working alone.
//	                     reason: the error text
//
// Refreshes, failed refreshes and failed logouts emit nothing (the session
// did not change state), and nothing is emitted per request. Which kind
// emits what is eventTable's (observer.go).
//
// Events are emitted synchronously, in the order the keeper reports them:
// Caddy's event handlers are expected to be quick (exec runs its command in
// the background unless told to wait), and so the logout at stop reaches
// the subscribers before the process exits, which a hand-off to a goroutine
// would not promise.
type eventEmitter struct {
	app *caddyevents.App
	// ctx names eventOrigin as the origin and is never cancelled: the
	// logout at stop runs after Caddy has cancelled the last config's
	// context, and caddyevents drops an event on a cancelled one.
	ctx caddy.Context
}

// eventOriginID is the module Caddy names as the origin of lpauth's events
// (`{event.module}`). As events propagate up the module namespace, a
// subscription to the modules `http.handlers.lpauth` receives them too.
const eventOriginID = "http.handlers.lpauth.events"

// eventOrigin stands for the handler as the origin of its events; it has
// no configuration, and it is not an HTTP handler, though its ID sits
// among them (so `caddy list-modules` shows it there, and a route naming
// `lpauth.events` fails to load it as one). It sits there because Caddy
// delivers an event only up its origin's own module ID, and
// `{event.module}` is that ID: under http.handlers.lpauth, a subscription
// to the handler's modules receives lpauth's events. The handler's own
// provisioning context cannot serve as the origin: Caddy shares the
// lineage of module contexts between siblings, so by the time the handler
// emits, the handler provisioned after it in the same route (a
// reverse_proxy) may have taken its place as the context's module. A
// context of its own, loaded once, keeps its lineage.
type eventOrigin struct{ ctx caddy.Context }

// CaddyModule returns the Caddy module information.
func (eventOrigin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  eventOriginID,
		New: func() caddy.Module { return new(eventOrigin) },
	}
}

// Provision keeps the context that names it as the module.
func (o *eventOrigin) Provision(ctx caddy.Context) error {
	o.ctx = ctx
	return nil
}

// newEventEmitter returns the emitter of the handler provisioned with ctx,
// or nil if the config has no events app (attachConfig reports that error).
func newEventEmitter(ctx caddy.Context) *eventEmitter {
	app, err := ctx.App("events")
	if err != nil {
		return nil
	}
	events, ok := app.(*caddyevents.App)
	if !ok {
		return nil
	}
	base := ctx
	base.Context = context.WithoutCancel(ctx.Context)
	// A new context has an empty lineage, so loading the origin into it
	// gives a lineage nothing else appends to. Its cancel would only clean
	// up eventOrigin, which holds nothing.
	own, _ := caddy.NewContext(base)
	mod, err := own.LoadModuleByID(eventOriginID, nil)
	if err != nil {
		return nil
	}
	return &eventEmitter{app: events, ctx: mod.(*eventOrigin).ctx}
}

// emit publishes ev if its kind is a change of state (spec, its entry in
// eventTable, names the Caddy event). Every event carries the identity;
// spec adds the kind's own data.
func (e *eventEmitter) emit(spec eventSpec, ev event) {
	if e == nil || spec.caddyEvent == "" || !e.app.ShouldEmit(spec.caddyEvent) {
		return
	}
	data := map[string]any{
		"account_id": ev.Account,
		"mode":       ev.LoginKind,
		"username":   ev.Username,
		"host":       ev.Host,
	}
	if spec.data != nil {
		spec.data(ev, data)
	}
	ctx := e.ctx
	// A replacer of its own: caddyevents adds the event's placeholders to
	// the context's one, which must not be shared between events.
	ctx.Context = context.WithValue(ctx.Context, caddy.ReplacerCtxKey, caddy.NewReplacer())
	e.app.Emit(ctx, spec.caddyEvent, data)
}

// Interface guard
var _ caddy.Provisioner = (*eventOrigin)(nil)
