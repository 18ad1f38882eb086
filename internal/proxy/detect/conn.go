package detect

import (
	"net"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Conn is a connection whose first bytes were read during detection and are
// replayed to the next reader.
type Conn struct {
	net.Conn
	prefix []byte
}

// NewConn returns c with prefix replayed before c's own bytes.
func NewConn(c net.Conn, prefix []byte) *Conn { return &Conn{Conn: c, prefix: prefix} }

func (c *Conn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the underlying connection, if it can be.
func (c *Conn) CloseWrite() error { return transport.CloseWrite(c.Conn) }

// Unwrap hands over the unread prefix and the underlying connection, so a
// caller can write the prefix and then use the raw connection (for splice).
func (c *Conn) Unwrap() ([]byte, net.Conn) {
	p := c.prefix
	c.prefix = nil
	return p, c.Conn
}
