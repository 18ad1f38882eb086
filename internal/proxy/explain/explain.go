// Package explain records, per outbound request, the decisions the proxy
// made — which route and rule matched, which backend and endpoints were
// chosen, which attempts were retried and why, whether it was hedged or
// failed fast, which endpoints were ejected — in a fixed ring of recent
// requests that costs one allocation per request and no lock. The admin
// server serves it (loopback only) for `explain`, and the tap stream will
// carry it.
package explain

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Decision is what happened to one request.
type Decision struct {
	Time      time.Time `json:"time"`
	Method    string    `json:"method"`
	Authority string    `json:"authority"`
	Path      string    `json:"path"`
	// Route is the matched route ("namespace/name"), RouteKind HTTPRoute or
	// GRPCRoute, Rule the rule's name; empty without routes.
	Route     string `json:"route,omitempty"`
	RouteKind string `json:"routeKind,omitempty"`
	Rule      string `json:"rule,omitempty"`
	// Backend is the backend service the rule chose ("" the service itself).
	Backend string `json:"backend,omitempty"`

	mu sync.Mutex
	// Attempts lists every try: its endpoint, status, and why it was
	// retried or hedged.
	Attempts []Attempt `json:"attempts"`
	// FailFast says why no endpoint was tried, if none was.
	FailFast string `json:"failFast,omitempty"`
	// EjectedEndpoints lists endpoints failure accrual took out because of this request.
	EjectedEndpoints []string `json:"ejected,omitempty"`
	Status           int      `json:"status"`
}

// Attempt is one try of a request.
type Attempt struct {
	Endpoint string `json:"endpoint"`
	Status   int    `json:"status"`
	GRPC     int    `json:"grpcStatus,omitempty"`
	// Why this attempt was made: "" (the first), "retry", "hedge".
	Why string `json:"why,omitempty"`
}

// AddAttempt records one try.
func (d *Decision) AddAttempt(a Attempt) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.Attempts = append(d.Attempts, a)
	d.Status = a.Status
	d.mu.Unlock()
}

// FailedFast records why no endpoint was tried.
func (d *Decision) FailedFast(reason string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.FailFast = reason
	d.mu.Unlock()
}

// Ejected records that failure accrual took endpoint addr out.
func (d *Decision) Ejected(addr string) {
	if d == nil {
		return
	}
	d.mu.Lock()
	d.EjectedEndpoints = append(d.EjectedEndpoints, addr)
	d.mu.Unlock()
}

// Snapshot copies d for reading while requests may still write to it.
func (d *Decision) Snapshot() Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Decision{Time: d.Time, Method: d.Method, Authority: d.Authority, Path: d.Path, Route: d.Route, RouteKind: d.RouteKind,
		Rule: d.Rule, Backend: d.Backend, Attempts: append([]Attempt(nil), d.Attempts...), FailFast: d.FailFast,
		EjectedEndpoints: append([]string(nil), d.EjectedEndpoints...), Status: d.Status}
}

type key struct{}

// With returns ctx carrying d.
func With(ctx context.Context, d *Decision) context.Context { return context.WithValue(ctx, key{}, d) }

// From returns the request's decision, or nil.
func From(ctx context.Context) *Decision {
	d, _ := ctx.Value(key{}).(*Decision)
	return d
}

// whyKey marks attempts after the first.
type whyKey struct{}

// As marks ctx as carrying an attempt made for why ("retry", "hedge").
func As(ctx context.Context, why string) context.Context {
	return context.WithValue(ctx, whyKey{}, why)
}

// Why is why the attempt of ctx was made ("" for the first).
func Why(ctx context.Context) string {
	s, _ := ctx.Value(whyKey{}).(string)
	return s
}

// Size is how many recent decisions a Log keeps.
const Size = 1024

// Log is a ring of the most recent decisions.
type Log struct {
	slots [Size]atomic.Pointer[Decision]
	next  atomic.Uint64
}

// Record adds d.
func (l *Log) Record(d *Decision) {
	if l == nil || d == nil {
		return
	}
	i := l.next.Add(1) - 1
	l.slots[i%Size].Store(d)
}

// Recent returns up to n decisions, newest first.
func (l *Log) Recent(n int) []Decision {
	end := l.next.Load()
	var out []Decision
	for i := end; i > 0 && len(out) < n && end-i < Size; i-- {
		if d := l.slots[(i-1)%Size].Load(); d != nil {
			out = append(out, d.Snapshot())
		}
	}
	return out
}
