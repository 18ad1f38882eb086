package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
)

// Defaults of the embedded store: Linkerd viz's Prometheus scrapes every
// 10 s and keeps 6 h.
const (
	DefaultScrapeInterval = 10 * time.Second
	DefaultRetention      = 6 * time.Hour
)

// Options configure the embedded metrics store.
type Options struct {
	// Dir holds the TSDB (its write-ahead log and blocks).
	Dir string
	// Retention is how long samples are kept.
	Retention time.Duration
	// Interval is how often every proxy is scraped.
	Interval time.Duration
	// Targets lists the proxies to scrape, once per interval.
	Targets func(context.Context) ([]metricsapi.Target, error)
	Log     *slog.Logger
}

// Store is the local-mode backend: Prometheus's own TSDB and PromQL
// engine in this process, fed by a scraper of every registered proxy.
type Store struct {
	opts    Options
	db      *tsdb.DB
	engine  *promql.Engine
	scraper *scraper
}

// Open opens (or creates) the TSDB in o.Dir.
func Open(o Options) (*Store, error) {
	if o.Interval <= 0 {
		o.Interval = DefaultScrapeInterval
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Retention < 2*o.Interval {
		return nil, fmt.Errorf("metrics retention %v: must be at least two scrape intervals (%v)", o.Retention, 2*o.Interval)
	}
	opts := tsdb.DefaultOptions()
	opts.RetentionDuration = o.Retention.Milliseconds()
	// Blocks no longer than the retention, so old samples can go.
	if block := (2 * time.Hour).Milliseconds(); opts.RetentionDuration < block {
		opts.MinBlockDuration = max(opts.RetentionDuration/2, time.Minute.Milliseconds())
		opts.MaxBlockDuration = opts.MinBlockDuration
	}
	db, err := tsdb.Open(o.Dir, quiet(o.Log), nil, opts, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics store %s: %w", o.Dir, err)
	}
	e := &Store{opts: o, db: db,
		engine: promql.NewEngine(promql.EngineOpts{
			Logger: quiet(o.Log), MaxSamples: 50_000_000, Timeout: 30 * time.Second,
			// Samples older than two scrapes are stale: a stopped proxy's
			// series leave instant queries quickly.
			LookbackDelta: max(2*o.Interval+time.Second, 5*time.Second),
		}),
	}
	e.scraper = newScraper(db, o.Interval, o.Targets, o.Log)
	return e, nil
}

// quiet keeps the TSDB's routine info logs (WAL replay, compactions) out
// of the control plane's log.
func quiet(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(levelFilter{log.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

// Run scrapes until ctx ends, then closes the TSDB.
func (e *Store) Run(ctx context.Context) error {
	e.scraper.run(ctx)
	return e.db.Close()
}

// ScrapeAt scrapes every proxy once, stamping the samples ts: what Run
// does each interval, for a caller that replays a stretch of history.
func (e *Store) ScrapeAt(ctx context.Context, ts time.Time) { e.scraper.scrapeAll(ctx, ts) }

// Close closes the TSDB without running (a plane that failed to start).
func (e *Store) Close() error { return e.db.Close() }

// Query evaluates q with the PromQL engine over the TSDB.
func (e *Store) Query(ctx context.Context, q string, t time.Time) (model.Vector, error) {
	qry, err := e.engine.NewInstantQuery(ctx, e.db, nil, q, t)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", q, err)
	}
	defer qry.Close()
	res := qry.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("query %q: %w", q, res.Err)
	}
	return toModel(res.Value)
}

func toModel(v any) (model.Vector, error) {
	switch v := v.(type) {
	case promql.Vector:
		out := make(model.Vector, 0, len(v))
		for _, s := range v {
			m := model.Metric{}
			s.Metric.Range(func(l labels.Label) { m[model.LabelName(l.Name)] = model.LabelValue(l.Value) })
			out = append(out, &model.Sample{Metric: m, Value: model.SampleValue(s.F), Timestamp: model.Time(s.T)})
		}
		return out, nil
	case promql.Scalar:
		return model.Vector{&model.Sample{Metric: model.Metric{}, Value: model.SampleValue(v.V), Timestamp: model.Time(v.T)}}, nil
	}
	return nil, errors.New("query result is not an instant vector")
}
