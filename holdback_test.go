// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/lpauth/caddy-lpauth/ccemu"
)

// unauthorizedUpstream answers every request 401 with body, which it sends
// in 32 KiB writes; under /chunked without a Content-Length.
func unauthorizedUpstream(t *testing.T, body []byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("WWW-Authenticate", `Bearer realm="endpoint"`)
		if !strings.HasPrefix(r.URL.Path, "/chunked") {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(http.StatusUnauthorized)
		for rest := body; len(rest) > 0; {
			n := min(len(rest), 32<<10)
			if _, err := w.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// holdBackProxy runs lpauth (logged in to its own emulator, account acct)
// in front of reverse_proxy to upstream.
func holdBackProxy(t *testing.T, acct string, upstream *httptest.Server) *ccemu.Emulator {
	t.Helper()
	emu, srv := emulator(t, ccemu.Config{AccountID: acct})
	cfg := strings.Replace(testSite(srv, "", reverseProxyTo(upstream), ""), "account_id "+ccemu.DefaultAccountID, "account_id "+acct, 1)
	loadCaddy(t, cfg)
	return emu
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// A 401 whose body is larger than what is held back is the endpoint's own:
// it reaches the client whole, and the session is not asked about.
func TestHoldBackLarge401StreamsWhole(t *testing.T) {
	big, sum := randomBody(t, 1<<20)
	emu := holdBackProxy(t, "88880901", unauthorizedUpstream(t, big))
	for _, path := range []string{"/sized", "/chunked"} {
		r := send(t, "GET", path, nil)
		if r.status != 401 || r.header.Get("WWW-Authenticate") != `Bearer realm="endpoint"` {
			t.Fatalf("%s: %d %v, want the endpoint's 401 with its headers", path, r.status, r.header)
		}
		if len(r.body) != len(big) || sha(r.body) != sum {
			t.Fatalf("%s: the client got %d bytes (sha %s), the endpoint sent %d (sha %s)", path, len(r.body), sha(r.body), len(big), sum)
		}
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Refreshes != 0 {
		t.Fatalf("two large 401s: %+v; want the one login and no refresh", n)
	}
}

// A 401 of at most the bound still takes the normal path: held back, the
// session checked once, then passed on as it came.
func TestHoldBackSmall401StillChecksTheSession(t *testing.T) {
	body := bytes.Repeat([]byte("x"), holdBackLimit) // exactly the bound: held
	emu := holdBackProxy(t, "88880902", unauthorizedUpstream(t, body))
	for _, path := range []string{"/sized", "/chunked"} {
		if r := send(t, "GET", path, nil); r.status != 401 || !bytes.Equal(r.body, body) {
			t.Fatalf("%s: %d with %d bytes, want the 401 with its %d", path, r.status, len(r.body), len(body))
		}
	}
	if n := emu.Counters(); n.LoginAttempts != 1 || n.Refreshes != 1 {
		t.Fatalf("two small 401s: %+v; want one login and the one verifying refresh", n)
	}
}

// The large 401 is counted as an outcome of its own.
func TestHoldBackLarge401IsCounted(t *testing.T) {
	const acct = "88880903"
	big, _ := randomBody(t, holdBackLimit+1)
	holdBackProxy(t, acct, unauthorizedUpstream(t, big))
	for range 3 {
		if r := send(t, "GET", "/sized", nil); r.status != 401 || len(r.body) != len(big) {
			t.Fatalf("%d with %d bytes", r.status, len(r.body))
		}
	}
	got := scrape(t)
	for k, want := range map[string]float64{
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="large_401"}`: 3,
		`caddy_lpauth_retries_total{account_id="` + acct + `",outcome="passed"}`:    0,
		`caddy_lpauth_upstream_unauthorized_total{account_id="` + acct + `"}`:       3,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// The writer itself: it never holds more than the bound, and once a 401
// outgrows it, sends the held bytes first, then the rest.
func TestHoldBackWriterBoundsWhatItHolds(t *testing.T) {
	big, sum := randomBody(t, 1<<20)
	for _, how := range []string{"Write", "ReadFrom"} {
		t.Run(how, func(t *testing.T) {
			rec := httptest.NewRecorder()
			hb := newHoldBackWriter(rec, true)
			hb.WriteHeader(http.StatusUnauthorized)
			if !hb.held || rec.Code != 200 || rec.Body.Len() != 0 {
				t.Fatal("a 401 was not held back")
			}
			switch how {
			case "Write":
				for rest := big; len(rest) > 0; {
					n := min(len(rest), 10000)
					if k, err := hb.Write(rest[:n]); k != n || err != nil {
						t.Fatalf("Write: %d, %v", k, err)
					}
					if hb.body.Len() > holdBackLimit {
						t.Fatalf("holding %d bytes", hb.body.Len())
					}
					rest = rest[n:]
				}
			case "ReadFrom":
				if n, err := hb.ReadFrom(bytes.NewReader(big)); n != int64(len(big)) || err != nil {
					t.Fatalf("ReadFrom: %d, %v", n, err)
				}
			}
			if hb.held || !hb.Large401() || hb.body.Cap() > 4*holdBackLimit { // bounded, whatever the body
				t.Fatalf("held %v, large %v, buffer cap %d", hb.held, hb.Large401(), hb.body.Cap())
			}
			if rec.Code != 401 || rec.Body.Len() != len(big) || sha(rec.Body.Bytes()) != sum {
				t.Fatalf("sent %d with %d bytes, want 401 with the %d sent", rec.Code, rec.Body.Len(), len(big))
			}
			hb.release()
		})
	}
	// At the bound it is still held, and not large.
	rec := httptest.NewRecorder()
	hb := newHoldBackWriter(rec, true)
	hb.WriteHeader(http.StatusUnauthorized)
	if n, err := io.Copy(hb, bytes.NewReader(big[:holdBackLimit])); n != holdBackLimit || err != nil || !hb.held || hb.Large401() {
		t.Fatalf("a 401 of exactly the bound: copied %d (%v), held %v, large %v", n, err, hb.held, hb.Large401())
	}
	hb.release()
}
