// Package embedded is the metrics API's own store for local mode and for
// clusters without a Prometheus: Prometheus's TSDB and PromQL engine in the
// control plane's process, fed by a scraper of every registered proxy. It
// is a package of its own so that only the control plane links Prometheus's
// server code (and the cloud SDKs its configuration package brings); the
// CLI needs only metricsapi's rows.
package embedded
