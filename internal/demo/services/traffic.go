package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Limits of the traffic generator.
const (
	maxRPS         = 10000
	requestTimeout = 5 * time.Second
	// maxSamples bounds the latencies kept per report window; beyond it
	// they are sampled, so a long window at a high rate stays small.
	maxSamples = 10000
	// maxBody bounds how much of a response the generator reads.
	maxBody = 1 << 20
)

// TrafficConfig tunes the traffic generator.
type TrafficConfig struct {
	// WebURL is web's base URL, such as "http://127.0.0.1:8080".
	WebURL string
	// RPS is how many requests to send per second, 1 to 10000.
	RPS int
	// ReportEvery is how often to print a summary line to Out.
	ReportEvery time.Duration
	// Out receives the summary lines; nil discards them.
	Out io.Writer
	// MaxInFlight bounds the requests waiting for an answer; when that
	// many are, the generator skips ticks instead of queueing. Zero means
	// RPS, at least 4 and at most 256.
	MaxInFlight int
}

// Check reports whether the configuration is usable.
func (c TrafficConfig) Check() error {
	if err := checkWebURL(c.WebURL); err != nil {
		return fmt.Errorf("web URL: %w", err)
	}
	if err := checkRPS(c.RPS); err != nil {
		return fmt.Errorf("rps: %w", err)
	}
	if err := checkReportEvery(c.ReportEvery); err != nil {
		return fmt.Errorf("report interval: %w", err)
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("max in flight: %d is negative", c.MaxInFlight)
	}
	return nil
}

// checkWebURL reports whether raw is an http(s) URL with a host.
func checkWebURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", raw)
	}
	return nil
}

func checkRPS(n int) error {
	if n < 1 || n > maxRPS {
		return fmt.Errorf("%d is not between 1 and %d", n, maxRPS)
	}
	return nil
}

func checkReportEvery(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%v is not positive", d)
	}
	return nil
}

func (c TrafficConfig) inFlight() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	return min(max(c.RPS, 4), 256)
}

// RunTraffic sends cfg.RPS requests per second to web — alternately a list
// and a vote for an emoji from the latest list — and prints a summary of the
// last window to cfg.Out every cfg.ReportEvery, until ctx is cancelled; then
// it abandons the requests in flight and returns nil. Failures, web being
// down included, are counted, not returned.
func RunTraffic(ctx context.Context, cfg TrafficConfig) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	g := newGenerator(cfg)
	defer g.close()
	g.run(ctx)
	return nil
}

// generator is one run of the traffic generator.
type generator struct {
	cfg    TrafficConfig
	base   string
	client *http.Client
	out    io.Writer
	slots  chan struct{} // one per request in flight
	wg     sync.WaitGroup
	stats  window

	mu     sync.Mutex
	emojis []string // shortcodes of the latest list
	next   int      // counts requests, to alternate list and vote
}

func newGenerator(cfg TrafficConfig) *generator {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = cfg.inFlight()
	return &generator{
		cfg:    cfg,
		base:   strings.TrimRight(cfg.WebURL, "/"),
		client: &http.Client{Transport: transport, Timeout: requestTimeout},
		out:    out,
		slots:  make(chan struct{}, cfg.inFlight()),
	}
}

// close waits for the requests in flight and drops idle connections, so
// that nothing of the run outlives it.
func (g *generator) close() {
	g.wg.Wait()
	g.client.CloseIdleConnections()
}

// run ticks until ctx ends: a request per rate tick, a report per report
// tick.
func (g *generator) run(ctx context.Context) {
	rate := time.NewTicker(time.Second / time.Duration(g.cfg.RPS))
	defer rate.Stop()
	report := time.NewTicker(g.cfg.ReportEvery)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rate.C:
			g.tick(ctx)
		case <-report.C:
			fmt.Fprintln(g.out, g.stats.takeReport())
		}
	}
}

// tick starts one request unless too many are in flight, in which case it
// counts the tick as skipped. It never blocks.
func (g *generator) tick(ctx context.Context) {
	select {
	case g.slots <- struct{}{}:
	default:
		g.stats.skip()
		return
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer func() { <-g.slots }()
		g.request(ctx)
	}()
}

// request sends the next request and records its outcome, unless the run
// ended meanwhile: abandoned requests are not failures of web.
func (g *generator) request(ctx context.Context) {
	start := time.Now()
	err := g.send(ctx)
	if ctx.Err() != nil {
		return
	}
	g.stats.record(time.Since(start), err == nil)
}

// send sends a list, or a vote every other time once a list is known.
func (g *generator) send(ctx context.Context) error {
	if choice, ok := g.nextVote(); ok {
		return g.do(ctx, http.MethodPost, "/api/vote?choice="+url.QueryEscape(choice), nil)
	}
	var list []webEmoji
	if err := g.do(ctx, http.MethodGet, "/api/list", &list); err != nil {
		return err
	}
	g.remember(list)
	return nil
}

// nextVote says whether the next request is a vote, and for which emoji.
func (g *generator) nextVote() (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.next++
	if g.next%2 == 1 || len(g.emojis) == 0 {
		return "", false
	}
	return g.emojis[rand.IntN(len(g.emojis))], true
}

// remember keeps the shortcodes of a list for the votes that follow.
func (g *generator) remember(list []webEmoji) {
	codes := make([]string, 0, len(list))
	for _, e := range list {
		if e.Shortcode != "" {
			codes = append(codes, e.Shortcode)
		}
	}
	if len(codes) == 0 {
		return
	}
	g.mu.Lock()
	g.emojis = codes
	g.mu.Unlock()
}

// do sends one request to web and decodes a 200 answer into into, unless
// into is nil. Any other status is an error.
func (g *generator) do(ctx context.Context, method, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, nil)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxBody)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, body)
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if into == nil {
		_, err = io.Copy(io.Discard, body)
	} else {
		err = json.NewDecoder(body).Decode(into)
	}
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	return nil
}

// window is what happened since the last report.
type window struct {
	mu        sync.Mutex
	requests  int
	ok        int
	skipped   int
	latencies []time.Duration // all of them, or a uniform sample of maxSamples
}

func (w *window) skip() {
	w.mu.Lock()
	w.skipped++
	w.mu.Unlock()
}

// record counts one finished request and keeps its latency, sampling
// uniformly once maxSamples are kept.
func (w *window) record(d time.Duration, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.requests++
	if ok {
		w.ok++
	}
	if len(w.latencies) < maxSamples {
		w.latencies = append(w.latencies, d)
	} else if i := rand.IntN(w.requests); i < maxSamples {
		w.latencies[i] = d
	}
}

// takeReport formats the window as a report line and starts a new one.
func (w *window) takeReport() string {
	w.mu.Lock()
	requests, ok, skipped, lat := w.requests, w.ok, w.skipped, w.latencies
	w.requests, w.ok, w.skipped, w.latencies = 0, 0, 0, nil
	w.mu.Unlock()
	return formatReport(requests, ok, skipped, lat)
}

// formatReport renders a window as
// "traffic: 100 requests, 97 ok (97.0%), p50 3.1ms, p99 25.0ms", with
// ", N skipped" appended when the rate could not be kept. Latencies are of
// all finished requests, failed ones included.
func formatReport(requests, ok, skipped int, latencies []time.Duration) string {
	var b strings.Builder
	if requests == 0 {
		b.WriteString("traffic: 0 requests, 0 ok (-), p50 -, p99 -")
	} else {
		slices.Sort(latencies)
		fmt.Fprintf(&b, "traffic: %d requests, %d ok (%.1f%%), p50 %s, p99 %s",
			requests, ok, 100*float64(ok)/float64(requests),
			millis(percentile(latencies, 50)), millis(percentile(latencies, 99)))
	}
	if skipped > 0 {
		fmt.Fprintf(&b, ", %d skipped", skipped)
	}
	return b.String()
}

// percentile is the nearest-rank p-th percentile of sorted, which is not
// empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func millis(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// runTrafficWithHealth runs the generator and, on lis, an HTTP endpoint
// GET /healthz that answers 200 while it runs, so that the traffic program
// has something to listen on, as every workload of the mesh does. It
// returns when both have stopped.
func runTrafficWithHealth(ctx context.Context, lis net.Listener, cfg TrafficConfig, log *slog.Logger) error {
	log = orDiscard(log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	healthErr := make(chan error, 1)
	go func() {
		healthErr <- serveHTTP(ctx, lis, &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second})
		cancel() // the generator does not outlive its health endpoint
	}()
	log.Info("traffic listening", "addr", lis.Addr().String(), "web_url", cfg.WebURL, "rps", cfg.RPS)
	trafficErr := RunTraffic(ctx, cfg)
	cancel()
	return errors.Join(trafficErr, <-healthErr)
}
