// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// Two instances of the built binary share a session through a real
// redis-server that this test stops and starts again on the same port.

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	lpauth "github.com/lpauth/caddy-lpauth"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// restartableRedis is a redis-server of this test's own on a fixed port,
// without persistence: it comes back empty, as a Redis that lost its data.
type restartableRedis struct {
	port int
	cmd  *exec.Cmd
}

func (r *restartableRedis) start(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("this test needs redis-server (apt-get install redis-server)")
	}
	r.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(r.port), "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := caddyproc.WaitPort(caddyproc.Addr(r.port), 5*time.Second); err != nil {
		t.Fatal("redis-server: ", err)
	}
}

func (r *restartableRedis) stop() {
	if r.cmd != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// fingerprintVia is the fingerprint of the bearer an instance sends
// upstream now, or "" if the request did not succeed.
func fingerprintVia(t *testing.T, in *clusterInstance) string {
	var e echoReply
	if getJSON(t, "GET", in.url+dataPath("whose"), &e) != 200 {
		return ""
	}
	return e.BearerFingerprint
}

// The emulator lets the user hold several sessions here: under CC's rule
// (one session per user) the solo logins end each other's sessions, and no
// solo session would be left alive for the logout to matter. That case is
// TestE2EClusterRedisOutageUnderOneSessionPerUser.
func TestE2EClusterSoloSessionsLoggedOutAfterRedisOutage(t *testing.T) {
	e2eTier(t)
	redis := &restartableRedis{port: freePort(t)}
	redis.start(t)
	t.Cleanup(redis.stop)
	emu, srv := emulator(t, ccemu.Config{MultipleSessions: true})
	storage := fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix lpauth-orphans\n\t}", caddyproc.Addr(redis.port))
	bin := builtCaddy(t)
	insts := make([]*clusterInstance, 2)
	for i := range insts {
		port := freePort(t)
		addr := caddyproc.Addr(port)
		cfg := caddyproc.Proxy{Global: storage, Addr: addr, CSDS: srv.URL, Password: "{env.LP_PASSWORD}",
			Lpauth: "login_timeout 5s\n\t\trefresh_interval 1s\n\t\tstorage", Upstream: srv.Listener.Addr().String()}
		p, err := launchCaddyfile(t, bin, cfg.Caddyfile(), addr, "LP_PASSWORD="+ccemu.DefaultPassword)
		if err != nil {
			t.Fatal(err)
		}
		insts[i] = &clusterInstance{proc: p, url: "http://" + addr}
	}
	oneSession := func() bool {
		a, b := fingerprintVia(t, insts[0]), fingerprintVia(t, insts[1])
		return a != "" && a == b
	}
	if !oneSession() || emu.Counters().Logins != 1 {
		t.Fatalf("before the outage: %+v, want one shared session", emu.Counters())
	}

	// Redis goes away and CC ends the session: each instance logs in
	// alone and serves again.
	redis.stop()
	emu.ExpireSessions()
	eventually(t, 20*time.Second, "each instance to serve with a session of its own", func() bool {
		a, b := fingerprintVia(t, insts[0]), fingerprintVia(t, insts[1])
		return a != "" && b != "" && a != b && emu.Counters().LiveSessions == 2
	})
	if c := emu.Counters(); c.Logins != 3 {
		t.Fatalf("during the outage: %+v, want 3 logins in all (one solo login per instance)", c)
	}

	// Redis is back, empty: the refreshes bring the instances to one
	// stored session, and the other solo session is logged out.
	redis.start(t)
	eventually(t, 20*time.Second, "both instances to use one session, the other logged out", func() bool {
		c := emu.Counters()
		return oneSession() && c.LiveSessions == 1 && c.Logouts == 1
	})
	// Three more refreshes of the shared session (the cluster refreshes it
	// once per refresh_interval, 1s): nothing else may change.
	refreshes := emu.Counters().Refreshes
	eventually(t, 10*time.Second, "three more refreshes", func() bool { return emu.Counters().Refreshes >= refreshes+3 })
	if c := emu.Counters(); !oneSession() || c.LiveSessions != 1 || c.Logouts != 1 || c.Logins != 3 {
		t.Fatalf("after the outage: %+v; want 1 live session, 1 logout (the solo session not stored), 3 logins", c)
	}
}

// Three members share a session through Redis; Redis goes away for 20 s
// under traffic and CC ends the session. Each member logs in alone, their
// solo logins end each other's sessions (one session per user), and the
// short-lived rule bounds the fight: at most 3 logins per member. When Redis
// is back, every member serves 200 within one refresh_interval plus one
// login (plus one storage read of a member in the conflict wait), on one
// session.
func TestE2EClusterRedisOutageUnderOneSessionPerUser(t *testing.T) {
	e2eTier(t)
	redis := &restartableRedis{port: freePort(t)}
	redis.start(t)
	t.Cleanup(redis.stop)
	emu, srv := emulator(t, ccemu.Config{})
	const refresh, loginTimeout = time.Second, 5 * time.Second
	storage := fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix lpauth-outage\n\t}", caddyproc.Addr(redis.port))
	insts := launchCluster(t, 3, func(port int) string {
		return caddyproc.Proxy{Global: storage, Addr: caddyproc.Addr(port), CSDS: srv.URL, Password: "{env.LP_PASSWORD}",
			Lpauth:   fmt.Sprintf("login_timeout %s\n\t\trefresh_interval %s\n\t\tstorage", loginTimeout, refresh),
			Upstream: srv.Listener.Addr().String()}.Caddyfile()
	}, "LP_PASSWORD="+ccemu.DefaultPassword)
	eventually(t, 10*time.Second, "one shared session", func() bool {
		f := fingerprintVia(t, insts[0])
		return f != "" && f == fingerprintVia(t, insts[1]) && f == fingerprintVia(t, insts[2])
	})
	logins := func(in *clusterInstance) int { return strings.Count(in.proc.out.String(), `"logged in to CC"`) }
	before := make([]int, len(insts))
	for i, in := range insts {
		before[i] = logins(in)
	}

	redis.stop()
	emu.ExpireSessions()
	steadyGets(t, insts, 2, 20*time.Second)
	during := make([]int, len(insts))
	for i, in := range insts {
		during[i] = logins(in) - before[i]
		if during[i] > 3 {
			t.Errorf("instance %d logged in %d times while the storage was down, want at most 3", i+1, during[i])
		}
	}

	redis.start(t)
	back := time.Now()
	served := make([]time.Duration, len(insts))
	var wg sync.WaitGroup
	for i, in := range insts {
		wg.Go(func() {
			for time.Since(back) < 30*time.Second {
				if status, _ := getStatus(t, in.url+dataPath("back")); status == 200 {
					served[i] = time.Since(back)
					return
				}
				time.Sleep(50 * time.Millisecond) // the poll interval
			}
		})
	}
	wg.Wait()
	c := emu.Counters()
	t.Logf("logins per instance while the storage was down: %v; served 200 again after %v; %d logins, %d ended by a login in all",
		during, served, c.Logins, c.SessionsEndedByLogin)
	bound := refresh + loginTimeout + lpauth.ConflictPeekEvery
	for i, d := range served {
		if d == 0 || d > bound {
			t.Errorf("instance %d served 200 %v after the storage came back, want within %v", i+1, d, bound)
		}
	}
	eventually(t, bound, "one shared session after the outage", func() bool {
		f := fingerprintVia(t, insts[0])
		return f != "" && f == fingerprintVia(t, insts[1]) && f == fingerprintVia(t, insts[2])
	})
}
