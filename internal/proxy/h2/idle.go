package h2

import "time"

// idleTimer ends a connection IdleTimeout after its last request ended. It
// is not moved per request: the connection notes when its last request
// ended (since), and when the timer fires early it counts down what is
// left, or the whole timeout again while requests run. Guarded by its
// connection's mutex; the zero value is unarmed.
type idleTimer struct {
	t     *time.Timer
	since time.Time
}

// start notes that the connection is idle from now and, the first time,
// arms the timer to call f after timeout.
func (it *idleTimer) start(timeout time.Duration, f func()) {
	it.since = time.Now()
	if it.t == nil {
		it.t = time.AfterFunc(timeout, f)
	}
}

// mark notes that the connection is idle from now, if the timer is armed.
func (it *idleTimer) mark() {
	if it.t != nil {
		it.since = time.Now()
	}
}

// again is called when the timer fired: it re-arms the timer and reports
// true unless the connection has been idle (not busy) for the timeout.
func (it *idleTimer) again(busy bool, timeout time.Duration) bool {
	wait := timeout
	if !busy {
		wait -= time.Since(it.since)
	}
	if wait <= 0 {
		return false
	}
	it.t.Reset(wait)
	return true
}

// stop disarms the timer for good.
func (it *idleTimer) stop() {
	if it.t != nil {
		it.t.Stop()
	}
}
