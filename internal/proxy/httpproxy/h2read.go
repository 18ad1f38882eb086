package httpproxy

import (
	"encoding/binary"
	"io"
)

// clientReader is the client→proxy byte stream of an HTTP/2 server
// connection as net/http's server reads it. It reports every frame header
// (for the rapid-reset guard) and hands each SETTINGS frame over with at
// most one value per setting: RFC 9113 §6.5.3 has a SETTINGS frame's values
// processed in order, so a later value of a setting replaces an earlier
// one, but net/http's server hangs up on any SETTINGS frame that repeats a
// setting. Every other byte passes unchanged, in place when it can.
type clientReader struct {
	r     io.Reader
	frame func(typ byte, stream uint32)

	skip    int // preface or payload bytes passing through
	hdr     [9]byte
	hn      int
	holding bool   // a SETTINGS frame is being collected in held
	held    []byte // its header and the payload read so far
	need    int    // its payload bytes still to come
	out     []byte // output that did not fit in place, returned first
	err     error  // the source's error, returned once out is drained
}

// maxHeldSettings bounds the SETTINGS frames normalised: net/http's server
// hangs up on larger ones (more than 100 values) anyway.
const maxHeldSettings = 100 * 6

const (
	frameSettings = 0x4
	flagAck       = 0x1
)

func newClientReader(r io.Reader, frame func(typ byte, stream uint32)) *clientReader {
	return &clientReader{r: r, frame: frame, skip: clientPreface}
}

func (c *clientReader) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		}
		if c.err != nil || len(p) == 0 {
			return 0, c.err
		}
		n, err := c.r.Read(p)
		c.err = err
		if w := c.filter(p[:n]); w > 0 {
			return w, nil
		}
	}
}

// filter turns the input b into output, in place at the front of b where
// it fits and queued in out where it does not, and returns the output
// bytes left in b.
func (c *clientReader) filter(b []byte) int {
	w := 0
	for i := 0; i < len(b); {
		switch {
		case c.skip > 0:
			k := min(c.skip, len(b)-i)
			c.skip -= k
			w = c.put(b, w, i+k, b[i:i+k])
			i += k
		case c.holding:
			k := min(c.need, len(b)-i)
			c.held = append(c.held, b[i:i+k]...)
			c.need -= k
			i += k
			if c.need == 0 {
				c.holding = false
				w = c.put(b, w, i, normalizeSettings(c.held))
			}
		default:
			k := copy(c.hdr[c.hn:], b[i:])
			c.hn += k
			i += k
			if c.hn < len(c.hdr) {
				break
			}
			c.hn = 0
			length := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			stream := binary.BigEndian.Uint32(c.hdr[5:9]) & (1<<31 - 1)
			c.frame(c.hdr[3], stream)
			if c.hdr[3] == frameSettings && stream == 0 && c.hdr[4]&flagAck == 0 &&
				length > 6 && length%6 == 0 && length <= maxHeldSettings {
				c.holding, c.held, c.need = true, append(c.held[:0], c.hdr[:]...), length
				continue
			}
			w = c.put(b, w, i, c.hdr[:])
			c.skip = length
		}
	}
	return w
}

// put places x, the output for the input consumed up to b[i], at b[w:] if
// it fits there without overwriting unread input and nothing is queued
// before it; otherwise it queues x.
func (c *clientReader) put(b []byte, w, i int, x []byte) int {
	if len(c.out) == 0 && w+len(x) <= i {
		return w + copy(b[w:], x)
	}
	c.out = append(c.out, x...)
	return w
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
