// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

// End-to-end tests of the binary ./xcaddy.sh builds, run with
// example.Caddyfile and demo.env exactly as the README tells users to.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

var (
	buildOnce sync.Once
	caddyBin  string
	buildErr  error
	buildLog  []byte
)

// builtCaddy builds the binary once per test run with ./xcaddy.sh. Set
// LPAUTH_CADDY_BIN to test an existing binary instead.
func builtCaddy(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Fatal("the end-to-end tests do not run with -short")
	}
	buildOnce.Do(func() {
		if bin := os.Getenv("LPAUTH_CADDY_BIN"); bin != "" {
			caddyBin = bin
			return
		}
		dir, err := os.MkdirTemp("", "lpauth-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		caddyBin = filepath.Join(dir, "caddy")
		cmd := exec.Command("./xcaddy.sh", caddyBin)
		cmd.Env = append(os.Environ(), "LPAUTH_WITH_REDIS=1") // the cluster tests use Redis storage
		buildLog, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("./xcaddy.sh: %v\n%s", buildErr, buildLog)
	}
	return caddyBin
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// caddyProc is a running caddy process and what it printed.
type caddyProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed once the process has exited, err set
	err    error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// caddyEnv is the process environment plus the given settings; it isolates
// caddy's config and data directories in the test's temp dir.
func caddyEnv(t *testing.T, kv ...string) []string {
	home := t.TempDir()
	env := append(os.Environ(), "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home, "HOME="+home)
	return append(env, kv...)
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
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &caddyProc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("caddy %v printed:\n%s", args, out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", waitFor, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("caddy %v exited (%v) before listening on %s:\n%s", args, p.err, waitFor, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("caddy %v not listening on %s within 15s", args, waitFor)
		}
	}
}

// stop sends SIGINT, as Ctrl-C does, and waits for a clean exit.
func (p *caddyProc) stop(t *testing.T, within time.Duration) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("caddy exited with %v", p.err)
		}
	case <-time.After(within):
		t.Fatalf("caddy did not stop within %s", within)
	}
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

var hexSecret = regexp.MustCompile(`[0-9a-f]{64}`)

// The quick start as a user runs it: one process serves the emulator and
// the proxy.
func TestE2EQuickStart(t *testing.T) {
	admin, emuPort, proxyPort := freePort(t), freePort(t), freePort(t)
	env := caddyEnv(t,
		fmt.Sprintf("LP_ADMIN=localhost:%d", admin),
		fmt.Sprintf("LP_EMULATOR_ADDR=127.0.0.1:%d", emuPort),
		fmt.Sprintf("LP_PROXY_ADDR=127.0.0.1:%d", proxyPort),
		fmt.Sprintf("LP_CSDS=http://127.0.0.1:%d", emuPort),
		fmt.Sprintf("LP_UPSTREAM=http://127.0.0.1:%d", emuPort),
	)
	p := startCaddy(t, env, fmt.Sprintf("127.0.0.1:%d", proxyPort), "run", "--config", "example.Caddyfile", "--envfile", "demo.env")
	proxy := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	control := fmt.Sprintf("http://127.0.0.1:%d/_ccemu", emuPort)

	var echo echoReply
	if st := getJSON(t, "GET", proxy+dataPath("hello"), &echo); st != 200 || !echo.AuthorizationSent {
		t.Fatalf("quick-start request: %d %+v", st, echo)
	}
	// The per-service prefixes find their host through the Domain API.
	for _, prefix := range []string{"/msghist", "/acctcfg"} {
		if st := getJSON(t, "GET", proxy+prefix+dataPath("svc"), &echo); st != 200 || echo.Path != dataPath("svc") || !echo.AuthorizationSent {
			t.Fatalf("%s: %d %+v", prefix, st, echo)
		}
	}
	body, sum := randomBody(t, 200<<10)
	resp, err := httpClient.Post(proxy+dataPath("messages"), "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if e := (result{status: resp.StatusCode, body: data}).echo(t); e.BodySHA256 != sum {
		t.Fatal("POST body altered")
	}

	// Expire the session through the emulator's control API: the next
	// request still succeeds, after exactly one re-login.
	var expired map[string]int
	if st := getJSON(t, "POST", control+"/expire", &expired); st != 200 || expired["expired"] != 1 {
		t.Fatalf("expire: %d %v", st, expired)
	}
	if st := getJSON(t, "GET", proxy+dataPath("again"), &echo); st != 200 {
		t.Fatalf("after expiry: %d", st)
	}
	var counters ccemu.Counters
	getJSON(t, "GET", control+"/counters", &counters)
	if counters.Logins != 2 || counters.LoginAttempts != 2 {
		t.Fatalf("counters %+v; want 2 logins", counters)
	}

	// caddy reload with the same file keeps the session, and the emulator's
	// counters (its sessions live in a usage pool too).
	reload := exec.Command(builtCaddy(t), "reload", "--config", "example.Caddyfile", "--address", fmt.Sprintf("localhost:%d", admin))
	reload.Env = env
	if out, err := reload.CombinedOutput(); err != nil {
		t.Fatalf("caddy reload: %v\n%s", err, out)
	}
	if st := getJSON(t, "GET", proxy+dataPath("after-reload"), &echo); st != 200 {
		t.Fatalf("after reload: %d", st)
	}
	getJSON(t, "GET", control+"/counters", &counters)
	if counters.LoginAttempts != 2 {
		t.Fatalf("reload logged in again: %+v", counters)
	}

	p.stop(t, 10*time.Second)
	logs := p.out.String()
	if !strings.Contains(logs, "logged in to CC") {
		t.Fatalf("no login line in caddy's log:\n%s", logs)
	}
	if strings.Contains(logs, ccemu.DefaultPassword) || hexSecret.MatchString(logs) {
		t.Fatalf("a secret shows in caddy's log:\n%s", logs)
	}
}

// With the emulator in a process of its own, stopping the proxy must log
// its session out.
func TestE2EStopLogsOut(t *testing.T) {
	emuAdmin, emuPort := freePort(t), freePort(t)
	dir := t.TempDir()
	emuConfig := filepath.Join(dir, "emu.Caddyfile")
	if err := os.WriteFile(emuConfig, []byte(fmt.Sprintf("{\n\tadmin localhost:%d\n\tpersist_config off\n\tauto_https off\n}\nhttp://127.0.0.1:%d {\n\tccemu {\n\t\tcontrol_path /_ccemu\n\t}\n}\n", emuAdmin, emuPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	startCaddy(t, caddyEnv(t), fmt.Sprintf("127.0.0.1:%d", emuPort), "run", "--config", emuConfig)

	admin, unusedEmu, proxyPort := freePort(t), freePort(t), freePort(t)
	env := caddyEnv(t,
		fmt.Sprintf("LP_ADMIN=localhost:%d", admin),
		fmt.Sprintf("LP_EMULATOR_ADDR=127.0.0.1:%d", unusedEmu),
		fmt.Sprintf("LP_PROXY_ADDR=127.0.0.1:%d", proxyPort),
		fmt.Sprintf("LP_CSDS=http://127.0.0.1:%d", emuPort),
		fmt.Sprintf("LP_UPSTREAM=http://127.0.0.1:%d", emuPort),
	)
	p := startCaddy(t, env, fmt.Sprintf("127.0.0.1:%d", proxyPort), "run", "--config", "example.Caddyfile", "--envfile", "demo.env")
	if st := getJSON(t, "GET", fmt.Sprintf("http://127.0.0.1:%d", proxyPort)+dataPath("x"), nil); st != 200 {
		t.Fatalf("status %d", st)
	}
	p.stop(t, 10*time.Second)
	var counters ccemu.Counters
	getJSON(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/_ccemu/counters", emuPort), &counters)
	if counters.Logins != 1 || counters.Logouts != 1 || counters.LiveSessions != 0 {
		t.Fatalf("after stopping the proxy: %+v; want 1 login and 1 logout", counters)
	}
}

// caddy validate and caddy adapt provision the module without contacting
// CC, and the adapted JSON holds no secret given through {env.*}.
func TestE2EValidateContactsNothing(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	csds := "http://" + l.Addr().String()
	env := caddyEnv(t, "LP_CSDS="+csds, "LP_UPSTREAM="+csds, "LP_PASSWORD=s3cret-not-in-json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	validate := exec.CommandContext(ctx, builtCaddy(t), "validate", "--config", "example.Caddyfile", "--envfile", "demo.env")
	validate.Env = env
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	adapt := exec.CommandContext(ctx, builtCaddy(t), "adapt", "--config", "example.Caddyfile", "--envfile", "demo.env")
	adapt.Env = env
	out, err := adapt.Output()
	if err != nil {
		t.Fatalf("caddy adapt: %v", err)
	}
	if bytes.Contains(out, []byte("s3cret-not-in-json")) || !bytes.Contains(out, []byte("{env.LP_PASSWORD}")) {
		t.Fatalf("adapted JSON should hold the placeholder, not the password:\n%s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("caddy validate/adapt opened %d connections to the Domain API", n)
	}

	// A bad value fails validation and names the field.
	env = caddyEnv(t, "LP_CSDS=http://api.liveperson.net")
	validate = exec.CommandContext(ctx, builtCaddy(t), "validate", "--config", "example.Caddyfile", "--envfile", "demo.env")
	validate.Env = env
	out, err = validate.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("csds")) || !bytes.Contains(out, []byte("plain http is allowed only for loopback")) {
		t.Fatalf("caddy validate with a plain-http remote csds: %v\n%s", err, out)
	}
}
