package route

import (
	"slices"
	"sync"
	"time"
)

// Hedge says when a second attempt is sent for a slow request: after a
// fixed delay, or after the rule's observed 95th percentile latency.
type Hedge struct {
	delay time.Duration
	p95   bool

	mu      sync.Mutex
	samples [256]time.Duration
	n       int // samples recorded
	cached  time.Duration
}

// minSamples is how many latencies the p95 needs before it is trusted.
const minSamples = 50

// Observe records the latency of one request of the rule.
func (h *Hedge) Observe(d time.Duration) {
	if !h.p95 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[h.n%len(h.samples)] = d
	h.n++
	if h.n >= minSamples && h.n%32 == 0 {
		s := slices.Clone(h.samples[:min(h.n, len(h.samples))])
		slices.Sort(s)
		h.cached = s[len(s)*95/100]
	}
}

// Delay is how long to wait before hedging; 0 means do not hedge (yet).
func (h *Hedge) Delay() time.Duration {
	if !h.p95 {
		return h.delay
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cached > 0 {
		return h.cached
	}
	return h.delay
}
