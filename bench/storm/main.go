// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command storm measures a login storm: 1,000 requests arriving together
// through lpauth, once with a live session and once right after CC expired
// it (with the re-login delayed), and what CC saw meanwhile.
//
//	go run ./bench/storm [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
//	bench/storm.sh [path/to/caddy]         (the same)
//
// The CC emulator runs in this process (httptest on 127.0.0.1); the Caddy
// binary runs as a subprocess with lpauth + reverse_proxy to the emulator's
// data API, which needs a live bearer. After a warm-up (login, and one
// unmeasured burst to open the client's connections), bursts alternate:
//
//	a: REQUESTS concurrent GETs, session alive;
//	b: ExpireSessions() and DelayNextLogins(1, LOGIN_DELAY), then REQUESTS
//	   concurrent GETs: each first answer is 401, lpauth checks the session
//	   with one refresh, logs in once, and retries every request.
//
// A barrier releases all requests of a burst at once. Environment: REPEAT
// (bursts of each kind, alternating a b a b; default 3), REQUESTS (default
// 1000), LOGIN_DELAY (default 200ms).
//
// Target: in every storm, CC sees exactly 1 login and no request fails; and
// median storm p99 - median no-expiry p99 <= LOGIN_DELAY + the verifying
// refresh (its time as the emulator measured it) + 50ms. Exit status 0 when
// every target is met, 1 otherwise.
package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpauth/caddy-lpauth/bench/internal/benchkit"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

func main() { os.Exit(run()) }

func run() int {
	repeat, err1 := benchkit.EnvInt("REPEAT", 3)
	requests, err2 := benchkit.EnvInt("REQUESTS", 1000)
	delay, err3 := benchkit.EnvDuration("LOGIN_DELAY", 200*time.Millisecond)
	bin, status := benchkit.Start("storm", err1, err2, err3)
	if status != 0 {
		return status
	}

	emu := ccemu.New(ccemu.Config{})
	timed := &timedHandler{next: emu}
	srv := httptest.NewServer(timed) // 127.0.0.1
	defer srv.Close()
	emuHost := strings.TrimPrefix(srv.URL, "http://")

	port, err := caddyproc.FreePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		return 1
	}
	addr := caddyproc.Addr(port)
	caddyfile := caddyproc.Proxy{Addr: addr, CSDS: "http://" + emuHost, Upstream: emuHost, Lpauth: "login_timeout 10s"}.Caddyfile()
	proxy, err := caddyproc.Start(bin, caddyfile, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		return 1
	}
	defer proxy.Stop(10 * time.Second)

	benchkit.Header(fmt.Sprintf("go run ./bench/storm  (REPEAT=%d REQUESTS=%d LOGIN_DELAY=%s)", repeat, requests, delay), bin)

	client := &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        requests,
			MaxIdleConnsPerHost: requests,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/api/account/" + ccemu.DefaultAccountID + "/storm"

	// Warm-up: the first request logs in; a burst opens the client's
	// connections so that no measured burst pays for TCP setup.
	if code, err := benchkit.Get(client, url+"/warmup"); err != nil || code != http.StatusOK {
		fmt.Fprintf(os.Stderr, "storm: warm-up request: status %d, %v\n%s\n", code, err, proxy.Out.Tail(20))
		return 1
	}
	if r := burst(client, url, requests, emu, timed); r.failed > 0 {
		fmt.Fprintf(os.Stderr, "storm: warm-up burst: %d of %d failed: %v\n", r.failed, requests, r.statuses)
		return 1
	}
	time.Sleep(300 * time.Millisecond)

	var noExpiry, storm []result
	for i := 0; i < repeat; i++ {
		noExpiry = append(noExpiry, burst(client, url, requests, emu, timed))
		time.Sleep(300 * time.Millisecond)
		emu.ExpireSessions()
		emu.DelayNextLogins(1, delay)
		storm = append(storm, burst(client, url, requests, emu, timed))
		time.Sleep(300 * time.Millisecond)
	}
	if exited, err := proxy.Exited(); exited {
		fmt.Fprintf(os.Stderr, "storm: caddy exited during the run: %v\n%s\n", err, proxy.Out.Tail(20))
		return 1
	}

	fmt.Println("Each burst (logins = login attempts CC saw during the burst; refreshes likewise; times in ms;")
	fmt.Println("verifying refresh and login as the emulator timed them; release to login: from the burst's")
	fmt.Println("release to the login reaching CC; login to last answer: from the login's answer to the last response):")
	fmt.Println()
	fmt.Println("| burst | run | requests | failed | p50 | p99 | max | logins | refreshes | verifying refresh | release to login | login | login to last answer |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for i := range repeat {
		for _, b := range []struct {
			name string
			r    result
		}{{"a: no expiry", noExpiry[i]}, {"b: storm", storm[i]}} {
			r := b.r
			vr, tl, l, al := "-", "-", "-", "-"
			if r.refreshes > 0 {
				vr = benchkit.Ms(r.verifyRefresh)
			}
			if r.logins > 0 {
				tl, l, al = benchkit.Ms(r.toLogin), benchkit.Ms(r.login), benchkit.Ms(r.afterLogin)
			}
			fmt.Printf("| %s | %d | %d | %d | %s | %s | %s | %d | %d | %s | %s | %s | %s |\n", b.name, i+1, r.requests, r.failed,
				benchkit.Ms(r.p50), benchkit.Ms(r.p99), benchkit.Ms(r.max), r.logins, r.refreshes, vr, tl, l, al)
		}
	}
	fmt.Println()
	fmt.Printf("Medians over %d runs of each burst:\n\n", repeat)
	fmt.Println("| burst | requests | failed | p50 | p99 | max | logins | refreshes |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	a, b := summarize(noExpiry), summarize(storm)
	for _, row := range []struct {
		name string
		s    summary
	}{{"a: no expiry", a}, {"b: storm", b}} {
		s := row.s
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %s |\n", row.name, requests, benchkit.Num(s.failed),
			benchkit.Ms(s.p50), benchkit.Ms(s.p99), benchkit.Ms(s.max), benchkit.Num(s.logins), benchkit.Num(s.refreshes))
	}
	for _, rs := range [][]result{noExpiry, storm} {
		for _, r := range rs {
			if r.failed > 0 {
				fmt.Printf("\nnon-200 answers in a burst: %v\n", r.statuses)
			}
		}
	}

	// Target check.
	logins := make([]int64, 0, repeat)
	oneLogin, noFail := true, true
	for _, r := range storm {
		logins = append(logins, r.logins)
		oneLogin = oneLogin && r.logins == 1
	}
	for _, r := range slices.Concat(noExpiry, storm) {
		noFail = noFail && r.failed == 0
	}
	delta := b.p99 - a.p99
	budget := delay + b.verifyRefresh + 50*time.Millisecond
	fmt.Println()
	fmt.Println("Target check:")
	fmt.Printf("  storm logins == 1 in every storm:   %s (%s)\n", benchkit.Yes(oneLogin), joinInts(logins))
	fmt.Printf("  failed == 0 in every burst:         %s\n", benchkit.Yes(noFail))
	fmt.Printf("  storm p99 - no-expiry p99 = %s ms <= login delay %s ms + verifying refresh %s ms + 50 ms = %s ms: %s (slack %s ms)\n",
		benchkit.Ms(delta), benchkit.Ms(delay), benchkit.Ms(b.verifyRefresh), benchkit.Ms(budget), benchkit.Yes(delta <= budget), benchkit.Ms(budget-delta))
	if !oneLogin || !noFail || delta > budget {
		return 1
	}
	return 0
}

type result struct {
	requests          int
	failed            int
	statuses          map[string]int
	p50, p99, max     time.Duration
	logins, refreshes int64
	verifyRefresh     time.Duration // the first refresh CC saw during the burst, as CC timed it
	// Where a storm's time goes, from the release of the burst: until the
	// login reached CC, the login itself, and from its answer to the last
	// response the client got (the retries).
	toLogin, login, afterLogin time.Duration
}

// burst sends n GETs that all start together and waits for every answer.
func burst(client *http.Client, url string, n int, emu *ccemu.Emulator, timed *timedHandler) result {
	before := emu.Counters()
	mark := timed.mark()
	lat := make([]time.Duration, n)
	codes := make([]string, n)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			u := url + "/" + strconv.Itoa(i)
			ready.Done()
			<-start
			t0 := time.Now()
			code, err := benchkit.Get(client, u)
			lat[i] = time.Since(t0)
			if err != nil {
				codes[i] = "error: " + err.Error()
			} else {
				codes[i] = strconv.Itoa(code)
			}
		}()
	}
	ready.Wait()
	released := time.Now()
	close(start)
	done.Wait()
	lastEnd := time.Now()
	after := emu.Counters()

	r := result{requests: n, statuses: map[string]int{},
		logins: after.LoginAttempts - before.LoginAttempts, refreshes: after.Refreshes - before.Refreshes}
	for _, c := range codes {
		if c != "200" {
			r.failed++
			r.statuses[c]++
		}
	}
	slices.Sort(lat)
	r.p50, r.p99, r.max = caddyproc.Percentile(lat, 50), caddyproc.Percentile(lat, 99), lat[len(lat)-1]
	if refreshes := timed.since(mark, "refresh"); len(refreshes) > 0 {
		r.verifyRefresh = refreshes[0].took
	}
	if logins := timed.since(mark, "login"); len(logins) > 0 {
		l := logins[0]
		r.toLogin, r.login, r.afterLogin = l.start.Sub(released), l.took, lastEnd.Sub(l.start.Add(l.took))
	}
	return r
}

type summary struct {
	failed, logins, refreshes float64
	p50, p99, max             time.Duration
	verifyRefresh             time.Duration
}

func summarize(rs []result) summary {
	f := func(get func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = get(r)
		}
		return benchkit.Median(v)
	}
	d := func(get func(result) time.Duration) time.Duration {
		return time.Duration(f(func(r result) float64 { return float64(get(r)) }))
	}
	return summary{
		failed:        f(func(r result) float64 { return float64(r.failed) }),
		logins:        f(func(r result) float64 { return float64(r.logins) }),
		refreshes:     f(func(r result) float64 { return float64(r.refreshes) }),
		p50:           d(func(r result) time.Duration { return r.p50 }),
		p99:           d(func(r result) time.Duration { return r.p99 }),
		max:           d(func(r result) time.Duration { return r.max }),
		verifyRefresh: d(func(r result) time.Duration { return r.verifyRefresh }),
	}
}

// timedHandler records how long the emulator took over each login and
// refresh call, in arrival order.
type timedHandler struct {
	next  http.Handler
	mu    sync.Mutex
	calls []call
}

type call struct {
	kind  string // "login" or "refresh"
	start time.Time
	took  time.Duration
}

func (t *timedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := ""
	switch {
	case strings.HasSuffix(r.URL.Path, "/login"):
		kind = "login"
	case strings.HasSuffix(r.URL.Path, "/refresh"):
		kind = "refresh"
	}
	if kind == "" {
		t.next.ServeHTTP(w, r)
		return
	}
	t0 := time.Now()
	t.mu.Lock()
	i := len(t.calls)
	t.calls = append(t.calls, call{kind: kind, start: t0})
	t.mu.Unlock()
	t.next.ServeHTTP(w, r)
	took := time.Since(t0)
	t.mu.Lock()
	t.calls[i].took = took
	t.mu.Unlock()
}

func (t *timedHandler) mark() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.calls)
}

// since returns the calls of one kind that arrived after mark.
func (t *timedHandler) since(mark int, kind string) []call {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []call
	for _, c := range t.calls[mark:] {
		if c.kind == kind {
			out = append(out, c)
		}
	}
	return out
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(s, " ")
}
