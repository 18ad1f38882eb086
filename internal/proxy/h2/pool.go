package h2

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// Pool keeps multiplexed client connections per key (a target address, or
// a peer proxy and its identity): a caller takes a stream on the first
// connection with one free, and only when none has (every one at its
// peer's stream limit, or draining after a GOAWAY) is another opened —
// once, however many callers arrive together: http.Transport would dial a
// connection per concurrent request until the first one is up, which for
// the mesh means dozens of TLS handshakes where one will do.
type Pool[K comparable] struct {
	dial  func(ctx context.Context, key K) (net.Conn, error)
	cfg   ClientConfig
	mu    sync.Mutex
	hosts map[K]*poolHost
}

// poolHost is one key's connections and the dial under way, if any.
type poolHost struct {
	conns   []*ClientConn
	dialing *poolDial
}

// poolDial is a connection being opened for every caller waiting on it.
type poolDial struct {
	ready chan struct{}
	cc    *ClientConn
	err   error
}

// poolDialTimeout bounds opening a connection on behalf of every waiting
// caller.
const poolDialTimeout = 15 * time.Second

// NewPool returns a pool opening its connections with dial and cfg.
func NewPool[K comparable](dial func(ctx context.Context, key K) (net.Conn, error), cfg ClientConfig) *Pool[K] {
	return &Pool[K]{dial: dial, cfg: cfg, hosts: map[K]*poolHost{}}
}

// Get returns a connection for key with a stream reserved for the caller
// (RoundTrip takes it). The connection outlives the caller that opened
// it: it is dialled with ctx's values (a peer identity, say) but not its
// deadline.
func (p *Pool[K]) Get(ctx context.Context, key K) (*ClientConn, error) {
	for {
		p.mu.Lock()
		h := p.hosts[key]
		if h == nil {
			h = &poolHost{}
			p.hosts[key] = h
		}
		if cc := h.reserve(); cc != nil {
			p.mu.Unlock()
			return cc, nil
		}
		d := h.dialing
		if d == nil {
			d = &poolDial{ready: make(chan struct{})}
			h.dialing = d
			p.sweepLocked()
			p.mu.Unlock()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), poolDialTimeout)
			var c net.Conn
			if c, d.err = p.dial(dctx, key); d.err == nil {
				d.cc, d.err = NewClientConn(c, p.cfg)
			}
			cancel()
			var reserveErr error
			p.mu.Lock()
			h.dialing = nil
			if d.err == nil {
				h.conns = append(h.conns, d.cc)
				// The dialler's stream first, before the waiting callers
				// take what the connection has to give.
				reserveErr = d.cc.Reserve()
			}
			p.mu.Unlock()
			close(d.ready)
			if d.err != nil {
				return nil, d.err
			}
			if reserveErr != nil {
				return nil, reserveErr // a new connection without a stream to give
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

// sweepLocked forgets the connections that ended (idled out, broke) and
// the keys left with none: targets and peers come and go, and a key is
// otherwise only looked at again when it is asked for. Once per dial, so
// its cost is a dial's, not a request's. Called with the pool locked.
func (p *Pool[K]) sweepLocked() {
	for key, h := range p.hosts {
		live := h.conns[:0]
		for _, cc := range h.conns {
			if cc.Err() == nil {
				live = append(live, cc)
			} else {
				cc.Close()
			}
		}
		clear(h.conns[len(live):])
		h.conns = live
		if len(live) == 0 && h.dialing == nil {
			delete(p.hosts, key)
		}
	}
}

// reserve takes a stream on the first connection with one free, forgetting
// closed connections; nil if none has one. Called with the pool locked.
func (h *poolHost) reserve() *ClientConn {
	live := h.conns[:0]
	var got *ClientConn
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

// CloseIdle closes connections with no stream in flight.
func (p *Pool[K]) CloseIdle() {
	p.mu.Lock()
	var idle []io.Closer
	for key, h := range p.hosts {
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
			delete(p.hosts, key)
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
