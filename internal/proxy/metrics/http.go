package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP holds the request and response series of one label set. Obtain it once
// per connection or target with Registry.HTTP and record on it per request.
type HTTP struct {
	labels    string
	requests  atomic.Uint64
	responses sync.Map // responseKey -> *response
}

type responseKey struct {
	status     int
	grpcStatus int // -1 when the response carried none
	failure    bool
}

type response struct {
	count   atomic.Uint64
	latency histogram
}

// Request counts a request that reached the proxy.
func (h *HTTP) Request() { h.requests.Add(1) }

// Response counts a response and its latency (time to the response head).
// grpcStatus is -1 for non-gRPC responses; failure is the classification.
func (h *HTTP) Response(status, grpcStatus int, failure bool, latency time.Duration) {
	k := responseKey{status, grpcStatus, failure}
	v, ok := h.responses.Load(k)
	if !ok {
		v, _ = h.responses.LoadOrStore(k, &response{})
	}
	r := v.(*response)
	r.count.Add(1)
	r.latency.observe(latency)
}

func (k responseKey) labels() string {
	class := "success"
	if k.failure {
		class = "failure"
	}
	grpc := ""
	if k.grpcStatus >= 0 {
		grpc = kv("grpc_status", strconv.Itoa(k.grpcStatus))
	}
	status := ""
	if k.status > 0 {
		status = kv("status_code", strconv.Itoa(k.status))
	}
	return join(status, kv("classification", class), grpc)
}
