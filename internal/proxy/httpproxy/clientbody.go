package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// ClientBodyError is a failure reading the client's request body: an
// upload cut short, malformed chunked framing, a stream the client reset.
// It is the client's doing — answered 400 (gRPC INVALID_ARGUMENT), never
// retried, never counted against the endpoint.
type ClientBodyError struct{ Err error }

func (e *ClientBodyError) Error() string {
	return "reading the client's request body: " + e.Err.Error()
}
func (e *ClientBodyError) Unwrap() error { return e.Err }

// clientBody watches a request's body for the client breaking it.
type clientBody struct {
	io.ReadCloser
	broken    atomic.Bool
	abandoned atomic.Bool // the proxy ended the read itself
}

type clientBodyKey struct{}

// watchBody wraps r's body, once per request with a body (in the
// outermost Observe), so that a read failure becomes a ClientBodyError and
// the request's outcome says whose fault it was.
func watchBody(r *http.Request) (*http.Request, *clientBody) {
	if cb, ok := r.Body.(*clientBody); ok {
		return r, cb
	}
	if !hasBody(r) {
		return r, nil // nothing to break (every GET: no allocation)
	}
	if cb, ok := r.Context().Value(clientBodyKey{}).(*clientBody); ok {
		return r, cb // an inner stage, with the attempt's own body
	}
	cb := &clientBody{ReadCloser: r.Body}
	r = r.WithContext(context.WithValue(r.Context(), clientBodyKey{}, cb))
	r.Body = cb
	return r, cb
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !b.abandoned.Load() {
		b.broken.Store(true)
		var already *ClientBodyError
		if !errors.As(err, &already) {
			err = &ClientBodyError{err}
		}
	}
	return n, err
}

// failed reports whether the client broke the body.
func (b *clientBody) failed() bool { return b != nil && b.broken.Load() }

// abandonBody marks r's body as ended by the proxy (an exchange that is
// over): read errors from then on are not the client's.
func abandonBody(r *http.Request) {
	if cb, ok := r.Context().Value(clientBodyKey{}).(*clientBody); ok {
		cb.abandoned.Store(true)
	}
}
