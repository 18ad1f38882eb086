package balance

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// clock is a fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func setup(n int, a Accrual) (*Balancer, []*Endpoint, *clock) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	b := New(Config{Accrual: a, Now: c.Now})
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = b.NewEndpoint()
	}
	return b, eps, c
}

func pick(t *testing.T, b *Balancer, eps []*Endpoint) int {
	t.Helper()
	i, err := b.Pick(len(eps), func(i int) *Endpoint { return eps[i] })
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func est(e *Endpoint) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Duration(e.estimate(e.cfg.Now()))
}

func TestPeakEWMA(t *testing.T) {
	_, eps, c := setup(1, Accrual{})
	e := eps[0]
	if got := est(e); got != DefaultRTT {
		t.Fatalf("a new endpoint's estimate is %v, want %v", got, DefaultRTT)
	}
	e.Start()
	e.End(200*time.Millisecond, Success)
	if got := est(e); got != 200*time.Millisecond {
		t.Fatalf("a peak is taken at once: %v", got)
	}
	// A fast sample right after barely moves it; one a decay later counts 1-1/e.
	e.Start()
	e.End(10*time.Millisecond, Success)
	if got := est(e); got < 199*time.Millisecond {
		t.Errorf("an immediate lower sample moved the estimate to %v", got)
	}
	c.Advance(DefaultDecay)
	if got, want := est(e), time.Duration(float64(200*time.Millisecond)*math.Exp(-1)); absDiff(got, want) > time.Millisecond {
		t.Errorf("after one decay period the estimate reads %v, want about %v", got, want)
	}
	e.Start()
	e.End(10*time.Millisecond, Success)
	w := math.Exp(-1)
	want := time.Duration(float64(200*time.Millisecond)*w + float64(10*time.Millisecond)*(1-w))
	if got := est(e); absDiff(got, want) > time.Millisecond {
		t.Errorf("after a sample one decay later: %v, want about %v", got, want)
	}
	// Overload (429) makes it look slow without counting as a failure.
	e.Start()
	e.End(time.Millisecond, Overloaded)
	if got := est(e); got < 10*DefaultRTT {
		t.Errorf("after a 429 the estimate is %v; want at least %v", got, 10*DefaultRTT)
	}
	if e.Ejected(c.Now()) {
		t.Error("an overloaded answer ejected the endpoint")
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

// Property: P2C never picks the single most expensive endpoint while
// another is available, whatever the loads.
func TestPickNeverTakesTheUniqueWorst(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 500 {
		n := 2 + r.IntN(8)
		b, eps, _ := setup(n, Accrual{Mode: Off})
		for _, e := range eps {
			e.rtt = float64(time.Duration(1+r.IntN(100)) * time.Millisecond)
			for range r.IntN(5) {
				e.Start()
			}
		}
		worst, second := -1.0, -1.0
		now := b.Now()
		for _, e := range eps {
			c := e.cost(now)
			if c > worst {
				worst, second = c, worst
			} else if c > second {
				second = c
			}
		}
		for range 50 {
			i := pick(t, b, eps)
			if c := eps[i].cost(now); c == worst && worst > second {
				t.Fatalf("trial %d: picked the unique most expensive endpoint (cost %v)", trial, c)
			}
		}
	}
}

// Three endpoints, one 50 ms slower: after warm-up it gets under 10%.
func TestSlowEndpointGetsLittleTraffic(t *testing.T) {
	b, eps, c := setup(3, Accrual{Mode: Off})
	latency := []time.Duration{time.Millisecond, time.Millisecond, 51 * time.Millisecond}
	counts := make([]int, 3)
	for n := range 20000 {
		i := pick(t, b, eps)
		eps[i].Start()
		c.Advance(100 * time.Microsecond) // 10,000 requests a second
		eps[i].End(latency[i], Success)
		if n >= 2000 {
			counts[i]++
		}
	}
	if share := float64(counts[2]) / 18000; share >= 0.10 {
		t.Errorf("the slow endpoint got %.1f%% of requests after warm-up (%v)", 100*share, counts)
	}
}

func TestConsecutiveFailuresEjectAndProbationReadmits(t *testing.T) {
	b, eps, c := setup(2, Accrual{})
	bad := eps[0]
	for range DefaultConsecutive - 1 {
		bad.Start()
		bad.End(time.Millisecond, Failure)
	}
	if bad.Ejected(c.Now()) {
		t.Fatal("ejected before the 7th failure")
	}
	bad.Start()
	bad.End(time.Millisecond, Success) // a success resets the count
	for range DefaultConsecutive {
		bad.Start()
		bad.End(time.Millisecond, Failure)
	}
	if !bad.Ejected(c.Now()) {
		t.Fatal("not ejected after 7 failures in a row")
	}
	for range 100 {
		if pick(t, b, eps) == 0 {
			t.Fatal("picked an ejected endpoint")
		}
	}
	// The first backoff is within [0.5s, 1s]; then one probation request.
	c.Advance(DefaultBackoffMin)
	if bad.Ejected(c.Now()) {
		t.Fatal("still ejected after the first backoff")
	}
	eps[1].ConnectFailed() // make the bad one the only choice
	if i := pick(t, b, eps); i != 0 {
		t.Fatalf("picked %d; want the endpoint on probation", i)
	}
	if _, err := b.Pick(2, func(i int) *Endpoint { return eps[i] }); !errors.Is(err, ErrAllEjected) {
		t.Fatalf("a second request during probation: %v; want ErrAllEjected", err)
	}
	bad.Start()
	c.Advance(time.Millisecond)
	bad.End(time.Millisecond, Failure) // probation fails: out for longer
	c.Advance(DefaultBackoffMin)
	if i, err := b.Pick(2, func(i int) *Endpoint { return eps[i] }); err == nil && i == 0 {
		t.Fatal("a failed probation readmitted after the first backoff")
	}
	c.Advance(2 * DefaultBackoffMin)
	if i := pick(t, b, eps); i != 0 {
		t.Fatalf("picked %d; want the second probation", i)
	}
	bad.Start()
	c.Advance(time.Millisecond)
	bad.End(time.Millisecond, Success)
	if bad.Ejected(c.Now()) || bad.attempts != 0 {
		t.Fatal("a successful probation did not readmit")
	}
}

// Only the probation request settles probation: a request sent before the
// ejection that ends during probation does not, and an abandoned probe
// frees the slot for another.
func TestProbationIsTheProbesAlone(t *testing.T) {
	b, eps, c := setup(1, Accrual{})
	e := eps[0]
	e.Start() // an old request, in flight across the ejection
	e.ConnectFailed()
	c.Advance(DefaultBackoffMin)
	if pick(t, b, eps) != 0 {
		t.Fatal("no probation pick")
	}
	e.Start()
	e.End(2*DefaultBackoffMin, Success) // the old one: sent before the probe
	if !e.OnProbation() {
		t.Fatal("an old request readmitted the endpoint")
	}
	c.Advance(time.Millisecond)
	e.End(time.Millisecond, Abandoned) // the probe, given up by its caller
	if _, err := b.Pick(1, func(int) *Endpoint { return e }); err != nil {
		t.Fatalf("after an abandoned probe another may probe: %v", err)
	}
}

func TestBackoffIsCapped(t *testing.T) {
	_, eps, c := setup(1, Accrual{})
	e := eps[0]
	for range 20 {
		e.ConnectFailed()
		e.mu.Lock()
		left := e.ejected.Sub(c.Now())
		e.mu.Unlock()
		if left > DefaultBackoffMax || left < DefaultBackoffMin/2 {
			t.Fatalf("backoff %v outside [%v, %v]", left, DefaultBackoffMin/2, DefaultBackoffMax)
		}
	}
}

func TestSuccessRateAccrual(t *testing.T) {
	for _, tc := range []struct {
		okPercent int
		ejected   bool
	}{{90, false}, {70, true}} {
		_, eps, c := setup(1, Accrual{Mode: SuccessRate, MinRequests: 20, Threshold: 0.8, Window: 10 * time.Second})
		e := eps[0]
		for i := range 100 {
			c.Advance(50 * time.Millisecond)
			e.Start()
			o := Success
			if i%10 >= tc.okPercent/10 {
				o = Failure
			}
			e.End(time.Millisecond, o)
			if e.Ejected(c.Now()) {
				break
			}
		}
		if got := e.Ejected(c.Now()); got != tc.ejected {
			t.Errorf("%d%% success: ejected %v, want %v", tc.okPercent, got, tc.ejected)
		}
	}
}

func TestPickErrors(t *testing.T) {
	b, eps, _ := setup(2, Accrual{})
	if _, err := b.Pick(0, nil); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("no endpoints: %v", err)
	}
	eps[0].ConnectFailed()
	eps[1].ConnectFailed()
	if _, err := b.Pick(2, func(i int) *Endpoint { return eps[i] }); !errors.Is(err, ErrAllEjected) {
		t.Errorf("all ejected: %v", err)
	}
	if err := (Config{Accrual: Accrual{Mode: "sometimes"}}).Validate(); err == nil {
		t.Error("an unknown accrual mode was accepted")
	}
}

// Picks, outcomes and connect failures from many goroutines (run with -race).
func TestConcurrentUse(t *testing.T) {
	b := New(Config{})
	eps := make([]*Endpoint, 5)
	for i := range eps {
		eps[i] = b.NewEndpoint()
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for n := range 2000 {
				i, err := b.Pick(len(eps), func(i int) *Endpoint { return eps[i] })
				if err != nil {
					continue
				}
				if i < 0 || i >= len(eps) {
					t.Errorf("Pick = %d", i)
					return
				}
				eps[i].Start()
				o := Success
				if (n+g)%5 == 0 {
					o = Failure
				}
				eps[i].End(time.Duration(n%7)*time.Millisecond, o)
				if n%500 == 0 {
					eps[i].ConnectFailed()
				}
			}
		})
	}
	wg.Wait()
	for i, e := range eps {
		if e.Pending() != 0 {
			t.Errorf("endpoint %d: %d requests still pending", i, e.Pending())
		}
	}
}

func TestClassify(t *testing.T) {
	d := DefaultFailures()
	for _, tc := range []struct {
		completed    bool
		status, grpc int
		want         Outcome
	}{
		{true, 200, -1, Success}, {true, 404, -1, Success}, {true, 503, -1, Failure}, {false, 200, -1, Failure},
		{true, 429, -1, Overloaded}, {true, 200, 14, Failure}, {true, 200, 5, Success}, {true, 200, 8, Overloaded},
	} {
		if got := d.Classify(tc.completed, tc.status, tc.grpc, nil); got != tc.want {
			t.Errorf("Classify(%v, %d, %d) = %v, want %v", tc.completed, tc.status, tc.grpc, got, tc.want)
		}
	}
	if d.Classify(true, 0, -1, context.DeadlineExceeded) != Failure || d.Classify(true, 0, -1, context.Canceled) != Abandoned {
		t.Error("no answer: a timeout is a failure, a cancellation is abandoned")
	}
	only502 := Classes{HTTP: map[int]bool{502: true}, GRPC: map[int]bool{}}
	if only502.Classify(true, 500, -1, nil) != Success || only502.Classify(true, 502, -1, nil) != Failure || only502.Classify(true, 200, 14, nil) != Success {
		t.Error("configured classes were not used")
	}
}
