// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ControlHandler returns the HTTP control API mounted under prefix (for
// example "/_ccemu"). It never reveals secrets. Endpoints, all JSON:
//
//	GET  {prefix}/counters                                   Counters plus login_attempt_times (RFC 3339)
//	POST {prefix}/expire                                     {"expired":N}
//	POST {prefix}/fail-logins?count=1&status=500&retry_after=5s
//	POST {prefix}/delay-logins?count=1&delay=200ms
//	POST {prefix}/fail-refreshes?count=1&status=500
//	POST {prefix}/fail-domain-lookups?count=1&status=500
//	POST {prefix}/service-host?service=msgHist&host=127.0.0.1:1234   host empty or absent clears it
//	POST {prefix}/login-rate?n=10&window=1m                  n=0 disables the limit
//	POST {prefix}/session-ttl?ttl=2s
//	POST {prefix}/fail-tokens?count=1&status=500&retry_after=5s
//	POST {prefix}/delay-tokens?count=1&delay=200ms
//	POST {prefix}/token-rate?n=10&window=1s                  n=0 disables the limit
//	POST {prefix}/token-lifetime?lifetime=3s
//	POST {prefix}/revoke-tokens                              {"revoked":N}
//	POST {prefix}/require-bare-token?required=true           true or false
//	POST {prefix}/multiple-sessions?allowed=true             true or false: several live sessions per user
//	POST {prefix}/hold-data?count=1                          hold the next data API calls (see held_data_calls)
//	POST {prefix}/release-data                               let every held data API call go on
//	POST {prefix}/set-password?user=demo-agent&end_sessions=true   {"user":...,"ended_sessions":N}
//	     with the new password in a form body, password=... (never in the URL)
//	POST {prefix}/fail-ums-handshakes?count=1[&status=503]   answer 401 (or status) to the next UMS handshakes, live bearer or not
//	POST {prefix}/ums-idle-timeout?timeout=60s               close UMS sockets silent that long (1000 "idle")
//	GET  {prefix}/ums-handshakes                             {"handshakes":[{"account","bearer_fingerprint","version","upgraded"},...]}
//	POST {prefix}/reset
//
// count defaults to 1 and status to 500; retry_after, window, delay, ttl,
// lifetime and timeout accept a Go duration or whole seconds. A bad parameter answers 400 naming it, a wrong
// method 405. set-password takes the password only from an
// application/x-www-form-urlencoded body, so it never lands in an access
// log or a proxy's URL log; end_sessions (true or false) is required.
func (e *Emulator) ControlHandler(prefix string) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, prefix+"/")
		if !ok {
			e.writeError(w, http.StatusNotFound, codeNotFound, "Not found")
			return
		}
		e.control(w, r, name)
	})
}

type controlCounters struct {
	Counters
	LoginAttemptTimes []string `json:"login_attempt_times"`
}

// paramError names the offending query parameter.
type paramError string

func (p paramError) Error() string { return string(p) }

func badParam(name, want string) error {
	return paramError("invalid query parameter " + name + ": " + want)
}

func (e *Emulator) control(w http.ResponseWriter, r *http.Request, name string) {
	want := http.MethodPost
	if name == "counters" || name == "ums-handshakes" {
		want = http.MethodGet
	}
	switch name {
	case "counters", "expire", "fail-logins", "delay-logins", "fail-refreshes", "fail-domain-lookups",
		"service-host", "login-rate", "session-ttl", "reset", "fail-tokens", "delay-tokens", "token-rate",
		"token-lifetime", "revoke-tokens", "require-bare-token", "set-password", "multiple-sessions", "hold-data", "release-data",
		"fail-ums-handshakes", "ums-idle-timeout", "ums-handshakes":
	default:
		e.writeError(w, http.StatusNotFound, codeNotFound, "Unknown control endpoint "+name)
		return
	}
	if r.Method != want && !(want == http.MethodGet && r.Method == http.MethodHead) {
		e.methodNotAllowed(w, want)
		return
	}
	q := r.URL.Query()
	var out any
	var err error
	switch name {
	case "counters":
		c := controlCounters{Counters: e.Counters(), LoginAttemptTimes: []string{}}
		for _, t := range e.LoginAttemptTimes() {
			c.LoginAttemptTimes = append(c.LoginAttemptTimes, t.UTC().Format(time.RFC3339Nano))
		}
		out = c
	case "expire":
		out = map[string]int{"expired": e.ExpireSessions()}
	case "reset":
		e.Reset()
		out = map[string]bool{"reset": true}
	case "revoke-tokens":
		out = map[string]int{"revoked": e.RevokeTokens()}
	case "hold-data":
		var n int
		if n, err = intParam(q, "count", 1, 0); err == nil {
			e.HoldNextDataCalls(n)
			out = map[string]int{"count": n}
		}
	case "release-data":
		e.ReleaseDataCalls()
		out = map[string]bool{"released": true}
	case "fail-ums-handshakes":
		var n int
		status := http.StatusUnauthorized
		if n, err = intParam(q, "count", 1, 0); err == nil && q.Has("status") {
			status, err = statusParam(q)
		}
		if err == nil {
			e.FailNextUMSHandshakesWith(n, status)
			out = map[string]int{"count": n, "status": status}
		}
	case "ums-idle-timeout":
		var d time.Duration
		if d, err = durationParam(q, "timeout", -1, true); err == nil {
			e.SetUMSIdleTimeout(d)
			out = map[string]string{"timeout": d.String()}
		}
	case "ums-handshakes":
		out = map[string][]UMSHandshake{"handshakes": append([]UMSHandshake{}, e.UMSHandshakes()...)}
	case "fail-logins", "fail-tokens":
		var n, status int
		var retry time.Duration
		if n, err = intParam(q, "count", 1, 0); err == nil {
			if status, err = statusParam(q); err == nil {
				retry, err = durationParam(q, "retry_after", 0, false)
			}
		}
		if err == nil {
			if name == "fail-logins" {
				e.FailNextLogins(n, status, retry)
			} else {
				e.FailNextTokens(n, status, retry)
			}
			out = map[string]any{"count": n, "status": status, "retry_after": retry.String()}
		}
	case "delay-logins", "delay-tokens":
		var n int
		var d time.Duration
		if n, err = intParam(q, "count", 1, 0); err == nil {
			d, err = durationParam(q, "delay", -1, true)
		}
		if err == nil {
			if name == "delay-logins" {
				e.DelayNextLogins(n, d)
			} else {
				e.DelayNextTokens(n, d)
			}
			out = map[string]any{"count": n, "delay": d.String()}
		}
	case "fail-refreshes":
		var n, status int
		if n, err = intParam(q, "count", 1, 0); err == nil {
			status, err = statusParam(q)
		}
		if err == nil {
			e.FailNextRefreshes(n, status)
			out = map[string]any{"count": n, "status": status}
		}
	case "fail-domain-lookups":
		var n, status int
		if n, err = intParam(q, "count", 1, 0); err == nil {
			status, err = statusParam(q)
		}
		if err == nil {
			e.FailNextDomainLookups(n, status)
			out = map[string]any{"count": n, "status": status}
		}
	case "service-host":
		svc, host := q.Get("service"), q.Get("host")
		switch {
		case svc == "":
			err = badParam("service", "required")
		case strings.ContainsAny(svc, "/ "):
			err = badParam("service", "want a service name such as msgHist")
		case strings.ContainsAny(host, "/ "):
			err = badParam("host", "want a bare host[:port], no scheme or path")
		}
		if err == nil {
			e.SetServiceHost(svc, host)
			out = map[string]string{"service": svc, "host": host}
		}
	case "login-rate", "token-rate":
		set, def := e.SetLoginRate, DefaultLoginRateWindow
		if name == "token-rate" {
			set, def = e.SetTokenRate, DefaultTokenRateWindow
		}
		var n int
		var win time.Duration
		if n, err = intParam(q, "n", -1, 0); err == nil {
			win, err = durationParam(q, "window", def, true)
		}
		if err == nil {
			set(n, win)
			out = map[string]any{"n": n, "window": win.String()}
		}
	case "session-ttl", "token-lifetime":
		param, set := "ttl", e.SetSessionTTL
		if name == "token-lifetime" {
			param, set = "lifetime", e.SetTokenLifetime
		}
		var d time.Duration
		if d, err = durationParam(q, param, -1, true); err == nil {
			set(d)
			out = map[string]any{param: d.String()}
		}
	case "set-password":
		out, err = e.controlSetPassword(w, r)
	case "multiple-sessions", "require-bare-token":
		param, set := "allowed", e.SetMultipleSessions
		if name == "require-bare-token" {
			param, set = "required", e.RequireBareToken
		}
		var on bool
		if on, err = strconv.ParseBool(q.Get(param)); err != nil {
			err = badParam(param, "want true or false")
		} else {
			set(on)
			out = map[string]bool{param: on}
		}
	}
	if err != nil {
		e.writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// controlSetPassword serves set-password: user and end_sessions in the
// query, the password in the form body.
func (e *Emulator) controlSetPassword(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	if q.Has("password") {
		return nil, badParam("password", "send it in the form body, not the URL")
	}
	user := q.Get("user")
	if user == "" {
		return nil, badParam("user", "required")
	}
	end, err := strconv.ParseBool(q.Get("end_sessions"))
	if err != nil {
		return nil, badParam("end_sessions", "want true or false")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenBody)
	if err := r.ParseForm(); err != nil {
		return nil, paramError("invalid form body: want application/x-www-form-urlencoded")
	}
	pw := r.PostForm["password"]
	if len(pw) != 1 || pw[0] == "" {
		return nil, paramError("invalid form parameter password: want exactly one, non-empty, in an application/x-www-form-urlencoded body")
	}
	n, err := e.setPassword(user, pw[0], end)
	if errors.Is(err, errUnknownUser) {
		return nil, badParam("user", "no such user")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"user": user, "end_sessions": end, "ended_sessions": n}, nil
}

// intParam parses a non-negative integer; def < 0 makes the parameter required.
func intParam(q url.Values, name string, def, lo int) (int, error) {
	v := q.Get(name)
	if v == "" {
		if def < 0 {
			return 0, badParam(name, "required")
		}
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo {
		return 0, badParam(name, "want an integer >= "+strconv.Itoa(lo))
	}
	return n, nil
}

func statusParam(q url.Values) (int, error) {
	v := q.Get("status")
	if v == "" {
		return http.StatusInternalServerError, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 400 || n > 599 {
		return 0, badParam("status", "want an HTTP status between 400 and 599")
	}
	return n, nil
}

// durationParam parses a Go duration or whole seconds; def < 0 makes the
// parameter required, positive demands a value > 0.
func durationParam(q url.Values, name string, def time.Duration, positive bool) (time.Duration, error) {
	v := q.Get(name)
	if v == "" {
		if def < 0 {
			return 0, badParam(name, "required")
		}
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.Atoi(v)
		if nerr != nil {
			return 0, badParam(name, "want a duration such as 500ms or 5s")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || (positive && d == 0) {
		return 0, badParam(name, "want a positive duration")
	}
	return d, nil
}
