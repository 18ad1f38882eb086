package httpproxy

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
)

// relayResponse sends an upstream's response to the client: the head
// without hop-by-hop fields, the body as it arrives, then the trailers —
// those the upstream announced under their names, any others marked with
// http.TrailerPrefix. Only a peer proxy's UnprocessedHeader is kept.
// mayWait, if set, reports that the next body read may wait for the
// upstream: what was written is flushed first (without it, w flushes by
// itself, as flowWriter does). An error wrapping errUpstreamBody means the
// upstream's body broke off; any other, that the client could not be
// written to.
func relayResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, mayWait func() bool) error {
	h := endToEnd(w, resp.Header)
	if Peer(r.Context()) == "" {
		delete(h, UnprocessedHeader)
	}
	var announced []string
	if len(resp.Trailer) > 0 {
		announced = make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			announced = append(announced, k)
		}
		h["Trailer"] = []string{strings.Join(announced, ", ")}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp.Body, mayWait); err != nil {
		return err
	}
	// The writer's map after the head: a stage's writer may have held the
	// head in a map of its own until then.
	h = w.Header()
	for k, vs := range resp.Trailer {
		if !slices.Contains(announced, k) {
			k = http.TrailerPrefix + k
		}
		h[k] = vs
	}
	return nil
}

// headerTaker is a ResponseWriter that can make a map of fields its
// response head as it is, instead of having them copied into its own map:
// it takes it only while it holds no fields and has sent no head.
type headerTaker interface {
	TakeHeader(h http.Header) bool
}

// endToEnd gives w the end-to-end fields of src, an upstream response's
// head that nothing else uses once relayed (its hop-by-hop fields may be
// deleted from it), and returns w's header map. A writer that can take
// src itself gets it, less those fields: no second map and no copy per
// response (BenchmarkServeH1). Whether w holds fields already is the
// taker's to check: asking w.Header() here would make the HTTP/2 writer's
// map for nothing.
func endToEnd(w http.ResponseWriter, src http.Header) http.Header {
	if t, ok := w.(headerTaker); ok && src != nil {
		dropHopByHop(src)
		if t.TakeHeader(src) {
			return src
		}
	}
	h := w.Header()
	copyEndToEnd(h, src)
	return h
}

// relay1xx sends an interim (1xx) response to the client.
func relay1xx(w http.ResponseWriter, code int, header http.Header) {
	h := w.Header()
	for k, vs := range header {
		h[k] = vs
	}
	w.WriteHeader(code)
	for k := range header {
		delete(h, k)
	}
}

// errUpstreamBody marks a failure reading the upstream's body, as opposed to
// writing to the client.
var errUpstreamBody = errors.New("upstream body broke off")

// copyBody copies a body to the client as the upstream sends it: before a
// read that may wait, what was written so far (the head first) is flushed.
// A body that trickles reaches the client byte by byte; one that arrives in
// bulk is written in the same large pieces, with no extra writes.
func copyBody(w http.ResponseWriter, body io.Reader, mayWait func() bool) error {
	buf := buffers.Get().(*[]byte)
	defer buffers.Put(buf)
	rc := http.NewResponseController(w)
	for {
		if mayWait != nil && mayWait() {
			if err := rc.Flush(); err != nil {
				return err
			}
		}
		n, rerr := body.Read(*buf)
		if n > 0 {
			if _, err := w.Write((*buf)[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return errors.Join(errUpstreamBody, rerr)
		}
	}
}

// wantsTrailers reports a request whose client accepts trailers (TE:
// trailers), which gRPC needs end to end.
func wantsTrailers(r *http.Request) bool {
	return slices.ContainsFunc(r.Header["Te"], func(v string) bool { return strings.Contains(strings.ToLower(v), "trailers") })
}
