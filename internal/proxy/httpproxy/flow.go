package httpproxy

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Response bytes flow to the client as the upstream sends them, at no cost
// to responses that arrive whole. ReverseProxy flushes bodies of unknown
// length after every write by itself; for the rest, flowWriter (the
// ResponseWriter it is given) flushes:
//
//   - the head, headWait after it was written if no body byte followed
//     (the upstream sent its head and is slow with the body);
//   - after a write that leaves the body incomplete (a body of known
//     length that trickles, or a large one arriving in pieces).
//
// A response whose body arrives with its head in one read is written once,
// when the handler returns, as without any of this. ReverseProxy's own
// FlushInterval would instead arm a timer per response that, under load,
// fires for most of them and splits every response into more writes.
//
// It never flushes the head of a gRPC trailers-only response (grpc-status
// in the head): that head must end the stream, or gRPC clients see a
// response without trailers.

// headWait is how long a head waits for the first body bytes.
const headWait = time.Millisecond

// flowWriter is the ResponseWriter of one ReverseProxy exchange.
type flowWriter struct {
	http.ResponseWriter
	mu        sync.Mutex // the head timer flushes from its own goroutine
	length    int64      // the declared body length, -1 if none
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
	if code < 200 || f.length >= 0 {
		return // 1xx: the final head follows; or a second WriteHeader
	}
	if n, err := strconv.ParseInt(f.Header().Get("Content-Length"), 10, 64); err == nil {
		f.length = n
	}
	// A body of unknown length is flushed at once by ReverseProxy itself.
	if f.length > 0 && !f.trailersOnly() {
		f.timer = time.AfterFunc(headWait, f.flushHead)
	}
}

func (f *flowWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wroteBody = true
	n, err := f.ResponseWriter.Write(p)
	f.written += int64(n)
	if err == nil && f.length > 0 && f.written < f.length {
		err = http.NewResponseController(f.ResponseWriter).Flush()
	}
	return n, err
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
