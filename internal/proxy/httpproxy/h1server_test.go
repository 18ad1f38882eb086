package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// scriptConn is a connection whose client sends a fixed script and then
// hangs up; what the server writes is collected.
type scriptConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *scriptConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *scriptConn) Close() error                     { return nil }
func (c *scriptConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *scriptConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// serveScript runs the HTTP/1 server over script with an echoing handler.
func serveScript(script []byte) string {
	c := &scriptConn{in: bytes.NewReader(script)}
	ctx := inboundConn()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		n, _ := io.Copy(w, r.Body)
		w.Header().Set("X-Sum", strings.Repeat("x", int(n%7)))
	})
	serveH1(ctx, ServerConfig{MaxHeaderBytes: 4096, HeaderReadTimeout: time.Second, IdleTimeout: time.Second}, slog.New(slog.DiscardHandler), h, c)
	return c.out.String()
}

func TestServeScriptedConversation(t *testing.T) {
	out := serveScript([]byte("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"))
	want := []string{"HTTP/1.1 200 OK\r\n", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nX-Sum: xxx\r\n\r\n", "2\r\nde\r\n0\r\nX-Sum: xx\r\n\r\n"}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// A read deadline a handler set (http.ResponseController; the proxy's own
// waitBody does it to a stuck body copy) ends with its request: the next
// request on the connection, pipelined so that its head is read without a
// deadline of the server's, still reads the body the client sends after.
func TestHandlerReadDeadlineEndsWithItsRequest(t *testing.T) {
	client, server := net.Pipe()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			http.NewResponseController(w).SetReadDeadline(time.Now())
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	go serveH1(inboundConn(), ServerConfig{MaxHeaderBytes: 4096, HeaderReadTimeout: time.Minute, IdleTimeout: time.Minute}, slog.New(slog.DiscardHandler), h, server)
	defer client.Close()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(client, "GET /first HTTP/1.1\r\nHost: x\r\n\r\nPOST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
	br := bufio.NewReader(client)
	for _, want := range []string{"", "abc"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want == "" {
			go io.WriteString(client, "abc") // the second request's body, once the first is answered
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(got) != want {
			t.Fatalf("response %d %q; want 200 %q", resp.StatusCode, got, want)
		}
	}
}

// FuzzServeH1 feeds arbitrary client bytes to the HTTP/1 server: it must
// never panic or hang, and whatever it answers must be parseable HTTP.
func FuzzServeH1(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
	f.Add([]byte("GET / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"))
	f.Fuzz(func(t *testing.T, script []byte) {
		out := serveScript(script)
		if out != "" && !strings.HasPrefix(out, "HTTP/1.1 ") {
			t.Fatalf("answer is not HTTP: %q", out)
		}
	})
}

// drainRaceConn is the server's end of an idle connection whose first long
// read deadline — the idle wait's — lands just as the proxy starts to
// drain: the drain's own deadline (now) comes in first, the idle one
// after it, the order a preempted server could see.
type drainRaceConn struct {
	net.Conn
	drain    context.CancelFunc
	drainSet chan struct{} // the drain's deadline arrived
	raced    bool
}

func (c *drainRaceConn) SetReadDeadline(t time.Time) error {
	if !c.raced && time.Until(t) > time.Second {
		c.raced = true
		c.drain()
		<-c.drainSet
		return c.Conn.SetReadDeadline(t)
	}
	if !t.IsZero() && time.Until(t) <= 0 {
		defer close(c.drainSet)
	}
	return c.Conn.SetReadDeadline(t)
}

// An idle client connection ends with the drain, however the drain's
// wake-up and the idle wait's deadline interleave: the idle timeout is
// not waited out.
func TestDrainEndsAnIdleConnectionWhateverTheOrder(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	drain, start := context.WithCancel(context.Background())
	c := &drainRaceConn{Conn: server, drain: start, drainSet: make(chan struct{})}
	ctx := transport.WithMeta(context.Background(), &transport.Meta{Direction: transport.Inbound, Drain: drain})
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveH1(ctx, ServerConfig{MaxHeaderBytes: 4096, HeaderReadTimeout: time.Second, IdleTimeout: 30 * time.Second},
			slog.New(slog.DiscardHandler), http.NotFoundHandler(), c)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection outlived the drain by more than 5s (the idle timeout is 30s)")
	}
}

// A body whose client waits for 100 Continue is not read once the final
// response went out without one: the client need not send it, and its
// next bytes may be its next request, which must never be taken for the
// body. The connection closes instead.
func TestBodyNotAskedForIsNeverRead(t *testing.T) {
	c := &scriptConn{in: bytes.NewReader([]byte("PUT /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n" +
		"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"))}
	var read string
	var readErr error
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden) // an early final answer, as an upstream gives one
		w.(http.Flusher).Flush()
		b := make([]byte, 16)
		n, err := r.Body.Read(b) // as the HTTP/2 client's body goroutine still may
		read, readErr = string(b[:n]), err
	})
	serveH1(inboundConn(), ServerConfig{MaxHeaderBytes: 4096, HeaderReadTimeout: time.Second, IdleTimeout: time.Second}, slog.New(slog.DiscardHandler), h, c)
	if read != "" || readErr != io.EOF {
		t.Errorf("the body read %q, %v after the final response; want nothing and the end", read, readErr)
	}
	out := c.out.String()
	if strings.Contains(out, "100 Continue") || strings.Count(out, "HTTP/1.1 ") != 1 || !strings.HasPrefix(out, "HTTP/1.1 403") {
		t.Errorf("want one response, the 403, and the connection closed; the client got:\n%s", out)
	}
}
