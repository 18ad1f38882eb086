package h2

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// responseWriter is a stream's http.ResponseWriter. Body bytes are
// buffered up to bufSize until a flush, a larger write or the handler's
// return, so a response written whole leaves in one system call with its
// head (and END_STREAM on its last frame).
type responseWriter struct {
	st       *stream
	req      *http.Request
	header   http.Header // the handler's (nil until asked for or taken)
	head     []field     // the final head's fields, as they were at WriteHeader
	headBuf  *[]field    // head's list, from fieldBufs, until the head is sent
	trailer  []string    // the final head's Trailer values (announced trailers)
	status   int         // the final status, 0 until WriteHeader
	headSent bool
	bodyless bool
	declared int64 // the response's Content-Length, -1 if none
	written  int64
	buf      []byte  // the body not sent yet
	bufp     *[]byte // buf's array, from bodyBufs, until the response ends
	done     bool    // the handler returned: nothing more is written
	err      error   // why the stream took no more: later writes fail with it
}

const bufSize = 16 << 10

// bodyBufs holds the arrays responses buffer their bodies in: a response's
// goes back when it ends (its bytes were copied into the connection's
// output by then).
var bodyBufs = sync.Pool{New: func() any { return new([]byte) }}

// releaseBuf gives the body's array back to bodyBufs.
func (w *responseWriter) releaseBuf() {
	if w.bufp != nil && cap(w.buf) <= 2*bufSize {
		*w.bufp = w.buf[:0]
		bodyBufs.Put(w.bufp)
	}
	w.bufp, w.buf = nil, nil
}

var errStreamClosed = errors.New("http2: stream closed")

// Header is the handler's map, made when first asked for: a proxy's
// handler mostly gives one of its own (TakeHeader).
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

// TakeHeader makes h, a map of fields nothing else uses, the handler's
// header as it is, instead of having its fields copied: a proxy relaying
// an upstream's head allocates no second map. It takes it only while the
// writer holds no fields and has sent no final head.
func (w *responseWriter) TakeHeader(h http.Header) bool {
	if h == nil || w.done || w.status != 0 || len(w.header) > 0 {
		return false
	}
	w.header = h
	return true
}

func (w *responseWriter) WriteHeader(code int) {
	if w.done || w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // not in HTTP/2 (RFC 9113 §8.6)
			w.st.sc.send(w.st, w.interim(code), nil, nil, false)
		}
		return
	}
	w.status = code
	w.bodyless = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.declared = n
		} else {
			delete(w.header, "Content-Length")
		}
	}
	// The head is its fields as they are now (later changes to the map are
	// the handler's trailers): taken once, here, not copied as a map.
	w.headBuf = fieldBufs.Get().(*[]field)
	w.head = append((*w.headBuf)[:0], field{":status", statusText(code)})
	if _, ok := w.header["Date"]; !ok {
		w.head = append(w.head, field{"date", httpDate()})
	}
	w.head = appendFields(w.head, w.header, true)
	if t := w.header["Trailer"]; t != nil {
		w.trailer = slices.Clone(t)
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.done {
		return 0, errStreamClosed
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	switch {
	case w.bodyless && w.req.Method == http.MethodHead:
		return len(p), nil
	case w.bodyless:
		return 0, http.ErrBodyNotAllowed
	case w.declared >= 0 && w.written+int64(len(p)) > w.declared:
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.bufp == nil {
		w.bufp = bodyBufs.Get().(*[]byte)
		w.buf = (*w.bufp)[:0]
	}
	if len(w.buf)+len(p) <= bufSize {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	data := p
	if len(w.buf) > 0 {
		data = append(w.buf, p...)
	}
	w.buf = w.buf[:0]
	if err := w.send(w.pendingHead(false), data, nil, false); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

// FlushError sends the head, if not sent yet, and the buffered body.
func (w *responseWriter) FlushError() error {
	if w.done {
		return errStreamClosed
	}
	if w.err != nil {
		return w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	head := w.pendingHead(false)
	if head == nil && len(w.buf) == 0 {
		return nil
	}
	w.err = w.send(head, w.buf, nil, false)
	w.buf = w.buf[:0]
	return w.err
}

func (w *responseWriter) Flush() { w.FlushError() }

// finish ends the response when the handler returns.
func (w *responseWriter) finish() {
	if w.done {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyless && w.declared >= 0 && w.written != w.declared {
		w.abort() // fewer bytes than the Content-Length it declared
		return
	}
	head := w.pendingHead(true)
	w.done = true
	if err := w.send(head, w.buf, w.trailers(), true); err != nil {
		w.st.sc.abort(w.st)
	}
	w.releaseBuf()
}

// CloseWrite ends the response (END_STREAM) while the handler may still
// read the request: a CONNECT tunnel's half-close, as TCP's FIN. Later
// writes fail.
func (w *responseWriter) CloseWrite() error {
	if w.done {
		return errStreamClosed
	}
	if w.err != nil {
		return w.err
	}
	w.finish()
	return nil
}

// Reset ends the stream at once, both ways (RST_STREAM CANCEL): a CONNECT
// tunnel's abort, as TCP's RST. Unlike the writer's other methods it may
// be called from any goroutine: a read or write of the stream under way
// fails.
func (w *responseWriter) Reset() {
	st := w.st
	sc := st.sc
	sc.mu.Lock()
	if !st.reset && !sc.closed {
		sc.removeLocked(st)
		sc.o.rstStream(st.id, http2.ErrCodeCancel)
		sc.rememberReset(st.id)
		sc.o.flush()
	}
	sc.mu.Unlock()
	st.cancel(errStreamClosed)
	st.body.finish(errStreamClosed, nil)
}

// abort resets the stream (a handler that panicked, or broke off its
// response).
func (w *responseWriter) abort() {
	w.done = true
	w.st.sc.abort(w.st)
	w.releaseBuf()
}

// send sends head (the final one, or nil), data and trailers; the head's
// list goes back to fieldBufs once encoded.
func (w *responseWriter) send(head []field, data []byte, trailers []field, end bool) error {
	err := w.st.sc.send(w.st, head, data, trailers, end)
	if head != nil && w.headBuf != nil {
		clear(head)
		*w.headBuf, w.head = head[:0], nil
		fieldBufs.Put(w.headBuf)
		w.headBuf = nil
	}
	return err
}

// pendingHead is the final head's fields if it was not sent yet. whole:
// the handler returned, so the buffered body is all of it and, if no
// length was declared, its length is given, as net/http's server does.
func (w *responseWriter) pendingHead(whole bool) []field {
	if w.headSent {
		return nil
	}
	w.headSent = true
	if whole && w.declared < 0 && !w.bodyless && w.req.Method != http.MethodConnect { // a tunnel has no length (RFC 9110 §8.6)
		return append(w.head, field{"content-length", strconv.Itoa(len(w.buf))})
	}
	return w.head
}

// interim is a 1xx response's fields: its status and the handler's header.
func (w *responseWriter) interim(code int) []field {
	return appendFields([]field{{":status", statusText(code)}}, w.header, false)
}

// trailers are the response's trailers: the fields the head announced in
// Trailer, and those set with http.TrailerPrefix.
func (w *responseWriter) trailers() []field {
	var fs []field
	seen := map[string]bool{}
	for _, v := range w.trailer {
		for k := range strings.SplitSeq(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k))
			if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidTrailerHeader(k) || seen[k] {
				continue
			}
			seen[k] = true
			for _, v := range w.header[k] {
				if httpguts.ValidHeaderFieldValue(v) {
					fs = append(fs, field{lowerName(k), v})
				}
			}
		}
	}
	for k, vs := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) && httpguts.ValidTrailerHeader(textproto.CanonicalMIMEHeaderKey(name)) {
			for _, v := range vs {
				if httpguts.ValidHeaderFieldValue(v) {
					fs = append(fs, field{strings.ToLower(name), v})
				}
			}
		}
	}
	return fs
}

// field is one header field as written.
type field struct{ name, value string }

// appendFields appends h's fields as HTTP/2 writes them: lower-case names,
// without connection-specific fields (RFC 9113 §8.2.2) or fields that
// would be malformed; trailers (http.TrailerPrefix) are not in a head.
func appendFields(fs []field, h http.Header, final bool) []field {
	for k, vs := range h {
		switch k {
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		name := lowerName(k)
		for _, v := range vs {
			if httpguts.ValidHeaderFieldValue(v) {
				fs = append(fs, field{name, v})
			}
		}
	}
	return fs
}

// statusText is a status code's ":status" value.
func statusText(code int) string {
	if code >= 100 && code < len(statusCodes) {
		return statusCodes[code]
	}
	return strconv.Itoa(code)
}

var statusCodes = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

// httpDate is the current time as a Date field, formatted once a second.
func httpDate() string {
	now := time.Now().Unix()
	dateCache.Lock()
	defer dateCache.Unlock()
	if now != dateCache.sec {
		dateCache.sec, dateCache.s = now, time.Unix(now, 0).UTC().Format(http.TimeFormat)
	}
	return dateCache.s
}

var dateCache struct {
	sync.Mutex
	sec int64
	s   string
}

// send writes, in order, a head (if not nil), data and trailers (if not
// nil) of st; end ends the stream with the last of them. It waits as flow
// control and the connection's backlog require, and fails once the stream
// or the connection is gone.
func (sc *serverConn) send(st *stream, head []field, data []byte, trailers []field, end bool) (err error) {
	defer func() {
		if err == errStalled { // (after mu is released)
			st.cancel(errStalled)
			st.body.finish(errStalled, nil)
		}
	}()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if err := sc.o.room(func() error { return sc.sendable(st) }); err != nil {
		return err
	}
	if head != nil {
		headEnds := end && len(data) == 0 && len(trailers) == 0
		sc.writeFields(st.id, head, headEnds)
		if head[0].value[0] != '1' {
			st.answered = true
		}
		if headEnds {
			sc.ended(st)
			sc.o.flush()
			return nil
		}
	}
	if len(data) > 0 || end && len(trailers) == 0 {
		err := sc.o.sendData(st.id, data, end && len(trailers) == 0, &st.flow, func() error { return sc.sendable(st) })
		if err == errStalled { // the client is told the stream is given up
			sc.removeLocked(st)
			sc.o.rstStream(st.id, http2.ErrCodeCancel)
			sc.rememberReset(st.id)
			sc.o.flush()
		}
		if err != nil {
			return err
		}
	}
	if end && len(trailers) > 0 {
		sc.writeFields(st.id, trailers, true)
	}
	if end {
		sc.ended(st)
	}
	sc.o.flush()
	return nil
}

// sendable reports why st can send no more, if it cannot. Called with mu
// held.
func (sc *serverConn) sendable(st *stream) error {
	switch {
	case sc.o.err != nil:
		return sc.o.err
	case st.reset || st.localDone:
		return errStreamClosed
	}
	return nil
}

// ended marks st's response as sent whole. Called with mu held.
func (sc *serverConn) ended(st *stream) {
	st.localDone = true
	if st.remoteDone {
		sc.removeLocked(st)
	}
}

func (sc *serverConn) writeFields(id uint32, fs []field, endStream bool) {
	f := sc.o.startFields()
	for _, hf := range fs {
		f.add(hf.name, hf.value)
	}
	f.end(id, endStream)
}

// abort resets a stream whose response cannot be completed.
func (sc *serverConn) abort(st *stream) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st.reset || st.localDone || sc.closed {
		return
	}
	sc.removeLocked(st)
	sc.o.rstStream(st.id, http2.ErrCodeInternal)
	sc.rememberReset(st.id)
	sc.o.flush()
}
