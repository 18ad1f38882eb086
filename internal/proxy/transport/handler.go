package transport

import (
	"context"
	"net"
)

// Handler serves one accepted connection. It owns c and must close it.
type Handler interface {
	ServeConn(ctx context.Context, c net.Conn)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c net.Conn)

// ServeConn calls f.
func (f HandlerFunc) ServeConn(ctx context.Context, c net.Conn) { f(ctx, c) }

// Layer is one stage of a connection stack: it wraps the stages below it.
type Layer func(next Handler) Handler

// Stack composes layers top to bottom around the innermost handler:
// Stack(h, a, b) serves a connection with a, then b, then h.
func Stack(h Handler, layers ...Layer) Handler {
	for i := len(layers) - 1; i >= 0; i-- {
		h = layers[i](h)
	}
	return h
}

// ConnectFunc opens a connection to the target of the connection m
// describes: plain TCP, or mTLS to the proxy in front of it.
type ConnectFunc func(ctx context.Context, m *Meta) (net.Conn, error)

type probeKey struct{}

// Probe marks ctx as a speculative connect (server-first detection): it
// must not wait for a target that is not available.
func Probe(ctx context.Context) context.Context { return context.WithValue(ctx, probeKey{}, true) }

// IsProbe reports whether ctx is a speculative connect.
func IsProbe(ctx context.Context) bool { return ctx.Value(probeKey{}) != nil }
