package detect

import "bytes"

// Protocol is what a connection was detected to speak.
type Protocol int

// The protocols detection distinguishes.
const (
	Opaque Protocol = iota
	HTTP1
	HTTP2
	TLS
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	case TLS:
		return "tls"
	}
	return "opaque"
}

// tlsHandshake is the content type of a TLS handshake record.
const tlsHandshake = 0x16

// MaxPeek bounds how many bytes detection buffers before deciding.
const MaxPeek = 16 << 10

const maxMethodLen = 32

// http2Preface is the client connection preface of RFC 9113 §3.4.
var http2Preface = []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")

// Classify decides the protocol of a connection whose first bytes are b.
// more reports that b is too short to decide; once len(b) >= MaxPeek the
// answer is final. hello describes a TLS ClientHello.
func Classify(b []byte) (p Protocol, hello Hello, more bool) {
	if len(b) == 0 {
		return Opaque, Hello{}, true
	}
	// HTTP/2 preface.
	n := min(len(b), len(http2Preface))
	if bytes.Equal(b[:n], http2Preface[:n]) {
		if n < len(http2Preface) {
			return Opaque, Hello{}, true
		}
		return HTTP2, Hello{}, false
	}
	// TLS record carrying a handshake.
	if b[0] == tlsHandshake {
		if len(b) < 3 {
			return Opaque, Hello{}, true
		}
		if b[1] == 0x03 && b[2] <= 0x04 {
			hello, complete := ParseClientHello(b)
			if !complete && len(b) < MaxPeek {
				return TLS, Hello{}, true
			}
			return TLS, hello, false
		}
		return Opaque, Hello{}, false
	}
	return classifyHTTP1(b)
}

// classifyHTTP1 recognises an HTTP/1.x request line: token SP target SP
// HTTP/1.x CRLF, after any blank lines (RFC 9112 §2.2: servers ignore
// them, and the proxy's HTTP/1 server does — so must detection, or a
// request would pass as opaque bytes, past every HTTP policy).
func classifyHTTP1(b []byte) (Protocol, Hello, bool) {
	full := len(b) >= MaxPeek // all detection may buffer: the answer is final
	if lead := bytes.TrimLeft(b, "\r\n"); len(lead) < len(b) {
		if len(lead) == 0 || full {
			// The HTTP/1 server discards the blank lines and answers what
			// follows (400 if it is no request): at the limit, let it.
			return HTTP1, Hello{}, !full
		}
		b = lead
	}
	sp := -1
	for i, c := range b {
		if c == ' ' {
			sp = i
			break
		}
		if !isTchar(c) || i >= maxMethodLen {
			return Opaque, Hello{}, false
		}
	}
	if sp == 0 {
		return Opaque, Hello{}, false
	}
	if sp < 0 {
		return Opaque, Hello{}, !full
	}
	nl := bytes.IndexByte(b[sp:], '\n')
	if nl < 0 {
		if full {
			// A request line longer than we peek: let the HTTP/1 server
			// answer it (414) rather than tunnel it blindly.
			return HTTP1, Hello{}, false
		}
		return Opaque, Hello{}, true
	}
	line := bytes.TrimSuffix(b[sp+1:sp+nl], []byte("\r"))
	rsp := bytes.LastIndexByte(line, ' ')
	if rsp <= 0 {
		return Opaque, Hello{}, false
	}
	version := line[rsp+1:]
	if len(version) == 8 && bytes.HasPrefix(version, []byte("HTTP/1.")) && version[7] >= '0' && version[7] <= '9' {
		return HTTP1, Hello{}, false
	}
	return Opaque, Hello{}, false
}

// isTchar reports whether c may appear in an RFC 9110 token.
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
