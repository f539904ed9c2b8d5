// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package ccemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func newServer(t *testing.T, cfg Config) (*Emulator, *httptest.Server) {
	t.Helper()
	e := New(cfg)
	mux := http.NewServeMux()
	mux.Handle("/_ccemu/", e.ControlHandler("/_ccemu"))
	mux.Handle("/", e)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return e, srv
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request; hdr values of "Cookie" are added verbatim.
func do(t *testing.T, method, url string, body io.Reader, hdr map[string]string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func post(t *testing.T, url, body string, hdr map[string]string) reply {
	t.Helper()
	return do(t, http.MethodPost, url, strings.NewReader(body), hdr)
}

type sess struct {
	csrf, bearer, sid string
	raw               map[string]any
}

func loginURL(srv *httptest.Server) string {
	return srv.URL + "/api/account/" + DefaultAccountID + "/login?v=1.3"
}

func mustLogin(t *testing.T, srv *httptest.Server, body string) sess {
	t.Helper()
	r := post(t, loginURL(srv), body, map[string]string{"Content-Type": "application/json"})
	if r.status != http.StatusOK {
		t.Fatalf("login: status %d body %s", r.status, r.body)
	}
	m := r.json(t)
	s := sess{raw: m}
	s.csrf, _ = m["csrf"].(string)
	s.bearer, _ = m["bearer"].(string)
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "Session_id" {
			s.sid = c.Value
		}
	}
	if s.sid == "" {
		t.Fatalf("login set no Session_id cookie: %v", r.header["Set-Cookie"])
	}
	return s
}

func userBody() string {
	return `{"username":"` + DefaultUsername + `","password":"` + DefaultPassword + `"}`
}

func appBody() string {
	return `{"username":"` + DefaultAppUser + `","appKey":"` + DefaultAppKey + `","secret":"` + DefaultAppSecret +
		`","accessToken":"dummy","accessTokenSecret":"dummy"}`
}

func (s sess) refresh(t *testing.T, srv *httptest.Server, verb, csrf string) reply {
	t.Helper()
	return post(t, srv.URL+"/api/account/"+DefaultAccountID+"/"+verb+"?v=1.3", `{"csrf":"`+csrf+`"}`,
		map[string]string{"Cookie": "Session_id=" + s.sid, "Content-Type": "application/json"})
}

func (s sess) data(t *testing.T, srv *httptest.Server, path string) reply {
	t.Helper()
	return do(t, http.MethodGet, srv.URL+"/api/account/"+DefaultAccountID+path, nil,
		map[string]string{"Authorization": "Bearer " + s.bearer})
}

// envelope checks the error envelope and returns it.
func envelope(t *testing.T, r reply, status, code int, responseStatus string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	m := r.json(t)
	e, ok := m["error"].(map[string]any)
	if !ok || len(m) != 1 {
		t.Fatalf("not an error envelope: %s", r.body)
	}
	if got := e["internalCode"]; got != float64(code) {
		t.Errorf("internalCode %v, want %d (%s)", got, code, r.body)
	}
	if got := e["responseStatus"]; got != responseStatus {
		t.Errorf("responseStatus %v, want %s", got, responseStatus)
	}
	if _, err := time.Parse(errTimeLayout, e["time"].(string)); err != nil {
		t.Errorf("time %v: %v", e["time"], err)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("empty message")
	}
	return e
}

func TestDomainLookup(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	host := srv.Listener.Addr().String()
	for _, prefix := range []string{"/api", "/csdr"} {
		r := do(t, "GET", srv.URL+prefix+"/account/12345678/service/agentVep/baseURI.json?version=1.0", nil, nil)
		want := `{"service":"agentVep","account":"12345678","baseURI":"` + host + `"}`
		if r.status != 200 || string(r.body) != want {
			t.Errorf("%s single: %d %s, want %s", prefix, r.status, r.body, want)
		}
		r = do(t, "GET", srv.URL+prefix+"/account/12345678/service/baseURI.json?version=1.0", nil, nil)
		var all baseURIs
		if err := json.Unmarshal(r.body, &all); err != nil || r.status != 200 {
			t.Fatalf("%s all: %d %s", prefix, r.status, r.body)
		}
		var names []string
		for _, s := range all.BaseURIs {
			if s.Account != "12345678" || s.BaseURI != host {
				t.Errorf("entry %+v", s)
			}
			names = append(names, s.Service)
		}
		for _, n := range []string{"agentVep", "msgHist", "accountConfigReadOnly", "leDataReporting", "facadeMsg", "sentinel"} {
			if !slices.Contains(names, n) {
				t.Errorf("%s all: missing %s", prefix, n)
			}
		}
	}
	// Service names are case-sensitive.
	envelope(t, do(t, "GET", srv.URL+"/api/account/12345678/service/agentvep/baseURI.json?version=1.0", nil, nil), 404, codeNotFound, "NOT_FOUND")
	envelope(t, do(t, "GET", srv.URL+"/api/account/999/service/agentVep/baseURI.json?version=1.0", nil, nil), 401, codeBadAccount, "UNAUTHORIZED")
	if got := e.Counters().DomainLookups; got != 6 {
		t.Errorf("DomainLookups %d, want 6", got)
	}

	_, srv2 := newServer(t, Config{DomainArrayForm: true, BaseURI: "va.agentvep.example", AccountID: "42"})
	r := do(t, "GET", srv2.URL+"/api/account/42/service/agentVep/baseURI.json?version=1.0", nil, nil)
	want := `{"baseURIs":[{"service":"agentVep","account":"42","baseURI":"va.agentvep.example"}]}`
	if string(r.body) != want {
		t.Errorf("array form: %s, want %s", r.body, want)
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t, Config{})
	for _, p := range []string{"/", "/foo", "/api/account/", "/csdr/account/12345678/login"} {
		if r := do(t, "GET", srv.URL+p, nil, nil); r.status != 404 {
			t.Errorf("%s: %d, want 404", p, r.status)
		}
	}
	r := do(t, "GET", loginURL(srv), nil, nil)
	envelope(t, r, 405, codeMethod, "METHOD_NOT_ALLOWED")
	if r.header.Get("Allow") != "POST" {
		t.Errorf("Allow %q", r.header.Get("Allow"))
	}
}

func TestUserLoginShape(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	before := time.Now().UnixMilli()
	r := post(t, loginURL(srv), userBody(), map[string]string{"Content-Type": "application/json"})
	if r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["sessionTTl"] != "28800000" {
		t.Errorf("sessionTTl %#v, want string \"28800000\"", m["sessionTTl"])
	}
	for _, k := range []string{"csrf", "bearer"} {
		if s, _ := m[k].(string); !hex64.MatchString(s) {
			t.Errorf("%s %#v is not 64 hex", k, m[k])
		}
	}
	if m["csrf"] == m["bearer"] {
		t.Error("csrf equals bearer")
	}
	if s, _ := m["wsuk"].(string); !regexp.MustCompile(`^[0-9]+$`).MatchString(s) {
		t.Errorf("wsuk %#v", m["wsuk"])
	}
	if !bytes.HasSuffix(r.body, []byte(`"bearer":"`+m["bearer"].(string)+`"}`)) {
		t.Errorf("bearer is not the last key: %s", r.body)
	}
	cfg := m["config"].(map[string]any)
	if cfg["loginName"] != DefaultUsername {
		t.Errorf("loginName %v", cfg["loginName"])
	}
	if _, ok := cfg["userId"].(string); !ok {
		t.Errorf("userId %#v is not a string", cfg["userId"])
	}
	// Undocumented, but node-agent-sdk reads it: a string, stable per user.
	if pid, _ := cfg["userPid"].(string); pid == "" || pid != userPid(DefaultAccountID, DefaultUsername) ||
		pid == userPid(DefaultAccountID, DefaultAppUser) {
		t.Errorf("userPid %#v", cfg["userPid"])
	}
	if p, ok := cfg["userPrivileges"].([]any); !ok || len(p) == 0 {
		t.Errorf("userPrivileges %#v", cfg["userPrivileges"])
	}
	if ts, _ := cfg["serverCurrentTime"].(float64); int64(ts) < before || int64(ts) > time.Now().UnixMilli() {
		t.Errorf("serverCurrentTime %v", cfg["serverCurrentTime"])
	}
	for _, k := range []string{"timeDiff", "serverTimeZoneName", "serverTimeGMTDiff", "isLPA", "isAdmin", "accountTimeZoneId"} {
		if _, ok := cfg[k]; !ok {
			t.Errorf("config.%s missing", k)
		}
	}
	csds := m["csdsCollectionResponse"].(map[string]any)["baseURIs"].([]any)
	found := false
	for _, s := range csds {
		s := s.(map[string]any)
		if s["service"] == "agentVep" && s["baseURI"] == srv.Listener.Addr().String() && s["account"] == DefaultAccountID {
			found = true
		}
	}
	if !found {
		t.Errorf("csdsCollectionResponse lacks agentVep: %v", csds)
	}
	items := m["accountData"].(map[string]any)["agentGroupsData"].(map[string]any)["items"].([]any)
	if g := items[0].(map[string]any); g["name"] == nil || g["id"] == nil || g["deleted"] != false {
		t.Errorf("agent group %v", g)
	}
	sc := r.header.Get("Set-Cookie")
	if !regexp.MustCompile(`^Session_id=[0-9a-f]+; Path=/; HttpOnly$`).MatchString(sc) {
		t.Errorf("Set-Cookie %q", sc)
	}
	if c := e.Counters(); c.Logins != 1 || c.LoginAttempts != 1 || c.LiveSessions != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestLoginSecureCookieOverTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(New(Config{}))
	defer srv.Close()
	resp, err := srv.Client().Post(loginURL(srv), "application/json", strings.NewReader(userBody()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if sc := resp.Header.Get("Set-Cookie"); !strings.HasSuffix(sc, "; HttpOnly; Secure") {
		t.Errorf("Set-Cookie %q lacks Secure", sc)
	}
}

func TestAppLoginAndValidation(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, appBody())
	if s.raw["config"].(map[string]any)["loginName"] != DefaultAppUser {
		t.Errorf("app loginName %v", s.raw["config"])
	}
	if !hex64.MatchString(s.bearer) || s.raw["sessionTTl"] != "28800000" {
		t.Errorf("app login body %v", s.raw)
	}
	// OAuth1 token values are ignored.
	mustLogin(t, srv, strings.Replace(appBody(), `"dummy"`, `"whatever"`, 1))
	if r := post(t, srv.URL+"/api/account/12345678/login?v=1.2", userBody(), nil); r.status != 200 {
		t.Errorf("v=1.2: %d", r.status)
	}
	if r := post(t, srv.URL+"/api/account/12345678/login", userBody(), nil); r.status != 200 {
		t.Errorf("missing v: %d", r.status)
	}
	cases := []struct {
		name, url, body string
		status, code    int
	}{
		{"bad v", "/api/account/12345678/login?v=2.0", userBody(), 400, codeBadRequest},
		{"wrong account", "/api/account/999/login?v=1.3", userBody(), 401, codeBadAccount},
		{"bad json", "/api/account/12345678/login?v=1.3", `{"username":`, 400, codeBadRequest},
		{"saml shape", "/api/account/12345678/login?v=1.3", `{"jwt":"dummy","assertion":"x"}`, 400, codeBadRequest},
		{"bad password", "/api/account/12345678/login?v=1.3", `{"username":"demo-agent","password":"nope"}`, 401, codeBadCreds},
		{"unknown user", "/api/account/12345678/login?v=1.3", `{"username":"x","password":"demo-password"}`, 401, codeBadCreds},
		{"bad secret", "/api/account/12345678/login?v=1.3", strings.Replace(appBody(), DefaultAppSecret, "nope", 1), 401, codeBadCreds},
		{"app user mismatch", "/api/account/12345678/login?v=1.3", strings.Replace(appBody(), DefaultAppUser, DefaultUsername, 1), 401, codeBadCreds},
	}
	for _, c := range cases {
		r := post(t, srv.URL+c.url, c.body, nil)
		rs := "UNAUTHORIZED"
		if c.status == 400 {
			rs = "BAD_REQUEST"
		}
		t.Run(c.name, func(t *testing.T) { envelope(t, r, c.status, c.code, rs) })
	}
	if c := e.Counters(); c.LoginAttempts != int64(4+len(cases)) || c.Logins != 4 {
		t.Errorf("counters %+v", c)
	}

	_, strict := newServer(t, Config{RequireVersion: true})
	envelope(t, post(t, strict.URL+"/api/account/12345678/login", userBody(), nil), 400, codeBadRequest, "BAD_REQUEST")
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	r := s.refresh(t, srv, "refresh", s.csrf)
	if r.status != 200 || len(r.body) != 0 {
		t.Fatalf("refresh: %d %q", r.status, r.body)
	}
	// Refresh works without ?v too.
	r = post(t, srv.URL+"/api/account/12345678/refresh", `{"csrf":"`+s.csrf+`"}`, map[string]string{"Cookie": "Session_id=" + s.sid})
	if r.status != 200 {
		t.Fatalf("refresh without v: %d %s", r.status, r.body)
	}

	r = s.refresh(t, srv, "refresh", strings.Repeat("0", 64))
	if r.status != 401 {
		t.Fatalf("csrf mismatch: %d", r.status)
	}
	var env struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatal(err)
	}
	ts, _ := env.Error["time"].(string)
	if _, err := time.Parse("Jan 2, 2006 3:04:05 PM", ts); err != nil {
		t.Errorf("time %q not like \"Sep 22, 2016 4:10:15 PM\"", ts)
	}
	want := `{"error":{"time":"` + ts + `","message":"CSRF token invalid! The CSRF token on request does not match the CSRF token on the session","internalCode":10,"responseStatus":"UNAUTHORIZED"}}`
	if string(r.body) != want {
		t.Errorf("csrf envelope\n got %s\nwant %s", r.body, want)
	}
	// The misspelled "csfr" some wrappers send is a mismatch too.
	r = post(t, srv.URL+"/api/account/12345678/refresh", `{"csfr":"`+s.csrf+`"}`, map[string]string{"Cookie": "Session_id=" + s.sid})
	envelope(t, r, 401, codeCSRF, "UNAUTHORIZED")

	for name, hdr := range map[string]map[string]string{
		"unknown cookie": {"Cookie": "Session_id=nope"},
		"no cookie":      nil,
	} {
		r := post(t, srv.URL+"/api/account/12345678/refresh", `{"csrf":"`+s.csrf+`"}`, hdr)
		e := envelope(t, r, 401, codeNoSession, "UNAUTHORIZED")
		if e["message"] != msgNoSession {
			t.Errorf("%s: message %v", name, e["message"])
		}
	}
	if c := e.Counters(); c.Refreshes != 6 || c.RefreshesOK != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	// Two sessions of one user, to see that a logout ends only its own.
	e, srv := newServer(t, Config{MultipleSessions: true})
	a := mustLogin(t, srv, userBody())
	b := mustLogin(t, srv, userBody()) // same user; a must stay alive
	envelope(t, a.refresh(t, srv, "logout", "bad"), 401, codeCSRF, "UNAUTHORIZED")
	r := a.refresh(t, srv, "logout", a.csrf)
	if r.status != 200 || len(r.body) != 0 {
		t.Fatalf("logout: %d %q", r.status, r.body)
	}
	envelope(t, a.refresh(t, srv, "refresh", a.csrf), 401, codeNoSession, "UNAUTHORIZED")
	envelope(t, a.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	envelope(t, a.refresh(t, srv, "logout", a.csrf), 401, codeNoSession, "UNAUTHORIZED")
	if r := b.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("other session died with the logout: %d", r.status)
	}
	if c := e.Counters(); c.Logouts != 1 || c.LiveSessions != 1 {
		t.Errorf("counters %+v", c)
	}
}

// CC keeps one session per user: a login ends the user's other live
// sessions (bearer, refresh, logout), not another user's, not AppJWTs.
func TestLoginEndsUsersOtherSessions(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{Users: map[string]string{DefaultUsername: DefaultPassword, "other": "other-pw"}})
	a := mustLogin(t, srv, userBody())
	other := mustLogin(t, srv, passwordBody("other", "other-pw"))
	bot := mustLogin(t, srv, appBody())
	jwt := mustToken(t, srv, false)
	b := mustLogin(t, srv, userBody())
	if a.bearer == b.bearer || a.sid == b.sid || a.csrf == b.csrf {
		t.Fatal("second login reused secrets")
	}
	envelope(t, a.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	envelope(t, a.refresh(t, srv, "refresh", a.csrf), 401, codeNoSession, "UNAUTHORIZED")
	envelope(t, a.refresh(t, srv, "logout", a.csrf), 401, codeNoSession, "UNAUTHORIZED")
	for _, s := range []sess{b, other, bot} {
		if r := s.data(t, srv, "/x"); r.status != 200 {
			t.Errorf("a session the login must not end: %d %s", r.status, r.body)
		}
	}
	if r := appCall(t, srv, jwt, true); r.status != 200 {
		t.Errorf("an AppJWT ended by a login: %d %s", r.status, r.body)
	}
	// An application login ends the bot's older session the same way.
	bot2 := mustLogin(t, srv, appBody())
	envelope(t, bot.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	if r := bot2.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("the bot's new session: %d %s", r.status, r.body)
	}
	if c := e.Counters(); c.SessionsEndedByLogin != 2 || c.LiveSessions != 3 {
		t.Errorf("counters %+v, want 2 ended by login and 3 live", c)
	}
}

// With MultipleSessions a user's sessions live side by side; the knob works
// from Go and over HTTP, and Reset keeps it.
func TestMultipleSessionsAllowed(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{MultipleSessions: true})
	a := mustLogin(t, srv, userBody())
	mustLogin(t, srv, userBody())
	if r := a.refresh(t, srv, "refresh", a.csrf); r.status != 200 {
		t.Errorf("first session killed by second login: %d", r.status)
	}
	e.SetMultipleSessions(false)
	mustLogin(t, srv, userBody())
	envelope(t, a.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	if c := e.Counters(); c.SessionsEndedByLogin != 2 || c.LiveSessions != 1 {
		t.Errorf("counters %+v, want 2 ended and 1 live", c)
	}

	ctl := httptest.NewServer(e.ControlHandler("/_ccemu"))
	t.Cleanup(ctl.Close)
	if r := post(t, ctl.URL+"/_ccemu/multiple-sessions?allowed=true", "", nil); r.status != 200 || !strings.Contains(string(r.body), `"allowed":true`) {
		t.Fatalf("multiple-sessions: %d %s", r.status, r.body)
	}
	if r := post(t, ctl.URL+"/_ccemu/multiple-sessions?allowed=maybe", "", nil); r.status != 400 || !strings.Contains(string(r.body), "allowed") {
		t.Errorf("bad allowed: %d %s", r.status, r.body)
	}
	e.Reset()
	c := mustLogin(t, srv, userBody())
	mustLogin(t, srv, userBody())
	if r := c.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("allowed over HTTP, then Reset: first session ended: %d", r.status)
	}
	if r := do(t, "GET", ctl.URL+"/_ccemu/counters", nil, nil); !strings.Contains(string(r.body), `"sessions_ended_by_login":0`) {
		t.Errorf("counters: %s", r.body)
	}
}

func TestIdleTTL(t *testing.T) {
	t.Parallel()
	const ttl = 600 * time.Millisecond
	clk := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, srv := newServer(t, Config{SessionTTL: ttl, Clock: clk, Users: map[string]string{DefaultUsername: DefaultPassword, "idle": "idle-pw"}})
	s := mustLogin(t, srv, userBody())
	if s.raw["sessionTTl"] != "600" {
		t.Errorf("sessionTTl %v", s.raw["sessionTTl"])
	}
	idle := mustLogin(t, srv, `{"username":"idle","password":"idle-pw"}`)
	// Data calls on idle must not extend it. The last round is at idle's
	// deadline, which it still lives at: it dies when now > login + TTL.
	for i := range 3 {
		clk.Advance(ttl / 3)
		if r := s.refresh(t, srv, "refresh", s.csrf); r.status != 200 {
			t.Fatalf("refresh inside TTL: %d %s", r.status, r.body)
		}
		if r := idle.data(t, srv, "/keepalive"); r.status != 200 {
			t.Fatalf("round %d: data call inside TTL: %d %s", i, r.status, r.body)
		}
	}
	clk.Advance(time.Nanosecond)
	// s was refreshed at idle's deadline, so it lives past its original one.
	if r := s.data(t, srv, "/x"); r.status != 200 {
		t.Errorf("refreshed session rejected: %d", r.status)
	}
	envelope(t, idle.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	envelope(t, idle.refresh(t, srv, "refresh", idle.csrf), 401, codeNoSession, "UNAUTHORIZED")
	if n := e.Counters().LiveSessions; n != 1 {
		t.Errorf("LiveSessions %d after idle expired, want 1", n)
	}
	clk.Advance(ttl) // 1ns past s's deadline
	envelope(t, s.refresh(t, srv, "refresh", s.csrf), 401, codeNoSession, "UNAUTHORIZED")
	envelope(t, s.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	if n := e.Counters().LiveSessions; n != 0 {
		t.Errorf("LiveSessions %d", n)
	}
}

func TestDataEcho(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	sum := sha256.Sum256(body)
	r := do(t, "POST", srv.URL+"/api/account/12345678/x/y?a=b", bytes.NewReader(body), map[string]string{
		"Authorization": "Bearer " + s.bearer,
		"Content-Type":  "text/plain",
		"User-Agent":    "ccemu-test/1",
		"X-Request-Id":  "rid-1",
		"Cookie":        "Session_id=" + s.sid,
	})
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if bytes.Contains(r.body, []byte(s.bearer)) || bytes.Contains(r.body, []byte(s.sid)) {
		t.Fatalf("echo leaks a secret: %s", r.body)
	}
	var got echo
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256([]byte(s.bearer))
	want := echo{
		Account: "12345678", Method: "POST", Path: "/api/account/12345678/x/y", Query: "a=b",
		BodyLength: int64(len(body)), BodySHA256: hex.EncodeToString(sum[:]), ContentType: "text/plain",
		AuthorizationPresent: true, AuthorizationScheme: "Bearer", CredentialKind: "session",
		BearerFingerprint: hex.EncodeToString(fp[:])[:8], CookiePresent: true,
		UserAgent: "ccemu-test/1", XRequestID: "rid-1", LoginName: DefaultUsername,
	}
	if got != want {
		t.Errorf("echo\n got %+v\nwant %+v", got, want)
	}
	r = do(t, "DELETE", srv.URL+"/api/account/12345678/thing?status=202", nil, map[string]string{"Authorization": "bearer " + s.bearer})
	if r.status != 202 || r.json(t)["cookie_present"] != false || r.json(t)["method"] != "DELETE" {
		t.Errorf("status param: %d %s", r.status, r.body)
	}
	if r := s.data(t, srv, "/x?status=503"); r.status != 503 || r.json(t)["login_name"] != DefaultUsername {
		t.Errorf("status=503: %d %s", r.status, r.body)
	}
	envelope(t, s.data(t, srv, "/x?status=99"), 400, codeBadRequest, "BAD_REQUEST")
	if c := e.Counters(); c.DataCalls != 2 {
		t.Errorf("DataCalls %d, want 2", c.DataCalls)
	}
}

// patternReader yields n bytes without holding them in memory.
type patternReader struct{ left int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		b[i] = byte(i * 7)
	}
	p.left -= int64(len(b))
	return len(b), nil
}

func TestDataLargeBody(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("64 MiB upload")
	}
	_, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	const size = 64 << 20
	h := sha256.New()
	body := io.TeeReader(&patternReader{size}, h)
	req, _ := http.NewRequest("PUT", srv.URL+"/api/account/12345678/upload", body)
	req.Header.Set("Authorization", "Bearer "+s.bearer)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got echo
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got.BodyLength != size || got.BodySHA256 != hex.EncodeToString(h.Sum(nil)) {
		t.Errorf("length %d sha %s", got.BodyLength, got.BodySHA256)
	}
}

func TestDataUnauthorized(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	for name, r := range map[string]reply{
		"none":       do(t, "GET", srv.URL+"/api/account/12345678/x", nil, nil),
		"garbage":    do(t, "GET", srv.URL+"/api/account/12345678/x", nil, map[string]string{"Authorization": "Bearer nope"}),
		"basic":      do(t, "GET", srv.URL+"/api/account/12345678/x", nil, map[string]string{"Authorization": "Basic " + s.bearer}),
		"always-401": s.data(t, srv, "/always-401"),
		"always-sub": s.data(t, srv, "/always-401/deeper"),
		"other acct": do(t, "GET", srv.URL+"/api/account/999/x", nil, map[string]string{"Authorization": "Bearer " + s.bearer}),
	} {
		t.Run(name, func(t *testing.T) {
			env := envelope(t, r, 401, codeBearer, "UNAUTHORIZED")
			if env["message"] != msgBearer {
				t.Errorf("message %v", env["message"])
			}
			if r.header.Get("WWW-Authenticate") != `Bearer realm="ccemu"` || r.header.Get("X-Ccemu-Error") != "unauthorized" {
				t.Errorf("headers %v", r.header)
			}
		})
	}
	if c := e.Counters(); c.UnauthorizedDataCalls != 6 || c.DataCalls != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestDataDelay(t *testing.T) {
	t.Parallel()
	_, srv := newServer(t, Config{})
	start := time.Now()
	r := do(t, "GET", srv.URL+"/api/account/12345678/x?delay=300ms", nil, nil)
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("401 came after %v, want >= 300ms", el)
	}
	envelope(t, r, 401, codeBearer, "UNAUTHORIZED")
	for _, d := range []string{"abc", "31s", "-1s"} {
		envelope(t, do(t, "GET", srv.URL+"/api/account/12345678/x?delay="+d, nil, nil), 400, codeBadRequest, "BAD_REQUEST")
	}
}

func TestFailNextLogins(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	e.FailNextLogins(2, 503, 2500*time.Millisecond)
	for range 2 {
		r := post(t, loginURL(srv), userBody(), nil)
		envelope(t, r, 503, codeInjected, "SERVICE_UNAVAILABLE")
		if r.header.Get("Retry-After") != "3" {
			t.Errorf("Retry-After %q, want 3", r.header.Get("Retry-After"))
		}
	}
	mustLogin(t, srv, userBody())

	e.FailNextLogins(1, 500, 0)
	r := post(t, loginURL(srv), userBody(), nil)
	if r.status != 500 || string(r.body) != `{"error":"LeLogin1 failed - invalid url received from app server"}` || r.header.Get("Retry-After") != "" {
		t.Errorf("injected 500: %d %s %v", r.status, r.body, r.header)
	}
	e.FailNextLogins(1, 451, 0)
	envelope(t, post(t, loginURL(srv), userBody(), nil), 451, codeInjected, "UNAVAILABLE_FOR_LEGAL_REASONS")
	e.FailNextLogins(1, 429, 5*time.Second)
	r = post(t, loginURL(srv), userBody(), nil)
	envelope(t, r, 429, codeInjected, "TOO_MANY_REQUESTS")
	if r.header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	mustLogin(t, srv, userBody())
	if c := e.Counters(); c.LoginAttempts != 7 || c.Logins != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestDelayNextLogins(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	e.DelayNextLogins(1, 300*time.Millisecond)
	start := time.Now()
	mustLogin(t, srv, userBody())
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("delayed login took %v", el)
	}
	start = time.Now()
	mustLogin(t, srv, userBody())
	if el := time.Since(start); el >= 300*time.Millisecond {
		t.Errorf("second login still delayed: %v", el)
	}
}

func TestDelayNextLoginsHonoursCancel(t *testing.T) {
	t.Parallel()
	e := checkDelayHonoursCancel(t, func(e *Emulator) { e.DelayNextLogins(1, 20*time.Second) },
		func(srv *httptest.Server) (string, string) { return loginURL(srv), userBody() })
	if c := e.Counters(); c.Logins != 0 || c.LoginAttempts != 1 {
		t.Errorf("counters %+v", c)
	}
}

// checkDelayHonoursCancel arms a long delay, lets a client give up on the
// request that url gives, and checks the handler stopped sleeping.
func checkDelayHonoursCancel(t *testing.T, arm func(*Emulator), req func(*httptest.Server) (url, body string)) *Emulator {
	t.Helper()
	e := New(Config{})
	srv := httptest.NewServer(e)
	arm(e)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	url, body := req(srv)
	r, _ := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := http.DefaultClient.Do(r); err == nil {
		t.Fatal("expected a client timeout")
	}
	// Close waits for running handlers, so it is quick only if the sleep stopped.
	start := time.Now()
	srv.Close()
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("handler kept sleeping after the client left (%v)", el)
	}
	return e
}

func TestFailNextRefreshes(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	e.FailNextRefreshes(1, 500)
	envelope(t, s.refresh(t, srv, "refresh", s.csrf), 500, codeInjected, "INTERNAL_SERVER_ERROR")
	if r := s.refresh(t, srv, "refresh", s.csrf); r.status != 200 {
		t.Errorf("after injected failure: %d", r.status)
	}
	if c := e.Counters(); c.Refreshes != 2 || c.RefreshesOK != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestExpireSessions(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	a := mustLogin(t, srv, userBody())
	b := mustLogin(t, srv, appBody())
	if n := e.ExpireSessions(); n != 2 {
		t.Errorf("ExpireSessions %d, want 2", n)
	}
	envelope(t, a.refresh(t, srv, "refresh", a.csrf), 401, codeNoSession, "UNAUTHORIZED")
	envelope(t, b.data(t, srv, "/x"), 401, codeBearer, "UNAUTHORIZED")
	if c := e.Counters(); c.LiveSessions != 0 {
		t.Errorf("LiveSessions %d", c.LiveSessions)
	}
	if n := e.ExpireSessions(); n != 0 {
		t.Errorf("second ExpireSessions %d", n)
	}
}

func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	clk := newFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e, srv := newServer(t, Config{LoginRate: 3, Clock: clk})
	mustLogin(t, srv, userBody())
	envelope(t, post(t, loginURL(srv), `{"username":"demo-agent","password":"x"}`, nil), 401, codeBadCreds, "UNAUTHORIZED")
	mustLogin(t, srv, appBody())
	r := post(t, loginURL(srv), userBody(), nil)
	envelope(t, r, 429, codeRateLimited, "TOO_MANY_REQUESTS")
	if r.header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	e.SetLoginRate(0, 0)
	mustLogin(t, srv, userBody())

	// The window slides: an attempt counts until window has passed since it.
	const window = 300 * time.Millisecond
	e.SetLoginRate(1, window)
	mustLogin(t, srv, userBody())
	envelope(t, post(t, loginURL(srv), userBody(), nil), 429, codeRateLimited, "TOO_MANY_REQUESTS")
	clk.Advance(window - time.Nanosecond)
	envelope(t, post(t, loginURL(srv), userBody(), nil), 429, codeRateLimited, "TOO_MANY_REQUESTS")
	clk.Advance(time.Nanosecond)
	mustLogin(t, srv, userBody())
	if c := e.Counters(); c.LoginAttempts != 9 || c.Logins != 5 {
		t.Errorf("counters %+v", c)
	}
	times := e.LoginAttemptTimes()
	if len(times) != 9 || !slices.IsSortedFunc(times, func(a, b time.Time) int { return a.Compare(b) }) {
		t.Fatalf("LoginAttemptTimes %v", times)
	}
	if gap := times[8].Sub(times[5]); gap != window {
		t.Errorf("accepted logins %v apart, want exactly the window %v", gap, window)
	}
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	ctl := srv.URL + "/_ccemu"
	s := mustLogin(t, srv, userBody())

	r := do(t, "GET", ctl+"/counters", nil, nil)
	var c controlCounters
	if err := json.Unmarshal(r.body, &c); err != nil || r.status != 200 {
		t.Fatalf("counters: %d %s", r.status, r.body)
	}
	if c.Logins != 1 || c.LiveSessions != 1 || len(c.LoginAttemptTimes) != 1 {
		t.Errorf("counters %+v", c)
	}
	if _, err := time.Parse(time.RFC3339Nano, c.LoginAttemptTimes[0]); err != nil {
		t.Error(err)
	}
	if bytes.Contains(r.body, []byte(s.bearer)) {
		t.Error("counters leak the bearer")
	}

	if r := post(t, ctl+"/fail-logins?count=1&status=500&retry_after=5s", "", nil); r.status != 200 {
		t.Fatalf("fail-logins: %d %s", r.status, r.body)
	}
	r = post(t, loginURL(srv), userBody(), nil)
	if r.status != 500 || r.header.Get("Retry-After") != "5" {
		t.Errorf("injected via control: %d %v", r.status, r.header)
	}
	post(t, ctl+"/fail-refreshes?count=1&status=502", "", nil)
	envelope(t, s.refresh(t, srv, "refresh", s.csrf), 502, codeInjected, "BAD_GATEWAY")

	post(t, ctl+"/delay-logins?count=1&delay=200ms", "", nil)
	start := time.Now()
	mustLogin(t, srv, userBody())
	if time.Since(start) < 200*time.Millisecond {
		t.Error("delay-logins had no effect")
	}

	post(t, ctl+"/session-ttl?ttl=2s", "", nil)
	if got := mustLogin(t, srv, userBody()).raw["sessionTTl"]; got != "2000" {
		t.Errorf("sessionTTl after control %v", got)
	}

	post(t, ctl+"/login-rate?n=1&window=1m", "", nil)
	mustLogin(t, srv, userBody())
	if r := post(t, loginURL(srv), userBody(), nil); r.status != 429 {
		t.Errorf("login-rate: %d", r.status)
	}
	post(t, ctl+"/login-rate?n=0", "", nil)

	r = post(t, ctl+"/expire", "", nil)
	if string(r.body) != `{"expired":1}` { // four logins of one user: one session
		t.Errorf("expire: %s", r.body)
	}
	if r := post(t, ctl+"/reset", "", nil); r.status != 200 {
		t.Errorf("reset %d", r.status)
	}
	if got := e.Counters(); got != (Counters{}) || len(e.LoginAttemptTimes()) != 0 {
		t.Errorf("after reset %+v", got)
	}

	for url, param := range map[string]string{
		"/fail-logins?status=abc":      "status",
		"/fail-logins?status=200":      "status",
		"/fail-logins?count=-1":        "count",
		"/fail-logins?retry_after=x":   "retry_after",
		"/delay-logins?count=1":        "delay",
		"/fail-refreshes?count=x":      "count",
		"/login-rate":                  "n",
		"/login-rate?n=2&window=bogus": "window",
		"/session-ttl":                 "ttl",
		"/session-ttl?ttl=0s":          "ttl",
	} {
		r := post(t, ctl+url, "", nil)
		env := envelope(t, r, 400, codeBadRequest, "BAD_REQUEST")
		if msg, _ := env["message"].(string); !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", url, msg, param)
		}
	}
	if r := do(t, "GET", ctl+"/expire", nil, nil); r.status != 405 || r.header.Get("Allow") != "POST" {
		t.Errorf("GET expire: %d", r.status)
	}
	if r := post(t, ctl+"/counters", "", nil); r.status != 405 {
		t.Errorf("POST counters: %d", r.status)
	}
	if r := post(t, ctl+"/nope", "", nil); r.status != 404 {
		t.Errorf("unknown control: %d", r.status)
	}
}

func TestIssuedSecrets(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{
		Users: map[string]string{"u1": "pw-one"},
		Apps:  []App{{"bot", "key", "app-secret-x"}},
	})
	a := mustLogin(t, srv, `{"username":"u1","password":"pw-one"}`)
	b := mustLogin(t, srv, `{"username":"bot","appKey":"key","secret":"app-secret-x","accessToken":"dummy","accessTokenSecret":"dummy"}`)
	e.Reset() // history survives a reset
	got := e.IssuedSecrets()
	for _, want := range []string{"pw-one", "app-secret-x", a.bearer, a.csrf, a.sid, b.bearer, b.csrf, b.sid} {
		if !slices.Contains(got, want) {
			t.Errorf("IssuedSecrets lacks %q", want)
		}
	}
	if slices.Contains(got, DefaultPassword) {
		t.Error("default password listed although Users was set")
	}
	// Defaults are covered when no users or apps are configured.
	got = New(Config{}).IssuedSecrets()
	if !slices.Contains(got, DefaultPassword) || !slices.Contains(got, DefaultAppSecret) {
		t.Errorf("defaults missing: %v", got)
	}
}

// HoldNextDataCalls holds a data call before its credential is checked, so
// a session ended meanwhile is what it meets; ReleaseDataCalls lets it go.
// Both work over HTTP too.
func TestHoldDataCalls(t *testing.T) {
	t.Parallel()
	e, srv := newServer(t, Config{})
	s := mustLogin(t, srv, userBody())
	ctl := httptest.NewServer(e.ControlHandler("/_ccemu"))
	t.Cleanup(ctl.Close)
	if r := post(t, ctl.URL+"/_ccemu/hold-data?count=1", "", nil); r.status != 200 {
		t.Fatalf("hold-data: %d %s", r.status, r.body)
	}
	held := make(chan reply, 1)
	go func() { held <- s.data(t, srv, "/held") }()
	for e.Counters().HeldDataCalls != 1 {
		runtime.Gosched()
	}
	if r := s.data(t, srv, "/not-held"); r.status != 200 {
		t.Fatalf("a second call was held too: %d", r.status)
	}
	e.ExpireSessions()
	if r := post(t, ctl.URL+"/_ccemu/release-data", "", nil); r.status != 200 {
		t.Fatalf("release-data: %d %s", r.status, r.body)
	}
	envelope(t, <-held, 401, codeBearer, "UNAUTHORIZED")
	if n := e.Counters().HeldDataCalls; n != 0 {
		t.Errorf("%d calls still held", n)
	}
}
