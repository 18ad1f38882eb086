package outbound

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
)

// holdWriter stands between one racer of an attempt and the client: at
// the response head it claims the client (or, if another racer did first,
// drops everything) and decides whether the attempt is retried — then the
// response is dropped and the attempt cancelled — or passes it through,
// with the rule's response header modifiers applied.
type holdWriter struct {
	a        *attempt
	why      string
	header   http.Header
	cancel   context.CancelFunc
	done     chan struct{} // the racer's ServeHTTP returned
	headed   chan struct{} // the racer has claimed the client
	retry    bool
	lost     bool
	written  bool
	hijacked bool
	panicked any
}

func (h *holdWriter) passing() bool { return h.written && !h.retry && !h.lost }

func (h *holdWriter) Header() http.Header {
	if h.passing() {
		return h.a.w.Header()
	}
	return h.header
}

func (h *holdWriter) WriteHeader(code int) {
	if h.written {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// 1xx goes through only when nothing can replace this response.
		if h.a.decide == nil && !h.a.racing {
			copyHeader(h.a.w.Header(), h.header)
			h.a.w.WriteHeader(code)
		}
		return
	}
	h.written = true
	// A hedge that could not even find an endpoint never beats the first try.
	if h.why == "hedge" && failingFast(h.header) {
		h.lost = true
		return
	}
	if !h.a.claim(h) {
		h.lost = true
		return
	}
	defer close(h.headed)
	if h.a.decide != nil && h.a.decide(code, httpproxy.GRPCStatus(h.header), h.header) {
		h.retry = true
		h.cancel() // stop the upstream: its body is not wanted
		return
	}
	dst := h.a.w.Header()
	copyHeader(dst, h.header)
	h.a.modify.Apply(dst)
	h.a.w.WriteHeader(code)
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	if !h.passing() {
		return len(p), nil
	}
	return h.a.w.Write(p)
}

// Flush passes flushes through once the response is the client's.
func (h *holdWriter) Flush() {
	if h.passing() {
		http.NewResponseController(h.a.w).Flush()
	}
}

// Hijack hands the client's connection to an upgrade (never retried or
// hedged: its body is not replayable).
func (h *holdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.a.w).Hijack()
	if err == nil {
		h.hijacked, h.written = true, true
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach what else the client's writer offers.
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.a.w }

// finish completes the winning racer's response once it is done: it
// re-raises its panic on this goroutine, writes an empty 200 if nothing
// was written, and moves trailers set after the head into the client's
// header map. It reports whether to retry.
func (h *holdWriter) finish() bool {
	if h.panicked != nil {
		panic(h.panicked)
	}
	if h.lost || h.hijacked {
		return false
	}
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	if h.retry {
		return true
	}
	// Trailers a forwarder set in the map it held before the head.
	for k, vs := range h.header {
		if _, ok := h.a.w.Header()[k]; !ok || strings.HasPrefix(k, http.TrailerPrefix) {
			h.a.w.Header()[k] = vs
		}
	}
	return false
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = vs
	}
}
