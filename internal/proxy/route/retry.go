package route

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

// Retry headers a client may send when the route allows it (Linkerd's).
const (
	HeaderRetryHTTP    = "l5d-retry-http"    // "5xx", "gateway-error", status codes
	HeaderRetryGRPC    = "l5d-retry-grpc"    // gRPC status names
	HeaderRetryLimit   = "l5d-retry-limit"   // retries
	HeaderRetryTimeout = "l5d-retry-timeout" // per try
)

// grpcCodes are the names l5d-retry-grpc may use.
var grpcCodes = map[string]int{
	"cancelled": 1, "unknown": 2, "deadline-exceeded": 4, "resource-exhausted": 8,
	"aborted": 10, "internal": 13, "unavailable": 14, "data-loss": 15,
}

// Policy says which responses are retried, how often, and within which budget.
type Policy struct {
	Attempts      int
	httpCodes     map[int]bool
	serverErrors  bool
	gatewayErrors bool
	grpcCodes     map[int]bool
	PerTry        time.Duration
	Backoff       time.Duration
	FromHeaders   bool
	Budget        *Budget
}

func newPolicy(r *destinationv1.Retry, now func() time.Time) *Policy {
	p := &Policy{Attempts: int(r.Attempts), httpCodes: map[int]bool{}, grpcCodes: map[int]bool{},
		serverErrors: r.ServerErrors, gatewayErrors: r.GatewayErrors, PerTry: r.PerTryTimeout.AsDuration(),
		Backoff: r.Backoff.AsDuration(), FromHeaders: r.FromHeaders}
	for _, c := range r.HttpCodes {
		p.httpCodes[int(c)] = true
	}
	for _, c := range r.GrpcCodes {
		p.grpcCodes[int(c)] = true
	}
	if b := r.Budget; b != nil {
		p.Budget = NewBudget(b.Ratio, int(b.MinPerSecond), b.Ttl.AsDuration(), now)
	}
	return p
}

// Retryable reports whether a response with this status (and gRPC status,
// -1 if none) should be retried.
func (p *Policy) Retryable(status, grpc int) bool {
	switch {
	case grpc > 0:
		return p.grpcCodes[grpc]
	case p.httpCodes[status]:
		return true
	case p.serverErrors && status >= 500 && status <= 599:
		return true
	case p.gatewayErrors && (status == 502 || status == 503 || status == 504):
		return true
	}
	return false
}

// FromRequest applies (and removes) a client's l5d-retry-* headers when
// the policy allows them; it returns the policy for this request.
func (p *Policy) FromRequest(h http.Header) *Policy {
	if p == nil {
		return nil
	}
	names := []string{HeaderRetryHTTP, HeaderRetryGRPC, HeaderRetryLimit, HeaderRetryTimeout}
	if !p.FromHeaders {
		for _, n := range names {
			h.Del(n)
		}
		return p
	}
	q := *p
	if v := h.Get(HeaderRetryHTTP); v != "" {
		q.httpCodes, q.serverErrors, q.gatewayErrors = map[int]bool{}, false, false
		for _, item := range strings.Split(v, ",") {
			switch item = strings.TrimSpace(item); item {
			case "5xx":
				q.serverErrors = true
			case "gateway-error":
				q.gatewayErrors = true
			default:
				if n, err := strconv.Atoi(item); err == nil && n >= 400 && n <= 599 {
					q.httpCodes[n] = true
				}
			}
		}
	}
	if v := h.Get(HeaderRetryGRPC); v != "" {
		q.grpcCodes = map[int]bool{}
		for _, item := range strings.Split(v, ",") {
			if c, ok := grpcCodes[strings.TrimSpace(item)]; ok {
				q.grpcCodes[c] = true
			}
		}
	}
	if n, err := strconv.Atoi(h.Get(HeaderRetryLimit)); err == nil && n >= 0 && n <= 10 {
		q.Attempts = n
	}
	if d, err := time.ParseDuration(h.Get(HeaderRetryTimeout)); err == nil && d > 0 {
		q.PerTry = d
	}
	for _, n := range names {
		h.Del(n)
	}
	return &q
}

// Budget caps retries so that they can never amplify an outage: a token
// bucket that every request fills by ratio and time fills by minPerSecond,
// holding at most what the last ttl earned (ratio × its requests +
// minPerSecond × ttl); every retry (or hedge) takes a token. It starts
// empty, so over any run retries ≤ ratio × requests + minPerSecond × time.
type Budget struct {
	ratio  float64
	perSec float64
	now    func() time.Time
	span   int64 // seconds
	mu     sync.Mutex
	tokens float64
	last   time.Time
	counts []slot
}

type slot struct {
	sec      int64
	requests int
}

// NewBudget returns a budget; now is the clock (time.Now if nil).
func NewBudget(ratio float64, minPerSecond int, ttl time.Duration, now func() time.Time) *Budget {
	if now == nil {
		now = time.Now
	}
	span := int64(ttl / time.Second)
	if span < 1 {
		span = 1
	}
	return &Budget{ratio: ratio, perSec: float64(minPerSecond), now: now, span: span, counts: make([]slot, span), last: now()}
}

// refill adds what time earned since the last call, within the cap (mu held).
func (b *Budget) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens += b.perSec * d.Seconds()
		b.last = now
	}
	sec := now.Unix()
	requests := 0
	for _, s := range b.counts {
		if s.sec > sec-b.span && s.sec <= sec {
			requests += s.requests
		}
	}
	b.tokens = min(b.tokens, b.ratio*float64(requests)+b.perSec*float64(b.span))
}

// Deposit records an original request.
func (b *Budget) Deposit() {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	sec := now.Unix()
	s := &b.counts[sec%b.span]
	if s.sec != sec {
		*s = slot{sec: sec}
	}
	s.requests++
	b.tokens += b.ratio
	b.refill(now) // within the cap, this request included
}

// Withdraw takes one retry from the budget; false if it is spent.
func (b *Budget) Withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(b.now())
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
