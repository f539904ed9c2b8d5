// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// Three Caddy processes (the ./xcaddy.sh binary) share one CC session
// through file_system storage, and through Redis storage against a real
// redis-server on loopback.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// clusterCaddyfile is one instance of the cluster: its own port, the shared
// storage in the global options, lpauth in cluster mode.
func clusterCaddyfile(port int, storage string, emu *httptest.Server) string {
	return clusterProxy(port, storage, emu).Caddyfile()
}

func startCluster(t *testing.T, n int, storage string, emu *httptest.Server) []*clusterInstance {
	t.Helper()
	return launchCluster(t, n, func(port int) string { return clusterCaddyfile(port, storage, emu) }, "LP_PASSWORD="+ccemu.DefaultPassword)
}

func testCluster(t *testing.T, storage string, staleLock time.Duration) {
	emu, srv := emulator(t, ccemu.Config{})
	// A slow login makes the three instances' first requests overlap it.
	emu.DelayNextLogins(1, 500*time.Millisecond)
	insts := startCluster(t, 3, storage, srv)

	burst(t, insts, 20)
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("3 instances starting under load logged in %d times, want 1", n)
	}

	emu.ExpireSessions()
	burst(t, insts, 20)
	if n := emu.Counters().LoginAttempts; n != 2 {
		t.Fatalf("%d logins in all after an expiry under load on 3 instances, want 2", n)
	}
	if n := emu.Counters().SessionsEndedByLogin; n != 0 {
		t.Fatalf("%d sessions ended by another member's login, want 0 (one session per user)", n)
	}

	// Kill an instance while it holds the lock during a (slow) login: the
	// others must get through once the storage declares the lock stale.
	emu.DelayNextLogins(1, 30*time.Second)
	emu.ExpireSessions()
	go func() {
		resp, err := http.Get(insts[0].url + dataPath("doomed"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	// An instance logs in only under the lock: once CC sees the login, the
	// lock is held.
	eventually(t, 5*time.Second, "the doomed login to start", func() bool { return emu.Counters().LoginAttempts == 3 })
	_ = insts[0].proc.cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	// Requests meanwhile may get 503 + Retry-After (each waits at most
	// login_timeout); what must not happen is a wedge past the stale timeout.
	for _, in := range insts[1:] {
		eventually(t, staleLock+5*time.Second, in.url+" to serve again after the lock holder died", func() bool {
			resp, err := httpClient.Get(in.url + dataPath("after-kill"))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == 200
		})
	}
	t.Logf("the survivors served again %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	burst(t, insts[1:], 5)
	if n := emu.Counters().Logins; n < 3 || n > 4 {
		t.Fatalf("%d successful logins in all, want 3 (4 at most, should both survivors break the dead lock at once)", n)
	}
}

func TestE2EClusterFileSystem(t *testing.T) {
	e2eTier(t)
	dir := t.TempDir()
	testCluster(t, fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", dir), 10*time.Second)
}

func TestE2EClusterRedis(t *testing.T) {
	e2eTier(t)
	addr := redisAddr(t)
	// A key prefix per run, so reruns against one server start clean.
	prefix := fmt.Sprintf("lpauth-test-%d", time.Now().UnixNano())
	testCluster(t, fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix %s\n\t}", addr, prefix), 5*time.Second)
}

// A cluster recovers from a CC expiry as fast as one instance: the
// instances that do not hold the storage lock adopt the session the holder
// stores as soon as it is there, instead of when their own Lock returns
// (both storages poll their locks about once a second). Three instances,
// the session ended server-side, 60 concurrent requests: all succeed with
// one login, and the slowest takes at most the login's own time (held
// 1.2 s by CC here) plus 500 ms; waiting out a lock poll would take 2 s.
func TestE2EClusterRecoversAsFastAsOneInstance(t *testing.T) {
	e2eTier(t)
	storages := map[string]func(t *testing.T) string{
		"file_system": func(t *testing.T) string {
			return fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", t.TempDir())
		},
		"redis": func(t *testing.T) string {
			return fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix lpauth-recovery-%d\n\t}", redisAddr(t), time.Now().UnixNano())
		},
	}
	for name, storage := range storages {
		t.Run(name, func(t *testing.T) {
			emu, srv := emulator(t, ccemu.Config{})
			insts := startCluster(t, 3, storage(t), srv)
			burst(t, insts, 5)
			const loginTime = 1200 * time.Millisecond // not a whole number of lock polls
			emu.DelayNextLogins(1, loginTime)
			base := emu.Counters()
			emu.ExpireSessions()
			slowest := timedBurst(t, insts, 20)
			c := emu.Counters()
			t.Logf("%s: the slowest of 60 requests after an expiry took %s (the login %s); %d login(s)", name, slowest.Round(time.Millisecond), loginTime, c.LoginAttempts-base.LoginAttempts)
			if n := c.LoginAttempts - base.LoginAttempts; n != 1 {
				t.Errorf("%d logins after the expiry, want 1 for the cluster", n)
			}
			if c.SessionsEndedByLogin != 0 {
				t.Errorf("%d sessions ended by another member's login", c.SessionsEndedByLogin)
			}
			if bound := loginTime + 500*time.Millisecond; slowest > bound {
				t.Errorf("the slowest request took %s, want at most %s", slowest, bound)
			}
		})
	}
}

// timedBurst sends per GETs to each instance at once, checks that every one
// succeeds, and returns the slowest one's time.
func timedBurst(t *testing.T, insts []*clusterInstance, per int) time.Duration {
	t.Helper()
	var mu sync.Mutex
	var slowest time.Duration
	var wg sync.WaitGroup
	for _, in := range insts {
		for i := range per {
			wg.Go(func() {
				start := time.Now()
				status, _ := getStatus(t, in.url+dataPath(fmt.Sprintf("timed/%d", i)))
				took := time.Since(start)
				if status != 200 {
					t.Errorf("%s: status %d after %s", in.url, status, took)
				}
				mu.Lock()
				slowest = max(slowest, took)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return slowest
}

// The same for AppJWTs: Sentinel revokes the cluster's token, one instance
// fetches a new one (held 1.2 s by Sentinel here), and the other instances
// adopt it as soon as it is stored: 60 concurrent requests all succeed with
// one fetch, the slowest within the fetch's own time plus 500 ms.
func TestE2EAppJWTClusterAdoptsRefetchedTokenAtOnce(t *testing.T) {
	e2eTier(t)
	// A token older than its window (half its 12 s lifetime) is taken as
	// revoked on a 401; its renewal, at 80 %, comes after the burst.
	const lifetime, window = 12 * time.Second, 6 * time.Second
	emu, srv := emulator(t, ccemu.Config{TokenLifetime: lifetime})
	storage := fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", t.TempDir())
	builtCaddy(t)
	insts := launchCluster(t, 3, func(port int) string { return appJWTClusterCaddyfile(port, storage, srv) },
		"LP_CLIENT_SECRET="+ccemu.DefaultClientSecret)
	eventually(t, 5*time.Second, "the cluster's token", func() bool { return emu.Counters().TokenRequestsOK == 1 })
	fetched := time.Now()
	burst(t, insts, 2)
	// Real time must pass: the token's age past its window is the point,
	// and the instances' clocks are the real one.
	time.Sleep(time.Until(fetched.Add(window + 500*time.Millisecond)))
	const fetchTime = 1200 * time.Millisecond
	emu.DelayNextTokens(1, fetchTime)
	emu.RevokeTokens()
	slowest := timedBurst(t, insts, 20)
	n := emu.Counters().TokenRequests - 1
	t.Logf("the slowest of 60 requests after a revocation took %s (the fetch %s); %d fetch(es)", slowest.Round(time.Millisecond), fetchTime, n)
	if n != 1 {
		t.Errorf("%d token fetches after the revocation, want 1 for the cluster", n)
	}
	if bound := fetchTime + 500*time.Millisecond; slowest > bound {
		t.Errorf("the slowest request took %s, want at most %s", slowest, bound)
	}
}
