// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"net/http"
)

// sentinelService is the Domain API name of Sentinel, CC's OAuth 2.0
// authorisation server.
const sentinelService = "sentinel"

// SentinelBaseURL returns the Sentinel base URL for the account: the
// configured domain (for an AppJWT identity, `domain` names the Sentinel
// host), or the Domain API's answer for "sentinel" through the shared
// cache, spoken to with the scheme of csds.
func (c *Client) SentinelBaseURL(ctx context.Context, account string) (string, error) {
	return c.serviceBase(ctx, c.sentinelLookup(account))
}

// forgetSentinel marks the cached Sentinel host for a recheck, after a
// connection failure (the host may have moved).
func (c *Client) forgetSentinel(account string) { c.forget(c.sentinelLookup(account)) }

// sentinelLookup asks for the Sentinel host with the login host's
// freshness window (Proactive Messaging asks to cache it at most a day).
func (c *Client) sentinelLookup(account string) domainLookup {
	q := c.loginLookup(account)
	q.service = sentinelService
	return q
}

// oauthHTTPClient is the HTTP client golang.org/x/oauth2 is given: this
// client's transport (proxy, CA bundle) and its refusal to follow
// redirects, plus the User-Agent and Accept that every CC call carries.
func (c *Client) oauthHTTPClient() *http.Client {
	return &http.Client{
		Transport:     oauthTransport{rt: c.http.Transport, userAgent: c.userAgent},
		CheckRedirect: c.http.CheckRedirect,
	}
}

// oauthTransport adds the headers x/oauth2 does not set.
type oauthTransport struct {
	rt        http.RoundTripper
	userAgent string
}

func (t oauthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context()) // a RoundTripper must not change its request
	r.Header.Set("Accept", "application/json")
	if t.userAgent != "" {
		r.Header.Set("User-Agent", t.userAgent)
	}
	return t.rt.RoundTrip(r)
}
