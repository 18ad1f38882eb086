package balance

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Defaults, as Linkerd's.
const (
	DefaultRTT         = 30 * time.Millisecond
	DefaultDecay       = 10 * time.Second
	DefaultConsecutive = 7
	DefaultBackoffMin  = time.Second
	DefaultBackoffMax  = time.Minute
)

// Accrual modes.
const (
	Consecutive = "consecutive"
	SuccessRate = "success-rate"
	Off         = "off"
)

// Config tunes balancing and failure accrual. The zero value is the defaults.
type Config struct {
	// DefaultRTT is a new endpoint's latency estimate.
	DefaultRTT time.Duration
	// Decay is how fast the peak-EWMA estimate forgets: a sample's weight
	// falls by e every Decay.
	Decay time.Duration
	// Accrual decides when an endpoint is ejected.
	Accrual Accrual
	// Failures says which responses count as failures.
	Failures Classes
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Accrual is failure accrual (circuit breaking) per endpoint: in
// consecutive mode an endpoint is ejected after Consecutive failures in a
// row; in success-rate mode when, over Window and with at least
// MinRequests, fewer than Threshold of its responses succeeded. An ejected
// endpoint waits an exponential, jittered backoff between BackoffMin and
// BackoffMax, then gets one probation request: success readmits it,
// failure ejects it again for longer.
type Accrual struct {
	Mode        string
	Consecutive int
	Window      time.Duration
	MinRequests int
	Threshold   float64
	BackoffMin  time.Duration
	BackoffMax  time.Duration
}

// Classes are the responses failure accrual counts as failures (besides
// broken responses, always failures): HTTP statuses and gRPC codes.
type Classes struct {
	HTTP map[int]bool
	GRPC map[int]bool
}

// DefaultFailures: 5xx; gRPC DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS.
func DefaultFailures() Classes {
	c := Classes{HTTP: map[int]bool{}, GRPC: map[int]bool{4: true, 13: true, 14: true, 15: true}}
	for s := 500; s <= 599; s++ {
		c.HTTP[s] = true
	}
	return c
}

// Classify turns a response into an outcome: a failure by c; 429 and
// RESOURCE_EXHAUSTED mean overloaded. grpc is -1 without a gRPC status;
// status 0 means nothing was answered, because of gaveUp (the request's
// context error): a timeout is a failure, a cancellation says nothing.
func (c Classes) Classify(completed bool, status, grpc int, gaveUp error) Outcome {
	switch {
	case !completed || c.HTTP[status]:
		return Failure
	case status == 0 && errors.Is(gaveUp, context.DeadlineExceeded):
		return Failure
	case status == 0:
		return Abandoned
	case grpc > 0 && c.GRPC[grpc]:
		return Failure
	case status == 429 || grpc == 8:
		return Overloaded
	}
	return Success
}

// FailureClasses are the configured failure classes, or the defaults.
func (c Config) FailureClasses() Classes {
	if c.Failures.HTTP == nil && c.Failures.GRPC == nil {
		return DefaultFailures()
	}
	return c.Failures
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.DefaultRTT <= 0 {
		c.DefaultRTT = DefaultRTT
	}
	if c.Decay <= 0 {
		c.Decay = DefaultDecay
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Failures = c.FailureClasses()
	a := &c.Accrual
	if a.Mode == "" {
		a.Mode = Consecutive
	}
	if a.Consecutive <= 0 {
		a.Consecutive = DefaultConsecutive
	}
	if a.Window <= 0 {
		a.Window = 30 * time.Second
	}
	if a.MinRequests <= 0 {
		a.MinRequests = 20
	}
	if a.Threshold <= 0 {
		a.Threshold = 0.8
	}
	if a.BackoffMin <= 0 {
		a.BackoffMin = DefaultBackoffMin
	}
	if a.BackoffMax <= 0 {
		a.BackoffMax = DefaultBackoffMax
	}
	return c
}

// Validate names the first bad setting.
func (c Config) Validate() error {
	a := c.Accrual
	switch a.Mode {
	case "", Consecutive, SuccessRate, Off:
	default:
		return fmt.Errorf("failure accrual mode %q: must be %s, %s or %s", a.Mode, Consecutive, SuccessRate, Off)
	}
	if a.Threshold < 0 || a.Threshold > 1 {
		return fmt.Errorf("failure accrual threshold %v: must be between 0 and 1", a.Threshold)
	}
	if a.BackoffMax > 0 && a.BackoffMin > a.BackoffMax {
		return errors.New("failure accrual: the minimum backoff exceeds the maximum")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"default RTT", c.DefaultRTT}, {"decay", c.Decay}, {"window", a.Window}, {"minimum backoff", a.BackoffMin}, {"maximum backoff", a.BackoffMax}} {
		if d.v < 0 {
			return fmt.Errorf("balancing %s %v: must not be negative", d.name, d.v)
		}
	}
	if a.Window > maxWindow {
		return fmt.Errorf("failure accrual window %v: at most %v", a.Window, maxWindow)
	}
	if a.Consecutive < 0 || a.MinRequests < 0 {
		return errors.New("failure accrual counts must not be negative")
	}
	return nil
}
