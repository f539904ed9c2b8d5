// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package caddyccemu

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // the storage under t.TempDir
	"github.com/coder/websocket"
)

// The UMS socket upgrades through a real Caddy (in this process, admin API
// off, an ephemeral port, so it collides with no caddytest elsewhere): the
// handler can hijack Caddy's connection, the session's end closes the
// socket with 4401, and unloading the config closes the sockets left
// (1001) as the pooled emulator is destructed.
func TestUMSThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	cfg := `{
		"admin": {"disabled": true, "config": {"persist": false}},
		"storage": {"module": "file_system", "root": ` + strconv.Quote(dir) + `},
		"apps": {"http": {"servers": {"ums": {
			"listen": ["127.0.0.1:0"],
			"automatic_https": {"disable": true},
			"routes": [{"handle": [{"handler": "ccemu", "account_id": "caddy-ums", "control_path": "/_ccemu"}]}]
		}}}}
	}`
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = caddy.Stop()
		}
	})
	app, err := caddy.ActiveContext().App("http")
	if err != nil {
		t.Fatal(err)
	}
	ls := app.(*caddyhttp.App).Servers["ums"].Listeners()
	if len(ls) != 1 {
		t.Fatalf("%d listeners", len(ls))
	}
	base := "http://" + ls[0].Addr().String()

	login := func() string {
		resp, err := http.Post(base+"/api/account/caddy-ums/login?v=1.3", "application/json",
			strings.NewReader(`{"username":"demo-agent","password":"demo-password"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Bearer string }
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&r) != nil {
			t.Fatalf("login: %d", resp.StatusCode)
		}
		return r.Bearer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(bearer string) *websocket.Conn {
		c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+
			"/ws_api/account/caddy-ums/messaging/brand/"+bearer+"?v=2.1", nil)
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("dial through Caddy: %v (status %d)", err, status)
		}
		t.Cleanup(func() { _ = c.CloseNow() })
		return c
	}
	// closeCode reads until the server's close frame; -1 for none.
	closeCode := func(c *websocket.Conn) websocket.StatusCode {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		for {
			if _, _, err := c.Read(rctx); err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) {
					return -1
				}
				return ce.Code
			}
		}
	}

	c := dial(login())
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"kind":"req","id":"1","type":".GetClock"}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(b), `"code":200`) || !strings.Contains(string(b), "GetClock$Response") {
		t.Fatalf("GetClock through Caddy: %s %v", b, err)
	}
	resp, err := http.Post(base+"/_ccemu/expire", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code := closeCode(c); code != 4401 {
		t.Errorf("closed with %v after expire, want 4401", code)
	}

	// A refused handshake through Caddy is the emulator's 401.
	resp, err = http.Get(base + "/ws_api/account/caddy-ums/messaging/brand/" + strings.Repeat("0", 64) + "?v=2.1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(string(body), `"internalCode":1`) {
		t.Errorf("dead bearer: %d %s", resp.StatusCode, body)
	}

	// Unloading the config destructs the pooled emulator, which closes
	// the sockets still open.
	// (The client reads meanwhile, so it answers the close at once.)
	c = dial(login())
	code := make(chan websocket.StatusCode, 1)
	go func() { code <- closeCode(c) }()
	stopped = true
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := <-code; got != websocket.StatusGoingAway {
		t.Errorf("closed with %v when Caddy stopped, want 1001", got)
	}
	if _, ok := pool.References("caddy-ums||false||"); ok {
		t.Error("pool entry kept after Stop")
	}
}
