package httpproxy

import (
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
	"time"
)

// Response bytes flow to the client as the upstream sends them, at no cost
// to responses that arrive whole. flowWriter, the ResponseWriter of an
// HTTP/2 exchange (h2forward.go), flushes:
//
//   - the head, headWait after it was written if no body byte followed
//     (the upstream sent its head and is slow with the body) — a timer
//     armed only if none had arrived with the head;
//   - after a write that leaves the body incomplete (a body of known
//     length that trickles, or a large one arriving in pieces), and after
//     every write of a body of unknown length (a stream: gRPC, server-sent
//     events).
//
// A response whose body arrives with its head in one read is written once,
// when the handler returns, as without any of this; a gRPC response's head
// and first message go out in one write. ReverseProxy instead flushes the
// head of a body of unknown length at once from a timer's goroutine, and
// its FlushInterval would arm a timer per response that, under load, fires
// for most of them and splits every response into more writes.
//
// It never flushes the head of a gRPC trailers-only response (grpc-status
// in the head): that head must end the stream, or gRPC clients see a
// response without trailers.

// headWait is how long a head waits for the first body bytes.
const headWait = time.Millisecond

// flowWriter is the ResponseWriter of one HTTP/2 exchange.
type flowWriter struct {
	http.ResponseWriter
	mu        sync.Mutex // the head timer flushes from its own goroutine
	bodyless  bool       // the response ends with its head (set before WriteHeader)
	bodyReady bool       // the body's first bytes or its end came with the head (set before WriteHeader)
	length    int64      // the declared body length, -1 if none
	final     bool       // the final head was written
	written   int64
	wroteBody bool
	timer     *time.Timer
	finished  bool
}

func newFlowWriter(w http.ResponseWriter) *flowWriter {
	return &flowWriter{ResponseWriter: w, length: -1}
}

func (f *flowWriter) WriteHeader(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ResponseWriter.WriteHeader(code)
	if code < 200 || f.final {
		return // 1xx: the final head follows; or a second WriteHeader
	}
	f.final = true
	if n, err := strconv.ParseInt(f.Header().Get("Content-Length"), 10, 64); err == nil {
		f.length = n
	}
	if !f.bodyless && !f.bodyReady && f.length != 0 && !f.trailersOnly() {
		f.timer = time.AfterFunc(headWait, f.flushHead)
	}
}

func (f *flowWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wroteBody = true
	n, err := f.ResponseWriter.Write(p)
	f.written += int64(n)
	if err == nil && (f.length < 0 || f.written < f.length) {
		err = http.NewResponseController(f.ResponseWriter).Flush()
	}
	return n, err
}

// Got1xx relays an interim (1xx) response to the client as it comes.
func (f *flowWriter) Got1xx(code int, header textproto.MIMEHeader) error {
	relay1xx(f, code, http.Header(header))
	return nil
}

// flushHead sends a head no body byte followed within headWait.
func (f *flowWriter) flushHead() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.wroteBody && !f.finished {
		http.NewResponseController(f.ResponseWriter).Flush()
	}
}

// done ends the exchange: no flush may touch the ResponseWriter after the
// handler returned.
func (f *flowWriter) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finished = true
	if f.timer != nil {
		f.timer.Stop()
	}
}

func (f *flowWriter) FlushError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.trailersOnly() {
		return nil // the head ends the stream when the handler returns
	}
	return http.NewResponseController(f.ResponseWriter).Flush()
}

// trailersOnly reports a gRPC trailers-only head.
func (f *flowWriter) trailersOnly() bool { return f.Header().Get("Grpc-Status") != "" }

func (f *flowWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// TakeHeader passes a head on to the writer it wraps, if that can take it.
func (f *flowWriter) TakeHeader(h http.Header) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.ResponseWriter.(headerTaker)
	return ok && t.TakeHeader(h)
}
