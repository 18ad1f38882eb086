// Package metricsapi is the control plane's metrics API: it answers the
// stat, routes and edges queries of the trellis CLI with PromQL against a
// metrics store, over one small interface with two backends — the embedded
// store of package embedded (Prometheus's TSDB and PromQL engine, fed by
// its scraper of every registered proxy) for local mode, and an external
// Prometheus server reached over its HTTP API, for which it writes the
// scrape targets as a file_sd file.
package metricsapi
