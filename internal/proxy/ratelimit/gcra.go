// Package ratelimit is the proxy's rate limiter: GCRA (the generic cell
// rate algorithm), as Linkerd's local rate limits are. Each limit keeps
// one theoretical arrival time; a request is allowed if, after it, that
// time is at most one second ahead of now — a client may burst one
// second's worth of requests, then gets one every 1/rate. No lock: a
// compare-and-swap. The inbound proxy enforces Servers' limits with it
// (internal/proxy/authz), the outbound proxy the limits of the services
// its application calls (internal/proxy/outbound).
package ratelimit

import (
	"sync/atomic"
	"time"
)

// epoch is what Now counts from.
var epoch = time.Now()

// Now is the time limits are kept in: nanoseconds of the monotonic clock
// since the process started, so that a wall clock stepped back (NTP, a
// resumed VM) does not refuse every request until it catches up.
func Now() int64 { return int64(time.Since(epoch)) }

// Burst is how far ahead of now a limit's arrival time may run.
const Burst = time.Second

// GCRA is one limit.
type GCRA struct {
	interval int64        // nanoseconds per request
	tat      atomic.Int64 // theoretical arrival time, Unix nanoseconds
}

// New returns a limit of perSecond requests a second (at least 1).
func New(perSecond uint32) *GCRA {
	return &GCRA{interval: int64(time.Second) / int64(max(perSecond, 1))}
}

// Take admits a request at now (Now) or says how long until one would be.
func (g *GCRA) Take(now int64) (bool, time.Duration) {
	for {
		tat := g.tat.Load()
		next := max(tat, now) + g.interval
		if ahead := next - now; ahead > int64(Burst) {
			return false, time.Duration(ahead - int64(Burst))
		}
		if g.tat.CompareAndSwap(tat, next) {
			return true, 0
		}
	}
}
