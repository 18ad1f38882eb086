// Package tap is the proxy's side of live request tapping: while someone
// is watching, it reports the requests the proxy handles as they happen —
// the request head, the response head and the response's end — to the
// control plane, which merges the streams of many proxies.
//
// A Hub holds the current subscribers, each with what it wants to see and
// how many requests per second at most. Layer is the HTTP stage that reports
// requests to the hub: while nobody is subscribed it costs one atomic load
// per request and nothing else. Whether a request is reported to a
// subscriber is decided once, when it starts (match and rate limit), and
// then all three of its events go to that subscriber. Reporting never blocks
// a request: each subscriber has a bounded queue, and an event that does not
// fit is dropped and counted.
//
// Server serves the hub as the trellis.tap.v1.Tap gRPC service on the
// proxy's tap port, over mutual TLS with the proxy's own certificate, to one
// identity only: the control plane's.
package tap

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/time/rate"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
)

// Defaults of a Hub.
const (
	// DefaultMaxRPS bounds the requests per second reported on one stream.
	DefaultMaxRPS = 100
	// DefaultQueue is how many events wait for a slow subscriber before
	// more are dropped.
	DefaultQueue = 256
	// DefaultMaxSubscribers bounds the streams tapping a proxy at once.
	DefaultMaxSubscribers = 16
)

// HubConfig configures a Hub; zero fields take the defaults.
type HubConfig struct {
	// MaxRPS is the most requests per second one subscriber may ask for.
	MaxRPS int
	// Queue is each subscriber's queue length, in events.
	Queue int
	// MaxSubscribers is how many subscribers there may be at once.
	MaxSubscribers int
	// Identity is the proxy's own SPIFFE ID, if it has one: the server_id
	// of inbound and the client_id of outbound requests over mTLS.
	Identity string
	// Decisions are what the proxy decided for its recent requests, which
	// the server's Recent answers from (nil: none).
	Decisions *explain.Journal
}

// ErrTooManySubscribers is returned by Subscribe when the hub is full.
var ErrTooManySubscribers = errors.New("tap: too many tap streams on this proxy")

// ErrInvalidRequest marks an ObserveRequest that Subscribe refuses.
var ErrInvalidRequest = errors.New("tap: invalid request")

// Hub is where the HTTP layers report requests and subscribers receive
// them. Its zero value is not usable; use NewHub.
type Hub struct {
	cfg HubConfig
	// subs is the current subscribers, replaced on every change; nil when
	// there are none, so the request path needs one load to know.
	subs atomic.Pointer[[]*Subscription]
	mu   sync.Mutex // serialises changes to subs
	ids  atomic.Uint64
}

// NewHub returns a hub without subscribers.
func NewHub(cfg HubConfig) *Hub {
	if cfg.MaxRPS <= 0 {
		cfg.MaxRPS = DefaultMaxRPS
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	return &Hub{cfg: cfg}
}

// Active reports whether anyone is subscribed.
func (h *Hub) Active() bool { return h.subs.Load() != nil }

// Subscribers returns how many subscribers there are.
func (h *Hub) Subscribers() int {
	if p := h.subs.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Subscribe adds a subscriber for the requests req selects, at most
// req.MaxRps per second (the hub's MaxRPS if that is 0 or more). Close the
// subscription when done.
func (h *Hub) Subscribe(req *tapv1.ObserveRequest) (*Subscription, error) {
	m, err := newMatch(req)
	if err != nil {
		return nil, err
	}
	rps := h.cfg.MaxRPS
	if n := req.GetMaxRps(); n > 0 && uint64(n) < uint64(rps) {
		rps = int(n)
	}
	s := &Subscription{
		hub:    h,
		match:  m,
		rps:    rps,
		limit:  rate.NewLimiter(rate.Limit(rps), rps),
		events: make(chan *tapv1.TapEvent, h.cfg.Queue),
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var cur []*Subscription
	if p := h.subs.Load(); p != nil {
		cur = *p
	}
	if len(cur) >= h.cfg.MaxSubscribers {
		return nil, fmt.Errorf("%w (%d)", ErrTooManySubscribers, len(cur))
	}
	next := append(append(make([]*Subscription, 0, len(cur)+1), cur...), s)
	h.subs.Store(&next)
	return s, nil
}

// remove takes s out of the subscribers.
func (h *Hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.subs.Load()
	if p == nil {
		return
	}
	next := make([]*Subscription, 0, len(*p))
	for _, o := range *p {
		if o != s {
			next = append(next, o)
		}
	}
	if len(next) == 0 {
		h.subs.Store(nil)
		return
	}
	h.subs.Store(&next)
}

// Subscription is one subscriber: the requests it selects and the queue of
// their events.
type Subscription struct {
	hub     *Hub
	match   match
	rps     int
	limit   *rate.Limiter
	events  chan *tapv1.TapEvent
	dropped atomic.Uint64
	once    sync.Once
}

// Events is the subscriber's queue. It is never closed: stop reading after
// Close.
func (s *Subscription) Events() <-chan *tapv1.TapEvent { return s.events }

// MaxRPS is the rate limit in force, in requests per second.
func (s *Subscription) MaxRPS() int { return s.rps }

// TakeDropped returns how many events did not fit in the queue since the
// last call, and resets the count.
func (s *Subscription) TakeDropped() uint64 { return s.dropped.Swap(0) }

// Close unsubscribes. Requests already selected may still put events in the
// queue; nobody waits for them.
func (s *Subscription) Close() { s.once.Do(func() { s.hub.remove(s) }) }

// publish queues ev unless the queue is full, which it counts.
func (s *Subscription) publish(ev *tapv1.TapEvent) {
	select {
	case s.events <- ev:
	default:
		s.dropped.Add(1)
	}
}

// match is what a subscriber selects; empty fields match everything.
type match struct {
	method, pathPrefix, authority, direction, to string
}

func newMatch(req *tapv1.ObserveRequest) (match, error) {
	m := match{
		method:     req.GetMethod(),
		pathPrefix: req.GetPathPrefix(),
		authority:  req.GetAuthority(),
		direction:  req.GetDirection(),
		to:         req.GetTo(),
	}
	switch m.direction {
	case "", "inbound", "outbound":
	default:
		return match{}, fmt.Errorf("%w: direction %q: want inbound or outbound", ErrInvalidRequest, m.direction)
	}
	return m, nil
}

// matches reports whether a request in direction dir is selected.
func (m *match) matches(dir string, r *http.Request) bool {
	return m.selects(dir, r.Method, r.URL.Path, r.Host) && (m.to == "" || m.reaches(r.Host, httpproxy.Target(r.Context())))
}

// reaches reports whether a request for authority, sent to targets, goes
// where the subscriber asked (to).
func (m *match) reaches(authority string, targets ...string) bool {
	return strings.Contains(authority, m.to) || slices.ContainsFunc(targets, func(t string) bool { return strings.Contains(t, m.to) })
}

// selects reports whether a request in direction dir, with this method,
// path and authority, is selected, where it goes aside (reaches).
func (m *match) selects(dir, method, path, authority string) bool {
	if m.direction != "" && m.direction != dir {
		return false
	}
	if m.method != "" && !strings.EqualFold(m.method, method) {
		return false
	}
	if m.pathPrefix != "" && !strings.HasPrefix(path, m.pathPrefix) {
		return false
	}
	return m.authority == "" || strings.EqualFold(m.authority, authority)
}
