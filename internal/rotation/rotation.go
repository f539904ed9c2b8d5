// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package rotation drives a password rotation through a running Caddy the
// way an operator does it: steady traffic (POSTs with bodies) through
// lpauth; the CC user's password changed at CC (the emulator's control
// API); the new password written to the file lpauth reads it from
// (`password {file.…}`); `caddy reload --force`. Several times. It reports
// every failed request, whether each body arrived intact, the logins and
// logouts CC saw, and the latency of requests during each rotation next to
// the steady ones. The end-to-end tests and bench/rotation run it; the
// cluster test uses its traffic (StartTraffic) and Reload on its own
// instances.
package rotation

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
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
	// Gap is how long the operator takes between changing the password at
	// CC and the reload (writing the file is part of the reload step).
	Gap time.Duration
	Log func(format string, args ...any)
}

// Result is what one run saw.
type Result struct {
	Requests int
	Failed   int      // non-200 answers, transport errors and altered bodies
	Failures []string // the first few of each status, described
	// FailedBy counts the failed requests by status: 0 for a transport
	// error, 200 for a body altered on the way.
	FailedBy map[int]int
	// FailedOutside counts failed requests that overlapped no rotation
	// window: failures a rotation cannot explain.
	FailedOutside int
	// FailedIn counts the failed requests that overlapped each rotation,
	// and Outage is, per rotation, how long after the password change the
	// last of them ended (0: none failed).
	FailedIn []int
	Outage   []time.Duration
	// Replayed counts requests the client sent again, on a new
	// connection, because the server closed a kept-alive one before
	// answering: Caddy closes idle connections at a reload, and a client
	// may replay a request that carries an Idempotency-Key, as these do.
	Replayed int
	Logins   int64 // successful logins CC saw after the first one
	Logouts  int64
	Refused  int64 // logins CC refused (a wrong, old password)
	// EndedByLogin counts the sessions CC ended because their user logged
	// in again (one session per user): each new identity's login ends the
	// old identity's session.
	EndedByLogin int64
	// Unauthorized counts the data calls CC answered 401: requests that
	// still held a session that ended (at the new identity's login, at the
	// password change, or by a logout), each retried once by lpauth.
	Unauthorized int64
	SteadyP99    time.Duration
	// Worst is the worst latency of a request that overlapped a rotation
	// (from the password change to 1 s after the reload returned), one per
	// rotation.
	Worst   []time.Duration
	Reloads []time.Duration // how long each `caddy reload --force` took
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
	traffic := StartTraffic(client, []string{URL(addr, "rotation", o.Delay)}, o.Clients, o.BodySize)

	var windows []Window
	time.Sleep(o.Settle)
	for i := range o.Rotations {
		password := NewPassword(i + 1)
		from := time.Now()
		if err := SetPassword(srv.URL+"/_ccemu", password, o.EndSessions); err != nil {
			traffic.Stop()
			return res, err
		}
		time.Sleep(o.Gap)
		if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
			traffic.Stop()
			return res, err
		}
		took, err := Reload(o.Bin, cfgFile, caddyproc.Addr(admin))
		if err != nil {
			traffic.Stop()
			return res, err
		}
		res.Reloads = append(res.Reloads, took)
		windows = append(windows, Window{from, time.Now().Add(time.Second)})
		o.Log("rotation %d: reload took %s", i+1, took.Round(time.Millisecond))
		time.Sleep(o.Settle)
	}
	traffic.Stop()

	// CC keeps one session per user: each new identity's login at its
	// start ended the old identity's session, so no logout is awaited.
	end := emu.Counters()
	res.Logins = end.Logins - base.Logins
	res.Logouts = end.Logouts - base.Logouts
	res.EndedByLogin = end.SessionsEndedByLogin - base.SessionsEndedByLogin
	res.Refused = end.LoginsRefused - base.LoginsRefused
	res.Unauthorized = end.UnauthorizedDataCalls - base.UnauthorizedDataCalls
	traffic.Report(&res, windows)
	return res, nil
}

// Window is a span of time in which a rotation ran.
type Window struct{ From, To time.Time }

func (w Window) overlaps(s sample) bool { return s.start.Before(w.To) && s.end.After(w.From) }

type sample struct {
	start, end time.Time
	status     int    // 0: transport error; 200 with what set: body altered
	what       string // why it failed; empty: it did not
	replayed   bool   // sent again on a new connection (see Result.Replayed)
}

// Traffic is steady POST traffic: clients sending random bodies back to
// back, each answer checked against the emulator's echo of the body.
type Traffic struct {
	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []sample
}

// URL is the data API path on addr (a proxy in front of the emulator)
// whose answer the emulator holds for delay.
func URL(addr, name string, delay time.Duration) string {
	return fmt.Sprintf("http://%s/api/account/%s/%s?delay=%s", addr, ccemu.DefaultAccountID, name, delay)
}

// StartTraffic starts clients sending bodySize-byte POSTs back to back,
// client i to targets[i % len(targets)], until Stop.
func StartTraffic(client *http.Client, targets []string, clients, bodySize int) *Traffic {
	t := &Traffic{}
	for i := range clients {
		target := targets[i%len(targets)]
		t.wg.Go(func() {
			body := make([]byte, bodySize)
			for !t.stop.Load() {
				t.record(send(client, target, body))
			}
		})
	}
	return t
}

// send POSTs a fresh random body and says how it went.
func send(client *http.Client, target string, body []byte) sample {
	_, _ = rand.Read(body)
	sum := sha256.Sum256(body)
	s := sample{start: time.Now()}
	status, reply, replayed, err := post(client, target, body)
	s.end, s.status, s.replayed = time.Now(), status, replayed
	at := s.start.Format("15:04:05.000") + " " + target
	switch {
	case err != nil:
		s.what = fmt.Sprintf("%s: %v", at, err)
	case status != http.StatusOK:
		s.what = fmt.Sprintf("%s: status %d: %.200s", at, status, reply)
	default:
		var echo struct {
			SHA string `json:"body_sha256"`
			N   int    `json:"body_length"`
		}
		if json.Unmarshal(reply, &echo) != nil || echo.SHA != hex.EncodeToString(sum[:]) || echo.N != len(body) {
			s.what = fmt.Sprintf("%s: body altered on the way: %.200s", at, reply)
		}
	}
	return s
}

func (t *Traffic) record(s sample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, s)
}

// Stop ends the traffic and waits for the requests in flight.
func (t *Traffic) Stop() {
	t.stop.Store(true)
	t.wg.Wait()
}

// Report fills res with what the traffic saw: requests, failures, the
// steady p99 (requests that overlapped no window) and the worst latency
// in each window. Call it after Stop.
func (t *Traffic) Report(res *Result, windows []Window) {
	t.mu.Lock()
	defer t.mu.Unlock()
	res.Requests = len(t.samples)
	res.FailedBy = map[int]int{}
	res.Worst = make([]time.Duration, len(windows))
	res.FailedIn = make([]int, len(windows))
	res.Outage = make([]time.Duration, len(windows))
	var steady []time.Duration
	for _, s := range t.samples {
		in := false
		for i, w := range windows {
			if w.overlaps(s) {
				in = true
				res.Worst[i] = max(res.Worst[i], s.end.Sub(s.start))
				if s.what != "" {
					res.FailedIn[i]++
					res.Outage[i] = max(res.Outage[i], s.end.Sub(w.From))
				}
			}
		}
		if !in {
			steady = append(steady, s.end.Sub(s.start))
		}
		if s.replayed {
			res.Replayed++
		}
		if s.what == "" {
			continue
		}
		res.Failed++
		res.FailedBy[s.status]++
		if !in {
			res.FailedOutside++
		}
		if res.FailedBy[s.status] <= 3 {
			res.Failures = append(res.Failures, s.what)
		}
	}
	if len(steady) > 0 {
		slices.Sort(steady)
		res.SteadyP99 = caddyproc.Percentile(steady, 99)
	}
}

// post sends body and reads the answer. The Idempotency-Key lets Go's
// transport send the request again when the server closed a kept-alive
// connection before reading it, as Caddy does to idle connections at
// every reload: a race of HTTP keep-alive, not of lpauth. replayed says
// it happened (a second connection was taken).
func post(client *http.Client, target string, body []byte) (status int, reply []byte, replayed bool, err error) {
	conns := 0
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns++ }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
		http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, nil, false, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Idempotency-Key", hex.EncodeToString(randomBytes(8)))
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, conns > 1, err
	}
	defer resp.Body.Close()
	reply, err = io.ReadAll(resp.Body)
	return resp.StatusCode, reply, conns > 1, err
}

// NewPassword is the n-th rotated password: new every time, so that no
// old one can work by chance.
func NewPassword(n int) string {
	return fmt.Sprintf("rotated-%d-%s", n, hex.EncodeToString(randomBytes(6)))
}

// SetPassword changes the demo user's password at the emulator, through
// its control API at control (the emulator's URL and its control path).
func SetPassword(control, password string, endSessions bool) error {
	q := url.Values{"user": {ccemu.DefaultUsername}, "end_sessions": {fmt.Sprint(endSessions)}}
	form := url.Values{"password": {password}} // never in the URL
	resp, err := http.Post(control+"/set-password?"+q.Encode(), "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
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

// Reload runs `caddy reload --force` of cfgFile against the admin API at
// admin, as an operator does after changing a file a placeholder reads,
// and returns how long it took.
func Reload(bin, cfgFile, admin string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command(bin, "reload", "--force", "--config", cfgFile, "--adapter", "caddyfile",
		"--address", admin).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("caddy reload --force: %v: %s", err, out)
	}
	return took, nil
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
