// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lpauth/caddy-lpauth/ccemu"
	"github.com/lpauth/caddy-lpauth/internal/cc"
)

// Secrets with every character class that escapes differently: quotes,
// a backslash, spaces, &, =, +, /, %, <, > and non-ASCII.
const (
	echoedPassword     = `Wr0ng "P4ss" w/ sp&ces=+%41 <ümlaut>\x`
	echoedClientSecret = `Wr0ng S3cret/+&=x%41`
)

// spellingsToCheck are the ways a server may quote a secret back, including
// percent-encoding with lower-case hex.
func spellingsToCheck(s string) []string {
	return append(encodings(s), lowerHex(percentEncode(s)), lowerHex(url.QueryEscape(s)))
}

// encodings is s itself, then s JSON-escaped as encoding/json writes it
// (with and without its HTML escapes), form-encoded, percent-encoded and
// path-escaped: the spellings internal/cc's scrubber knows, which its own
// tests check one by one.
func encodings(s string) []string {
	out := []string{s, url.QueryEscape(s), url.PathEscape(s), percentEncode(s)}
	if j, err := json.Marshal(s); err == nil {
		out = append(out, string(j[1:len(j)-1]))
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(s) == nil {
		j := strings.TrimSuffix(b.String(), "\n")
		out = append(out, j[1:len(j)-1])
	}
	return out
}

// percentEncode escapes every byte outside RFC 3986's unreserved set.
func percentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

var hexEscape = regexp.MustCompile(`%[0-9A-F]{2}`)

// lowerHex writes the percent escapes of s with lower-case hex digits.
func lowerHex(s string) string { return hexEscape.ReplaceAllStringFunc(s, strings.ToLower) }

// secretPieceIn returns a substring of 8 or more characters of any spelling
// of secret that text contains, or "".
func secretPieceIn(text, secret string) string {
	const piece = 8
	for _, sp := range spellingsToCheck(secret) {
		for i := 0; i+piece <= len(sp); i++ {
			if strings.Contains(text, sp[i:i+piece]) {
				return sp[i : i+piece]
			}
		}
	}
	return ""
}

// echoingFront stands before the emulator as a proxy or WAF that quotes the
// request back in its errors: every error the emulator answers (a refused
// login, a refused client) is replaced by one whose message carries the
// request body in every spelling the scrubber knows and a few more.
func echoingFront(t *testing.T, emu *ccemu.Emulator) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, r)
		if rec.Code < 400 {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return
		}
		b := string(body)
		msg := fmt.Sprintf("rejected %s | %s | %s | %s | %s | %s", b, url.QueryEscape(b), percentEncode(b),
			lowerHex(percentEncode(b)), url.PathEscape(b), strings.ReplaceAll(b, `"`, `\"`))
		var reply []byte
		if strings.Contains(r.URL.Path, "/sentinel/") {
			reply, _ = json.Marshal(map[string]string{"error": "invalid_client", "error_description": msg})
		} else {
			reply, _ = json.Marshal(map[string]any{"error": map[string]any{"message": msg, "internalCode": 3, "responseStatus": msg}})
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.Code)
		w.Write(reply)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { cc.DropDomainAnswers(srv.URL) })
	return srv
}

// A wrong password and a wrong client secret, quoted back by the CC side in
// its errors, in every spelling: no piece of 8 characters of either, in any
// spelling, reaches a log line (debug level), an event or the admin API.
func TestEchoedSecretsNeverLogged(t *testing.T) {
	startRecording(t)
	emu := ccemu.New(ccemu.Config{})
	front := echoingFront(t, emu)
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	t.Setenv("LPAUTH_TEST_ECHOED_PASSWORD", echoedPassword)
	t.Setenv("LPAUTH_TEST_ECHOED_CLIENT_SECRET", echoedClientSecret)
	global := fmt.Sprintf("log {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t}\n\tdebug\n\t%s", logFile, eventsGlobal())
	user := strings.Replace(testProxy(front, "", reverseProxyTo(front), global).LpauthBlock("\t\t"),
		"password {env."+testPasswordEnv+"}", "password {env.LPAUTH_TEST_ECHOED_PASSWORD}", 1)
	if !strings.Contains(user, "LPAUTH_TEST_ECHOED_PASSWORD") {
		t.Fatal("the user block has no password line to replace")
	}
	appJWT := testProxy(front, "", "", "")
	appJWT.ClientSecret = "{env.LPAUTH_TEST_ECHOED_CLIENT_SECRET}"
	cfg := strings.Replace(bareSite("\thandle /jwt/* {\n"+appJWT.LpauthBlock("\t\t")+"\t\treverse_proxy "+hostport(front)+"\n\t}\n"+
		"\thandle {\n"+user+"\t\treverse_proxy "+hostport(front)+"\n\t}\n"), "skip_install_trust", "skip_install_trust\n\t"+global, 1)
	loadCaddy(t, cfg)
	eventually(t, 5*time.Second, "both refused", func() bool {
		c := emu.Counters()
		return c.LoginsRefused >= 1 && c.TokenRequestsInvalidClient >= 1
	})
	send(t, "GET", dataPath("x"), nil)
	send(t, "GET", "/jwt"+dataPath("x"), nil)
	resp, err := http.Get("http://" + adminAddr + "/lpauth/sessions")
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(admin, []byte("rejected")) {
		t.Fatalf("the admin API does not show the refusals' text, so the check below proves nothing: %s", admin)
	}
	unloadCaddy(t)
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	recorded.Lock()
	var eventData []map[string]any
	for _, e := range recorded.list {
		eventData = append(eventData, e.data)
	}
	recorded.Unlock()
	events, _ := json.Marshal(eventData)
	if !bytes.Contains(events, []byte("rejected")) {
		t.Fatalf("no event carries the refusals' text, so the check below proves nothing: %s", events)
	}
	for where, text := range map[string]string{"the log": string(logs), "the events": string(events), "the admin API": string(admin)} {
		for _, secret := range []string{echoedPassword, echoedClientSecret} {
			if p := secretPieceIn(text, secret); p != "" {
				t.Errorf("%s carries %q, a piece of a secret", where, p)
			}
		}
	}
}
