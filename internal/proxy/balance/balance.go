// Package balance picks an endpoint for each request (or connection): power
// of two random choices over peak-EWMA latency times outstanding work, as
// Linkerd does, with failure accrual that takes failing endpoints out of
// rotation and lets them back in after a successful probation request.
package balance

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Errors of Pick.
var (
	ErrNoEndpoints = errors.New("the service has no endpoints")
	ErrAllEjected  = errors.New("every endpoint of the service is failing (ejected by failure accrual)")
)

// Balancer is the shared configuration of one service's endpoints.
type Balancer struct {
	cfg Config
}

// New returns a balancer; cfg's zero fields take the defaults.
func New(cfg Config) *Balancer {
	return &Balancer{cfg: cfg.withDefaults()}
}

// NewEndpoint returns the state of one new endpoint.
func (b *Balancer) NewEndpoint() *Endpoint { return NewEndpoint(&b.cfg) }

// Now is the balancer's clock.
func (b *Balancer) Now() time.Time { return b.cfg.Now() }

// Pick returns the index of the endpoint to use among n, whose states ep
// returns. It draws two distinct endpoints in rotation and takes the one
// with the lower cost; an ejected endpoint past its backoff takes its one
// probation request. The caller calls Start and End on the chosen one.
func (b *Balancer) Pick(n int, ep func(i int) *Endpoint) (int, error) {
	if n == 0 {
		return -1, ErrNoEndpoints
	}
	now := b.cfg.Now()
	var buf [64]int
	avail := buf[:0]
	for i := range n {
		if ok, _ := ep(i).state(now); ok {
			avail = append(avail, i)
		}
	}
	for len(avail) > 0 {
		i := avail[0]
		if len(avail) > 1 {
			x := rand.IntN(len(avail))
			y := rand.IntN(len(avail) - 1)
			if y >= x {
				y++
			}
			i = avail[x]
			if ep(avail[y]).cost(now) < ep(i).cost(now) {
				i = avail[y]
			}
		}
		if ep(i).claimProbe(now) {
			return i, nil
		}
		// Another request took its probation slot meanwhile.
		for k, j := range avail {
			if j == i {
				avail = append(avail[:k], avail[k+1:]...)
				break
			}
		}
	}
	return -1, ErrAllEjected
}
