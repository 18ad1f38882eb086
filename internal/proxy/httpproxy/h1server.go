package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// maxDiscard is how much of an unread request body is drained to keep the
// connection reusable; beyond it the connection is closed instead.
const maxDiscard = 256 << 10

// lingerTimeout is how long a closing connection waits for the client to
// read the final response before the socket is closed (avoiding an RST that
// could destroy the response, RFC 9112 §9.6).
const lingerTimeout = 500 * time.Millisecond

// h1Conn is one HTTP/1 client connection.
type h1Conn struct {
	cfg      ServerConfig
	log      *slog.Logger
	handler  http.Handler
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	idle     atomic.Bool
	hijacked bool
	hangup   hangupWatch
	remote   string // the client's address, as every request's RemoteAddr
	// deadline notes a read deadline set on c since the last head was
	// read: the server's own (idle, head) or a handler's (h1Writer's
	// SetReadDeadline), which the next request must not inherit.
	deadline atomic.Bool
}

// serveH1 serves requests on c one after another (pipelined requests are
// answered in order) until the client or the proxy ends the connection.
func serveH1(ctx context.Context, cfg ServerConfig, log *slog.Logger, h http.Handler, c net.Conn) {
	hc := &h1Conn{cfg: cfg, log: log, handler: h, c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}
	hc.hangup.c = c
	m := transport.MetaFrom(ctx)
	hc.remote = m.Client.String()
	stop := context.AfterFunc(m.Drain, func() {
		if hc.idle.Load() {
			c.SetReadDeadline(time.Now()) // wake the idle wait; the loop sees the drain
		}
	})
	defer stop()
	defer func() {
		if !hc.hijacked {
			c.Close()
		}
	}()
	for {
		if !hc.awaitRequest(m.Drain) {
			return
		}
		if !hc.serveOne(ctx, m) {
			if !hc.hijacked {
				hc.lingerClose()
			}
			return
		}
		if m.Drain.Err() != nil {
			return
		}
	}
}

// awaitRequest waits, up to the idle timeout, for the next request's first
// byte, or until the drain. The idle deadline is set before the drain is
// checked: a drain after the check then wakes the read (its deadline is
// now), and one before it is seen; the other order let a drain between
// the check and the deadline wait out the idle timeout.
func (hc *h1Conn) awaitRequest(drain context.Context) bool {
	if hc.br.Buffered() > 0 {
		return true
	}
	hc.idle.Store(true)
	defer hc.idle.Store(false)
	hc.setReadDeadline(hc.cfg.IdleTimeout)
	if drain.Err() != nil {
		return false
	}
	_, err := hc.br.Peek(1)
	return err == nil
}

// serveOne reads and answers one request and reports whether the
// connection may carry another.
func (hc *h1Conn) serveOne(ctx context.Context, m *transport.Meta) bool {
	head, br, err := peekHead(hc.br, hc.c, hc.cfg.MaxHeaderBytes, func() { hc.setReadDeadline(hc.cfg.HeaderReadTimeout) })
	hc.br = br
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var req *http.Request
	if err == nil {
		req, err = readRequest(rctx, head, br)
	}
	if err != nil {
		hc.rejectRequest(m, err)
		return false
	}
	if hc.deadline.Swap(false) {
		hc.c.SetReadDeadline(time.Time{})
	}
	req.RemoteAddr = hc.remote
	w := newH1Writer(hc, req)
	if m.Drain.Err() != nil {
		w.closeAfter = true
	}
	var body *requestBody // nil for a request without a body
	if req.Body != http.NoBody {
		body = &requestBody{r: req.Body, w: w}
		if !strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			if req.Header.Get("Expect") != "" {
				w.Header().Set(ErrorHeader, "unsupported Expect")
				w.Header().Set("Connection", "close")
				w.WriteHeader(http.StatusExpectationFailed)
				w.finish()
				return false
			}
			body.continued = true
		} else if !req.ProtoAtLeast(1, 1) {
			body.continued = true
		}
		req.Body = body
	} else if hc.br.Buffered() == 0 {
		hc.hangup.arm(hc.br, cancel)
	}

	if !hc.runHandler(w, req) {
		return false
	}
	if hc.hijacked {
		return false
	}
	hc.hangup.disarm()
	if !w.finish() {
		return false
	}
	if body != nil && !body.finish() {
		return false
	}
	return !w.closeAfter && !req.Close
}

// setReadDeadline bounds the connection's reads from now. Each deadline
// is a runtime timer to move, so the server sets one only to wait: for the
// next request (the idle timeout) and for the rest of a head that has not
// all arrived (the header timeout, which peekHead asks for only then).
func (hc *h1Conn) setReadDeadline(d time.Duration) {
	hc.deadline.Store(true)
	hc.c.SetReadDeadline(time.Now().Add(d))
}

// runHandler calls the handler, turning a panic into a closed connection.
// http.ErrAbortHandler is how a handler says "the response is broken, cut
// the connection"; anything else is a bug worth a log line.
func (hc *h1Conn) runHandler(w *h1Writer, req *http.Request) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				hc.log.Error("HTTP handler panicked", "panic", p)
			}
			hc.hangup.disarm()
			ok = false
		}
	}()
	hc.handler.ServeHTTP(w, req)
	return true
}

// rejectRequest answers a request that could not be read, then the
// connection closes.
func (hc *h1Conn) rejectRequest(m *transport.Meta, err error) {
	status, reason := http.StatusBadRequest, "malformed HTTP request"
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF) && hc.br.Buffered() == 0:
		return // the client went away between requests
	case errors.Is(err, os.ErrDeadlineExceeded):
		status, reason = http.StatusRequestTimeout, "request head not received in time"
	case errors.Is(err, errHeadTooLarge):
		status, reason = http.StatusRequestHeaderFieldsTooLarge, "request head too large"
	case errors.Is(err, errSmuggling):
		reason = "both Content-Length and Transfer-Encoding"
	case errors.Is(err, errHTTP10TE):
		reason = "Transfer-Encoding in an HTTP/1.0 request"
	case errors.Is(err, errBadField):
		reason = "invalid header field"
	case errors.Is(err, errBadHost):
		reason = "missing or invalid Host"
	case strings.Contains(err.Error(), "unsupported transfer encoding"):
		status, reason = http.StatusNotImplemented, "unsupported Transfer-Encoding"
	}
	hc.log.Info("rejected HTTP/1 request", "direction", m.Direction, "client", m.Client.String(), "status", status, "reason", reason, "error", err)
	hc.c.SetWriteDeadline(time.Now().Add(time.Second))
	hc.bw.WriteString("HTTP/1.1 " + statusLine(status) + "\r\n")
	writeDate(hc.bw)
	hc.bw.WriteString("Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n" +
		ErrorHeader + ": " + reason + "\r\nContent-Length: " + itoa(len(reason)+1) + "\r\n\r\n" + reason + "\n")
	hc.bw.Flush()
	hc.lingerClose()
}

// lingerClose half-closes the connection and gives the client a moment to
// read what was sent before the socket goes away.
func (hc *h1Conn) lingerClose() {
	hc.bw.Flush()
	transport.CloseWrite(hc.c)
	hc.c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(hc.c, maxDiscard))
}

// requestBody sends "100 Continue" before the first read when the client
// asked for it, and notes when the body has been read to its end. The
// handler's upstream may still be reading it when the handler returns (an
// http.RoundTripper may send a request's body, and close it, in a
// goroutine of its own after the response came): reads are serialized
// with the server's own end of the body (finish), and fail after it.
type requestBody struct {
	r         io.ReadCloser
	w         *h1Writer
	mu        sync.Mutex
	continued bool
	eof       bool
	done      bool // finished: the connection's reader is the server's again
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return 0, http.ErrBodyReadAfterClose
	}
	if !b.continued {
		if !b.w.sendContinue() {
			// The final response went out before the body was asked for:
			// the client need not send it, and what it sends next may be
			// its next request. Nothing is read; the connection closes
			// after this exchange (finish).
			return 0, io.EOF
		}
		b.continued = true
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// finish takes the body back from the handler once it returned, and
// reports whether the connection may carry another request: the rest of
// the body the client is sending is read and dropped (up to maxDiscard);
// one it was told to wait with (100 Continue never sent) is never read,
// and the connection closes.
func (b *requestBody) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	if b.eof {
		return true
	}
	if !b.continued {
		return false // the client still waits for 100 Continue: it must not send the body now
	}
	n, err := io.CopyN(io.Discard, b.r, maxDiscard)
	return err == io.EOF || err == nil && n == 0
}

func (b *requestBody) Close() error { return nil }
