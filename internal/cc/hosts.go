// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// hostSource says where a host came from, which decides what it may carry.
type hostSource int

const (
	// hostConfigured: csds or domain, written by the operator:
	// "https://host[:port][/path]" or a bare "host[:port]".
	hostConfigured hostSource = iota
	// hostAnswered: named by the Domain API. Only a bare host[:port] is
	// accepted: a scheme or a path of its own would let the answer pick
	// where (and how) credentials go.
	hostAnswered
)

// validateHost is the one check of every host lpauth sends a request to. A
// bare host[:port] takes defaultScheme. Plain http is allowed only for
// loopback hosts. The host must be a DNS name, an IPv4 address or a
// bracketed IPv6 address: nothing (user info, a fragment, a path, a
// backslash, spaces) that could send the request to another host than the
// one written.
//
// Its errors quote what was written, less what may be a secret: user info,
// a query, a fragment (`https://user:pw@host`, `?token=…`).
func validateHost(raw, defaultScheme string, from hostSource) (*url.URL, error) {
	if parts := secretParts(raw); len(parts) > 0 {
		shown := raw
		for _, part := range parts {
			shown = strings.ReplaceAll(shown, part, "…")
		}
		return nil, fmt.Errorf("%q: only scheme, host, port and path are allowed", shown)
	}
	return checkHost(raw, defaultScheme, from)
}

// secretParts returns what of a written URL an error must not show.
func secretParts(raw string) []string {
	var parts []string
	rest := raw
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		parts = append(parts, rest[i+1:])
		rest = rest[:i]
	}
	if _, after, ok := strings.Cut(rest, "://"); ok {
		rest = after
	}
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		parts = append(parts, rest[:i])
	}
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	return out
}

func checkHost(raw, defaultScheme string, from hostSource) (*url.URL, error) {
	if from == hostAnswered && (raw == "" || strings.Contains(raw, "/") || strings.TrimSpace(raw) != raw) {
		return nil, fmt.Errorf("%q: want a bare host[:port]", raw)
	}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, errors.New("empty")
	}
	if !strings.Contains(raw, "://") {
		if defaultScheme == "" {
			return nil, fmt.Errorf("%q: missing scheme (https://...)", raw)
		}
		if err := checkHostPort(raw); err != nil {
			return nil, fmt.Errorf("%q: %w", raw, err)
		}
		raw = defaultScheme + "://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("%q: scheme must be https (or http for loopback)", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q: missing host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%q: only scheme, host, port and path are allowed", raw)
	}
	if err := checkHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("%q: %w", raw, err)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Errorf("%q: plain http is allowed only for loopback hosts; use https", raw)
	}
	if from == hostAnswered && u.Host != strings.TrimPrefix(raw, defaultScheme+"://") {
		return nil, fmt.Errorf("%q: want a bare host[:port]", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

// dialAddress is the host:port to dial for u; with no port, that of its
// scheme.
func dialAddress(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// checkHostPort accepts host[:port]: host a DNS name (ASCII letters,
// digits, '-', '_', '.'), an IPv4 address or a bracketed IPv6 address
// without zone; port 1-65535.
func checkHostPort(hp string) error {
	host := hp
	if i := strings.LastIndexByte(hp, ':'); i >= 0 && !strings.HasSuffix(hp, "]") {
		host = hp[:i]
		port, err := strconv.Atoi(hp[i+1:])
		if err != nil || port < 1 || port > 65535 || hp[i+1] == '+' || hp[i+1] == '-' {
			return fmt.Errorf("bad port %q", hp[i+1:])
		}
	}
	if inner, ok := strings.CutPrefix(host, "["); ok {
		ip, ok := strings.CutSuffix(inner, "]")
		if !ok || !strings.Contains(ip, ":") || net.ParseIP(ip) == nil {
			return fmt.Errorf("bad IPv6 address %q", host)
		}
		return nil
	}
	if host == "" || len(host) > 253 {
		return errors.New("missing or overlong host")
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("host %q: only letters, digits, '-', '_' and '.' are allowed", host)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
