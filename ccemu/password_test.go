// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func passwordBody(user, password string) string {
	return `{"username":"` + user + `","password":"` + password + `"}`
}

// refusedAsWrongPassword checks that a login with password is refused
// exactly as a wrong password is: same status, code and message.
func refusedAsWrongPassword(t *testing.T, srv *httptest.Server, password string) {
	t.Helper()
	got := envelope(t, post(t, loginURL(srv), passwordBody(DefaultUsername, password), nil), 401, codeBadCreds, "UNAUTHORIZED")
	wrong := envelope(t, post(t, loginURL(srv), passwordBody(DefaultUsername, "never-set"), nil), 401, codeBadCreds, "UNAUTHORIZED")
	if got["message"] != wrong["message"] {
		t.Errorf("old password refused with %q, a wrong one with %q", got["message"], wrong["message"])
	}
}

func TestSetPassword(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	if err := e.SetPassword(DefaultUsername, "rotated-1", false); err != nil {
		t.Fatal(err)
	}
	refusedAsWrongPassword(t, srv, DefaultPassword)
	mustLogin(t, srv, passwordBody(DefaultUsername, "rotated-1"))
	mustLogin(t, srv, appBody()) // application logins do not use the password
	if c := e.Counters(); c.LoginsRefused != 2 || c.Logins != 2 || c.LoginAttempts != 4 {
		t.Errorf("counters %+v, want 2 refused and 2 logins of 4 attempts", c)
	}
	if !slices.Contains(e.IssuedSecrets(), "rotated-1") {
		t.Error("IssuedSecrets lacks the password set")
	}
	// Another rotation: only the newest password works.
	if err := e.SetPassword(DefaultUsername, "rotated-2", false); err != nil {
		t.Fatal(err)
	}
	refusedAsWrongPassword(t, srv, "rotated-1")
	mustLogin(t, srv, passwordBody(DefaultUsername, "rotated-2"))

	if err := e.SetPassword("nobody", "x", false); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("unknown user: %v, want an error naming it", err)
	}
	if err := e.SetPassword(DefaultUsername, "", false); err == nil {
		t.Error("an empty password was accepted")
	}
	mustLogin(t, srv, passwordBody(DefaultUsername, "rotated-2")) // the failed calls changed nothing
}

func TestSetPasswordEndSessions(t *testing.T) {
	t.Parallel()
	// Several sessions of one user, to see that end_sessions ends them all
	// (and that without it none ends).
	e, srv := newServer(t, Config{MultipleSessions: true, Users: map[string]string{DefaultUsername: DefaultPassword, "other": "other-pw"}})
	a := mustLogin(t, srv, userBody())
	b := mustLogin(t, srv, userBody())
	other := mustLogin(t, srv, passwordBody("other", "other-pw"))
	bot := mustLogin(t, srv, appBody())

	// Without endSessions the open sessions live on.
	if err := e.SetPassword(DefaultUsername, "kept", false); err != nil {
		t.Fatal(err)
	}
	if r := a.refresh(t, srv, "refresh", a.csrf); r.status != 200 {
		t.Errorf("refresh after a rotation that keeps sessions: %d %s", r.status, r.body)
	}
	if r := b.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("data call after a rotation that keeps sessions: %d %s", r.status, r.body)
	}
	if n := e.Counters().LiveSessions; n != 4 {
		t.Errorf("%d live sessions, want 4", n)
	}

	// With endSessions every session of that user ends at once, and only those.
	if n, err := e.setPassword(DefaultUsername, "ended", true); err != nil || n != 2 {
		t.Fatalf("setPassword ended %d sessions (%v), want 2", n, err)
	}
	for _, s := range []sess{a, b} {
		envelope(t, s.refresh(t, srv, "refresh", s.csrf), 401, codeNoSession, "UNAUTHORIZED")
		envelope(t, s.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	}
	for _, s := range []sess{other, bot} {
		if r := s.data(t, srv, "/x"); r.status != 200 {
			t.Errorf("another user's session ended: %d %s", r.status, r.body)
		}
	}
	if n := e.Counters().LiveSessions; n != 2 {
		t.Errorf("%d live sessions, want 2", n)
	}
	mustLogin(t, srv, passwordBody(DefaultUsername, "ended"))
}

func TestControlSetPassword(t *testing.T) {
	t.Parallel()
	// A login with the new password must not end s: what is under test is
	// that end_sessions=false keeps it.
	e, srv := newServer(t, Config{MultipleSessions: true})
	ctl := srv.URL + "/_ccemu/set-password"
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	s := mustLogin(t, srv, userBody())

	pw := "ctl-rotated&=?" // form-encoded in transit
	r := post(t, ctl+"?user="+DefaultUsername+"&end_sessions=false", "password="+url.QueryEscape(pw), form)
	if r.status != 200 {
		t.Fatalf("set-password: %d %s", r.status, r.body)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil || got["user"] != DefaultUsername || got["ended_sessions"] != 0.0 || got["end_sessions"] != false {
		t.Errorf("set-password answered %s", r.body)
	}
	if bytes.Contains(r.body, []byte("ctl-rotated")) {
		t.Error("the answer carries the password")
	}
	refusedAsWrongPassword(t, srv, DefaultPassword)
	mustLogin(t, srv, passwordBody(DefaultUsername, pw))
	if r := s.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("end_sessions=false ended a session: %d", r.status)
	}
	if !slices.Contains(e.IssuedSecrets(), pw) {
		t.Error("IssuedSecrets lacks the password set over HTTP")
	}

	r = post(t, ctl+"?user="+DefaultUsername+"&end_sessions=true", "password=ctl-2", form)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"ended_sessions":2`)) {
		t.Fatalf("set-password end_sessions=true: %d %s", r.status, r.body)
	}
	envelope(t, s.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	mustLogin(t, srv, passwordBody(DefaultUsername, "ctl-2"))

	r = do(t, http.MethodGet, srv.URL+"/_ccemu/counters", nil, nil)
	var c controlCounters
	if err := json.Unmarshal(r.body, &c); err != nil || c.LoginsRefused != 2 || !bytes.Contains(r.body, []byte(`"logins_refused":2`)) {
		t.Errorf("counters %s, want logins_refused 2", r.body)
	}

	for _, c := range []struct{ query, body, ctype, param string }{
		{"?user=demo-agent&end_sessions=true&password=in-url", "", "", "password"},
		{"?user=demo-agent&end_sessions=true", "password=x&password=y", form["Content-Type"], "password"},
		{"?user=demo-agent&end_sessions=true", "password=", form["Content-Type"], "password"},
		{"?user=demo-agent&end_sessions=true", `{"password":"x"}`, "application/json", "password"},
		{"?end_sessions=true", "password=x", form["Content-Type"], "user"},
		{"?user=nobody&end_sessions=true", "password=x", form["Content-Type"], "user"},
		{"?user=demo-agent", "password=x", form["Content-Type"], "end_sessions"},
		{"?user=demo-agent&end_sessions=maybe", "password=x", form["Content-Type"], "end_sessions"},
	} {
		r := post(t, ctl+c.query, c.body, map[string]string{"Content-Type": c.ctype})
		env := envelope(t, r, 400, codeBadRequest, "BAD_REQUEST")
		if msg, _ := env["message"].(string); !strings.Contains(msg, c.param) {
			t.Errorf("%s %q: message %q does not name %s", c.query, c.body, msg, c.param)
		}
		if bytes.Contains(r.body, []byte("in-url")) {
			t.Errorf("%s: the error echoes the password", c.query)
		}
	}
	mustLogin(t, srv, passwordBody(DefaultUsername, "ctl-2")) // refused calls changed nothing
	if r := do(t, http.MethodGet, ctl, nil, nil); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET set-password: %d", r.status)
	}
}
