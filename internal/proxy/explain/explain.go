// Package explain records, per request, the decisions the proxy made — for
// a request the application sends (outbound): which route and rule
// matched, which backend and endpoints were chosen, which attempts were
// retried and why, whether it was hedged or failed fast, which endpoints
// were ejected; for a request the application receives (inbound): which
// Server and authorization allowed or denied it, and why — in a fixed ring
// of recent requests per direction (a Journal): outbound, a pointer to the
// request's Decision (one allocation); inbound, a copy in a preallocated
// slot (none). The tap server serves it to the control plane
// for `trellis explain`, the admin server to the proxy's own host.
package explain

import (
	"context"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Decision is what happened to one request.
type Decision struct {
	Time time.Time `json:"time"`
	// Direction is "inbound" or "outbound".
	Direction string `json:"direction"`
	Method    string `json:"method"`
	Authority string `json:"authority"`
	Path      string `json:"path"`
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

	// Inbound: the client (address, and SPIFFE ID when meshed) and how
	// the authorization policy decided (recorded as an Inbound).
	Client   netip.AddrPort `json:"client,omitzero"`
	ClientID string         `json:"clientID,omitempty"`
	Policy   *Policy        `json:"policy,omitempty"`
}

// Policy is how the inbound authorization policy decided a request.
type Policy struct {
	// Server is the Server of the port or, when Default, the default
	// policy that decides for a port no Server selects.
	Server  string `json:"server"`
	Default bool   `json:"default,omitempty"`
	// Route is the Server's route the request matched, if it has routes.
	Route string `json:"route,omitempty"`
	// Authorization is what allowed the request: an AuthorizationPolicy
	// (kind authorizationpolicy), the Server's audit (audit), a health
	// probe or a default policy (default); empty when denied.
	Authorization     string `json:"authorization,omitempty"`
	AuthorizationKind string `json:"authorizationKind,omitempty"`
	Allowed           bool   `json:"allowed"`
	// Reason is why it was denied (or, under audit, would have been).
	Reason string `json:"reason,omitempty"`
	// RateLimit names the rate limit and scope that refused it (429).
	RateLimit string `json:"rateLimit,omitempty"`
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
	return Decision{Time: d.Time, Direction: d.Direction, Method: d.Method, Authority: d.Authority, Path: d.Path, Route: d.Route, RouteKind: d.RouteKind,
		Rule: d.Rule, Backend: d.Backend, Attempts: append([]Attempt(nil), d.Attempts...), FailFast: d.FailFast,
		EjectedEndpoints: append([]string(nil), d.EjectedEndpoints...), Status: d.Status,
		Client: d.Client, ClientID: d.ClientID, Policy: d.Policy}
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

// MaxField is the longest method, authority or path a decision keeps: a
// client's long path must not pin memory in the ring, nor swell the
// answer to explain.
const MaxField = 256

// Clip is s, cut to MaxField bytes as a copy (the request's memory is not
// kept); it may end inside a UTF-8 sequence, which readers replace.
func Clip(s string) string {
	if len(s) <= MaxField {
		return s
	}
	return strings.Clone(s[:MaxField])
}

// Size is how many recent decisions a Log keeps (a Journal, of each direction).
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

// Recent returns up to n decisions that keep accepts (nil: all), newest
// first.
func (l *Log) Recent(n int, keep func(*Decision) bool) []Decision {
	end := l.next.Load()
	var out []Decision
	for i := end; i > 0 && len(out) < n && end-i < Size; i-- {
		if d := l.slots[(i-1)%Size].Load(); d != nil {
			out = append(out, d.Snapshot())
			if keep != nil && !keep(&out[len(out)-1]) {
				out = out[:len(out)-1]
			}
		}
	}
	return out
}

// Inbound is what the inbound proxy decided for one request, complete
// when recorded: an InboundLog keeps it by value.
type Inbound struct {
	Time                    time.Time
	Method, Authority, Path string
	// Status is the proxy's answer (403, 404, 429), 0 when the request
	// went on to the application.
	Status   int
	Client   netip.AddrPort
	ClientID string
	Policy   Policy
}

// InboundLog is a ring of the most recent inbound decisions, copied into
// its slots: recording one allocates nothing (every inbound request is
// recorded, so this is on the hot path). A slot's lock is only ever
// contended by a reader, or by a writer a full ring later.
type InboundLog struct {
	slots [Size]struct {
		mu sync.Mutex
		d  Inbound
	}
	next atomic.Uint64
}

// Record adds a copy of d.
func (l *InboundLog) Record(d *Inbound) {
	if l == nil {
		return
	}
	s := &l.slots[(l.next.Add(1)-1)%Size]
	s.mu.Lock()
	s.d = *d
	s.mu.Unlock()
}

// Recent returns up to n decisions that keep accepts (nil: all), newest
// first.
func (l *InboundLog) Recent(n int, keep func(*Decision) bool) []Decision {
	end := l.next.Load()
	var out []Decision
	for i := end; i > 0 && len(out) < n && end-i < Size; i-- {
		s := &l.slots[(i-1)%Size]
		s.mu.Lock()
		in := s.d
		s.mu.Unlock()
		if in.Time.IsZero() {
			continue
		}
		out = append(out, Decision{Time: in.Time, Direction: "inbound", Method: in.Method, Authority: in.Authority, Path: in.Path,
			Status: in.Status, Client: in.Client, ClientID: in.ClientID, Policy: &in.Policy})
		if keep != nil && !keep(&out[len(out)-1]) {
			out = out[:len(out)-1]
		}
	}
	return out
}

// Journal keeps the recent decisions of each direction apart, so that a
// busy direction does not push the other's out.
type Journal struct {
	Inbound  InboundLog
	Outbound Log
}

// Recent returns up to n decisions of both directions that keep accepts
// (nil: all), newest first.
func (j *Journal) Recent(n int, keep func(*Decision) bool) []Decision {
	if n <= 0 {
		return nil
	}
	all := append(j.Inbound.Recent(n, keep), j.Outbound.Recent(n, keep)...)
	sort.SliceStable(all, func(i, k int) bool { return all[i].Time.After(all[k].Time) })
	return all[:min(n, len(all))]
}
