// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package rotation drives a password rotation through a running Caddy the
// way an operator does it: steady traffic (POSTs with bodies) through
// lpauth; the CC user's password changed at CC (the emulator's control
// API); the new password written to the file lpauth reads it from
// (`password {file.…}`); `caddy reload --force`. Several times. It reports
// every failed request, whether each body arrived intact, the logins and
// logouts CC saw, and the latency of requests during each rotation next to
// the steady ones. The end-to-end test and bench/rotation run it.
package rotation

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// Options shape one run.
type Options struct {
	Bin         string        // the Caddy binary with lpauth and ccemu
	Rotations   int           // how many times the password changes
	Clients     int           // concurrent clients sending POSTs back to back
	BodySize    int           // bytes per POST body
	Delay       time.Duration // how long the emulator holds each request, so some are in flight at every reload
	Settle      time.Duration // steady traffic before the first rotation and after each
	EndSessions bool          // the password change ends the user's live sessions at CC
	Log         func(format string, args ...any)
}

// Result is what one run saw.
type Result struct {
	Requests int
	Failed   int      // non-200 answers, transport errors and altered bodies
	Failures []string // the first few, described
	Logins   int64    // successful logins CC saw after the first one
	Logouts  int64
	Refused  int64 // logins CC refused (a wrong, old password)
	// Unauthorized counts the data calls CC answered 401: a session
	// logged out while requests still held it.
	Unauthorized int64
	SteadyP99    time.Duration
	// Worst is the worst latency of a request that overlapped a rotation
	// (from the password change to 1 s after the reload returned), one per
	// rotation.
	Worst   []time.Duration
	Reloads []time.Duration // how long each `caddy reload --force` took
}

type sample struct {
	start, end time.Time
}

// Run does one run. Everything listens on 127.0.0.1.
func Run(o Options) (Result, error) {
	var res Result
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	emu := ccemu.New(ccemu.Config{})
	mux := http.NewServeMux()
	mux.Handle("/_ccemu/", emu.ControlHandler("/_ccemu"))
	mux.Handle("/", emu)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	dir, err := os.MkdirTemp("", "lpauth-rotation-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	pwFile := filepath.Join(dir, "lp_password")
	if err := os.WriteFile(pwFile, []byte(ccemu.DefaultPassword+"\n"), 0o600); err != nil {
		return res, err
	}
	admin, err := caddyproc.FreePort()
	if err != nil {
		return res, err
	}
	port, err := caddyproc.FreePort()
	if err != nil {
		return res, err
	}
	addr := caddyproc.Addr(port)
	caddyfile := caddyproc.Proxy{
		Admin:    caddyproc.Addr(admin),
		Addr:     addr,
		CSDS:     srv.URL,
		Password: "{file." + pwFile + "}",
		Lpauth:   "login_timeout 5s",
		Upstream: srv.Listener.Addr().String(),
	}.Caddyfile()
	cfgFile := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgFile, []byte(caddyfile), 0o600); err != nil {
		return res, err
	}
	proc, err := caddyproc.Launch(o.Bin, caddyproc.Options{
		Args: []string{"run", "--config", cfgFile, "--adapter", "caddyfile"}, Home: dir, WaitFor: addr,
	})
	if err != nil {
		return res, err
	}
	defer func() { _ = proc.Stop(10 * time.Second) }()
	// Logged in as the config starts, before any request.
	if err := waitFor(5*time.Second, func() bool { return emu.Counters().Logins == 1 }); err != nil {
		return res, fmt.Errorf("no login at start: %w\n%s", err, proc.Out.Tail(30))
	}
	base := emu.Counters()

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: o.Clients}}
	target := fmt.Sprintf("http://%s/api/account/%s/rotation?delay=%s", addr, ccemu.DefaultAccountID, o.Delay)
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		samples  []sample
		requests int
	)
	fail := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if len(res.Failures) < 10 {
			res.Failures = append(res.Failures, s)
		}
	}
	for range o.Clients {
		wg.Go(func() {
			body := make([]byte, o.BodySize)
			for !stop.Load() {
				_, _ = rand.Read(body)
				sum := sha256.Sum256(body)
				start := time.Now()
				status, reply, err := post(client, target, body)
				end := time.Now()
				mu.Lock()
				requests++
				samples = append(samples, sample{start, end})
				mu.Unlock()
				switch {
				case err != nil:
					fail(fmt.Sprintf("%s: %v", start.Format("15:04:05.000"), err))
				case status != http.StatusOK:
					fail(fmt.Sprintf("%s: status %d: %.200s", start.Format("15:04:05.000"), status, reply))
				default:
					var echo struct {
						SHA string `json:"body_sha256"`
						N   int    `json:"body_length"`
					}
					if json.Unmarshal(reply, &echo) != nil || echo.SHA != hex.EncodeToString(sum[:]) || echo.N != len(body) {
						fail(fmt.Sprintf("%s: body altered on the way: %.200s", start.Format("15:04:05.000"), reply))
					}
				}
			}
		})
	}

	type window struct{ from, to time.Time }
	var windows []window
	time.Sleep(o.Settle)
	for i := range o.Rotations {
		password := fmt.Sprintf("rotated-%d-%s", i+1, hex.EncodeToString(randomBytes(6)))
		from := time.Now()
		if err := setPassword(srv.URL, password, o.EndSessions); err != nil {
			stop.Store(true)
			wg.Wait()
			return res, err
		}
		if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
			return res, err
		}
		start := time.Now()
		out, err := exec.Command(o.Bin, "reload", "--force", "--config", cfgFile, "--adapter", "caddyfile",
			"--address", caddyproc.Addr(admin)).CombinedOutput()
		took := time.Since(start)
		if err != nil {
			stop.Store(true)
			wg.Wait()
			return res, fmt.Errorf("caddy reload --force: %v: %s", err, out)
		}
		res.Reloads = append(res.Reloads, took)
		windows = append(windows, window{from, time.Now().Add(time.Second)})
		o.Log("rotation %d: reload took %s", i+1, took.Round(time.Millisecond))
		time.Sleep(o.Settle)
	}
	stop.Store(true)
	wg.Wait()

	// Each old session is logged out once its requests have finished.
	_ = waitFor(40*time.Second, func() bool { return emu.Counters().Logouts-base.Logouts >= int64(o.Rotations) })
	end := emu.Counters()
	res.Requests = requests
	res.Logins = end.Logins - base.Logins
	res.Logouts = end.Logouts - base.Logouts
	res.Refused = end.LoginsRefused - base.LoginsRefused
	res.Unauthorized = end.UnauthorizedDataCalls - base.UnauthorizedDataCalls

	var steady []time.Duration
	res.Worst = make([]time.Duration, len(windows))
	for _, s := range samples {
		in := false
		for i, w := range windows {
			if s.start.Before(w.to) && s.end.After(w.from) {
				in = true
				res.Worst[i] = max(res.Worst[i], s.end.Sub(s.start))
			}
		}
		if !in {
			steady = append(steady, s.end.Sub(s.start))
		}
	}
	if len(steady) > 0 {
		slices.Sort(steady)
		res.SteadyP99 = steady[(len(steady)*99+99)/100-1]
	}
	return res, nil
}

func post(client *http.Client, target string, body []byte) (int, []byte, error) {
	resp, err := client.Post(target, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	return resp.StatusCode, reply, err
}

// setPassword changes the demo user's password at the emulator, through its
// control API.
func setPassword(base, password string, endSessions bool) error {
	q := url.Values{"user": {ccemu.DefaultUsername}, "end_sessions": {fmt.Sprint(endSessions)}}
	form := url.Values{"password": {password}} // never in the URL
	resp, err := http.Post(base+"/_ccemu/set-password?"+q.Encode(), "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("set-password: %d %s", resp.StatusCode, b)
	}
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func waitFor(within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
