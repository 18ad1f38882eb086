package transport

import (
	"context"
	"net"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// Dialer opens connections to targets and counts them (peer="dst").
type Dialer struct {
	Timeout  time.Duration
	Registry *metrics.Registry
	// Dial opens the raw connection; net.Dialer's DialContext when nil.
	// Tests inject failures and delays here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext connects to addr within the dialer's timeout, for a plaintext
// connection.
func (d *Dialer) DialContext(ctx context.Context, dir Direction, addr string) (*MeteredConn, error) {
	return d.DialLabeled(ctx, metrics.Labels{Direction: string(dir), TargetAddr: addr, TLS: "disabled"}, addr)
}

// DialLabeled connects to addr, counting the connection under labels.
func (d *Dialer) DialLabeled(ctx context.Context, labels metrics.Labels, addr string) (*MeteredConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	dial := d.Dial
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewMeteredConn(NewSocket(c), d.Registry.TCP(labels, "dst")), nil
}
