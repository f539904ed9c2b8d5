// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
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

func TestScrubRemovesEverySpelling(t *testing.T) {
	t.Parallel()
	for _, secret := range []string{echoedPassword, echoedClientSecret, "plainsecretvalue"} {
		for _, sp := range spellingsToCheck(secret) {
			text := "request was: " + sp + " and again " + sp + "."
			got := scrub(text, []string{secret})
			if p := secretPieceIn(got, secret); p != "" {
				t.Errorf("secret %q spelled %q: %q left %q", secret, sp, got, p)
			}
			if !strings.HasPrefix(got, "request was: …") {
				t.Errorf("the text around the secret changed: %q", got)
			}
		}
	}
	// Scrubbed before cut: a long text does not keep the secret's prefix.
	long := strings.Repeat("x", maxErrorText-5) + echoedClientSecret
	if got := scrubbed(long, maxErrorText, echoedClientSecret); strings.Contains(got, "Wr0ng") {
		t.Errorf("cutting left a prefix of the secret: %q", got[len(got)-20:])
	}
	// Short values and the documented placeholder are left alone.
	if got := scrub("a dummy abc", []string{"dummy", "abc"}); got != "a dummy abc" {
		t.Errorf("scrubbed %q", got)
	}
}

// No input makes a configured secret survive the scrubber.
func FuzzScrub(f *testing.F) {
	f.Add("quoted: "+echoedPassword, echoedPassword)
	f.Add("form: client_secret="+url.QueryEscape(echoedClientSecret), echoedClientSecret)
	f.Add(`{"password":"`+strings.ReplaceAll(echoedPassword, `"`, `\"`)+`"}`, echoedPassword)
	f.Fuzz(func(t *testing.T, text, secret string) {
		if len(secret) < minScrubbed || secret == dummyToken {
			return
		}
		got := scrubbed(text+secret+text+percentEncode(secret), 1<<20, secret)
		if strings.Contains(got, secret) && !strings.Contains(cleanText(text, 1<<20), secret) {
			t.Fatalf("the secret survived: %q", got)
		}
		if !strings.Contains(text, secret) && strings.Contains(scrub(text+secret, []string{secret}), secret) {
			t.Fatalf("the secret survived the scrub")
		}
	})
}
