// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"maps"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
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

// afterHandler is what one lpauth handler works out, once per server
// instance, from where it sits in the server's routes.
type afterHandler struct {
	place    *handlerPlace // asked per request what certainly runs after it (reaches)
	retry    retryNeeds
	rewrites bool        // a URI rewrite may follow: the messaging WebSocket warns
	warned   atomic.Bool // of it, once
}

// afterFor answers for r's server; nil without one (or for a handler made
// without Provision).
func (h *Handler) afterFor(r *http.Request) *afterHandler {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil || h.after == nil {
		return nil
	}
	return h.after.get(srv, func(srv *caddyhttp.Server) *afterHandler {
		p := placeOf(srv, h)
		return &afterHandler{
			place:    p,
			retry:    retryNeeds{request: !p.requestUntouched(), groups: p.groupsAfter()},
			rewrites: p.rewritesAfter(),
		}
	})
}

// What certainly runs after a handler, for one request. Caddy dispatches a
// route list in order: a route whose group an earlier route took is
// skipped unseen (the Caddyfile's sibling handle and handle_path blocks
// are one group), one whose matchers do not match is skipped, a matching
// one takes its group and runs its handlers, and after a matched terminal
// route nothing runs. Each handler decides whether to call the next one;
// only a few are known always to do so. reaches replays that from one
// handler on, and answers yes only where no other outcome is possible.

// maxUnsure bounds the routes whose matching a walk cannot tell (after a
// rewrite) and so follows both ways; beyond it the answer is no.
const maxUnsure = 16

// handlerPlace is where a handler sits in a server's routes.
type handlerPlace struct {
	// path holds one cursor per level, the outermost route list first and
	// the handler's own last, each just past the handler (or subroute) of
	// that level.
	path []routeCursor
	// earlier are the groups of the routes dispatched before the handler:
	// taken when a request does not say which of them matched.
	earlier []string
}

// routeCursor is a position in a route list.
type routeCursor struct {
	routes  caddyhttp.RouteList
	route   int // the route in routes
	handler int // the route's next handler; -1: its matchers are yet to be tried
}

// placeOf finds h in srv's routes, else its error routes (handle_errors),
// else its named routes (invoke), comparing handlers by identity (h is a
// pointer). nil: h is not there. Past the end of an error list or a named
// route the walk knows nothing, and says no.
func placeOf(srv *caddyhttp.Server, h caddyhttp.MiddlewareHandler) *handlerPlace {
	if srv == nil {
		return nil
	}
	lists := []caddyhttp.RouteList{srv.Routes}
	if srv.Errors != nil {
		lists = append(lists, srv.Errors.Routes)
	}
	for _, name := range slices.Sorted(maps.Keys(srv.NamedRoutes)) {
		if rt := srv.NamedRoutes[name]; rt != nil {
			lists = append(lists, caddyhttp.RouteList{*rt})
		}
	}
	for _, routes := range lists {
		p := new(handlerPlace)
		if p.find(routes, h) {
			slices.Reverse(p.path)
			return p
		}
	}
	return nil
}

// find looks for h under routes depth first, as a request meets handlers,
// recording the groups met on the way; the path comes out innermost first.
func (p *handlerPlace) find(routes caddyhttp.RouteList, h caddyhttp.MiddlewareHandler) bool {
	for i, rt := range routes {
		if rt.Group != "" {
			p.earlier = append(p.earlier, rt.Group)
		}
		for j, mh := range rt.Handlers {
			found := mh == h // different dynamic types compare unequal, never panic
			if sr, ok := mh.(*caddyhttp.Subroute); ok && !found {
				found = p.find(sr.Routes, h) || (sr.Errors != nil && p.find(sr.Errors.Routes, h))
			}
			if found {
				p.path = append(p.path, routeCursor{routes: routes, route: i, handler: j + 1})
				return true
			}
		}
	}
	return false
}

// reaches says whether, for r, Caddy certainly runs a handler that target
// accepts after the one at p, before any handler that might answer the
// request, forward it, or not call the next one. Asked on the slow path
// only: it tries matchers and allocates.
func (p *handlerPlace) reaches(r *http.Request, target func(caddyhttp.MiddlewareHandler) bool) bool {
	if p == nil || len(p.path) == 0 {
		return false
	}
	taken := map[string]struct{}{}
	if groups, ok := r.Context().Value(routeGroupsKey).(map[string]struct{}); ok {
		maps.Copy(taken, groups) // the groups Caddy itself will check
	} else {
		for _, g := range p.earlier {
			taken[g] = struct{}{}
		}
	}
	for _, c := range p.path {
		if g := c.routes[c.route].Group; g != "" {
			taken[g] = struct{}{}
		}
	}
	w := &routeWalk{r: r, target: target, unsure: maxUnsure}
	return w.run(walkState{stack: slices.Clone(p.path), taken: taken})
}

// routeWalk is one reaches question.
type routeWalk struct {
	r      *http.Request
	target func(caddyhttp.MiddlewareHandler) bool
	unsure int // routes of unknown matching still allowed
}

// walkState is what dispatch has done so far on one way through the routes.
type walkState struct {
	stack   []routeCursor       // innermost last
	taken   map[string]struct{} // route groups already satisfied
	changed bool                // a handler changed the URI or method
}

func (s walkState) clone() walkState {
	return walkState{stack: slices.Clone(s.stack), taken: maps.Clone(s.taken), changed: s.changed}
}

// run dispatches from s until the answer is known.
func (w *routeWalk) run(s walkState) bool {
	for len(s.stack) > 0 {
		c := &s.stack[len(s.stack)-1]
		if c.route >= len(c.routes) {
			// The list is done: its subroute calls the handler after it.
			s.stack = s.stack[:len(s.stack)-1]
			continue
		}
		rt := &c.routes[c.route]
		if c.handler < 0 {
			switch w.match(rt, s) {
			case routeSkipped:
				c.route++
				continue
			case routeFails:
				return false
			case routeUnsure:
				if w.unsure == 0 {
					return false
				}
				w.unsure--
				skip := s.clone()
				skip.stack[len(skip.stack)-1].route++
				if !w.run(skip) {
					return false
				}
				// and on, as if it matched
			}
			if rt.Group != "" {
				s.taken[rt.Group] = struct{}{}
			}
			c.handler = 0
			continue
		}
		if c.handler < len(rt.Handlers) {
			mh := rt.Handlers[c.handler]
			c.handler++
			if w.target(mh) {
				return true
			}
			switch handlerKindOf(mh) {
			case handlerEnters:
				// Error routes run only on an error: they never count.
				s.stack = append(s.stack, routeCursor{routes: mh.(*caddyhttp.Subroute).Routes, handler: -1})
			case handlerChanges:
				s.changed = true
			case handlerPasses:
			default:
				return false
			}
			continue
		}
		if rt.Terminal {
			return false
		}
		c.route++
		c.handler = -1
	}
	return false // past the server's last route Caddy runs nothing
}

type routeMatch int

const (
	routeMatches routeMatch = iota
	routeSkipped            // group taken, or the matchers say no
	routeUnsure             // matchers after a rewrite: either may happen
	routeFails              // a matcher error: Caddy ends the request with it
)

// match tells what dispatch does with rt.
func (w *routeWalk) match(rt *caddyhttp.Route, s walkState) routeMatch {
	if _, ok := s.taken[rt.Group]; ok && rt.Group != "" {
		return routeSkipped
	}
	if len(rt.MatcherSets) == 0 {
		return routeMatches
	}
	if s.changed {
		return routeUnsure // the matchers would see another URI than r's
	}
	ok, err := rt.MatcherSets.AnyMatchWithError(w.r)
	switch {
	case err != nil:
		return routeFails
	case !ok:
		return routeSkipped
	}
	return routeMatches
}

type handlerKind int

const (
	handlerEnds    handlerKind = iota // may answer, forward, or not call the next one
	handlerPasses                     // always calls the next one, URI and method unchanged
	handlerChanges                    // always calls the next one, after changing URI or method
	handlerEnters                     // a subroute: its routes, then the next one
)

// handlerKinds are the handler modules known always to call the next
// handler. encode and friends sit between a site-level handler and the
// site's handle blocks in Caddy's default directive order.
var handlerKinds = map[string]handlerKind{
	"http.handlers.subroute":     handlerEnters,
	"http.handlers.headers":      handlerPasses,
	"http.handlers.vars":         handlerPasses,
	"http.handlers.map":          handlerPasses,
	"http.handlers.encode":       handlerPasses,
	"http.handlers.push":         handlerPasses,
	"http.handlers.templates":    handlerPasses,
	"http.handlers.intercept":    handlerPasses,
	"http.handlers.tracing":      handlerPasses,
	"http.handlers.log_append":   handlerPasses,
	"http.handlers.request_body": handlerPasses,
	"http.handlers.rewrite":      handlerChanges, // also the Caddyfile's uri, method and handle_path's strip
}

// handlerKindOf classifies mh by its module ID; an unknown one ends.
func handlerKindOf(mh caddyhttp.MiddlewareHandler) handlerKind {
	if _, ok := mh.(*caddyhttp.Subroute); ok {
		return handlerEnters
	}
	m, ok := mh.(caddy.Module)
	if !ok {
		return handlerEnds
	}
	return handlerKinds[string(m.CaddyModule().ID)]
}

// What may change the request between a handler and the one that answers
// it. A retry after a 401 starts from the request as it came, so the
// handler keeps a copy of it, unless nothing that can run in between
// touches the request: then the request is still as it came.

// requestUntouched says whether every handler that may run after the one
// at p, up to one that answers, is known to leave the request as it is:
// the common case of lpauth right before reverse_proxy. It tries no
// matcher: any route that might run counts. Doubt means false.
func (p *handlerPlace) requestUntouched() bool {
	if p == nil || len(p.path) == 0 {
		return false
	}
	taken := p.takenGroups()
	for i := len(p.path) - 1; i >= 0; i-- {
		c := p.path[i]
		rt := c.routes[c.route]
		answered, ok := handlersUntouched(rt.Handlers[c.handler:], taken)
		if !ok {
			return false
		}
		if answered || rt.Terminal {
			return true
		}
		if answered, ok = routesUntouched(c.routes[c.route+1:], taken); !ok || answered {
			return ok
		}
	}
	return true // past the server's last route Caddy runs nothing
}

// groupsAfter says whether a route that may run after the handler at p
// belongs to a route group: only then can the first attempt take a group
// that its retry must find free again. Doubt means true.
func (p *handlerPlace) groupsAfter() bool {
	return p.anyAfter(func(rt *caddyhttp.Route) bool { return rt.Group != "" }, nil)
}

// rewritesAfter says whether a handler that may run after the one at p
// rewrites the URI (rewrite, uri, method; reverse_proxy's own rewrite):
// for the messaging WebSocket that can drop the bearer from the path, or
// copy it into what is logged. Doubt means true.
func (p *handlerPlace) rewritesAfter() bool {
	return p.anyAfter(nil, func(mh caddyhttp.MiddlewareHandler) bool {
		if rp, ok := mh.(*reverseproxy.Handler); ok {
			return rp.Rewrite != nil
		}
		return handlerKindOf(mh) == handlerChanges
	})
}

// anyAfter says whether a route that may run after the handler at p (the
// rest of its own route, the later routes at every level, the routes of
// subroutes in them; a route of a group p's routes took is skipped) is one
// routeIs accepts or holds a handler handlerIs accepts. Either may be nil.
// No matcher is tried. Doubt means true.
func (p *handlerPlace) anyAfter(routeIs func(*caddyhttp.Route) bool, handlerIs func(caddyhttp.MiddlewareHandler) bool) bool {
	if p == nil || len(p.path) == 0 {
		return true
	}
	w := afterWalk{taken: p.takenGroups(), routeIs: routeIs, handlerIs: handlerIs}
	for _, c := range p.path {
		if w.handlers(c.routes[c.route].Handlers[c.handler:]) || w.routes(c.routes[c.route+1:]) {
			return true
		}
	}
	return false
}

// afterWalk is one anyAfter question.
type afterWalk struct {
	taken     map[string]bool
	routeIs   func(*caddyhttp.Route) bool
	handlerIs func(caddyhttp.MiddlewareHandler) bool
}

func (w afterWalk) routes(routes caddyhttp.RouteList) bool {
	for i := range routes {
		rt := &routes[i]
		if w.taken[rt.Group] {
			continue // skipped unseen
		}
		if (w.routeIs != nil && w.routeIs(rt)) || w.handlers(rt.Handlers) {
			return true
		}
	}
	return false
}

func (w afterWalk) handlers(handlers []caddyhttp.MiddlewareHandler) bool {
	for _, mh := range handlers {
		if sr, ok := mh.(*caddyhttp.Subroute); ok {
			if w.routes(sr.Routes) {
				return true
			}
			continue
		}
		if w.handlerIs != nil && w.handlerIs(mh) {
			return true
		}
	}
	return false
}

// takenGroups are the groups of the routes that hold the handler at p: a
// later route of one of them is skipped unseen.
func (p *handlerPlace) takenGroups() map[string]bool {
	taken := map[string]bool{}
	for _, c := range p.path {
		if g := c.routes[c.route].Group; g != "" {
			taken[g] = true
		}
	}
	return taken
}

// routesUntouched walks routes that may each run or not. answered: one of
// them certainly runs (no matchers, its group free) and certainly answers,
// or is terminal, so nothing after the list runs.
func routesUntouched(routes caddyhttp.RouteList, taken map[string]bool) (answered, ok bool) {
	for _, rt := range routes {
		if rt.Group != "" && taken[rt.Group] {
			continue
		}
		answered, ok := handlersUntouched(rt.Handlers, taken)
		if !ok {
			return false, false
		}
		if len(rt.MatcherSets) == 0 && (answered || rt.Terminal) {
			return true, true
		}
	}
	return false, true
}

// handlersUntouched walks the handlers of one route in order. answered:
// one of them answers without calling the next. Error routes run only on
// an error, after which lpauth does not retry: they never count.
func handlersUntouched(handlers []caddyhttp.MiddlewareHandler, taken map[string]bool) (answered, ok bool) {
	for _, mh := range handlers {
		if sr, isSub := mh.(*caddyhttp.Subroute); isSub {
			answered, ok := routesUntouched(sr.Routes, taken)
			if !ok || answered {
				return answered, ok
			}
			continue
		}
		switch leavesRequest(mh) {
		case requestAnswered:
			return true, true
		case requestKept:
		default:
			return false, false
		}
	}
	return false, true
}

type requestEffect int

const (
	requestMayChange requestEffect = iota // or unknown
	requestKept                           // calls the next handler, the request as it was
	requestAnswered                       // answers without changing the request
)

// leavesRequest tells what mh does to the request: a short list of
// handlers read for it, anything else may change it.
func leavesRequest(mh caddyhttp.MiddlewareHandler) requestEffect {
	switch h := mh.(type) {
	case *headers.Handler:
		if h.Request == nil { // response headers only
			return requestKept
		}
	case *reverseproxy.Handler:
		// It sends a copy (header, URL and its rewrite included); only
		// handle_response routes run on the request itself.
		if len(h.HandleResponse) == 0 {
			return requestAnswered
		}
	}
	if m, ok := mh.(caddy.Module); ok {
		return requestEffects[string(m.CaddyModule().ID)] // requestMayChange if absent
	}
	return requestMayChange
}

// requestEffects are the handlers, by module ID, whose effect on the
// request does not depend on their config.
var requestEffects = map[string]requestEffect{
	"http.handlers.static_response": requestAnswered, // respond
	"http.handlers.error":           requestAnswered, // an error: no retry follows
	"http.handlers.vars":            requestKept,     // variables: a retry has its own copy
}
