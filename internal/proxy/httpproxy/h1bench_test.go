package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// BenchmarkServeH1 measures the proxy's HTTP/1 path in user space alone:
// one client connection carrying b.N pipelined GETs through serveH1 and
// the Forwarder to an upstream connection that answers each with nginx's
// 64 B response, both connections in memory (no system calls, no
// goroutine hand-offs). What it reports is what the proxy spends per
// request beyond the kernel's work, which bench/run measures with it:
//
//	go test -run XXX -bench ServeH1 -benchmem -count 10 ./internal/proxy/httpproxy/
func BenchmarkServeH1(b *testing.B) {
	const request = "GET /64 HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nUser-Agent: fortio.org/fortio-1.68.2\r\n\r\n"
	const response = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 00:00:00 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 64\r\nConnection: keep-alive\r\n\r\n" +
		"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	up := &cannedConn{response: response}
	f := cannedForwarder(up)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ServeHTTP(w, r.WithContext(WithTarget(r.Context(), "127.0.0.1:8080", "", "")))
	})
	client := &benchConn{in: strings.NewReader(strings.Repeat(request, b.N))}
	ctx := inboundConn()
	b.ReportAllocs()
	b.ResetTimer()
	serveH1(ctx, ServerConfig{MaxHeaderBytes: 64 << 10, HeaderReadTimeout: time.Minute, IdleTimeout: time.Minute}, slog.New(slog.DiscardHandler), h, client)
	b.StopTimer()
	if up.answered != b.N || client.responses != b.N {
		b.Fatalf("%d requests: the upstream answered %d, the client got %d responses", b.N, up.answered, client.responses)
	}
}

// cannedForwarder is a Forwarder whose every upstream connection is up.
func cannedForwarder(up net.Conn) *Forwarder {
	dial := func(context.Context, string) (net.Conn, error) { return up, nil }
	return &Forwarder{log: slog.New(slog.DiscardHandler), pool: newH1Pool(dial, time.Minute), apps: newAppProtocols(nil, dial)}
}

// inboundConn is the context serveH1 is given for an accepted inbound
// connection that is not draining.
func inboundConn() context.Context {
	return transport.WithMeta(context.Background(), &transport.Meta{Direction: transport.Inbound, Drain: context.Background()})
}

// benchConn is a client connection that sends in and counts the
// responses it is written (their status lines), keeping nothing.
type benchConn struct {
	in        io.Reader
	responses int
}

func (c *benchConn) Read(p []byte) (int, error) { return c.in.Read(p) }
func (c *benchConn) Write(p []byte) (int, error) {
	c.responses += bytes.Count(p, []byte("HTTP/1.1 200 OK\r\n"))
	return len(p), nil
}
func (c *benchConn) Close() error                     { return nil }
func (c *benchConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *benchConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *benchConn) SetDeadline(time.Time) error      { return nil }
func (c *benchConn) SetReadDeadline(time.Time) error  { return nil }
func (c *benchConn) SetWriteDeadline(time.Time) error { return nil }

// cannedConn is an upstream connection that answers every request head
// written to it (bodiless requests: the head ends the request) with
// response, which the next reads return.
type cannedConn struct {
	benchConn
	response string
	pending  bytes.Buffer
	answered int
}

func (c *cannedConn) Write(p []byte) (int, error) {
	for range bytes.Count(p, []byte("\r\n\r\n")) {
		c.pending.WriteString(c.response)
		c.answered++
	}
	return len(p), nil
}

func (c *cannedConn) Read(p []byte) (int, error) {
	if c.pending.Len() == 0 {
		return 0, errors.New("cannedConn: read with no request to answer")
	}
	return c.pending.Read(p)
}
