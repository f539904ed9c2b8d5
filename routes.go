// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"slices"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// walkRoutes visits every handler of a provisioned route list in the order
// a request meets them, depth first: a *caddyhttp.Subroute (what the
// Caddyfile's handle, handle_path and route become) is visited itself, then
// its routes and its own error routes. chain holds the matcher sets of the
// enclosing routes, outermost first, the handler's own route last; each
// visit gets a slice of its own, which it may keep. visit returns false to
// stop the walk.
func walkRoutes(routes caddyhttp.RouteList, visit func(chain []caddyhttp.MatcherSets, h caddyhttp.MiddlewareHandler) bool) {
	walkRouteList(nil, routes, visit)
}

// walkRouteList walks routes under the outer chain; false means a visit
// stopped the walk.

func walkRouteList(outer []caddyhttp.MatcherSets, routes caddyhttp.RouteList, visit func([]caddyhttp.MatcherSets, caddyhttp.MiddlewareHandler) bool) bool {
	for _, rt := range routes {
		// A full slice expression: every route gets its own backing
		// array, so a chain a visit kept is never overwritten.
		chain := append(outer[:len(outer):len(outer)], rt.MatcherSets)
		for _, h := range rt.Handlers {
			if !visit(slices.Clip(chain), h) {
				return false
			}
			sr, ok := h.(*caddyhttp.Subroute)
			if !ok {
				continue
			}
			if !walkRouteList(chain, sr.Routes, visit) {
				return false
			}
			if sr.Errors != nil && !walkRouteList(chain, sr.Errors.Routes, visit) {
				return false
			}
		}
	}
	return true
}

// lpauthHandlersOf returns the lpauth handlers of srv, each once, in route
// order: those of its routes, then of its error routes (handle_errors),
// then of its named routes (invoke) by name.
func lpauthHandlersOf(srv *caddyhttp.Server) []*Handler {
	if srv == nil {
		return nil
	}
	lists := []caddyhttp.RouteList{srv.Routes}
	if srv.Errors != nil {
		lists = append(lists, srv.Errors.Routes)
	}
	names := make([]string, 0, len(srv.NamedRoutes))
	for name := range srv.NamedRoutes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if rt := srv.NamedRoutes[name]; rt != nil {
			lists = append(lists, caddyhttp.RouteList{*rt})
		}
	}
	var found []*Handler
	seen := map[*Handler]bool{}
	for _, routes := range lists {
		walkRoutes(routes, func(_ []caddyhttp.MatcherSets, mh caddyhttp.MiddlewareHandler) bool {
			if h, ok := mh.(*Handler); ok && !seen[h] {
				seen[h] = true
				found = append(found, h)
			}
			return true
		})
	}
	return found
}

// perServer keeps what a handler worked out from one server instance's
// routes: a reload makes a new server, and the value is worked out again.
type perServer[T any] struct {
	last atomic.Pointer[serverValue[T]]
}

type serverValue[T any] struct {
	srv *caddyhttp.Server
	v   T
}

// get returns the value for srv, calling build for a server not seen last.
func (c *perServer[T]) get(srv *caddyhttp.Server, build func(*caddyhttp.Server) T) T {
	if sv := c.last.Load(); sv != nil && sv.srv == srv {
		return sv.v
	}
	sv := &serverValue[T]{srv: srv, v: build(srv)}
	c.last.Store(sv)
	return sv.v
}
