package httpproxy

import (
	"bufio"
	"context"
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// trustIdle is how long a connection may sit idle and still be reused
// without first checking that the upstream has not closed it. The check is
// a syscall; skipping it for connections that just finished an exchange
// keeps it off the busy path (at full load a connection is reused within
// microseconds). It is short because applications close idle connections
// when they shut down (Go's http.Server.Shutdown does, at once): a request
// written on such a connection fails, and unless it is idempotent and
// bodiless (retried in forwardH1) it cannot be sent again — the upstream
// may have read it. A rolling restart under 100 rps lost a request every
// few restarts at 100 ms.
const trustIdle = time.Millisecond

// h1Pool keeps idle HTTP/1.1 connections to upstreams, per target address,
// most recently used first.
type h1Pool struct {
	dial        func(ctx context.Context, addr string) (net.Conn, error)
	idleTimeout time.Duration
	maxIdle     int // per target

	mu      sync.Mutex
	idle    map[string][]*upConn
	sweeper bool
	closed  bool
}

// upConn is one upstream HTTP/1.1 connection.
type upConn struct {
	net.Conn
	addr      string
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
	abandon   func() // Close as a func value made once, for context.AfterFunc per exchange
}

func newH1Pool(dial func(ctx context.Context, addr string) (net.Conn, error), idleTimeout time.Duration) *h1Pool {
	return &h1Pool{dial: dial, idleTimeout: idleTimeout, maxIdle: 1024, idle: map[string][]*upConn{}}
}

// get returns an idle connection to addr that is still open, or a new one.
// reused reports which.
func (p *h1Pool) get(ctx context.Context, addr string) (uc *upConn, reused bool, err error) {
	now := time.Now()
	for {
		p.mu.Lock()
		conns := p.idle[addr]
		if len(conns) == 0 {
			p.mu.Unlock()
			break
		}
		uc = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		p.idle[addr] = conns[:len(conns)-1]
		p.mu.Unlock()
		idle := now.Sub(uc.idleSince)
		if idle < p.idleTimeout && (idle < trustIdle || stillOpen(uc.Conn)) {
			return uc, true, nil
		}
		uc.Close()
	}
	c, err := p.dial(ctx, addr)
	if err != nil {
		return nil, false, err
	}
	nc := &upConn{Conn: c, addr: addr, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}
	nc.abandon = func() { nc.Close() } // nc, not uc: a captured result would be on the heap for every call
	return nc, false, nil
}

// put returns a connection whose last exchange completed cleanly.
func (p *h1Pool) put(uc *upConn) {
	if uc.br.Buffered() > 0 {
		uc.Close() // the upstream sent more than one response: don't trust it
		return
	}
	uc.idleSince = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle[uc.addr]) >= p.maxIdle {
		p.mu.Unlock()
		uc.Close()
		return
	}
	p.idle[uc.addr] = append(p.idle[uc.addr], uc)
	if !p.sweeper {
		p.sweeper = true
		go p.sweep()
	}
	p.mu.Unlock()
}

// sweep closes connections idle longer than the idle timeout, until the
// pool is empty.
func (p *h1Pool) sweep() {
	for {
		time.Sleep(p.idleTimeout / 2)
		var stale []*upConn
		p.mu.Lock()
		cutoff := time.Now().Add(-p.idleTimeout)
		total := 0
		for addr, conns := range p.idle {
			keep := conns[:0]
			for _, uc := range conns {
				if uc.idleSince.Before(cutoff) {
					stale = append(stale, uc)
				} else {
					keep = append(keep, uc)
				}
			}
			if len(keep) == 0 {
				delete(p.idle, addr)
			} else {
				p.idle[addr] = keep
			}
			total += len(keep)
		}
		if total == 0 {
			p.sweeper = false
		}
		p.mu.Unlock()
		for _, uc := range stale {
			uc.Close()
		}
		if total == 0 {
			return
		}
	}
}

// closeIdle closes every idle connection; with final, the pool keeps none
// from now on.
func (p *h1Pool) closeIdle(final bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = map[string][]*upConn{}
	p.closed = p.closed || final
	p.mu.Unlock()
	for _, conns := range idle {
		for _, uc := range conns {
			uc.Close()
		}
	}
}

// stillOpen peeks, without blocking, at an idle connection: an upstream
// that closed it (EOF) or sent something unasked is not reusable.
func stillOpen(c net.Conn) bool {
	for {
		u, ok := c.(interface{ Unwrap() net.Conn })
		if !ok {
			break
		}
		c = u.Unwrap()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	err = raw.Read(func(fd uintptr) bool {
		// A raw call, as the connection's reads and writes are
		// (transport.Socket): MSG_DONTWAIT, so it never blocks.
		var b [1]byte
		_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		open = errno == unix.EAGAIN
		return true // one attempt only: never wait
	})
	return err == nil && open
}
