// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

// Soak under faults: steady traffic through the ./xcaddy.sh binary while
// the emulator, one fault at a time, expires sessions, fails logins with 500
// and 429, delays logins and fails refreshes. It runs only when
// LPAUTH_SOAK holds its duration: 3m in CI, 10m for the long run
// (bench/soak.sh).
//
// Its purpose is leaks and corruption under faults, not the rule for
// sessions that keep ending (one session per user): it ends sessions at
// most twice in a row, then leaves the session alone for longer than
// lpauth.ShortLivedWindow, and fails if lpauth ever entered the conflict wait.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lpauth "github.com/lpauth/caddy-lpauth"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

type soakWindow struct{ from, to time.Time }

type soakRecord struct {
	start, end time.Time
	status     int
}

func TestE2ESoak(t *testing.T) {
	e2eTier(t)
	v := os.Getenv("LPAUTH_SOAK")
	if v == "" {
		t.Skip("the soak runs only with LPAUTH_SOAK set to its duration: LPAUTH_SOAK=3m go test -run '^TestE2ESoak$' ./e2e")
	}
	duration, err := time.ParseDuration(v)
	if err != nil || duration <= 0 {
		t.Fatalf("LPAUTH_SOAK=%q: want a duration such as 3m (%v)", v, err)
	}
	emu, srv := emulator(t, ccemu.Config{})
	admin, proxyPort := freePort(t), freePort(t)
	cfg := caddyproc.Proxy{
		Admin:    fmt.Sprintf("localhost:%d", admin),
		Addr:     caddyproc.Addr(proxyPort),
		CSDS:     srv.URL,
		Password: "{env.LP_PASSWORD}",
		Lpauth:   "refresh_interval 2s\n\t\tlogin_timeout 3s",
		Upstream: srv.Listener.Addr().String(),
	}.Caddyfile()
	p := startCaddyfile(t, cfg, caddyproc.Addr(proxyPort), "LP_PASSWORD="+ccemu.DefaultPassword)
	proxy := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

	// Warm up at the soak's concurrency, so the connections the soak keeps
	// open are already counted at the start.
	var warm sync.WaitGroup
	for range 8 {
		warm.Go(func() {
			for range 20 {
				resp, err := client.Get(proxy + dataPath("warm"))
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("warm-up: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	warm.Wait()
	startGoroutines, startRSS := settledGoroutines(t, admin), soakRSS(t, p.cmd.Process.Pid)

	var (
		mu       sync.Mutex
		records  []soakRecord
		windows  []soakWindow // CC login was failing
		altered  atomic.Int64
		stop     = make(chan struct{})
		traffic  sync.WaitGroup
		faultLog []string
	)
	for w := range 8 {
		traffic.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body, sum := randomBody(t, rng.IntN(64<<10))
				start := time.Now()
				status, err := postBody(client, proxy+dataPath(fmt.Sprintf("soak/%d/%d", w, i)), body, sum)
				if errors.Is(err, errAltered) {
					altered.Add(1)
				}
				mu.Lock()
				records = append(records, soakRecord{start, time.Now(), status})
				mu.Unlock()
				if status == 503 {
					time.Sleep(200 * time.Millisecond) // a polite client backs off
				}
			}
		})
	}

	// One fault at a time, each waited out before the next, so that every
	// failure can be matched to the fault that caused it.
	rng := rand.New(rand.NewPCG(7, 7))
	deadline := time.Now().Add(duration)
	waitFor := func(what string, limit time.Duration, cond func() bool) bool {
		end := time.Now().Add(limit)
		for time.Now().Before(end) {
			if cond() {
				return true
			}
			time.Sleep(20 * time.Millisecond) // the poll interval
		}
		t.Errorf("soak: %s did not happen within %s", what, limit)
		return false
	}
	// A session ended twice in a row is next left alone this long from its
	// login, so that no three short-lived sessions come in a row.
	const rest = lpauth.ShortLivedWindow + 5*time.Second
	endedInARow, lastLogin := 0, time.Now()
	for time.Now().Before(deadline) {
		logins := emu.Counters().Logins
		relogged := func() bool {
			if emu.Counters().Logins > logins {
				lastLogin = time.Now()
				return true
			}
			return false
		}
		fault := rng.IntN(5)
		if endedInARow == 2 {
			if time.Since(lastLogin) < rest {
				fault = 4 // the only fault that leaves the session alive
			} else {
				endedInARow = 0
			}
		}
		if fault != 4 {
			endedInARow++
		}
		switch fault {
		case 0:
			faultLog = append(faultLog, "expire")
			emu.ExpireSessions()
			waitFor("re-login after expiry", 10*time.Second, relogged)
		case 1, 2:
			status, n := 500, 1+rng.IntN(2)
			if fault == 2 {
				status, n = 429, 1
			}
			faultLog = append(faultLog, fmt.Sprintf("%d logins fail with %d", n, status))
			from := time.Now()
			emu.FailNextLogins(n, status, 0)
			emu.ExpireSessions()
			waitFor("recovery after failed logins", 40*time.Second, relogged)
			mu.Lock()
			windows = append(windows, soakWindow{from, time.Now().Add(200 * time.Millisecond)})
			mu.Unlock()
		case 3:
			d := time.Duration(300+rng.IntN(1200)) * time.Millisecond
			faultLog = append(faultLog, "login delayed "+d.String())
			emu.DelayNextLogins(1, d)
			emu.ExpireSessions()
			waitFor("re-login after a slow login", 10*time.Second, relogged)
		case 4:
			faultLog = append(faultLog, "a refresh fails with 500")
			refreshes := emu.Counters().Refreshes
			emu.FailNextRefreshes(1, 500)
			waitFor("the failing refresh", 10*time.Second, func() bool { return emu.Counters().Refreshes > refreshes })
		}
		// Real time must pass: the traffic runs a while between faults.
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
	}
	close(stop)
	if out := p.out.String(); strings.Contains(out, lpauth.ConflictWaitPhrase) {
		t.Errorf("soak: lpauth entered the conflict wait (%q in its log)", lpauth.ConflictWaitPhrase)
	}
	traffic.Wait()
	client.CloseIdleConnections()
	endGoroutines, endRSS := settledGoroutines(t, admin), soakRSS(t, p.cmd.Process.Pid)

	var ok, failed, unexplained int
	for _, r := range records {
		if r.status == 200 {
			ok++
			continue
		}
		failed++
		explained := false
		if r.status == 503 {
			for _, w := range windows {
				if r.end.After(w.from) && r.start.Before(w.to) {
					explained = true
				}
			}
		}
		if !explained {
			unexplained++
			if unexplained <= 5 {
				t.Errorf("soak: status %d at %s is not a 503 during a window when CC login was failing", r.status, r.start.Format(time.RFC3339Nano))
			}
		}
	}
	n := emu.Counters()
	t.Logf("soak %s, faults: %s", duration, strings.Join(faultLog, "; "))
	t.Logf("| duration | requests | succeeded | failed (503 while CC login failed) | unexplained failures | altered bodies | logins | login attempts | goroutines start → end | RSS start → end |")
	t.Logf("|---|---|---|---|---|---|---|---|---|---|")
	t.Logf("| %s | %d | %d | %d | %d | %d | %d | %d | %d → %d | %d MiB → %d MiB |", duration, len(records), ok, failed, unexplained,
		altered.Load(), n.Logins, n.LoginAttempts, startGoroutines, endGoroutines, startRSS>>20, endRSS>>20)
	if altered.Load() != 0 {
		t.Errorf("soak: %d response bodies did not match what was sent", altered.Load())
	}
	if len(records) < 100 || ok < len(records)/4 {
		t.Errorf("soak: only %d of %d requests succeeded", ok, len(records))
	}
	if endGoroutines > startGoroutines+10 {
		t.Errorf("soak: goroutines grew from %d to %d", startGoroutines, endGoroutines)
	}
	if endRSS > 2*startRSS+64<<20 {
		t.Errorf("soak: RSS grew from %d MiB to %d MiB", startRSS>>20, endRSS>>20)
	}
}

// soakGoroutines reads the caddy process's goroutine count from its admin
// endpoint's pprof.
func soakGoroutines(t *testing.T, admin int) int {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/debug/pprof/goroutine?debug=1", admin))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "goroutine profile: total")))
	if err != nil {
		t.Fatalf("goroutine profile header %q", line)
	}
	return n
}

// settledGoroutines is the caddy process's goroutine count once it has
// stopped changing: three readings in a row agree, so that the goroutines
// of requests and connections that just ended have gone.
func settledGoroutines(t *testing.T, admin int) int {
	t.Helper()
	var last []int
	eventually(t, 10*time.Second, "caddy's goroutine count to settle", func() bool {
		last = append(last, soakGoroutines(t, admin))
		n := len(last)
		return n >= 3 && last[n-1] == last[n-2] && last[n-2] == last[n-3]
	})
	return last[len(last)-1]
}

// soakRSS reads a process's resident set size.
func soakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	kb, err := caddyproc.StatusKB(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}
	return kb << 10
}
