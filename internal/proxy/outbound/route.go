package outbound

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
	"github.com/trellis-mesh/trellis/internal/proxy/ratelimit"
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

type routeSeriesKey struct{}

// withRouteSeries carries the matched route's series to the attempts,
// which count retries and timeouts on it.
func withRouteSeries(ctx context.Context, s *metrics.Route) context.Context {
	return context.WithValue(ctx, routeSeriesKey{}, s)
}

// routeSeries is the request's route series; nil (which counts nothing)
// without HTTP metrics.
func routeSeries(ctx context.Context) *metrics.Route {
	s, _ := ctx.Value(routeSeriesKey{}).(*metrics.Route)
	return s
}

func serviceFrom(ctx context.Context) *discover.Service {
	s, _ := ctx.Value(serviceKey{}).(*discover.Service)
	return s
}

// maxMirrors bounds mirrored requests in flight: beyond it, copies are
// dropped, so a slow shadow never holds up the primary.
const maxMirrors = 256

// router is the route stage: a request to a service with routes is
// matched to a rule (404 when none matches), redirected or sent to the
// rule's weighted backend with its header modifiers and faults, within
// its timeouts, hedged and retried by its policy within its budget, and
// copied to its mirror.
type router struct {
	res       *discover.Resolver
	next      http.Handler
	mirrors   chan struct{}
	decisions *explain.Log
	reg       *metrics.Registry
	// limited counts the requests the services' client limits refused,
	// a series per limit and service (limitedKey -> *atomic.Uint64).
	limited       *metrics.Counters
	limitedSeries sync.Map
}

func routes(res *discover.Resolver, reg *metrics.Registry, decisions *explain.Log) httpproxy.Layer {
	return func(next http.Handler) http.Handler {
		if res == nil {
			return next
		}
		rt := &router{res: res, next: next, mirrors: make(chan struct{}, maxMirrors), decisions: decisions, reg: reg}
		if reg != nil {
			rt.limited = reg.Counters("outbound_http_local_ratelimit_total", "Total count of outbound HTTP requests a service's client rate limit refused at this proxy (429).")
		}
		return rt
	}
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	svc := rt.res.Resolve(r.Context(), httpproxy.Target(r.Context()))
	if svc == nil {
		rt.next.ServeHTTP(w, r)
		return
	}
	d := &explain.Decision{Time: time.Now(), Direction: "outbound", Method: explain.Clip(r.Method), Authority: explain.Clip(r.Host), Path: explain.Clip(r.URL.Path)}
	defer rt.decisions.Record(d)
	ctx := explain.With(r.Context(), d)
	var rule *route.Rule
	prefix := ""
	table := svc.Routes()
	if table != nil {
		rule, prefix = table.Match(r)
	}
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lim := svc.RateLimit(); lim != nil {
			if ok, retry := lim.Take(ratelimit.Now()); !ok {
				rt.refuse(w, r, svc, lim, retry, d)
				return
			}
		}
		switch {
		case table == nil:
			rt.next.ServeHTTP(w, r.WithContext(withService(r.Context(), svc)))
		case rule == nil:
			d.Status = http.StatusNotFound
			httpproxy.WriteError(w, r, http.StatusNotFound, "no route matches the request")
		default:
			rt.serveRoute(w, r, svc, rule, prefix)
		}
	})
	if rt.reg == nil { // no HTTP metrics
		serve(w, r.WithContext(ctx))
		return
	}
	labels := metrics.RouteLabels{Authority: r.Host} // the default route
	if set := svc.Set(); set != nil {
		labels.Service = set.MetricLabels
	}
	if rule != nil {
		labels.RouteName, labels.RouteKind = rule.Route, rule.Kind
	}
	series := rt.reg.Route(labels)
	series.Request()
	httpproxy.Observe(serve, w, r.WithContext(withRouteSeries(ctx, series)), func(o httpproxy.Outcome) {
		series.Response(o.Status, o.GRPCStatus, o.Failed(), o.Latency)
	})
}

// serveRoute sends r by the rule it matched: a redirect, or to the rule's
// backend after its faults and header changes.
func (rt *router) serveRoute(w http.ResponseWriter, r *http.Request, svc *discover.Service, rule *route.Rule, prefix string) {
	ctx := r.Context()
	d := explain.From(ctx)
	d.Route, d.RouteKind, d.Rule = rule.Route, rule.Kind, rule.Name
	if rule.Redirect != nil {
		d.Status = int(rule.Redirect.StatusCode)
		redirect(w, r, rule.Redirect, prefix)
		return
	}
	backend := svc
	authority, ok := rule.Backend()
	d.Backend = authority
	switch {
	case !ok:
		httpproxy.WriteError(w, r, http.StatusInternalServerError, "the route's backends all have weight 0")
		return
	case authority != "":
		if backend = rt.res.Resolve(r.Context(), authority); backend == nil {
			httpproxy.WriteError(w, r, http.StatusServiceUnavailable, "backend "+authority+" is unknown")
			return
		}
	}
	if f := rule.Fault; f != nil {
		if delay := f.Delayed(); delay > 0 && !sleep(ctx, delay) {
			return
		}
		if f.Abort() {
			d.Status, d.FailFast = f.AbortStatus, "fault injected by the route"
			httpproxy.WriteError(w, r, f.AbortStatus, "fault injected by the route")
			return
		}
	}
	rule.RequestHeaders.Apply(r.Header)
	rt.serveRule(w, r.WithContext(httpproxy.WithRoute(withService(ctx, backend), rule.Route, rule.Kind)), rule)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// serveRule sends r (already aimed at its backend) within the rule's
// timeouts, hedging and retrying as its policy and budget allow.
func (rt *router) serveRule(w http.ResponseWriter, r *http.Request, rule *route.Rule) {
	ctx := r.Context()
	if rule.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, rule.RequestTimeout)
		defer cancel()
	}
	if t, ok := httpproxy.GRPCTimeout(r.Header); ok {
		// The call's own deadline: no attempt outlives it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	policy := rule.Retry.FromRequest(r.Header)
	retries := 0
	if policy != nil {
		retries = policy.Attempts
	}
	body := newReplay(r, retries > 0 || rule.Hedge != nil || rule.Mirror != nil)
	budget := rule.HedgeBudget
	if policy != nil && policy.Budget != nil {
		budget = policy.Budget
	}
	if budget != nil {
		budget.Deposit()
	}
	if body.whole && rule.Mirrored() {
		rt.mirror(r, rule, body.bytes())
	}
	perTry := rule.BackendTimeout
	if policy != nil && policy.PerTry > 0 {
		perTry = policy.PerTry
	}
	withdraw := func() bool { return budget == nil || budget.Withdraw() }
	start := time.Now()
	for n := 0; ; n++ {
		a := &attempt{rt: rt, w: w, r: r, ctx: ctx, body: body, perTry: perTry, modify: rule.ResponseHeaders}
		if n < retries {
			a.decide = func(status, grpc int, h http.Header) bool {
				return ctx.Err() == nil && body.replayable() && !failingFast(h) && policy.Retryable(status, grpc) && withdraw()
			}
		}
		var hedge time.Duration
		if rule.Hedge != nil && n == 0 && body.whole {
			hedge = rule.Hedge.Delay()
		}
		retry := a.run(n > 0, hedge, withdraw)
		if rule.Hedge != nil && !retry {
			rule.Hedge.Observe(time.Since(start))
		}
		if !retry {
			return
		}
		if policy.Backoff > 0 && !sleep(ctx, policy.Backoff) {
			if r.Context().Err() == nil { // the route's deadline, not the client, ended it
				routeSeries(r.Context()).Timeout()
				httpproxy.WriteError(w, r, http.StatusGatewayTimeout, "request timed out (route timeout)")
			}
			return
		}
	}
}

// replay is a request body kept for sending again: read whole up front
// when its length is known and small (hedges and mirrors need that), else
// recorded while the first attempt streams it, so a retry can replay it
// if it turned out small and complete.
type replay struct {
	r     *http.Request
	whole bool // buf holds the whole body (or there is none)
	buf   []byte
	rec   *recorder // streaming bodies
}

func newReplay(r *http.Request, wanted bool) *replay {
	b := &replay{r: r}
	switch {
	case !wanted || r.Header.Get("Upgrade") != "" || r.Method == http.MethodConnect:
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
		b.whole = true
	case r.ContentLength > 0 && r.ContentLength <= maxRetryBody && !strings.EqualFold(r.Header.Get("Expect"), "100-continue"):
		// (A client that asked to be told to go on is told by the upstream.)
		buf, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		if err == nil && int64(len(buf)) == r.ContentLength {
			b.whole, b.buf = true, buf
		} else {
			// A short read: what was read goes first, the rest (and the error) after.
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		}
	default: // streamed, or too long to hold: recorded while it streams
		b.rec = &recorder{body: r.Body}
	}
	return b
}

// bytes is the whole body (whole only).
func (b *replay) bytes() []byte { return b.buf }

// replayable reports whether the body can be sent again.
func (b *replay) replayable() bool { return b.whole || b.rec != nil && b.rec.complete() }

// next is the body for an attempt: the first attempt of a streaming body
// reads (and records) the client's; others replay.
func (b *replay) next(first bool) (io.ReadCloser, int64) {
	switch {
	case b.whole && len(b.buf) == 0:
		return http.NoBody, 0 // no body: not one of unknown length
	case b.whole:
		return io.NopCloser(bytes.NewReader(b.buf)), int64(len(b.buf))
	case b.rec != nil && first:
		return b.rec, -1
	case b.rec != nil:
		data := b.rec.data()
		return io.NopCloser(bytes.NewReader(data)), int64(len(data))
	}
	return b.r.Body, b.r.ContentLength
}

// recorder passes a streaming body through, keeping a copy of up to
// maxRetryBody bytes.
type recorder struct {
	body     io.ReadCloser
	mu       sync.Mutex
	buf      []byte
	read     bool // a Read has begun
	overflow bool
	eof      bool
}

func (rc *recorder) Read(p []byte) (int, error) {
	rc.mu.Lock()
	rc.read = true
	rc.mu.Unlock()
	n, err := rc.body.Read(p)
	rc.mu.Lock()
	if !rc.overflow {
		if len(rc.buf)+n > maxRetryBody {
			rc.overflow, rc.buf = true, nil
		} else {
			rc.buf = append(rc.buf, p[:n]...)
		}
	}
	if err == io.EOF {
		rc.eof = true
	}
	rc.mu.Unlock()
	return n, err
}

func (rc *recorder) Close() error { return rc.body.Close() }

func (rc *recorder) complete() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.eof && !rc.overflow
}

// untouched reports whether nothing has read the body yet.
func (rc *recorder) untouched() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return !rc.read
}

func (rc *recorder) data() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.buf
}

// attempt is one try of a request, possibly raced by a hedge.
type attempt struct {
	rt      *router
	w       http.ResponseWriter
	r       *http.Request
	ctx     context.Context
	body    *replay
	perTry  time.Duration
	modify  *route.HeaderModifier
	decide  func(status, grpc int, h http.Header) bool
	racing  bool
	mu      sync.Mutex
	claimed *holdWriter // the racer whose response goes to the client
}

// run sends the attempt; with hedge > 0, a second racer (withdrawn from
// the budget) starts if the first has no response head by then, and the
// first head that claims the client wins while the other is cancelled. It
// reports whether the winning response is to be retried.
func (a *attempt) run(isRetry bool, hedge time.Duration, withdraw func() bool) bool {
	why := ""
	if isRetry {
		why = "retry"
	}
	if hedge <= 0 { // no race: serve on this goroutine
		hw, serve := a.prepare(why, !isRetry)
		serve()
		return hw.finish()
	}
	a.racing = true
	first := a.start(why, !isRetry)
	t := time.NewTimer(hedge)
	defer t.Stop()
	select {
	case <-first.done:
		return first.finish()
	case <-first.headed:
		<-first.done
		return first.finish()
	case <-t.C:
	}
	if !withdraw() {
		<-first.done
		return first.finish()
	}
	second := a.start("hedge", false)
	// The winner is the racer that claimed the client; a racer that ends
	// without claiming leaves the race to the other.
	var winner, loser *holdWriter
	firstDone, secondDone := first.done, second.done
	for winner == nil {
		select {
		case <-first.headed:
			winner, loser = first, second
		case <-second.headed:
			winner, loser = second, first
		case <-firstDone:
			firstDone = nil
		case <-secondDone:
			secondDone = nil
		}
		if winner == nil && firstDone == nil && secondDone == nil {
			winner, loser = first, second
			if a.owner() == second {
				winner, loser = second, first
			}
		}
	}
	loser.cancel()
	<-loser.done
	<-winner.done
	return winner.finish()
}

func (a *attempt) owner() *holdWriter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.claimed
}

// start runs one racer of the attempt on its own goroutine.
func (a *attempt) start(why string, first bool) *holdWriter {
	hw, serve := a.prepare(why, first)
	go serve()
	return hw
}

// prepare builds one racer: its writer, and the function that serves it.
// why is why it was sent ("" for a first try, "retry", "hedge"); first
// says it reads the client's own body.
func (a *attempt) prepare(why string, first bool) (*holdWriter, func()) {
	ctx := a.ctx
	if why != "" {
		ctx = explain.As(ctx, why)
		routeSeries(ctx).Retry()
	}
	var cancel context.CancelFunc
	if a.perTry > 0 {
		ctx, cancel = context.WithTimeout(ctx, a.perTry)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	hw := &holdWriter{a: a, why: why, header: http.Header{}, cancel: cancel, done: make(chan struct{}), headed: make(chan struct{})}
	req := a.r.WithContext(ctx)
	req.Body, req.ContentLength = a.body.next(first)
	if deadline, ok := ctx.Deadline(); ok && req.Header.Get("Grpc-Timeout") != "" {
		// Each attempt tells the server the time left to it.
		req.Header = req.Header.Clone()
		req.Header.Set("Grpc-Timeout", httpproxy.FormatGRPCTimeout(time.Until(deadline)))
	}
	return hw, func() {
		defer close(hw.done)
		defer cancel()
		// A racer's panic (ReverseProxy aborts a broken response with
		// http.ErrAbortHandler) must not kill the process from another
		// goroutine: it is kept, and the winner's raised on the handler's.
		// An abort of a response nobody wants (retried, or another racer's
		// won) is what cancelling it does: dropped.
		defer func() {
			if p := recover(); p != nil && !(p == http.ErrAbortHandler && (hw.retry || hw.lost)) {
				hw.panicked = p
			}
		}()
		a.rt.next.ServeHTTP(hw, req)
		if !hw.written && !hw.hijacked && errors.Is(ctx.Err(), context.DeadlineExceeded) && a.r.Context().Err() == nil {
			// The forwarder gives up silently on a cancelled request (the
			// client left); here the route's timeout did it: answer 504,
			// which the policy may retry.
			routeSeries(ctx).Timeout()
			reason := "request timed out (route timeout)"
			if a.ctx.Err() == nil {
				reason = "backend request timed out (route timeout)"
			}
			httpproxy.WriteError(hw, req, http.StatusGatewayTimeout, reason)
		}
	}
}

// claim makes hw the racer whose response goes to the client, unless
// another already is.
func (a *attempt) claim(hw *holdWriter) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.claimed == nil {
		a.claimed = hw
	}
	return a.claimed == hw
}

// mirror sends a copy of r to the rule's mirror backend, on its own, and
// throws the answer away; when too many copies are in flight it drops it.
func (rt *router) mirror(r *http.Request, rule *route.Rule, body []byte) {
	select {
	case rt.mirrors <- struct{}{}:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(explain.With(context.WithoutCancel(r.Context()), nil), 10*time.Second)
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	go func() {
		defer func() { <-rt.mirrors }()
		defer cancel()
		defer func() { recover() }() // a broken shadow response aborts with a panic: drop it
		svc := rt.res.Resolve(ctx, rule.Mirror.Authority)
		if svc == nil {
			return
		}
		rt.next.ServeHTTP(discardWriter{http.Header{}}, req.WithContext(withService(ctx, svc)))
	}()
}

// discardWriter takes a mirrored request's response and drops it.
type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// holdWriter stands between one racer of an attempt and the client: at
// the response head it claims the client (or, if another racer did first,
// drops everything) and decides whether the attempt is retried — then the
// response is dropped and the attempt cancelled — or passes it through,
// with the rule's response header modifiers applied.
type holdWriter struct {
	a        *attempt
	why      string
	header   http.Header
	cancel   context.CancelFunc
	done     chan struct{} // the racer's ServeHTTP returned
	headed   chan struct{} // the racer has claimed the client
	retry    bool
	lost     bool
	written  bool
	hijacked bool
	panicked any
}

func (h *holdWriter) passing() bool { return h.written && !h.retry && !h.lost }

func (h *holdWriter) Header() http.Header {
	if h.passing() {
		return h.a.w.Header()
	}
	return h.header
}

func (h *holdWriter) WriteHeader(code int) {
	if h.written {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// 1xx goes through only when nothing can replace this response.
		if h.a.decide == nil && !h.a.racing {
			copyHeader(h.a.w.Header(), h.header)
			h.a.w.WriteHeader(code)
		}
		return
	}
	h.written = true
	// A hedge that could not even find an endpoint never beats the first try.
	if h.why == "hedge" && failingFast(h.header) {
		h.lost = true
		return
	}
	if !h.a.claim(h) {
		h.lost = true
		return
	}
	defer close(h.headed)
	if h.a.decide != nil && h.a.decide(code, httpproxy.GRPCStatus(h.header), h.header) {
		h.retry = true
		h.cancel() // stop the upstream: its body is not wanted
		return
	}
	dst := h.a.w.Header()
	copyHeader(dst, h.header)
	h.a.modify.Apply(dst)
	h.a.w.WriteHeader(code)
}

func (h *holdWriter) Write(p []byte) (int, error) {
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	if !h.passing() {
		return len(p), nil
	}
	return h.a.w.Write(p)
}

// Flush passes flushes through once the response is the client's.
func (h *holdWriter) Flush() {
	if h.passing() {
		http.NewResponseController(h.a.w).Flush()
	}
}

// Hijack hands the client's connection to an upgrade (never retried or
// hedged: its body is not replayable).
func (h *holdWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.a.w).Hijack()
	if err == nil {
		h.hijacked, h.written = true, true
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach what else the client's writer offers.
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.a.w }

// finish completes the winning racer's response once it is done: it
// re-raises its panic on this goroutine, writes an empty 200 if nothing
// was written, and moves trailers set after the head into the client's
// header map. It reports whether to retry.
func (h *holdWriter) finish() bool {
	if h.panicked != nil {
		panic(h.panicked)
	}
	if h.lost || h.hijacked {
		return false
	}
	if !h.written {
		h.WriteHeader(http.StatusOK)
	}
	if h.retry {
		return true
	}
	// Trailers a forwarder set in the map it held before the head.
	for k, vs := range h.header {
		if _, ok := h.a.w.Header()[k]; !ok || strings.HasPrefix(k, http.TrailerPrefix) {
			h.a.w.Header()[k] = vs
		}
	}
	return false
}

func copyHeader(dst, src http.Header) {
	for k, vs := range src {
		dst[k] = vs
	}
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
