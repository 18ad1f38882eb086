package httpproxy

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/h2"
	"github.com/trellis-mesh/trellis/internal/proxy/mesh"
	"golang.org/x/net/http2"
)

// ErrorHeader names, on a response the proxy generated itself, what went
// wrong; the name follows Linkerd so existing tooling recognises it.
const ErrorHeader = "l5d-proxy-error"

// UnprocessedHeader marks a proxy's error response to a request that
// reached no application: the upstream could not be connected to (by
// this proxy, or — on an inbound proxy — by it to its application) — or
// that may be repeated all the same: an idempotent request without a body
// whose connection to its upstream (the peer proxy, or on an inbound proxy
// the application) broke before any answer. The
// outbound balance stage sends such a request to another endpoint and
// removes the mark; responses of anything but a peer proxy never carry it
// (the forwarder drops it from them), so an application cannot have a
// request it processed sent again.
const UnprocessedHeader = "Trellis-Proxy-Unprocessed"

// Unprocessed reports whether err means the request never left for its
// upstream — connecting failed, or the mTLS handshake with the peer proxy
// — or its HTTP/2 upstream provably did not process it (refused, beyond
// its GOAWAY, or never sent on a connection that became unusable; RFC
// 9113 §8.7), again after the pool's one retry.
func Unprocessed(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" || errors.Is(err, mesh.ErrHandshake) ||
		errors.Is(err, h2.ErrRefused) || errors.Is(err, h2.ErrConnUnusable)
}

// mayRepeat reports whether the balance stage may send r to another
// endpoint after err: r never left (Unprocessed), or it is an idempotent
// request without a body whose connection broke before any answer — the
// peer proxy or the application died — which RFC 9110 §9.2.2 lets a
// client repeat.
func mayRepeat(r *http.Request, err error) bool {
	return Unprocessed(err) || idempotent(r) && !hasBody(r) && connectionLost(err)
}

// connectionLost reports a connection that broke (net/http's HTTP/2
// transport says so in words).
func connectionLost(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	return errors.Is(err, h2.ErrConnLost)
}

// reasonConnectTimeout: the upstream could not be connected to in time.
const reasonConnectTimeout = "connect timed out"

// reasonUpstreamCancel: the upstream reset the stream with CANCEL — a gRPC
// server does when the call's deadline passed or it was cancelled.
const reasonUpstreamCancel = "upstream cancelled the stream"

// ReasonRateLimited starts the reason of a request a rate limit refused
// (429; gRPC RESOURCE_EXHAUSTED).
const ReasonRateLimited = "rate limited"

// WriteRateLimited answers a request the rate limit by refused: 429 (gRPC
// RESOURCE_EXHAUSTED), with Retry-After in whole seconds.
func WriteRateLimited(w http.ResponseWriter, r *http.Request, retry time.Duration, by string) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	WriteError(w, r, http.StatusTooManyRequests, ReasonRateLimited+" by "+by)
}

// Reasons of the client's faults, answered with a 4xx.
const (
	reasonClientBody       = "request body broken by the client"
	reasonHeaderListTooBig = "request header list larger than the upstream accepts"
)

// UpstreamError maps a failure to reach or hear from the upstream to the
// status a client can act on and a short reason.
func UpstreamError(err error) (status int, reason string) {
	var oe *net.OpError
	var cbe *ClientBodyError
	var se http2.StreamError
	dial := errors.As(err, &oe) && oe.Op == "dial"
	switch {
	case errors.As(err, &cbe):
		return http.StatusBadRequest, reasonClientBody
	case errors.Is(err, h2.ErrHeaderListTooLarge):
		return http.StatusRequestHeaderFieldsTooLarge, reasonHeaderListTooBig
	case errors.Is(err, mesh.ErrHandshake):
		return http.StatusBadGateway, "mTLS handshake with the peer proxy failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return http.StatusBadGateway, "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return http.StatusServiceUnavailable, "host unreachable"
	case dial && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err)):
		return http.StatusGatewayTimeout, reasonConnectTimeout
	case isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "response timed out"
	case errors.Is(err, syscall.ECONNRESET):
		return http.StatusBadGateway, "connection reset by upstream"
	case errors.As(err, &se) && se.Code == http2.ErrCodeCancel:
		return http.StatusBadGateway, reasonUpstreamCancel
	case errors.Is(err, errResponseHeadTooLarge):
		return http.StatusBadGateway, "response head too large"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return http.StatusBadGateway, "connection closed by upstream"
	case dial:
		return http.StatusBadGateway, "connect failed"
	}
	return http.StatusBadGateway, "upstream failed"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// WriteError answers a request the proxy could not forward. gRPC clients get
// a gRPC status (UNAVAILABLE; DEADLINE_EXCEEDED for timeouts, UNIMPLEMENTED
// when no route matches) so their libraries report it properly; everyone
// else gets the HTTP status.
func WriteError(w http.ResponseWriter, r *http.Request, status int, reason string) {
	h := w.Header()
	h.Set(ErrorHeader, reason)
	if IsGRPC(r) {
		code := grpcCode(status, reason)
		if reason == reasonUpstreamCancel {
			// As gRPC maps RST_STREAM(CANCEL): CANCELLED — or, for a call
			// with a deadline, which is what a server cancels on,
			// DEADLINE_EXCEEDED.
			code = 1
			if r.Header.Get("Grpc-Timeout") != "" {
				code = 4
			}
		}
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(code))
		h.Set("Grpc-Message", "proxy: "+reason)
		w.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(reason)+1))
	w.WriteHeader(status)
	w.Write([]byte(reason + "\n"))
}

// grpcCode is the gRPC status for a proxy-generated HTTP status, after
// gRPC's own HTTP-to-status mapping: UNAVAILABLE (retryable) for what an
// upstream may recover from, DEADLINE_EXCEEDED only when a timeout ran out
// on the request — not for a connection that could not be opened in time.
func grpcCode(status int, reason string) int {
	if reason == reasonClientBody || reason == reasonHeaderListTooBig {
		return 3 // INVALID_ARGUMENT: the client's, never retried
	}
	if strings.HasPrefix(reason, ReasonRateLimited) {
		return 8 // RESOURCE_EXHAUSTED
	}
	switch status {
	case http.StatusGatewayTimeout:
		if reason == reasonConnectTimeout {
			return 14 // UNAVAILABLE
		}
		return 4 // DEADLINE_EXCEEDED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// IsGRPC reports whether r is a gRPC request.
func IsGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}
