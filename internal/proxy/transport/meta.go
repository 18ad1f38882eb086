package transport

import (
	"context"
	"net"
	"net/netip"
	"strconv"
)

// Direction is which side of the application a connection is on.
type Direction string

// The two stacks of the proxy.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// Meta describes one accepted connection. The accept stage creates it; each
// later stage may fill in what it learns (target, protocol, TLS) before
// handing the connection on, and never changes it afterwards.
type Meta struct {
	Direction Direction
	Client    netip.AddrPort // the peer that connected to the proxy
	Local     netip.AddrPort // the proxy's address the peer connected to
	// OrigDst is where the client was connecting before an iptables REDIRECT,
	// valid when Redirected.
	OrigDst    netip.AddrPort
	Redirected bool
	// Target is the host:port this connection is forwarded to; empty when it
	// is decided per request (the HTTP forward proxy).
	Target string
	// Protocol is what detection found ("http/1", "h2", "tls", "opaque").
	Protocol string
	// SNI and ALPN are the server name and application protocols of a TLS
	// ClientHello.
	SNI  string
	ALPN []string
	// TLS is the tls metric label of the accepted connection, with
	// NoTLSReason when it is "no_identity".
	TLS         string
	NoTLSReason string
	// ClientID is the identity a peer proxy proved with its certificate.
	ClientID string
	// PeerIdentity is the identity of the proxy in front of Target, when
	// Target is meshed: connections to it go over mTLS.
	PeerIdentity string
	// Early is an upstream connection opened during detection (server-speaks-
	// first probing), to Target as it was then. A stage may forward over it
	// (opaque traffic) or close it; detection closes it when the
	// connection ends in any case.
	Early net.Conn
	// Drain is done when the proxy stops accepting and starts draining:
	// protocol servers finish in-flight work and close idle connections.
	Drain context.Context

	// admit counts one more connection from Client against the limits of
	// the listener that accepted this one (nil: no limits).
	admit func() (release func(), ok bool)
}

// Admit counts another connection from this connection's client against
// the limits of the listener that accepted it — a tunnel connection's
// streams are connections too, each holding one to the application — and
// returns its release; false if a limit refuses it, which is reported as
// a refused connection is.
func (m *Meta) Admit() (release func(), ok bool) {
	if m.admit == nil {
		return func() {}, true
	}
	return m.admit()
}

// TargetPort is the port of Target, or 0 if it has none.
func (m *Meta) TargetPort() uint16 {
	_, p, err := net.SplitHostPort(m.Target)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

type metaKey struct{}

// WithMeta returns ctx carrying m.
func WithMeta(ctx context.Context, m *Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

// MetaFrom returns the connection metadata in ctx, or nil.
func MetaFrom(ctx context.Context) *Meta {
	m, _ := ctx.Value(metaKey{}).(*Meta)
	return m
}
