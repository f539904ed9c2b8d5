// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyproc

import (
	"cmp"
	"fmt"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// Proxy is the Caddyfile the tests and benchmarks run: lpauth with the
// emulator's demo user (or, with ClientSecret, its demo application's
// AppJWT) at site level, then reverse_proxy to Upstream (or Handlers).
// Lines keep a fixed layout (tabs, account_id, username, password, csds,
// then Lpauth) so that tests may rewrite one of them.
type Proxy struct {
	Admin        string // the admin endpoint; empty is off
	Global       string // more global options, each line after the first indented by the caller
	Addr         string // host:port the site listens on
	CSDS         string // lpauth's csds
	Password     string // empty is the emulator's demo password
	ClientSecret string // set: an AppJWT for the demo application (client_id, this client_secret), no user
	Lpauth       string // more lpauth subdirectives
	Handlers     string // what follows lpauth, whole lines; empty is reverse_proxy Upstream
	Upstream     string // host:port for reverse_proxy
}

// Caddyfile is the config text.
func (p Proxy) Caddyfile() string {
	handlers := p.Handlers
	if handlers == "" {
		handlers = "\treverse_proxy " + p.Upstream + "\n"
	}
	return fmt.Sprintf("%shttp://%s {\n%s%s}\n", globals(p.Admin, p.Global), p.Addr, p.LpauthBlock("\t"), handlers)
}

// LpauthBlock is the lpauth block alone, at indent (Lpauth goes in as it
// is: its own further lines carry their indentation).
func (p Proxy) LpauthBlock(indent string) string {
	in := indent + "\t"
	identity := fmt.Sprintf("%susername %s\n%spassword %s", in, ccemu.DefaultUsername, in, cmp.Or(p.Password, ccemu.DefaultPassword))
	if p.ClientSecret != "" {
		identity = fmt.Sprintf("%sclient_id %s\n%sclient_secret %s", in, ccemu.DefaultClientID, in, p.ClientSecret)
	}
	return fmt.Sprintf("%slpauth {\n%saccount_id %s\n%s\n%scsds %s\n%s%s\n%s}\n",
		indent, in, ccemu.DefaultAccountID, identity, in, p.CSDS, in, p.Lpauth, indent)
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
