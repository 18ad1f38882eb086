package httpproxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop reports the fields that describe one connection rather than
// the message (RFC 9110 §7.6.1), plus the non-standard Proxy-Connection
// that clients still send. Proxies never forward them. (A switch, not a
// map: it is asked for every field of every message, and a map lookup
// hashes the name; BenchmarkServeH1.)
func hopByHop(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// hopFields says which fields of a message must not be forwarded: the
// hop-by-hop fields and those its Connection field names (nil when it
// names none beyond the usual options).
type hopFields map[string]bool

// connectionFields reads h's Connection field. It allocates only when
// Connection names fields beyond the usual options.
func connectionFields(h http.Header) hopFields {
	var named hopFields
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			f = textproto.TrimString(f)
			if f == "" || strings.EqualFold(f, "close") || strings.EqualFold(f, "keep-alive") || strings.EqualFold(f, "upgrade") {
				continue
			}
			if named == nil {
				named = hopFields{}
			}
			named[http.CanonicalHeaderKey(f)] = true
		}
	}
	return named
}

// skip reports whether the field k stays on this hop.
func (n hopFields) skip(k string) bool { return hopByHop(k) || n != nil && n[k] }

// dropHopByHop deletes from h the fields that stay on its hop.
func dropHopByHop(h http.Header) {
	hop := connectionFields(h)
	for k := range h {
		if hop.skip(k) {
			delete(h, k)
		}
	}
}

// copyEndToEnd copies src's fields into dst, less those that stay on
// src's hop. The values are shared, not copied.
func copyEndToEnd(dst, src http.Header) {
	hop := connectionFields(src)
	for k, vs := range src {
		if !hop.skip(k) {
			dst[k] = vs
		}
	}
}

// upgradeRequested returns the protocol a request asks to switch to
// ("websocket"), or "". HTTP/1.0 has no upgrades (RFC 9110 §7.8).
func upgradeRequested(r *http.Request) string {
	if !r.ProtoAtLeast(1, 1) {
		return ""
	}
	h := r.Header
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(f), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}
