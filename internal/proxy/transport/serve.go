package transport

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Server accepts connections on listeners and serves each with a stack,
// tracking them so that shutdown can drain them.
type Server struct {
	log        *slog.Logger
	drain      context.Context
	startDrain context.CancelFunc
	wg         sync.WaitGroup // one per accepted connection

	mu        sync.Mutex
	listeners []net.Listener

	// Limits bound each listener's connections, by direction; set them
	// before Serve. OnRefused is told of every connection a limit refused.
	Limits    map[Direction]Limits
	OnRefused func(dir Direction, reason string, client netip.AddrPort)
}

// NewServer returns a server that logs to log.
func NewServer(log *slog.Logger) *Server {
	drain, start := context.WithCancel(context.Background())
	return &Server{log: log, drain: drain, startDrain: start}
}

// Serve accepts on ln until Drain and serves each connection with h, with
// direction dir. ctx is the hard-stop context: when it is done every
// connection accepted here is closed. Serve returns when ln is closed.
func (s *Server) Serve(ctx context.Context, ln net.Listener, dir Direction, h Handler) error {
	s.mu.Lock()
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	lim := newLimiter(s.Limits[dir])
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.drain.Err() != nil {
				return nil
			}
			if retryable(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "listener", ln.Addr().String(), "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		src := clientAddr(c)
		admit := func() (func(), bool) {
			if reason := lim.admit(src.Addr().Unmap()); reason != "" {
				if s.OnRefused != nil { // counted before closed, as in LimitListener
					s.OnRefused(dir, reason, src)
				}
				return nil, false
			}
			return func() { lim.release(src.Addr().Unmap()) }, true
		}
		release, ok := admit()
		if !ok {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer release()
			s.serveConn(ctx, c, dir, h, admit)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn, dir Direction, h Handler, admit func() (func(), bool)) {
	defer s.wg.Done()
	c = NewSocket(c)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	m := &Meta{Direction: dir, Drain: s.drain, TLS: "disabled", admit: admit}
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		m.Client = ra.AddrPort()
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		m.Local = la.AddrPort()
	}
	if orig, redirected, err := OriginalDst(c); err != nil {
		s.log.Warn("reading original destination failed", "client", m.Client.String(), "error", err)
	} else if redirected {
		m.OrigDst, m.Redirected = orig, true
	}
	h.ServeConn(WithMeta(ctx, m), c)
}

// Drain stops accepting: listeners close, so new connections are refused,
// and Meta.Drain contexts end so servers wind down their connections.
func (s *Server) Drain() {
	s.startDrain()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ln := range s.listeners {
		ln.Close()
	}
}

// Wait blocks until every accepted connection is done or ctx ends, and
// reports whether all finished.
func (s *Server) Wait(ctx context.Context) bool {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryable reports accept errors worth retrying (EMFILE, ENFILE,
// ECONNABORTED), which the standard library still marks Temporary.
func retryable(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
