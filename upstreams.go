// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/lpauth/caddy-lpauth/internal/cc"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(DomainUpstreams{})
}

// errNoAccount is returned when neither account_id nor an earlier lpauth
// names the account.
var errNoAccount = errors.New("lpdomain: no account_id: set it, or put lpauth before reverse_proxy")

// lpdomainClock is the clock a provisioned lpdomain source takes: the real
// one, unless a test swaps it to drive the configs caddytest loads.
var lpdomainClock = struct {
	sync.Mutex
	c cc.Clock
}{c: cc.RealClock{}}

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

	service       string     // Service, expanded
	account       string     // AccountID, expanded; "" = lpauth's
	client        *cc.Client // for csds, or DefaultCSDS when no lpauth ran
	ownCSDS       bool       // csds set: do not use lpauth's client
	refresh       time.Duration
	lookupTimeout time.Duration
	retryDelay    time.Duration
	clock         cc.Clock // nil until Provision: lpdomainClock
	report        func(cc.DomainReport)
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
	var err error
	if d.service, err = expandField(repl, "service", d.Service, false); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	if d.account, err = expandField(repl, "account_id", d.AccountID, false); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	csds, err := expandField(repl, "csds", d.CSDS, false)
	if err != nil {
		return fmt.Errorf("lpdomain: %w", err)
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
	if d.client, err = cc.NewClient(cc.ClientConfig{CSDS: csds, UserAgent: "caddy-lpauth"}); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	if d.refresh, err = durationIn("refresh", d.Refresh, cc.DefaultDomainRefresh, anyPositive); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	if d.lookupTimeout, err = durationIn("lookup_timeout", d.LookupTimeout, cc.DefaultDomainLookupTimeout, anyPositive); err != nil {
		return fmt.Errorf("lpdomain: %w", err)
	}
	d.retryDelay = min(cc.DomainRetryDelay, d.refresh)
	if d.clock == nil {
		lpdomainClock.Lock()
		d.clock = lpdomainClock.c
		lpdomainClock.Unlock()
	}
	d.report = d.logLookup
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
	q := cc.DomainLookup{
		Client: client, Account: account, Service: d.service,
		Refresh: d.refresh, Timeout: d.lookupTimeout, RetryDelay: d.retryDelay,
		Clock: d.clock, Report: d.report,
	}
	dial, err := q.Dial(r.Context())
	if err != nil {
		return nil, fmt.Errorf("lpdomain: service %s of account %s: %w", d.service, account, err)
	}
	return []*reverseproxy.Upstream{{Dial: dial}}, nil
}

// logLookup logs the outcome of a Domain API lookup this source started.
func (d *DomainUpstreams) logLookup(r cc.DomainReport) {
	fields := []zap.Field{zap.String("service", r.Service), zap.String("account_id", r.Account)}
	switch {
	case r.Err != nil && r.Prev != "":
		d.logger.Warn("CC Domain API lookup failed; still using the last known host",
			append(fields, zap.String("host", r.Prev), zap.Duration("retry_in", r.RetryIn), zap.Error(r.Err))...)
	case r.Err != nil:
		// reverse_proxy logs the request's error; this adds when it retries.
		if c := d.logger.Check(zapcore.DebugLevel, "CC Domain API lookup failed"); c != nil {
			c.Write(append(fields, zap.Duration("retry_in", r.RetryIn), zap.Error(r.Err))...)
		}
	case r.Prev != "" && r.Prev != r.Dial:
		d.logger.Info("CC service moved", append(fields, zap.String("from", r.Prev), zap.String("to", r.Dial))...)
	default:
		if c := d.logger.Check(zapcore.DebugLevel, "CC service resolved"); c != nil {
			c.Write(append(fields, zap.String("host", r.Dial))...)
		}
	}
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
	block := subdirectives{module: "lpdomain", given: map[string]bool{"service": d.Service != ""}}
	err := block.parse(disp, func(name, val string) (err error) {
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
			return errUnrecognized
		}
		return err
	})
	if err != nil {
		return err
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
