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

// holdBackLimit is the most of a 401's body held back. CC's own 401s are a
// few hundred bytes; a larger one is the endpoint's, and is streamed.
const holdBackLimit = 64 << 10

// holdBackWriter passes a response through untouched unless it is a 401,
// whose status and body (up to holdBackLimit) it holds back so that the
// request can be retried. A 401 whose body outgrows the bound is sent on at
// once, the held bytes first, and the rest streams: Large401 reports it.
// (caddyhttp.NewResponseRecorder does the same job, but allocates twice per
// request and adds a closure call; this one is pooled.) The header map is
// the real one: a held-back 401's headers land there, and the caller
// restores the map before anything else is written.
type holdBackWriter struct {
	caddyhttp.ResponseWriterWrapper

	hold   bool // hold back a 401 (false: only note the status)
	status int  // the final status written, 0 if none yet
	held   bool // a 401 is being held back
	large  bool // a 401 outgrew the bound and was sent on
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
	if hb.status == http.StatusSwitchingProtocols || hb.body.Cap() > 2*holdBackLimit {
		return
	}
	hb.ResponseWriter, hb.hold, hb.status, hb.held, hb.large = nil, false, 0, false, false
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
		if hb.body.Len()+len(p) <= holdBackLimit {
			return hb.body.Write(p)
		}
		if err := hb.sendOn(); err != nil {
			return 0, err
		}
	}
	return hb.ResponseWriter.Write(p)
}

// ReadFrom keeps io.Copy's fast path (sendfile, splice) for responses
// that pass through.
func (hb *holdBackWriter) ReadFrom(r io.Reader) (int64, error) {
	if hb.status == 0 {
		hb.WriteHeader(http.StatusOK)
	}
	var held int64
	if hb.held {
		// One byte past the bound tells a large 401 from one of exactly it.
		n, err := hb.body.ReadFrom(io.LimitReader(r, int64(holdBackLimit-hb.body.Len())+1))
		if err != nil || hb.body.Len() <= holdBackLimit {
			return n, err
		}
		if err := hb.sendOn(); err != nil {
			return n, err
		}
		held = n
	}
	n, err := hb.ResponseWriterWrapper.ReadFrom(r)
	return held + n, err
}

// FlushError flushes a response that passes through; a held-back one (or
// one with no header yet) is not flushed, as Caddy's recorder does.
func (hb *holdBackWriter) FlushError() error {
	if hb.status == 0 || hb.held {
		return nil
	}
	return http.NewResponseController(hb.ResponseWriter).Flush()
}

// Large401 reports a 401 sent on because its body outgrew holdBackLimit:
// the endpoint's own, passed to the client without asking the session.
func (hb *holdBackWriter) Large401() bool { return hb.large }

// sendOn stops holding a 401 that outgrew the bound: its status and the
// bytes held so far go out, and what follows passes through.
func (hb *holdBackWriter) sendOn() error {
	hb.held, hb.large = false, true
	err := hb.writeHeld()
	hb.body.Reset()
	return err
}

// writeHeld sends the held-back 401 as it came.
func (hb *holdBackWriter) writeHeld() error {
	hb.ResponseWriter.WriteHeader(hb.status)
	_, err := hb.ResponseWriter.Write(hb.body.Bytes())
	return err
}
