// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// Three instances share one AppJWT through file_system storage: one fetch
// at start, one per renewal, the others adopt.
func TestClusterAppJWTOneFetchAtStartAndPerRenewal(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	emu, srv := emulator(t, ccemu.Config{Clock: clock, TokenLifetime: 10 * time.Minute})
	dir := t.TempDir()
	cfg := appJWTConfig{AccountID: ccemu.DefaultAccountID, ClientID: ccemu.DefaultClientID, ClientSecret: ccemu.DefaultClientSecret, Now: clock.Now}
	ks := make([]*keeper, 3)
	for i := range ks {
		ks[i] = newKeeper(newAppJWTSource(cfg), clock, true)
		store := clusterStore(&certmagic.FileStorage{Path: dir}, cfg.AccountID, []string{cfg.AccountID, "app_jwt", cfg.ClientID, "v2", srv.URL, ""}, cfg.ClientSecret, nil)
		use, err := ks[i].Attach("test", settings{Client: testClient(t, srv), RefreshInterval: defaultRefreshInterval, LoginTimeout: 5 * time.Second, Store: store}, nil)
		if err != nil {
			t.Fatal(err)
		}
		use.Start()
		t.Cleanup(func() { _ = ks[i].Close() })
	}
	var wg sync.WaitGroup
	for _, k := range ks {
		for range 10 {
			wg.Go(func() {
				if _, err := k.Get(bg()); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if n := emu.Counters().TokenRequests; n != 1 {
		t.Fatalf("%d token fetches for 3 instances starting, want 1", n)
	}
	first := ks[0].Current().Token
	for _, k := range ks {
		if k.Current().Token != first {
			t.Fatal("instances hold different tokens")
		}
	}
	// At 80 % of the lifetime every instance's renewal is due: one fetches,
	// the others adopt what it stored.
	clock.Advance(8 * time.Minute)
	eventually(t, 10*time.Second, "every instance to hold the renewed token", func() bool {
		for _, k := range ks {
			if c := k.Current(); c == nil || c.Token == first || c.Token != ks[0].Current().Token {
				return false
			}
		}
		return true
	})
	if n := emu.Counters().TokenRequests; n != 2 {
		t.Fatalf("%d token fetches after one renewal on 3 instances, want 2", n)
	}
}
