// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package cc is the client of LivePerson Conversational Cloud that lpauth
// speaks through: the Domain API and its cache, the Login Service (login,
// refresh, logout), the Sentinel token exchange and the JWTs it issues, the
// one check of every host, and CC's errors made safe to show. It knows
// nothing of Caddy.
package cc

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
)

// DefaultCSDS is the Domain API base of LivePerson Conversational Cloud.
const DefaultCSDS = "https://api.liveperson.net"

// maxErrorBody bounds how much of an error response is read and kept.
const maxErrorBody = 16 << 10

// ClientConfig sets up a Client.
type ClientConfig struct {
	// CSDS is the Domain API base URL; empty = DefaultCSDS.
	CSDS string
	// Domain, when set, is the agentVep host (optionally with a scheme) and
	// the Domain API is not asked.
	Domain string
	// CAFile is an optional PEM bundle trusted in addition to the system
	// roots.
	CAFile string
	// UserAgent is sent on every call.
	UserAgent string
	// Transport overrides the HTTP transport (tests). Nil = a clone of
	// http.DefaultTransport, which honours HTTPS_PROXY and NO_PROXY.
	Transport http.RoundTripper
}

// Client speaks to the Domain API and the Login Service API. It is safe for
// concurrent use and holds no session state of its own.
type Client struct {
	csds      *url.URL
	domain    *url.URL // nil: ask the Domain API
	userAgent string
	http      *http.Client
	clock     Clock // of the login host's Domain API answers; nil = real time
}

// NewClient checks the configuration and builds a client. It does no
// network I/O.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.CSDS == "" {
		cfg.CSDS = DefaultCSDS
	}
	csds, err := validateHost(cfg.CSDS, "", hostConfigured)
	if err != nil {
		return nil, fmt.Errorf("csds: %w", err)
	}
	c := &Client{csds: csds, userAgent: cfg.UserAgent}
	if cfg.Domain != "" {
		if c.domain, err = validateHost(cfg.Domain, csds.Scheme, hostConfigured); err != nil {
			return nil, fmt.Errorf("domain: %w", err)
		}
	}
	rt := cfg.Transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if cfg.CAFile != "" {
			pool, err := loadCAFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		rt = tr
	}
	// No cookie jar: Session_id is sent explicitly, so a jar's Secure and
	// domain rules cannot silently drop it.
	c.http = &http.Client{
		Transport: rt,
		// CC's login endpoints do not redirect; following one could
		// send credentials somewhere unexpected.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c, nil
}

// CSDS is the Domain API base the client asks.
func (c *Client) CSDS() string { return c.csds.String() }

// CloseIdleConnections releases pooled connections, for a client that is
// being replaced.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// do sends one request and returns the body of a 2xx answer, or an
// *APIError whose text is scrubbed of secrets, the values the request
// carried that an answer might quote. Transport errors are wrapped with op;
// the URL they name holds no secret.
func (c *Client) do(ctx context.Context, op, method, target string, payload []byte, sessionID string, secrets ...string) ([]byte, *http.Response, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	if sessionID != "" {
		req.AddCookie(&http.Cookie{Name: "Session_id", Value: sessionID})
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	limit := int64(maxErrorBody)
	if resp.StatusCode/100 == 2 {
		limit = 4 << 20 // a login reply carries account data; bound it anyway
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading reply: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, nil, parseAPIError(op, resp, data, secrets...)
	}
	return data, resp, nil
}
