// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// A bot on the messaging WebSocket through the quick start's binary and
// config: CC ends the session and closes the socket with 4401, the bot
// reconnects at once (as LivePerson tells it to) and its first GetClock
// succeeds, at the cost of one re-login. Five runs, each on a fresh
// instance; the times from the 4401 to that GetClock are logged (-v).
func TestE2EUMSReconnectAfter4401(t *testing.T) {
	e2eTier(t)
	var took []time.Duration
	for run := range 5 {
		admin, emuPort, proxyPort := freePort(t), freePort(t), freePort(t)
		p, _ := quickStart(t, admin, emuPort, proxyPort, emuPort)
		control := fmt.Sprintf("http://127.0.0.1:%d/_ccemu", emuPort)
		url := fmt.Sprintf("ws://127.0.0.1:%d/ws_api/account/%s/messaging/brand?v=2.1", proxyPort, ccemu.DefaultAccountID)
		ws := dialUMS(t, url)
		umsGetClock(t, ws, 1)
		var before ccemu.Counters
		getJSON(t, "GET", control+"/counters", &before)

		var expired map[string]int
		if st := getJSON(t, "POST", control+"/expire", &expired); st != 200 {
			t.Fatalf("expire: %d", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := ws.Read(ctx)
		cancel()
		closed := time.Now()
		if websocket.CloseStatus(err) != 4401 {
			t.Fatalf("run %d: the socket ended with %v, want 4401", run, err)
		}
		ws = dialUMS(t, url)
		umsGetClock(t, ws, 2)
		took = append(took, time.Since(closed))
		ws.Close(websocket.StatusNormalClosure, "")

		var after ccemu.Counters
		getJSON(t, "GET", control+"/counters", &after)
		if n := after.Logins - before.Logins; n != 1 {
			t.Fatalf("run %d: %d logins for one 4401 and one reconnect, want 1", run, n)
		}
		p.stop(t, 10*time.Second)
	}
	slices.Sort(took)
	t.Logf("from the 4401 to the first GetClock after reconnecting, 5 fresh instances: median %s (min %s, max %s), 1 re-login each",
		took[2].Round(100*time.Microsecond), took[0].Round(100*time.Microsecond), took[4].Round(100*time.Microsecond))
}

// The quick start with debug logging and an access log on: a bot with a
// dummy token of its own opens a socket, CC closes it with 4401 and it
// reconnects; no bearer (64 hex digits, as the emulator makes them)
// reaches caddy's output, and the access log shows the bot's own path.
func TestE2EUMSNoBearerInDebugAndAccessLogs(t *testing.T) {
	e2eTier(t)
	example, err := os.ReadFile(exampleCaddyfile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(example)
	for _, edit := range [][2]string{
		{"\tpersist_config off\n", "\tpersist_config off\n\tdebug\n"},
		{"\tlpauth_ready /healthz\n", "\tlog\n\tlpauth_ready /healthz\n"},
	} {
		if !strings.Contains(cfg, edit[0]) {
			t.Fatalf("example.Caddyfile no longer has %q", edit[0])
		}
		cfg = strings.Replace(cfg, edit[0], edit[1], 1)
	}
	file := filepath.Join(t.TempDir(), "debug.Caddyfile")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	admin, emuPort, proxyPort := freePort(t), freePort(t), freePort(t)
	p, _ := quickStartConfig(t, file, admin, emuPort, proxyPort, emuPort)
	control := fmt.Sprintf("http://127.0.0.1:%d/_ccemu", emuPort)
	url := fmt.Sprintf("ws://127.0.0.1:%d/ws_api/account/%s/messaging/brand/bot-dummy?v=2.1", proxyPort, ccemu.DefaultAccountID)
	ws := dialUMS(t, url)
	umsGetClock(t, ws, 1)
	var expired map[string]int
	if st := getJSON(t, "POST", control+"/expire", &expired); st != 200 {
		t.Fatalf("expire: %d", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != 4401 {
		t.Fatalf("the socket ended with %v, want 4401", err)
	}
	ws = dialUMS(t, url)
	umsGetClock(t, ws, 2)
	ws.Close(websocket.StatusNormalClosure, "")
	p.stop(t, 10*time.Second)
	logs := p.out.String()
	for _, want := range []string{"/messaging/brand/bot-dummy", "messaging WebSocket closed for a new token", `"level":"debug"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("caddy's output lacks %q: this test would see nothing", want)
		}
	}
	if m := hexSecret.FindString(logs); m != "" {
		t.Fatalf("a bearer-like secret (%s…) shows in caddy's output", m[:6])
	}
}
