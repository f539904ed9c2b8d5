// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

// Both directives, and their order, in one place. Caddy orders a plugin's
// directive only relative to a standard one, inserting it right after
// that one: so lpauth goes in first and lpauth_ready second, which puts
// lpauth_ready between forward_auth and lpauth. A basic_auth or
// forward_auth guard runs before either, a site-level lpauth covers the
// handle and route blocks below it, and it never runs before the probe.
// TestReadyOrderedBeforeLpauth checks the result.
func init() {
	httpcaddyfile.RegisterHandlerDirective("lpauth", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("lpauth", httpcaddyfile.After, "forward_auth")
	httpcaddyfile.RegisterHandlerDirective("lpauth_ready", parseReadyCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("lpauth_ready", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	err := handler.UnmarshalCaddyfile(h.Dispenser)
	return &handler, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	lpauth [<matcher>] {
//	    account_id  <id>
//	    username    <name>
//	    password    <password>
//	    app_key     <key>
//	    secret      <secret>
//	    access_token        <token>
//	    access_token_secret <secret>
//	    csds        <url>
//	    domain      <host[:port]|url>
//	    refresh_interval <duration>
//	    retry_body_limit <size>
//	    login_timeout    <duration>
//	    ca_file          <path>
//	    storage          [<module> [{ <module options> }]]
//	    encryption_key   <key>
//	    logout_on_stop   <bool>
//
//	    client_id      <id>         # an AppJWT from Sentinel instead of a login
//	    client_secret  <secret>
//	    sentinel_api   v1|v2
//	    auth_scheme    <word>|none  # any identity; default Bearer
//	}
//
// `storage` turns on cluster mode: with no argument the cluster shares
// Caddy's configured storage, else the named caddy.storage module (e.g.
// `storage file_system { root /shared }` or `storage redis { ... }`).
//
// Give exactly one of password, or app_key with secret. Secrets belong in
// `{env.NAME}` placeholders, which are expanded when the config is loaded
// and so never appear in the adapted JSON. Defaults: csds
// https://api.liveperson.net, refresh_interval 5m (1s to 4h),
// retry_body_limit 1MiB (at most 64MiB), login_timeout 10s (1s to 5m).
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	block := subdirectives{module: "lpauth", custom: map[string]func(*caddyfile.Dispenser) error{"storage": h.unmarshalStorage}, secret: secretFields}
	return block.parse(d, func(name, val string) (err error) {
		switch name {
		case "account_id":
			h.AccountID = val
		case "username":
			h.Username = val
		case "password":
			h.Password = val
		case "app_key":
			h.AppKey = val
		case "secret":
			h.Secret = val
		case "access_token":
			h.AccessToken = val
		case "access_token_secret":
			h.AccessTokenSecret = val
		case "csds":
			h.CSDS = val
		case "domain":
			h.Domain = val
		case "ca_file":
			h.CAFile = val
		case "refresh_interval":
			h.RefreshInterval, err = parsePositiveDuration(val)
		case "login_timeout":
			h.LoginTimeout, err = parsePositiveDuration(val)
		case "retry_body_limit":
			h.RetryBodyLimit, err = parseSize(val)
		case "encryption_key":
			h.EncryptionKey = val
		case "client_id":
			h.ClientID = val
		case "client_secret":
			h.ClientSecret = val
		case "sentinel_api":
			h.SentinelAPI = val
		case "auth_scheme":
			h.AuthScheme = val
		case "logout_on_stop":
			var b bool
			b, err = strconv.ParseBool(val)
			h.LogoutOnStop = &b
		default:
			return errUnrecognized
		}
		return err
	})
}

// errUnrecognized is what a subdirectives setter returns for a name it
// does not know.
var errUnrecognized = errors.New("unrecognized subdirective")

// subdirectives reads a directive's block in which each subdirective is
// given at most once and takes one value, so that lpauth and lpdomain word
// their errors alike.
type subdirectives struct {
	module string                                      // the error prefix: "lpauth", "lpdomain"
	given  map[string]bool                             // names already set another way (an argument)
	custom map[string]func(*caddyfile.Dispenser) error // names that read their own arguments
	secret map[string]bool                             // names whose values an error must not show
}

// parse calls set with each subdirective's name and value. An error from
// set is reported against that subdirective, naming it.
func (b subdirectives) parse(d *caddyfile.Dispenser, set func(name, val string) error) error {
	seen := map[string]bool{}
	for d.NextBlock(0) {
		name := d.Val()
		if seen[name] || b.given[name] {
			return d.Errf("%s: %s given more than once", b.module, name)
		}
		seen[name] = true
		if custom := b.custom[name]; custom != nil {
			if err := custom(d); err != nil {
				return err
			}
			continue
		}
		var val string
		if !d.Args(&val) {
			return d.Errf("%s: %s needs a value", b.module, name)
		}
		if d.NextArg() {
			if b.secret[name] {
				return d.Errf("%s: %s takes one value, got another (not shown: it is a secret; quote a value that has spaces)", b.module, name)
			}
			return d.Errf("%s: %s takes one value, got another: %q", b.module, name, d.Val())
		}
		switch err := set(name, val); {
		case errors.Is(err, errUnrecognized):
			return d.Errf("%s: unrecognized subdirective %q", b.module, name)
		case err != nil:
			return d.Errf("%s: %s: %v", b.module, name, err)
		}
	}
	return nil
}

func parsePositiveDuration(s string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if dur <= 0 {
		return 0, fmt.Errorf("must be positive, got %q", s)
	}
	return caddy.Duration(dur), nil
}

// parseSize reads retry_body_limit. Whatever is wrong with the value (a
// sign, a unit, the range), the error says what is expected rather than
// the parser's complaint.
func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > maxRetryBodyLimit {
		return 0, fmt.Errorf("want a size such as 1MiB, between 1B and 64MiB, got %q", s)
	}
	return int64(n), nil
}

// unmarshalStorage reads `storage [<module> [{...}]]`, as caddy-ratelimit
// does.
func (h *Handler) unmarshalStorage(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		h.StorageRaw = json.RawMessage("{}")
		return nil
	}
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, "caddy.storage."+name)
	if err != nil {
		return err
	}
	storage, ok := unm.(caddy.StorageConverter)
	if !ok {
		return d.Errf("lpauth: storage: module %q is not a storage module", name)
	}
	h.StorageRaw = caddyconfig.JSONModuleObject(storage, "module", name, nil)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
