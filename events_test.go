// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// The Caddy events lpauth emits, as a subscriber configured through the
// Caddyfile's `events` global option receives them from a real Caddy.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

func init() { caddy.RegisterModule(eventRecorder{}) }

// eventRecorder is an events handler that keeps what it receives, under
// its tag, in recorded.
type eventRecorder struct {
	Tag string `json:"tag,omitempty"`
}

type recordedEvent struct {
	tag, name, origin string
	data              map[string]any
}

var recorded struct {
	sync.Mutex
	list []recordedEvent
}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "events.handlers.lpauth_test_recorder",
		New: func() caddy.Module { return new(eventRecorder) },
	}
}

func (r *eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the handler's name
	if d.NextArg() {
		r.Tag = d.Val()
	}
	return nil
}

func (r *eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	var origin string
	if o := e.Origin(); o != nil {
		origin = string(o.CaddyModule().ID)
	}
	recorded.Lock()
	defer recorded.Unlock()
	recorded.list = append(recorded.list, recordedEvent{tag: r.Tag, name: e.Name(), origin: origin, data: maps.Clone(e.Data)})
	return nil
}

var (
	_ caddyevents.Handler   = (*eventRecorder)(nil)
	_ caddyfile.Unmarshaler = (*eventRecorder)(nil)
)

// lpauthEventNames are subscribed to by name, as a user would.
var lpauthEventNames = []string{caddyEventLogin, caddyEventLoginFailed, caddyEventSessionLost, caddyEventLogout, caddyEventAdopted, caddyEventStoreFailed}

// eventsGlobal is the `events` global option: each lpauth event by name
// into the recorder tagged "named", and every event of any origin into
// the one tagged "all".
func eventsGlobal() string {
	var b strings.Builder
	b.WriteString("events {\n")
	for _, name := range lpauthEventNames {
		fmt.Fprintf(&b, "\t\ton %s lpauth_test_recorder named\n", name)
	}
	b.WriteString("\t\ton * lpauth_test_recorder all\n\t}\n\t")
	return b.String()
}

// startRecording unloads whatever config ran before (its teardown events
// are not this test's) and forgets what was recorded.
func startRecording(t *testing.T) {
	t.Helper()
	unloadCaddy(t)
	recorded.Lock()
	recorded.list = nil
	recorded.Unlock()
}

// lpauthEvents returns what the recorder tagged tag received from lpauth.
func lpauthEvents(tag string) []recordedEvent {
	recorded.Lock()
	defer recorded.Unlock()
	var out []recordedEvent
	for _, e := range recorded.list {
		if e.tag == tag && e.origin == eventOriginID {
			out = append(out, e)
		}
	}
	return out
}

// recordedAs returns what the recorder tagged tag received, of any origin.
func recordedAs(tag string) []recordedEvent {
	recorded.Lock()
	defer recorded.Unlock()
	var out []recordedEvent
	for _, e := range recorded.list {
		if e.tag == tag {
			out = append(out, e)
		}
	}
	return out
}

// loadWithModuleSubscriptions adapts a Caddyfile to JSON, subscribes the
// recorders tagged "module" and "reverse_proxy" to lpauth's events from
// those modules (which the Caddyfile's events option cannot say), and
// loads it.
func loadWithModuleSubscriptions(t *testing.T, caddyfileText string) {
	t.Helper()
	caddytestTier(t)
	raw, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		caddy.Config
		Apps map[string]json.RawMessage `json:"apps"`
	}
	var events caddyevents.App
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(cfg.Apps["events"], &events); err != nil {
		t.Fatal(err)
	}
	for tag, mod := range map[string]caddy.ModuleID{"module": "http.handlers.lpauth", "reverse_proxy": "http.handlers.reverse_proxy"} {
		events.Subscriptions = append(events.Subscriptions, &caddyevents.Subscription{
			Events:      lpauthEventNames,
			Modules:     []caddy.ModuleID{mod},
			HandlersRaw: []json.RawMessage{json.RawMessage(`{"handler":"lpauth_test_recorder","tag":"` + tag + `"}`)},
		})
	}
	cfg.Apps["events"] = caddyconfig.JSON(events, nil)
	caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort}).
		InitServer(string(caddyconfig.JSON(cfg, nil)), "json")
}

func namesOf(evs []recordedEvent) []string {
	names := make([]string, len(evs))
	for i, e := range evs {
		names[i] = e.name
	}
	return names
}

// awaitEvents waits until the named recorder holds n events from lpauth,
// then gives lpauth a moment to show any extra one.
func awaitEvents(t *testing.T, n int) []recordedEvent {
	t.Helper()
	defer func() {
		if t.Failed() {
			recorded.Lock()
			for _, e := range recorded.list {
				t.Logf("recorded: %s %s from %q: %v", e.tag, e.name, e.origin, e.data)
			}
			recorded.Unlock()
		}
	}()
	eventually(t, 10*time.Second, fmt.Sprintf("%d lpauth events", n), func() bool { return len(lpauthEvents("named")) >= n })
	evs := lpauthEvents("named")
	if len(evs) != n {
		t.Fatalf("events %v, want %d", namesOf(evs), n)
	}
	return evs
}

// checkIdentity checks the data every event carries.
func checkIdentity(t *testing.T, e recordedEvent, host string) {
	t.Helper()
	want := map[string]any{"account_id": ccemu.DefaultAccountID, "mode": "user", "username": ccemu.DefaultUsername}
	for k, v := range want {
		if e.data[k] != v {
			t.Errorf("%s: %s = %v, want %v (data %v)", e.name, k, e.data[k], v, e.data)
		}
	}
	if h, _ := e.data["host"].(string); !strings.Contains(h, host) {
		t.Errorf("%s: host = %v, want the emulator's %s", e.name, e.data["host"], host)
	}
}

// noSecretIn fails if any recorded event's data, of any origin, holds one
// of the secrets.
func noSecretIn(t *testing.T, secrets ...string) {
	t.Helper()
	recorded.Lock()
	defer recorded.Unlock()
	for _, e := range recorded.list {
		raw, err := json.Marshal(e.data)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(string(raw), s) {
				t.Errorf("event %s carries a secret: %s", e.name, raw)
			}
		}
	}
}

// loggedInRecording loads the proxy (extra inside the lpauth block) with
// the recorders subscribed, against a new emulator, and logs in with a
// first request; it returns the events that login brought.
func loggedInRecording(t *testing.T, extra string) (*ccemu.Emulator, *httptest.Server, []recordedEvent) {
	t.Helper()
	startRecording(t)
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, caddyConfig(srv, extra, eventsGlobal()))
	if r := send(t, "GET", dataPath("first"), nil); r.status != 200 {
		t.Fatalf("first request: %d", r.status)
	}
	return emu, srv, awaitEvents(t, 1)
}

func TestEventsLoginThenSessionLostAndRelogin(t *testing.T) {
	emu, srv, evs := loggedInRecording(t, "")
	if evs[0].name != caddyEventLogin || evs[0].data["replaced"] != false {
		t.Fatalf("first event %s %v, want lpauth.login with replaced false", evs[0].name, evs[0].data)
	}
	checkIdentity(t, evs[0], hostport(srv))

	emu.ExpireSessions()
	if r := send(t, "GET", dataPath("after-expiry"), nil); r.status != 200 {
		t.Fatalf("request after expiry: %d", r.status)
	}
	evs = awaitEvents(t, 3)
	if got := namesOf(evs[1:]); got[0] != caddyEventSessionLost || got[1] != caddyEventLogin {
		t.Fatalf("after expiry: %v, want session_lost then login", got)
	}
	if evs[2].data["replaced"] != true {
		t.Errorf("re-login: replaced = %v, want true", evs[2].data["replaced"])
	}
	// Expired moments after its login: short-lived, but the first, so no
	// wait (next_attempt absent).
	lost := evs[1].data
	if lived, ok := lost["lived_seconds"].(float64); !ok || lived < 0 || lived > ShortLivedWindow.Seconds() ||
		lost["short_lived"] != true || lost["next_attempt"] != nil {
		t.Errorf("session_lost data %v, want lived_seconds under 60, short_lived true, no next_attempt", lost)
	}
	for _, e := range evs[1:] {
		checkIdentity(t, e, hostport(srv))
	}
	noSecretIn(t, append(emu.IssuedSecrets(), ccemu.DefaultPassword)...)
}

func TestEventsLoginFailed(t *testing.T) {
	startRecording(t)
	_, srv := emulator(t, ccemu.Config{})
	const wrong = "not-the-password-either"
	t.Setenv("LPAUTH_TEST_WRONG_EVENTS", wrong)
	cfg := strings.Replace(caddyConfig(srv, "", eventsGlobal()), "{env."+testPasswordEnv+"}", "{env.LPAUTH_TEST_WRONG_EVENTS}", 1)
	loadCaddy(t, cfg)
	if r := send(t, "GET", dataPath("x"), nil); r.status != 503 {
		t.Fatalf("status %d with a wrong password", r.status)
	}
	evs := awaitEvents(t, 1)
	seen := time.Now()
	e := evs[0]
	if e.name != caddyEventLoginFailed {
		t.Fatalf("event %s, want lpauth.login_failed", e.name)
	}
	checkIdentity(t, e, "") // no host: no session was obtained
	if e.data["status"] != 401 || e.data["consecutive_failures"] != 1 {
		t.Errorf("status %v, consecutive_failures %v; want 401 and 1", e.data["status"], e.data["consecutive_failures"])
	}
	next, err := time.Parse(time.RFC3339, fmt.Sprint(e.data["next_attempt"]))
	if err != nil {
		t.Fatalf("next_attempt %v: %v", e.data["next_attempt"], err)
	}
	if ahead := next.Sub(seen); ahead < 55*time.Second || ahead > 70*time.Second {
		t.Errorf("next_attempt %s is %s ahead, want about 1m (the 401 backoff)", next, ahead)
	}
	if reason, _ := e.data["reason"].(string); !strings.Contains(reason, "401") {
		t.Errorf("reason %q, want the error text", reason)
	}
	noSecretIn(t, wrong, ccemu.DefaultPassword)
}

func TestEventsLogoutAtStop(t *testing.T) {
	emu, srv, _ := loggedInRecording(t, "")
	// Stopping cancels the config's context before the keeper logs out.
	unloadCaddy(t)
	evs := awaitEvents(t, 2)
	if evs[1].name != caddyEventLogout {
		t.Fatalf("at stop: %v, want login then logout", namesOf(evs))
	}
	checkIdentity(t, evs[1], hostport(srv))
	if n := emu.Counters().Logouts; n != 1 {
		t.Errorf("%d logouts at the emulator, want 1", n)
	}
}

func TestEventsNoneForRequestsOrRefreshes(t *testing.T) {
	emu, _, _ := loggedInRecording(t, "refresh_interval 1s")
	i := 0
	// Requests until two refreshes have come and gone.
	eventually(t, 5*time.Second, "two refreshes among requests", func() bool {
		i++
		if r := send(t, "GET", dataPath(fmt.Sprintf("r%d", i)), nil); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
		return emu.Counters().Refreshes >= 2
	})
	if evs := lpauthEvents("all"); len(evs) != 1 {
		t.Fatalf("after %d requests and %d refreshes, lpauth emitted %v; want only the login", i, emu.Counters().Refreshes, namesOf(evs))
	}
}

// Two keepers of one cluster, in one process: the second adopts the
// token the first stored. They are two because their storage configs
// differ (Caddy's configured storage, and the same directory named), which
// makes two identities over the same files. AppJWT identities: two Login
// Service identities of one user in one config are refused (one session
// per user). Each lpauth sits before a
// reverse_proxy in a handle_path block, where Caddy's shared module lineage
// would make reverse_proxy the origin of an event emitted through the
// handler's own context: subscriptions by module see lpauth as the origin.
func TestEventsAdoptedInCluster(t *testing.T) {
	startRecording(t)
	emu, srv := emulator(t, ccemu.Config{})
	dir := t.TempDir()
	block := func(storage string) string {
		return fmt.Sprintf("\t\tlpauth {\n\t\t\taccount_id %s\n\t\t\tclient_id %s\n\t\t\tclient_secret %s\n\t\t\tcsds %s\n\t\t\t%s\n\t\t}\n\t\treverse_proxy %s\n",
			ccemu.DefaultAccountID, ccemu.DefaultClientID, ccemu.DefaultClientSecret, srv.URL, storage, hostport(srv))
	}
	cfg := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\t%sskip_install_trust\n\tstorage file_system {\n\t\troot %s\n\t}\n\t%s}\n"+
		"http://%s {\n\thandle_path /a/* {\n%s\t}\n\thandle_path /b/* {\n%s\t}\n}\n",
		adminAddr, portsGlobal, dir, eventsGlobal(), proxyAddr, block("storage"), block("storage file_system {\n\t\t\t\troot "+dir+"\n\t\t\t}"))
	loadWithModuleSubscriptions(t, cfg)
	for _, p := range []string{"/a", "/b"} {
		if r := send(t, "GET", p+dataPath("x"), nil); r.status != 200 {
			t.Fatalf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	evs := awaitEvents(t, 2)
	got := namesOf(evs)
	if !(got[0] == caddyEventLogin && got[1] == caddyEventAdopted) && !(got[0] == caddyEventAdopted && got[1] == caddyEventLogin) {
		t.Fatalf("events %v, want one login and one adopted", got)
	}
	for _, e := range evs {
		if e.data["mode"] != appJWTKind || e.data["username"] != ccemu.DefaultClientID || e.data["account_id"] != ccemu.DefaultAccountID {
			t.Errorf("%s: data %v, want the AppJWT identity", e.name, e.data)
		}
	}
	if n := len(recordedAs("module")); n != 2 {
		t.Errorf("a subscription to the module http.handlers.lpauth got %d events, want 2", n)
	}
	if evs := recordedAs("reverse_proxy"); len(evs) != 0 {
		t.Errorf("a subscription to the module http.handlers.reverse_proxy got %v", namesOf(evs))
	}
	if n := emu.Counters().TokenRequests; n != 1 {
		t.Errorf("%d token requests, want 1 for the cluster", n)
	}
	noSecretIn(t, append(emu.IssuedSecrets(), ccemu.DefaultClientSecret)...)
}

// An AppJWT's fetch is an lpauth.login too, as its config starts, with the
// mode app_jwt and the client id as the user name; no secret in its data.
func TestEventsAppJWTLoginAtStart(t *testing.T) {
	startRecording(t)
	emu, srv := emulator(t, ccemu.Config{})
	loadCaddy(t, strings.Replace(appJWTSite(srv, ""), "skip_install_trust", "skip_install_trust\n\t"+eventsGlobal(), 1))
	evs := awaitEvents(t, 1) // no request sent: the fetch at start
	e := evs[0]
	if e.name != caddyEventLogin || e.data["mode"] != appJWTKind || e.data["username"] != ccemu.DefaultClientID || e.data["replaced"] != false {
		t.Fatalf("event %s %v, want lpauth.login for the AppJWT client", e.name, e.data)
	}
	if h, _ := e.data["host"].(string); !strings.Contains(h, hostport(srv)) {
		t.Errorf("host %v, want the emulator's Sentinel", e.data["host"])
	}
	noSecretIn(t, append(emu.IssuedSecrets(), ccemu.DefaultClientSecret)...)
}

// An operator's relogin of an AppJWT identity fetches a new token and says
// nothing of a logout: Sentinel has no revocation, so none happened (no
// lpauth.logout, no "logged out" line, no logouts_total).
func TestEventsAppJWTReloginReportsNoLogout(t *testing.T) {
	startRecording(t)
	emu, srv := emulator(t, ccemu.Config{})
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	global := fmt.Sprintf("skip_install_trust\n\tlog {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t}\n\t%s", logFile, eventsGlobal())
	loadCaddy(t, strings.Replace(appJWTSite(srv, ""), "skip_install_trust", global, 1))
	awaitEvents(t, 1) // the fetch at start
	logoutsKey := `caddy_lpauth_logouts_total{account_id="` + ccemu.DefaultAccountID + `",result="ok"}`
	logouts := scrape(t)[logoutsKey]
	resp, err := http.Post("http://"+adminAddr+"/lpauth/sessions/relogin?account_id="+ccemu.DefaultAccountID, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || emu.Counters().TokenRequestsOK != 2 {
		t.Fatalf("relogin: %d %s; %d tokens", resp.StatusCode, body, emu.Counters().TokenRequestsOK)
	}
	evs := awaitEvents(t, 2)
	forEachKeeper(func(k *keeper) { k.releases.Wait() }) // a release would run in the background
	for _, e := range lpauthEvents("all") {
		if e.name == caddyEventLogout {
			t.Errorf("an AppJWT relogin emitted %s %v", e.name, e.data)
		}
	}
	if evs[1].name != caddyEventLogin {
		t.Errorf("second event %s, want lpauth.login", evs[1].name)
	}
	logs, _ := os.ReadFile(logFile)
	if strings.Contains(string(logs), "logged out of CC") {
		t.Error(`an AppJWT relogin logged "logged out of CC"`)
	}
	if n := scrape(t)[logoutsKey]; n != logouts {
		t.Errorf("an AppJWT relogin counted a logout: %v, was %v", n, logouts)
	}
}

// A cluster storage that fails: lpauth.store_failed with the reason, then
// a login of this instance's own; no secret in either.
func TestEventsStoreFailed(t *testing.T) {
	startRecording(t)
	emu, srv := emulator(t, ccemu.Config{})
	blocker := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A storage root under a regular file: every lock and write fails.
	storage := "storage file_system {\n\t\t\troot " + filepath.Join(blocker, "lpauth") + "\n\t\t}"
	loadCaddy(t, caddyConfig(srv, storage, eventsGlobal()))
	if r := send(t, "GET", dataPath("x"), nil); r.status != 200 {
		t.Fatalf("with the storage down: %d %s (an instance works alone)", r.status, r.body)
	}
	eventually(t, 5*time.Second, "store_failed and login", func() bool {
		got := namesOf(lpauthEvents("named"))
		return slices.Contains(got, caddyEventStoreFailed) && slices.Contains(got, caddyEventLogin)
	})
	for _, e := range lpauthEvents("named") {
		if e.name != caddyEventStoreFailed {
			checkIdentity(t, e, hostport(srv))
			continue
		}
		// Before any credential: no host yet.
		if e.data["account_id"] != ccemu.DefaultAccountID || e.data["username"] != ccemu.DefaultUsername {
			t.Errorf("store_failed: %v", e.data)
		}
		if r, _ := e.data["reason"].(string); r == "" {
			t.Errorf("store_failed without a reason: %v", e.data)
		}
	}
	noSecretIn(t, append(emu.IssuedSecrets(), ccemu.DefaultPassword)...)
}
