// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
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
func (c *Client) sentinelLookup(account string) DomainLookup {
	q := c.loginLookup(account)
	q.Service = sentinelService
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
	resp, err := t.rt.RoundTrip(r)
	if err != nil || resp.StatusCode/100 != 2 {
		return resp, err
	}
	return wholeExpiresIn(resp)
}

// maxTokenReply is as much of a reply as x/oauth2 reads.
const maxTokenReply = 1 << 20

// wholeExpiresIn rounds down the expires_in of a JSON token reply that is
// not an integer (3600.5, "1800.9", 1.2e3; negative ones become 0, absent):
// x/oauth2 refuses the whole reply for it, where the number would do. It
// reads form and text replies leniently itself. Any other reply is passed
// on as it came.
func wholeExpiresIn(resp *http.Response) (*http.Response, error) {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		return resp, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenReply+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var reply map[string]json.RawMessage
	if len(body) > maxTokenReply || json.Unmarshal(body, &reply) != nil {
		return resp, nil
	}
	var n json.Number // a number, or a string that holds one
	if raw, ok := reply["expires_in"]; !ok || json.Unmarshal(raw, &n) != nil {
		return resp, nil
	}
	if _, err := n.Int64(); err == nil {
		return resp, nil
	}
	f, err := strconv.ParseFloat(n.String(), 64) // out of range: ±Inf
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return resp, nil
	}
	whole := int64(min(max(math.Floor(f), 0), math.MaxInt32)) // x/oauth2's own cap
	reply["expires_in"] = json.RawMessage(strconv.FormatInt(whole, 10))
	if body, err = json.Marshal(reply); err != nil {
		return resp, nil
	}
	resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}
