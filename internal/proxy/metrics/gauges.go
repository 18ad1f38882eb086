package metrics

import (
	"bufio"
	"fmt"
	"math"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"weak"
)

// Process-wide metrics are single, unlabelled series that describe the proxy
// as a whole (its certificate's expiry, how often it was refreshed) rather
// than a stream of traffic. Their owner keeps the value (typically in an
// atomic) and registers a function that reads it; the registry calls the
// function once per scrape, so recording costs the owner nothing beyond its
// own atomic store and the registry takes no lock on any request path.

// funcFamily is one registered process-wide series (value), or a family
// that renders its own series (write).
type funcFamily struct {
	name, help, typ string
	value           func() float64
	write           func(*bufio.Writer)
}

// funcSet holds a registry's process-wide series: an immutable, name-sorted
// slice replaced on registration (rare), read without locks at scrape.
type funcSet struct {
	mu   sync.Mutex // serialises registrations
	fams atomic.Pointer[[]funcFamily]
}

// funcSets maps a registry to its funcSet. It is keyed weakly and cleaned up
// when the registry is collected, because Registry itself has no field for
// these series.
var funcSets sync.Map // weak.Pointer[Registry] -> *funcSet

// builtinFamilies are the names WriteText renders itself.
var builtinFamilies = map[string]bool{
	"request_total": true, "response_total": true, "response_latency_seconds": true,
	"tcp_open_total": true, "tcp_close_total": true, "tcp_open_connections": true,
	"tcp_read_bytes_total": true, "tcp_write_bytes_total": true,
}

// Gauge registers a process-wide gauge: value is called at each scrape and
// may go up and down. It panics if name is not a valid metric name or is
// already registered, which is a programming error.
func (r *Registry) Gauge(name, help string, value func() float64) {
	r.registerFunc(funcFamily{name: name, help: help, typ: "gauge", value: value})
}

// Counter registers a process-wide counter: value is called at each scrape
// and must never decrease. It panics like Gauge.
func (r *Registry) Counter(name, help string, value func() float64) {
	r.registerFunc(funcFamily{name: name, help: help, typ: "counter", value: value})
}

func (r *Registry) registerFunc(f funcFamily) {
	if !validMetricName(f.name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", f.name))
	}
	if builtinFamilies[f.name] {
		panic(fmt.Sprintf("metrics: %q is a built-in metric", f.name))
	}
	key := weak.Make(r)
	v, loaded := funcSets.LoadOrStore(key, &funcSet{})
	if !loaded {
		runtime.AddCleanup(r, func(k weak.Pointer[Registry]) { funcSets.Delete(k) }, key)
	}
	s := v.(*funcSet)
	s.mu.Lock()
	defer s.mu.Unlock()
	var fams []funcFamily
	if old := s.fams.Load(); old != nil {
		fams = append(fams, *old...)
	}
	for _, g := range fams {
		if g.name == f.name {
			panic(fmt.Sprintf("metrics: %q registered twice", f.name))
		}
	}
	fams = append(fams, f)
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	s.fams.Store(&fams)
}

// writeFuncs renders r's process-wide series after the traffic families.
func (r *Registry) writeFuncs(w *bufio.Writer) {
	v, ok := funcSets.Load(weak.Make(r))
	if !ok {
		return
	}
	fams := v.(*funcSet).fams.Load()
	if fams == nil {
		return
	}
	for _, f := range *fams {
		header(w, f.name, f.typ, f.help)
		if f.write != nil {
			f.write(w)
			continue
		}
		w.WriteString(f.name)
		w.WriteByte(' ')
		w.WriteString(formatValue(f.value()))
		w.WriteByte('\n')
	}
}

// formatValue renders v as the text format expects: integers without an
// exponent (timestamps stay readable), NaN and ±Inf by name.
func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', -1, 64)
	default:
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9' {
			continue
		}
		return false
	}
	return true
}
