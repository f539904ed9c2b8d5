// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package cc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxRetryAfter caps a Retry-After from CC, whether in seconds or a date.
const maxRetryAfter = 24 * time.Hour

// APIError is a non-2xx answer of the Domain API or the Login Service.
type APIError struct {
	Op             string        // "domain lookup", "login", "refresh", "logout"
	StatusCode     int           // HTTP status
	InternalCode   int           // error.internalCode, 0 if absent
	Message        string        // error.message, or the plain-string error
	ResponseStatus string        // error.responseStatus, if present
	RetryAfter     time.Duration // from the Retry-After header, 0 if absent
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.Op, e.StatusCode)
	if e.InternalCode != 0 {
		fmt.Fprintf(&b, " (internal code %d)", e.InternalCode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// parseAPIError reads CC's error envelope and its real-world variants:
// {"error":{"time","message","internalCode","responseStatus"}} (time as
// text or ISO, responseStatus optional), {"error":"plain text"}, or a body
// that is not JSON at all. Its text is scrubbed of secrets (see scrub.go).
func parseAPIError(op string, resp *http.Response, body []byte, secrets ...string) *APIError {
	e := &APIError{Op: op, StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var env struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil && len(env.Error) > 0 {
		// Each field is read on its own, so that one of an unexpected
		// type (a numeric responseStatus) does not lose the others.
		var text string
		var obj struct {
			Message        json.RawMessage `json:"message"`
			InternalCode   json.RawMessage `json:"internalCode"`
			ResponseStatus json.RawMessage `json:"responseStatus"`
		}
		switch {
		case json.Unmarshal(env.Error, &text) == nil:
			e.Message = text
		case json.Unmarshal(env.Error, &obj) == nil:
			e.Message = looseString(obj.Message)
			e.ResponseStatus = looseString(obj.ResponseStatus)
			e.InternalCode = parseLooseInt(obj.InternalCode)
		}
	} else if len(body) > 0 && !bytes.ContainsAny(body, "{}<") {
		e.Message = string(body)
	}
	// CC's text ends up in log lines: no secret, no control characters,
	// bounded.
	e.Message = scrubbed(e.Message, maxErrorText, secrets...)
	e.ResponseStatus = scrubbed(e.ResponseStatus, 64, secrets...)
	return e
}

// maxErrorText bounds the text of an APIError, in runes.
const maxErrorText = 200

// looseString reads a JSON string, or keeps a number or literal as text;
// "" for anything else.
func looseString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// cleanText makes text from outside safe for a log line: invalid UTF-8
// becomes U+FFFD; control characters (CR, LF, ESC, ...), format characters
// (bidi overrides, zero-width) and line separators become spaces; the
// result is trimmed and cut to at most n runes.
func cleanText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, string(utf8.RuneError)))
	return truncate(strings.TrimSpace(s), n)
}

// parseLooseInt accepts 10 or "10": the envelope's producers disagree.
func parseLooseInt(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(s))
	}
	return n
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or
// unparsable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// truncate cuts s to at most n runes (never inside one), marking the cut
// with an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	runes := 0
	for i := range s {
		if runes == n {
			return s[:i] + "…"
		}
		runes++
	}
	return s
}
