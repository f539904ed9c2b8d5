// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package lpauth

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// A reader still open after the handler returned (Go's transport reading
// the body in its write goroutine) reads the body as it came while other
// requests take buffers from the pool and fill them; once it is closed, the
// buffer may serve another request.
func TestReplayBodyOutlivesTheHandlerWhileAReaderIsOpen(t *testing.T) {
	want := strings.Repeat("the body as it came. ", 200)
	b := getReplayBody()
	b.buf.WriteString(want)
	late := b.reader()
	b.release() // ServeHTTP returned
	for range 1000 {
		other := getReplayBody()
		if other == b {
			t.Fatal("the pool handed out a buffer a reader still holds")
		}
		other.buf.WriteString(strings.Repeat("x", len(want)))
		other.release()
	}
	got, err := io.ReadAll(late)
	if err != nil || string(got) != want {
		t.Fatalf("the late reader read %d bytes (err %v), want the %d bytes as they came", len(got), err, len(want))
	}
	if err := late.Close(); err != nil {
		t.Fatal(err)
	}
	if n := b.refs.Load(); n != 0 {
		t.Fatalf("%d references left after the last reader closed", n)
	}
}

// A Read after Close fails and reads nothing of a buffer that may already
// serve another request; Close twice releases once.
func TestReplayBodyReadAfterCloseFails(t *testing.T) {
	b := getReplayBody()
	b.buf.WriteString("secret-free payload")
	rd := b.reader()
	retry := b.reader()
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 8)
	if n, err := rd.Read(p); n != 0 || !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Fatalf("Read after Close: %d bytes, %v", n, err)
	}
	if n := b.refs.Load(); n != 2 {
		t.Fatalf("%d references after one reader closed twice, want 2 (the handler's and the retry's)", n)
	}
	if got, _ := io.ReadAll(retry); string(got) != "secret-free payload" {
		t.Fatalf("the other reader read %q", got)
	}
}

// Reads racing a Close (the transport's write goroutine against the round
// trip's end) see either bytes of the body or the closed error, never
// another request's bytes; run with -race.
func TestReplayBodyReadRacingClose(t *testing.T) {
	for range 200 {
		b := getReplayBody()
		b.buf.Write(bytes.Repeat([]byte{'a'}, 4096))
		rd := b.reader()
		b.release()
		var wg sync.WaitGroup
		wg.Go(func() {
			p := make([]byte, 64)
			for {
				n, err := rd.Read(p)
				if bytes.ContainsFunc(p[:n], func(r rune) bool { return r != 'a' }) {
					t.Error("a read saw bytes that are not the body's")
					return
				}
				if err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			rd.Close()
			other := getReplayBody()
			other.buf.Write(bytes.Repeat([]byte{'z'}, 4096))
			other.release()
		})
		wg.Wait()
	}
}
