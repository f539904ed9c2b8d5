// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/caddyproc"
)

// A 401 with a 300 MB body passes through the built binary whole, and the
// proxy's peak RSS stays far below the body: only the first 64 KiB of a
// 401 is ever held back.
func TestE2ELarge401DoesNotGrowRSS(t *testing.T) {
	e2eTier(t)
	const blocks, blockSize = 300, 1 << 20
	block := make([]byte, blockSize)
	if _, err := rand.Read(block); err != nil {
		t.Fatal(err)
	}
	want := sha256.New()
	for range blocks {
		want.Write(block)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(blocks*blockSize))
		w.WriteHeader(http.StatusUnauthorized)
		for range blocks {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
	}))
	defer upstream.Close()
	emu := httptest.NewServer(ccemu.New(ccemu.Config{})) // login only
	defer emu.Close()

	addr := caddyproc.Addr(freePort(t))
	p := startCaddyfile(t, caddyproc.Proxy{Addr: addr, CSDS: emu.URL, Upstream: hostport(upstream)}.Caddyfile(), addr)
	pid := p.cmd.Process.Pid
	baseline, err := caddyproc.StatusKB(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + "/large")
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 401 || n != blocks*blockSize {
		t.Fatalf("status %d, %d bytes (%v); want the 401 with all %d", resp.StatusCode, n, err, blocks*blockSize)
	}
	if hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
		t.Fatal("the 401's body arrived altered")
	}
	peak, err := caddyproc.StatusKB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("proxy RSS: baseline %d MiB, peak %d MiB, for a %d MiB 401", baseline>>10, peak>>10, blocks*blockSize>>20)
	if peak > 150<<10 {
		t.Fatalf("peak RSS %d MiB for a %d MiB 401 body: it was buffered", peak>>10, blocks*blockSize>>20)
	}
}
