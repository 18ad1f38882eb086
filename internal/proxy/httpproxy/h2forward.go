package httpproxy

import (
	"net/http"
	"net/url"
	"strings"
)

// forwardH2 relays a request over HTTP/2 — to an h2c application, or to a
// peer proxy on the mesh connection — in the handler's goroutine. The
// upstream gets the client's request with its target and without
// hop-by-hop fields; interim responses, the response and its trailers
// come back through a flowWriter, which decides when to flush. A response
// cut short upstream, or a client gone mid-response, aborts the client's
// response (http.ErrAbortHandler: its stream is reset).
func (f *Forwarder) forwardH2(w http.ResponseWriter, r *http.Request, target string, pool *h2Pool) {
	fw := newFlowWriter(w)
	defer fw.done()
	resp, err := pool.RoundTrip(h2Request(r, target), fw)
	if err != nil {
		f.fail(fw, r, err)
		return
	}
	defer resp.Body.Close()
	fw.bodyless = resp.Body == http.NoBody || r.Method == http.MethodHead
	if b, ok := resp.Body.(interface{ Ready() bool }); ok {
		fw.bodyReady = b.Ready()
	}
	if err := relayResponse(fw, r, resp, nil); err != nil {
		panic(http.ErrAbortHandler)
	}
}

// h2Request is r as sent upstream to target: a shallow copy sharing the
// body, its fields without hop-by-hop ones (but "TE: trailers", which
// HTTP/2 keeps), and an HTTP/1 request's version marked for a peer proxy.
func h2Request(r *http.Request, target string) *http.Request {
	out := r.WithContext(r.Context()) // the copy
	out.URL = upstreamURL(r, target)
	out.RequestURI = ""
	out.Close = false
	if r.ContentLength == 0 {
		out.Body = nil
	}
	if headerAsIs(r) {
		out.Header = r.Header // read, not changed, by the HTTP/2 client
		return out
	}
	h := make(http.Header, len(r.Header)+1)
	copyEndToEnd(h, r.Header)
	if wantsTrailers(r) {
		h["Te"] = []string{"trailers"}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // don't let net/http add its own
	}
	if r.ProtoMajor == 1 && Peer(r.Context()) != "" {
		h[OrigProtoHeader] = []string{r.Proto}
	}
	out.Header = h
	return out
}

// headerAsIs reports a request whose fields h2Request would send as they
// are, which it then shares instead of copying them into a map of its own:
// with a User-Agent, without hop-by-hop fields but HTTP/2's own
// "TE: trailers", and not an HTTP/1 request to mark for a peer proxy.
func headerAsIs(r *http.Request) bool {
	if r.Header["User-Agent"] == nil || r.ProtoMajor == 1 && Peer(r.Context()) != "" {
		return false
	}
	for k, vs := range r.Header {
		if hopByHop(k) && (k != "Te" || len(vs) != 1 || vs[0] != "trailers") {
			return false
		}
	}
	return true
}

// upstreamURL is r's URL pointed at target, with the path and query the
// client sent byte for byte, unless a stage changed the path:
// URL.EscapedPath would re-escape what a client sent unescaped ("/a|b"),
// which breaks signed paths.
func upstreamURL(r *http.Request, target string) *url.URL {
	u := *r.URL
	u.Scheme, u.Host = "http", target
	if path, _, _ := strings.Cut(r.RequestURI, "?"); strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "//") {
		if p, err := url.PathUnescape(path); err == nil && p == r.URL.Path {
			u.Opaque = path
		}
	}
	return &u
}
