// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Defaults of a Domain API lookup: lpdomain's `refresh` and
// `lookup_timeout`, and what the login host uses.
const (
	DefaultDomainRefresh       = 10 * time.Minute
	DefaultDomainLookupTimeout = 10 * time.Second
)

const (
	// loginService is the Domain API name of the Login Service host.
	loginService = "agentVep"
	// DomainRetryDelay spaces Domain API attempts after a failure (capped
	// at the caller's freshness window), so an outage is not hammered.
	DomainRetryDelay = 5 * time.Second
	// maxDomainAnswers bounds the cache; keys come from configs, so this is
	// only reached by many reloads with changing csds or accounts.
	maxDomainAnswers = 1024
)

// domainAnswers caches Domain API answers for every caller: the login host
// of every Client and every lpdomain source. It is package-level so that
// answers survive config reloads and are shared by every route and identity
// that names the same service.
var (
	domainMu      sync.RWMutex
	domainAnswers = map[domainKey]domainAnswer{}
	domainFlight  singleflight.Group // one lookup per key at a time
)

// domainKey is a Domain API base (its URL parts, so the request path builds
// no string), an account and a service.
type domainKey struct {
	scheme, host, path string
	account, service   string
}

func (k domainKey) flightKey() string {
	return k.scheme + "://" + k.host + k.path + "\x00" + k.account + "\x00" + k.service
}

type domainAnswer struct {
	base    string    // scheme://host[:port]; "" until a lookup has succeeded
	dial    string    // host:port of base
	fetched time.Time // when base was last confirmed by the Domain API
	retryAt time.Time // no new lookup before this: one is in flight, or one failed
	err     error     // the last failure, answered while no host is known
	recheck bool      // a caller saw the host fail: the next caller waits for a lookup
}

// DomainLookup is one caller's question to the resolver, with its own
// freshness window. One behaviour for all: a fresh answer costs no I/O; a
// stale one is served while one background lookup renews it; a failed
// lookup keeps the last good host and is not retried for retryDelay, and
// while no host is known that failure is answered at once. Only a caller
// with no host to serve (or one marked for a recheck) waits for the lookup,
// which is shared and runs on a context of its own.
type DomainLookup struct {
	Client           *Client
	Account, Service string
	Refresh          time.Duration // an answer younger than this is served as is
	Timeout          time.Duration // bound on one Domain API lookup
	RetryDelay       time.Duration
	Clock            Clock
	Report           func(DomainReport) // optional: told of every lookup's outcome
}

// DomainReport is the outcome of one Domain API lookup, for a log line.
type DomainReport struct {
	Service, Account string
	Prev, Dial       string        // the last good and the new dial address ("" if none)
	RetryIn          time.Duration // on failure
	Err              error
}

func (q *DomainLookup) key() domainKey {
	u := q.Client.csds
	return domainKey{u.Scheme, u.Host, u.Path, q.Account, q.Service}
}

// resolve returns the service's host, asking the Domain API only when the
// cached answer is not fresh.
func (q *DomainLookup) resolve(ctx context.Context) (domainAnswer, error) {
	key := q.key()
	now := q.Clock.Now()
	domainMu.RLock()
	a, ok := domainAnswers[key]
	domainMu.RUnlock()
	if ok && a.base != "" && !a.recheck && now.Sub(a.fetched) < q.Refresh {
		return a, nil // fresh: the fast path
	}
	if ok && a.base != "" && !a.recheck {
		// Stale: serve it, and let one caller start the renewal.
		domainMu.Lock()
		a = domainAnswers[key]
		start := a.base != "" && !now.Before(a.retryAt)
		if start {
			a.retryAt = now.Add(q.Timeout + q.RetryDelay) // in flight; fetch resets it
			domainAnswers[key] = a
		}
		domainMu.Unlock()
		if start {
			q.start(key)
		}
		if a.base != "" {
			return a, nil
		}
	} else if ok && now.Before(a.retryAt) {
		// A lookup failed moments ago, or one is in flight: answer at once.
		if a.base != "" {
			return a, nil
		}
		return domainAnswer{}, a.err
	}
	// Nothing to serve, or a recheck: wait, sharing the lookup.
	select {
	case res := <-q.start(key):
		switch {
		case res.Err == nil:
			return res.Val.(domainAnswer), nil
		case a.base != "":
			return a, nil // the recheck failed: keep the last good host
		}
		return domainAnswer{}, res.Err
	case <-ctx.Done():
		return domainAnswer{}, ctx.Err()
	}
}

// Dial returns the host:port to dial for the service, asking the Domain
// API only when the cached answer is not fresh.
func (q *DomainLookup) Dial(ctx context.Context) (string, error) {
	a, err := q.resolve(ctx)
	return a.dial, err
}

// start joins the lookup in flight for key, or starts one. q is a copy:
// only this slow path allocates it.
func (q DomainLookup) start(key domainKey) <-chan singleflight.Result {
	return domainFlight.DoChan(key.flightKey(), func() (any, error) { return q.fetch(key) })
}

// fetch asks the Domain API, on a context of its own so that the caller
// that started it going away does not fail it for the others, and records
// the outcome.
func (q *DomainLookup) fetch(key domainKey) (domainAnswer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), q.Timeout)
	defer cancel()
	host, err := q.Client.LookupService(ctx, key.account, key.service)
	var next domainAnswer
	if err == nil {
		var u *url.URL
		if u, err = validateHost(host, key.scheme, hostAnswered); err != nil {
			err = fmt.Errorf("domain lookup: %s host: %w", key.service, err)
		} else {
			next = domainAnswer{base: u.String(), dial: dialAddress(u)}
		}
	}
	now := q.Clock.Now()
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
		next = prev
		next.retryAt, next.err, next.recheck = now.Add(q.RetryDelay), err, false
	} else {
		next.fetched = now
	}
	domainAnswers[key] = next
	domainMu.Unlock()

	if q.Report != nil {
		r := DomainReport{Service: key.service, Account: key.account, Prev: prev.dial, Err: err}
		if err != nil {
			r.RetryIn = q.RetryDelay
		} else {
			r.Dial = next.dial
		}
		q.Report(r)
	}
	return next, err
}

// forgetDomain marks the cached answer for a recheck: the next caller waits
// for the Domain API, and keeps the last good host if that fails.
func forgetDomain(key domainKey) {
	domainMu.Lock()
	if a, ok := domainAnswers[key]; ok && a.base != "" {
		a.recheck = true
		domainAnswers[key] = a
	}
	domainMu.Unlock()
}

// DropDomainAnswers forgets every cached answer of the Domain API at base
// (scheme://host[:port][/path], as csds is written). Tests use it: the cache
// outlives a test, and a later test's server may get the same loopback
// port.
func DropDomainAnswers(base string) {
	domainMu.Lock()
	defer domainMu.Unlock()
	for k := range domainAnswers {
		if k.scheme+"://"+k.host+k.path == base {
			delete(domainAnswers, k)
		}
	}
}

// LoginBaseURL returns the agentVep base URL for the account: the configured
// domain, or the Domain API's answer through the shared cache.
func (c *Client) LoginBaseURL(ctx context.Context, account string) (string, error) {
	return c.serviceBase(ctx, c.loginLookup(account))
}

// serviceBase is the configured domain, else the Domain API's answer to q.
func (c *Client) serviceBase(ctx context.Context, q DomainLookup) (string, error) {
	if c.domain != nil {
		return c.domain.String(), nil
	}
	a, err := q.resolve(ctx)
	return a.base, err
}

// forget marks q's cached answer for a recheck (none with a configured
// domain).
func (c *Client) forget(q DomainLookup) {
	if c.domain == nil {
		forgetDomain(q.key())
	}
}

// ForgetDomain marks the cached agentVep host stale, so that the next login
// asks the Domain API again (after a connection failure, the host may have
// moved); if the Domain API fails then, the last good host is still used.
func (c *Client) ForgetDomain(account string) { c.forget(c.loginLookup(account)) }

// loginLookup asks for the login host. Its freshness window is lpdomain's
// default: logins come hours apart, so a stale host costs one background
// lookup per login at most, and a moved host is seen within 10 minutes (a
// connection error rechecks at once).
func (c *Client) loginLookup(account string) DomainLookup {
	clock := c.clock
	if clock == nil {
		clock = RealClock{}
	}
	return DomainLookup{
		Client: c, Account: account, Service: loginService,
		Refresh: DefaultDomainRefresh, Timeout: DefaultDomainLookupTimeout, RetryDelay: DomainRetryDelay,
		Clock: clock,
	}
}

type serviceURI struct {
	Service string `json:"service"`
	Account string `json:"account"`
	BaseURI string `json:"baseURI"`
}

// LookupService asks the Domain API for a service's host (bare host[:port],
// no scheme), uncached. Service names are case-sensitive.
func (c *Client) LookupService(ctx context.Context, account, service string) (string, error) {
	u := *c.csds
	u.Path += "/api/account/" + url.PathEscape(account) + "/service/" + url.PathEscape(service) + "/baseURI.json"
	u.RawQuery = "version=1.0"
	body, _, err := c.do(ctx, "domain lookup", http.MethodGet, u.String(), nil, "")
	if err != nil {
		return "", err
	}
	host, err := parseDomainReply(body, service)
	if err != nil {
		return "", fmt.Errorf("domain lookup: %w", err)
	}
	return host, nil
}

// parseDomainReply reads the single-service object or the baseURIs array
// form and returns the host for service.
func parseDomainReply(body []byte, service string) (string, error) {
	var reply struct {
		serviceURI
		BaseURIs []serviceURI `json:"baseURIs"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		return "", fmt.Errorf("reply is not JSON: %w", err)
	}
	if reply.BaseURI != "" && (reply.Service == "" || reply.Service == service) {
		return strings.TrimSpace(reply.BaseURI), nil
	}
	for _, s := range reply.BaseURIs {
		if s.Service == service && s.BaseURI != "" {
			return strings.TrimSpace(s.BaseURI), nil
		}
	}
	return "", fmt.Errorf("no baseURI for service %q in reply", service)
}
