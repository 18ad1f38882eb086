package httpproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
)

// h2Pool keeps multiplexed HTTP/2 connections per target: a request takes
// a stream on the first connection with one free, and only when none has
// (every one at its peer's stream limit, or draining after a GOAWAY) is
// another opened — once, however many requests arrive together:
// http.Transport would dial a connection per concurrent request until the
// first one is up, which for the mesh means dozens of TLS handshakes where
// one will do.
type h2Pool struct {
	dial  func(ctx context.Context, addr string) (net.Conn, error)
	cfg   h2.ClientConfig
	mu    sync.Mutex
	hosts map[string]*h2Host
}

// h2Host is one target's connections and the dial under way, if any.
type h2Host struct {
	conns   []*h2.ClientConn
	dialing *h2Dial
}

// h2Dial is a connection being opened for every request waiting on it.
type h2Dial struct {
	ready chan struct{}
	cc    *h2.ClientConn
	err   error
}

// h2DialTimeout bounds opening a connection on behalf of every waiting request.
const h2DialTimeout = 15 * time.Second

func newH2Pool(dial func(ctx context.Context, addr string) (net.Conn, error), cfg h2.ClientConfig) *h2Pool {
	return &h2Pool{dial: dial, cfg: cfg, hosts: map[string]*h2Host{}}
}

// RoundTrip sends r on a connection to r.URL.Host. A request the upstream
// provably did not process — refused, or beyond a GOAWAY's last stream —
// is sent once more on another connection if its body can be sent again
// (RFC 9113 §8.7).
func (p *h2Pool) RoundTrip(r *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		cc, err := p.get(r.Context(), r.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(r)
		if err == nil || attempt > 0 || !Unprocessed(err) || !rewind(r) {
			return resp, err
		}
	}
}

// rewind makes r's body ready to be sent again, if it can be.
func rewind(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	if r.GetBody == nil {
		return false
	}
	b, err := r.GetBody()
	if err != nil {
		return false
	}
	r.Body = b
	return true
}

// get returns a connection to addr with a stream reserved for the caller.
func (p *h2Pool) get(ctx context.Context, addr string) (*h2.ClientConn, error) {
	for {
		p.mu.Lock()
		h := p.hosts[addr]
		if h == nil {
			h = &h2Host{}
			p.hosts[addr] = h
		}
		if cc := h.reserve(); cc != nil {
			p.mu.Unlock()
			return cc, nil
		}
		d := h.dialing
		if d == nil {
			d = &h2Dial{ready: make(chan struct{})}
			h.dialing = d
			p.mu.Unlock()
			// The connection outlives the request that opened it: dial with
			// the request's values (the peer identity) but not its deadline.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h2DialTimeout)
			var c net.Conn
			if c, d.err = p.dial(dctx, addr); d.err == nil {
				d.cc, d.err = h2.NewClientConn(c, p.cfg)
			}
			cancel()
			p.mu.Lock()
			h.dialing = nil
			if d.err == nil {
				h.conns = append(h.conns, d.cc)
			}
			p.mu.Unlock()
			close(d.ready)
			if d.err != nil {
				return nil, d.err
			}
			if err := d.cc.Reserve(); err != nil {
				return nil, err // a new connection without a stream to give
			}
			return d.cc, nil
		}
		p.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil {
			return nil, d.err
		}
	}
}

// reserve takes a stream on the first connection with one free, forgetting
// closed connections; nil if none has one. Called with the pool locked.
func (h *h2Host) reserve() *h2.ClientConn {
	live := h.conns[:0]
	var got *h2.ClientConn
	for _, cc := range h.conns {
		if cc.Err() != nil {
			cc.Close()
			continue
		}
		live = append(live, cc)
		if got == nil && cc.Reserve() == nil {
			got = cc
		}
	}
	clear(h.conns[len(live):])
	h.conns = live
	return got
}

// closeIdle closes connections with no request in flight.
func (p *h2Pool) closeIdle() {
	p.mu.Lock()
	var idle []io.Closer
	for addr, h := range p.hosts {
		busy := h.conns[:0]
		for _, cc := range h.conns {
			if cc.InFlight() == 0 {
				idle = append(idle, cc)
			} else {
				busy = append(busy, cc)
			}
		}
		clear(h.conns[len(busy):])
		h.conns = busy
		if len(busy) == 0 && h.dialing == nil {
			delete(p.hosts, addr)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
