// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// retry_body_limit is bounded at load, in the Caddyfile and in JSON, and
// a bad size says what is expected.
func TestRetryBodyLimitBounds(t *testing.T) {
	_, srv := emulator(t, ccemu.Config{})
	base := caddyConfig(srv, "", "")
	withLimit := func(v string) string {
		return strings.Replace(base, "\t\tcsds ", "\t\tretry_body_limit "+v+"\n\t\tcsds ", 1)
	}
	const want = "retry_body_limit: want a size such as 1MiB, between 1B and 64MiB"
	for _, v := range []string{"-1", "0", "64MiB1", "65MiB", "1TiB", "1.5TiB", "lots", "0.5B"} {
		assertLoadError(t, withLimit(v), "caddyfile", want)
	}
	assertLoadError(t, withLimit("67108865"), "caddyfile", want)

	jsonConfig := func(limit string) string {
		return fmt.Sprintf(`{
			"admin": {"listen": %q},
			"apps": {"http": {"servers": {"proxy": {
				"listen": [%q],
				"automatic_https": {"disable": true},
				"routes": [{"handle": [
					{"handler": "lpauth", "account_id": "12345678", "username": "demo-agent",
					 "password": %q, "csds": %q, "retry_body_limit": %s},
					{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}
				]}]
			}}}}
		}`, adminAddr, proxyAddr, ccemu.DefaultPassword, srv.URL, limit, hostport(srv))
	}
	for _, v := range []string{"-1", "67108865", "1099511627776"} {
		assertLoadError(t, jsonConfig(v), "json",
			"lpauth: retry_body_limit must be between 1 and 67108864 bytes (64MiB), got "+v)
	}
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	tester.InitServer(jsonConfig("67108864"), "json")
	loadCaddy(t, withLimit("64MiB")) // the ceiling itself loads
}
