// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/lpauth/caddy-lpauth/ccemu"
)

// A whole Caddy server with lpauth allocates no more per request than the
// same server with the stock headers handler setting the same
// Authorization, each followed by respond: a flat site, and
// example.Caddyfile's grouped layout (handle_path, then the handler inside
// a catch-all handle). Fresh requests go through caddyhttp.Server.ServeHTTP
// as the listener hands them over. It logs ns/op too, for the record; only
// allocations, which do not vary, are a gate.
func TestServerAllocatesNoMoreThanHeaders(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation gate: the race detector drops pooled objects on purpose; run without -race")
	}
	emu, srv := emulator(t, ccemu.Config{})
	bearer := "Bearer " + strings.Repeat("ab", 32)
	lp := testProxy(srv, "", "", "")
	block := lp.LpauthBlock("\t\t")
	sites := map[string]string{
		"flat/lpauth":     lp.LpauthBlock("\t") + "\trespond 200\n",
		"flat/headers":    "\trequest_header Authorization \"" + bearer + "\"\n\trespond 200\n",
		"grouped/lpauth":  "\thandle_path /proactive/* {\n\t\trespond 204\n\t}\n\thandle {\n" + block + "\t\trespond 200\n\t}\n",
		"grouped/headers": "\thandle_path /proactive/* {\n\t\trespond 204\n\t}\n\thandle {\n\t\trequest_header Authorization \"" + bearer + "\"\n\t\trespond 200\n\t}\n",
	}
	names := []string{"flat/lpauth", "flat/headers", "grouped/lpauth", "grouped/headers"}
	ports := map[string]string{}
	cfg := strings.TrimSuffix(testSite(srv, "", "\trespond 200\n", ""), "\n")
	for _, name := range names {
		ports[name] = loopbackPort(t)
		cfg += fmt.Sprintf("\nhttp://127.0.0.1:%s {\n%s}\n", ports[name], sites[name])
	}
	loadCaddy(t, cfg)
	if r := send(t, "GET", dataPath("warm"), nil); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	app, err := caddy.ActiveContext().AppIfConfigured("http")
	if err != nil {
		t.Fatal(err)
	}
	servers := app.(*caddyhttp.App).Servers

	allocs := map[string]int64{}
	for _, name := range names {
		s := serverOn(t, servers, ports[name])
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+ports[name]+"/api/account/"+ccemu.DefaultAccountID+"/x", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header = benchRequest(3).Header
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req.Clone(context.Background()))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: status %d, want 200: %s", name, rec.Code, rec.Body)
		}
		w := &discardWriter{header: http.Header{}}
		res := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				clear(w.header)
				s.ServeHTTP(w, req.Clone(context.Background()))
			}
		})
		if res.N == 0 {
			t.Fatalf("%s: the benchmark failed", name)
		}
		allocs[name] = res.AllocsPerOp()
		t.Logf("%-16s %6d ns/op %5d B/op %3d allocs/op", name, res.NsPerOp(), res.AllocedBytesPerOp(), res.AllocsPerOp())
	}
	for _, layout := range []string{"flat", "grouped"} {
		if a, b := allocs[layout+"/lpauth"], allocs[layout+"/headers"]; a > b {
			t.Errorf("%s: a server with lpauth makes %d allocations per request, with headers %d", layout, a, b)
		}
	}
	if n := emu.Counters().LoginAttempts; n != 1 {
		t.Fatalf("%d logins, want 1: every request above was served with the one session", n)
	}
}

// loopbackPort returns a port free on 127.0.0.1 now.
func loopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// serverOn finds the server that listens on port.
func serverOn(t *testing.T, servers map[string]*caddyhttp.Server, port string) *caddyhttp.Server {
	t.Helper()
	for _, s := range servers {
		for _, l := range s.Listen {
			if strings.HasSuffix(l, ":"+port) {
				return s
			}
		}
	}
	t.Fatalf("no server listens on port %s", port)
	return nil
}
