// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// A host clock ahead of Sentinel's, with the v1 reply (exp, no iat, no
// expires_in): every AppJWT looks expired on arrival. lpauth renews it a
// minute after each fetch and says why, instead of fetching in a loop.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// skewedReply answers tokens whose exp is ten minutes before now (Sentinel's
// clock 70 minutes behind), with no iat and no expires_in.
func skewedReply(now func() time.Time) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		jsonReply(200, map[string]any{"access_token": testJWT(map[string]any{"exp": now().Add(-10 * time.Minute).Unix()}), "token_type": "Bearer"})(w, r)
	}
}

func TestAppJWTClockSkewRenewsEveryMinute(t *testing.T) {
	s, clock, src, c := appJWTFixture(t, "v1")
	s.SetReply(skewedReply(clock.Now))
	k := startedKeeper(t, src, clock, settings{Client: c, RefreshInterval: time.Hour, LoginTimeout: 5 * time.Second})
	eventually(t, 5*time.Second, "the token at start", func() bool { return k.Current() != nil })
	first := k.Current()
	clock.Advance(59 * time.Second)
	if n, kept := s.Tokens.Load(), k.Current() == first; n != 1 || !kept {
		t.Fatalf("in the first 59 s: %d fetches, first token kept %v; want 1 and true", n, kept)
	}
	clock.Advance(time.Second)
	eventually(t, 5*time.Second, "the renewal a minute after the fetch", func() bool { return s.Tokens.Load() == 2 && k.Current() != first })
	second := k.Current()

	// An upstream 401 still gets the usual check: the endpoint's own while
	// the token is young, a new token once it is older than 30 s.
	if out := k.Unauthorized(bg(), second); out.Verdict != verdictPassThrough {
		t.Errorf("a 401 for a young token: verdict %d, want PassThrough", out.Verdict)
	}
	clock.Advance(31 * time.Second)
	if out := k.Unauthorized(bg(), second); out.Verdict != verdictRetry || out.Credential == nil || out.Credential == second {
		t.Errorf("a 401 past the window: verdict %d, want Retry with a new token", out.Verdict)
	}
	if n := s.Tokens.Load(); n != 3 {
		t.Errorf("%d fetches, want 3", n)
	}
}

// Through a real Caddy: the admin API shows the renewal a minute after the
// fetch, and the log says clock skew.
func TestAppJWTClockSkewThroughCaddy(t *testing.T) {
	s := newSentinelStub(t)
	s.SetReply(skewedReply(time.Now))
	t.Setenv("LPAUTH_TEST_SKEW_SECRET", testAppSecret)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	loadCaddy(t, fmt.Sprintf(`{
	admin %s
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	%sskip_install_trust
	log {
		output file %s
	}
}
http://%s {
	lpauth {
		account_id %s
		client_id %s
		client_secret {env.LPAUTH_TEST_SKEW_SECRET}
		domain %s
		sentinel_api v1
	}
	respond 200
}
`, adminAddr, portsGlobal, logFile, proxyAddr, testAppAccount, testAppClient, s.Srv.URL))
	var st Status
	eventually(t, 10*time.Second, "the token at start in the admin API", func() bool {
		resp, err := http.Get("http://" + adminAddr + "/lpauth/sessions")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var all []Status
		if json.NewDecoder(resp.Body).Decode(&all) != nil || len(all) != 1 {
			return false
		}
		st = all[0]
		return st.LoggedIn
	})
	if d := st.NextRefresh.Sub(st.LoggedInAt); d < 59*time.Second || d > 61*time.Second {
		t.Errorf("next renewal %s after the fetch, want 60 s (status %+v)", d, st)
	}
	if n := s.Tokens.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
	eventually(t, 5*time.Second, "a warning naming clock skew", func() bool {
		logs, _ := os.ReadFile(logFile)
		return bytes.Contains(logs, []byte(`"level":"warn"`)) && bytes.Contains(logs, []byte("clock skew"))
	})
	unloadCaddy(t)
}
