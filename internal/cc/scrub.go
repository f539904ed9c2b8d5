// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// A CC host, or a proxy or WAF in front of it, may quote the request back
// in its error: the password of a login body, the client secret of a token
// request. Every error text taken from a CC answer is scrubbed of the
// secrets the call sent or received before it is cut to its length (cutting
// first could leave a secret's prefix), so none reaches a log line, an
// event or the admin API.

// scrubbed is the text of a CC answer made safe to show: every spelling of
// every secret removed, then cleaned and cut to at most n runes.
func scrubbed(text string, n int, secrets ...string) string {
	return cleanText(scrub(text, secrets), n)
}

// minScrubbed is the length below which a value is not scrubbed: it would
// take every occurrence of a common word or character with it, and it hides
// nothing.
const minScrubbed = 4

// scrub replaces each secret, in every spelling a server may quote it in,
// with "…": as it is; JSON-escaped as encoding/json writes it, with and
// without its HTML escapes; form-encoded (url.QueryEscape, space as +);
// percent-encoded as RFC 3986 has it (every byte but the unreserved ones,
// space as %20); and path-escaped; and each of those encoded once more.
// Percent escapes match in either case.
func scrub(text string, secrets []string) string {
	var spellings []spelling
	for _, s := range secrets {
		if len(s) < minScrubbed || s == dummyToken {
			continue
		}
		for _, sp := range spellingsOf(s) {
			spellings = append(spellings, newSpelling(sp))
		}
	}
	if len(spellings) == 0 || text == "" {
		return text
	}
	// Longest first, so that a spelling is never cut in two by a shorter
	// one it contains.
	slices.SortFunc(spellings, func(a, b spelling) int { return len(b.s) - len(a.s) })
	var b strings.Builder
	for i := 0; i < len(text); {
		n := 0
		for _, sp := range spellings {
			if sp.at(text, i) {
				n = len(sp.s)
				break
			}
		}
		if n == 0 {
			b.WriteByte(text[i])
			i++
			continue
		}
		b.WriteString("…")
		i += n
	}
	return b.String()
}

// spelling is one way to write a secret; hex marks the hex digits of its
// percent escapes, which match in either case.
type spelling struct {
	s   string
	hex []bool
}

func newSpelling(s string) spelling {
	sp := spelling{s: s, hex: make([]bool, len(s))}
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			sp.hex[i+1], sp.hex[i+2] = true, true
		}
	}
	return sp
}

// at says whether text holds the spelling at i. Bytes, not runes: a secret
// need not be valid UTF-8.
func (sp spelling) at(text string, i int) bool {
	if len(text)-i < len(sp.s) {
		return false
	}
	for j := 0; j < len(sp.s); j++ {
		c, t := sp.s[j], text[i+j]
		if c != t && !(sp.hex[j] && isHex(t) && lowerASCII(c) == lowerASCII(t)) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// dummyToken is what an OAuth2 application login sends as its two token
// fields: a documented placeholder, not a secret.
const dummyToken = "dummy"

// spellingsOf is s in every encoding a server may quote it in, and each
// of those encoded once more (a JSON body quoted percent-encoded, a form
// value quoted JSON-escaped).
func spellingsOf(s string) []string {
	once := encodings(s)
	out := once
	for _, e := range once[1:] {
		out = append(out, encodings(e)[1:]...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// encodings is s itself, then s JSON-escaped as encoding/json writes it
// (with and without its HTML escapes), form-encoded, percent-encoded and
// path-escaped.
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
