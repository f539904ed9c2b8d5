// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package caddyccemu serves the ccemu Conversational Cloud emulator from
// Caddy as the terminal handler "http.handlers.ccemu" (Caddyfile directive
// "ccemu"). Emulators are pooled by account, base URI and domain form, so
// sessions, counters and open UMS sockets survive a config reload. The UMS
// WebSocket upgrades through Caddy: the emulator's library finds the
// connection to hijack by unwrapping Caddy's response writer.
package caddyccemu

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

func init() {
	caddy.RegisterModule(Handler{})
	httpcaddyfile.RegisterHandlerDirective("ccemu", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("ccemu", httpcaddyfile.Before, "respond")
}

// pool keeps emulators alive across reloads.
var pool = caddy.NewUsagePool()

// pooled adapts an Emulator to caddy.Destructor.
type pooled struct{ *ccemu.Emulator }

// Destruct runs when no loaded config uses the emulator any more: it closes
// the emulator's UMS sockets (1001) and stops their expiry sweep, which
// would otherwise outlive the config.
func (p pooled) Destruct() error { return p.Close() }

// Handler serves the emulator (Domain API, Login Service, Sentinel, data
// API, UMS WebSocket) and, under ControlPath, its control API. It never
// calls the next handler.
type Handler struct {
	// AccountID is the emulated account. Default "12345678".
	AccountID string `json:"account_id,omitempty"`
	// SessionTTL is the idle session lifetime, reported to clients as
	// sessionTTl. Default 8h.
	SessionTTL caddy.Duration `json:"session_ttl,omitempty"`
	// LoginRate is how many login attempts are accepted per
	// LoginRateWindow before 429. Default 0 (unlimited).
	LoginRate int `json:"login_rate,omitempty"`
	// LoginRateWindow is the sliding window for LoginRate. Default 1m.
	LoginRateWindow caddy.Duration `json:"login_rate_window,omitempty"`
	// BaseURI is the host[:port] the Domain API hands out for every
	// service. Default: the request's Host, so clients come back here.
	BaseURI string `json:"base_uri,omitempty"`
	// ControlPath, when set (for example "/_ccemu"), serves the control
	// API (counters, fault injection, reset) under that path. Default
	// unset: no control API. Do not expose it to untrusted clients.
	ControlPath string `json:"control_path,omitempty"`
	// DomainArrayForm makes single-service Domain API lookups answer
	// {"baseURIs":[...]} instead of the object form. Default false.
	DomainArrayForm bool `json:"domain_array_form,omitempty"`
	// ClientID and ClientSecret are the Sentinel application (OAuth 2.0
	// client) the token endpoints accept. Default "demo-client" /
	// "demo-client-secret".
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	// TokenLifetime is the lifetime of the AppJWTs Sentinel issues
	// (expires_in). Default 1h.
	TokenLifetime caddy.Duration `json:"token_lifetime,omitempty"`
	// TokenRate is how many token requests are accepted per
	// TokenRateWindow before 429. Default 0 (unlimited).
	TokenRate int `json:"token_rate,omitempty"`
	// TokenRateWindow is the sliding window for TokenRate. Default 1s.
	TokenRateWindow caddy.Duration `json:"token_rate_window,omitempty"`
	// RequireBareToken makes the data API accept credentials only without
	// the "Bearer " word. Default false (both forms).
	RequireBareToken bool `json:"require_bare_token,omitempty"`
	// MultipleSessions lets one user hold several live sessions. Default
	// false: as in CC, a login ends that user's other sessions.
	MultipleSessions bool `json:"multiple_sessions,omitempty"`
	// UMSIdleTimeout is how long a UMS socket may go without a frame from
	// the client before the emulator closes it (1000 "idle"). Default 60s.
	UMSIdleTimeout caddy.Duration `json:"ums_idle_timeout,omitempty"`

	emu     *ccemu.Emulator
	control http.Handler
	key     string
	loaded  bool
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ccemu",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision gets the pooled emulator and applies this config's tuning to it.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.AccountID == "" {
		h.AccountID = ccemu.DefaultAccountID
	}
	if h.SessionTTL < 0 || h.LoginRate < 0 || h.LoginRateWindow < 0 ||
		h.TokenLifetime < 0 || h.TokenRate < 0 || h.TokenRateWindow < 0 || h.UMSIdleTimeout < 0 {
		return errNegative
	}
	if h.ControlPath != "" && !strings.HasPrefix(h.ControlPath, "/") {
		return errControlPath
	}
	// The client is part of the key: it is fixed when an emulator is made.
	h.key = h.AccountID + "|" + h.BaseURI + "|" + strconv.FormatBool(h.DomainArrayForm) +
		"|" + h.ClientID + "|" + h.ClientSecret
	v, _, err := pool.LoadOrNew(h.key, func() (caddy.Destructor, error) {
		return pooled{ccemu.New(ccemu.Config{
			AccountID:       h.AccountID,
			BaseURI:         h.BaseURI,
			DomainArrayForm: h.DomainArrayForm,
			ClientID:        h.ClientID,
			ClientSecret:    h.ClientSecret,
		})}, nil
	})
	if err != nil {
		return err
	}
	h.loaded = true
	h.emu = v.(pooled).Emulator
	// Unset values restore the defaults, so deleting a setting and
	// reloading takes effect on the surviving emulator.
	h.emu.SetSessionTTL(time.Duration(h.SessionTTL))
	h.emu.SetLoginRate(h.LoginRate, time.Duration(h.LoginRateWindow))
	h.emu.SetTokenLifetime(time.Duration(h.TokenLifetime))
	h.emu.SetTokenRate(h.TokenRate, time.Duration(h.TokenRateWindow))
	h.emu.RequireBareToken(h.RequireBareToken)
	h.emu.SetMultipleSessions(h.MultipleSessions)
	h.emu.SetUMSIdleTimeout(time.Duration(h.UMSIdleTimeout))
	if h.ControlPath != "" {
		h.control = h.emu.ControlHandler(h.ControlPath)
	}
	return nil
}

type configError string

func (e configError) Error() string { return string(e) }

const (
	errNegative    = configError("ccemu: session_ttl, login_rate, login_rate_window, token_lifetime, token_rate, token_rate_window and ums_idle_timeout must not be negative")
	errControlPath = configError("ccemu: control_path must start with /")
)

// Cleanup releases this config's reference to the pooled emulator.
func (h *Handler) Cleanup() error {
	if !h.loaded {
		return nil
	}
	h.loaded = false
	_, err := pool.Delete(h.key)
	return err
}

// ServeHTTP answers every request itself; next is never called.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if cp := strings.TrimSuffix(h.ControlPath, "/"); h.control != nil &&
		(r.URL.Path == cp || strings.HasPrefix(r.URL.Path, cp+"/")) {
		h.control.ServeHTTP(w, r)
		return nil
	}
	h.emu.ServeHTTP(w, r)
	return nil
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var m Handler
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return &m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	ccemu {
//	    account_id   <id>
//	    session_ttl  <duration>
//	    login_rate   <n> [<window>]
//	    base_uri     <host[:port]>
//	    control_path <path>
//	    domain_array_form
//	    client_id      <id>
//	    client_secret  <secret>
//	    token_lifetime <duration>
//	    token_rate     <n> [<window>]
//	    require_bare_token
//	    multiple_sessions
//	    ums_idle_timeout <duration>
//	}
//
// Every subdirective is optional; the block may be omitted.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		switch sub {
		case "account_id", "base_uri", "control_path", "client_id", "client_secret":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch sub {
			case "account_id":
				h.AccountID = v
			case "base_uri":
				h.BaseURI = v
			case "control_path":
				if !strings.HasPrefix(v, "/") {
					return d.Errf("control_path %q must start with /", v)
				}
				h.ControlPath = v
			case "client_id":
				h.ClientID = v
			case "client_secret":
				h.ClientSecret = v
			}
		case "session_ttl", "token_lifetime", "ums_idle_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s: invalid duration %q", sub, v)
			}
			switch sub {
			case "session_ttl":
				h.SessionTTL = caddy.Duration(dur)
			case "token_lifetime":
				h.TokenLifetime = caddy.Duration(dur)
			default:
				h.UMSIdleTimeout = caddy.Duration(dur)
			}
		case "login_rate", "token_rate":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return d.Errf("%s: invalid count %q", sub, args[0])
			}
			var win time.Duration
			if len(args) == 2 {
				if win, err = caddy.ParseDuration(args[1]); err != nil || win <= 0 {
					return d.Errf("%s: invalid window %q", sub, args[1])
				}
			}
			if sub == "login_rate" {
				h.LoginRate, h.LoginRateWindow = n, caddy.Duration(win)
			} else {
				h.TokenRate, h.TokenRateWindow = n, caddy.Duration(win)
			}
		case "domain_array_form", "require_bare_token", "multiple_sessions":
			if d.NextArg() {
				return d.ArgErr()
			}
			switch sub {
			case "domain_array_form":
				h.DomainArrayForm = true
			case "require_bare_token":
				h.RequireBareToken = true
			default:
				h.MultipleSessions = true
			}
		default:
			return d.Errf("unknown ccemu subdirective %q", sub)
		}
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
