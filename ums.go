// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/lpauth/caddy-lpauth/internal/wsclose"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// CC's agent messaging WebSocket (UMS) takes the session's bearer as the
// last segment of its URL path, not as a header:
//
//	/ws_api/account/{accountId}/messaging/brand/{bearer}?v=2.1
//
// lpauth puts it there for a client that has none.

// umsPrefix is how every UMS path starts.
const umsPrefix = "/ws_api/account/"

// umsPath is a request path that follows the UMS rule.
type umsPath struct {
	account string
	base    string // "/ws_api/account/{account}/messaging/brand", as it came
}

// umsPathOf matches r's path, as lpauth receives it (after a handle_path
// strip), against the UMS rule: exactly the segments ws_api, account,
// {account}, messaging, brand, then at most one more segment and an
// optional trailing slash. Empty, "." or ".." segments and encoded slashes
// mean it is not one. Most requests are told apart by one prefix check.
func umsPathOf(r *http.Request) (umsPath, bool) {
	if !strings.HasPrefix(r.URL.Path, umsPrefix) {
		return umsPath{}, false
	}
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, umsPrefix) {
		return umsPath{}, false
	}
	segs := strings.Split(p[1:], "/")
	if n := len(segs); n > 5 && segs[n-1] == "" {
		segs = segs[:n-1] // the optional trailing slash
	}
	if len(segs) < 5 || len(segs) > 6 || segs[3] != "messaging" || segs[4] != "brand" {
		return umsPath{}, false
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.Contains(strings.ToLower(s), "%2f") {
			return umsPath{}, false
		}
	}
	acct, err := url.PathUnescape(segs[2])
	if err != nil {
		return umsPath{}, false
	}
	return umsPath{account: acct, base: "/" + strings.Join(segs[:5], "/")}, true
}

// withBearerInPath returns a shallow copy of r for the handlers after
// lpauth, whose URL (a copy of its own) ends in bearer: added when absent,
// replacing whatever the client put there (a client's segment is never a
// credential). The query stays as it came, and so does RequestURI, so the
// access log and {http.request.uri} show the client's path, never the
// bearer. r itself is not changed.
func withBearerInPath(r *http.Request, p umsPath, bearer string) *http.Request {
	out := new(http.Request)
	*out = *r
	u := *r.URL
	u.Path = p.base + "/" + bearer
	u.RawPath = ""
	if strings.ContainsAny(p.base, "%") {
		// Keep the client's escaping of the fixed segments (an account id
		// is digits; this is for a path that escaped them anyway).
		if unescaped, err := url.PathUnescape(p.base); err == nil {
			u.Path = unescaped + "/" + bearer
			u.RawPath = p.base + "/" + url.PathEscape(bearer)
		}
	}
	out.URL = &u
	return out
}

// warnUMSRewrite warns, once per server instance and at its first
// messaging WebSocket request (a handler cannot see its server's routes at
// provision), when a handler after lpauth may rewrite the URI.
func (h *Handler) warnUMSRewrite(r *http.Request) {
	if a := h.afterFor(r); a == nil || !a.rewrites || a.warned.Swap(true) {
		return
	}
	h.logger.Warn("a handler after lpauth may rewrite the messaging WebSocket's path: it can drop the bearer lpauth puts there, or copy it into what is logged; put lpauth right before reverse_proxy, without rewrite, uri or reverse_proxy's own rewrite in between",
		zap.String("account_id", h.identity.AccountID))
}

// umsForbidden answers a UMS path that names another account than this
// handler's: the bearer of one account never goes into a URL of another.
func (h *Handler) umsForbidden(p umsPath) error {
	return caddyhttp.Error(http.StatusForbidden,
		fmt.Errorf("lpauth: the messaging WebSocket path names account %q, this handler's is %q", p.account, h.identity.AccountID))
}

// CC closes a live messaging WebSocket with 4401 when the socket's token is
// no longer good; LivePerson's node-agent-sdk treats 4407 and 1011 the same
// way. lpauth reads the frames CC sends to the client as they pass
// (unchanged, unbuffered) and, on one of those codes, has the keeper check
// the session the socket used, as for a 401: by the time the client
// reconnects, a live bearer is usually ready.

// needsNewToken says whether a close code asks for a new token.
func needsNewToken(code int) bool { return code == 4401 || code == 4407 || code == 1011 }

// closeWatchWriter is the writer the handlers after lpauth get for a
// messaging WebSocket upgrade: the connection it hijacks (HTTP/1.1
// Upgrade) reports the close frames written to the client, and so do its
// own writes (an HTTP/2 extended CONNECT, whose stream reverse_proxy
// writes through the response writer).
type closeWatchWriter struct {
	caddyhttp.ResponseWriterWrapper
	watch *closeWatch
}

func (w *closeWatchWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.watch.written(p[:n])
	return n, err
}

func (w *closeWatchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &closeWatchConn{Conn: conn, watch: w.watch}, brw, nil
}

// closeWatch follows the frames written to the client, through whichever
// of the two above carries them. Caddy may write its own close (1001, when
// a config is unloaded) from another goroutine, even in the middle of a
// frame: the reader tolerates that, and acts only on the codes above.
type closeWatch struct {
	onClose func(code int)
	mu      sync.Mutex
	frames  wsclose.Reader
}

// written is told of the bytes that reached the client.
func (cw *closeWatch) written(p []byte) {
	cw.mu.Lock()
	code, ok := cw.frames.Feed(p)
	cw.mu.Unlock()
	if ok && needsNewToken(code) {
		cw.onClose(code)
	}
}

// closeWatchConn passes every byte through and tells its watch what was
// written.
type closeWatchConn struct {
	net.Conn
	watch *closeWatch
}

func (c *closeWatchConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.watch.written(p[:n])
	return n, err
}

// CloseWrite keeps the half-close reverse_proxy does on a clean EOF.
func (c *closeWatchConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return net.ErrClosed
}

// umsClosed is told that CC closed a socket opened with cred for a new
// token: the keeper checks that session in the background (one check for
// every socket, rate-limited as for 401s, a re-login if it is dead).
func (h *Handler) umsClosed(cred *credential, code int) {
	if c := h.logger.Check(zapcore.DebugLevel, "messaging WebSocket closed for a new token"); c != nil {
		c.Write(zap.String("account_id", h.identity.AccountID), zap.Int("close_code", code))
	}
	h.keeper.UnauthorizedLater(cred)
}
