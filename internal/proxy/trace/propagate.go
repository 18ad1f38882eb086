package trace

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// B3 header fields, canonical.
const (
	b3Single       = "B3"
	b3TraceID      = "X-B3-Traceid"
	b3SpanID       = "X-B3-Spanid"
	b3ParentSpanID = "X-B3-Parentspanid"
	b3Sampled      = "X-B3-Sampled"
	b3Flags        = "X-B3-Flags"
)

// b3Propagators inject B3 in each encoding a request may have come with.
type b3Propagators struct {
	extract          propagation.TextMapPropagator
	single, multiple propagation.TextMapPropagator
	both             propagation.TextMapPropagator
}

func newB3Propagators() b3Propagators {
	return b3Propagators{
		extract:  b3.New(),
		single:   b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)),
		multiple: b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)),
		both:     b3.New(b3.WithInjectEncoding(b3.B3SingleHeader | b3.B3MultipleHeader)),
	}
}

// b3Encoding is which B3 encodings a request came with.
type b3Encoding uint8

const (
	b3SingleHeader b3Encoding = 1 << iota
	b3MultipleHeaders
)

func b3Of(h http.Header) b3Encoding {
	var e b3Encoding
	if h.Get(b3Single) != "" {
		e |= b3SingleHeader
	}
	if h.Get(b3TraceID) != "" || h.Get(b3Sampled) != "" || h.Get(b3Flags) != "" {
		e |= b3MultipleHeaders
	}
	return e
}

// extract returns ctx with the request's parent span context, if it has a
// valid one: W3C first, then B3.
func (t *Tracer) extract(ctx context.Context, h http.Header, enc b3Encoding) context.Context {
	c := propagation.HeaderCarrier(h)
	if parent := t.w3c.Extract(ctx, c); oteltrace.SpanContextFromContext(parent).IsValid() || enc == 0 {
		return parent
	}
	return t.b3.extract.Extract(ctx, c)
}

// inject replaces the request's trace context fields with ctx's span:
// traceparent (and tracestate) always, B3 in the encodings it came with.
func (t *Tracer) inject(ctx context.Context, h http.Header, enc b3Encoding) {
	c := propagation.HeaderCarrier(h)
	h.Del("Traceparent")
	h.Del("Tracestate")
	t.w3c.Inject(ctx, c)
	if enc == 0 {
		return
	}
	for _, k := range []string{b3Single, b3TraceID, b3SpanID, b3ParentSpanID, b3Sampled, b3Flags} {
		h.Del(k) // the parent's values, ParentSpanId included, are stale now
	}
	switch enc {
	case b3SingleHeader:
		t.b3.single.Inject(ctx, c)
	case b3MultipleHeaders:
		t.b3.multiple.Inject(ctx, c)
	default:
		t.b3.both.Inject(ctx, c)
	}
}
