package identity

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per caller. A caller whose bucket has refilled
// is indistinguishable from a new one, so such entries are dropped now and
// then, which bounds memory by the number of recently active callers.
type limiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newLimiter(limit rate.Limit, burst int) *limiter {
	return &limiter{limit: limit, burst: burst, buckets: map[string]*rate.Limiter{}}
}

// allow takes a token from caller's bucket at now, reporting whether there
// was one.
func (l *limiter) allow(caller string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b, ok := l.buckets[caller]
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets[caller] = b
	}
	return b.AllowN(now, 1)
}
