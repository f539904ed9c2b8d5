// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Command memory measures the peak resident memory of a Caddy proxy running
// lpauth + reverse_proxy while many clients POST large bodies: bodies up to
// retry_body_limit (default 1MiB, inclusive) are buffered so they can be
// replayed after a 401; larger ones are streamed. A last run has the
// upstream answer 401 with a large body: lpauth holds back at most 64 KiB of
// a 401, so a larger one streams to the client too.
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
// the limit, hence buffered), LARGE_401 (default 300MiB; 0 skips the run)
// and LARGE_401_CLIENTS (default 4): that many clients GET one 401 of
// that body size each, and check every byte.
//
// Claims to check: the streamed runs' peak does not grow with body size: peak
// - baseline of the largest streamed size is at most 1.5x that of the
// smallest (16MiB vs 4MiB by default; at least 1 MiB is assumed for the
// smaller, so noise on a tiny growth is not a ratio); and the large 401's
// peak - baseline is under a quarter of one such body (holding back even
// one would cost a whole body). The buffered run's growth is printed beside
// CLIENTS x body size. Exit status 0 when every request was answered as
// expected and the claims hold, 1 otherwise.
package main

import (
	"bytes"
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
	large401Text := os.Getenv("LARGE_401")
	if large401Text == "" {
		large401Text = "300MiB"
	}
	var large401 int64
	var err4 error
	if large401Text != "0" {
		var l []int64
		if l, err4 = parseSizes(large401Text); err4 == nil && len(l) != 1 {
			err4 = fmt.Errorf("LARGE_401: want one size, got %q", large401Text)
		}
		if err4 == nil {
			large401 = l[0]
		}
	}
	large401Clients, err5 := benchkit.EnvInt("LARGE_401_CLIENTS", 4)
	bin, status := benchkit.Start("memory", err1, err2, err3, err4, err5)
	if status != 0 {
		return status
	}

	emu := httptest.NewServer(ccemu.New(ccemu.Config{})) // login only
	defer emu.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("/upload", discard)
	mux.HandleFunc("/large401", unauthorized)
	upstream := httptest.NewServer(mux)
	defer upstream.Close()

	benchkit.Header(fmt.Sprintf("go run ./bench/memory  (CLIENTS=%d ROUNDS=%d SIZES=%q LARGE_401=%s LARGE_401_CLIENTS=%d)",
		clients, rounds, sizesText, large401Text, large401Clients), bin)

	cases := make([]benchCase, 0, len(sizes)+1)
	for _, size := range sizes {
		mode := "buffered"
		if size > retryBodyLimit {
			mode = "streamed"
		}
		cases = append(cases, benchCase{size: size, clients: clients, rounds: rounds, mode: mode})
	}
	if large401 > 0 {
		cases = append(cases, benchCase{size: large401, clients: large401Clients, rounds: 1, mode: "401 from upstream, streamed back", large401: true})
	}
	var results []result
	for _, c := range cases {
		r, err := measure(bin, emu.URL, upstream.URL, c)
		if err != nil {
			fmt.Fprintln(os.Stderr, "memory:", err)
			return 1
		}
		results = append(results, r)
	}

	fmt.Println("| body size | mode | clients | rounds | baseline RSS | peak RSS | peak - baseline | answered as expected |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	ok := true
	for _, r := range results {
		fmt.Printf("| %s (%d B) | %s | %d | %d | %s | %s | %s | %d / %d |\n", sizeName(r.size), r.size, r.mode, r.clients, r.rounds,
			mib(r.baselineKB), mib(r.peakKB), mib(r.peakKB-r.baselineKB), r.ok, r.posts)
		ok = ok && r.ok == r.posts
	}
	fmt.Println()
	fmt.Println("RSS in MiB: baseline is VmRSS after warm-up, peak is VmHWM (lifetime peak) of that Caddy process.")
	fmt.Println("Expected: a POST gets 200 and the upstream read the whole body; a large 401 reaches the client whole, byte for byte.")
	if !ok {
		for _, r := range results {
			if r.ok != r.posts {
				fmt.Printf("%s: failures: %v\n", sizeName(r.size), r.failures)
			}
		}
		fmt.Println("NOT every request was answered as expected")
		return 1
	}
	fmt.Println("every request was answered as expected")

	// A large 401 is not held back: its growth stays under a quarter of one body.
	status = 0
	var streamed []result
	for _, r := range results {
		switch {
		case r.large401:
			growth := r.peakKB - r.baselineKB
			fmt.Printf("large 401: %s bodies to %d clients; peak - baseline %s MiB; target < a quarter of one body (%s MiB): %s\n",
				sizeName(r.size), r.clients, mib(growth), mib(r.size/4/1024), benchkit.Yes(growth*1024 < r.size/4))
			if growth*1024 >= r.size/4 {
				status = 1
			}
		case r.size > retryBodyLimit:
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
		return status
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
	return status
}

// benchCase is one run: clients each send rounds requests with bodies (or,
// for large401, get 401 answers) of size bytes.
type benchCase struct {
	size            int64
	clients, rounds int
	mode            string
	large401        bool
}

type result struct {
	benchCase
	baselineKB, peakKB int64
	posts, ok          int
	failures           map[string]int
}

// measure runs one case in a fresh Caddy process.
func measure(bin, emuURL, upstreamURL string, c benchCase) (result, error) {
	r := result{benchCase: c, failures: map[string]int{}}
	clients, rounds, size := c.clients, c.rounds, c.size
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
	send := post
	if c.large401 {
		send = func(client *http.Client, url string, size int64, seed uint64) error {
			return get401(client, strings.TrimSuffix(url, "/upload")+"/large401", size, seed)
		}
	}
	for c := range clients {
		wg.Go(func() {
			for i := range rounds {
				err := send(client, url, size, uint64(c*rounds+i+1)<<8)
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

// get401 asks the upstream for a 401 with a body of size pseudo-random bytes
// and checks that it arrives whole, byte for byte.
func get401(client *http.Client, url string, size int64, seed uint64) error {
	resp, err := client.Get(fmt.Sprintf("%s?size=%d&seed=%d", url, size, seed))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("status %d, want the upstream's 401", resp.StatusCode)
	}
	want := &randomReader{left: size, state: seed*0x9E3779B97F4A7C15 + 1}
	got, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var n int64
	for {
		k, err := resp.Body.Read(got)
		if k > 0 {
			if _, werr := io.ReadFull(want, exp[:k]); werr != nil || !bytes.Equal(got[:k], exp[:k]) {
				return fmt.Errorf("401 body differs from what the upstream sent after byte %d", n)
			}
			n += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes of the 401: %v", n, err)
		}
	}
	if n != size {
		return fmt.Errorf("401 body: %d bytes of %d", n, size)
	}
	return nil
}

// unauthorized is the upstream's large 401: size pseudo-random bytes from
// seed, with a Content-Length.
func unauthorized(w http.ResponseWriter, r *http.Request) {
	size, err1 := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	seed, err2 := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
	if err1 != nil || err2 != nil {
		http.Error(w, "size and seed, please", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusUnauthorized)
	io.Copy(w, &randomReader{left: size, state: seed*0x9E3779B97F4A7C15 + 1})
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

// randomReader yields left pseudo-random bytes (xorshift64*), then EOF. The
// stream is the same however it is read, so a client can regenerate it to
// check what it received.
type randomReader struct {
	left  int64
	state uint64
	v     uint64 // the current word; its low have bytes are still unread
	have  int
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	for n := range p {
		if r.have == 0 {
			r.state ^= r.state >> 12
			r.state ^= r.state << 25
			r.state ^= r.state >> 27
			r.v, r.have = r.state*2685821657736338717, 8
		}
		p[n] = byte(r.v)
		r.v >>= 8
		r.have--
	}
	r.left -= int64(len(p))
	return len(p), nil
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
