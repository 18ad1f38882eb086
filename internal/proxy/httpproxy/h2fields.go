package httpproxy

import (
	"errors"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// A request whose header block carries a connection-specific field
// (Connection, Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade)
// or a TE other than "trailers" is malformed (RFC 9113 §8.2.2): a stream
// error of type PROTOCOL_ERROR. net/http's server answers it with 400 and
// ends the stream normally instead. fieldGuard re-encodes such a field
// with its name in upper case — a name net/http's server refuses with
// exactly that stream error, after decoding the whole block — so that the
// HPACK state on both sides stays the same (an upper-case name is as long
// as the lower-case one: every table entry keeps its size).
//
// fieldGuard mirrors the dynamic table of net/http's decoder: each entry
// as the client sent it, and whether that decoder holds it upper-cased.
// A field that takes its name from an entry gets the name that suits it,
// whatever the entry's.
type fieldGuard struct {
	table   []hfield // oldest first
	size    int
	maxSize int // the current limit, set by dynamic table size updates
	limit   int // the largest the server's decoder allows
}

type hfield struct {
	name, value string
	upper       bool // net/http's decoder holds it with the name upper-cased
}

func (f hfield) size() int { return len(f.name) + len(f.value) + 32 }

// serverName is the name net/http's decoder gives the field.
func (f hfield) serverName() string {
	if f.upper {
		return strings.ToUpper(f.name)
	}
	return f.name
}

// decoderTableSize is net/http's HTTP/2 server's SETTINGS_HEADER_TABLE_SIZE.
const decoderTableSize = 4096

func newFieldGuard() *fieldGuard {
	return &fieldGuard{maxSize: decoderTableSize, limit: decoderTableSize}
}

var errHPACK = errors.New("hpack: malformed header block")

// staticNames are the names of HPACK's static table (RFC 7541 Appendix A),
// from index 1.
var staticNames = strings.Fields(`:authority :method :method :path :path :scheme :scheme :status :status
:status :status :status :status :status accept-charset accept-encoding accept-language accept-ranges
accept access-control-allow-origin age allow authorization cache-control content-disposition
content-encoding content-language content-length content-location content-range content-type cookie
date etag expect expires from host if-match if-modified-since if-none-match if-range
if-unmodified-since last-modified link location max-forwards proxy-authenticate proxy-authorization
range referer refresh retry-after server set-cookie strict-transport-security transfer-encoding
user-agent vary via www-authenticate`)

// staticTransferEncoding is the static entry "transfer-encoding: ".
const staticTransferEncoding = 57

// malformed reports whether a request may not carry the field.
func malformed(name, value string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	case "te":
		return value != "trailers" && value != ""
	}
	return false
}

// rewrite returns block with every malformed field re-encoded under an
// upper-case name, and whether it changed anything; an error means the
// block cannot be decoded (net/http's server will end the connection).
func (g *fieldGuard) rewrite(block []byte) ([]byte, bool, error) {
	var out []byte // nil until a field changes: then everything so far, rewritten
	for p := block; len(p) > 0; {
		at := len(block) - len(p) // this representation's offset
		var repl []byte           // its replacement, if any
		b := p[0]
		switch {
		case b&0x80 != 0: // indexed field
			idx, rest, err := readInt(p, 7)
			if err != nil {
				return nil, false, err
			}
			f, err := g.at(idx)
			if err != nil {
				return nil, false, err
			}
			if idx == staticTransferEncoding {
				f.upper = true
				repl = appendLiteral(nil, 0x00, 4, f.serverName(), f.value)
			}
			p = rest
		case b&0xe0 == 0x20: // dynamic table size update
			n, rest, err := readInt(p, 5)
			if err != nil || n > uint64(g.limit) {
				return nil, false, errHPACK
			}
			g.maxSize = int(n)
			g.evict(0)
			p = rest
		default: // a literal: with incremental indexing (01), without (0000), never indexed (0001)
			prefix, bits := b&0xf0, 4
			if b&0xc0 == 0x40 {
				prefix, bits = 0x40, 6
			}
			idx, rest, err := readInt(p, bits)
			if err != nil {
				return nil, false, err
			}
			var f hfield
			given := "" // the name the decoder would give the field as it is
			if idx == 0 {
				f.name, rest, err = readString(rest)
				given = f.name
			} else {
				var named hfield
				named, err = g.at(idx)
				f.name, given = named.name, named.serverName()
			}
			if err != nil {
				return nil, false, err
			}
			if f.value, rest, err = readString(rest); err != nil {
				return nil, false, err
			}
			f.upper = malformed(f.name, f.value)
			if f.serverName() != given {
				repl = appendLiteral(nil, prefix, bits, f.serverName(), f.value)
			}
			if prefix == 0x40 {
				g.add(f)
			}
			p = rest
		}
		switch {
		case repl != nil && out == nil:
			out = append(append(make([]byte, 0, len(block)+len(repl)), block[:at]...), repl...)
		case repl != nil:
			out = append(out, repl...)
		case out != nil:
			out = append(out, block[at:len(block)-len(p)]...)
		}
	}
	if out == nil {
		return block, false, nil
	}
	return out, true, nil
}

// at is the field at HPACK index i: the static table, then the dynamic
// one, newest first.
func (g *fieldGuard) at(i uint64) (hfield, error) {
	switch {
	case i == 0:
		return hfield{}, errHPACK
	case i <= uint64(len(staticNames)):
		return hfield{name: staticNames[i-1]}, nil // static values matter to no check but transfer-encoding's ("")
	case i-uint64(len(staticNames)) <= uint64(len(g.table)):
		return g.table[len(g.table)-int(i-uint64(len(staticNames)))], nil
	}
	return hfield{}, errHPACK
}

// add inserts f, evicting the oldest entries to make room (RFC 7541 §4.4).
func (g *fieldGuard) add(f hfield) {
	if f.size() > g.maxSize {
		g.table, g.size = g.table[:0], 0
		return
	}
	g.evict(f.size())
	g.table = append(g.table, f)
	g.size += f.size()
}

// evict drops the oldest entries until room more bytes fit.
func (g *fieldGuard) evict(room int) {
	n := 0
	for g.size+room > g.maxSize && n < len(g.table) {
		g.size -= g.table[n].size()
		n++
	}
	g.table = append(g.table[:0], g.table[n:]...)
}

// readInt decodes an HPACK integer with an n-bit prefix (RFC 7541 §5.1).
func readInt(p []byte, n int) (uint64, []byte, error) {
	mask := uint64(1)<<n - 1
	v := uint64(p[0]) & mask
	p = p[1:]
	if v < mask {
		return v, p, nil
	}
	for shift := 0; shift < 28; shift += 7 {
		if len(p) == 0 {
			return 0, nil, errHPACK
		}
		b := p[0]
		p = p[1:]
		v += uint64(b&0x7f) << shift
		if b&0x80 == 0 {
			return v, p, nil
		}
	}
	return 0, nil, errHPACK
}

// readString decodes an HPACK string literal (RFC 7541 §5.2).
func readString(p []byte) (string, []byte, error) {
	if len(p) == 0 {
		return "", nil, errHPACK
	}
	huffman := p[0]&0x80 != 0
	n, p, err := readInt(p, 7)
	if err != nil || n > uint64(len(p)) {
		return "", nil, errHPACK
	}
	raw := p[:n]
	if !huffman {
		return string(raw), p[n:], nil
	}
	s, err := hpack.HuffmanDecodeToString(raw)
	if err != nil {
		return "", nil, errHPACK
	}
	return s, p[n:], nil
}

// appendLiteral appends a literal field of the given representation
// (prefix, n-bit name index 0) with a literal name and value, not Huffman
// coded.
func appendLiteral(b []byte, prefix byte, n int, name, value string) []byte {
	b = append(b, prefix)
	b = appendString(b, name)
	return appendString(b, value)
}

func appendString(b []byte, s string) []byte {
	return append(appendInt(b, 7, 0x00, uint64(len(s))), s...)
}

// appendInt appends v as an HPACK integer with an n-bit prefix, the high
// bits of the first byte being first.
func appendInt(b []byte, n int, first byte, v uint64) []byte {
	mask := uint64(1)<<n - 1
	if v < mask {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(mask))
	for v -= mask; v >= 0x80; v >>= 7 {
		b = append(b, byte(v&0x7f)|0x80)
	}
	return append(b, byte(v))
}
