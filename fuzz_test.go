// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Fuzz targets for the config lpauth reads: the Caddyfile and the JSON
// config (the CC replies the client reads are fuzzed in internal/cc). Each
// asserts properties, not only "does not panic", and their seed corpora
// (f.Add below and testdata/fuzz/<name>) run as ordinary tests under `go
// test`.
//
// To fuzz one target for real (never start the caddytest integration
// tests at the same time, they bind fixed ports):
//
//	go test -run '^$' -fuzz '^FuzzJSONConfig$' -fuzztime 60s .

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// caddyfileDispenser tokenizes like caddyfile.NewTestDispenser, which
// log.Fatal()s on a tokenizer error (an unterminated quote or heredoc);
// those inputs never reach UnmarshalCaddyfile in Caddy either.
func caddyfileDispenser(text string) (*caddyfile.Dispenser, bool) {
	tokens, err := caddyfile.Tokenize([]byte(text), "Caddyfile")
	if err != nil {
		return nil, false
	}
	return caddyfile.NewDispenser(tokens), true
}

func FuzzCaddyfile(f *testing.F) {
	// Fuller configurations are in testdata/fuzz/FuzzCaddyfile.
	f.Add("account_id 1234\nusername bot\npassword {env.LP_PASSWORD}")
	f.Add("account_id 1234\nusername bot\napp_key k\nsecret {env.S}\nrefresh_interval 1s\nretry_body_limit 1MiB\nlogin_timeout 10s")
	f.Add("refresh_interval 0")
	f.Add("refresh_interval -5m")
	f.Add("retry_body_limit 2TiB")
	f.Add("logout_on_stop maybe")
	f.Add("storage")
	f.Add("password \"\xff\xfe\"")
	f.Add("password a\npassword b")
	f.Add("csds")
	f.Add("nope x")

	f.Fuzz(func(t *testing.T, input string) {
		for _, text := range []string{"lpauth {\n" + input + "\n}", input} {
			d, ok := caddyfileDispenser(text)
			if !ok {
				continue
			}
			var h Handler
			if err := h.UnmarshalCaddyfile(d); err != nil {
				continue
			}
			if h.RefreshInterval < 0 || h.LoginTimeout < 0 || h.RetryBodyLimit < 0 || h.RetryBodyLimit > maxRetryBodyLimit {
				t.Fatalf("%q: negative or huge tuning: %+v", text, h)
			}
			raw, err := json.Marshal(&h)
			if err != nil {
				t.Fatalf("%q: marshal: %v", text, err)
			}
			var back Handler
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatalf("%q: adapted JSON %s does not load: %v", text, raw, err)
			}
			if h.StorageRaw != nil {
				var c bytes.Buffer
				if err := json.Compact(&c, h.StorageRaw); err != nil {
					t.Fatalf("%q: storage is not JSON: %s", text, h.StorageRaw)
				}
				h.StorageRaw = c.Bytes()
			}
			if !reflect.DeepEqual(h, back) {
				t.Fatalf("%q: does not round-trip through JSON:\n got %+v\nwant %+v", text, back, h)
			}
		}
	})
}

// handlerFields are the JSON names of Handler's fields: every config error
// must name one.
func handlerFields() []string {
	var names []string
	typ := reflect.TypeOf(Handler{})
	for i := 0; i < typ.NumField(); i++ {
		if name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

func FuzzJSONConfig(f *testing.F) {
	// Fuller configurations are in testdata/fuzz/FuzzJSONConfig.
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"pw"}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","app_key":"k","secret":"s","refresh_interval":"1s","login_timeout":1000000000,"retry_body_limit":1}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"pw","refresh_interval":-1}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"pw","retry_body_limit":-1}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"{env.LPAUTH_FUZZ_UNSET}"}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"pw","app_key":"k"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"{hunter2-correct-horse}"}`))
	f.Add([]byte(`{"account_id":"1234","username":"bot","password":"pw","retry_body_limit":9223372036854775807}`))
	fields := handlerFields()

	f.Fuzz(func(t *testing.T, raw []byte) {
		var h Handler
		if json.Unmarshal(raw, &h) != nil {
			return
		}
		// {file.*} placeholders read files; keep the target hermetic.
		for _, v := range []string{h.AccountID, h.Username, h.Password, h.AppKey, h.Secret, h.AccessToken,
			h.AccessTokenSecret, h.CSDS, h.Domain, h.CAFile, h.EncryptionKey} {
			if strings.Contains(v, "{file.") {
				return
			}
		}
		r, err := h.resolve()
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "lpauth: ") {
				t.Fatalf("error %q does not start with \"lpauth: \"", msg)
			}
			for _, secret := range []string{h.Password, h.Secret, h.AccessToken, h.AccessTokenSecret, h.EncryptionKey} {
				loneEnv := strings.HasPrefix(secret, "{env.") && strings.HasSuffix(secret, "}") && strings.Count(secret, "{") == 1
				if len(secret) >= 4 && !loneEnv && strings.Contains(msg, secret) {
					t.Fatalf("error %q shows a secret value", msg)
				}
			}
			for _, name := range fields {
				if strings.Contains(msg, name) {
					return
				}
			}
			t.Fatalf("error %q names no field", msg)
		}
		if r.refreshInterval < refreshIntervalRange.min || r.refreshInterval > refreshIntervalRange.max ||
			r.loginTimeout < loginTimeoutRange.min || r.loginTimeout > loginTimeoutRange.max ||
			r.retryBodyLimit <= 0 || r.retryBodyLimit > maxRetryBodyLimit {
			t.Fatalf("resolved tuning out of bounds: refresh %v, login timeout %v, retry body limit %d",
				r.refreshInterval, r.loginTimeout, r.retryBodyLimit)
		}
		c := r.creds
		if c.AccountID == "" || c.Username == "" {
			t.Fatal("account_id or username empty after a successful resolve")
		}
		userLogin := c.Password != ""
		appLogin := c.AppKey != "" && c.Secret != ""
		if userLogin == appLogin {
			t.Fatalf("login mode not exactly one: password %t, app_key+secret %t", userLogin, appLogin)
		}
		if userLogin && (c.AppKey != "" || c.Secret != "" || c.AccessToken != "" || c.AccessTokenSecret != "") {
			t.Fatal("user login with application-login fields set")
		}
	})
}
