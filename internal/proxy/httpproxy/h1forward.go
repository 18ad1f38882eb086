package httpproxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/detect"
	"github.com/trellis-mesh/trellis/internal/proxy/tcpproxy"
)

// expectContinueWait is how long the proxy waits for an upstream's
// "100 Continue" before sending the request body anyway (RFC 9110 §10.1.1).
const expectContinueWait = time.Second

// forwardH1 relays an HTTP/1 request over a pooled HTTP/1.1 upstream
// connection, in the handler's own goroutine (the request body, if any, is
// streamed by a second one, so upstreams may answer before reading it all).
// An idempotent request without a body that fails on a reused connection
// before any response byte arrived — the upstream closed it while idle —
// is retried once on a new connection (RFC 9110 §9.2.2: the upstream may
// have acted on anything else).
func (f *Forwarder) forwardH1(w http.ResponseWriter, r *http.Request, target string, pool *h1Pool) {
	replayable := !hasBody(r) && idempotent(r)
	for attempt := 0; ; attempt++ {
		uc, reused, err := pool.get(r.Context(), target)
		if err != nil {
			f.fail(w, r, err)
			return
		}
		ex := h1Exchange{pool: pool, w: w, r: r, uc: uc}
		err = ex.run()
		if err == nil {
			return
		}
		// The client breaking its body ends the exchange too (the copy
		// closes the upstream connection): the failure is the client's.
		var cbe *ClientBodyError
		if errors.As(ex.bodyRes, &cbe) {
			err = ex.bodyRes
		}
		if reused && replayable && attempt == 0 && !ex.received && staleConn(err) {
			continue
		}
		f.fail(w, r, err)
		return
	}
}

// idempotent reports requests a client may send twice (RFC 9110 §9.2.2),
// or that say so with an idempotency key.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header["Idempotency-Key"] != nil || r.Header["X-Idempotency-Key"] != nil
}

// staleConn reports errors that mean the upstream closed an idle
// connection before reading the request.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// h1Exchange is one request and its response on one upstream connection.
type h1Exchange struct {
	pool     *h1Pool
	w        http.ResponseWriter
	r        *http.Request
	uc       *upConn
	received bool       // some response bytes arrived
	bodyErr  chan error // the request body copy's result, when one runs
	bodyRes  error      // what bodyErr said, once waited for
}

// run performs the exchange. An error means nothing was sent to the client
// yet; failures after the response head went out abort the response.
func (ex *h1Exchange) run() error {
	r, uc := ex.r, ex.uc
	stop := context.AfterFunc(r.Context(), uc.abandon) // the client left: abandon the upstream
	reusable := false
	defer func() {
		if stop() && reusable {
			ex.pool.put(uc)
		} else {
			uc.Close()
		}
	}()

	writeRequestHead(uc.bw, r)
	hasBody := hasBody(r)
	// An HTTP/1.0 client's expectation is ignored (RFC 9110 §10.1.1).
	expect := hasBody && r.ProtoAtLeast(1, 1) && strings.EqualFold(r.Header.Get("Expect"), "100-continue")
	switch {
	case !hasBody:
	case expect:
		// Let the upstream refuse the body before the client sends it.
		if err := uc.bw.Flush(); err != nil {
			return err
		}
		uc.SetReadDeadline(time.Now().Add(expectContinueWait))
		_, err := uc.br.Peek(1)
		uc.SetReadDeadline(time.Time{})
		if err != nil && !isTimeout(err) {
			return err
		}
		if isTimeout(err) {
			ex.sendBody()
		}
	default:
		ex.sendBody()
	}
	if !hasBody {
		if err := uc.bw.Flush(); err != nil {
			return err
		}
	}

	resp, err := ex.readFinalResponse(expect)
	if err != nil {
		ex.abandonBody()
		return err
	}
	if tunnel(r, resp) {
		ex.abandonBody()
		ex.upgrade(resp)
		return nil
	}
	ex.relay(resp)
	bodySent := ex.bodyErr == nil && !hasBody || ex.bodyErr != nil && ex.waitBody(true)
	reusable = bodySent && !resp.Close
	return nil
}

// maxResponseHead bounds an upstream's response head, which net/http's
// reader would otherwise take without limit.
const maxResponseHead = 256 << 10

var errResponseHeadTooLarge = errors.New("response head too large")

// readFinalResponse reads responses until a final one, relaying 1xx
// responses to the client; a 100 releases a body held back for Expect.
func (ex *h1Exchange) readFinalResponse(expect bool) (*http.Response, error) {
	for {
		// Peek first: ReadResponse reports a connection closed before any
		// byte as io.ErrUnexpectedEOF, but a clean EOF here is what tells a
		// stale pooled connection apart from a broken response.
		if _, err := ex.uc.br.Peek(1); err != nil {
			return nil, err
		}
		ex.received = true
		head, br, err := peekHead(ex.uc.br, ex.uc.Conn, maxResponseHead, nil)
		ex.uc.br = br
		if errors.Is(err, errHeadTooLarge) {
			return nil, errResponseHeadTooLarge
		}
		if err != nil {
			return nil, err
		}
		resp, err := readResponse(head, br, ex.r)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		relay1xx(ex.w, resp.StatusCode, resp.Header)
		if resp.StatusCode == http.StatusContinue && expect && ex.bodyErr == nil {
			ex.sendBody()
		}
	}
}

// relay sends the response to the client. A body that breaks off upstream
// aborts the client's response too.
func (ex *h1Exchange) relay(resp *http.Response) {
	err := relayResponse(ex.w, ex.r, resp, func() bool { return ex.uc.br.Buffered() == 0 })
	switch {
	case errors.Is(err, errUpstreamBody):
		ex.uc.Close()
		panic(http.ErrAbortHandler)
	case err != nil:
		resp.Close = true // the client is gone; the upstream connection is not reusable
	}
}

// sendBody starts streaming the request body upstream.
func (ex *h1Exchange) sendBody() {
	ex.bodyErr = make(chan error, 1)
	r, uc := ex.r, ex.uc
	go func() {
		err := writeBody(uc.bw, r)
		if err != nil {
			// The upstream waits for the rest of a body that will never
			// come: end the exchange.
			uc.Close()
		}
		ex.bodyErr <- err
	}()
}

// bodyGrace is how long a finished exchange waits for its request body
// copy to report; a copy still running then is stuck on an upstream that
// answered without reading everything.
const bodyGrace = 100 * time.Millisecond

// waitBody waits for the request body copy and reports whether it
// completed. A stuck copy is unstuck by closing the upstream connection
// (it was writing) and ending the client's body (it was reading: the
// client stalled, or waits for the response it was sent — flushed first
// if answered); the client connection is then not reused.
func (ex *h1Exchange) waitBody(answered bool) bool {
	t := time.NewTimer(bodyGrace)
	defer t.Stop()
	select {
	case ex.bodyRes = <-ex.bodyErr:
		return ex.bodyRes == nil
	case <-t.C:
	}
	ex.uc.Close()
	rc := http.NewResponseController(ex.w)
	if answered {
		rc.Flush()
	}
	abandonBody(ex.r)
	rc.SetReadDeadline(time.Now())
	ex.bodyRes = <-ex.bodyErr
	return false
}

// abandonBody stops a running body copy after a failed exchange.
func (ex *h1Exchange) abandonBody() {
	if ex.bodyErr != nil {
		ex.waitBody(false)
	}
}

// tunnel reports a response after which the connection carries something
// else: a protocol switch (101), or a CONNECT's tunnel (2xx) — a CONNECT
// meant for a proxy beyond this one, on a connection it intercepted
// (RFC 9110 §9.3.6).
func tunnel(r *http.Request, resp *http.Response) bool {
	return resp.StatusCode == http.StatusSwitchingProtocols || r.Method == http.MethodConnect && resp.StatusCode/100 == 2
}

// upgrade completes a protocol switch or opens a tunnel: the client
// connection is taken over, the response head relayed, and bytes piped
// both ways until either side closes.
func (ex *h1Exchange) upgrade(resp *http.Response) {
	conn, brw, err := http.NewResponseController(ex.w).Hijack()
	if err != nil {
		ex.uc.Close()
		WriteError(ex.w, ex.r, http.StatusBadGateway, "cannot switch protocols: "+err.Error())
		return
	}
	bw := brw.Writer
	bw.WriteString("HTTP/1.1 " + statusLine(resp.StatusCode) + "\r\n")
	for k, vs := range resp.Header {
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		conn.Close()
		ex.uc.Close()
		return
	}
	tcpproxy.Pipe(detect.NewConn(conn, buffered(brw.Reader)), detect.NewConn(ex.uc.Conn, buffered(ex.uc.br)))
}

func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return append([]byte(nil), b...)
}

// writeRequestHead writes the request line and fields for the upstream:
// the request target as the client sent it (origin form), hop-by-hop fields
// removed, and the body framed anew.
func writeRequestHead(bw *bufio.Writer, r *http.Request) {
	target := r.RequestURI
	if target == "" || r.URL.IsAbs() {
		target = originForm(r) // forward-proxy requests arrive in absolute form
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(target)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	bw.WriteString(host)
	bw.WriteString("\r\n")
	hop := connectionFields(r.Header)
	for k, vs := range r.Header {
		if hop.skip(k) || k == "Host" || k == "Content-Length" || k == "Expect" && !r.ProtoAtLeast(1, 1) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	up := upgradeRequested(r)
	te := wantsTrailers(r)
	// TE is itself hop-by-hop: Connection names it (RFC 9110 §10.1.4).
	switch {
	case up != "" && te:
		bw.WriteString("Connection: Upgrade, TE\r\nTe: trailers\r\n")
	case up != "":
		bw.WriteString("Connection: Upgrade\r\n")
	case te:
		bw.WriteString("Connection: TE\r\nTe: trailers\r\n")
	}
	if up != "" {
		bw.WriteString("Upgrade: ")
		bw.WriteString(up)
		bw.WriteString("\r\n")
	}
	switch {
	case r.ContentLength > 0 || r.ContentLength == 0 && r.Header["Content-Length"] != nil:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	case hasBody(r):
		if len(r.Trailer) > 0 {
			keys := make([]string, 0, len(r.Trailer))
			for k := range r.Trailer {
				keys = append(keys, k)
			}
			writeField(bw, "Trailer", strings.Join(keys, ", "))
		}
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	bw.WriteString("\r\n")
}

// originForm is the target of an absolute-form request as an origin
// server takes it, with the client's own bytes of path and query (a
// re-escaped path breaks signed ones); "*" for an OPTIONS of the whole
// server (RFC 9112 §3.2.4).
func originForm(r *http.Request) string {
	_, rest, ok := strings.Cut(r.RequestURI, "://")
	if !ok {
		return r.URL.RequestURI()
	}
	i := strings.IndexAny(rest, "/?")
	switch {
	case i >= 0 && rest[i] == '/':
		return rest[i:]
	case i >= 0:
		return "/" + rest[i:]
	case r.Method == http.MethodOptions:
		return "*"
	}
	return "/"
}

// hasBody reports whether a request carries body bytes to send: a body
// of unknown length (chunked, or HTTP/2 without content-length) or a
// positive Content-Length. HTTP/2 servers hand over an empty, non-nil Body
// for requests that ended with their headers, so the length decides.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// writeBody copies the request body upstream with the framing announced by
// writeRequestHead, flushing after every read so streams keep flowing.
func writeBody(bw *bufio.Writer, r *http.Request) error {
	buf := buffers.Get().(*[]byte)
	defer buffers.Put(buf)
	chunked := r.ContentLength < 0
	var sent int64
	for {
		n, rerr := r.Body.Read(*buf)
		if n > 0 {
			if chunked {
				writeChunk(bw, (*buf)[:n])
			} else {
				bw.Write((*buf)[:n])
			}
			sent += int64(n)
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if chunked {
		writeLastChunk(bw, r.Trailer)
	} else if sent != r.ContentLength {
		return io.ErrUnexpectedEOF
	}
	return bw.Flush()
}

// writeChunk writes p as one chunk of a chunked body. A bufio.Writer keeps
// its first error, so the last write reports any.
func writeChunk(bw *bufio.Writer, p []byte) error {
	bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
	bw.WriteString("\r\n")
	bw.Write(p)
	_, err := bw.WriteString("\r\n")
	return err
}

// writeLastChunk ends a chunked body, with its trailer fields.
func writeLastChunk(bw *bufio.Writer, trailer http.Header) {
	bw.WriteString("0\r\n")
	for k, vs := range trailer {
		for _, v := range vs {
			writeField(bw, strings.TrimPrefix(k, http.TrailerPrefix), v)
		}
	}
	bw.WriteString("\r\n")
}
