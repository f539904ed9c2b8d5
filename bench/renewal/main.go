// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command renewal measures what renewing an AppJWT costs the requests that
// run meanwhile: steady traffic through lpauth across token renewals,
// against the same traffic with a token that never expires.
//
//	go run ./bench/renewal [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
//	bench/renewal.sh [path/to/caddy]         (the same)
//
// Rounds alternate A B A B ..., ROUNDS of each. Every round runs a fresh
// CC emulator (httptest on 127.0.0.1, Sentinel included) and a fresh Caddy
// subprocess with lpauth holding an AppJWT (client_id / client_secret of the
// emulator's demo application) + reverse_proxy to the emulator's data API,
// which needs a live token. After one warm-up request (the first token
// fetch, unmeasured), CLIENTS clients send GETs back to back for DURATION:
//
//	A: token lifetime LIFETIME (default 4s): lpauth renews in the background
//	   at 80 % of it, three times in a 12s round;
//	B: token lifetime 1h: no renewal during the round.
//
// Every token fetch during a round is delayed by FETCH_DELAY (200ms) at the
// emulator, so a request that waited for a fetch takes longer than
// WAITED_OVER (150ms) and is counted as waited.
//
// Per round: requests, non-200 answers (or transport errors), p50 / p99 /
// max latency, the token fetches CC answered (counter delta over the
// measured part), the data calls CC answered 401, and the waited count.
//
// Target: the median over pairs (A_i, B_i) of p99(A_i) / p99(B_i) <= 1.10,
// no request waited, none failed, and every A round saw a renewal. Exit
// status 0 when every target is met, 1 otherwise, 2 for a bad setting.
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

const (
	secretEnv   = "LPAUTH_BENCH_CLIENT_SECRET"
	longLife    = time.Hour
	targetRatio = 1.10
)

func main() { os.Exit(run()) }

type settings struct {
	rounds, clients                          int
	duration, lifetime, fetchDelay, waitedAt time.Duration
}

func run() int {
	var s settings
	var errs [6]error
	s.rounds, errs[0] = benchkit.EnvInt("ROUNDS", 4)
	s.duration, errs[1] = benchkit.EnvDuration("DURATION", 12*time.Second)
	s.clients, errs[2] = benchkit.EnvInt("CLIENTS", 8)
	s.lifetime, errs[3] = benchkit.EnvDuration("LIFETIME", 4*time.Second)
	s.fetchDelay, errs[4] = benchkit.EnvDuration("FETCH_DELAY", 200*time.Millisecond)
	s.waitedAt, errs[5] = benchkit.EnvDuration("WAITED_OVER", 150*time.Millisecond)
	if errs[3] == nil && (s.lifetime%time.Second != 0 || s.lifetime < 2*time.Second) {
		errs[3] = fmt.Errorf("LIFETIME=%s: want whole seconds, at least 2s (Sentinel's expires_in is in seconds)", s.lifetime)
	}
	if errs[5] == nil && errs[4] == nil && s.waitedAt >= s.fetchDelay {
		errs[5] = fmt.Errorf("WAITED_OVER=%s: want less than FETCH_DELAY=%s", s.waitedAt, s.fetchDelay)
	}
	bin, status := benchkit.Start("renewal", errs[:]...)
	if status != 0 {
		return status
	}
	// The Caddyfile reads the secret from the environment, as the README
	// asks; caddy inherits this process's environment.
	os.Setenv(secretEnv, ccemu.DefaultClientSecret)

	benchkit.Header(fmt.Sprintf("go run ./bench/renewal  (ROUNDS=%d DURATION=%s CLIENTS=%d LIFETIME=%s FETCH_DELAY=%s WAITED_OVER=%s)",
		s.rounds, s.duration, s.clients, s.lifetime, s.fetchDelay, s.waitedAt), bin)

	var a, b []result
	for i := range s.rounds {
		for _, v := range []struct {
			name     string
			lifetime time.Duration
			out      *[]result
		}{{"A", s.lifetime, &a}, {"B", longLife, &b}} {
			r, err := round(bin, s, v.lifetime)
			if err != nil {
				fmt.Fprintf(os.Stderr, "renewal: round %d %s: %v\n", i+1, v.name, err)
				return 1
			}
			r.name, r.run = v.name, i+1
			fmt.Fprintf(os.Stderr, "renewal: round %d %s: %d requests, p99 %s ms, %d fetches, %d waited, %d failed\n",
				r.run, r.name, r.requests, benchkit.Ms(r.p99), r.fetches, r.waited, r.failed)
			*v.out = append(*v.out, r)
		}
	}

	fmt.Printf("Each round (%s, %d clients back to back; times in ms; token fetches = fetches CC answered\n", s.duration, s.clients)
	fmt.Printf("during the round, each delayed %s; waited = requests slower than %s):\n\n", s.fetchDelay, s.waitedAt)
	fmt.Println("| round | run | token lifetime | requests | non-200 | p50 | p99 | max | token fetches | upstream 401s | waited |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for i := range s.rounds {
		for _, r := range []result{a[i], b[i]} {
			label := "A: renewals"
			if r.name == "B" {
				label = "B: no renewal"
			}
			fmt.Printf("| %s | %d | %s | %d | %d | %s | %s | %s | %d | %d | %d |\n", label, r.run, life(r.lifetime),
				r.requests, r.failed, benchkit.Ms(r.p50), benchkit.Ms(r.p99), benchkit.Ms(r.max), r.fetches, r.unauthorized, r.waited)
		}
	}

	ratios := make([]float64, s.rounds)
	for i := range s.rounds {
		ratios[i] = float64(a[i].p99) / float64(b[i].p99)
	}
	ratio := benchkit.Median(ratios)
	fmt.Println()
	fmt.Printf("Medians over %d rounds of each:\n\n", s.rounds)
	fmt.Println("| round | requests | non-200 | p50 | p99 | max | token fetches | waited |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, row := range []struct {
		name string
		rs   []result
	}{{"A: renewals", a}, {"B: no renewal", b}} {
		m := func(get func(result) float64) float64 {
			v := make([]float64, len(row.rs))
			for i, r := range row.rs {
				v[i] = get(r)
			}
			return benchkit.Median(v)
		}
		d := func(get func(result) time.Duration) string {
			return benchkit.Ms(time.Duration(m(func(r result) float64 { return float64(get(r)) })))
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", row.name,
			benchkit.Num(m(func(r result) float64 { return float64(r.requests) })),
			benchkit.Num(m(func(r result) float64 { return float64(r.failed) })),
			d(func(r result) time.Duration { return r.p50 }),
			d(func(r result) time.Duration { return r.p99 }),
			d(func(r result) time.Duration { return r.max }),
			benchkit.Num(m(func(r result) float64 { return float64(r.fetches) })),
			benchkit.Num(m(func(r result) float64 { return float64(r.waited) })))
	}
	for _, r := range slices.Concat(a, b) {
		if r.failed > 0 {
			fmt.Printf("\nnon-200 answers in round %d %s: %v\n", r.run, r.name, r.statuses)
		}
	}

	var waited, failed int
	for _, r := range slices.Concat(a, b) {
		waited += r.waited
		failed += r.failed
	}
	noWait, noFail, renewed := waited == 0, failed == 0, true
	for _, r := range a {
		renewed = renewed && r.fetches >= 1
	}
	strs := make([]string, len(ratios))
	for i, x := range ratios {
		strs[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	fmt.Println()
	fmt.Println("Target check:")
	fmt.Printf("  p99 ratio A/B, median over rounds = %.3f <= %.2f: %s (per round: %s)\n", ratio, targetRatio,
		benchkit.Yes(ratio <= targetRatio), strings.Join(strs, " "))
	fmt.Printf("  requests that waited for a fetch == 0: %s (%d)\n", benchkit.Yes(noWait), waited)
	fmt.Printf("  failed == 0 in every round:            %s (%d)\n", benchkit.Yes(noFail), failed)
	fmt.Printf("  every A round renewed its token:       %s\n", benchkit.Yes(renewed))
	if ratio > targetRatio || !noWait || !noFail || !renewed {
		return 1
	}
	return 0
}

type result struct {
	name          string
	run           int
	lifetime      time.Duration
	requests      int
	failed        int
	statuses      map[string]int
	p50, p99, max time.Duration
	fetches       int64
	unauthorized  int64
	waited        int
}

// round starts a fresh emulator whose tokens live lifetime and a fresh
// Caddy in front of it, warms up (the first fetch), and measures.
func round(bin string, s settings, lifetime time.Duration) (result, error) {
	emu := ccemu.New(ccemu.Config{TokenLifetime: lifetime})
	srv := httptest.NewServer(emu) // 127.0.0.1
	defer srv.Close()
	emuHost := strings.TrimPrefix(srv.URL, "http://")

	port, err := caddyproc.FreePort()
	if err != nil {
		return result{}, err
	}
	addr := caddyproc.Addr(port)
	proxy, err := caddyproc.Start(bin, caddyfile(addr, srv.URL, emuHost), addr)
	if err != nil {
		return result{}, err
	}
	defer proxy.Stop(10 * time.Second)

	client := &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        s.clients,
			MaxIdleConnsPerHost: s.clients,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/api/account/" + ccemu.DefaultAccountID + "/renewal"

	if code, err := benchkit.Get(client, url+"/warmup"); err != nil || code != http.StatusOK {
		return result{}, fmt.Errorf("warm-up request: status %d, %v\n%s", code, err, proxy.Out.Tail(20))
	}
	// Every fetch from here on is slow: a request that waits for one shows.
	emu.DelayNextTokens(1<<20, s.fetchDelay)
	before := emu.Counters()

	lats := make([][]time.Duration, s.clients)
	codes := make([]map[string]int, s.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range s.clients {
		codes[c] = map[string]int{}
		wg.Go(func() {
			for i := 0; time.Since(start) < s.duration; i++ {
				t0 := time.Now()
				code, err := benchkit.Get(client, url+"/"+strconv.Itoa(c)+"/"+strconv.Itoa(i))
				lats[c] = append(lats[c], time.Since(t0))
				switch {
				case err != nil:
					codes[c]["error: "+err.Error()]++
				case code != http.StatusOK:
					codes[c][strconv.Itoa(code)]++
				}
			}
		})
	}
	wg.Wait()
	after := emu.Counters()
	if exited, err := proxy.Exited(); exited {
		return result{}, fmt.Errorf("caddy exited during the round: %v\n%s", err, proxy.Out.Tail(20))
	}

	r := result{lifetime: lifetime, statuses: map[string]int{},
		fetches:      after.TokenRequestsOK - before.TokenRequestsOK,
		unauthorized: after.UnauthorizedDataCalls - before.UnauthorizedDataCalls}
	all := slices.Concat(lats...)
	for _, m := range codes {
		for k, n := range m {
			r.statuses[k] += n
			r.failed += n
		}
	}
	slices.Sort(all)
	r.requests = len(all)
	r.p50, r.p99, r.max = caddyproc.Percentile(all, 50), caddyproc.Percentile(all, 99), all[len(all)-1]
	for _, d := range all {
		if d > s.waitedAt {
			r.waited++
		}
	}
	return r, nil
}

// caddyfile is lpauth with the emulator's demo application (an AppJWT)
// in front of reverse_proxy to the emulator: nothing autosaved, no TLS,
// loopback only.
func caddyfile(addr, csds, upstream string) string {
	return caddyproc.Proxy{Addr: addr, CSDS: csds, ClientSecret: "{env." + secretEnv + "}", Lpauth: "login_timeout 10s", Upstream: upstream}.Caddyfile()
}

// life prints a token lifetime as 4s or 1h rather than 1h0m0s.
func life(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return d.String()
}
