// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command memory measures the peak resident memory of a Caddy proxy running
// lpauth + reverse_proxy while many clients POST large bodies: bodies up to
// retry_body_limit (default 1MiB, inclusive) are buffered so they can be
// replayed after a 401; larger ones are streamed.
//
//	go run ./bench/memory [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
//	bench/memory.sh [path/to/caddy]         (the same)
//
// Each body size runs in a fresh Caddy process, because VmHWM (the peak
// resident set size in /proc/<pid>/status) is a lifetime peak. Per run: start
// Caddy, warm up (the login, then one small POST per client so every client
// connection is open), read VmRSS as the baseline, then CLIENTS clients each
// POST ROUNDS bodies of the size one after another, and read VmHWM.
//
// The CC emulator (login only) and the upstream run in this process on
// 127.0.0.1. The upstream reads each body into io.Discard and answers 200
// with the byte count, which the client checks. Bodies come from a
// pseudo-random generator, so the client never holds one in memory.
//
// Environment: CLIENTS (default 64), ROUNDS (default 5), SIZES (default
// "1MiB 4MiB 16MiB"; the sizes are exact: 1MiB is 1,048,576 bytes, equal to
// the limit, hence buffered).
//
// Claim to check: the streamed runs' peak does not grow with body size: peak
// - baseline of the largest streamed size is at most 1.5x that of the
// smallest (16MiB vs 4MiB by default; at least 1 MiB is assumed for the
// smaller, so noise on a tiny growth is not a ratio). The buffered run's
// growth is printed beside CLIENTS x body size. Exit status 0 when every
// POST got 200 and the claim holds, 1 otherwise.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lpauth/caddy-lpauth/bench/internal/benchkit"
	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// retryBodyLimit is lpauth's default retry_body_limit: bodies of at most
// this many bytes are buffered.
const retryBodyLimit = 1 << 20

func main() { os.Exit(run()) }

func run() int {
	clients, err1 := benchkit.EnvInt("CLIENTS", 64)
	rounds, err2 := benchkit.EnvInt("ROUNDS", 5)
	sizesText := os.Getenv("SIZES")
	if sizesText == "" {
		sizesText = "1MiB 4MiB 16MiB"
	}
	sizes, err3 := parseSizes(sizesText)
	bin, status := benchkit.Start("memory", err1, err2, err3)
	if status != 0 {
		return status
	}

	emu := httptest.NewServer(ccemu.New(ccemu.Config{})) // login only
	defer emu.Close()
	upstream := httptest.NewServer(http.HandlerFunc(discard))
	defer upstream.Close()

	benchkit.Header(fmt.Sprintf("go run ./bench/memory  (CLIENTS=%d ROUNDS=%d SIZES=%q)", clients, rounds, sizesText), bin)

	var results []result
	for _, size := range sizes {
		r, err := measure(bin, emu.URL, upstream.URL, size, clients, rounds)
		if err != nil {
			fmt.Fprintln(os.Stderr, "memory:", err)
			return 1
		}
		results = append(results, r)
	}

	fmt.Println("| body size | mode | clients | rounds | baseline RSS | peak RSS | peak - baseline | POSTs answered 200 |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	ok := true
	for _, r := range results {
		mode := "buffered"
		if r.size > retryBodyLimit {
			mode = "streamed"
		}
		fmt.Printf("| %s (%d B) | %s | %d | %d | %s | %s | %s | %d / %d |\n", sizeName(r.size), r.size, mode, clients, rounds,
			mib(r.baselineKB), mib(r.peakKB), mib(r.peakKB-r.baselineKB), r.ok, r.posts)
		ok = ok && r.ok == r.posts
	}
	fmt.Println()
	fmt.Println("RSS in MiB: baseline is VmRSS after warm-up, peak is VmHWM (lifetime peak) of that Caddy process.")
	if !ok {
		for _, r := range results {
			if r.ok != r.posts {
				fmt.Printf("%s: failures: %v\n", sizeName(r.size), r.failures)
			}
		}
		fmt.Println("NOT every POST got 200 with the whole body delivered")
		return 1
	}
	fmt.Println("every POST got 200 and the upstream read the whole body")

	// The claim: streamed peaks do not scale with body size.
	var streamed []result
	for _, r := range results {
		if r.size > retryBodyLimit {
			streamed = append(streamed, r)
		}
	}
	for _, r := range results {
		if r.size <= retryBodyLimit {
			fmt.Printf("buffered: %s bodies: peak - baseline %s MiB; %d clients x body = %s MiB\n",
				sizeName(r.size), mib(r.peakKB-r.baselineKB), clients, mib(int64(clients)*r.size/1024))
		}
	}
	if len(streamed) < 2 {
		fmt.Println("streamed: fewer than two streamed sizes in SIZES, nothing to compare")
		return 0
	}
	// Smallest against largest streamed size; growth is judged against at
	// least 1 MiB so that a tiny baseline difference is not a ratio.
	lo, hi := streamed[0], streamed[0]
	for _, r := range streamed {
		if r.size < lo.size {
			lo = r
		}
		if r.size > hi.size {
			hi = r
		}
	}
	loGrowth, hiGrowth := lo.peakKB-lo.baselineKB, hi.peakKB-hi.baselineKB
	ratio := float64(hiGrowth) / float64(max(loGrowth, 1024))
	fmt.Printf("streamed: %s bodies are %.1fx the %s ones; peak - baseline %s vs %s MiB, ratio %.2f; target <= 1.5 (does not scale with body size): %s\n",
		sizeName(hi.size), float64(hi.size)/float64(lo.size), sizeName(lo.size), mib(hiGrowth), mib(loGrowth), ratio, benchkit.Yes(ratio <= 1.5))
	if ratio > 1.5 {
		return 1
	}
	return 0
}

type result struct {
	size               int64
	baselineKB, peakKB int64
	posts, ok          int
	failures           map[string]int
}

// measure runs one body size in a fresh Caddy process.
func measure(bin, emuURL, upstreamURL string, size int64, clients, rounds int) (result, error) {
	r := result{size: size, failures: map[string]int{}}
	port, err := caddyproc.FreePort()
	if err != nil {
		return r, err
	}
	addr := caddyproc.Addr(port)
	caddyfile := caddyproc.Proxy{Addr: addr, CSDS: emuURL, Upstream: strings.TrimPrefix(upstreamURL, "http://")}.Caddyfile()
	proxy, err := caddyproc.Start(bin, caddyfile, addr)
	if err != nil {
		return r, err
	}
	defer proxy.Stop(10 * time.Second)

	client := &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        clients,
			MaxIdleConnsPerHost: clients,
			DisableCompression:  true,
		},
		Timeout: 5 * time.Minute,
	}
	defer client.CloseIdleConnections()
	url := "http://" + addr + "/upload"

	// Warm-up: the login, then one small POST per client at once.
	if err := post(client, url, 1024, 0); err != nil {
		return r, fmt.Errorf("warm-up: %v\n%s", err, proxy.Out.Tail(20))
	}
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for c := range clients {
		wg.Go(func() { errs[c] = post(client, url, 1024, uint64(c)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return r, fmt.Errorf("warm-up: %v", err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if r.baselineKB, err = caddyproc.StatusKB(proxy.Pid(), "VmRSS"); err != nil {
		return r, err
	}

	var mu sync.Mutex
	for c := range clients {
		wg.Go(func() {
			for i := range rounds {
				err := post(client, url, size, uint64(c*rounds+i+1)<<8)
				mu.Lock()
				r.posts++
				if err == nil {
					r.ok++
				} else {
					r.failures[err.Error()]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if exited, err := proxy.Exited(); exited {
		return r, fmt.Errorf("caddy exited during the run: %v\n%s", err, proxy.Out.Tail(20))
	}
	if r.peakKB, err = caddyproc.StatusKB(proxy.Pid(), "VmHWM"); err != nil {
		return r, err
	}
	return r, nil
}

// post sends size pseudo-random bytes and checks the answer: 200 and the
// upstream's count of the bytes it read.
func post(client *http.Client, url string, size int64, seed uint64) error {
	req, err := http.NewRequest(http.MethodPost, url, &randomReader{left: size, state: seed*0x9E3779B97F4A7C15 + 1})
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if got := strings.TrimSpace(string(body)); got != strconv.FormatInt(size, 10) {
		return fmt.Errorf("upstream read %s bytes of %d", got, size)
	}
	return nil
}

// discard is the upstream: it reads the body into io.Discard and answers
// how many bytes it read.
func discard(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintln(w, n)
}

// randomReader yields left pseudo-random bytes (xorshift64*), then EOF.
type randomReader struct {
	left  int64
	state uint64
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		r.state ^= r.state >> 12
		r.state ^= r.state << 25
		r.state ^= r.state >> 27
		v := r.state * 2685821657736338717
		for k := 0; k < 8 && n < len(p); k++ {
			p[n] = byte(v >> (8 * k))
			n++
		}
	}
	r.left -= int64(n)
	return n, nil
}

func parseSizes(s string) ([]int64, error) {
	var out []int64
	for f := range strings.FieldsSeq(s) {
		mult := int64(1)
		num := f
		switch {
		case strings.HasSuffix(f, "MiB"):
			mult, num = 1<<20, strings.TrimSuffix(f, "MiB")
		case strings.HasSuffix(f, "KiB"):
			mult, num = 1<<10, strings.TrimSuffix(f, "KiB")
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("SIZES: bad size %q (want bytes, NKiB or NMiB)", f)
		}
		out = append(out, n*mult)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("SIZES is empty")
	}
	return out, nil
}

func sizeName(n int64) string {
	switch {
	case n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " B"
}

func mib(kb int64) string { return strconv.FormatFloat(float64(kb)/1024, 'f', 1, 64) }
