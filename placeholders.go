// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// The placeholders of both kinds: the config values expanded at load time
// ({env.*}, {file.*}), and those lpauth sets on each request
// ({http.lpauth.*}).

// expandField expands the global placeholders ({env.*}, {file.*}, ...) of
// one config value at load time; an empty value stays empty. An unknown or
// empty placeholder is an error naming the field, without the module's
// prefix (each caller adds its own). For a secret the error never quotes the
// value, which may be an inline secret with braces in it: a lone
// {env.NAME} is named (only the variable, which is safe), anything else is
// not shown.
func expandField(repl *caddy.Replacer, field, value string, secret bool) (string, error) {
	if value == "" {
		return "", nil
	}
	out, err := repl.ReplaceOrErr(value, true, true)
	if err == nil {
		return out, nil
	}
	if secret {
		switch lone := strings.Count(value, "{") == 1 && strings.HasSuffix(value, "}"); {
		case lone && strings.HasPrefix(value, "{env."):
			err = fmt.Errorf("%s is unset or empty", value)
		case lone && strings.HasPrefix(value, "{file."):
			// The path is not the secret; the content is never shown.
			err = fmt.Errorf("%s: the file is missing, unreadable or empty", value)
		default:
			err = errors.New("a placeholder in it is unknown or empty (give secrets as {env.NAME}; escape literal braces as \\{ \\})")
		}
	}
	return out, fmt.Errorf("%s: %w", field, err)
}

// requestPlaceholders answers {http.lpauth.*} for one handler and one
// credential (nil: none yet). Made once per credential, it lets a request
// add one provider to its replacer instead of four values to the
// replacer's map (each insert takes a lock and may grow the map). What a
// retry changes goes into the replacer's own values, which Caddy asks
// before any provider.
type requestPlaceholders struct {
	cred   *credential
	lookup caddy.ReplacerFunc
}

// placeholdersFor returns the provider of the request placeholders for c.
func (h *Handler) placeholdersFor(c *credential) caddy.ReplacerFunc {
	if p := h.placeholders.Load(); p != nil && p.cred == c {
		return p.lookup
	}
	id := h.identity
	p := &requestPlaceholders{cred: c, lookup: func(key string) (any, bool) {
		if !strings.HasPrefix(key, "http.lpauth.") {
			return nil, false
		}
		switch key[len("http.lpauth."):] {
		case "account_id":
			return id, true // a Stringer: no boxing per request
		case "retried":
			return false, true
		case "domain":
			if c != nil {
				return (*issuerHost)(c), true
			}
		case "session_age":
			if c != nil {
				return (*credentialAge)(c), true
			}
		}
		return nil, false
	}}
	h.placeholders.Store(p)
	return p.lookup
}

// setCredentialPlaceholders sets the placeholders that describe the
// credential, where it is not the one the request's provider describes.
func setCredentialPlaceholders(repl *caddy.Replacer, c *credential) {
	if repl != nil && c != nil {
		repl.Set("http.lpauth.domain", (*issuerHost)(c))
		repl.Set("http.lpauth.session_age", (*credentialAge)(c))
	}
}

// issuerHost and credentialAge render the placeholders when they are used:
// pointers box into an interface without allocating, strings do not.
type issuerHost credential

func (h *issuerHost) String() string { return h.issuerHost }

// credentialAge is the credential's age in whole seconds.
type credentialAge credential

func (a *credentialAge) String() string {
	return strconv.FormatInt(int64(time.Since(a.Obtained)/time.Second), 10)
}
