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

// innerWillServe says whether, for r, a handler after h will certainly set
// the credential itself (or answer without one), so h need not wait for its
// own. Asked only when h has no credential: the fast path never walks.
// When in doubt (a rewrite between the two changed what the matchers see,
// or a handler in between might answer or forward the request), the answer
// is no and h waits, as it would alone: a request never leaves for the
// proxy without a credential.
func (h *Handler) innerWillServe(r *http.Request) bool {
	a := h.afterFor(r)
	return a != nil && a.place.reaches(r, bringsOwnCredential)
}

// bringsOwnCredential says whether mh serves a request without the
// credential of an lpauth before it: another lpauth sets its own, and
// lpauth_ready needs none.
func bringsOwnCredential(mh caddyhttp.MiddlewareHandler) bool {
	switch mh.(type) {
	case *Handler, *Ready:
		return true
	}
	return false
}

// nestedRan says whether another lpauth handler ran for r after h (each
// handler leaves its own identity in the request's variables).
func (h *Handler) nestedRan(r *http.Request) bool {
	return IdentityFrom(r) != h.identity
}

// laterServesAccount says whether, for r, a handler after h that certainly
// runs is an lpauth with a session of account: a messaging WebSocket path
// naming that account is then passed on for it.
func (h *Handler) laterServesAccount(r *http.Request, account string) bool {
	a := h.afterFor(r)
	return a != nil && a.place.reaches(r, func(mh caddyhttp.MiddlewareHandler) bool {
		lp, ok := mh.(*Handler)
		return ok && lp.identity.AccountID == account && lp.keeper.Identity().Kind != appJWTKind
	})
}
