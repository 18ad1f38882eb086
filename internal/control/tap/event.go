package tap

import (
	"time"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
)

// The types of Event.
const (
	TypeRequestInit  = "requestInit"
	TypeResponseInit = "responseInit"
	TypeResponseEnd  = "responseEnd"
	// TypeDropped says the proxy dropped Dropped events of this stream
	// because they were not read fast enough.
	TypeDropped = "dropped"
	// TypeError says a proxy could not be tapped, or its stream broke;
	// Error says why. No more events come from that proxy.
	TypeError = "error"
)

// Event is one stage of one request, as the JSON the CLI and the dashboard
// read. Field names are stable; fields that do not apply to an event's type
// are left out.
type Event struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	// ID identifies the request among those of its proxy (ProxyAddr).
	ID uint64 `json:"id,omitempty"`
	// ProxyAddr, Workload and Namespace say which proxy reported it;
	// Workload is the instance's name (web-0), as request IDs are per proxy.
	ProxyAddr string `json:"proxyAddr"`
	Workload  string `json:"workload,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Proxy is the side of the proxy: "inbound" or "outbound".
	Proxy       string            `json:"proxy,omitempty"`
	Source      string            `json:"source,omitempty"`
	Destination string            `json:"destination,omitempty"`
	TLS         bool              `json:"tls"`
	ClientID    string            `json:"clientId,omitempty"`
	ServerID    string            `json:"serverId,omitempty"`
	Route       string            `json:"route,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`

	// requestInit
	Method    string `json:"method,omitempty"`
	Scheme    string `json:"scheme,omitempty"`
	Authority string `json:"authority,omitempty"`
	Path      string `json:"path,omitempty"`
	// responseInit: the status, and the time from the request to it.
	Status        int   `json:"status,omitempty"`
	LatencyMicros int64 `json:"latencyMicros,omitempty"`
	// responseEnd: the gRPC status if the response has one, the time from
	// the request to the end, the body bytes and what broke it, if anything.
	GRPCStatus     *int   `json:"grpcStatus,omitempty"`
	DurationMicros int64  `json:"durationMicros,omitempty"`
	Bytes          uint64 `json:"bytes,omitempty"`
	// Error is why a response failed (responseEnd) or a proxy could not be
	// tapped (error).
	Error string `json:"error,omitempty"`
	// dropped
	Dropped uint64 `json:"dropped,omitempty"`
}

// maxPending bounds the requests of one stream whose start a converter
// remembers; beyond it (their ends were dropped) it forgets them all.
const maxPending = 10000

// converter turns one proxy's events into Events, dating the response
// events from their request's start.
type converter struct {
	t      Target
	starts map[uint64]time.Time
}

func newConverter(t Target) *converter {
	return &converter{t: t, starts: map[uint64]time.Time{}}
}

// event converts ev, received at now.
func (c *converter) event(ev *tapv1.TapEvent, now time.Time) Event {
	e := Event{
		Time: now, ID: ev.GetId(), ProxyAddr: c.t.Addr, Workload: c.t.Workload, Namespace: c.t.Namespace,
		Proxy: ev.GetDirection(), Source: ev.GetSource(), Destination: ev.GetDestination(), TLS: ev.GetTls(),
		ClientID: ev.GetClientId(), ServerID: ev.GetServerId(), Route: ev.GetRoute(), Labels: ev.GetLabels(),
	}
	switch x := ev.GetEvent().(type) {
	case *tapv1.TapEvent_RequestInit:
		ri := x.RequestInit
		e.Type, e.Method, e.Scheme, e.Authority, e.Path = TypeRequestInit, ri.GetMethod(), ri.GetScheme(), ri.GetAuthority(), ri.GetPath()
		if ri.GetTimestamp() != nil {
			e.Time = ri.GetTimestamp().AsTime()
		}
		if len(c.starts) >= maxPending {
			clear(c.starts)
		}
		c.starts[e.ID] = e.Time
	case *tapv1.TapEvent_ResponseInit:
		since := x.ResponseInit.GetSinceRequestInit().AsDuration()
		e.Type, e.Status, e.LatencyMicros = TypeResponseInit, int(x.ResponseInit.GetStatus()), since.Microseconds()
		if start, ok := c.starts[e.ID]; ok {
			e.Time = start.Add(since)
		}
	case *tapv1.TapEvent_ResponseEnd:
		end := x.ResponseEnd
		since := end.GetSinceRequestInit().AsDuration()
		e.Type, e.DurationMicros, e.Bytes, e.Error = TypeResponseEnd, since.Microseconds(), end.GetResponseBytes(), end.GetError()
		if g := int(end.GetGrpcStatus()); g >= 0 {
			e.GRPCStatus = &g
		}
		if start, ok := c.starts[e.ID]; ok {
			e.Time = start.Add(since)
			delete(c.starts, e.ID)
		}
	default:
		e.Type, e.Dropped = TypeDropped, ev.GetDropped()
	}
	return e
}
