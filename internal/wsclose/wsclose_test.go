// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

package wsclose

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

const (
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opPing   = 0x9
	opPong   = 0xa
)

// Length encodings for frame: the shortest one, or a forced one (the
// 16- and 64-bit forms are then used even for short payloads, which RFC
// 6455 forbids but which frames the bytes just the same).
const (
	lenAuto = iota
	len7
	len16
	len64
)

type frameOpts struct {
	noFin bool
	rsv   byte // RSV bits, already in place (0x40, 0x20, 0x10)
	form  int
	key   *[4]byte
}

// frame builds one frame by hand, independently of the reader.
func frame(op byte, payload []byte, o frameOpts) []byte {
	var b []byte
	first := op | o.rsv
	if !o.noFin {
		first |= 0x80
	}
	b = append(b, first)
	var mask byte
	if o.key != nil {
		mask = 0x80
	}
	n := len(payload)
	form := o.form
	if form == lenAuto {
		switch {
		case n <= 125:
			form = len7
		case n <= 0xffff:
			form = len16
		default:
			form = len64
		}
	}
	switch form {
	case len7:
		b = append(b, mask|byte(n))
	case len16:
		b = append(b, mask|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	case len64:
		b = append(b, mask|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if o.key != nil {
		b = append(b, o.key[:]...)
		for i, c := range payload {
			b = append(b, c^o.key[i%4])
		}
		return b
	}
	return append(b, payload...)
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func closeFrame(code int, reason string) []byte {
	return frame(opClose, closePayload(code, reason), frameOpts{})
}

// lookalike is payload that holds what would be close frames with the
// codes lpauth acts on, were it parsed as frames.
func lookalike(n int) []byte {
	pat := []byte{0x88, 0x02, 0x11, 0x31, 0x88, 0x02, 0x11, 0x37, 0x88, 0x02, 0x03, 0xf3, 0x88, 0x00}
	b := make([]byte, n)
	for i := range b {
		b[i] = pat[i%len(pat)]
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// refParse is a reference for the rules, written the simple way: the whole
// stream at once, by index. end is the offset just past the close frame.
func refParse(b []byte) (code int, ok bool, end int) {
	i := 0
	for {
		if len(b)-i < 2 {
			return 0, false, 0
		}
		fin, op := b[i]&0x80 != 0, b[i]&0x0f
		masked, n := b[i+1]&0x80 != 0, uint64(b[i+1]&0x7f)
		i += 2
		if op >= 8 && (n > 125 || !fin) {
			return 0, false, 0
		}
		switch n {
		case 126:
			if len(b)-i < 2 {
				return 0, false, 0
			}
			n = uint64(binary.BigEndian.Uint16(b[i:]))
			i += 2
		case 127:
			if len(b)-i < 8 {
				return 0, false, 0
			}
			n = binary.BigEndian.Uint64(b[i:])
			i += 8
			if n > 1<<63-1 {
				return 0, false, 0
			}
		}
		var key [4]byte
		if masked {
			if len(b)-i < 4 {
				return 0, false, 0
			}
			copy(key[:], b[i:])
			i += 4
		}
		if uint64(len(b)-i) < n {
			return 0, false, 0
		}
		payload := b[i : i+int(n)]
		i += int(n)
		if op == 8 {
			switch len(payload) {
			case 0:
				return 1005, true, i
			case 1:
				return 1002, true, i
			}
			return int(payload[0]^key[0])<<8 | int(payload[1]^key[1]), true, i
		}
	}
}

// feedAll feeds chunks in turn and checks the report comes once; it
// returns the report and the index of the chunk that made it (-1: none).
func feedAll(t *testing.T, chunks ...[]byte) (code int, ok bool, at int) {
	t.Helper()
	var r Reader
	at = -1
	for i, c := range chunks {
		cd, k := r.Feed(c)
		if !k {
			if cd != 0 {
				t.Fatalf("chunk %d: code %d with ok false", i, cd)
			}
			continue
		}
		if ok {
			t.Fatalf("chunk %d: second report %d after %d", i, cd, code)
		}
		code, ok, at = cd, true, i
	}
	return code, ok, at
}

func TestCloseCodes(t *testing.T) {
	key := &[4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"4401", closeFrame(4401, ""), 4401},
		{"4401 with reason", closeFrame(4401, "token expired"), 4401},
		{"4407", closeFrame(4407, "unauthorized"), 4407},
		{"1011", closeFrame(1011, "internal error"), 1011},
		{"1000", closeFrame(1000, ""), 1000},
		{"1001", closeFrame(1001, "going away"), 1001},
		{"reason of 123 bytes", closeFrame(4401, string(lookalike(123))), 4401},
		{"empty payload", frame(opClose, nil, frameOpts{}), CodeNoStatus},
		{"1-byte payload", frame(opClose, []byte{0x11}, frameOpts{}), CodeProtocolError},
		{"masked 4401", frame(opClose, closePayload(4401, "bye"), frameOpts{key: key}), 4401},
		{"masked 4407, no reason", frame(opClose, closePayload(4407, ""), frameOpts{key: key}), 4407},
		{"masked empty", frame(opClose, nil, frameOpts{key: key}), CodeNoStatus},
		{"masked 1 byte", frame(opClose, []byte{3}, frameOpts{key: key}), CodeProtocolError},
		{"RSV bits set", frame(opClose, closePayload(1011, ""), frameOpts{rsv: 0x70}), 1011},
		{"code outside the registered ranges", closeFrame(0xffff, ""), 0xffff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ok, _ := feedAll(t, tc.frame)
			if !ok || code != tc.code {
				t.Fatalf("Feed(% x) = %d, %v; want %d, true", tc.frame, code, ok, tc.code)
			}
			if rc, rok, _ := refParse(tc.frame); rc != code || rok != ok {
				t.Fatalf("reference says %d, %v", rc, rok)
			}
		})
	}
}

// Data frames of every length form are skipped whole, whatever their
// payload looks like; the close after them is found.
func TestLengthForms(t *testing.T) {
	key := &[4]byte{1, 2, 3, 4}
	for _, tc := range []struct {
		name string
		n    int
		o    frameOpts
	}{
		{"7-bit empty", 0, frameOpts{}},
		{"7-bit 125", 125, frameOpts{}},
		{"16-bit 126", 126, frameOpts{}},
		{"16-bit 65535", 65535, frameOpts{}},
		{"64-bit 65536", 65536, frameOpts{}},
		{"64-bit 200000", 200000, frameOpts{}},
		{"16-bit masked", 300, frameOpts{key: key}},
		{"64-bit masked", 70000, frameOpts{key: key}},
		{"non-minimal 16-bit for 5", 5, frameOpts{form: len16}},
		{"non-minimal 64-bit for 5", 5, frameOpts{form: len64}},
		{"non-minimal 64-bit for 0", 0, frameOpts{form: len64}},
		{"deflated (RSV1)", 1000, frameOpts{rsv: 0x40}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cat(frame(opBinary, lookalike(tc.n), tc.o), closeFrame(4407, ""))
			if code, ok, _ := feedAll(t, s); !ok || code != 4407 {
				t.Fatalf("got %d, %v; want 4407", code, ok)
			}
			// Fed as a proxy writes it, in pieces of a few KiB.
			var chunks [][]byte
			for rest := s; len(rest) > 0; {
				n := min(len(rest), 4093)
				chunks = append(chunks, rest[:n])
				rest = rest[n:]
			}
			if code, ok, at := feedAll(t, chunks...); !ok || code != 4407 || at != len(chunks)-1 {
				t.Fatalf("in 4093-byte writes: got %d, %v in write %d of %d", code, ok, at, len(chunks))
			}
		})
	}
}

// A 64-bit length is counted, never buffered: the reader stays inside such
// a payload however much of it passes.
func TestHugeLength(t *testing.T) {
	var r Reader
	hdr := binary.BigEndian.AppendUint64([]byte{0x82, 127}, 1<<63-1)
	if _, ok := r.Feed(hdr); ok {
		t.Fatal("report from a header")
	}
	chunk := cat(closeFrame(4401, ""), lookalike(1<<16))
	for range 64 {
		if code, ok := r.Feed(chunk); ok {
			t.Fatalf("reported %d from inside a payload", code)
		}
	}
	if r.state != stPayload || r.left != 1<<63-1-64*uint64(len(chunk)) {
		t.Fatalf("state %d, left %d", r.state, r.left)
	}
}

// Bytes that cannot be a frame header stop the reader for good: it can no
// longer tell frames from payload.
func TestInvalidStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  []byte
	}{
		{"64-bit length with the top bit set", binary.BigEndian.AppendUint64([]byte{0x82, 127}, 1<<63)},
		{"64-bit length all ones, masked", binary.BigEndian.AppendUint64([]byte{0x81, 0xff}, 1<<64-1)},
		{"ping of 126 bytes", frame(opPing, lookalike(126), frameOpts{})},
		{"close of 127 bytes", frame(opClose, closePayload(4401, string(lookalike(125))), frameOpts{})},
		{"close with 16-bit length 2", frame(opClose, closePayload(4401, ""), frameOpts{form: len16})},
		{"close without FIN", frame(opClose, closePayload(4401, ""), frameOpts{noFin: true})},
		{"pong without FIN", frame(opPong, nil, frameOpts{noFin: true})},
		{"reserved control opcode 0xb of 126 bytes", frame(0xb, lookalike(126), frameOpts{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cat(frame(opText, []byte("hi"), frameOpts{}), tc.bad, closeFrame(4401, ""), closeFrame(4401, ""))
			for cut := 0; cut <= len(s); cut++ {
				if code, ok, _ := feedAll(t, s[:cut], s[cut:]); ok {
					t.Fatalf("cut at %d: reported %d after an invalid header", cut, code)
				}
			}
			if _, ok, _ := refParse(s); ok {
				t.Fatal("reference reports")
			}
			// Stopped, not skipping: a 2^63-byte payload would hide the
			// closes just as well, but only for now.
			var r Reader
			r.Feed(cat(frame(opText, nil, frameOpts{}), tc.bad))
			if r.state != stOff {
				t.Fatalf("state %d after the invalid header; want stOff", r.state)
			}
		})
	}
	// The limits themselves are valid.
	for _, s := range [][]byte{
		cat(frame(opPing, lookalike(125), frameOpts{}), closeFrame(4401, "")),
		cat(binary.BigEndian.AppendUint64([]byte{0x82, 127}, 3), []byte("abc"), closeFrame(4401, "")),
		cat(frame(0xb, lookalike(125), frameOpts{}), frame(0x3, lookalike(300), frameOpts{noFin: true}), closeFrame(4401, "")),
	} {
		if code, ok, _ := feedAll(t, s); !ok || code != 4401 {
			t.Fatalf("% x: got %d, %v; want 4401", s[:12], code, ok)
		}
	}
}

// Control frames may come between the fragments of a message; the close
// after the last fragment is found, and none of the fragments or control
// payloads is mistaken for it.
func TestFragmentedWithPing(t *testing.T) {
	key := &[4]byte{9, 8, 7, 6}
	s := cat(
		frame(opText, lookalike(40), frameOpts{noFin: true, rsv: 0x40}),
		frame(opPing, closePayload(4401, "ping"), frameOpts{}),
		frame(opCont, lookalike(300), frameOpts{noFin: true}),
		frame(opPong, closePayload(4407, ""), frameOpts{key: key}),
		frame(opCont, lookalike(70000), frameOpts{noFin: true}),
		frame(opPing, nil, frameOpts{}),
		frame(opCont, lookalike(3), frameOpts{}),
		closeFrame(1011, "server error"),
	)
	if code, ok, _ := feedAll(t, s); !ok || code != 1011 {
		t.Fatalf("got %d, %v; want 1011", code, ok)
	}
	// A close between fragments (the server gives up mid-message) counts.
	s = cat(
		frame(opBinary, lookalike(10), frameOpts{noFin: true}),
		frame(opPing, nil, frameOpts{}),
		closeFrame(4401, ""),
	)
	if code, ok, _ := feedAll(t, s); !ok || code != 4401 {
		t.Fatalf("got %d, %v; want 4401", code, ok)
	}
}

// Every header form, split at every byte, and into single bytes: the close
// is reported in the piece that holds its last byte, and only then.
func TestSplitEverywhere(t *testing.T) {
	key := &[4]byte{0xde, 0xad, 0xbe, 0xef}
	s := cat(
		frame(opText, lookalike(5), frameOpts{}),
		frame(opBinary, lookalike(130), frameOpts{key: key}),
		frame(opBinary, lookalike(7), frameOpts{form: len64, key: key}),
		frame(opPing, []byte("p"), frameOpts{key: key}),
		frame(opCont, nil, frameOpts{form: len16}),
		frame(opClose, closePayload(4401, "renew"), frameOpts{key: key}),
		closeFrame(4407, ""),
	)
	want, _, end := refParse(s)
	if want != 4401 {
		t.Fatalf("reference: %d", want)
	}
	for i := 0; i <= len(s); i++ {
		for j := i; j <= len(s); j++ {
			code, ok, at := feedAll(t, s[:i], s[i:j], s[j:])
			wantAt := 2
			switch {
			case end <= i:
				wantAt = 0
			case end <= j:
				wantAt = 1
			}
			if !ok || code != want || at != wantAt {
				t.Fatalf("cuts %d, %d: got %d, %v in piece %d; want %d in piece %d", i, j, code, ok, at, want, wantAt)
			}
		}
	}
	bs := make([][]byte, len(s))
	for i := range s {
		bs[i] = s[i : i+1]
	}
	if code, ok, at := feedAll(t, bs...); !ok || code != want || at != end-1 {
		t.Fatalf("byte by byte: got %d, %v at %d; want %d at %d", code, ok, at, want, end-1)
	}
	// Empty Feeds anywhere change nothing.
	if code, ok, _ := feedAll(t, nil, s[:3], nil, []byte{}, s[3:]); !ok || code != want {
		t.Fatalf("with empty feeds: got %d, %v", code, ok)
	}
}

func TestSeveralFramesInOneFeed(t *testing.T) {
	s := cat(
		frame(opPing, nil, frameOpts{}),
		frame(opText, []byte(`{"kind":"notification"}`), frameOpts{}),
		frame(opPong, nil, frameOpts{}),
		frame(opText, lookalike(1000), frameOpts{}),
		closeFrame(4407, "x"),
		frame(opText, []byte("after"), frameOpts{}),
	)
	if code, ok, _ := feedAll(t, s); !ok || code != 4407 {
		t.Fatalf("got %d, %v; want 4407", code, ok)
	}
}

// A close frame is the last frame a side sends: the first one is reported,
// once, and nothing after it.
func TestOnlyFirstClose(t *testing.T) {
	var r Reader
	if code, ok := r.Feed(cat(closeFrame(1000, ""), closeFrame(4401, ""))); !ok || code != 1000 {
		t.Fatalf("got %d, %v; want 1000", code, ok)
	}
	for _, p := range [][]byte{closeFrame(4401, ""), closeFrame(1011, ""), frame(opClose, nil, frameOpts{}), lookalike(100)} {
		if code, ok := r.Feed(p); ok || code != 0 {
			t.Fatalf("after the close: got %d, %v", code, ok)
		}
	}
}

// A close frame is reported when it completes, not when its code has
// passed: a torn close frame is no close.
func TestReportOnCompletion(t *testing.T) {
	s := closeFrame(4401, "expired")
	var r Reader
	if _, ok := r.Feed(s[:len(s)-1]); ok {
		t.Fatal("reported before the frame completed")
	}
	if code, ok := r.Feed(s[len(s)-1:]); !ok || code != 4401 {
		t.Fatalf("got %d, %v; want 4401", code, ok)
	}
}

// A stream that starts mid-frame, or a close injected inside a data frame,
// may misparse, but the close bytes inside a payload the reader framed are
// never reported.
func TestGarbage(t *testing.T) {
	// A close inside a data frame's payload, counted by its header: the
	// frame is skipped whole.
	data := bytes.Repeat([]byte("a"), 100)
	s := frame(opText, cat(data[:10], closeFrame(4401, ""), data[10:]), frameOpts{})
	// A close injected mid-payload that the header does not count: the
	// reader skips it as payload and misparses the 4 bytes that spill over
	// ("aaaa": a text frame header of 97 bytes), which is all it can do.
	torn := frame(opText, data, frameOpts{})
	torn = cat(torn[:2+10], closeFrame(4401, ""), torn[2+10:])
	for _, s := range [][]byte{s, torn} {
		for cut := 0; cut <= len(s); cut++ {
			if code, ok, _ := feedAll(t, s[:cut], s[cut:]); ok {
				t.Fatalf("cut %d: reported %d from inside a framed payload", cut, code)
			}
		}
	}

	// Streams starting at every offset of a valid one, and random bytes:
	// no panic, and the same answer as the reference.
	v := cat(
		frame(opText, lookalike(300), frameOpts{}),
		frame(opBinary, lookalike(70000), frameOpts{key: &[4]byte{1, 2, 3, 4}}),
		closeFrame(4401, ""),
	)
	for off := 0; off < len(v); off++ {
		if off > 512 && off < len(v)-512 {
			off = min(off+997, len(v)-512) // inside the big payload, a sample is enough
		}
		code, ok, _ := feedAll(t, v[off:])
		rc, rok, _ := refParse(v[off:])
		if code != rc || ok != rok {
			t.Fatalf("from offset %d: got %d, %v; reference %d, %v", off, code, ok, rc, rok)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 4096)
	for range 2000 {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		n := rng.IntN(len(buf))
		code, ok, _ := feedAll(t, buf[:n/2], buf[n/2:n])
		rc, rok, _ := refParse(buf[:n])
		if code != rc || ok != rok {
			t.Fatalf("random % x: got %d, %v; reference %d, %v", buf[:n], code, ok, rc, rok)
		}
	}
}

// randomStream builds well-formed frames of every kind around one close
// frame; it returns the stream and the close code.
func randomStream(rng *rand.Rand) ([]byte, int) {
	var s []byte
	opts := func() frameOpts {
		o := frameOpts{rsv: byte(rng.IntN(8)) << 4}
		if rng.IntN(3) == 0 {
			o.key = &[4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}
		}
		return o
	}
	add := func() {
		o := opts()
		if rng.IntN(3) == 0 { // control frame, standard or reserved
			op := []byte{opPing, opPong, 0xb, 0xf}[rng.IntN(4)]
			s = append(s, frame(op, lookalike(rng.IntN(126)), o)...)
			return
		}
		o.noFin = rng.IntN(2) == 0
		o.form = rng.IntN(4)
		n := rng.IntN(300)
		if rng.IntN(10) == 0 {
			n = 65536 + rng.IntN(5000)
		}
		if o.form == len7 && n > 125 {
			o.form = lenAuto
		}
		if o.form == len16 && n > 0xffff {
			o.form = len64
		}
		op := []byte{opCont, opText, opBinary, 0x3, 0x7}[rng.IntN(5)]
		s = append(s, frame(op, lookalike(n), o)...)
	}
	for range rng.IntN(8) {
		add()
	}
	var code int
	switch rng.IntN(6) {
	case 0:
		s = append(s, frame(opClose, nil, opts())...)
		code = CodeNoStatus
	case 1:
		s = append(s, frame(opClose, []byte{byte(rng.Uint32())}, opts())...)
		code = CodeProtocolError
	default:
		code = []int{4401, 4407, 1011, 1000, 1001, rng.IntN(1 << 16)}[rng.IntN(6)]
		s = append(s, frame(opClose, closePayload(code, string(lookalike(rng.IntN(124)))), opts())...)
	}
	for range rng.IntN(3) {
		add()
	}
	return s, code
}

// Random well-formed streams in random cuts: the close is found, with its
// code, in the piece that completes it.
func TestRandomStreams(t *testing.T) {
	rng := rand.New(rand.NewPCG(6455, 4401))
	for i := range 3000 {
		s, want := randomStream(rng)
		_, _, end := refParse(s)
		var chunks [][]byte
		wantAt := -1
		for off := 0; off < len(s); {
			n := min(len(s)-off, rng.IntN(64))
			if rng.IntN(20) == 0 {
				n = min(len(s)-off, rng.IntN(1<<17))
			}
			if wantAt < 0 && off < end && off+n >= end {
				wantAt = len(chunks)
			}
			chunks = append(chunks, s[off:off+n])
			off += n
		}
		code, ok, at := feedAll(t, chunks...)
		if !ok || code != want || at != wantAt {
			t.Fatalf("stream %d (%d bytes): got %d, %v in piece %d; want %d in piece %d", i, len(s), code, ok, at, want, wantAt)
		}
	}
}

// FuzzReaderCuts feeds any byte stream cut at points taken from the fuzz
// input: the cut stream reports exactly what one whole Feed reports, once,
// in the piece holding the close frame's last byte, and the whole Feed
// agrees with the reference parser. Nothing panics.
//
//	go test -run '^$' -fuzz FuzzReaderCuts -fuzztime 60s ./internal/wsclose/
func FuzzReaderCuts(f *testing.F) {
	key := &[4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, seed := range []struct{ s, cuts []byte }{
		{closeFrame(4401, ""), nil},
		{closeFrame(4407, "unauthorized"), []byte{1}},
		{closeFrame(1011, "x"), []byte{2, 0, 3}},
		{frame(opClose, nil, frameOpts{}), []byte{1}},
		{frame(opClose, []byte{7}, frameOpts{key: key}), []byte{1, 2}},
		{frame(opClose, closePayload(4401, "renew"), frameOpts{key: key}), []byte{3, 1}},
		{cat(frame(opText, lookalike(20), frameOpts{noFin: true, rsv: 0x40}), frame(opPing, []byte("p"), frameOpts{}),
			frame(opCont, lookalike(5), frameOpts{}), closeFrame(4401, "")), []byte{5, 1, 9}},
		{cat(frame(opBinary, lookalike(300), frameOpts{}), closeFrame(1000, "")), []byte{4, 255}},
		{cat(frame(opBinary, lookalike(9), frameOpts{form: len64, key: key}), closeFrame(1001, "")), []byte{11, 1}},
		{cat(binary.BigEndian.AppendUint64([]byte{0x82, 127}, 1<<63), closeFrame(4401, "")), []byte{3}},
		{cat(binary.BigEndian.AppendUint64([]byte{0x82, 127}, 1<<40), closeFrame(4401, "")), []byte{6}},
		{cat(frame(opPing, lookalike(126), frameOpts{}), closeFrame(4401, "")), []byte{1}},
		{cat(frame(opClose, closePayload(4401, ""), frameOpts{noFin: true}), closeFrame(4407, "")), []byte{2}},
		{cat(closeFrame(1000, ""), closeFrame(4401, "")), []byte{3}},
		{lookalike(40), []byte{1, 3}},
		{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []byte{7}},
	} {
		f.Add(seed.s, seed.cuts)
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		var whole Reader
		code, ok := whole.Feed(stream)
		rc, rok, end := refParse(stream)
		if code != rc || ok != rok {
			t.Fatalf("whole Feed: %d, %v; reference %d, %v", code, ok, rc, rok)
		}
		if c, k := whole.Feed(stream); ok && (k || c != 0) {
			t.Fatalf("Feed after the close: %d, %v", c, k)
		}

		var r Reader
		var got, gotOK bool
		var gotCode int
		for off, i := 0, 0; off < len(stream); i++ {
			n := len(stream) - off // no cuts: one piece
			if len(cuts) > 0 {
				n = int(cuts[i%len(cuts)])
				if n == 0 { // an empty write, then a byte, so the loop ends
					if c, k := r.Feed(stream[off:off]); k || c != 0 {
						t.Fatalf("empty Feed: %d, %v", c, k)
					}
					n = 1
				}
				n = min(n, len(stream)-off)
			}
			c, k := r.Feed(stream[off : off+n])
			if k {
				if got {
					t.Fatalf("second report %d after %d", c, gotCode)
				}
				if end <= off || end > off+n {
					t.Fatalf("reported in piece [%d, %d); the close ends at %d", off, off+n, end)
				}
				got, gotOK, gotCode = true, k, c
			} else if c != 0 {
				t.Fatalf("code %d with ok false", c)
			}
			off += n
		}
		if gotCode != code || gotOK != ok {
			t.Fatalf("cut Feeds: %d, %v; whole Feed %d, %v", gotCode, gotOK, code, ok)
		}
	})
}

func TestFeedDoesNotAllocate(t *testing.T) {
	s := mixedStream()
	var r Reader
	allocs := testing.AllocsPerRun(100, func() {
		r = Reader{}
		for off := 0; off < len(s); off += 1000 {
			r.Feed(s[off:min(off+1000, len(s))])
		}
	})
	if allocs != 0 {
		t.Fatalf("Feed allocates: %v per run", allocs)
	}
}

// mixedStream is messaging-like traffic: JSON-sized text frames, pings
// and pongs, a fragmented message, a large binary frame, masked frames,
// and a close at the end.
func mixedStream() []byte {
	key := &[4]byte{1, 2, 3, 4}
	var s []byte
	for i := range 200 {
		s = append(s, frame(opText, lookalike(80+i*7%900), frameOpts{})...)
		if i%10 == 0 {
			s = append(s, frame(opPing, []byte("hb"), frameOpts{})...)
			s = append(s, frame(opPong, nil, frameOpts{key: key})...)
		}
	}
	s = append(s, frame(opText, lookalike(4000), frameOpts{noFin: true, rsv: 0x40})...)
	s = append(s, frame(opPing, nil, frameOpts{})...)
	s = append(s, frame(opCont, lookalike(4000), frameOpts{})...)
	s = append(s, frame(opBinary, lookalike(256<<10), frameOpts{})...)
	return append(s, closeFrame(4401, "token expired")...)
}

func BenchmarkFeed(b *testing.B) {
	small := func() []byte {
		var s []byte
		for range 1000 {
			s = append(s, frame(opText, lookalike(40), frameOpts{})...)
			s = append(s, frame(opPing, nil, frameOpts{})...)
		}
		return append(s, closeFrame(4401, "")...)
	}()
	for _, bc := range []struct {
		name  string
		s     []byte
		write int // size of each Feed, as the proxy's writes; 0: all at once
	}{
		{"mixed/whole", mixedStream(), 0},
		{"mixed/4KiB-writes", mixedStream(), 4096},
		{"mixed/64B-writes", mixedStream(), 64},
		{"small-frames/whole", small, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := bc.write
			if w == 0 {
				w = len(bc.s)
			}
			b.SetBytes(int64(len(bc.s)))
			b.ReportAllocs()
			for b.Loop() {
				var r Reader
				var ok bool
				for off := 0; off < len(bc.s); off += w {
					_, k := r.Feed(bc.s[off:min(off+w, len(bc.s))])
					ok = ok || k
				}
				if !ok {
					b.Fatal("no close")
				}
			}
		})
	}
}

func ExampleReader() {
	var r Reader
	stream := cat(frame(opText, []byte("hello"), frameOpts{}), closeFrame(4401, "token expired"))
	// As a proxy writes it, in two pieces.
	for _, p := range [][]byte{stream[:9], stream[9:]} {
		if code, ok := r.Feed(p); ok {
			fmt.Println("close", code)
		}
	}
	// Output: close 4401
}
