package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (dialled, accepted *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// socketPair is tcpPair with the dialled end a Socket.
func socketPair(t *testing.T) (*Socket, *net.TCPConn) {
	d, a := tcpPair(t)
	s, ok := NewSocket(d).(*Socket)
	if !ok {
		t.Fatalf("NewSocket(%T) is not a *Socket", d)
	}
	return s, a
}

func TestNewSocketKeepsWhatIsNotTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := NewSocket(a); got != a {
		t.Fatalf("NewSocket(pipe) = %T, want the pipe itself", got)
	}
}

// Megabytes both ways at once, in writes and reads of random sizes: the
// writes outrun the socket buffers, so both directions wait on the poller
// (EAGAIN) many times and must resume where they stopped.
func TestSocketCarriesBytesBothWays(t *testing.T) {
	s, peer := socketPair(t)
	const size = 8 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	want := sha256.Sum256(data)

	var wg sync.WaitGroup
	check := func(name string, r io.Reader) {
		defer wg.Done()
		h := sha256.New()
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf[:1+rand.IntN(len(buf))])
			h.Write(buf[:n])
			if err == io.EOF { // exactly io.EOF, as net.Conn returns it
				break
			}
			if err != nil {
				t.Errorf("%s: read: %v", name, err)
				return
			}
		}
		if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
			t.Errorf("%s: received bytes differ from those sent", name)
		}
	}
	send := func(name string, w interface {
		io.Writer
		CloseWrite() error
	}) {
		defer wg.Done()
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+rand.IntN(1<<20))
			n, err := w.Write(rest[:k])
			if err != nil || n != k {
				t.Errorf("%s: write %d bytes: n=%d, %v", name, k, n, err)
				return
			}
			rest = rest[k:]
		}
		if err := w.CloseWrite(); err != nil {
			t.Errorf("%s: close write: %v", name, err)
		}
	}
	wg.Add(4)
	go send("socket", s)
	go check("peer", peer)
	go send("peer", peer)
	go check("socket", s)
	wg.Wait()
}

// A Socket fails as net.Conn does, error for error: callers match on
// net.ErrClosed, os.ErrDeadlineExceeded, syscall errnos and *net.OpError,
// and logs show the message.
func TestSocketErrorsAreNetConns(t *testing.T) {
	scenarios := []struct {
		name string
		// run makes c fail, with peer the other end, and returns the
		// error and the byte count of the call that failed.
		run  func(c net.Conn, peer *net.TCPConn) (int, error)
		is   error
		errn int // the byte count the failed call must return; -1: what reached the peer
	}{
		{"read after close", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.Close()
			return c.Read(make([]byte, 10))
		}, net.ErrClosed, 0},
		{"write after close", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.Close()
			return c.Write([]byte("x"))
		}, net.ErrClosed, 0},
		{"zero-length read after close", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.Close()
			return c.Read(nil)
		}, net.ErrClosed, 0},
		{"zero-length write after close", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.Close()
			return c.Write(nil)
		}, net.ErrClosed, 0},
		{"zero-length write past the deadline", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.SetWriteDeadline(time.Now().Add(-time.Second))
			return c.Write(nil)
		}, os.ErrDeadlineExceeded, 0},
		{"read closed while waiting", func(c net.Conn, _ *net.TCPConn) (int, error) {
			time.AfterFunc(50*time.Millisecond, func() { c.Close() })
			return c.Read(make([]byte, 10))
		}, net.ErrClosed, 0},
		{"read deadline passed", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.SetReadDeadline(time.Now().Add(-time.Second))
			return c.Read(make([]byte, 10))
		}, os.ErrDeadlineExceeded, 0},
		{"read deadline while waiting", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			return c.Read(make([]byte, 10))
		}, os.ErrDeadlineExceeded, 0},
		{"write deadline with the peer not reading", func(c net.Conn, _ *net.TCPConn) (int, error) {
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			return c.Write(make([]byte, 64<<20)) // more than the buffers hold
		}, os.ErrDeadlineExceeded, -1},
		{"read reset by the peer", func(c net.Conn, peer *net.TCPConn) (int, error) {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(50 * time.Millisecond)
			return c.Read(make([]byte, 10))
		}, syscall.ECONNRESET, 0},
		{"write reset by the peer", func(c net.Conn, peer *net.TCPConn) (int, error) {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(50 * time.Millisecond)
			return c.Write([]byte("x"))
		}, syscall.ECONNRESET, 0},
	}
	// The addresses differ from pair to pair; the rest of the message
	// must not.
	normalise := func(err error, c net.Conn) string {
		return strings.NewReplacer(c.LocalAddr().String(), "LOCAL", c.RemoteAddr().String(), "REMOTE").Replace(err.Error())
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			plain, plainPeer := tcpPair(t)
			pn, perr := sc.run(plain, plainPeer)
			s, sPeer := socketPair(t)
			sn, serr := sc.run(s, sPeer)

			if !errors.Is(perr, sc.is) {
				t.Fatalf("net.Conn: %v; want %v (the scenario is wrong)", perr, sc.is)
			}
			if !errors.Is(serr, sc.is) {
				t.Fatalf("Socket: %v; want %v", serr, sc.is)
			}
			var oe *net.OpError
			if !errors.As(serr, &oe) {
				t.Fatalf("Socket's error %T is not a *net.OpError", serr)
			}
			if got, want := normalise(serr, s), normalise(perr, plain); got != want {
				t.Errorf("Socket's error %q, net.Conn's %q", got, want)
			}
			if ne, ok := serr.(net.Error); !ok || ne.Timeout() != errors.Is(sc.is, os.ErrDeadlineExceeded) {
				t.Errorf("Socket's error %v: Timeout() wrong or not a net.Error", serr)
			}
			if sc.errn >= 0 && (sn != sc.errn || pn != sc.errn) {
				t.Errorf("byte counts: Socket %d, net.Conn %d; want %d", sn, pn, sc.errn)
			}
			if sc.errn < 0 {
				if got := received(t, s, sPeer); got != sn {
					t.Errorf("Socket's write reported %d bytes written; %d reached the peer", sn, got)
				}
			}
		})
	}
}

// received closes c and counts what its peer then reads.
func received(t *testing.T, c net.Conn, peer net.Conn) int {
	t.Helper()
	c.Close()
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, peer)
	if err != nil {
		t.Fatalf("draining the peer: %v", err)
	}
	return int(n)
}

func TestSocketReadsZeroBytesAtOnce(t *testing.T) {
	s, _ := socketPair(t)
	s.SetReadDeadline(time.Now().Add(time.Second)) // fails the test instead of hanging it
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v; want 0, nil without waiting for data", n, err)
	}
	if n, err := s.Write(nil); n != 0 || err != nil {
		t.Fatalf("Write(nil) = %d, %v; want 0, nil", n, err)
	}
}

// The server and the dialer hand the proxy's stages Sockets, and what
// needs the TCP connection itself reaches it.
func TestServerAndDialerMakeSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan net.Conn, 1)
	srv := NewServer(slog.New(slog.DiscardHandler))
	go srv.Serve(t.Context(), ln, Inbound, HandlerFunc(func(_ context.Context, c net.Conn) { got <- c }))
	defer srv.Drain()

	d := &Dialer{Timeout: time.Second, Registry: metrics.NewRegistry()}
	mc, err := d.DialContext(t.Context(), Outbound, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if _, ok := mc.Conn.(*Socket); !ok {
		t.Errorf("dialled connection wraps %T, want *Socket", mc.Conn)
	}
	select {
	case c := <-got:
		if _, ok := c.(*Socket); !ok {
			t.Errorf("accepted connection is %T, want *Socket", c)
		}
		// The Socket's answer is its TCP connection's (with conntrack
		// loaded, the local address; else none).
		addr, redirected, err := OriginalDst(c)
		want, _, _ := OriginalDst(c.(*Socket).TCPConn)
		if err != nil || redirected || addr != want {
			t.Errorf("OriginalDst(accepted Socket) = %v, redirected %v, %v; want %v, a direct connection", addr, redirected, err, want)
		}
		if _, err := c.(*Socket).File(); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("Socket.File() error = %v; want ErrUnsupported (a duplicate's Fd would make the socket blocking)", err)
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not hand over the connection")
	}
}
