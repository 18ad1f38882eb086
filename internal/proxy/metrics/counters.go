package metrics

import (
	"bufio"
	"sort"
	"sync"
	"sync/atomic"
)

// Counters is a family of labelled counters whose series are made on
// first use, such as inbound_http_authz_allow_total by server and
// authorization. A stage keeps the *atomic.Uint64 of a series it counts
// often; With is a map lookup.
type Counters struct {
	name, help string
	series     sync.Map // rendered labels -> *atomic.Uint64
}

// Counters registers a labelled counter family. It panics if name is not
// a valid metric name or is registered already, which is a programming
// error.
func (r *Registry) Counters(name, help string) *Counters {
	c := &Counters{name: name, help: help}
	r.registerFunc(funcFamily{name: name, help: help, typ: "counter", write: c.write})
	return c
}

// With is the counter of the series with these label names and values
// (pairs: name, value, ...).
func (c *Counters) With(pairs ...string) *atomic.Uint64 {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		parts = append(parts, kv(pairs[i], pairs[i+1]))
	}
	labels := join(parts...)
	if v, ok := c.series.Load(labels); ok {
		return v.(*atomic.Uint64)
	}
	v, _ := c.series.LoadOrStore(labels, new(atomic.Uint64))
	return v.(*atomic.Uint64)
}

// write renders the family's series, sorted by labels.
func (c *Counters) write(w *bufio.Writer) {
	type sample struct {
		labels string
		n      uint64
	}
	var ss []sample
	c.series.Range(func(k, v any) bool { ss = append(ss, sample{k.(string), v.(*atomic.Uint64).Load()}); return true })
	sort.Slice(ss, func(i, j int) bool { return ss[i].labels < ss[j].labels })
	for _, s := range ss {
		writeSample(w, c.name, s.labels, s.n)
	}
}
