package httpproxy

import (
	"encoding/binary"
	"io"
	"slices"
)

// clientReader is the client→proxy byte stream of an HTTP/2 server
// connection as net/http's server reads it. It reports every frame header
// (for the rapid-reset guard) and mends two things net/http's server does
// not do as RFC 9113 says:
//
//   - a SETTINGS frame that repeats a setting: its values are processed in
//     order (§6.5.3), so the last one stands; net/http's server hangs up.
//     The frame is handed over with one value per setting.
//   - a request header block with a connection-specific field: malformed,
//     a stream error (§8.2.2); net/http's server answers it with 400.
//     fieldGuard re-encodes the field so that the server resets the stream.
//
// Header-block and SETTINGS frames are read whole before they are handed
// over; every other frame's payload passes through, read straight into the
// server's buffer when nothing is buffered here.
type clientReader struct {
	r      io.Reader
	frame  func(typ byte, stream uint32)
	fields *fieldGuard // nil once a header block could not be followed

	buf    []byte // read from r; buf[off:] not looked at yet
	off    int
	skip   int    // bytes of the preface or of a payload passing through
	out    []byte // output ready, from outOff
	outOff int
	err    error // r's error, returned once everything before it was

	inBlock bool   // a header block is being collected
	block   []byte // its HEADERS and CONTINUATION frames
	stream  uint32 // its stream
}

const (
	frameHeaders       = 0x1
	frameSettings      = 0x4
	frameContinuation  = 0x9
	flagAck            = 0x1
	flagEndStream      = 0x1
	flagEndHeaders     = 0x4
	flagPadded         = 0x8
	flagPriority       = 0x20
	maxReadFrameSize   = 16 << 10 // the server's SETTINGS_MAX_FRAME_SIZE
	headerChunk        = 1 << 14  // a rewritten header block's frames
	maxHeldSettings    = 100 * 6  // net/http's server hangs up on more values anyway
	maxHeldHeaderBlock = 1 << 20  // beyond it, blocks pass unchecked
	readChunk          = 4 << 10
)

func newClientReader(r io.Reader, frame func(typ byte, stream uint32)) *clientReader {
	return &clientReader{r: r, frame: frame, fields: newFieldGuard(), skip: clientPreface}
}

func (c *clientReader) Read(p []byte) (int, error) {
	for len(p) > 0 {
		if c.outOff < len(c.out) {
			n := copy(p, c.out[c.outOff:])
			if c.outOff += n; c.outOff == len(c.out) {
				c.out, c.outOff = reuse(c.out), 0
			}
			return n, nil
		}
		if c.skip > 0 {
			var n int
			if c.off < len(c.buf) {
				n = copy(p[:min(len(p), c.skip)], c.buf[c.off:])
				c.off += n
			} else if c.err == nil {
				n, c.err = c.r.Read(p[:min(len(p), c.skip)])
			} else {
				return 0, c.err
			}
			c.skip -= n
			if n > 0 {
				return n, nil
			}
			continue
		}
		need := c.next()
		switch {
		case need == 0:
		case c.err != nil:
			// The connection ended inside a frame: what came passes as it is.
			c.out = append(append(c.out, c.block...), c.buf[c.off:]...)
			c.block, c.inBlock, c.off = reuse(c.block), false, len(c.buf)
			if len(c.out) == 0 {
				return 0, c.err
			}
		default:
			c.fill(need)
		}
	}
	return 0, nil
}

// fill reads more, keeping the bytes not looked at yet, with room for need.
func (c *clientReader) fill(need int) {
	n := copy(c.buf, c.buf[c.off:])
	c.buf, c.off = c.buf[:n], 0
	if n <= readChunk && need <= readChunk {
		c.buf = append(reuse(c.buf), c.buf[:n]...)
	}
	c.buf = slices.Grow(c.buf, max(need, readChunk)-n)
	m, err := c.r.Read(c.buf[n:cap(c.buf)])
	c.buf, c.err = c.buf[:n+m], err
}

// next takes the frame that starts the input: a SETTINGS or header-block
// frame whole, any other frame's header (its payload then passes through
// as skip). It returns how many bytes it needs first, or 0.
func (c *clientReader) next() int {
	in := c.buf[c.off:]
	if len(in) < 9 {
		return 9
	}
	length := int(in[0])<<16 | int(in[1])<<8 | int(in[2])
	typ, flags := in[3], in[4]
	stream := binary.BigEndian.Uint32(in[5:9]) & (1<<31 - 1)
	settings := typ == frameSettings && stream == 0 && flags&flagAck == 0 && length > 6 && length%6 == 0 && length <= maxHeldSettings
	header := c.fields != nil && length <= maxReadFrameSize &&
		(typ == frameHeaders && stream != 0 && !c.inBlock || typ == frameContinuation && c.inBlock && stream == c.stream)
	if c.fields != nil && !header && (c.inBlock || typ == frameHeaders || typ == frameContinuation) {
		// Not the CONTINUATION a block needs, or a header-block frame not
		// followed: the HPACK state is not known any more (and the server
		// most likely ends the connection).
		c.giveUpBlock()
	}
	if (settings || header) && len(in) < 9+length {
		return 9 + length
	}
	c.frame(typ, stream)
	switch {
	case settings:
		c.out = append(c.out, normalizeSettings(in[:9+length])...)
		c.off += 9 + length
	case header:
		c.block = append(c.block, in[:9+length]...)
		c.inBlock, c.stream = true, stream
		c.off += 9 + length
		if len(c.block) > maxHeldHeaderBlock {
			c.giveUpBlock()
		} else if flags&flagEndHeaders != 0 {
			c.endBlock()
		}
	default:
		c.out = append(c.out, in[:9]...)
		c.off += 9
		c.skip = length
	}
	return 0
}

// reuse empties b for reuse, unless a large frame grew it: a connection
// keeps no more than a few KiB between frames.
func reuse(b []byte) []byte {
	if cap(b) > 4*readChunk {
		return nil
	}
	return b[:0]
}

// giveUpBlock hands the block collected so far over as it is and stops
// checking header blocks: the decoder state is no longer known.
func (c *clientReader) giveUpBlock() {
	c.out = append(c.out, c.block...)
	c.block, c.inBlock, c.fields = reuse(c.block), false, nil
}

// endBlock hands the complete header block over, rewritten if it carries
// a malformed field.
func (c *clientReader) endBlock() {
	var fragment, priority []byte
	endStream := false
	for f := c.block; len(f) > 0; {
		length := int(f[0])<<16 | int(f[1])<<8 | int(f[2])
		payload := f[9 : 9+length]
		if f[3] == frameHeaders {
			endStream = f[4]&flagEndStream != 0
			var ok bool
			if payload, priority, ok = headersFragment(f[4], payload); !ok {
				c.giveUpBlock()
				return
			}
		}
		fragment = append(fragment, payload...)
		f = f[9+length:]
	}
	rewritten, changed, err := c.fields.rewrite(fragment)
	if err != nil {
		c.giveUpBlock()
		return
	}
	if changed {
		c.out = appendHeaderFrames(c.out, c.stream, endStream, priority, rewritten)
	} else {
		c.out = append(c.out, c.block...)
	}
	c.block, c.inBlock = reuse(c.block), false
}

// headersFragment is a HEADERS payload's header block fragment and its
// priority fields, without padding; false if the frame is malformed.
func headersFragment(flags byte, p []byte) (fragment, priority []byte, ok bool) {
	pad := 0
	if flags&flagPadded != 0 {
		if len(p) < 1 {
			return nil, nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	if flags&flagPriority != 0 {
		if len(p) < 5 {
			return nil, nil, false
		}
		priority, p = p[:5], p[5:]
	}
	if pad > len(p) {
		return nil, nil, false
	}
	return p[:len(p)-pad], priority, true
}

// appendHeaderFrames appends block as a HEADERS frame and as many
// CONTINUATION frames as it takes.
func appendHeaderFrames(b []byte, stream uint32, endStream bool, priority, block []byte) []byte {
	typ, flags := byte(frameHeaders), byte(0)
	if endStream {
		flags |= flagEndStream
	}
	if priority != nil {
		flags |= flagPriority
	}
	for first := true; first || len(block) > 0; first = false {
		chunk := block[:min(len(block), headerChunk-len(priority))]
		block = block[len(chunk):]
		if len(block) == 0 {
			flags |= flagEndHeaders
		}
		length := len(priority) + len(chunk)
		b = append(b, byte(length>>16), byte(length>>8), byte(length), typ, flags)
		b = binary.BigEndian.AppendUint32(b, stream)
		b = append(append(b, priority...), chunk...)
		typ, flags, priority = frameContinuation, 0, nil
	}
	return b
}

// normalizeSettings returns the SETTINGS frame f with one value per
// setting: the last, as processing the values in order would leave it, or
// the first invalid one, so that an invalid value is still refused.
func normalizeSettings(f []byte) []byte {
	p := f[9:]
	n := len(p) / 6
	id := func(i int) uint16 { return binary.BigEndian.Uint16(p[6*i:]) }
	val := func(i int) uint32 { return binary.BigEndian.Uint32(p[6*i+2:]) }
	chosen := func(i int) bool {
		last := i
		for j := range n {
			if id(j) != id(i) {
				continue
			}
			if !validSetting(id(j), val(j)) {
				return j == i
			}
			last = j
		}
		return last == i
	}
	out := append([]byte(nil), f[:9]...)
	for i := range n {
		if chosen(i) {
			out = append(out, p[6*i:6*i+6]...)
		}
	}
	if len(out) == len(f) {
		return f
	}
	length := len(out) - 9
	out[0], out[1], out[2] = byte(length>>16), byte(length>>8), byte(length)
	return out
}

// validSetting reports whether v is a valid value of setting id (RFC 9113
// §6.5.2, RFC 8441, RFC 9218); unknown settings are ignored, so any value
// is valid.
func validSetting(id uint16, v uint32) bool {
	switch id {
	case 0x2, 0x8, 0x9: // ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL, NO_RFC7540_PRIORITIES
		return v <= 1
	case 0x4: // INITIAL_WINDOW_SIZE
		return v <= 1<<31-1
	case 0x5: // MAX_FRAME_SIZE
		return v >= 1<<14 && v <= 1<<24-1
	}
	return true
}
