// Package httpproxy serves HTTP/1.1 and HTTP/2 (h2c) on connections that
// detection classified as HTTP and forwards each request to its target with
// pooled upstream connections.
//
// Each stage of the HTTP part of a stack is an http.Handler middleware
// (func(http.Handler) http.Handler) in its own file: metrics, error
// responses, forwarding. The HTTP/1 server is written here rather than taken
// from net/http because a proxy must see the raw request head: it refuses
// messages with both Content-Length and Transfer-Encoding (request smuggling,
// RFC 9112 §6.1), which net/http silently accepts, and it owns the
// connection's lifecycle for draining. Parsing itself is net/http's
// (http.ReadRequest); HTTP/2 is golang.org/x/net/http2.
package httpproxy
