// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// Three Caddy processes (the ./xcaddy.sh binary) share one CC session
// through file_system storage, and through Redis storage against a real
// redis-server on loopback.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// clusterCaddyfile is one instance of the cluster: its own port, the shared
// storage in the global options, lpauth in cluster mode.
func clusterCaddyfile(port int, storage string, emu *httptest.Server) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
	%s
}
http://127.0.0.1:%d {
	lpauth {
		account_id 12345678
		username demo-agent
		password {env.LP_PASSWORD}
		csds %s
		login_timeout 5s
		storage
	}
	reverse_proxy %s
}
`, storage, port, emu.URL, emu.Listener.Addr())
}

type clusterInstance struct {
	proc *caddyProc
	url  string
}

func startCluster(t *testing.T, n int, storage string, emu *httptest.Server) []*clusterInstance {
	t.Helper()
	dir := t.TempDir()
	bin := builtCaddy(t)
	out := make([]*clusterInstance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range out {
		port := freePort(t)
		cfg := filepath.Join(dir, fmt.Sprintf("caddy%d.Caddyfile", i))
		if err := os.WriteFile(cfg, []byte(clusterCaddyfile(port, storage, emu)), 0o600); err != nil {
			t.Fatal(err)
		}
		env := caddyEnv(t, "LP_PASSWORD="+ccemu.DefaultPassword)
		wg.Go(func() {
			p, err := launchCaddy(t, bin, env, fmt.Sprintf("127.0.0.1:%d", port), "run", "--config", cfg)
			out[i], errs[i] = &clusterInstance{proc: p, url: fmt.Sprintf("http://127.0.0.1:%d", port)}, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// burst sends per requests with distinct bodies to each instance at once
// and checks every answer and every body.
func burst(t *testing.T, insts []*clusterInstance, per int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, in := range insts {
		for i := range per {
			wg.Go(func() {
				body, sum := randomBody(t, 1000+i*131)
				resp, err := httpClient.Post(in.url+dataPath(fmt.Sprintf("c/%d", i)), "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("%s: status %d: %s", in.url, resp.StatusCode, data)
					return
				}
				if e := (result{status: 200, body: data}).echo(t); e.BodySHA256 != sum {
					t.Errorf("%s: body altered", in.url)
				}
			})
		}
	}
	wg.Wait()
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
	eventually(t, 5*time.Second, "the doomed login to start", func() bool { return emu.Counters().LoginAttempts == 3 })
	time.Sleep(200 * time.Millisecond)
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
	dir := t.TempDir()
	testCluster(t, fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", dir), 10*time.Second)
}

func TestE2EClusterRedis(t *testing.T) {
	addr := redisAddr(t)
	// A key prefix per run, so reruns against one server start clean.
	prefix := fmt.Sprintf("lpauth-test-%d", time.Now().UnixNano())
	testCluster(t, fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix %s\n\t}", addr, prefix), 5*time.Second)
}

// redisAddr returns the Redis server for the tests: LPAUTH_REDIS_ADDR (CI
// starts one), else a redis-server this test starts on a free loopback
// port. Without either the test fails: it must not pass by skipping.
func redisAddr(t *testing.T) string {
	t.Helper()
	if addr := os.Getenv("LPAUTH_REDIS_ADDR"); addr != "" {
		return addr
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("the Redis cluster test needs redis-server (apt-get install redis-server) or LPAUTH_REDIS_ADDR")
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(port), "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 5*time.Second, "redis-server to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr
}
