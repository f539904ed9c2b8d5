// Copyright 2026 The lpauth Authors
// SPDX-License-Identifier: Apache-2.0

// Package wsclose follows the frames of one direction of a WebSocket byte
// stream (RFC 6455) to notice a close frame and its status code, without
// changing, buffering or delaying a byte.
//
// lpauth feeds it the server-to-client direction of an upgraded connection
// (LivePerson's messaging WebSocket, as written to the client): a close
// with code 4401 means the connection's token is no longer accepted and a
// new one is needed, and 4407 and 1011 are closes LivePerson's
// node-agent-sdk answers the same way, so lpauth acts on those three. The reader only observes:
// the caller writes the bytes on unchanged, whatever Feed reports.
//
// The reader skips payloads by counting, so it costs the same for a 10-byte
// frame as for a 10 GB one, holds a few bytes of fixed state and never
// allocates. It does not check what a client must check (UTF-8, data frame
// sequencing, close code ranges): it only needs the framing to find the
// close frame, and reports the code the peer put there.
package wsclose

// Codes Feed reports for close frames that carry no usable code.
const (
	// CodeNoStatus is reported for a close frame with an empty payload:
	// RFC 6455 7.1.5 says the close code is then considered 1005.
	CodeNoStatus = 1005
	// CodeProtocolError is reported for a close frame with a 1-byte
	// payload. RFC 6455 5.5.1 requires a body to start with a 2-byte code,
	// so a client fails such a connection (e.g. Node's ws, which
	// node-agent-sdk uses, with 1002) rather than treating it as a clean
	// close without code; reporting 1002 says what the client will see.
	CodeProtocolError = 1002
)

// Parser states. The zero value waits for the first byte of a frame, so a
// zero Reader is ready to use.
const (
	stFirst   uint8 = iota // FIN, RSV1-3, opcode
	stLen                  // MASK, 7-bit length
	stExt                  // extended length, need bytes left
	stKey                  // masking key, need bytes left
	stPayload              // payload, left bytes left
	stOff                  // after a close frame, or lost: ignore everything
)

// Reader follows the frames of one direction of a WebSocket stream. The
// zero value is ready to use. Feed is not safe for concurrent use: a
// connection's writes in one direction are sequential anyway.
type Reader struct {
	left   uint64  // payload bytes left in the frame; the extended length while reading it
	state  uint8   // st*
	need   uint8   // bytes left of the extended length or masking key
	fin    bool    // the frame has FIN set
	op     uint8   // the frame's opcode
	off    uint8   // close code bytes seen, 0..2
	code   uint16  // close code, assembled from the first two payload bytes
	masked bool    // the frame has MASK set
	key    [2]byte // the masking key bytes for payload bytes 0 and 1, the only ones unmasked
}

// Feed consumes the next bytes of the stream, as they were written, in any
// cut. It reports the close code of the first close frame that completes
// within p (ok true), once: after a close frame the reader ignores
// everything, as a close frame is the last frame a side sends. It also
// ignores everything after bytes that cannot be a frame header (a 64-bit
// length with the top bit set, a control frame longer than 125 bytes or
// without FIN), since it can no longer tell frames from payload. It never
// panics on any input and never allocates.
func (r *Reader) Feed(p []byte) (code int, ok bool) {
	for len(p) > 0 {
		switch r.state {
		case stOff:
			return 0, false
		case stPayload:
			if r.op == opClose && r.off < 2 {
				b := p[0]
				if r.masked {
					b ^= r.key[r.off]
				}
				r.code = r.code<<8 | uint16(b)
				r.off++
				r.left--
				p = p[1:]
			} else {
				// Skip what is there of the payload; data frames are
				// never looked into.
				n := r.left
				if n > uint64(len(p)) {
					n = uint64(len(p))
				}
				r.left -= n
				p = p[n:]
			}
			if r.left == 0 {
				if code, ok := r.endFrame(); ok {
					return code, true
				}
			}
			continue
		}

		b := p[0]
		p = p[1:]
		switch r.state {
		case stFirst:
			// RSV1-3 are ignored: permessage-deflate sets RSV1 on data
			// frames only, and their payload is skipped anyway.
			r.fin = b&0x80 != 0
			r.op = b & 0x0f
			r.state = stLen
		case stLen:
			r.masked = b&0x80 != 0
			n := b & 0x7f
			// Control frames (opcode >= 8, including reserved ones) are
			// at most 125 bytes and never fragmented (RFC 6455 5.5):
			// anything else means these bytes are not a frame header.
			if r.op >= 8 && (n > 125 || !r.fin) {
				r.state = stOff
				return 0, false
			}
			switch n {
			case 126:
				r.left, r.need, r.state = 0, 2, stExt
			case 127:
				r.left, r.need, r.state = 0, 8, stExt
			default:
				r.left = uint64(n)
				r.afterLength()
			}
		case stExt:
			r.left = r.left<<8 | uint64(b)
			r.need--
			if r.need == 0 {
				// RFC 6455 5.2: the most significant bit of a 64-bit
				// length must be 0. (A 16-bit length cannot have it.)
				if r.left>>63 != 0 {
					r.state = stOff
					return 0, false
				}
				r.afterLength()
			}
		case stKey:
			if r.need > 2 { // key bytes 0 and 1 unmask the code; 2 and 3 are never needed
				r.key[4-r.need] = b
			}
			r.need--
			if r.need == 0 {
				r.state = stPayload
			}
		}
		// A frame without payload ends with its header, which may be the
		// last byte of p.
		if r.state == stPayload && r.left == 0 {
			if code, ok := r.endFrame(); ok {
				return code, true
			}
		}
	}
	return 0, false
}

const opClose = 8

// afterLength moves on from a complete payload length to the masking key
// or the payload.
func (r *Reader) afterLength() {
	r.off, r.code = 0, 0
	if r.masked {
		r.need, r.state = 4, stKey
	} else {
		r.state = stPayload
	}
}

// endFrame ends the frame whose payload is complete, reporting its code if
// it is a close frame.
func (r *Reader) endFrame() (code int, ok bool) {
	if r.op != opClose {
		r.state = stFirst
		return 0, false
	}
	r.state = stOff
	switch r.off {
	case 0:
		return CodeNoStatus, true
	case 1:
		return CodeProtocolError, true
	}
	return int(r.code), true
}
