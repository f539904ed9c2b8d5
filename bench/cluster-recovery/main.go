// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command cluster-recovery measures what a CC expiry costs the clients of a
// cluster against one instance: the latency of concurrent requests right
// after CC ended the session, for one instance in cluster mode and for
// clusters of several, on file_system and on Redis storage.
//
//	go run ./bench/cluster-recovery [path/to/caddy]
//	bench/cluster-recovery.sh [path/to/caddy]        (the same)
//
// The binary must have Redis storage (LPAUTH_WITH_REDIS=1 ./xcaddy.sh);
// without an argument one is built so. The CC emulator runs in this process
// (httptest on 127.0.0.1); Redis is REDIS_ADDR, else a redis-server this
// program starts on a free loopback port. Each round starts every topology
// on fresh instances and a fresh storage (a new directory, a new Redis key
// prefix), waits for the cluster's one login, then sends REQUESTS
// concurrent GETs spread round-robin over the instances with the session
// alive, ends the session at CC, and sends REQUESTS concurrent GETs again.
// Rounds repeat ROUNDS times (default 3), topologies in the same order each
// round; SIZES (default "1 3 10") are the instance counts, REQUESTS
// (default 60).
//
// Per storage and size, medians over the rounds: the p99 with the session
// alive (CPU load), p50 and p99 after the expiry, the after-expiry p99 as a
// ratio to one instance's, logins per expiry, failed requests, and the
// reads of the cluster's storage per instance during the after-expiry
// burst (lpauth's caddy_lpauth_cluster_storage_reads_total: one on each
// instance's first 401, a few more as 401s come in, and one every 5-20 ms
// while an instance waits for the storage lock).
//
// Target: every cluster's after-expiry p99 at most 2x one instance's, on
// both storages, with one login per expiry and no failed request. Exit
// status 0 when met, 1 otherwise, 2 for a bad setting.
package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
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

// sample is what one round of one topology measured.
type sample struct {
	liveP99, p50, p99 time.Duration
	logins, failed    int64
	reads             float64 // of the storage, per instance, during the after-expiry burst
}

func run() int {
	rounds, err1 := benchkit.EnvInt("ROUNDS", 3)
	requests, err2 := benchkit.EnvInt("REQUESTS", 60)
	sizes, err3 := envSizes("SIZES", "1 3 10")
	caddyproc.StopOnInterrupt()
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster-recovery:", err)
			return 2
		}
	}
	bin, err := binary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-recovery:", err)
		return 2
	}
	redisAddr, stopRedis, err := redis()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-recovery:", err)
		return 2
	}
	defer stopRedis()

	emu := ccemu.New(ccemu.Config{})
	srv := httptest.NewServer(emu)
	defer srv.Close()

	benchkit.Header(fmt.Sprintf("go run ./bench/cluster-recovery  (ROUNDS=%d REQUESTS=%d SIZES=%q)", rounds, requests, strings.Trim(fmt.Sprint(sizes), "[]")), bin)

	storages := []string{"file_system", "redis"}
	results := map[string][]sample{}
	for r := range rounds {
		for _, storage := range storages {
			for _, n := range sizes {
				fmt.Fprintf(os.Stderr, "cluster-recovery: round %d, %s, %d instance(s)\n", r+1, storage, n)
				s, err := measure(bin, emu, srv, storage, redisAddr, n, requests, r)
				if err != nil {
					fmt.Fprintln(os.Stderr, "cluster-recovery:", err)
					return 1
				}
				key := storage + "|" + strconv.Itoa(n)
				results[key] = append(results[key], s)
			}
		}
	}

	fmt.Printf("%d concurrent GETs spread over the instances, with the session alive and right after CC ended it;\n", requests)
	fmt.Printf("medians of %d rounds, each on fresh instances and storage. Times in ms.\n\n", rounds)
	fmt.Println("| storage | instances | p99, session alive | p50 after expiry | p99 after expiry | p99 / one instance's | logins per expiry | failed | storage reads per instance |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	status := 0
	var checks []string
	for _, storage := range storages {
		one := median(results[storage+"|"+strconv.Itoa(sizes[0])], func(s sample) float64 { return float64(s.p99) })
		for _, n := range sizes {
			ss := results[storage+"|"+strconv.Itoa(n)]
			p99 := median(ss, func(s sample) float64 { return float64(s.p99) })
			ratio := p99 / one
			logins := median(ss, func(s sample) float64 { return float64(s.logins) })
			failed := slices.MaxFunc(ss, func(a, b sample) int { return int(a.failed - b.failed) }).failed
			fmt.Printf("| %s | %d | %s | %s | %s | %.2f | %s | %d | %.1f |\n", storage, n,
				benchkit.Ms(time.Duration(median(ss, func(s sample) float64 { return float64(s.liveP99) }))),
				benchkit.Ms(time.Duration(median(ss, func(s sample) float64 { return float64(s.p50) }))),
				benchkit.Ms(time.Duration(p99)), ratio, benchkit.Num(logins), failed,
				median(ss, func(s sample) float64 { return s.reads }))
			if n == sizes[0] {
				continue
			}
			ok := ratio <= 2 && logins == 1 && failed == 0
			if !ok {
				status = 1
			}
			checks = append(checks, fmt.Sprintf("  %-60s %s (%.2f, %s login(s), %d failed)",
				fmt.Sprintf("%s, %d instances: p99 <= 2x one instance's, 1 login, 0 failed:", storage, n), benchkit.Yes(ok), ratio, benchkit.Num(logins), failed))
		}
	}
	fmt.Println()
	fmt.Println("Target check:")
	for _, c := range checks {
		fmt.Println(c)
	}
	return status
}

// measure runs one round of one topology on fresh instances and storage.
func measure(bin string, emu *ccemu.Emulator, srv *httptest.Server, storage, redisAddr string, n, requests, round int) (sample, error) {
	var s sample
	global := fmt.Sprintf("storage redis {\n\t\taddress %s\n\t\tkey_prefix lpauth-recovery-%d-%d-%d\n\t}", redisAddr, time.Now().UnixNano(), round, n)
	if storage == "file_system" {
		dir, err := os.MkdirTemp("", "lpauth-recovery-")
		if err != nil {
			return s, err
		}
		defer os.RemoveAll(dir)
		global = fmt.Sprintf("storage file_system {\n\t\troot %s\n\t}", dir)
	}
	before := emu.Counters()
	insts := make([]instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range insts {
		wg.Go(func() { insts[i], errs[i] = launch(bin, srv, global) })
	}
	wg.Wait()
	defer func() {
		for _, in := range insts {
			if in.proc != nil {
				_ = in.proc.Stop(10 * time.Second)
			}
		}
	}()
	for _, err := range errs {
		if err != nil {
			return s, err
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: requests}}
	defer client.CloseIdleConnections()
	// The cluster's one login at start, then every instance serving.
	for _, in := range insts {
		if err := waitServing(client, in.url); err != nil {
			return s, err
		}
	}
	live, _ := burst(client, insts, requests)
	s.liveP99 = caddyproc.Percentile(live, 99)

	reads := storageReads(insts)
	logins := emu.Counters().LoginAttempts
	emu.ExpireSessions()
	after, failed := burst(client, insts, requests)
	s.p50, s.p99 = caddyproc.Percentile(after, 50), caddyproc.Percentile(after, 99)
	s.failed = failed
	s.logins = emu.Counters().LoginAttempts - logins
	s.reads = float64(storageReads(insts)-reads) / float64(n)
	if ended := emu.Counters().SessionsEndedByLogin - before.SessionsEndedByLogin; ended > 1 {
		// Each round's first login ends the previous round's session;
		// more means members ended each other's.
		return s, fmt.Errorf("%s, %d instances: %d sessions ended by a login", storage, n, ended)
	}
	return s, nil
}

type instance struct {
	proc       *caddyproc.Proc
	url, admin string
}

func launch(bin string, srv *httptest.Server, global string) (instance, error) {
	port, err := caddyproc.FreePort()
	if err != nil {
		return instance{}, err
	}
	admin, err := caddyproc.FreePort()
	if err != nil {
		return instance{}, err
	}
	addr := caddyproc.Addr(port)
	emuHost := strings.TrimPrefix(srv.URL, "http://")
	cfg := caddyproc.Proxy{Admin: caddyproc.Addr(admin), Global: global, Addr: addr, CSDS: srv.URL,
		Lpauth: "login_timeout 10s\n\t\tstorage", Upstream: emuHost}.Caddyfile()
	p, err := caddyproc.Start(bin, cfg, addr)
	return instance{proc: p, url: "http://" + addr, admin: caddyproc.Addr(admin)}, err
}

func waitServing(client *http.Client, url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		status, err := benchkit.Get(client, url+"/api/account/"+ccemu.DefaultAccountID+"/warm")
		if err == nil && status == 200 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not serve within 15 s: %d %v", url, status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// burst sends requests concurrent GETs, round-robin over the instances,
// released together; it returns their times, sorted, and how many failed.
func burst(client *http.Client, insts []instance, requests int) ([]time.Duration, int64) {
	times := make([]time.Duration, requests)
	var failed int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i := range requests {
		url := insts[i%len(insts)].url + "/api/account/" + ccemu.DefaultAccountID + "/recovery/" + strconv.Itoa(i)
		wg.Go(func() {
			<-release
			start := time.Now()
			status, err := benchkit.Get(client, url)
			times[i] = time.Since(start)
			if err != nil || status != 200 {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	close(release)
	wg.Wait()
	slices.Sort(times)
	return times, failed
}

// storageReads sums caddy_lpauth_cluster_storage_reads_total over the
// instances' admin /metrics.
func storageReads(insts []instance) int64 {
	var sum int64
	for _, in := range insts {
		resp, err := http.Get("http://" + in.admin + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "caddy_lpauth_cluster_storage_reads_total{") {
				v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				sum += int64(v)
			}
		}
		resp.Body.Close()
	}
	return sum
}

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return benchkit.Median(v)
}

func envSizes(name, def string) ([]int, error) {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	var out []int
	for _, f := range strings.Fields(v) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%q: want positive instance counts, the first the one to compare with", name, v)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is empty", name)
	}
	return out, nil
}

// binary is the first argument, else a build with Redis storage.
func binary() (string, error) {
	if len(os.Args) > 1 {
		return caddyproc.Binary(os.Args[1:])
	}
	fmt.Fprintln(os.Stderr, "cluster-recovery: building caddy with Redis storage (LPAUTH_WITH_REDIS=1 ./xcaddy.sh)")
	return caddyproc.Built()
}

// redis returns REDIS_ADDR, or starts a redis-server on a free loopback
// port and returns its address and how to stop it.
func redis() (string, func(), error) {
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		return addr, func() {}, nil
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return "", nil, fmt.Errorf("needs redis-server (apt-get install redis-server) or REDIS_ADDR")
	}
	port, err := caddyproc.FreePort()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(path, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	addr := caddyproc.Addr(port)
	if err := caddyproc.WaitPort(addr, 5*time.Second); err != nil {
		stop()
		return "", nil, err
	}
	return addr, stop, nil
}
