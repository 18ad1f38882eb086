// Package balance picks an endpoint for each request or connection:
// power of two random choices over the endpoints' outstanding work, leaving
// out endpoints that just failed to connect while others are available.
package balance

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// FailurePenalty is how long an endpoint that refused a connection is left
// out while others are available.
const FailurePenalty = 5 * time.Second

// Load is one endpoint's balancing state, shared by every request.
type Load struct {
	pending     atomic.Int64
	failedUntil atomic.Int64 // unix nanoseconds
}

// Start counts one request or connection in flight; call End when it ends.
func (l *Load) Start() { l.pending.Add(1) }

// End counts one request or connection as finished.
func (l *Load) End() { l.pending.Add(-1) }

// Pending is the number in flight.
func (l *Load) Pending() int64 { return l.pending.Load() }

// Failed leaves the endpoint out for FailurePenalty from now.
func (l *Load) Failed(now time.Time) { l.failedUntil.Store(now.Add(FailurePenalty).UnixNano()) }

// Healthy reports whether the endpoint is not being left out at now.
func (l *Load) Healthy(now time.Time) bool { return now.UnixNano() >= l.failedUntil.Load() }

// Pick returns the index of the endpoint to use among n, whose states load
// returns, or -1 when n is 0. It draws two distinct endpoints and takes
// the one with less outstanding work; endpoints that failed recently are
// drawn only if every endpoint did.
func Pick(n int, load func(i int) *Load, now time.Time) int {
	switch n {
	case 0:
		return -1
	case 1:
		return 0
	}
	healthy := 0
	for i := range n {
		if load(i).Healthy(now) {
			healthy++
		}
	}
	pool := n
	nth := func(k int) int { return k } // k-th candidate's index
	if healthy > 0 && healthy < n {
		pool = healthy
		nth = func(k int) int {
			for i := range n {
				if load(i).Healthy(now) {
					if k == 0 {
						return i
					}
					k--
				}
			}
			return -1
		}
	}
	if pool == 1 {
		return nth(0)
	}
	a := rand.IntN(pool)
	b := rand.IntN(pool - 1)
	if b >= a {
		b++
	}
	ia, ib := nth(a), nth(b)
	if load(ib).Pending() < load(ia).Pending() {
		return ib
	}
	return ia
}
