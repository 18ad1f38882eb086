package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Credentials are the proxy's own certificate and trust anchors, as TLS
// configurations; internal/proxy/identity's Manager provides them.
type Credentials interface {
	ServerConfig() *tls.Config
	ClientConfig(peer identity.ID) *tls.Config
}

// ErrHandshake marks a failed TLS handshake with a peer proxy: it refused
// our certificate, or we refused its (wrong identity, expired, foreign anchor).
var ErrHandshake = errors.New("mesh: TLS handshake failed")

// HandshakeTimeout bounds a TLS handshake between proxies.
const HandshakeTimeout = 10 * time.Second

// Dialer opens mesh connections: TCP to the peer proxy's inbound port, a
// TLS 1.3 handshake that proves both identities, then the header. Opaque
// connections to a peer that takes tunnels become streams of one pooled
// Tunnel connection (tunnel.go).
type Dialer struct {
	TCP   *transport.Dialer
	Creds Credentials
	// Port is the peers' inbound (mesh) port.
	Port uint16
	// PortOf, if set, names the mesh port of the proxy in front of a
	// target when it differs from Port (discovery says so); 0 means Port.
	PortOf func(target string) uint16
	// IdleTimeout closes a tunnel connection that has carried no
	// connection for that long; 0 means never.
	IdleTimeout time.Duration

	configs sync.Map // identity.ID -> *tls.Config
	session tls.ClientSessionCache
	once    sync.Once
	tunnels tunnels
}

// Dial connects to the proxy in front of target (host:port), which must
// present peer, and starts a session of protocol proto for target's port.
// An opaque session is a stream of a tunnel connection when the peer
// takes tunnels.
func (d *Dialer) Dial(ctx context.Context, dir transport.Direction, target string, peer identity.ID, proto Protocol) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("mesh: target %q has no valid port", target)
	}
	meshPort := d.Port
	if d.PortOf != nil {
		if p := d.PortOf(target); p != 0 {
			meshPort = p
		}
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(meshPort)))
	if proto == Opaque {
		if c, err := d.tunnel(ctx, tunnelKey{dir: dir, addr: addr, peer: peer}, target); !errors.Is(err, errNoTunnels) {
			return c, err
		}
	}
	c, err := d.handshake(ctx, dir, addr, peer)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(Header{Port: uint16(port), Protocol: proto}.Append(nil)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// handshake opens a mesh connection to the proxy at addr, which must
// present peer.
func (d *Dialer) handshake(ctx context.Context, dir transport.Direction, addr string, peer identity.ID) (*tls.Conn, error) {
	raw, err := d.TCP.DialLabeled(ctx, metrics.Labels{Direction: string(dir), TargetAddr: addr, TLS: "true", ServerID: peer.String()}, addr)
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, d.config(peer))
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%w with %s (%s): %w", ErrHandshake, addr, peer, err)
	}
	if got := c.ConnectionState().NegotiatedProtocol; got != ALPN && got != ALPNTunnels {
		c.Close()
		return nil, fmt.Errorf("mesh: %s does not speak %s (negotiated %q)", addr, ALPN, got)
	}
	return c, nil
}

// config returns the client configuration for peer, built once per peer.
func (d *Dialer) config(peer identity.ID) *tls.Config {
	d.once.Do(func() { d.session = tls.NewLRUClientSessionCache(1024) })
	if c, ok := d.configs.Load(peer); ok {
		return c.(*tls.Config)
	}
	c := d.Creds.ClientConfig(peer).Clone()
	c.NextProtos = []string{ALPNTunnels, ALPN}
	c.ClientSessionCache = d.session
	v, _ := d.configs.LoadOrStore(peer, c)
	return v.(*tls.Config)
}
