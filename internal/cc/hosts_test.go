// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"strings"
	"testing"
)

func TestDialAddress(t *testing.T) {
	// As the resolver turns an answered host into a dial address (for
	// lpdomain's upstreams).
	dialAddress := func(host, scheme string) (string, error) {
		u, err := validateHost(host, scheme, hostAnswered)
		if err != nil {
			return "", err
		}
		return dialAddress(u), nil
	}
	for _, tc := range []struct{ host, scheme, want string }{
		{"va.msghist.liveperson.net", "https", "va.msghist.liveperson.net:443"},
		{"va.msghist.liveperson.net:8443", "https", "va.msghist.liveperson.net:8443"},
		{"127.0.0.1", "http", "127.0.0.1:80"},
		{"127.0.0.1:9090", "http", "127.0.0.1:9090"},
		{"localhost:9090", "http", "localhost:9090"},
		{"[::1]", "http", "[::1]:80"},
		{"[::1]:9090", "https", "[::1]:9090"},
	} {
		if got, err := dialAddress(tc.host, tc.scheme); err != nil || got != tc.want {
			t.Errorf("dialAddress(%q, %s) = %q, %v; want %s", tc.host, tc.scheme, got, err, tc.want)
		}
	}
	for _, host := range []string{
		"", "https://va.example", "va.example/path", "evil.com/@va.example", "evil.com#@va.example",
		"user@va.example", "va.example?x=1", "{env.HOME}", "va .example", "va.example:port",
	} {
		if got, err := dialAddress(host, "https"); err == nil {
			t.Errorf("dialAddress(%q) = %q, want an error", host, got)
		}
	}
	if got, err := dialAddress("va.example", "http"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("plain http to a non-loopback host: %q, %v", got, err)
	}
}
