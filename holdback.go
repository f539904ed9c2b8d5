// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"io"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// holdBackWriter passes a response through untouched unless it is a 401,
// whose status and body it holds back so that the request can be retried.
// (caddyhttp.NewResponseRecorder does the same job, but allocates twice per
// request and adds a closure call; this one is pooled.) The header map is
// the real one: a held-back 401's headers land there, and the caller
// restores the map before anything else is written.
type holdBackWriter struct {
	caddyhttp.ResponseWriterWrapper

	hold   bool // hold back a 401 (false: only note the status)
	status int  // the final status written, 0 if none yet
	held   bool // a 401 is being held back
	body   bytes.Buffer
}

var holdBackPool = sync.Pool{New: func() any { return new(holdBackWriter) }}

func newHoldBackWriter(w http.ResponseWriter, hold bool) *holdBackWriter {
	hb := holdBackPool.Get().(*holdBackWriter)
	hb.ResponseWriter, hb.hold = w, hold
	return hb
}

// release returns the writer to the pool; nothing may use it afterwards.
// An upgraded (hijacked) connection may outlive the handler: its writer is
// left to the garbage collector.
func (hb *holdBackWriter) release() {
	if hb.status == http.StatusSwitchingProtocols || hb.body.Cap() > 64<<10 {
		return
	}
	hb.ResponseWriter, hb.hold, hb.status, hb.held = nil, false, 0, false
	hb.body.Reset()
	holdBackPool.Put(hb)
}

func (hb *holdBackWriter) WriteHeader(code int) {
	if hb.status != 0 {
		return
	}
	// 1xx are informational and pass, except 101, which is final.
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		hb.ResponseWriter.WriteHeader(code)
		return
	}
	hb.status = code
	if hb.hold && code == http.StatusUnauthorized {
		hb.held = true
		return
	}
	hb.ResponseWriter.WriteHeader(code)
}

func (hb *holdBackWriter) Write(p []byte) (int, error) {
	if hb.status == 0 {
		hb.WriteHeader(http.StatusOK)
	}
	if hb.held {
		return hb.body.Write(p)
	}
	return hb.ResponseWriter.Write(p)
}

// ReadFrom keeps io.Copy's fast path (sendfile, splice) for responses
// that pass through.
func (hb *holdBackWriter) ReadFrom(r io.Reader) (int64, error) {
	if hb.status == 0 {
		hb.WriteHeader(http.StatusOK)
	}
	if hb.held {
		return hb.body.ReadFrom(r)
	}
	return hb.ResponseWriterWrapper.ReadFrom(r)
}

// FlushError flushes a response that passes through; a held-back one (or
// one with no header yet) is not flushed, as Caddy's recorder does.
func (hb *holdBackWriter) FlushError() error {
	if hb.status == 0 || hb.held {
		return nil
	}
	return http.NewResponseController(hb.ResponseWriter).Flush()
}

// writeHeld sends the held-back 401 as it came.
func (hb *holdBackWriter) writeHeld() error {
	hb.ResponseWriter.WriteHeader(hb.status)
	_, err := hb.ResponseWriter.Write(hb.body.Bytes())
	return err
}
