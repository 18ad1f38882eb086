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
// connection's lifecycle for draining. Heads of the common shape are parsed
// here in one pass over the buffered bytes (parse.go); all others by
// net/http's readers (http.ReadRequest, http.ReadResponse), to whose
// results a differential fuzz test holds the fast parsers. HTTP/2 is
// package h2's.
package httpproxy
