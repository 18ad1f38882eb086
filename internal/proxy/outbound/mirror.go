package outbound

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// maxMirrors bounds mirrored requests in flight: beyond it, copies are
// dropped, so a slow shadow never holds up the primary.
const maxMirrors = 256

// mirror sends a copy of r to the rule's mirror backend, on its own, and
// throws the answer away; when too many copies are in flight it drops it.
func (rt *router) mirror(r *http.Request, rule *route.Rule, body []byte) {
	select {
	case rt.mirrors <- struct{}{}:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(explain.With(context.WithoutCancel(r.Context()), nil), 10*time.Second)
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	go func() {
		defer func() { <-rt.mirrors }()
		defer cancel()
		defer func() { recover() }() // a broken shadow response aborts with a panic: drop it
		svc := rt.res.Resolve(ctx, rule.Mirror.Authority)
		if svc == nil {
			return
		}
		rt.next.send(discardWriter{http.Header{}}, req, svc)
	}()
}

// discardWriter takes a mirrored request's response and drops it.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
