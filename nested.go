// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Two lpauth handlers on one request (a site-level one, and another in a
// handle block for a path with an identity of its own): the inner one's
// credential is what goes upstream, and the outer one must neither wait for
// its own credential (its identity may be down while the inner one's is
// fine) nor act on a 401 for a credential it did not set. The second is
// told after the fact (nestedRan); the first must be known before, from the
// server's routes.

// innerChains are, for one handler in one server instance, the matcher
// chains of the handlers after it that serve a request without its
// credential: another lpauth (which sets its own) or lpauth_ready (which
// needs none).
type innerChains = perServer[[][]caddyhttp.MatcherSets]

// innerWillServe says whether, for r, a handler after h will set the
// credential itself (or answer without one), so h need not wait for its
// own. Asked only when h has no credential: the fast path never walks.
// When in doubt (a rewrite between the two changed what the matchers see),
// the answer is no and h waits, as it would alone.
func (h *Handler) innerWillServe(r *http.Request) bool {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return false
	}
	chains := h.inner.get(srv, func(srv *caddyhttp.Server) [][]caddyhttp.MatcherSets { return h.chainsAfter(srv.Routes) })
	for _, chain := range chains {
		if allMatch(chain, r) {
			return true
		}
	}
	return false
}

// chainsAfter lists the matcher chains of the lpauth and lpauth_ready
// handlers that come after h in routes.
func (h *Handler) chainsAfter(routes caddyhttp.RouteList) [][]caddyhttp.MatcherSets {
	var chains [][]caddyhttp.MatcherSets
	after := false
	walkRoutes(routes, func(chain []caddyhttp.MatcherSets, mh caddyhttp.MiddlewareHandler) bool {
		switch other := mh.(type) {
		case *Handler:
			if other == h {
				after = true
				return true
			}
		case *Ready:
		default:
			return true
		}
		if after {
			chains = append(chains, chain)
		}
		return true
	})
	return chains
}

// allMatch says whether r matches every route of a chain (a route without
// matchers matches everything).
func allMatch(chain []caddyhttp.MatcherSets, r *http.Request) bool {
	for _, sets := range chain {
		if len(sets) == 0 {
			continue
		}
		ok, err := sets.AnyMatchWithError(r)
		if err != nil || !ok {
			return false
		}
	}
	return true
}

// nestedRan says whether another lpauth handler ran for r after h (each
// handler leaves its own identity in the request's variables).
func (h *Handler) nestedRan(r *http.Request) bool {
	return IdentityFrom(r) != h.identity
}
