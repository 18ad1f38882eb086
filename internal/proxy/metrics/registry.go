package metrics

import (
	"bufio"
	"io"
	"sort"
	"sync"
)

// Registry owns every series of one proxy.
type Registry struct {
	http sync.Map // Labels -> *HTTP
	tcp  sync.Map // tcpKey -> *TCP
	rt   sync.Map // RouteLabels -> *Route
}

type tcpKey struct {
	Labels
	peer string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

// HTTP returns the request/response series for l, creating it on first use.
func (r *Registry) HTTP(l Labels) *HTTP {
	if v, ok := r.http.Load(l); ok {
		return v.(*HTTP)
	}
	v, _ := r.http.LoadOrStore(l, &HTTP{labels: l.render()})
	return v.(*HTTP)
}

// Route returns the series of one route, creating it on first use.
func (r *Registry) Route(l RouteLabels) *Route {
	if v, ok := r.rt.Load(l); ok {
		return v.(*Route)
	}
	v, _ := r.rt.LoadOrStore(l, &Route{HTTP: HTTP{labels: l.render()}})
	return v.(*Route)
}

// TCP returns the transport series for l and peer ("src" or "dst").
func (r *Registry) TCP(l Labels, peer string) *TCP {
	k := tcpKey{l, peer}
	if v, ok := r.tcp.Load(k); ok {
		return v.(*TCP)
	}
	v, _ := r.tcp.LoadOrStore(k, &TCP{labels: join(l.render(), kv("peer", peer))})
	return v.(*TCP)
}

// WriteText renders every series in the Prometheus text format, families in a
// fixed order and series sorted by labels so the output is stable.
func (r *Registry) WriteText(out io.Writer) error {
	w := bufio.NewWriter(out)
	var https []*HTTP
	r.http.Range(func(_, v any) bool { https = append(https, v.(*HTTP)); return true })
	sort.Slice(https, func(i, j int) bool { return https[i].labels < https[j].labels })
	var tcps []*TCP
	r.tcp.Range(func(_, v any) bool { tcps = append(tcps, v.(*TCP)); return true })
	sort.Slice(tcps, func(i, j int) bool { return tcps[i].labels < tcps[j].labels })

	writeHTTP(w, "", https)

	var routes []*Route
	r.rt.Range(func(_, v any) bool { routes = append(routes, v.(*Route)); return true })
	sort.Slice(routes, func(i, j int) bool { return routes[i].labels < routes[j].labels })
	routeHTTP := make([]*HTTP, len(routes))
	for i, rt := range routes {
		routeHTTP[i] = &rt.HTTP
	}
	writeHTTP(w, "route_", routeHTTP)
	header(w, "route_retry_total", "counter", "Total count of retries and hedges sent by a route.")
	for _, rt := range routes {
		writeSample(w, "route_retry_total", rt.labels, rt.retries.Load())
	}
	header(w, "route_timeout_total", "counter", "Total count of requests and attempts ended by a route's timeouts.")
	for _, rt := range routes {
		writeSample(w, "route_timeout_total", rt.labels, rt.timeouts.Load())
	}

	header(w, "tcp_open_total", "counter", "Total count of opened connections.")
	for _, t := range tcps {
		writeSample(w, "tcp_open_total", t.labels, t.opened.Load())
	}
	header(w, "tcp_close_total", "counter", "Total count of closed connections.")
	for _, t := range tcps {
		type c struct {
			labels string
			n      uint64
		}
		var cs []c
		t.closes.Range(func(k, v any) bool {
			cs = append(cs, c{join(t.labels, k.(closeKey).labels()), v.(interface{ Load() uint64 }).Load()})
			return true
		})
		sort.Slice(cs, func(i, j int) bool { return cs[i].labels < cs[j].labels })
		for _, x := range cs {
			writeSample(w, "tcp_close_total", x.labels, x.n)
		}
	}
	header(w, "tcp_open_connections", "gauge", "Number of currently-open connections.")
	for _, t := range tcps {
		writeGauge(w, "tcp_open_connections", t.labels, t.open.Load())
	}
	header(w, "tcp_read_bytes_total", "counter", "Total count of bytes read from peers.")
	for _, t := range tcps {
		writeSample(w, "tcp_read_bytes_total", t.labels, t.read.Load())
	}
	header(w, "tcp_write_bytes_total", "counter", "Total count of bytes written to peers.")
	for _, t := range tcps {
		writeSample(w, "tcp_write_bytes_total", t.labels, t.written.Load())
	}
	r.writeFuncs(w)
	return w.Flush()
}

// writeHTTP renders the request, response and latency families of hs,
// their names prefixed with prefix ("" or "route_").
func writeHTTP(w *bufio.Writer, prefix string, hs []*HTTP) {
	type resp struct {
		labels string
		r      *response
	}
	var resps []resp
	for _, h := range hs {
		h.responses.Range(func(k, v any) bool {
			resps = append(resps, resp{join(h.labels, k.(responseKey).labels()), v.(*response)})
			return true
		})
	}
	sort.Slice(resps, func(i, j int) bool { return resps[i].labels < resps[j].labels })

	header(w, prefix+"request_total", "counter", "Total count of HTTP requests.")
	for _, h := range hs {
		writeSample(w, prefix+"request_total", h.labels, h.requests.Load())
	}
	header(w, prefix+"response_total", "counter", "Total count of HTTP responses.")
	for _, x := range resps {
		writeSample(w, prefix+"response_total", x.labels, x.r.count.Load())
	}
	header(w, prefix+"response_latency_seconds", "histogram", "Elapsed times between a request's headers being received and its response headers being sent.")
	for _, x := range resps {
		x.r.latency.write(w, prefix+"response_latency_seconds", x.labels)
	}
}

func header(w *bufio.Writer, name, typ, help string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}
