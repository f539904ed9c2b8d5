// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"errors"
	"io"
	"maps"
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The request path: inject the credential, hold back a 401, and retry the
// request once, as it came, with the credential the keeper gives.

// ServeHTTP adds the bearer and handles an upstream 401.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	caddyhttp.SetVar(r.Context(), IdentityVar, h.identity)
	cred := h.keeper.Current() // the fast path: one atomic load
	mapped := cred             // the credential the placeholders describe
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl != nil {
		repl.Map(h.placeholdersFor(cred))
	}
	ums, isUMS := umsPathOf(r)
	isUMS = isUMS && h.keeper.Identity().Kind != appJWTKind // an AppJWT is no UMS credential: the path is left alone
	if isUMS && ums.account != h.identity.AccountID {
		if !h.laterServesAccount(r, ums.account) {
			return h.umsForbidden(ums)
		}
		isUMS = false // passed on unchanged, for the handler that serves it
	}
	if isUMS {
		h.warnUMSRewrite(r)
	}
	upgrade := keepAuthorizationEndToEnd(r.Header)
	if !upgrade && r.Method != http.MethodConnect {
		// Counted, so that a logout after a reload waits for it; an
		// upgraded connection (HTTP/1.1 Upgrade, HTTP/2 CONNECT) may last
		// for hours and is not waited for.
		h.keeper.BeginRequest()
		defer h.keeper.EndRequest()
	}
	// Without a credential, a handler after this one that brings its own
	// (see nested.go) spares the wait; should it not run after all, the
	// 401 is handled below as for any credential, with this one's.
	forInner := cred == nil && h.innerWillServe(r)
	if cred == nil && !forInner {
		var err error
		if cred, err = h.keeper.Get(r.Context()); err != nil {
			return h.unavailable(w, err)
		}
	}
	dropAuthorizationTrailer(r)
	bodyIn := r.Body
	body, replayable, err := h.bufferBody(r)
	if err != nil {
		return err
	}
	if body != nil {
		defer body.release()
	}
	if forInner && !replayable {
		// Too late to fall back if the inner handler did not run.
		if cred, err = h.keeper.Get(r.Context()); err != nil {
			return h.unavailable(w, err)
		}
	}
	if cur := h.keeper.Current(); cur != nil {
		cred = cur // reading the body may have taken a while
	}
	h.setAuthorization(r, cred)
	if cred != mapped {
		setCredentialPlaceholders(repl, cred)
	}

	// What the handlers after this one get: r, or for the messaging
	// WebSocket a copy with the bearer in its path, and for its upgrade a
	// writer that watches CC's close frames.
	serveNext := func(w http.ResponseWriter, r *http.Request, c *credential) error {
		if isUMS && c != nil {
			r = withBearerInPath(r, ums, c.Token)
			if upgrade || r.Method == http.MethodConnect {
				w = &closeWatchWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, watch: &closeWatch{onClose: func(code int) { h.umsClosed(c, code) }}}
			}
		}
		return next.ServeHTTP(w, r)
	}

	if !replayable {
		rec := newHoldBackWriter(w, false)
		defer rec.release()
		err := serveNext(rec, r, cred)
		if rec.status == http.StatusUnauthorized && !h.nestedRan(r) {
			// Too late to retry this one, but the next requests should
			// find a live credential.
			h.countUnauthorized("not_replayable")
			h.keeper.UnauthorizedLater(cred)
		}
		return err
	}

	// What the first attempt may change, kept for a retry: the response
	// header map (a held-back 401 fills it) and the request.
	var before headerRefs
	before.take(w.Header())
	needs := h.retryNeedsFor(r)
	var orig requestState
	if needs.request {
		orig.take(r)
	}
	var groups map[string]struct{}
	var satisfied []string
	if needs.groups {
		groups, satisfied = routeGroups(r)
	}
	rec := newHoldBackWriter(w, true)
	defer rec.release()
	err = serveNext(rec, r, cred)
	if rec.Large401() {
		h.countUnauthorized("large_401") // the endpoint's own: streamed, the session not asked
	}
	if err != nil || !rec.held {
		return err // streamed through, or nothing written
	}
	if h.nestedRan(r) {
		// Another lpauth after this one set the credential that went
		// upstream, and has handled its 401: not this handler's to judge.
		return rec.writeHeld()
	}
	out := h.keeper.Unauthorized(r.Context(), cred)
	if out.Verdict == verdictPassThrough && isUMS && upgrade {
		if c := h.keeper.ReloginRefused(r.Context(), cred); c != nil {
			out = outcome{Verdict: verdictRetry, Credential: c}
		}
	}
	if out.Verdict == verdictPassThrough {
		h.countUnauthorized("passed")
		return rec.writeHeld() // the 401 is the endpoint's own
	}
	// Nothing of the held-back 401 may leak into what replaces it.
	before.restore(w.Header())
	switch out.Verdict {
	case verdictUnavailable:
		h.countUnauthorized("unavailable")
		return h.unavailable(w, out.Err)
	case verdictRetryLate:
		h.countUnauthorized("retried_late")
	default:
		h.countUnauthorized("retried")
	}
	// The retry runs the same routes on the request as it came: handlers
	// after this one (handle_path, rewrite, request_header) changed it.
	r = withOwnVars(r)
	if needs.request {
		orig.restore(r)
	}
	r.Body = bodyIn // nil or http.NoBody, when it had none
	if body != nil {
		r.Body = body.reader()
	}
	forgetGroupsSince(groups, satisfied)
	h.setAuthorization(r, out.Credential)
	setCredentialPlaceholders(repl, out.Credential)
	if repl != nil {
		repl.Set("http.lpauth.retried", true)
	}
	if c := h.logger.Check(zapcore.DebugLevel, "retrying after upstream 401"); c != nil {
		c.Write(zap.String("account_id", h.identity.AccountID), zap.String("uri", r.RequestURI), zap.Bool("token_already_replaced", out.Verdict == verdictRetryLate))
	}
	return serveNext(w, r, out.Credential)
}

// withOwnVars gives the retry a copy of the request's variables. The first
// attempt's transport may still be dialling in the background, and
// reverse_proxy's dialer reads the variables that its next attempt writes:
// one shared map would be a data race. What the retry sets is seen by the
// handlers after lpauth, not by those before it once it returns.
func withOwnVars(r *http.Request) *http.Request {
	vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		return r
	}
	return r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, maps.Clone(vars)))
}

func (h *Handler) countUnauthorized(outcome string) {
	h.counters.upstream401.Inc()
	h.counters.retries[outcome].Inc()
}

// setAuthorization replaces whatever Authorization the client sent. The
// slice is fresh per request, at the cost of one small allocation: Caddy's
// header replace operations (request_header, header) edit values in place,
// so a slice shared between requests would be a data race.
func (h *Handler) setAuthorization(r *http.Request, c *credential) {
	if c == nil {
		delete(r.Header, "Authorization") // the client's is never forwarded
		return
	}
	r.Header["Authorization"] = []string{h.authorizationValue(c)}
}

// authValue is a header value built for one credential.
type authValue struct {
	cred  *credential
	value string
}

// authorizationValue is "<scheme> <token>" (or the bare token): the
// credential's own for Bearer, else built once per credential and handler.
func (h *Handler) authorizationValue(c *credential) string {
	if h.authCache == nil {
		return c.authValue
	}
	if v := h.authCache.Load(); v != nil && v.cred == c {
		return v.value
	}
	v := &authValue{cred: c, value: h.authPrefix + c.Token}
	h.authCache.Store(v)
	return v.value
}

// keepAuthorizationEndToEnd takes Authorization out of the client's
// Connection header(s): a header named there is hop-by-hop, and
// reverse_proxy (like net/http/httputil) deletes it before forwarding, the
// injected bearer with it. The other tokens stay, in their order, so the
// headers they name are still not forwarded and an upgrade is still one; a
// value left empty is dropped, and the header with it when none is left.
// The usual request has no Connection header: one map lookup. It reports
// whether the request asks for an upgrade (which needs a Connection header).
func keepAuthorizationEndToEnd(h http.Header) (upgrade bool) {
	vals, ok := h["Connection"]
	if !ok {
		return false
	}
	_, upgrade = h["Upgrade"]
	var kept []string
	changed := false
	for i, v := range vals {
		if !namesAuthorization(v) {
			if changed {
				kept = append(kept, v)
			}
			continue
		}
		if !changed {
			kept, changed = append(make([]string, 0, len(vals)), vals[:i]...), true
		}
		var rest []string
		for tok := range strings.SplitSeq(v, ",") {
			if tok = textproto.TrimString(tok); tok != "" && !isAuthorization(tok) {
				rest = append(rest, tok)
			}
		}
		if len(rest) > 0 {
			kept = append(kept, strings.Join(rest, ", "))
		}
	}
	switch {
	case !changed:
	case len(kept) == 0:
		delete(h, "Connection")
	default:
		h["Connection"] = kept
	}
	return upgrade
}

// namesAuthorization reports whether a Connection value lists Authorization.
func namesAuthorization(v string) bool {
	for tok := range strings.SplitSeq(v, ",") {
		if isAuthorization(textproto.TrimString(tok)) {
			return true
		}
	}
	return false
}

// isAuthorization matches a token in any case, as http.Header.Del finds the
// header it names.
func isAuthorization(tok string) bool {
	return len(tok) == len("Authorization") && strings.EqualFold(tok, "Authorization")
}

// dropAuthorizationTrailer keeps a client's Authorization trailer from
// going upstream, as its Authorization header never does: the name leaves
// the announced trailers now (reverse_proxy copies them before the body is
// read), and the value, which net/http adds to the same map only when the
// body reaches EOF, leaves it then. A trailer that was not announced never
// reaches this map, nor the proxy.
func dropAuthorizationTrailer(r *http.Request) {
	if _, ok := r.Trailer["Authorization"]; !ok || r.Body == nil {
		return
	}
	delete(r.Trailer, "Authorization")
	r.Body = &trailerScrubber{ReadCloser: r.Body, trailer: r.Trailer}
}

type trailerScrubber struct {
	io.ReadCloser
	trailer http.Header
}

func (b *trailerScrubber) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		delete(b.trailer, "Authorization")
	}
	return n, err
}

// unavailable answers 503 with Retry-After, as an error handle_errors can
// shape.
func (h *Handler) unavailable(w http.ResponseWriter, err error) error {
	wait := time.Second
	var u *unavailableError
	if errors.As(err, &u) && u.RetryAfter > wait {
		wait = u.RetryAfter
	}
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	h.counters.unavailable.Inc()
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}
