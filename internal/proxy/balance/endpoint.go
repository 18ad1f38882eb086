package balance

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how one request to an endpoint ended.
type Outcome int

// Outcomes.
const (
	Success Outcome = iota
	// Failure counts towards ejection (5xx, gRPC UNAVAILABLE, ...).
	Failure
	// Overloaded (429, RESOURCE_EXHAUSTED) is not a failure but makes the
	// endpoint look slow, so it gets less traffic.
	Overloaded
	// Abandoned: the caller gave up (cancelled) before an answer; it says
	// nothing about the endpoint.
	Abandoned
)

// probeTimeout bounds how long one probation request holds the probation
// slot (a long-lived stream): then another request may probe.
const probeTimeout = 10 * time.Second

// Endpoint is one endpoint's balancing state, shared by every request:
// outstanding requests, a peak-EWMA latency estimate and failure accrual.
type Endpoint struct {
	cfg     *Config
	pending atomic.Int64

	mu       sync.Mutex
	rtt      float64 // estimate, ns
	stamp    time.Time
	failures int // consecutive
	window   window
	ejected  time.Time // in rotation again from then (zero: never ejected)
	attempts int       // ejections since last readmitted
	probing  bool      // the probation request is in flight
	probed   time.Time // when it was sent
}

// NewEndpoint returns the state of a new endpoint under cfg (shared by
// the endpoints of a service; its zero value is the defaults).
func NewEndpoint(cfg *Config) *Endpoint {
	return &Endpoint{cfg: cfg, rtt: float64(cfg.DefaultRTT), stamp: cfg.Now()}
}

// Pending is the number of requests in flight.
func (e *Endpoint) Pending() int64 { return e.pending.Load() }

// estimate is the latency estimate decayed to now (mu held): an endpoint
// not heard from for a while looks faster, so it is tried again.
func (e *Endpoint) estimate(now time.Time) float64 {
	elapsed := float64(now.Sub(e.stamp))
	if elapsed <= 0 {
		return e.rtt
	}
	return e.rtt * math.Exp(-elapsed/float64(e.cfg.Decay))
}

// cost is what P2C compares: the estimate times the work it would queue behind.
func (e *Endpoint) cost(now time.Time) float64 {
	e.mu.Lock()
	est := e.estimate(now)
	e.mu.Unlock()
	return est * float64(e.pending.Load()+1)
}

// state reports whether the endpoint may take a request at now, and
// whether that request would be its probation.
func (e *Endpoint) state(now time.Time) (available, probation bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.attempts == 0 {
		return true, false
	}
	if now.Before(e.ejected) || e.probing && now.Sub(e.probed) < probeTimeout {
		return false, false
	}
	return true, true
}

// claimProbe takes the probation slot; false if another request has it.
func (e *Endpoint) claimProbe(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.attempts == 0 {
		return true
	}
	if now.Before(e.ejected) || e.probing && now.Sub(e.probed) < probeTimeout {
		return false
	}
	e.probing, e.probed = true, now
	return true
}

// Start counts a request in flight; End must follow.
func (e *Endpoint) Start() { e.pending.Add(1) }

// End records a finished request: its latency feeds the estimate (a new
// peak at once, lower values averaged in) and its outcome the accrual. It
// reports whether this outcome ejected the endpoint.
func (e *Endpoint) End(rtt time.Duration, o Outcome) (ejected bool) {
	e.pending.Add(-1)
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	// Only a request sent after the probation request was can settle it.
	probe := e.probing && !now.Add(-rtt).Before(e.probed)
	if o == Abandoned {
		if probe {
			e.probing = false // let another request probe
		}
		return false
	}
	sample := float64(rtt)
	if o == Overloaded {
		sample = math.Max(2*e.estimate(now), float64(10*e.cfg.DefaultRTT))
	}
	// Peak EWMA: a sample above the estimate is taken at once; lower ones
	// are averaged in by how long it has been since the last.
	if sample > e.rtt {
		e.rtt = sample
	} else {
		w := math.Exp(-float64(now.Sub(e.stamp)) / float64(e.cfg.Decay))
		e.rtt = e.rtt*w + sample*(1-w)
	}
	e.stamp = now
	before := e.attempts
	e.accrue(now, o == Failure, probe)
	return e.attempts > before
}

// ConnectFailed records that the endpoint could not be reached: it is
// ejected at once (no request got through, none may follow soon), unless
// it already is.
func (e *Endpoint) ConnectFailed() {
	now := e.cfg.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.attempts > 0 && now.Before(e.ejected) {
		return
	}
	e.probing = false
	e.eject(now)
}

// OnProbation reports whether the endpoint is back from an ejection but not
// yet readmitted (its probation request is in flight or due).
func (e *Endpoint) OnProbation() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.attempts > 0
}

// Ejected reports whether the endpoint is out of rotation at now.
func (e *Endpoint) Ejected(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.attempts > 0 && now.Before(e.ejected)
}

// accrue folds one outcome into failure accrual (mu held); probe says it
// is the probation request's.
func (e *Endpoint) accrue(now time.Time, failed, probe bool) {
	a := e.cfg.Accrual
	if probe {
		e.probing = false
		if failed {
			e.eject(now)
			return
		}
		e.attempts, e.failures = 0, 0
		e.window = window{}
		return
	}
	if e.attempts > 0 {
		return // ejected: only the probation request counts
	}
	if a.Mode == Off {
		return
	}
	if failed {
		e.failures++
	} else {
		e.failures = 0
	}
	e.window.add(now, failed)
	switch a.Mode {
	case Consecutive:
		if e.failures >= a.Consecutive {
			e.eject(now)
		}
	case SuccessRate:
		if ok, total := e.window.counts(now, a.Window); total >= a.MinRequests && float64(ok) < a.Threshold*float64(total) {
			e.eject(now)
		}
	}
}

// eject takes the endpoint out for the next backoff (mu held).
func (e *Endpoint) eject(now time.Time) {
	a := e.cfg.Accrual
	d := a.BackoffMin << min(e.attempts, 30)
	if d <= 0 || d > a.BackoffMax {
		d = a.BackoffMax
	}
	d = d/2 + rand.N(d/2+1) // jitter into [d/2, d]
	e.attempts++
	e.ejected = now.Add(d)
	e.failures = 0
	e.window = window{}
}

// window counts successes and requests in one-second buckets.
type window struct {
	buckets [64]bucket
}

// maxWindow is the longest success-rate window the buckets hold.
const maxWindow = time.Duration(len(window{}.buckets)) * time.Second

type bucket struct {
	sec       int64
	ok, total int
}

func (w *window) add(now time.Time, failed bool) {
	sec := now.Unix()
	b := &w.buckets[sec%int64(len(w.buckets))]
	if b.sec != sec {
		*b = bucket{sec: sec}
	}
	b.total++
	if !failed {
		b.ok++
	}
}

func (w *window) counts(now time.Time, span time.Duration) (ok, total int) {
	from := now.Add(-span).Unix()
	for _, b := range w.buckets {
		if b.sec > from && b.sec <= now.Unix() {
			ok, total = ok+b.ok, total+b.total
		}
	}
	return ok, total
}
