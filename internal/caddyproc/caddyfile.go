// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyproc

import (
	"fmt"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// Proxy is the Caddyfile the tests and benchmarks run: lpauth with the
// emulator's demo user at site level, then reverse_proxy to Upstream (or
// Handlers). Lines keep a fixed layout (tabs, account_id, username,
// password, csds, then Lpauth) so that tests may rewrite one of them.
type Proxy struct {
	Admin    string // the admin endpoint; empty is off
	Global   string // more global options, each line after the first indented by the caller
	Addr     string // host:port the site listens on
	CSDS     string // lpauth's csds
	Password string // empty is the emulator's demo password
	Lpauth   string // more lpauth subdirectives
	Handlers string // what follows lpauth, whole lines; empty is reverse_proxy Upstream
	Upstream string // host:port for reverse_proxy
}

// Caddyfile is the config text.
func (p Proxy) Caddyfile() string {
	password := p.Password
	if password == "" {
		password = ccemu.DefaultPassword
	}
	handlers := p.Handlers
	if handlers == "" {
		handlers = "\treverse_proxy " + p.Upstream + "\n"
	}
	return fmt.Sprintf(`%shttp://%s {
	lpauth {
		account_id %s
		username %s
		password %s
		csds %s
		%s
	}
%s}
`, globals(p.Admin, p.Global), p.Addr, ccemu.DefaultAccountID, ccemu.DefaultUsername, password, p.CSDS, p.Lpauth, handlers)
}

// Emulator is a Caddyfile that serves the CC emulator on addr, its control
// API under /_ccemu. admin empty is off.
func Emulator(admin, addr string) string {
	return fmt.Sprintf("%shttp://%s {\n\tccemu {\n\t\tcontrol_path /_ccemu\n\t}\n}\n", globals(admin, ""), addr)
}

// globals is the global options block every config here starts with:
// nothing autosaved, no TLS, loopback only.
func globals(admin, more string) string {
	if admin == "" {
		admin = "off"
	}
	return fmt.Sprintf(`{
	admin %s
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	%s
}
`, admin, more)
}
