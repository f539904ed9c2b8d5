// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// UMS is CC's agent messaging WebSocket: a client opens it with the Login
// Service bearer in the path and keeps it alive with GetClock requests or
// WebSocket pings; CC closes it with 4401 once the bearer's session ends,
// which is what makes a client log in again and reconnect. The emulator
// serves that contract, not messaging.

// DefaultUMSIdleTimeout is how long a UMS socket may stay silent before the
// emulator closes it (1000, "idle"): CC drops idle sockets, and its clients
// are told to send something every 60 s.
const DefaultUMSIdleTimeout = 60 * time.Second

const (
	// umsSweepEvery is how often the sessions of open sockets are checked
	// for expiry by time. A session that only runs past its deadline ends
	// in no call, so without the sweep its sockets would stay open; the
	// period is well under the 1 s in which a socket must see its 4401.
	umsSweepEvery = 250 * time.Millisecond
	// umsCloseGrace is how long the emulator waits for a client to answer
	// its close frame before it drops the connection, so that a client
	// that stops reading cannot keep a socket (or Close) waiting.
	umsCloseGrace = 2 * time.Second

	umsCloseTokenExpired websocket.StatusCode = 4401
	umsReasonExpired                          = "token expired"
	umsReasonIdle                             = "idle"
	umsReasonShutdown                         = "emulator closed"

	// codeUnavailable is the internal code of the 503 a handshake gets
	// after Close (CC answers 503 where messaging is not enabled).
	codeUnavailable = 11
)

// How a socket ended; each kind has its counter.
type umsEnd int

const (
	umsEndSession  umsEnd = iota + 1 // its session ended: 4401
	umsEndIdle                       // nothing from the client for the idle timeout: 1000 "idle"
	umsEndShutdown                   // Emulator.Close: 1001
	umsEndClient                     // the client closed it or the connection broke
)

// UMSHandshake is one request on the UMS path, as UMSHandshakes reports
// it. It names the credential only by its fingerprint.
type UMSHandshake struct {
	Account           string `json:"account"`            // the {id} of the path
	BearerFingerprint string `json:"bearer_fingerprint"` // BearerFingerprint of the path's token; "" for none
	Version           string `json:"version"`            // the v query as sent; "" when absent
	Upgraded          bool   `json:"upgraded"`           // the request became a socket
}

// umsState is the UMS side of an Emulator; every field is guarded by e.mu
// except wg.
type umsState struct {
	idleTimeout time.Duration
	failNext    int             // FailNextUMSHandshakes
	failStatus  int             // and the status they get
	log         []*UMSHandshake // pointers: a failed upgrade corrects its entry
	open        map[*umsSocket]struct{}
	sweepStop   chan struct{} // nil while no sweep runs
	closed      bool          // Close was called: no more sockets
	// wg counts the sockets' goroutines and the sweep, for Close. Add is
	// only called under e.mu while closed is false, so never after Wait.
	wg sync.WaitGroup
}

// umsSocket is one open socket. end is closed, once, when the socket is
// to end; why, code and reason (code 0 for an end by the client) are set
// before, under e.mu.
type umsSocket struct {
	sess   *session
	end    chan struct{}
	why    umsEnd
	code   websocket.StatusCode
	reason string
	last   time.Time   // real time of the client's last frame
	idle   *time.Timer // fires umsIdleFired
}

// SetUMSIdleTimeout sets how long a UMS socket may go without a frame from
// the client (a request, a ping or a pong) before it is closed with 1000
// "idle"; d <= 0 restores DefaultUMSIdleTimeout. Open sockets take the new
// timeout at once, counted from their last frame. It is real time, not
// Config.Clock's: like the injected delays it is about the connection,
// and a fake clock advanced by hours must not close every socket as idle.
func (e *Emulator) SetUMSIdleTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultUMSIdleTimeout
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ums.idleTimeout = d
	now := time.Now()
	for s := range e.ums.open {
		s.idle.Reset(max(s.last.Add(d).Sub(now), 0))
	}
}

// FailNextUMSHandshakes makes the next n UMS handshakes answer 401, as for
// a dead bearer, even when the bearer is live: CC has been seen to refuse
// a socket while refresh still says the session is alive, and a client
// must cope. n <= 0 cancels the knob.
func (e *Emulator) FailNextUMSHandshakes(n int) {
	e.FailNextUMSHandshakesWith(n, http.StatusUnauthorized)
}

// FailNextUMSHandshakesWith is FailNextUMSHandshakes with another status,
// such as a 5xx from an overloaded messaging host.
func (e *Emulator) FailNextUMSHandshakesWith(n, status int) {
	e.mu.Lock()
	e.ums.failNext, e.ums.failStatus = max(n, 0), status
	e.mu.Unlock()
}

// UMSHandshakes returns every request on the UMS path since New or Reset,
// in order, so a test can tell which bearer and which version a client
// connected with.
func (e *Emulator) UMSHandshakes() []UMSHandshake {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]UMSHandshake, len(e.ums.log))
	for i, h := range e.ums.log {
		out[i] = *h
	}
	return out
}

// Close closes every UMS socket (1001, "emulator closed"), stops the
// expiry sweep and waits for their goroutines, at most a few seconds for a
// client that does not answer the close. Later UMS handshakes answer 503;
// every other endpoint keeps working. Call it when the emulator is no
// longer served, so no goroutine outlives it. It may be called more than
// once and always returns nil.
func (e *Emulator) Close() error {
	e.mu.Lock()
	e.ums.closed = true
	for s := range e.ums.open {
		e.umsEndLocked(s, umsEndShutdown)
	}
	e.mu.Unlock()
	e.ums.wg.Wait()
	return nil
}

// umsPath parses "account/{id}/messaging/brand/{token}", with or without
// a trailing slash.
func umsPath(rest string) (id, token string, ok bool) {
	rest, ok = strings.CutPrefix(rest, "account/")
	if !ok {
		return "", "", false
	}
	id, rest, ok = strings.Cut(rest, "/")
	if !ok || id == "" {
		return "", "", false
	}
	token, ok = strings.CutPrefix(rest, "messaging/brand/")
	token = strings.TrimSuffix(token, "/")
	if !ok || strings.Contains(token, "/") {
		return "", "", false
	}
	return id, token, true
}

// umsHandshake serves GET /ws_api/{rest}: it upgrades a request whose path
// carries a live Login Service bearer of the account, and answers anything
// else as CC does, before any upgrade.
func (e *Emulator) umsHandshake(w http.ResponseWriter, r *http.Request, rest string) {
	id, token, ok := umsPath(rest)
	if !ok {
		e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
		return
	}
	q := r.URL.Query()
	rec := UMSHandshake{Account: id, Version: q.Get("v")}
	if token != "" {
		rec.BearerFingerprint = BearerFingerprint(token)
	}
	e.mu.Lock()
	e.counters.UMSHandshakes++
	e.mu.Unlock()
	logged := false
	defer func() {
		if !logged {
			e.mu.Lock()
			e.ums.log = append(e.ums.log, &rec)
			e.mu.Unlock()
		}
	}()

	if r.Method != http.MethodGet {
		e.methodNotAllowed(w, http.MethodGet)
		return
	}
	if v, has := q["v"]; has || e.requireVersion {
		if !has || len(v) != 1 || (v[0] != "2.1" && v[0] != "2") {
			e.writeError(w, http.StatusBadRequest, codeBadRequest, "Invalid or missing query parameter v (supported: 2, 2.1)")
			return
		}
	}
	upgrade := upgradeRequest(r)
	now := e.now()
	e.mu.Lock()
	injected := e.ums.failNext > 0
	if injected {
		e.ums.failNext--
	}
	failStatus := e.ums.failStatus
	// Only a session bearer opens a socket: AppJWTs live elsewhere
	// (e.tokens) and are not UMS credentials.
	sess := e.byBearer[token]
	if sess != nil && now.After(sess.deadline) {
		e.dropLocked(sess.id, sess)
		sess = nil
	}
	if id != e.accountID {
		sess = nil
	}
	switch {
	case e.ums.closed:
		e.mu.Unlock()
		e.writeError(w, http.StatusServiceUnavailable, codeUnavailable, "Messaging is not available")
		return
	case injected && failStatus != http.StatusUnauthorized:
		e.mu.Unlock()
		e.writeError(w, failStatus, codeUnavailable, "Messaging is not available")
		return
	case injected || sess == nil:
		e.counters.UMSHandshake401s++
		e.mu.Unlock()
		e.writeUnauthorized(w, msgBearer)
		return
	case !upgrade:
		e.mu.Unlock()
		// The credential is good but this is no WebSocket handshake:
		// Accept answers it (426) without an upgrade.
		_, _ = websocket.Accept(w, r, nil)
		return
	}
	// The socket is counted, logged and watched before the upgrade, so a
	// client that has its 101 finds it in Counters and UMSHandshakes, and
	// a session ended or a Close meanwhile reaches it. Still under the
	// lock that saw Close had not run, so Close waits for it.
	s := &umsSocket{sess: sess, end: make(chan struct{})}
	rec.Upgraded = true
	e.ums.log = append(e.ums.log, &rec)
	logged = true
	e.umsOpenLocked(s, now)
	e.mu.Unlock()
	touch := func() {
		e.mu.Lock()
		e.umsTouchLocked(s)
		e.mu.Unlock()
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// The credential is the path's bearer, not a cookie, so a
		// cross-origin page gains nothing; CC's clients (node-agent-sdk's
		// ws, browsers of legacy apps) may send any Origin.
		InsecureSkipVerify: true,
		OnPingReceived:     func(context.Context, []byte) bool { touch(); return true },
		OnPongReceived:     func(context.Context, []byte) { touch() },
	})
	if err != nil {
		// Accept answered (a bad key or version, a writer that cannot
		// hijack): no socket after all.
		e.mu.Lock()
		rec.Upgraded = false
		e.umsAbortLocked(s)
		e.mu.Unlock()
		return
	}
	e.serveUMS(conn, s)
}

// upgradeRequest reports whether r asks for a WebSocket: Connection names
// Upgrade and Upgrade names websocket (tokens, in any case).
func upgradeRequest(r *http.Request) bool {
	has := func(header, token string) bool {
		for _, v := range r.Header.Values(header) {
			for t := range strings.SplitSeq(v, ",") {
				if strings.EqualFold(strings.TrimSpace(t), token) {
					return true
				}
			}
		}
		return false
	}
	return has("Connection", "Upgrade") && has("Upgrade", "websocket")
}

// umsOpenLocked registers a socket about to be upgraded, starts its idle
// timer and, for the first open socket, the sweep. A session that ended
// since the handshake's check ends the socket at once. The caller has
// checked, under the same lock, that Close has not run.
func (e *Emulator) umsOpenLocked(s *umsSocket, now time.Time) {
	e.counters.UMSUpgrades++
	e.ums.open[s] = struct{}{}
	e.ums.wg.Add(1)
	s.last = time.Now()
	s.idle = time.AfterFunc(e.ums.idleTimeout, func() { e.umsIdleFired(s) })
	if e.ums.sweepStop == nil {
		stop := make(chan struct{})
		e.ums.sweepStop = stop
		e.ums.wg.Add(1)
		go e.umsSweep(stop)
	}
	if e.byBearer[s.sess.bearer] != s.sess || now.After(s.sess.deadline) {
		e.umsEndLocked(s, umsEndSession)
	}
}

// umsAbortLocked undoes umsOpenLocked for a socket whose upgrade failed,
// counters included.
func (e *Emulator) umsAbortLocked(s *umsSocket) {
	if _, ok := e.ums.open[s]; ok {
		e.umsEndLocked(s, umsEndClient)
	}
	// A Reset in between has zeroed them already.
	for _, c := range []*int64{&e.counters.UMSUpgrades, e.closeCounterLocked(s.why)} {
		if *c > 0 {
			*c--
		}
	}
	s.idle.Stop()
	e.ums.wg.Done()
}

// serveUMS answers the socket's requests until it ends, then returns once
// the connection is closed.
func (e *Emulator) serveUMS(conn *websocket.Conn, s *umsSocket) {
	defer e.ums.wg.Done()
	defer s.idle.Stop()
	// Not the request's context: after a hijack it may end at any time.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		<-s.end
		if s.code == 0 { // the client ended it
			_ = conn.CloseNow()
			return
		}
		// Cancelling ctx drops the connection under a pending Read or
		// Write, which bounds Close's own waits for a silent client.
		t := time.AfterFunc(umsCloseGrace, cancel)
		defer t.Stop()
		_ = conn.Close(s.code, s.reason)
	}()
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			break
		}
		resp := e.umsFrame(s, typ, msg)
		if resp == nil {
			continue
		}
		if err := conn.Write(ctx, websocket.MessageText, resp); err != nil {
			break
		}
	}
	e.mu.Lock()
	e.umsEndLocked(s, umsEndClient) // no-op when the emulator ended it
	e.mu.Unlock()
	<-closed
}

// umsEndLocked ends an open socket, counting why, and stops the sweep with
// the last open socket. Ending an ended socket does nothing.
func (e *Emulator) umsEndLocked(s *umsSocket, why umsEnd) {
	if _, ok := e.ums.open[s]; !ok {
		return
	}
	delete(e.ums.open, s)
	s.why = why
	switch why {
	case umsEndSession:
		s.code, s.reason = umsCloseTokenExpired, umsReasonExpired
	case umsEndIdle:
		s.code, s.reason = websocket.StatusNormalClosure, umsReasonIdle
	case umsEndShutdown:
		s.code, s.reason = websocket.StatusGoingAway, umsReasonShutdown
	}
	*e.closeCounterLocked(why)++
	close(s.end)
	if len(e.ums.open) == 0 && e.ums.sweepStop != nil {
		close(e.ums.sweepStop)
		e.ums.sweepStop = nil
	}
}

// closeCounterLocked is the counter of sockets that ended for why.
func (e *Emulator) closeCounterLocked(why umsEnd) *int64 {
	switch why {
	case umsEndSession:
		return &e.counters.UMSCloses4401
	case umsEndIdle:
		return &e.counters.UMSClosesIdle
	case umsEndShutdown:
		return &e.counters.UMSClosesShutdown
	}
	return &e.counters.UMSClosesByClient
}

// umsSessionEndedLocked closes, with 4401, the sockets of sess (nil: of
// every session). dropLocked calls it, so whatever ends a session (logout,
// a login of the same user, SetPassword, expiry noticed by any call or the
// sweep) ends its sockets at once.
func (e *Emulator) umsSessionEndedLocked(sess *session) {
	for s := range e.ums.open {
		if sess == nil || s.sess == sess {
			e.umsEndLocked(s, umsEndSession)
		}
	}
}

// umsSweep checks the sessions, by Config.Clock, while sockets are open;
// liveLocked drops the expired ones, which ends their sockets.
func (e *Emulator) umsSweep(stop <-chan struct{}) {
	defer e.ums.wg.Done()
	t := time.NewTicker(umsSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		e.mu.Lock()
		e.liveLocked(e.now())
		e.mu.Unlock()
	}
}

// umsTouchLocked records a frame from the client: the idle timeout starts
// again.
func (e *Emulator) umsTouchLocked(s *umsSocket) {
	if _, ok := e.ums.open[s]; !ok {
		return
	}
	s.last = time.Now()
	s.idle.Reset(e.ums.idleTimeout)
}

// umsIdleFired ends the socket if it has really been idle: a frame may have
// arrived (and re-armed the timer) while this call waited for the lock.
func (e *Emulator) umsIdleFired(s *umsSocket) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.ums.open[s]; !ok {
		return
	}
	if left := time.Until(s.last.Add(e.ums.idleTimeout)); left > 0 {
		s.idle.Reset(left)
		return
	}
	e.umsEndLocked(s, umsEndIdle)
}

// umsRequest is a client's request frame. id is kept raw so the answer
// echoes it as sent (a string in LivePerson's examples, a number in some
// clients).
type umsRequest struct {
	Kind string          `json:"kind"`
	ID   json.RawMessage `json:"id"`
	Type string          `json:"type"`
}

type umsResponse struct {
	Kind  string          `json:"kind"`
	ReqID json.RawMessage `json:"reqId,omitempty"`
	Code  int             `json:"code"`
	Type  string          `json:"type,omitempty"`
	Body  any             `json:"body"`
}

// umsFrame handles one data frame and returns the answer, or nil when the
// socket has ended (its session is over: the frame gets no answer, the
// client gets its 4401).
func (e *Emulator) umsFrame(s *umsSocket, typ websocket.MessageType, msg []byte) []byte {
	now := e.now()
	e.mu.Lock()
	e.umsTouchLocked(s)
	e.counters.UMSRequests++
	if _, ok := e.ums.open[s]; ok && now.After(s.sess.deadline) {
		e.dropLocked(s.sess.id, s.sess) // ends s
	}
	if _, ok := e.ums.open[s]; !ok {
		e.mu.Unlock()
		return nil
	}
	var req umsRequest
	resp := umsResponse{Kind: "resp", Code: http.StatusBadRequest}
	switch {
	case typ != websocket.MessageText:
		resp.Body = map[string]string{"msg": "binary frames are not supported"}
	case json.Unmarshal(msg, &req) != nil || req.Kind != "req":
		resp.ReqID = req.ID
		resp.Body = map[string]string{"msg": `malformed request: want {"kind":"req","id":...,"type":...}`}
	case req.Type == "GetClock" || req.Type == ".GetClock":
		// node-agent-sdk spells request types with a leading dot.
		e.counters.UMSGetClocks++
		resp.ReqID, resp.Code, resp.Type = req.ID, http.StatusOK, "GetClock$Response"
		resp.Body = map[string]int64{"currentTime": now.UnixMilli()}
	default:
		resp.ReqID = req.ID
		resp.Body = map[string]string{"msg": "unsupported request type " + req.Type}
	}
	e.mu.Unlock()
	b, err := json.Marshal(resp)
	if err != nil { // a RawMessage id that is not valid JSON cannot reach here
		return nil
	}
	return b
}
