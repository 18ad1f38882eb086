// Package mesh is the protocol between two Trellis proxies: a TLS 1.3
// connection with both proxies' workload certificates, negotiated with the
// ALPN protocol ALPN, whose first bytes after the handshake are a Header
// telling the inbound proxy what follows and where it goes.
//
// Carrying the destination and the session protocol in a header, rather than
// sniffing them again, lets one mTLS listener (the inbound port) receive
// multiplexed HTTP/2, HTTP/1 upgrades and opaque TCP for any application port
// — so opaque protocols (databases, custom TCP) are encrypted too.
package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ALPN marks a connection between Trellis proxies.
const ALPN = "trellis.mesh/v1"

// ALPNTunnels marks a connection between proxies that both speak ALPN's
// protocol and one session protocol more, Tunnel. A proxy offers both and
// accepts either; a peer that knows only ALPN chooses it, and opaque
// connections to it take a mesh connection each, as before.
const ALPNTunnels = "trellis.mesh/v2"

// Protocol is the session protocol inside a mesh connection.
type Protocol byte

// Session protocols.
const (
	// HTTP2 carries HTTP/1 and HTTP/2 requests multiplexed as HTTP/2; an
	// l5d-orig-proto field on HTTP/1 requests says how to hand them on.
	HTTP2 Protocol = 1
	// HTTP1 carries one HTTP/1.1 connection as is (protocol upgrades).
	HTTP1 Protocol = 2
	// Opaque carries the bytes of a TCP connection.
	Opaque Protocol = 3
	// Tunnel carries opaque TCP connections as the streams of one HTTP/2
	// connection (RFC 9113 §8.5 CONNECT, each naming its application
	// port), so a new connection between two workloads costs a stream,
	// not a TLS handshake. Its header's port is 0. Only after ALPNTunnels.
	Tunnel Protocol = 4
)

func (p Protocol) String() string {
	switch p {
	case HTTP2:
		return "h2"
	case HTTP1:
		return "http/1.1"
	case Opaque:
		return "opaque"
	case Tunnel:
		return "tunnel"
	}
	return fmt.Sprintf("protocol(%d)", byte(p))
}

// Header is what an outbound proxy tells the inbound proxy after the
// handshake.
type Header struct {
	// Port is the application port on the inbound proxy's host.
	Port uint16
	// Protocol is what follows the header.
	Protocol Protocol
}

// Wire format, fixed size, big-endian:
//
//	magic "TRLS" | version 1 | protocol | port (2 bytes)
const (
	magic      = "TRLS"
	version    = 1
	headerSize = 8
)

// errBadHeader reports bytes that are not a valid header.
var errBadHeader = errors.New("mesh: invalid connection header")

// Append appends h's encoding to b.
func (h Header) Append(b []byte) []byte {
	b = append(b, magic...)
	b = append(b, version, byte(h.Protocol))
	return binary.BigEndian.AppendUint16(b, h.Port)
}

// ReadHeader reads exactly one header from r and validates it.
func ReadHeader(r io.Reader) (Header, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, err
	}
	return ParseHeader(b[:])
}

// ParseHeader decodes a header from exactly its encoding.
func ParseHeader(b []byte) (Header, error) {
	if len(b) != headerSize || string(b[:4]) != magic {
		return Header{}, errBadHeader
	}
	if b[4] != version {
		return Header{}, fmt.Errorf("%w: version %d", errBadHeader, b[4])
	}
	h := Header{Protocol: Protocol(b[5]), Port: binary.BigEndian.Uint16(b[6:])}
	switch h.Protocol {
	case HTTP2, HTTP1, Opaque:
	case Tunnel:
		if h.Port != 0 {
			return Header{}, fmt.Errorf("%w: tunnel for port %d", errBadHeader, h.Port)
		}
		return h, nil
	default:
		return Header{}, fmt.Errorf("%w: %v", errBadHeader, h.Protocol)
	}
	if h.Port == 0 {
		return Header{}, fmt.Errorf("%w: port 0", errBadHeader)
	}
	return h, nil
}
