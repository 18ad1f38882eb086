package outbound

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/route"
)

// maxRetryBody is the largest request body buffered so the request can be
// retried; larger (or unknown-length, longer) bodies are not retried.
const maxRetryBody = 64 << 10

type serviceKey struct{}

// withService tells the balance stage which service to pick an endpoint of.
func withService(ctx context.Context, s *discover.Service) context.Context {
	return context.WithValue(ctx, serviceKey{}, s)
}

func serviceFrom(ctx context.Context) *discover.Service {
	s, _ := ctx.Value(serviceKey{}).(*discover.Service)
	return s
}

// routes is the route stage: a request to a service with routes is
// matched to a rule (404 when none matches), redirected or sent to the
// rule's weighted backend with its header modifiers, within its timeouts,
// and retried by its policy within its budget.
func routes(res *discover.Resolver) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		if res == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			svc := res.Resolve(r.Context(), httpproxy.Target(r.Context()))
			if svc == nil {
				next.ServeHTTP(w, r)
				return
			}
			table := svc.Routes()
			if table == nil {
				next.ServeHTTP(w, r.WithContext(withService(r.Context(), svc)))
				return
			}
			rule, prefix := table.Match(r)
			if rule == nil {
				httpproxy.WriteError(w, r, http.StatusNotFound, "no route matches the request")
				return
			}
			if rule.Redirect != nil {
				redirect(w, r, rule.Redirect, prefix)
				return
			}
			backend := svc
			authority, ok := rule.Backend()
			switch {
			case !ok:
				httpproxy.WriteError(w, r, http.StatusInternalServerError, "the route's backends all have weight 0")
				return
			case authority != "":
				if backend = res.Resolve(r.Context(), authority); backend == nil {
					httpproxy.WriteError(w, r, http.StatusServiceUnavailable, "backend "+authority+" is unknown")
					return
				}
			}
			rule.RequestHeaders.Apply(r.Header)
			ctx := httpproxy.WithRoute(withService(r.Context(), backend), rule.Route, rule.Kind)
			serveRule(next, w, r.WithContext(ctx), rule)
		})
	}
}

// serveRule sends r (already aimed at its backend) within the rule's
// timeouts, retrying as its policy and budget allow.
func serveRule(next http.Handler, w http.ResponseWriter, r *http.Request, rule *route.Rule) {
	ctx := r.Context()
	if rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.RequestTimeout)
		defer cancel()
	}
	policy := rule.Retry.FromRequest(r.Header)
	var body []byte
	retryable := policy != nil && policy.Attempts > 0 && r.Header.Get("Upgrade") == "" && r.Method != http.MethodConnect
	if retryable {
		var ok bool
		if body, ok = bufferBody(r); !ok {
			retryable = false
		}
	}
	if policy != nil && policy.Budget != nil {
		policy.Budget.Deposit()
	}
	perTry := rule.BackendTimeout
	if policy != nil && policy.PerTry > 0 {
		perTry = policy.PerTry
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attempt > 0 {
			actx = asRetry(ctx)
		}
		if perTry > 0 {
			actx, cancel = context.WithTimeout(actx, perTry)
		}
		req := r.WithContext(actx)
		if retryable {
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.ContentLength = int64(len(body))
		}
		mayRetry := retryable && attempt < policy.Attempts
		hw := &holdWriter{w: w, modify: rule.ResponseHeaders, header: http.Header{}}
		if mayRetry {
			hw.decide = func(status, grpc int) bool {
				return ctx.Err() == nil && !failingFast(hw.header) && policy.Retryable(status, grpc) &&
					(policy.Budget == nil || policy.Budget.Withdraw())
			}
		}
		next.ServeHTTP(hw, req)
		if !hw.written && errors.Is(actx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil {
			// The forwarder gives up silently on a cancelled request (the
			// client left); here the route's timeout did it: answer 504,
			// which the policy may retry.
			reason := "request timed out (route timeout)"
			if ctx.Err() == nil {
				reason = "backend request timed out (route timeout)"
			}
			httpproxy.WriteError(hw, req, http.StatusGatewayTimeout, reason)
		}
		cancel()
		if !hw.retry {
			hw.finish()
			return
		}
		if policy.Backoff > 0 {
			t := time.NewTimer(policy.Backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// bufferBody reads a body small enough to replay; false if it is larger
// (the part read is put back in front of the rest).
func bufferBody(r *http.Request) ([]byte, bool) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true
	}
	if r.ContentLength > maxRetryBody {
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxRetryBody+1))
	if err != nil || len(b) > maxRetryBody {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
		return nil, false
	}
	r.Body.Close()
	return b, true
}

// holdWriter stands between an attempt and the client: at the response
// head it decides whether the attempt is retried — then the attempt's
// response is dropped — or passes the response through, with the rule's
// response header modifiers applied.
type holdWriter struct {
	w       http.ResponseWriter
	header  http.Header
	modify  *route.HeaderModifier
	decide  func(status, grpc int) bool // nil: never retry
	retry   bool
	written bool
}

func (h *holdWriter) Header() http.Header {
	if h.written && !h.retry {
		return h.w.Header()
	}
	return h.header
}

func (h *holdWriter) WriteHeader(code int) {
	if h.written {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// 1xx: pass through when this attempt cannot be retried.
		if h.decide == nil {
			copyHeader(h.w.Header(), h.header)
			h.w.WriteHeader(code)
		}
		return
	}
	h.written = true
	if h.decide != nil && h.decide(code, grpcStatus(h.header)) {
		h.retry = true
		return
	}
	dst := h.w.Header()
	copyHeader(dst, h.header)
	h.modify.Apply(dst)
	h.w.WriteHeader(code)
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	if h.retry {
		return len(p), nil
	}
	return h.w.Write(p)
}

// Flush passes flushes through once the response is the client's.
func (h *holdWriter) Flush() {
	if h.written && !h.retry {
		http.NewResponseController(h.w).Flush()
	}
}

// Unwrap lets http.ResponseController reach Hijack (upgrades are never retried).
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.w }

// finish completes a response that wrote nothing (an empty 200), and
// moves trailers set after the head into the client's header map.
func (h *holdWriter) finish() {
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	for k, vs := range h.header {
		if _, ok := h.w.Header()[k]; !ok || strings.HasPrefix(k, http.TrailerPrefix) {
			h.w.Header()[k] = vs
		}
	}
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = vs
	}
}

func grpcStatus(h http.Header) int {
	v := h.Get("Grpc-Status")
	if v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// redirect answers with the rule's redirect; prefix is the path prefix
// the request matched (for ReplacePrefixMatch).
func redirect(w http.ResponseWriter, r *http.Request, rd *destinationv1.Redirect, prefix string) {
	u := *r.URL
	u.Scheme = "http"
	if rd.Scheme != "" {
		u.Scheme = rd.Scheme
	}
	// Without a port or scheme the request's own port stays (a mesh has no
	// listener port to fall back to); a scheme alone implies its own port.
	host, port := r.Host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		host, port = h, p
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	switch {
	case rd.Port != 0:
		port = strconv.Itoa(int(rd.Port))
	case rd.Scheme != "":
		port = ""
	}
	u.Host = host
	if port != "" {
		u.Host = net.JoinHostPort(host, port)
	}
	switch {
	case rd.Path != "":
		u.Path, u.RawPath = rd.Path, ""
	case rd.Prefix != "" && prefix != "":
		rest := strings.TrimPrefix(u.Path, strings.TrimSuffix(prefix, "/"))
		u.Path, u.RawPath = strings.TrimSuffix(rd.Prefix, "/")+rest, ""
		if u.Path == "" {
			u.Path = "/"
		}
	}
	code := int(rd.StatusCode)
	if code == 0 {
		code = http.StatusFound
	}
	http.Redirect(w, r, u.String(), code)
}
