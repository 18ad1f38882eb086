// Package observe bundles the observability stages a proxy's HTTP stacks
// carry besides the transport metrics: per-request HTTP metrics, tap,
// tracing and the access log. Each is optional; a stage that is not
// configured is left out of the stack, not skipped per request.
package observe

import (
	"github.com/trellis-mesh/trellis/internal/proxy/accesslog"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/trace"
)

// Stages are the observability stages of both HTTP stacks; nil fields are off.
type Stages struct {
	// HTTPMetrics records request_total, response_* and route_* series.
	HTTPMetrics *metrics.Registry
	// Tap publishes live request events to whoever taps the proxy.
	Tap *tap.Hub
	// Tracer opens a span per hop and propagates the trace context.
	Tracer *trace.Tracer
	// AccessLog writes a line per request.
	AccessLog *accesslog.Logger
}
