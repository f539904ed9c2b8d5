// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The snapshot a retry after a 401 starts from: what handlers after lpauth
// may change on the request (method, URL, host, header values, the route
// groups they satisfied) and the response header map a held-back 401 fills.

import (
	"net/http"
	"net/url"
	"slices"

	"github.com/caddyserver/caddy/v2"
)

// retryNeeds is what a retry must restore, for one handler in one server
// instance: worked out from the server's routes once (routes.go).
type retryNeeds struct {
	// request: a handler that may run between this one and the one that
	// answers can change the request, so a copy of it is kept.
	request bool
	// groups: a route after this handler is in a route group, so the
	// groups the first attempt took are freed for the retry.
	groups bool
}

// retryNeedsFor answers for r's server; without one, everything is kept.
func (h *Handler) retryNeedsFor(r *http.Request) retryNeeds {
	if a := h.afterFor(r); a != nil {
		return a.retry
	}
	return retryNeeds{request: true, groups: true}
}

// requestState is what later handlers may change on a request.
type requestState struct {
	url        url.URL
	requestURI string
	method     string
	host       string
	headerMap  http.Header
	header     headerSnapshot
}

func (s *requestState) take(r *http.Request) {
	s.url, s.requestURI, s.method, s.host, s.headerMap = *r.URL, r.RequestURI, r.Method, r.Host, r.Header
	s.header.take(r.Header)
}

func (s *requestState) restore(r *http.Request) {
	u := s.url
	r.URL, r.RequestURI, r.Method, r.Host, r.Header = &u, s.requestURI, s.method, s.host, s.headerMap
	s.header.restore(r.Header)
}

// headerSnapshot remembers a header map's entries as they are now, values
// included: handlers after lpauth edit values in place (a header replace),
// so keeping the value slices themselves would let a retry see, and edit
// again, its first attempt's edits. The values are copied into arrays that
// stay on the stack for the usual small maps (strings are immutable: only
// the slices need copying); a restore, on the slow path only, hands the map
// one fresh heap copy, so nothing the retry edits reaches the snapshot.
type headerSnapshot struct {
	n     int
	keys  [16]string
	spans [16]valueSpan
	used  int
	vals  [32]string
	spill http.Header // for larger maps: a copy of its own
}

// headerRefs remembers a header map's entries by reference, for the
// response header map: what a held-back 401 adds to it (new keys, appended
// values) must not reach the answer that replaces it. Lighter than a
// headerSnapshot, as the request path runs it on every request.
type headerRefs struct {
	n     int
	keys  [8]string
	vals  [8][]string
	spill http.Header // for larger maps
}

func (s *headerRefs) take(h http.Header) {
	if len(h) > len(s.keys) {
		s.spill = make(http.Header, len(h))
		for k, v := range h {
			s.spill[k] = v
		}
		return
	}
	for k, v := range h {
		s.keys[s.n], s.vals[s.n] = k, v
		s.n++
	}
}

func (s *headerRefs) restore(h http.Header) {
	clear(h)
	for k, v := range s.spill {
		h[k] = v
	}
	for i := range s.n {
		h[s.keys[i]] = s.vals[i]
	}
}

// valueSpan is where one key's values lie in headerSnapshot.vals; n < 0
// for a nil slice.
type valueSpan struct{ off, n int32 }

func (s *headerSnapshot) take(h http.Header) {
	if len(h) > len(s.keys) {
		s.spill = h.Clone()
		return
	}
	for k, v := range h {
		if s.used+len(v) > len(s.vals) {
			s.n, s.used, s.spill = 0, 0, h.Clone()
			return
		}
		sp := valueSpan{int32(s.used), int32(len(v))}
		if v == nil {
			sp.n = -1
		}
		s.keys[s.n], s.spans[s.n] = k, sp
		if len(v) == 1 {
			s.vals[s.used] = v[0] // the usual case, without copy's call
		} else {
			copy(s.vals[s.used:], v)
		}
		s.used += len(v)
		s.n++
	}
}

// restore puts the remembered entries back into h; it is called once.
func (s *headerSnapshot) restore(h http.Header) {
	clear(h)
	for k, v := range s.spill {
		h[k] = v
	}
	vals := make([]string, s.used)
	copy(vals, s.vals[:s.used])
	for i, sp := range s.spans[:s.n] {
		if sp.n < 0 {
			h[s.keys[i]] = nil
			continue
		}
		end := sp.off + sp.n
		h[s.keys[i]] = vals[sp.off:end:end] // an append reallocates
	}
}

// routeGroupsKey is where Caddy records, per request, the route groups
// already satisfied: of the routes in one group (the Caddyfile's handle
// blocks), only the first matching one runs.
// (Boxed once: a string-typed key passed to Context.Value allocates.)
var routeGroupsKey any = caddy.CtxKey("route_group")

// routeGroups returns the request's group record and the groups satisfied
// before this handler ran (nil when none, the usual case: no allocation).
func routeGroups(r *http.Request) (map[string]struct{}, []string) {
	groups, _ := r.Context().Value(routeGroupsKey).(map[string]struct{})
	if len(groups) == 0 {
		return groups, nil
	}
	satisfied := make([]string, 0, len(groups))
	for g := range groups {
		satisfied = append(satisfied, g)
	}
	return groups, satisfied
}

// forgetGroupsSince drops the groups the first attempt satisfied, so the
// retry runs the same handle block again instead of skipping it.
func forgetGroupsSince(groups map[string]struct{}, satisfied []string) {
	for g := range groups {
		if !slices.Contains(satisfied, g) {
			delete(groups, g)
		}
	}
}
