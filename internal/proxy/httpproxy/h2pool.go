package httpproxy

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// h2Pool keeps one multiplexed HTTP/2 connection per target and opens it
// once however many requests arrive together — http.Transport would dial a
// connection per concurrent request until the first one is up, which for
// the mesh means dozens of TLS handshakes where one will do.
type h2Pool struct {
	t     *http.Transport // dialer, protocols and HTTP/2 settings
	mu    sync.Mutex
	conns map[string]*h2Conn
}

// h2Conn is a connection being opened (ready not yet closed) or open.
type h2Conn struct {
	ready chan struct{}
	cc    *http.ClientConn
	err   error
}

// h2DialTimeout bounds opening a connection on behalf of every waiting request.
const h2DialTimeout = 15 * time.Second

func newH2Pool(t *http.Transport) *h2Pool {
	return &h2Pool{t: t, conns: map[string]*h2Conn{}}
}

// RoundTrip sends r on the connection to r.URL.Host, opening it if needed.
func (p *h2Pool) RoundTrip(r *http.Request) (*http.Response, error) {
	cc, err := p.get(r.Context(), r.URL.Host)
	if err != nil {
		return nil, err
	}
	return cc.RoundTrip(r)
}

func (p *h2Pool) get(ctx context.Context, addr string) (*http.ClientConn, error) {
	for {
		p.mu.Lock()
		c := p.conns[addr]
		if c == nil {
			c = &h2Conn{ready: make(chan struct{})}
			p.conns[addr] = c
			p.mu.Unlock()
			// The connection outlives the request that opened it: dial with
			// the request's values (the peer identity) but not its deadline.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h2DialTimeout)
			c.cc, c.err = p.t.NewClientConn(dctx, "http", addr)
			cancel()
			close(c.ready)
			if c.err != nil {
				p.drop(addr, c)
			}
			return c.cc, c.err
		}
		p.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if c.err != nil {
			return nil, c.err
		}
		if c.cc.Err() == nil {
			return c.cc, nil
		}
		p.drop(addr, c) // closed (idle timeout, GOAWAY, peer gone): open another
	}
}

// drop forgets c if it is still the connection for addr.
func (p *h2Pool) drop(addr string, c *h2Conn) {
	p.mu.Lock()
	if p.conns[addr] == c {
		delete(p.conns, addr)
	}
	p.mu.Unlock()
	if c.cc != nil {
		c.cc.Close()
	}
}

// closeIdle closes connections with no request in flight.
func (p *h2Pool) closeIdle() {
	p.mu.Lock()
	var idle []*h2Conn
	for addr, c := range p.conns {
		select {
		case <-c.ready:
		default:
			continue
		}
		if c.cc == nil || c.cc.InFlight() == 0 {
			idle = append(idle, c)
			delete(p.conns, addr)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		if c.cc != nil {
			c.cc.Close()
		}
	}
}
