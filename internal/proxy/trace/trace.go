// Package trace gives every HTTP request through the proxy a span of a
// distributed trace, exported over OTLP/gRPC with the OpenTelemetry SDK.
//
// A hop's span (inbound: server, outbound: client) is the child of the
// context the request came with — W3C traceparent/tracestate, else B3 (the
// single b3 header or X-B3-*) — or the root of a new trace. The request goes
// on carrying the span's context: always as traceparent, and as B3 too, in
// the same encoding, when it came with B3. Sampling is parent-based (a
// sampled parent is always recorded, an unsampled one never), new traces by
// ratio. Spans are batched and exported in the background; a collector that
// is down or slow costs dropped spans, never request latency.
//
// A proxy without a collector has no Tracer: a nil *Tracer's layers add
// nothing to the stack.
package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"
)

// DefaultServiceName names a proxy's spans when it has no workload.
const DefaultServiceName = "trellis-proxy"

// Config configures a Tracer.
type Config struct {
	// Collector is the host:port of an OTLP/gRPC trace receiver (plaintext).
	Collector string
	// SampleRatio is the share of new traces (requests without a parent
	// context) that are recorded, 0 to 1.
	SampleRatio float64
	// ServiceName is the service.name of the spans' resource;
	// "" is DefaultServiceName.
	ServiceName string
	// Identity is this proxy's SPIFFE ID, "" without mTLS: a resource
	// attribute, and the client (outbound) or server (inbound) identity of
	// its spans.
	Identity string
	// Workload is the instance name, the service.instance.id.
	Workload string
	// Log receives the exporter's errors.
	Log *slog.Logger
}

// Tracer makes the spans of one proxy.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   oteltrace.Tracer
	identity string
	w3c      propagation.TraceContext
	b3       b3Propagators
}

// New starts a tracer exporting to cfg.Collector. It does not wait for the
// collector: spans are sent once it can be reached.
func New(cfg Config) (*Tracer, error) {
	if cfg.Collector == "" {
		return nil, errors.New("trace collector: no address")
	}
	if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		return nil, fmt.Errorf("trace sample ratio %v: must be between 0 and 1", cfg.SampleRatio)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = DefaultServiceName
	}
	exp, err := otlptracegrpc.New(context.Background(), otlptracegrpc.WithEndpoint(cfg.Collector), otlptracegrpc.WithInsecure())
	if err != nil {
		return nil, fmt.Errorf("trace collector %s: %w", cfg.Collector, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.Workload != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.Workload))
	}
	if cfg.Identity != "" {
		attrs = append(attrs, attribute.String("trellis.identity", cfg.Identity))
	}
	res, err := resource.New(context.Background(), resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	if cfg.Log != nil {
		log := cfg.Log
		// The SDK reports export failures through the process-wide handler.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("trace export", "error", err) }))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	return &Tracer{
		provider: tp,
		tracer:   tp.Tracer("github.com/trellis-mesh/trellis/internal/proxy/trace"),
		identity: cfg.Identity,
		b3:       newB3Propagators(),
	}, nil
}

// Shutdown exports the spans still buffered, within ctx, and stops the
// exporter. A nil Tracer has nothing to do.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("trace shutdown: %w", err)
	}
	return nil
}
