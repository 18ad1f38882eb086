package h2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// clientStream is one request on a ClientConn. Fields but the response
// delivery are guarded by the connection's mu.
type clientStream struct {
	cc  *ClientConn
	id  uint32
	req *http.Request
	// got1xx receives the 1xx responses, if the caller wants them.
	got1xx Interim

	once    sync.Once
	respc   chan struct{} // closed once resp or err is set
	resp    *http.Response
	err     error
	body    *body         // the response's, once its head arrived (set under mu)
	cont    chan struct{} // closed at a 100 (Continue) response
	gotCont bool          // read loop only
	// interim holds the 1xx responses the reading goroutine received for
	// got1xx, which RoundTrip's goroutine calls (it may write to a slow
	// client: the connection's reading goroutine must not wait on that);
	// interimc tells RoundTrip there are some (nil without got1xx).
	interim  []interimResponse // guarded by mu
	interimc chan struct{}
	stopFn   func() bool // stops the request context's watch (set under mu)

	flow       sendFlow
	recv       inflow
	declared   int64 // the response's Content-Length, -1 if none
	received   int64
	remoteDone bool // the server ended its side
	localDone  bool // the request was sent whole
	ended      bool // reset, failed, or done: nothing more is sent
}

// Interim receives a request's interim (1xx) responses; an error cancels
// the request.
type Interim interface {
	Got1xx(code int, header textproto.MIMEHeader) error
}

// traceInterim is an httptrace.ClientTrace's Got1xxResponse as an Interim.
type traceInterim func(code int, header textproto.MIMEHeader) error

func (f traceInterim) Got1xx(code int, header textproto.MIMEHeader) error { return f(code, header) }

// RoundTrip sends req and returns the server's response once its head
// arrives; the request body, if any, is sent meanwhile by a goroutine of
// its own, so a server may answer before reading it (and gRPC streams
// both ways). The request's context cancels it (RST_STREAM CANCEL). 1xx
// responses go to the Got1xxResponse of the context's
// httptrace.ClientTrace, if it has one.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	var got1xx Interim
	if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
		got1xx = traceInterim(trace.Got1xxResponse)
	}
	return cc.RoundTripInterim(req, got1xx)
}

// RoundTripInterim is RoundTrip with 1xx responses going to got1xx (none
// if nil): a proxy relaying them needs no trace in the request's context.
func (cc *ClientConn) RoundTripInterim(req *http.Request, got1xx Interim) (*http.Response, error) {
	cs, err := cc.start(req, false, got1xx)
	if err != nil {
		return nil, err
	}
	for {
		select {
		case <-cs.interimc:
			cs.relayInterim() // (a refused one cancels the request: respc follows)
			continue
		case <-cs.respc:
		}
		break
	}
	if cs.err != nil {
		return nil, cs.err
	}
	if err := cs.relayInterim(); err != nil { // those that came just before the response
		cs.resp.Body.Close()
		return nil, err
	}
	return cs.resp, nil
}

// start opens req's stream: its head is sent and its context watched;
// its body is sent by a goroutine of its own unless the caller writes it
// (callerWrites: a CONNECT tunnel's Stream). 1xx responses go to got1xx.
func (cc *ClientConn) start(req *http.Request, callerWrites bool, got1xx Interim) (*clientStream, error) {
	buf := fieldBufs.Get().(*[]field)
	fields, err := requestFields(req, (*buf)[:0])
	if err != nil {
		cc.unreserve()
		closeBody(req)
		return nil, err
	}
	if req.Body == nil {
		req.Body = http.NoBody // (trailers alone still take writeBody)
	}
	hasBody := req.Body != http.NoBody || callerWrites
	cs := &clientStream{cc: cc, req: req, respc: make(chan struct{}), declared: -1, got1xx: got1xx}
	if got1xx != nil {
		cs.interimc = make(chan struct{}, 1)
	}
	if hasBody && strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		cs.cont = make(chan struct{})
	}
	cc.mu.Lock()
	switch {
	case cc.reserved > 0:
		cc.reserved--
	case !cc.canOpenLocked():
		cc.mu.Unlock()
		closeBody(req)
		return nil, ErrConnUnusable
	}
	if cc.err != nil || cc.goAway {
		cc.becameIdleLocked()
		cc.mu.Unlock()
		closeBody(req)
		return nil, ErrConnUnusable
	}
	if cc.peerMaxList > 0 && listSize(fields) > uint64(cc.peerMaxList) {
		cc.becameIdleLocked()
		cc.mu.Unlock()
		closeBody(req)
		return nil, ErrHeaderListTooLarge
	}
	cs.id = cc.nextID
	cc.nextID += 2
	cs.flow.window, cs.recv.avail = int64(cc.peerWindow), int64(cc.cfg.StreamWindow)
	cs.flow.wake.L = &cc.mu
	cc.streams[cs.id] = cs
	endStream := !hasBody && len(req.Trailer) == 0
	writeFields(&cc.o, cs.id, fields, endStream)
	clear(fields)
	*buf = fields[:0]
	fieldBufs.Put(buf)
	cs.localDone = endStream
	cc.o.flush()
	cc.mu.Unlock()

	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { cs.cancel(context.Cause(ctx)) })
	cc.mu.Lock()
	if cs.ended {
		cc.mu.Unlock()
		stop()
	} else {
		cs.stopFn = stop
		cc.mu.Unlock()
	}
	if !endStream && !callerWrites {
		go cs.writeBody()
	}
	return cs, nil
}

// unreserve gives back the stream a caller reserved and will not open.
func (cc *ClientConn) unreserve() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.reserved > 0 {
		cc.reserved--
		cc.becameIdleLocked()
	}
}

// interimResponse is a 1xx response.
type interimResponse struct {
	status int
	header textproto.MIMEHeader
}

// maxInterim bounds the 1xx responses waiting for RoundTrip to relay them:
// a server sending more than that ahead of a slow client fails the request.
const maxInterim = 16

// relayInterim hands the queued 1xx responses to got1xx, in order; one it
// refuses cancels the request, with its error.
func (cs *clientStream) relayInterim() error {
	for {
		cs.cc.mu.Lock()
		if len(cs.interim) == 0 {
			cs.cc.mu.Unlock()
			return nil
		}
		r := cs.interim[0]
		cs.interim = cs.interim[1:]
		cs.cc.mu.Unlock()
		if err := cs.got1xx.Got1xx(r.status, r.header); err != nil {
			cs.cancel(err)
			return err
		}
	}
}

// fieldBufs holds field lists to build requests' heads in: each is
// encoded before start returns, and the list is not needed after.
var fieldBufs = sync.Pool{New: func() any { return new([]field) }}

// requestFields appends req's head to fs as HTTP/2 fields (RFC 9113
// §8.3.1): pseudo-fields first, names in lower case, no connection-specific
// fields but "te: trailers", an empty User-Agent left out.
func requestFields(req *http.Request, fs []field) ([]field, error) {
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	if !httpguts.ValidHostHeader(host) {
		return nil, errors.New("http2: invalid Host " + strconv.Quote(host))
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	fs = append(fs, field{":method", method})
	if method == http.MethodConnect {
		fs = append(fs, field{":authority", host})
	} else {
		path := req.URL.RequestURI()
		scheme := req.URL.Scheme
		if scheme == "" {
			scheme = "http"
		}
		fs = append(fs, field{":authority", host}, field{":scheme", scheme}, field{":path", path})
	}
	for k, vs := range req.Header {
		switch k {
		case "Host", "Connection", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Keep-Alive", "Content-Length", "Trailer":
			continue
		case "Te":
			if containsTrailers(vs) {
				fs = append(fs, field{"te", "trailers"})
			}
			continue
		case "User-Agent":
			if len(vs) == 0 || vs[0] == "" {
				continue
			}
		}
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, errors.New("http2: invalid request field name " + strconv.Quote(k))
		}
		name := lowerName(k)
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, errors.New("http2: invalid value of request field " + k)
			}
			fs = append(fs, field{name, v})
		}
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, k)
		}
		fs = append(fs, field{"trailer", strings.Join(keys, ",")})
	}
	if req.ContentLength > 0 {
		fs = append(fs, field{"content-length", strconv.FormatInt(req.ContentLength, 10)})
	}
	return fs, nil
}

func containsTrailers(vs []string) bool {
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(p), "trailers") {
				return true
			}
		}
	}
	return false
}

// listSize is a header list's size as SETTINGS_MAX_HEADER_LIST_SIZE counts.
func listSize(fs []field) uint64 {
	var n uint64
	for _, f := range fs {
		n += uint64(hpack.HeaderField{Name: f.name, Value: f.value}.Size())
	}
	return n
}

// writeFields encodes fs as a header block on stream id. Called with mu
// held.
func writeFields(o *output, id uint32, fs []field, endStream bool) {
	f := o.startFields()
	for _, hf := range fs {
		f.add(hf.name, hf.value)
	}
	f.end(id, endStream)
}

// closeBody closes a request's body, as a RoundTripper must.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// writeBody sends the request body, then its trailers, if any.
func (cs *clientStream) writeBody() {
	cc, req := cs.cc, cs.req
	defer closeBody(req)
	if cs.cont != nil {
		t := time.NewTimer(cc.cfg.ExpectContinueWait)
		select {
		case <-cs.cont:
		case <-t.C:
		case <-cs.respc:
			// A final response came first. If it is whole, the body is
			// not sent (RFC 9110 §10.1.1); if it is still coming, the
			// server reads the body or resets the stream.
			cc.mu.Lock()
			whole := cs.remoteDone
			cc.mu.Unlock()
			if whole {
				t.Stop()
				cs.cancel(errStreamClosed)
				return
			}
		}
		t.Stop()
	}
	buf := bodyBuffers.Get().(*[]byte)
	defer bodyBuffers.Put(buf)
	var sent int64
	for req.Body != http.NoBody {
		n, err := req.Body.Read(*buf)
		sent += int64(n)
		if err == nil && req.ContentLength >= 0 && sent > req.ContentLength || err == io.EOF && req.ContentLength >= 0 && sent != req.ContentLength {
			// The server would take the stream for malformed (RFC 9113
			// §8.1.1): the request fails here, as net/http's does.
			cs.cancel(fmt.Errorf("http2: request body of %d bytes or more, its Content-Length %d", sent, req.ContentLength))
			return
		}
		end := err == io.EOF && len(req.Trailer) == 0
		if n > 0 || end {
			if cs.send((*buf)[:n], end) != nil {
				return
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			cs.cancel(err) // the request's body broke: the request fails with its error
			return
		}
	}
	if len(req.Trailer) > 0 {
		var fs []field
		for k, vs := range req.Trailer {
			for _, v := range vs {
				fs = append(fs, field{lowerName(k), v})
			}
		}
		cc.mu.Lock()
		if cs.sendable() == nil {
			writeFields(&cc.o, cs.id, fs, true)
			cs.sentAll()
			cc.o.flush()
		}
		cc.mu.Unlock()
	}
}

var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// send sends body bytes, ending the request if end.
func (cs *clientStream) send(p []byte, end bool) error {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if err := cs.sendable(); err != nil {
		return err
	}
	if err := cc.o.sendData(cs.id, p, end, &cs.flow, cs.sendable); err != nil {
		if err == errStalled {
			cc.mu.Unlock()
			cs.cancel(err)
			cc.mu.Lock()
		}
		return err
	}
	if end {
		cs.sentAll()
	}
	cc.o.flush()
	return nil
}

// sendable reports why the request can send no more. Called with mu held.
func (cs *clientStream) sendable() error {
	switch {
	case cs.cc.o.err != nil:
		return cs.cc.o.err
	case cs.ended || cs.localDone:
		return errStreamClosed
	}
	return nil
}

// sentAll marks the request as sent whole. Called with mu held.
func (cs *clientStream) sentAll() {
	cs.localDone = true
	if cs.remoteDone {
		cs.forgetLocked()
	}
}

// forgetLocked removes a stream done both ways. Called with mu held.
func (cs *clientStream) forgetLocked() {
	if cs.cc.streams[cs.id] == cs {
		delete(cs.cc.streams, cs.id)
		cs.cc.becameIdleLocked()
	}
}

// cancel gives up on the request: the server is told (RST_STREAM CANCEL)
// and the request fails with err.
func (cs *clientStream) cancel(err error) {
	cc := cs.cc
	cc.mu.Lock()
	live := cc.streams[cs.id] == cs
	if live {
		delete(cc.streams, cs.id)
		cc.o.rstStream(cs.id, http2.ErrCodeCancel)
		cc.o.flush()
		cc.becameIdleLocked()
	}
	cc.mu.Unlock()
	if live {
		cs.end(err)
	}
}

// end finishes the stream with err: a request still waiting for its
// response fails with it, a response body still being read breaks off.
func (cs *clientStream) end(err error) {
	cs.cc.mu.Lock()
	cs.ended = true
	b, stop := cs.body, cs.stopFn
	cs.cc.o.drained.Broadcast()
	cs.flow.wake.Signal()
	cs.cc.mu.Unlock()
	cs.deliver(nil, err)
	b.finish(err, nil)
	if stop != nil {
		stop()
	}
}

// deliver hands the response, or the error, to RoundTrip, once.
func (cs *clientStream) deliver(resp *http.Response, err error) {
	cs.once.Do(func() {
		cs.resp, cs.err = resp, err
		close(cs.respc)
	})
}

func (cs *clientStream) consumed(n int64) { cs.cc.refund(cs, n, false) }

// responseBody is a response's Body: closing it before its end resets the
// stream.
type responseBody struct{ cs *clientStream }

func (b responseBody) Read(p []byte) (int, error) { return b.cs.body.Read(p) }

// Ready reports that a Read would not wait: bytes of the body are here, or
// its end.
func (b responseBody) Ready() bool { return b.cs.body.ready() }

// SetReadDeadline bounds reading the response, as net.Conn's does (a
// CONNECT tunnel's stream is read as a connection).
func (b responseBody) SetReadDeadline(t time.Time) error {
	return b.cs.body.SetReadDeadline(t)
}

func (b responseBody) Close() error {
	cs := b.cs
	cs.body.Close()
	cs.cc.mu.Lock()
	open := !cs.remoteDone
	cs.cc.mu.Unlock()
	if open {
		cs.cancel(errBodyClosed)
	}
	return nil
}

func (cc *ClientConn) processHeaders(f *http2.MetaHeadersFrame) error {
	cc.mu.Lock()
	cs := cc.streams[f.StreamID]
	idle := cc.idleStreamLocked(f.StreamID)
	cc.mu.Unlock()
	if cs == nil {
		if idle {
			return connError(http2.ErrCodeProtocol, "HEADERS on an idle stream")
		}
		return nil // a stream this side reset
	}
	malformed := http2.StreamError{StreamID: f.StreamID, Code: http2.ErrCodeProtocol} // (an error only where returned: no allocation otherwise)
	cc.mu.Lock()
	done := cs.remoteDone
	cc.mu.Unlock()
	switch {
	case done:
		return streamError(f.StreamID, http2.ErrCodeStreamClosed)
	case f.Truncated:
		return malformed // beyond the header list this side announced
	}
	if cs.body != nil { // trailers
		if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
			return malformed
		}
		regular := f.RegularFields()
		trailers := newFieldMap(len(regular))
		for _, hf := range regular {
			trailers.add(textproto.CanonicalMIMEHeaderKey(hf.Name), hf.Value)
		}
		return cc.remoteEnd(cs, trailers.h)
	}
	status := statusOf(f.PseudoValue("status"))
	if status == 0 || len(f.PseudoFields()) != 1 || status == http.StatusSwitchingProtocols {
		return malformed
	}
	regular := f.RegularFields()
	fields := newFieldMap(len(regular))
	for _, hf := range regular {
		if connectionSpecific(hf.Name) {
			return malformed
		}
		fields.add(textproto.CanonicalMIMEHeaderKey(hf.Name), hf.Value)
	}
	header := fields.h
	if status < 200 {
		if f.StreamEnded() {
			return malformed
		}
		if status == http.StatusContinue && cs.cont != nil && !cs.gotCont {
			close(cs.cont)
			cs.gotCont = true
		}
		if cs.got1xx != nil {
			cc.mu.Lock()
			queued := len(cs.interim)
			if queued < maxInterim {
				cs.interim = append(cs.interim, interimResponse{status, textproto.MIMEHeader(header)})
			}
			cc.mu.Unlock()
			if queued == maxInterim {
				return streamError(f.StreamID, http2.ErrCodeEnhanceYourCalm)
			}
			select {
			case cs.interimc <- struct{}{}:
			default: // RoundTrip is already told
			}
		}
		return nil
	}
	resp := &http.Response{
		Status: strconv.Itoa(status) + " " + http.StatusText(status), StatusCode: status,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: header, Request: cs.req, ContentLength: -1,
	}
	if cls := header["Content-Length"]; len(cls) > 0 {
		n, ok := declaredLength(cls)
		if !ok {
			return malformed // a client of the proxy's would frame the body by one of them
		}
		header["Content-Length"] = cls[:1]
		resp.ContentLength = n
		tunnel := cs.req.Method == http.MethodConnect && status/100 == 2 // its length is ignored (RFC 9110 §9.3.6)
		if cs.req.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified && !tunnel {
			cs.declared = n // (RFC 9110 §8.6: the length a HEAD or 304 would have had)
		}
	}
	for _, v := range header["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k)); k != "" {
				if resp.Trailer == nil {
					resp.Trailer = http.Header{}
				}
				resp.Trailer[k] = nil
			}
		}
	}
	if f.StreamEnded() {
		if cs.declared > 0 {
			return malformed
		}
		resp.Body = http.NoBody
		if resp.ContentLength < 0 {
			resp.ContentLength = 0
		}
		err := cc.remoteEnd(cs, nil) // first: a caller that has the response finds the stream closed
		cs.deliver(resp, nil)
		return err
	}
	cc.mu.Lock()
	cs.body = newBody(cs, &resp.Trailer, false)
	cc.mu.Unlock()
	resp.Body = responseBody{cs}
	cs.deliver(resp, nil)
	return nil
}

// remoteEnd ends the response (END_STREAM), with its trailers if any.
func (cc *ClientConn) remoteEnd(cs *clientStream, trailers http.Header) error {
	cc.mu.Lock()
	short := cs.declared >= 0 && cs.received != cs.declared
	cs.remoteDone = true
	if cs.localDone && !short {
		cs.forgetLocked()
	} // a short one is reset, and ended, by the stream error
	cc.mu.Unlock()
	if short {
		cs.body.finish(io.ErrUnexpectedEOF, nil)
		return streamError(cs.id, http2.ErrCodeProtocol)
	}
	cs.body.finish(io.EOF, trailers)
	return nil
}

func (cc *ClientConn) processData(f *http2.DataFrame) error {
	id, n := f.StreamID, int64(f.Length)
	cc.mu.Lock()
	if !cc.recv.take(n) {
		cc.mu.Unlock()
		return connError(http2.ErrCodeFlowControl, "DATA beyond the connection's window")
	}
	cs := cc.streams[id]
	if cs == nil || cs.body == nil || cs.remoteDone || !cs.recv.take(n) {
		idle := cc.idleStreamLocked(id)
		cc.mu.Unlock()
		cc.refund(nil, n, true)
		switch {
		case idle:
			return connError(http2.ErrCodeProtocol, "DATA on an idle stream")
		case cs == nil:
			return nil // a stream this side reset
		case cs.body == nil:
			return streamError(id, http2.ErrCodeProtocol) // DATA before the head
		case cs.remoteDone:
			return streamError(id, http2.ErrCodeStreamClosed)
		}
		return streamError(id, http2.ErrCodeFlowControl)
	}
	data := f.Data()
	cs.received += int64(len(data))
	cc.mu.Unlock()
	if cs.declared >= 0 && cs.received > cs.declared {
		cc.refund(nil, n, true)
		return streamError(id, http2.ErrCodeProtocol) // more than its Content-Length
	}
	if pad := n - int64(len(data)); pad > 0 {
		cc.refund(cs, pad, true)
	}
	if dropped := cs.body.write(data); dropped > 0 {
		cc.refund(cs, dropped, true)
	}
	if f.StreamEnded() {
		return cc.remoteEnd(cs, nil)
	}
	return nil
}
