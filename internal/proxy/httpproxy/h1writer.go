package httpproxy

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// h1Writer is the http.ResponseWriter of the HTTP/1 server. It frames the
// body with Content-Length when the handler declared one, with chunked
// encoding (and trailers) for HTTP/1.1 clients otherwise, and by closing the
// connection for HTTP/1.0 clients.
//
// Its methods may be called from several goroutines at once: the handler
// writes the response while the upstream transport reads the request body
// (which may send 100 Continue) and relays 1xx responses; mu serialises them.
type h1Writer struct {
	mu          sync.Mutex
	hc          *h1Conn
	req         *http.Request
	header      http.Header // nil until asked for or taken
	status      int
	wroteHeader bool
	sent100     bool
	bodyless    bool
	chunked     bool
	length      int64 // declared Content-Length, -1 if none
	written     int64
	closeAfter  bool
}

func newH1Writer(hc *h1Conn, req *http.Request) *h1Writer {
	return &h1Writer{hc: hc, req: req, length: -1}
}

// Header is the handler's map, made when first asked for: a proxy's
// handler mostly gives one of its own (TakeHeader).
func (w *h1Writer) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

// TakeHeader makes h the response's head (headerTaker).
func (w *h1Writer) TakeHeader(h http.Header) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.wroteHeader || len(w.header) > 0 {
		return false
	}
	w.header = h
	return true
}

// WriteHeader sends the response head. Informational (1xx) heads other
// than 101 are sent at once and the final one may follow.
func (w *h1Writer) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeHeader(code)
}

func (w *h1Writer) writeHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("httpproxy: invalid status code " + strconv.Itoa(code))
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		if !w.req.ProtoAtLeast(1, 1) {
			return // HTTP/1.0 has no interim responses (RFC 9110 §15.2)
		}
		if code == http.StatusContinue {
			if w.sent100 {
				return
			}
			w.sent100 = true
		}
		w.writeHead(code)
		w.hc.bw.Flush()
		return
	}
	w.wroteHeader = true
	w.status = code
	w.Header() // the framing fields below are set in it
	w.bodyless = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if w.header.Get("Trailer") != "" && !w.bodyless && w.req.ProtoAtLeast(1, 1) {
		// Announced trailers need chunked framing (RFC 9112 §7.1.2); a
		// length (an HTTP/2 upstream may send both) gives way.
		w.header.Del("Content-Length")
	}
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.length = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	w.header.Del("Transfer-Encoding")
	switch {
	case w.bodyless || w.length >= 0:
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		w.header.Set("Transfer-Encoding", "chunked")
	default:
		w.closeAfter = true // the body ends when the connection does
	}
	if w.req.Close {
		w.closeAfter = true
	}
	if w.closeAfter {
		w.header.Set("Connection", "close")
	} else if !w.req.ProtoAtLeast(1, 1) {
		w.header.Set("Connection", "keep-alive")
	}
	w.writeHead(code)
}

// writeHead writes a status line and the header fields, never trailers.
// A final response without a Date gets one (RFC 9110 §6.6.1: a recipient
// with a clock adds it to what it forwards).
func (w *h1Writer) writeHead(code int) {
	bw := w.hc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(statusLine(code))
	bw.WriteString("\r\n")
	if _, ok := w.header["Date"]; !ok && code >= 200 {
		writeDate(bw)
	}
	for k, vs := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
}

// writeDate writes a Date field with the current time.
func writeDate(bw *bufio.Writer) {
	var b [len(http.TimeFormat) + 8]byte
	bw.WriteString("Date: ")
	bw.Write(time.Now().UTC().AppendFormat(b[:0], http.TimeFormat))
	bw.WriteString("\r\n")
}

// writeField writes one header field, replacing any CR or LF in the value
// with a space so a value can never split the response.
func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

func (w *h1Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	if w.bodyless || len(p) == 0 {
		return len(p), nil
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p = p[:w.length-w.written]
		n, _ := w.writeBody(p)
		return n, http.ErrContentLength
	}
	return w.writeBody(p)
}

func (w *h1Writer) writeBody(p []byte) (int, error) {
	bw := w.hc.bw
	if w.chunked {
		if err := writeChunk(bw, p); err != nil {
			return 0, err
		}
		w.written += int64(len(p))
		return len(p), nil
	}
	n, err := bw.Write(p)
	w.written += int64(n)
	return n, err
}

// sendContinue tells a client waiting on "Expect: 100-continue" to send its
// body, unless a final response already went out, and reports whether the
// client was told to.
func (w *h1Writer) sendContinue() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader && !w.sent100 {
		w.sent100 = true
		w.hc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		w.hc.bw.Flush()
	}
	return w.sent100
}

// Flush sends everything buffered so far to the client.
func (w *h1Writer) Flush() { w.FlushError() }

// FlushError is Flush reporting the write error.
func (w *h1Writer) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	return w.hc.bw.Flush()
}

// SetReadDeadline bounds reading the request body (for
// http.ResponseController): a handler that gives up on it unblocks the read.
func (w *h1Writer) SetReadDeadline(t time.Time) error {
	w.hc.deadline.Store(true)
	return w.hc.c.SetReadDeadline(t)
}

// Hijack hands the connection to the handler (protocol upgrades, CONNECT).
func (w *h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	hc := w.hc
	hc.hangup.disarm()
	if err := hc.bw.Flush(); err != nil {
		return nil, nil, err
	}
	hc.hijacked = true
	hc.c.SetDeadline(time.Time{})
	return hc.c, bufio.NewReadWriter(hc.br, hc.bw), nil
}

// finish completes the response: the last chunk and trailers, or a note that
// a body shorter than declared leaves the connection unusable. It reports
// whether the connection is still in a clean state.
func (w *h1Writer) finish() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.wroteHeader {
		w.writeHeader(http.StatusOK)
	}
	bw := w.hc.bw
	if w.chunked {
		trailer := http.Header{}
		for _, k := range w.trailerKeys() {
			if vs := w.header[k]; len(vs) > 0 {
				trailer[k] = vs
			}
		}
		writeLastChunk(bw, trailer)
	}
	if err := bw.Flush(); err != nil {
		return false
	}
	if w.length >= 0 && w.written < w.length && !w.bodyless {
		return false
	}
	return true
}

// trailerKeys lists the header keys that are trailers: those announced in
// the Trailer field and those set with http.TrailerPrefix.
func (w *h1Writer) trailerKeys() []string {
	var keys []string
	for _, announced := range w.header["Trailer"] {
		for _, k := range strings.Split(announced, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				keys = append(keys, k)
			}
		}
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			keys = append(keys, k)
		}
	}
	return keys
}

// statusLine is "CODE Reason-Phrase".
func statusLine(code int) string {
	if code >= 100 && code < len(statusLines) && statusLines[code] != "" {
		return statusLines[code]
	}
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	return strconv.Itoa(code) + " " + text
}

// statusLines are the status lines of the registered codes, made once:
// a response head costs no allocation for its status line.
var statusLines = func() (lines [600]string) {
	for code := 100; code < len(lines); code++ {
		if text := http.StatusText(code); text != "" {
			lines[code] = strconv.Itoa(code) + " " + text
		}
	}
	return lines
}()

func itoa(n int) string { return strconv.Itoa(n) }
