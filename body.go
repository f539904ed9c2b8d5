// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The request body kept for a retry, in pooled buffers.

// bufferBody reads a body of up to the limit so it can be replayed: r.Body
// becomes a reader of the buffer, which the caller releases when it is
// done with it (nil: no body). A larger body is put back together (what
// was read, then the rest) and streamed: replayable is false.
func (h *Handler) bufferBody(r *http.Request) (_ *replayBody, replayable bool, _ error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	if r.Method == http.MethodConnect {
		// An HTTP/2 extended CONNECT (a WebSocket over HTTP/2): its body
		// is the stream itself, which never ends while the socket lives.
		return nil, false, nil
	}
	limit := h.RetryBodyLimit
	if r.ContentLength > limit {
		return nil, false, nil
	}
	b := getReplayBody()
	if r.ContentLength > 0 {
		// Trust the client's length only so far: the body may never come.
		b.buf.Grow(int(min(r.ContentLength, 1<<20)) + bytes.MinRead)
	}
	n, err := b.buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		b.release()
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, false, caddyhttp.Error(http.StatusRequestEntityTooLarge, err)
		}
		return nil, false, caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("lpauth: reading request body: %w", err))
	}
	if n > limit {
		// The buffer goes downstream with the rest and never back to the
		// pool: nobody tells when the proxy is done with it.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(b.buf.Bytes()), r.Body), r.Body}
		return nil, false, nil
	}
	r.Body = b.reader()
	return b, true, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// replayBody is a pooled buffer for a body that may be sent twice. The
// handler holds one reference, and every reader handed downstream one more
// until it is closed; the buffer goes back to the pool only when all are
// released. Go's transport may still be reading a body in its write
// goroutine after the handler has returned (when upstream answered before
// the upload ended): a buffer returned when ServeHTTP returns, as
// reverse_proxy returns its own, could hand one request's bytes to another.
// A reader that is never closed keeps its buffer out of the pool, for the
// garbage collector.
type replayBody struct {
	buf  bytes.Buffer
	refs atomic.Int32
}

var replayBodies = sync.Pool{New: func() any { return new(replayBody) }}

// maxPooledBody bounds the buffers kept: a rare large body is not pinned.
const maxPooledBody = 256 << 10

func getReplayBody() *replayBody {
	b := replayBodies.Get().(*replayBody)
	b.refs.Store(1)
	return b
}

// release drops one reference; the last one returns the buffer.
func (b *replayBody) release() {
	if b.refs.Add(-1) != 0 || b.buf.Cap() > maxPooledBody {
		return
	}
	b.buf.Reset()
	replayBodies.Put(b)
}

// reader returns a reader of the whole body that holds a reference until
// it is closed.
func (b *replayBody) reader() io.ReadCloser {
	b.refs.Add(1)
	rd := &bodyReader{owner: b}
	rd.r.Reset(b.buf.Bytes())
	return rd
}

// bodyReader reads a replayBody until it is closed. Reads and Close are
// serialised, so a Read that races a Close never touches a buffer already
// back in the pool; a Read after Close fails. Each reader is used once and
// never pooled: a stale reference can reach nothing but its own error.
type bodyReader struct {
	mu    sync.Mutex
	r     bytes.Reader
	owner *replayBody // nil once closed
}

func (rd *bodyReader) Read(p []byte) (int, error) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.owner == nil {
		return 0, http.ErrBodyReadAfterClose
	}
	return rd.r.Read(p)
}

func (rd *bodyReader) Close() error {
	rd.mu.Lock()
	owner := rd.owner
	rd.owner = nil
	rd.r.Reset(nil)
	rd.mu.Unlock()
	if owner != nil {
		owner.release()
	}
	return nil
}
