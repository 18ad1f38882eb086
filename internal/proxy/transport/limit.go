package transport

import (
	"net/netip"
	"sync"
)

// Limits bound the connections one listener serves at once: Max in all,
// PerSource from one client address (zero: no bound). A connection over a
// limit is closed as soon as it is accepted, so a flood of idle
// connections from one client can neither exhaust the proxy's file
// descriptors nor crowd out other clients.
type Limits struct {
	Max, PerSource int
}

// Refusal reasons.
const (
	RefusedMax       = "listener_limit"
	RefusedPerSource = "source_limit"
)

// limiter counts one listener's open connections.
type limiter struct {
	Limits
	mu    sync.Mutex
	open  int
	bySrc map[netip.Addr]int
}

func newLimiter(l Limits) *limiter { return &limiter{Limits: l, bySrc: map[netip.Addr]int{}} }

// admit counts a new connection from src, or says which limit refuses it.
func (l *limiter) admit(src netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.Max > 0 && l.open >= l.Max:
		return RefusedMax
	case l.PerSource > 0 && l.bySrc[src] >= l.PerSource:
		return RefusedPerSource
	}
	l.open++
	l.bySrc[src]++
	return ""
}

// release uncounts a connection from src.
func (l *limiter) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySrc[src]--; l.bySrc[src] <= 0 {
		delete(l.bySrc, src)
	}
}
