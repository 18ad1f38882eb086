package httpproxy

import (
	"net/http"
	"strconv"
	"time"
)

// A gRPC call's deadline travels in grpc-timeout: at most 8 digits and a
// unit (H, M, S, m, u, n), the time the client will wait from sending the
// request. The proxy honours it (a route's timeouts never outlast it), sends
// each attempt the time left of it, and does not blame an endpoint for a
// call whose own deadline ran out.

// GRPCTimeout is the request's grpc-timeout, if it has a valid one.
func GRPCTimeout(h http.Header) (time.Duration, bool) {
	v := h.Get("Grpc-Timeout")
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return 0, false
	}
	if n > int64(1<<63-1)/int64(unit) {
		return 1<<63 - 1, true
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout writes d as a grpc-timeout value in the finest unit
// whose count fits in 8 digits.
func FormatGRPCTimeout(d time.Duration) string {
	d = max(d, 0)
	for _, u := range []struct {
		unit time.Duration
		c    string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := (d + u.unit - 1) / u.unit; n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + u.c
		}
	}
	return strconv.FormatInt(int64(min(d/time.Hour, 99999999)), 10) + "H"
}

// CallerDeadlinePassed reports whether a gRPC call that took latency ran
// past the deadline its client sent (grpc-timeout): its DEADLINE_EXCEEDED
// is the caller's budget running out, not the endpoint failing.
func CallerDeadlinePassed(r *http.Request, latency time.Duration) bool {
	t, ok := GRPCTimeout(r.Header)
	return ok && latency >= t*9/10
}
