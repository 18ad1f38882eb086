package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
)

// scraper fetches every target's /metrics once per interval, all targets
// in parallel, and appends the samples with the target's labels, as
// Prometheus's own scrape loop does: an `up` series per target, and stale
// markers for the series of a target that went away or stopped exposing
// them.
type scraper struct {
	app      storage.Appendable
	interval time.Duration
	targets  func(context.Context) ([]metricsapi.Target, error)
	client   *http.Client
	log      *slog.Logger

	mu   sync.Mutex
	last map[string]map[string]labels.Labels // target addr → series it had, by their string
}

func newScraper(app storage.Appendable, interval time.Duration, targets func(context.Context) ([]metricsapi.Target, error), log *slog.Logger) *scraper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &scraper{app: app, interval: interval, targets: targets, log: log,
		client: &http.Client{Timeout: interval, Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 3 * interval}},
		last:   map[string]map[string]labels.Labels{}}
}

func (s *scraper) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.scrapeAll(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// scrapeAll scrapes every current target at ts and marks the series of
// targets that left stale.
func (s *scraper) scrapeAll(ctx context.Context, ts time.Time) {
	targets, err := s.targets(ctx)
	if err != nil {
		s.log.Warn("metrics: listing scrape targets", "error", err)
		return
	}
	current := map[string]bool{}
	var wg sync.WaitGroup
	for _, t := range targets {
		current[t.Addr] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.scrape(ctx, t, ts)
		}()
	}
	wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, series := range s.last {
		if !current[addr] {
			s.markStale(series, nil, ts)
			delete(s.last, addr)
		}
	}
}

// scrape fetches one target and appends what it exposed at ts.
func (s *scraper) scrape(ctx context.Context, t metricsapi.Target, ts time.Time) {
	body, ctype, err := s.fetch(ctx, t.Addr)
	app := s.app.Appender(ctx)
	base := targetLabels(t)
	seen := map[string]labels.Labels{}
	if err == nil {
		err = appendExposition(app, body, ctype, base, ts, seen)
	}
	up := 1.0
	if err != nil {
		up = 0
		if ctx.Err() == nil {
			s.log.Debug("metrics: scrape failed", "target", t.Addr, "error", err)
		}
	}
	upLabels := labels.NewBuilder(base).Set(model.MetricNameLabel, "up").Labels()
	if _, aerr := app.Append(0, upLabels, ts.UnixMilli(), up); aerr != nil {
		s.log.Warn("metrics: appending", "target", t.Addr, "error", aerr)
	}
	seen[upLabels.String()] = upLabels
	s.mu.Lock()
	prev := s.last[t.Addr]
	s.last[t.Addr] = seen
	if err == nil {
		s.markStale(prev, seen, ts)
	}
	s.mu.Unlock()
	if err := app.Commit(); err != nil {
		s.log.Warn("metrics: committing samples", "target", t.Addr, "error", err)
	}
}

// markStale appends stale markers for the series of prev not in now.
func (s *scraper) markStale(prev, now map[string]labels.Labels, ts time.Time) {
	if len(prev) == 0 {
		return
	}
	app := s.app.Appender(context.Background())
	for k, ls := range prev {
		if _, ok := now[k]; !ok {
			app.Append(0, ls, ts.UnixMilli(), math.Float64frombits(value.StaleNaN))
		}
	}
	if err := app.Commit(); err != nil {
		s.log.Warn("metrics: committing stale markers", "error", err)
	}
}

func (s *scraper) fetch(ctx context.Context, addr string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, metricsapi.MaxScrapeBytes+1))
	if err != nil {
		return nil, "", err
	}
	if len(b) > metricsapi.MaxScrapeBytes {
		return nil, "", fmt.Errorf("GET /metrics: more than %d bytes", metricsapi.MaxScrapeBytes)
	}
	return b, resp.Header.Get("Content-Type"), nil
}

func targetLabels(t metricsapi.Target) labels.Labels {
	b := labels.NewScratchBuilder(len(t.Labels) + 2)
	b.Add("job", metricsapi.Job)
	b.Add("instance", t.Addr)
	for k, v := range t.Labels {
		if v != "" {
			b.Add(k, v)
		}
	}
	b.Sort()
	return b.Labels()
}

// appendExposition parses a text-format exposition and appends its float
// samples at ts, each with the target's labels (which win over the
// exposed ones, as with honor_labels: false), recording them in seen.
func appendExposition(app storage.Appender, body []byte, ctype string, base labels.Labels, ts time.Time, seen map[string]labels.Labels) error {
	p, err := textparse.New(body, ctype, labels.NewSymbolTable(), textparse.ParserOptions{FallbackContentType: "text/plain"})
	if err != nil && p == nil {
		return fmt.Errorf("parsing /metrics: %w", err)
	}
	var ls labels.Labels
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("parsing /metrics: %w", err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, _, v := p.Series()
		p.Labels(&ls)
		b := labels.NewBuilder(ls)
		base.Range(func(l labels.Label) { b.Set(l.Name, l.Value) })
		series := b.Labels()
		if _, err := app.Append(0, series, ts.UnixMilli(), v); err != nil {
			return fmt.Errorf("appending %s: %w", series, err)
		}
		seen[series.String()] = series
	}
}
