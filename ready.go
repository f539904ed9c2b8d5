// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Ready{}) // its directive: caddyfile.go
}

// Ready answers a readiness probe for lpauth: 200 OK when every identity
// (account and user, or AppJWT client) that the lpauth handlers of its
// server use has a live credential, 503 Service Unavailable otherwise.
// It never waits and never starts a login: it only reports what the
// sessions are, so a probe costs CC nothing however often it runs.
// It does not call the next handler.
//
// The body is JSON, sent with `Cache-Control: no-store`, one entry per
// identity in route order, and never a secret:
//
//	{"ready": false, "identities": [
//	  {"account_id": "123", "mode": "user", "name": "bot", "host": "https://api.liveperson.net",
//	   "state": "ready", "consecutive_failures": 0},
//	  {"account_id": "123", "mode": "app_jwt", "name": "my-client", "host": "https://api.liveperson.net",
//	   "state": "backing_off",
//	   "consecutive_failures": 2, "backoff_until": "2026-01-01T10:00:00Z"}
//	]}
//
// mode is user, application or app_jwt; name is the user name, or the
// client id; host is where the identity goes first, as configured (domain,
// else csds), which tells apart identities that differ only in host; state is ready, logging_in (no credential yet, and not backing
// off), backing_off (the last login failed; the keeper waits until
// backoff_until before it tries again) or conflict (sessions of this user
// keep ending soon after login: CC keeps one session per user and another
// client holds it; no login before backoff_until). A 503 carries no Retry-After:
// probes ignore it, and proxied requests get their own.
//
// The lpauth handlers counted are all those of the server the probe
// request arrived on: its routes, error routes and named routes, at any
// depth (handle, handle_path, route). In a Caddyfile one server holds every
// site that listens on the same address. A server with no lpauth handler
// answers 200 with an empty list (nothing there needs CC), and logs one
// warning, as that is most likely a mistake.
//
// In a Caddyfile, `lpauth_ready /healthz` at site level is ordered before
// lpauth (and after basic_auth and forward_auth), so a site-level lpauth
// never runs first. `handle /healthz { lpauth_ready }` works too: a
// site-level lpauth then runs first, but one without a session sees that
// the probe comes next and does not wait for a login.
type Ready struct {
	handlers *perServer[[]*Handler] // the lpauth handlers of the server last seen
	logger   *zap.Logger
}

// readyIdentity is one identity of a readiness answer. It holds no secret.
type readyIdentity struct {
	AccountID           string    `json:"account_id"`
	Kind                string    `json:"mode"`
	Name                string    `json:"name"`
	Host                string    `json:"host"` // as configured: domain, else csds
	State               string    `json:"state"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	BackoffUntil        time.Time `json:"backoff_until,omitzero"`
}

// readyReport is the readiness answer.
type readyReport struct {
	Ready      bool            `json:"ready"`
	Identities []readyIdentity `json:"identities"`
}

// CaddyModule returns the Caddy module information.
func (Ready) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.lpauth_ready",
		New: func() caddy.Module { return new(Ready) },
	}
}

// Provision sets the handler up. The lpauth handlers it reports on are
// found at the first request, once the whole server is provisioned.
func (rd *Ready) Provision(ctx caddy.Context) error {
	rd.logger = ctx.Logger()
	rd.handlers = new(perServer[[]*Handler])
	return nil
}

// ServeHTTP answers the probe.
func (rd *Ready) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	report := readyReport{Ready: true, Identities: []readyIdentity{}}
	var seen []*keeper
	for _, h := range rd.handlers.get(srv, rd.lpauthHandlersOf) {
		k := h.keeper
		if k == nil || slices.Contains(seen, k) {
			continue
		}
		seen = append(seen, k)
		id := readyIdentityOf(k)
		id.Host = h.configuredHost
		report.Ready = report.Ready && id.State == StateReady
		report.Identities = append(report.Identities, id)
	}
	body, err := json.Marshal(report)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, fmt.Errorf("lpauth: readiness answer: %w", err))
	}
	status := http.StatusOK
	if !report.Ready {
		status = http.StatusServiceUnavailable
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err = w.Write(append(body, '\n'))
	return err
}

// lpauthHandlersOf finds the lpauth handlers of srv, once per server
// instance (a reload makes a new one).
func (rd *Ready) lpauthHandlersOf(srv *caddyhttp.Server) []*Handler {
	handlers := lpauthHandlersOf(srv)
	if len(handlers) == 0 {
		rd.logger.Warn("lpauth_ready is in a server without any lpauth handler: it answers 200 with no identity")
	}
	return handlers
}

// readyIdentityOf reports k's state without waiting for it.
func readyIdentityOf(k *keeper) readyIdentity {
	st := k.Status()
	id := readyIdentity{AccountID: st.AccountID, Kind: st.Kind, Name: st.Username, ConsecutiveFailures: st.ConsecutiveFailures, State: st.State}
	if st.State == StateBackingOff || st.State == StateConflict {
		id.BackoffUntil = st.BackoffUntil.UTC().Truncate(time.Second)
	}
	return id
}

func parseReadyCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var rd Ready
	err := rd.UnmarshalCaddyfile(h.Dispenser)
	return &rd, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	lpauth_ready [<matcher>]
//
// It takes no arguments and no options (an empty block is accepted).
// Typical use, at site level beside a site-level lpauth:
//
//	lpauth_ready /healthz
func (rd *Ready) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("lpauth_ready: takes no arguments besides a matcher, got %q", d.Val())
	}
	for d.NextBlock(0) {
		return d.Errf("lpauth_ready: takes no options, got %q", d.Val())
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Ready)(nil)
	_ caddyhttp.MiddlewareHandler = (*Ready)(nil)
	_ caddyfile.Unmarshaler       = (*Ready)(nil)
)
