// Package metrics records the proxy's traffic metrics under Linkerd's proxy
// metric families and labels (request_total, response_total, tcp_*, route_*)
// — but for latency, response_latency_seconds (Linkerd's buckets, in
// seconds, not response_latency_ms), so that promtool's lint passes — and
// renders them in the Prometheus text exposition format.
//
// Recording is on the hot path of every request, so it is a handful of atomic
// adds on series looked up once per connection or target, never a lock or an
// allocation per request. Rendering, which happens once per scrape, does the
// sorting and formatting.
package metrics
