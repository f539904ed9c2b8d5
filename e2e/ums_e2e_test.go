// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"context"
	"fmt"
	"slices"
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
