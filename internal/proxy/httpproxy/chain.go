package httpproxy

import "net/http"

// Layer is one stage of an HTTP stack.
type Layer func(http.Handler) http.Handler

// Stack composes layers top to bottom around the innermost handler:
// Stack(h, a, b) serves a request with a, then b, then h.
func Stack(h http.Handler, layers ...Layer) http.Handler {
	for i := len(layers) - 1; i >= 0; i-- {
		h = layers[i](h)
	}
	return h
}
