// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// What the end-to-end tests share: the built binary, running it, the
// emulator they point it at, and the HTTP checks of what comes back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
	"github.com/lpauth/caddy-lpauth/internal/testkit"
)

// TestMain takes a relative LPAUTH_CADDY_BIN as relative to the repository
// root, where ./xcaddy.sh writes ./caddy: the tests run in e2e/.
func TestMain(m *testing.M) {
	if bin := os.Getenv(caddyproc.BinaryEnv); bin != "" && !filepath.IsAbs(bin) {
		if root, err := caddyproc.RepoRoot(); err == nil {
			os.Setenv(caddyproc.BinaryEnv, filepath.Join(root, bin))
		}
	}
	os.Exit(m.Run())
}

// e2eTier skips the test with -short, which runs the unit tier only. Every
// test here starts with it, before it sets anything up (a redis-server, a
// 300 MB body); builtCaddy checks too.
func e2eTier(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e tier (the ./xcaddy.sh binary as a child process): run without -short")
	}
}

// builtCaddy is the binary the end-to-end tests run, built once per test
// run with ./xcaddy.sh. Set LPAUTH_CADDY_BIN to test an existing binary
// instead. With -short the test skips (e2eTier).
func builtCaddy(t *testing.T) string {
	t.Helper()
	e2eTier(t)
	bin, err := caddyproc.Built()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := caddyproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// caddyProc is a running caddy process and what it printed.
type caddyProc struct {
	cmd    *exec.Cmd
	out    *caddyproc.Output
	exited chan struct{} // closed once the process has exited, err set
	err    error
	proc   *caddyproc.Proc
}

// caddyEnv is the process environment plus the given settings; it isolates
// caddy's config and data directories in the test's temp dir.
func caddyEnv(t *testing.T, kv ...string) []string {
	return caddyproc.Env(t.TempDir(), kv...)
}

func startCaddy(t *testing.T, env []string, waitFor string, args ...string) *caddyProc {
	t.Helper()
	p, err := launchCaddy(t, builtCaddy(t), env, waitFor, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// launchCaddy starts caddy and waits until it listens on waitFor. It does
// not end the test, so it may run on a goroutine of its own; the process is
// killed, and what it printed shown on failure, when the test ends.
func launchCaddy(t *testing.T, bin string, env []string, waitFor string, args ...string) (*caddyProc, error) {
	return adoptCaddy(t, bin, caddyproc.Options{Args: args, Env: env, WaitFor: waitFor})
}

// launchCaddyfile is launchCaddy for `caddy run` on a Caddyfile's text,
// with kv added to the environment.
func launchCaddyfile(t *testing.T, bin, caddyfile, waitFor string, kv ...string) (*caddyProc, error) {
	home := t.TempDir()
	return adoptCaddy(t, bin, caddyproc.Options{Caddyfile: caddyfile, Home: home, Env: caddyproc.Env(home, kv...), WaitFor: waitFor})
}

// startCaddyfile is startCaddy for `caddy run` on a Caddyfile's text.
func startCaddyfile(t *testing.T, caddyfile, waitFor string, kv ...string) *caddyProc {
	t.Helper()
	p, err := launchCaddyfile(t, builtCaddy(t), caddyfile, waitFor, kv...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// adoptCaddy launches caddy and ties the process to the test.
func adoptCaddy(t *testing.T, bin string, o caddyproc.Options) (*caddyProc, error) {
	proc, err := caddyproc.Launch(bin, o)
	if err != nil {
		return nil, err
	}
	p := &caddyProc{cmd: proc.Cmd, out: proc.Out, exited: make(chan struct{}), proc: proc}
	go func() { <-proc.Done(); p.err = proc.Err(); close(p.exited) }()
	t.Cleanup(func() {
		proc.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("caddy %v printed:\n%s", proc.Cmd.Args[1:], p.out.String())
		}
	})
	return p, nil
}

// stop sends SIGINT, as Ctrl-C does, and waits for a clean exit.
func (p *caddyProc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	if err := p.proc.Stop(within); err != nil {
		t.Fatal(err)
	}
}

// emulator starts a CC emulator over real HTTP on loopback.
func emulator(t testing.TB, cfg ccemu.Config) (*ccemu.Emulator, *httptest.Server) {
	t.Helper()
	emu := ccemu.New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return emu, srv
}

// dataPath is a path of the emulator's data API, which echoes the request.
func dataPath(rest string) string { return "/api/account/" + ccemu.DefaultAccountID + "/" + rest }

// eventually, hostport and randomBody are the shared test kit's
// (internal/testkit).
var (
	eventually = testkit.Eventually
	hostport   = testkit.Hostport
	randomBody = testkit.RandomBody
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

// echoReply is the part of the emulator's data API answer (its echo of the
// request the upstream got) these tests read.
type echoReply struct {
	Path              string `json:"path"`
	BodyLength        int64  `json:"body_length"`
	BodySHA256        string `json:"body_sha256"`
	AuthorizationSent bool   `json:"authorization_present"`
	BearerFingerprint string `json:"bearer_fingerprint"`
	CredentialKind    string `json:"credential_kind"`
}

// readyReport is the part of lpauth_ready's answer these tests read.
type readyReport struct {
	Ready      bool `json:"ready"`
	Identities []struct {
		Mode         string    `json:"mode"`
		State        string    `json:"state"`
		BackoffUntil time.Time `json:"backoff_until"`
	} `json:"identities"`
}

// errAltered says the upstream's echo does not match the body sent.
var errAltered = errors.New("body altered")

// postBody POSTs body (sum its SHA-256) to url and checks the answer: 200,
// and the emulator's echo showing the body arrived whole. It returns the
// status (0 without a whole answer) and what was wrong; a 200 whose echo does
// not match is errAltered. It does not end the test, so it may run on
// goroutines.
func postBody(client *http.Client, url string, body []byte, sum string) (int, error) {
	resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("%s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode, fmt.Errorf("%s: status %d: %s", url, resp.StatusCode, data)
	}
	var e echoReply
	if err := json.Unmarshal(data, &e); err != nil {
		return 200, fmt.Errorf("%s: %w: not the emulator's echo: %q", url, errAltered, data)
	}
	if e.BodySHA256 != sum || e.BodyLength != int64(len(body)) {
		return 200, fmt.Errorf("%s: %w: upstream got %d bytes sha %s, sent %d sha %s", url, errAltered, e.BodyLength, e.BodySHA256, len(body), sum)
	}
	return 200, nil
}

func getJSON(t *testing.T, method, url string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, data)
		}
	}
	return resp.StatusCode
}

// getStatus sends a GET and returns the status (0 for a transport error)
// and the headers.
func getStatus(t *testing.T, url string) (int, http.Header) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// clusterProxy is one instance of a cluster: its own port, the shared
// storage in the global options, lpauth in cluster mode.
func clusterProxy(port int, storage string, emu *httptest.Server) caddyproc.Proxy {
	return caddyproc.Proxy{
		Global:   storage,
		Addr:     caddyproc.Addr(port),
		CSDS:     emu.URL,
		Password: "{env.LP_PASSWORD}",
		Lpauth:   "login_timeout 5s\n\t\tstorage",
		Upstream: emu.Listener.Addr().String(),
	}
}

// appJWTClusterCaddyfile is one instance of an AppJWT cluster: its own
// port, the shared storage in the global options, lpauth holding the
// emulator's Sentinel client in cluster mode.
func appJWTClusterCaddyfile(port int, storage string, emu *httptest.Server) string {
	p := clusterProxy(port, storage, emu)
	p.ClientSecret = "{env.LP_CLIENT_SECRET}"
	return p.Caddyfile()
}

type clusterInstance struct {
	proc *caddyProc
	url  string
}

// launchCluster starts n instances at once, each on a free port with the
// Caddyfile caddyfile(port) and kv added to its environment.
func launchCluster(t *testing.T, n int, caddyfile func(port int) string, kv ...string) []*clusterInstance {
	t.Helper()
	bin := builtCaddy(t)
	out := make([]*clusterInstance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range out {
		port := freePort(t)
		addr := caddyproc.Addr(port)
		wg.Go(func() {
			p, err := launchCaddyfile(t, bin, caddyfile(port), addr, kv...)
			out[i], errs[i] = &clusterInstance{proc: p, url: "http://" + addr}, err
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
				if _, err := postBody(httpClient, in.url+dataPath(fmt.Sprintf("c/%d", i)), body, sum); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
}

// steadyGets sends GETs through every instance from per clients each, back
// to back, for d, and counts the answers by status per instance.
func steadyGets(t *testing.T, insts []*clusterInstance, per int, d time.Duration) []map[int]int {
	t.Helper()
	counts := make([]map[int]int, len(insts))
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i, in := range insts {
		counts[i] = map[int]int{}
		for w := range per {
			wg.Go(func() {
				for j := 0; time.Now().Before(end); j++ {
					status, _ := getStatus(t, in.url+dataPath(fmt.Sprintf("steady/%d/%d", w, j)))
					mu.Lock()
					counts[i][status]++
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // a client's pace
				}
			})
		}
	}
	wg.Wait()
	return counts
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
	addr := caddyproc.Addr(port)
	if err := caddyproc.WaitPort(addr, 5*time.Second); err != nil {
		t.Fatal("redis-server: ", err)
	}
	return addr
}

// dialUMS opens a messaging WebSocket at url, as a bot with no token does.
func dialUMS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: status %d: %v", url, status, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// umsGetClock does one GetClock round trip on c.
func umsGetClock(t *testing.T, c *websocket.Conn, id int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"kind":"req","id":"%d","type":"GetClock"}`, id)); err != nil {
		t.Fatalf("GetClock %d: %v", id, err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || !bytes.Contains(msg, []byte(`"code":200`)) || !bytes.Contains(msg, []byte("GetClock$Response")) {
		t.Fatalf("GetClock %d answered %s (%v)", id, msg, err)
	}
}
