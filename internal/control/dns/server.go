package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	udpWorkers  = 4                // goroutines reading the UDP socket
	maxTCPConns = 256              // TCP connections served at once
	tcpIdle     = 10 * time.Second // a TCP connection's limit per query
	retryPause  = 20 * time.Millisecond
)

// Resolver answers which virtual IP a service has.
type Resolver interface {
	// ServiceIP returns the service's virtual IP, and whether the service
	// exists. name and namespace are lower case. It is called from several
	// goroutines at once and should not block.
	ServiceIP(name, namespace string) (netip.Addr, bool)
}

// Config configures a Server.
type Config struct {
	Domain   string        // cluster domain, default "cluster.local"
	Resolver Resolver      // required
	TTL      time.Duration // answer TTL, default 5s; also the negative-caching TTL
	Log      *slog.Logger  // default: discard
}

// Server is a DNS server for the service names of one cluster domain; see
// the package documentation for what it answers.
type Server struct {
	domain string          // lower case, with the trailing dot: "cluster.local."
	apex   dnsmessage.Name // the domain, as the SOA record's owner
	soa    dnsmessage.SOAResource
	ttl    uint32 // seconds
	res    Resolver
	log    *slog.Logger

	udp       *net.UDPConn
	tcp       *net.TCPListener
	serving   atomic.Bool
	closeOnce sync.Once
	closed    chan struct{}
}

// newServer checks c and builds a Server without sockets.
func newServer(c Config) (*Server, error) {
	if c.Resolver == nil {
		return nil, errors.New("dns: Config.Resolver is nil")
	}
	domain := strings.Trim(lowerASCII(c.Domain), ".")
	if domain == "" {
		domain = "cluster.local"
	}
	domain += "."
	ttl := c.TTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	s := &Server{
		domain: domain,
		ttl:    uint32(min(ttl/time.Second, math.MaxInt32)),
		res:    c.Resolver,
		log:    c.Log,
		closed: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if strings.Contains(domain, "..") {
		return nil, fmt.Errorf("dns: invalid domain %q: empty label", c.Domain)
	}
	var errs [3]error
	s.apex, errs[0] = dnsmessage.NewName(domain)
	s.soa.NS, errs[1] = dnsmessage.NewName("ns.dns." + domain)
	s.soa.MBox, errs[2] = dnsmessage.NewName("hostmaster." + domain)
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("dns: invalid domain %q: %w", c.Domain, err)
	}
	s.soa.Serial, s.soa.Refresh, s.soa.Retry, s.soa.Expire = 1, 7200, 1800, 86400
	s.soa.MinTTL = s.ttl
	return s, nil
}

// Listen binds UDP and TCP on addr (e.g. "10.239.0.1:53" or "127.0.0.1:0";
// with port 0 both use the port UDP got). Bind errors are returned wrapped
// with the address. Call Serve to answer, or Close to release the sockets.
func Listen(addr string, c Config) (*Server, error) {
	s, err := newServer(c)
	if err != nil {
		return nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen %s: %w", addr, err)
	}
	for attempt := 1; ; attempt++ {
		udp, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
		}
		port := addrPort(udp.LocalAddr()).Port()
		tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: ua.IP, Port: int(port), Zone: ua.Zone})
		if err == nil {
			s.udp, s.tcp = udp, tcp
			return s, nil
		}
		_ = udp.Close()
		if ua.Port != 0 || attempt == 5 { // a random port may be taken for TCP: try another
			return nil, fmt.Errorf("dns: listen tcp %s (port %d): %w", addr, port, err)
		}
	}
}

// Addr returns the address the server listens on, for both UDP and TCP.
func (s *Server) Addr() netip.AddrPort {
	return addrPort(s.udp.LocalAddr())
}

// addrPort converts a socket address.
func addrPort(a net.Addr) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close closes the sockets at once. It is only needed for a Server that is
// not served, or to stop Serve without waiting for in-flight answers.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = errors.Join(s.udp.Close(), s.tcp.Close())
	})
	return err
}

// Serve answers until ctx ends, then closes the sockets and returns nil
// after in-flight answers are done. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("dns: Serve called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range udpWorkers {
		wg.Go(func() { s.serveUDP(ctx) })
	}
	wg.Go(func() { s.serveTCP(ctx, &wg) })
	select {
	case <-ctx.Done():
	case <-s.closed:
	}
	cancel() // stops TCP connections between queries
	// Wake the blocked reads; an answer being written still goes out.
	now := time.Now()
	_ = s.udp.SetReadDeadline(now)
	_ = s.tcp.SetDeadline(now)
	wg.Wait()
	_ = s.Close()
	return nil
}

// serveUDP answers UDP queries until ctx ends or the socket closes.
func (s *Server) serveUDP(ctx context.Context) {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || !s.pause(ctx, "udp read", err) {
				return
			}
			continue
		}
		if msg := s.Answer(buf[:n], 0); msg != nil {
			if _, err := s.udp.WriteToUDPAddrPort(msg, from); err != nil {
				s.log.Debug("dns udp write failed", "to", from, "err", err)
			}
		}
	}
}

// serveTCP accepts TCP connections until ctx ends or the listener closes;
// it serves at most maxTCPConns at once, leaving more in the backlog.
func (s *Server) serveTCP(ctx context.Context, wg *sync.WaitGroup) {
	slots := make(chan struct{}, maxTCPConns)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := s.tcp.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) || !s.pause(ctx, "tcp accept", err) {
				return
			}
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			s.serveConn(ctx, c)
		})
	}
}

// serveConn answers the queries on one TCP connection, each framed by a
// 2-byte length, until the client closes it, idles for tcpIdle, or ctx ends.
func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer func() { _ = c.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	var size [2]byte
	for {
		// Checking ctx after setting the deadline means AfterFunc's
		// deadline cannot be overwritten unnoticed.
		if err := c.SetDeadline(time.Now().Add(tcpIdle)); err != nil || ctx.Err() != nil {
			return
		}
		if _, err := io.ReadFull(c, size[:]); err != nil {
			return
		}
		query := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(c, query); err != nil {
			return
		}
		msg := s.Answer(query, MaxTCPSize)
		if msg == nil {
			return // not DNS: give up on the connection
		}
		binary.BigEndian.PutUint16(size[:], uint16(len(msg)))
		bufs := net.Buffers{size[:], msg}
		if _, err := bufs.WriteTo(c); err != nil {
			return
		}
	}
}

// pause logs an unexpected socket error and waits a moment before the
// caller retries; it reports false if ctx ended meanwhile.
func (s *Server) pause(ctx context.Context, op string, err error) bool {
	s.log.Warn("dns "+op+" failed", "err", err)
	t := time.NewTimer(retryPause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
