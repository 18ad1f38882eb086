package h2

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// stream is one request and its response. Fields but body are guarded by
// the connection's mu.
type stream struct {
	sc     *serverConn
	id     uint32
	ctx    context.Context
	cancel context.CancelCauseFunc
	body   *body // nil for a request without a body

	flow     sendFlow // what the client lets this stream send
	recv     inflow   // what the client may still send on it
	declared int64    // the request's Content-Length, -1 if none
	// headerBytes is what its header and trailer lists take (counted in
	// the connection's headerBytes while its handler runs).
	headerBytes int
	received    int64
	remoteDone  bool // the client ended its side (END_STREAM)
	localDone   bool // the response ended
	answered    bool // the response's head was sent
	opened      time.Time
	reset       bool // reset by either side, or the connection ended: nothing more is sent
}

func (sc *serverConn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return connError(http2.ErrCodeProtocol, "a client stream with an even ID")
	}
	sc.mu.Lock()
	if st := sc.streams[id]; st != nil {
		sc.mu.Unlock()
		return sc.processTrailers(st, f)
	}
	if id <= sc.maxID {
		reset := sc.wasReset(id)
		sc.mu.Unlock()
		if reset {
			return nil // trailers of a stream this side reset, in flight (RFC 9113 §5.1)
		}
		return connError(http2.ErrCodeProtocol, "HEADERS on a closed stream")
	}
	sc.maxID = id
	if sc.goAway {
		sc.rememberReset(id)
		sc.mu.Unlock()
		return nil // beyond the GOAWAY's last stream: ignored, as the client knows
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		sc.mu.Unlock()
		return streamError(id, http2.ErrCodeProtocol) // RFC 9113 §5.3.1
	}
	size := headerListSize(f)
	if uint32(sc.running) >= sc.maxStreams || sc.headerBytes+size > sc.maxHeaderBytes {
		sc.mu.Unlock()
		return streamError(id, http2.ErrCodeRefusedStream) // RFC 9113 §5.1.2
	}
	sc.flood.open()
	st := &stream{sc: sc, id: id, flow: sendFlow{window: int64(sc.peerWindow)}, recv: inflow{avail: int64(sc.streamWindow)}, declared: -1, headerBytes: size}
	st.flow.wake.L = &sc.mu
	st.opened = time.Now()
	req, err := st.request(f)
	if err != nil {
		sc.mu.Unlock()
		return err
	}
	if f.StreamEnded() {
		st.remoteDone = true
	}
	sc.streams[id] = st
	sc.running++
	sc.headerBytes += size
	sc.mu.Unlock()
	h := sc.handler
	if f.Truncated {
		h = headerTooLarge
	}
	sc.handlers.Add(1)
	sc.srv.workers.run(job{st: st, req: req, h: h})
	return nil
}

// headerTooLarge answers a request whose header list exceeds
// SETTINGS_MAX_HEADER_LIST_SIZE.
var headerTooLarge = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
})

// request makes the http.Request of a stream's request head, or a stream
// error for a malformed one (RFC 9113 §8.1.1).
func (st *stream) request(f *http2.MetaHeadersFrame) (*http.Request, error) {
	malformed := http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol} // (an error only where returned: no allocation otherwise)
	method, scheme, path, authority := f.PseudoValue("method"), f.PseudoValue("scheme"), f.PseudoValue("path"), f.PseudoValue("authority")
	if f.PseudoValue("protocol") != "" || f.PseudoValue("status") != "" {
		return nil, malformed // no extended CONNECT (not announced); a response's field
	}
	if !httpguts.ValidHeaderFieldName(method) || !httpguts.ValidHostHeader(authority) {
		return nil, malformed // not a token; not a host
	}
	var u *url.URL
	requestURI := path
	switch {
	case method == http.MethodConnect:
		if scheme != "" || path != "" || authority == "" {
			return nil, malformed // RFC 9113 §8.5
		}
		u, requestURI = &url.URL{Host: authority}, authority
	case scheme == "" || path == "":
		return nil, malformed // RFC 9113 §8.3.1
	case path == "*" && method == http.MethodOptions:
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil || !strings.HasPrefix(path, "/") {
			return nil, malformed
		}
	}
	regular := f.RegularFields()
	fields := newFieldMap(len(regular))
	var cookies []string
	for _, hf := range regular {
		switch {
		case connectionSpecific(hf.Name):
			return nil, malformed
		case hf.Name == "te":
			if hf.Value != "trailers" {
				return nil, malformed
			}
		case hf.Name == "cookie":
			cookies = append(cookies, hf.Value) // joined below (RFC 9113 §8.2.3)
			continue
		}
		fields.add(textproto.CanonicalMIMEHeaderKey(hf.Name), hf.Value)
	}
	header := fields.h
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if hosts := header["Host"]; len(hosts) > 0 {
		switch {
		case len(hosts) > 1:
			return nil, malformed // RFC 9110 §7.2: one Host
		case authority == "" && httpguts.ValidHostHeader(hosts[0]):
			authority = hosts[0]
		case hosts[0] != authority:
			return nil, malformed // RFC 9113 §8.3.1: Host and :authority name one target
		}
		delete(header, "Host")
	}
	if cls := header["Content-Length"]; len(cls) > 0 {
		n, ok := declaredLength(cls)
		if !ok {
			return nil, malformed
		}
		if f.StreamEnded() && n != 0 {
			return nil, malformed // RFC 9113 §8.1.1
		}
		st.declared = n
	}
	var trailer http.Header
	for _, v := range header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			if k != "" && httpguts.ValidTrailerHeader(k) {
				if trailer == nil {
					trailer = http.Header{}
				}
				trailer[k] = nil
			}
		}
	}
	ctx, cancel := context.WithCancelCause(st.sc.ctx)
	st.ctx, st.cancel = ctx, cancel
	req := (&http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: header,
		Host: authority, RemoteAddr: st.sc.remote, RequestURI: requestURI, Trailer: trailer,
		Body: http.NoBody,
	}).WithContext(ctx)
	if !f.StreamEnded() {
		st.body = newBody(st, &req.Trailer, true)
		req.Body, req.ContentLength = st.body, st.declared
	}
	return req, nil
}

// processTrailers takes a request's trailers, which end its stream.
func (sc *serverConn) processTrailers(st *stream, f *http2.MetaHeadersFrame) error {
	sc.mu.Lock()
	if sc.streams[st.id] != st { // its handler ended meanwhile, refusing the rest of the request
		sc.mu.Unlock()
		return nil
	}
	if st.remoteDone {
		sc.mu.Unlock()
		return streamError(st.id, http2.ErrCodeStreamClosed)
	}
	if !f.StreamEnded() || f.Truncated || len(f.PseudoFields()) > 0 || st.declared >= 0 && st.received != st.declared {
		sc.mu.Unlock()
		return streamError(st.id, http2.ErrCodeProtocol) // RFC 9113 §8.1
	}
	st.remoteDone = true
	if st.localDone {
		sc.removeLocked(st)
	}
	size := headerListSize(f) // (counted, never refused: new streams are)
	st.headerBytes += size
	sc.headerBytes += size
	sc.mu.Unlock()
	regular := f.RegularFields()
	trailers := newFieldMap(len(regular))
	for _, hf := range regular {
		k := textproto.CanonicalMIMEHeaderKey(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			return streamError(st.id, http2.ErrCodeProtocol)
		}
		trailers.add(k, hf.Value)
	}
	st.body.finish(io.EOF, trailers.h)
	return nil
}

func (st *stream) consumed(n int64) { st.sc.refund(st, n) }

// serve runs the handler of one request and ends its response.
func (st *stream) serve(req *http.Request, h http.Handler) {
	w := &responseWriter{st: st, req: req, declared: -1}
	defer st.sc.handlers.Done()
	defer st.sc.handlerDone(st)
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				st.sc.log.Error("HTTP/2 handler panicked", "client", st.sc.remote, "panic", p)
			}
			w.abort()
		}
	}()
	h.ServeHTTP(w, req)
	w.finish()
}

// handlerDone ends a stream's handler: a request body the handler did not
// read to its end is refused (RST_STREAM NO_ERROR, RFC 9113 §8.1), and
// the connection, if it is going away, closes after its last request.
func (sc *serverConn) handlerDone(st *stream) {
	if st.body != nil {
		st.body.Close()
	}
	st.cancel(context.Canceled)
	sc.mu.Lock()
	if !st.reset && !st.remoteDone {
		sc.o.rstStream(st.id, http2.ErrCodeNo)
		sc.rememberReset(st.id)
		sc.o.flush()
	}
	sc.removeLocked(st)
	sc.running--
	sc.headerBytes -= st.headerBytes
	last := sc.running == 0
	if last {
		sc.idle.mark()
	}
	closing := last && sc.goAway
	sc.mu.Unlock()
	if closing {
		sc.closeGracefully()
	}
}

// declaredLength is the length a message's Content-Length fields declare:
// digits only, and every field the same (RFC 9110 §8.6); false if they
// are not.
func declaredLength(fields []string) (int64, bool) {
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil || n < 0 || strings.ContainsAny(fields[0], "+-") {
		return 0, false
	}
	for _, v := range fields[1:] {
		if v != fields[0] {
			return 0, false
		}
	}
	return n, true
}

// connectionSpecific reports a field HTTP/2 does not carry (RFC 9113
// §8.2.2): a message with one is malformed.
func connectionSpecific(name string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// headerListSize is a header block's size as SETTINGS_MAX_HEADER_LIST_SIZE
// counts it (RFC 9113 §6.5.2): what its decoded fields take in memory.
func headerListSize(f *http2.MetaHeadersFrame) int {
	n := 0
	for _, hf := range f.Fields {
		n += int(hf.Size())
	}
	return n
}

// premature reports a stream reset before its response began, within
// prematureLifetime of opening (see flood.go). Called with mu held.
func (st *stream) premature() bool {
	return !st.answered && time.Since(st.opened) < prematureLifetime
}

// fieldMap builds the header map of a block of n fields: one backing array
// holds every name's first value, where appending each would allocate a
// slice per field (as net/textproto's reader does).
type fieldMap struct {
	h    http.Header
	vals []string
}

func newFieldMap(n int) fieldMap {
	return fieldMap{h: make(http.Header, n), vals: make([]string, n)}
}

// add adds a value under a canonical name.
func (m *fieldMap) add(k, v string) {
	if vs := m.h[k]; vs != nil || len(m.vals) == 0 {
		m.h[k] = append(vs, v)
		return
	}
	m.vals[0] = v
	m.h[k], m.vals = m.vals[:1:1], m.vals[1:]
}
