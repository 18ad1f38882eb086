package httpproxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop are the fields that describe one connection rather than the
// message (RFC 9110 §7.6.1), plus the non-standard Proxy-Connection that
// clients still send. Proxies never forward them.
var hopByHop = map[string]bool{
	"Connection":          true,
	"Proxy-Connection":    true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
}

// connectionFields returns a predicate reporting whether a field must not
// be forwarded: a hop-by-hop field or one the Connection field names. It
// allocates only when Connection names fields beyond the usual options.
func connectionFields(h http.Header) func(string) bool {
	var named map[string]bool
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			f = textproto.TrimString(f)
			switch strings.ToLower(f) {
			case "", "close", "keep-alive", "upgrade":
				continue
			}
			if named == nil {
				named = map[string]bool{}
			}
			named[http.CanonicalHeaderKey(f)] = true
		}
	}
	return func(k string) bool { return hopByHop[k] || named[k] }
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
