// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

// Tests of the Domain API resolver as the login host uses it; lpdomain's
// use is in upstreams_test.go.

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
)

// cachedAnswer is what the resolver holds for c's account and service.
func cachedAnswer(c *Client, service string) domainAnswer {
	q := DomainLookup{Client: c, Account: ccemu.DefaultAccountID, Service: service}
	domainMu.RLock()
	defer domainMu.RUnlock()
	return domainAnswers[q.key()]
}

// clockedClient is a client of srv's Domain API on the given clock.
func clockedClient(t *testing.T, srv *httptest.Server, clock Clock) *Client {
	t.Helper()
	c := testClient(t, srv)
	c.clock = clock
	return c
}

func TestDomainLoginHostSharedStaleAndKeptOnFailure(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	clock := newFakeClock()
	want := srv.URL
	base := func(c *Client) string {
		t.Helper()
		got, err := c.LoginBaseURL(bg(), ccemu.DefaultAccountID)
		if err != nil || got != want {
			t.Fatalf("login host %q, %v; want %s", got, err, want)
		}
		return got
	}
	lookups := func() int64 { return emu.Counters().DomainLookups }

	// Two clients (two configs, or a reload) share one answer.
	base(clockedClient(t, srv, clock))
	c := clockedClient(t, srv, clock)
	base(c)
	if n := lookups(); n != 1 {
		t.Fatalf("%d lookups for two clients of one Domain API, want 1", n)
	}

	// Stale: answered from the cache (the old host: it did not wait for
	// the lookup) while one background lookup renews.
	moved := testkit.NewCountingListener(t, emu)
	emu.SetServiceHost("agentVep", hostport(moved.Srv))
	clock.Advance(DefaultDomainRefresh)
	base(c)
	eventually(t, 5*time.Second, "the background renewal", func() bool { return lookups() == 2 })
	want = moved.Srv.URL
	eventually(t, 5*time.Second, "the renewed host", func() bool {
		got, _ := c.LoginBaseURL(bg(), ccemu.DefaultAccountID)
		return got == want
	})
	if n := lookups(); n != 2 {
		t.Fatalf("%d lookups, want 2: the stale answers started one renewal", n)
	}

	// The Domain API fails: the last good host is kept, and the failure is
	// not retried within the retry delay.
	emu.FailNextDomainLookups(100, 500)
	clock.Advance(DefaultDomainRefresh)
	base(c)
	eventually(t, 5*time.Second, "the failed renewal", func() bool { return cachedAnswer(c, loginService).err != nil })
	for range 10 {
		base(c)
	}
	if n := lookups(); n != 3 {
		t.Fatalf("%d lookups, want 3: a failure was retried within the retry delay", n)
	}
	clock.Advance(DomainRetryDelay)
	base(c)
	eventually(t, 5*time.Second, "the retry after the delay", func() bool { return lookups() == 4 })
}

func TestDomainForgetRechecksAndKeepsHostOnFailure(t *testing.T) {
	t.Parallel()
	emu, srv := emulator(t, ccemu.Config{})
	c := clockedClient(t, srv, newFakeClock())
	if got, err := c.LoginBaseURL(bg(), ccemu.DefaultAccountID); err != nil || got != srv.URL {
		t.Fatalf("login host %q, %v", got, err)
	}

	// After a connection error the next login waits for a fresh answer.
	moved := testkit.NewCountingListener(t, emu)
	emu.SetServiceHost("agentVep", hostport(moved.Srv))
	c.ForgetDomain(ccemu.DefaultAccountID)
	if got, err := c.LoginBaseURL(bg(), ccemu.DefaultAccountID); err != nil || got != moved.Srv.URL {
		t.Fatalf("after ForgetDomain: %q, %v; want the moved host %s", got, err, moved.Srv.URL)
	}

	// If the Domain API fails then, the last good host is still used.
	emu.FailNextDomainLookups(100, 500)
	c.ForgetDomain(ccemu.DefaultAccountID)
	if got, err := c.LoginBaseURL(bg(), ccemu.DefaultAccountID); err != nil || got != moved.Srv.URL {
		t.Fatalf("ForgetDomain and a failing Domain API: %q, %v; want the last good host", got, err)
	}
	if n := emu.Counters().DomainLookups; n != 3 {
		t.Fatalf("%d lookups, want 3 (one per recheck)", n)
	}
}
