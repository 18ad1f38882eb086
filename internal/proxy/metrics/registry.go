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

	type resp struct {
		labels string
		r      *response
	}
	var resps []resp
	for _, h := range https {
		h.responses.Range(func(k, v any) bool {
			resps = append(resps, resp{join(h.labels, k.(responseKey).labels()), v.(*response)})
			return true
		})
	}
	sort.Slice(resps, func(i, j int) bool { return resps[i].labels < resps[j].labels })

	header(w, "request_total", "counter", "Total count of HTTP requests.")
	for _, h := range https {
		writeSample(w, "request_total", h.labels, h.requests.Load())
	}
	header(w, "response_total", "counter", "Total count of HTTP responses.")
	for _, x := range resps {
		writeSample(w, "response_total", x.labels, x.r.count.Load())
	}
	header(w, "response_latency_ms", "histogram", "Elapsed times between a request's headers being received and its response headers being sent.")
	for _, x := range resps {
		x.r.latency.write(w, "response_latency_ms", x.labels)
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

func header(w *bufio.Writer, name, typ, help string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}
