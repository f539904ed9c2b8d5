// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/singleflight"
)

func init() {
	caddy.RegisterModule(DomainUpstreams{})
}

// Defaults of DomainUpstreams.
const (
	DefaultDomainRefresh       = 10 * time.Minute
	DefaultDomainLookupTimeout = 10 * time.Second
)

const (
	// domainRetryDelay spaces Domain API attempts after a failure (capped
	// at refresh), so a Domain API outage is not hammered by traffic.
	domainRetryDelay = 5 * time.Second
	// maxDomainAnswers bounds the cache; keys come from configs, so this is
	// only reached by many reloads with changing csds or accounts.
	maxDomainAnswers = 1024
)

// errNoAccount is returned when neither account_id nor an earlier lpauth
// names the account.
var errNoAccount = errors.New("lpdomain: no account_id: set it, or put lpauth before reverse_proxy")

// domainAnswers caches Domain API answers for every DomainUpstreams. It is
// package-level so that answers survive config reloads and are shared by
// every route that names the same service.
var (
	domainMu      sync.RWMutex
	domainAnswers = map[domainKey]domainAnswer{}
	domainFlight  singleflight.Group // one lookup per key at a time
)

// domainKey is a CSDS base (its URL parts, so the request path builds no
// string), an account and a service.
type domainKey struct {
	scheme, host, path string
	account, service   string
}

func (k domainKey) flightKey() string {
	return k.scheme + "://" + k.host + k.path + "\x00" + k.account + "\x00" + k.service
}

type domainAnswer struct {
	dial    string    // host:port; "" until a lookup has succeeded
	fetched time.Time // when dial was last confirmed by the Domain API
	retryAt time.Time // no new lookup before this: one is in flight, or one failed
	err     error     // the last failure, answered while no dial is known
}

// DomainUpstreams is a dynamic upstream source for `reverse_proxy` that
// finds a Conversational Cloud service's host through the Domain API, so a
// Caddyfile can front every CC service a legacy app calls without naming a
// host:
//
//	reverse_proxy {
//	    dynamic lpdomain msgHist
//	    header_up Host {upstream_hostport}
//	    transport http {
//	        tls
//	    }
//	}
//
// The account and the Domain API are, by default, those of the `lpauth`
// handler that ran earlier for the same request. The upstream's dial
// address is the host the Domain API answers; when it carries no port, 443
// is added if csds is https (real CC: set `transport http { tls }`, as CC
// speaks only HTTPS) and 80 if csds is http (the loopback emulator).
//
// Answers are cached (shared by every route and kept across reloads). A
// fresh answer costs no network I/O. A stale one is still served while one
// background lookup renews it; if the Domain API fails, the last good host
// keeps being served, a warning is logged, and the lookup is tried again a
// few seconds later. Only when no host was ever found does a request wait
// for the lookup (shared by concurrent requests, bounded by
// lookup_timeout); if that fails, reverse_proxy has no upstream and answers
// 503, which `handle_errors` can shape.
type DomainUpstreams struct {
	// The CC service name, as the Domain API spells it (case-sensitive):
	// msgHist, accountConfigReadOnly, leDataReporting, ... Required.
	Service string `json:"service,omitempty"`

	// The CC account (site) id. Placeholders such as {env.NAME} are
	// expanded when the config is loaded. Default: the account of the
	// lpauth handler that ran earlier for the same request.
	AccountID string `json:"account_id,omitempty"`

	// The Domain API base URL; its scheme picks the default port. Plain
	// http is accepted only for loopback hosts. Set it with an explicit
	// account_id when no lpauth runs, or to override lpauth's. Default: the
	// csds of the lpauth handler that ran earlier for the same request,
	// else https://api.liveperson.net
	CSDS string `json:"csds,omitempty"`

	// How long a Domain API answer is fresh. After that it is renewed in
	// the background while still being served. Default: 10m
	Refresh caddy.Duration `json:"refresh,omitempty"`

	// Bound on one Domain API lookup, and on how long a request waits for
	// it when no answer is cached yet. Default: 10s
	LookupTimeout caddy.Duration `json:"lookup_timeout,omitempty"`

	service       string  // Service, expanded
	account       string  // AccountID, expanded; "" = lpauth's
	client        *Client // for csds, or DefaultCSDS when no lpauth ran
	ownCSDS       bool    // csds set: do not use lpauth's client
	refresh       time.Duration
	lookupTimeout time.Duration
	retryDelay    time.Duration
	logger        *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (DomainUpstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.lpdomain",
		New: func() caddy.Module { return new(DomainUpstreams) },
	}
}

// Provision expands placeholders, fills defaults and checks every field. It
// does no network I/O.
func (d *DomainUpstreams) Provision(ctx caddy.Context) error {
	d.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	expand := func(field, v string) (string, error) {
		if v == "" {
			return "", nil
		}
		out, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			return "", fmt.Errorf("lpdomain: %s: %w", field, err)
		}
		return out, nil
	}
	var err error
	if d.service, err = expand("service", d.Service); err != nil {
		return err
	}
	if d.account, err = expand("account_id", d.AccountID); err != nil {
		return err
	}
	csds, err := expand("csds", d.CSDS)
	if err != nil {
		return err
	}
	d.service = strings.TrimSpace(d.service)
	switch {
	case d.service == "":
		return errors.New("lpdomain: service is required")
	case strings.ContainsAny(d.service, "/ \t"):
		return fmt.Errorf("lpdomain: service %q: want a Domain API service name such as msgHist", d.service)
	}
	// Empty csds gives DefaultCSDS, used only when no lpauth ran.
	d.ownCSDS = csds != ""
	if d.client, err = NewClient(ClientConfig{CSDS: csds, UserAgent: "caddy-lpauth"}); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	if d.refresh, err = positiveOr("refresh", d.Refresh, DefaultDomainRefresh); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	if d.lookupTimeout, err = positiveOr("lookup_timeout", d.LookupTimeout, DefaultDomainLookupTimeout); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	d.retryDelay = min(domainRetryDelay, d.refresh)
	return nil
}

// Cleanup releases the idle connections of this config's own client.
func (d *DomainUpstreams) Cleanup() error {
	if d.client != nil {
		d.client.CloseIdleConnections()
	}
	return nil
}

// GetUpstreams returns the service's host for the request's account.
func (d *DomainUpstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	client, account := d.client, d.account
	if ri := IdentityFrom(r); ri != nil {
		if account == "" {
			account = ri.AccountID
		}
		if !d.ownCSDS {
			client = ri.Client()
		}
	}
	if account == "" {
		return nil, errNoAccount
	}
	dial, err := d.lookup(r.Context(), client, account)
	if err != nil {
		return nil, err
	}
	return []*reverseproxy.Upstream{{Dial: dial}}, nil
}

// lookup serves the cached answer, renews a stale one in the background, and
// waits for the Domain API only when nothing is cached.
func (d *DomainUpstreams) lookup(ctx context.Context, client *Client, account string) (string, error) {
	key := domainKey{client.csds.Scheme, client.csds.Host, client.csds.Path, account, d.service}
	now := time.Now()
	domainMu.RLock()
	a, ok := domainAnswers[key]
	domainMu.RUnlock()
	if ok && a.dial != "" && now.Sub(a.fetched) < d.refresh {
		return a.dial, nil // fresh: the fast path
	}
	if ok && a.dial != "" {
		// Stale: serve it, and let one request start the renewal.
		domainMu.Lock()
		a = domainAnswers[key]
		start := a.dial != "" && now.Sub(a.fetched) >= d.refresh && !now.Before(a.retryAt)
		if start {
			a.retryAt = now.Add(d.lookupTimeout + d.retryDelay) // in flight; fetch resets it
			domainAnswers[key] = a
		}
		domainMu.Unlock()
		if start {
			domainFlight.DoChan(key.flightKey(), func() (any, error) { return d.fetch(client, key) })
		}
		if a.dial != "" {
			return a.dial, nil
		}
	} else if ok && now.Before(a.retryAt) {
		return "", d.wrap(account, a.err) // failed moments ago: answer at once
	}
	// Nothing known yet: wait for the lookup, shared with concurrent requests.
	ch := domainFlight.DoChan(key.flightKey(), func() (any, error) { return d.fetch(client, key) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", d.wrap(account, res.Err)
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", d.wrap(account, ctx.Err())
	}
}

func (d *DomainUpstreams) wrap(account string, err error) error {
	return fmt.Errorf("lpdomain: service %s of account %s: %w", d.service, account, err)
}

// fetch asks the Domain API, on a context of its own so that the request
// that started it going away does not fail it for the others, and records
// the outcome.
func (d *DomainUpstreams) fetch(client *Client, key domainKey) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.lookupTimeout)
	defer cancel()
	host, err := client.LookupService(ctx, key.account, key.service)
	var dial string
	if err == nil {
		dial, err = dialAddress(host, key.scheme)
	}
	now := time.Now()
	domainMu.Lock()
	prev, had := domainAnswers[key]
	if !had && len(domainAnswers) >= maxDomainAnswers {
		for k := range domainAnswers {
			delete(domainAnswers, k)
			break
		}
	}
	if err != nil {
		// Keep the last good host; try again after a pause.
		prev.retryAt, prev.err = now.Add(d.retryDelay), err
		domainAnswers[key] = prev
	} else {
		domainAnswers[key] = domainAnswer{dial: dial, fetched: now}
	}
	domainMu.Unlock()

	fields := []zap.Field{zap.String("service", key.service), zap.String("account_id", key.account)}
	switch {
	case err != nil && prev.dial != "":
		d.logger.Warn("CC Domain API lookup failed; still using the last known host",
			append(fields, zap.String("host", prev.dial), zap.Duration("retry_in", d.retryDelay), zap.Error(err))...)
	case err != nil:
		// reverse_proxy logs the request's error; this adds when it retries.
		if c := d.logger.Check(zapcore.DebugLevel, "CC Domain API lookup failed"); c != nil {
			c.Write(append(fields, zap.Duration("retry_in", d.retryDelay), zap.Error(err))...)
		}
	case prev.dial != "" && prev.dial != dial:
		d.logger.Info("CC service moved", append(fields, zap.String("from", prev.dial), zap.String("to", dial))...)
	default:
		if c := d.logger.Check(zapcore.DebugLevel, "CC service resolved"); c != nil {
			c.Write(append(fields, zap.String("host", dial))...)
		}
	}
	return dial, err
}

// dialAddress turns a Domain API host (bare host or host:port) into a dial
// address; with no port, the port of the csds scheme. Anything but a plain
// host[:port] is refused (a path, userinfo or fragment could smuggle in
// another host), and plain http is accepted only for loopback hosts, as
// everywhere in lpauth.
func dialAddress(host, scheme string) (string, error) {
	if host == "" || strings.ContainsAny(host, "/?#@\\{}%") || strings.IndexFunc(host, unicode.IsSpace) >= 0 {
		return "", fmt.Errorf("domain lookup: answered %q, not a host[:port]", host)
	}
	u, err := parseBaseURL(host, scheme)
	if err != nil {
		return "", fmt.Errorf("domain lookup: unusable host: %w", err)
	}
	if u.Host != host {
		return "", fmt.Errorf("domain lookup: answered %q, not a host[:port]", host)
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port), nil
}

// UnmarshalCaddyfile sets up the upstream source from Caddyfile tokens.
// Syntax:
//
//	dynamic lpdomain [<service>] {
//	    service        <name>        # if not given as the argument
//	    account_id     <id>          # default: lpauth's account
//	    csds           <url>         # default: lpauth's csds, else https://api.liveperson.net
//	    refresh        <duration>    # default: 10m
//	    lookup_timeout <duration>    # default: 10s
//	}
//
// The block is optional: `dynamic lpdomain msgHist` behind `lpauth` is
// enough.
func (d *DomainUpstreams) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // the source name
	if disp.NextArg() {
		d.Service = disp.Val()
	}
	if disp.NextArg() {
		return disp.Errf("lpdomain: one service name expected, got another: %q", disp.Val())
	}
	seen := map[string]bool{}
	for disp.NextBlock(0) {
		name := disp.Val()
		if seen[name] || (name == "service" && d.Service != "") {
			return disp.Errf("lpdomain: %s given more than once", name)
		}
		seen[name] = true
		var val string
		if !disp.Args(&val) {
			return disp.Errf("lpdomain: %s needs a value", name)
		}
		if disp.NextArg() {
			return disp.Errf("lpdomain: %s takes one value, got another: %q", name, disp.Val())
		}
		var err error
		switch name {
		case "service":
			d.Service = val
		case "account_id":
			d.AccountID = val
		case "csds":
			d.CSDS = val
		case "refresh":
			d.Refresh, err = parsePositiveDuration(val)
		case "lookup_timeout":
			d.LookupTimeout, err = parsePositiveDuration(val)
		default:
			return disp.Errf("lpdomain: unrecognized subdirective %q", name)
		}
		if err != nil {
			return disp.Errf("lpdomain: %s: %v", name, err)
		}
	}
	if d.Service == "" {
		return disp.Err("lpdomain: a service name is required: dynamic lpdomain <service>")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*DomainUpstreams)(nil)
	_ caddy.CleanerUpper          = (*DomainUpstreams)(nil)
	_ reverseproxy.UpstreamSource = (*DomainUpstreams)(nil)
	_ caddyfile.Unmarshaler       = (*DomainUpstreams)(nil)
)
