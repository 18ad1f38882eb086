package inbound

import (
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// ClientIDHeader tells the application which workload identity sent the
// request, proven by mTLS.
const ClientIDHeader = "L5d-Client-Id"

// clientID removes any client-id field a client sent — it cannot be
// trusted, nor can one spelt with underscores, which CGI-style frameworks
// read as the same (HTTP_L5D_CLIENT_ID) — and sets the one mTLS proved.
func clientID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(ClientIDHeader)
		for k := range r.Header {
			if len(k) == len(ClientIDHeader) && strings.Contains(k, "_") && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), ClientIDHeader) {
				delete(r.Header, k)
			}
		}
		if m := transport.MetaFrom(r.Context()); m.ClientID != "" {
			r.Header.Set(ClientIDHeader, m.ClientID)
		}
		next.ServeHTTP(w, r)
	})
}

// origProto restores HTTP/1 for requests a peer proxy carried over the mesh's
// HTTP/2, so the application sees what its client sent. Only peers proven
// by mTLS are believed.
func origProto(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(httpproxy.OrigProtoHeader)
		if v == "" {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Del(httpproxy.OrigProtoHeader)
		if transport.MetaFrom(r.Context()).ClientID != "" {
			if major, minor, ok := http.ParseHTTPVersion(v); ok && major == 1 {
				r.Proto, r.ProtoMajor, r.ProtoMinor = v, major, minor
			}
		}
		next.ServeHTTP(w, r)
	})
}
