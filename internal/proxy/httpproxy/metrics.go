package httpproxy

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/transport"
)

// Metrics counts every request and response in request_total,
// response_total and response_latency_seconds (time to the response head).
// Responses are failures when the status is 5xx or the gRPC status is not OK,
// or when the response broke off. A nil reg leaves the stage out.
func Metrics(reg *metrics.Registry) Layer {
	return func(next http.Handler) http.Handler {
		if reg == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			m := transport.MetaFrom(r.Context())
			l := metrics.Labels{Direction: string(m.Direction), TargetAddr: Target(r.Context()), TLS: m.TLS, NoTLSReason: m.NoTLSReason, ClientID: m.ClientID}
			if m.Direction == transport.Outbound {
				l.Authority = r.Host
				l.RouteName, l.RouteKind = Route(r.Context())
				l.Dst = Dst(r.Context())
				if peer := Peer(r.Context()); peer != "" {
					l.TLS, l.NoTLSReason, l.ServerID = "true", "", peer
				}
			}
			series := reg.HTTP(l)
			series.Request()
			Observe(next, w, r, func(o Outcome) {
				series.Response(o.Status, o.GRPCStatus, o.Failed(), o.Latency)
			})
		})
	}
}

// Outcome is how a response went, as Observe saw it.
type Outcome struct {
	// Status is the final status code, 0 if no response head was sent.
	Status int
	// GRPCStatus is the grpc-status, -1 if there is none.
	GRPCStatus int
	// Latency is the time to the response head (or to the end, if none).
	Latency time.Duration
	// Completed is false if the handler broke off (panicked).
	Completed bool
	// ClientFault: the client broke its request body; whatever the
	// upstream did after says nothing about it.
	ClientFault bool
}

// Failed is the response's classification: a 5xx, a gRPC status other
// than OK, or a response that broke off.
func (o Outcome) Failed() bool { return !o.Completed || o.Status >= 500 || o.GRPCStatus > 0 }

// Observe serves r with next and calls done with the outcome — also when
// next panics (as the forwarders do to abort a response), before the panic
// goes on.
func Observe(next http.Handler, w http.ResponseWriter, r *http.Request, done func(Outcome)) {
	rec := &recorder{ResponseWriter: w, start: time.Now()}
	r, body := watchBody(r)
	completed := false
	defer func() {
		if rec.status == 0 {
			rec.latency = time.Since(rec.start)
		}
		done(Outcome{Status: rec.status, GRPCStatus: GRPCStatus(w.Header()), Latency: rec.latency, Completed: completed, ClientFault: body.failed()})
	}()
	next.ServeHTTP(rec, r)
	completed = true
}

// recorder notes the final status and when the response head went out.
type recorder struct {
	http.ResponseWriter
	start   time.Time
	status  int
	latency time.Duration
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status = code
		r.latency = time.Since(r.start)
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// TakeHeader passes a head on to the writer it records, if that can take it.
func (r *recorder) TakeHeader(h http.Header) bool {
	t, ok := r.ResponseWriter.(headerTaker)
	return ok && t.TakeHeader(h)
}

// GRPCStatus is a gRPC response's grpc-status (from trailers, or the head
// of a trailers-only response), or -1 if it has none or is not gRPC. A code
// gRPC does not define counts as UNKNOWN (2): upstreams cannot grow the
// metrics' label values without bound.
func GRPCStatus(h http.Header) int {
	if !strings.HasPrefix(h.Get("Content-Type"), "application/grpc") {
		return -1
	}
	v := h.Get("Grpc-Status")
	if v == "" {
		v = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 16 {
		return 2
	}
	return n
}
