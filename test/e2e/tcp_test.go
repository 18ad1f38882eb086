package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// TestTCP sends opaque TCP through both proxies with half-close: the client
// writes, half-closes, and must still read the whole echo and then EOF; the
// server must see EOF only after the client's half-close. The echo port is
// not an opaque port, so detection decides (and falls back to opaque); the
// redis port (6379, or a port named in --opaque-ports) skips detection.
func TestTCP(t *testing.T) {
	forEachMode(t, func(t *testing.T, mode string) {
		tp := newTopology(t, mode, echoBackend, redisBackend)
		for _, be := range []backend{echoBackend, redisBackend} {
			t.Run(be.name, func(t *testing.T) {
				es := serveEcho(t, tp.ln[be.name])
				through := tp.through(t, be, "tcp_open_total", `peer="src"`)
				t.Run("binary-1MiB", func(t *testing.T) {
					data := pattern(1 << 20)
					data[0] = 0 // never a protocol's first byte: detection decides at once
					echoHalfClose(t, tp, be, es, data)
				})
				t.Run("half-close-while-detecting", func(t *testing.T) {
					// "PING" could begin an HTTP request line: detection is
					// still waiting when the client half-closes.
					echoHalfClose(t, tp, be, es, []byte("PING"))
				})
				t.Run("silent-prefix", func(t *testing.T) {
					testSilentPrefix(t, tp, be, es)
				})
				through()
			})
		}
	})
}

// echoHalfClose writes data, half-closes, and expects data back then EOF.
func echoHalfClose(t *testing.T, tp *topology, be backend, es *echoServer, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := tp.dialer.DialContext(ctx, "tcp", tp.addr[be.name])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	writeErr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		writeErr <- err
	}()
	got, err := io.ReadAll(c) // ends at EOF
	if err != nil {
		t.Fatalf("reading the echo after %d of %d bytes: %v", len(got), len(data), err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("write/half-close: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("echo: %d bytes (sha256 %s), want the %d bytes sent (sha256 %s)", len(got), sha(got), len(data), sha(data))
	}
	awaitEcho(t, es, int64(len(data)))
}

// awaitEcho waits for the server to report a connection that ended with
// the client's EOF after n bytes.
func awaitEcho(t *testing.T, es *echoServer, n int64) {
	t.Helper()
	select {
	case r := <-es.done:
		if r.err != nil || r.n != n {
			t.Errorf("server: echoed %d bytes, ended with %v; want %d bytes ending with the client's EOF", r.n, r.err, n)
		}
	case <-time.After(5 * time.Second):
		t.Error("server did not see the client's half-close within 5s")
	}
}

// testSilentPrefix sends the start of what could be an HTTP request and
// waits for its echo without sending more: on a detected port, detection
// must time out and fall back to opaque; on an opaque port the echo must be
// immediate. The connection then carries on both ways.
func testSilentPrefix(t *testing.T, tp *topology, be backend, es *echoServer) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := tp.dialer.DialContext(ctx, "tcp", tp.addr[be.name])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("HELLO")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "HELLO" {
		t.Fatalf("first echo: %q, %v; want HELLO", buf, err)
	}
	took := time.Since(start)
	if be.opaque && took > 800*time.Millisecond {
		t.Errorf("echo on the opaque port took %v: the proxies waited for protocol detection (timeout %s)", took, detectTimeout)
	}
	select {
	case r := <-es.done:
		t.Fatalf("the server's side ended (%d bytes, %v) before the client half-closed", r.n, r.err)
	default:
	}
	if _, err := c.Write([]byte(" WORLD\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(c)
	if err != nil || string(rest) != " WORLD\r\n" {
		t.Fatalf("rest of the echo: %q, %v; want %q then EOF", rest, err, " WORLD\r\n")
	}
	awaitEcho(t, es, int64(len("HELLO WORLD\r\n")))
}
