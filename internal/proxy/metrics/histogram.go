package metrics

import (
	"bufio"
	"strconv"
	"sync/atomic"
	"time"
)

// LatencyBucketsMs are Linkerd's response_latency_ms bucket bounds, in
// milliseconds; response_latency_seconds renders them in seconds (the base
// unit promtool's lint asks for).
var LatencyBucketsMs = [...]float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}

// histogram is a lock-free latency histogram in milliseconds.
type histogram struct {
	buckets [len(LatencyBucketsMs) + 1]atomic.Uint64 // last is +Inf
	count   atomic.Uint64
	sumUs   atomic.Uint64 // microseconds, to keep sub-millisecond precision
}

func (h *histogram) observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i := 0
	for i < len(LatencyBucketsMs) && ms > LatencyBucketsMs[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sumUs.Add(uint64(d / time.Microsecond))
}

// write renders the histogram's cumulative buckets, sum and count, in seconds.
func (h *histogram) write(w *bufio.Writer, name, labels string) {
	var cum uint64
	for i, bound := range LatencyBucketsMs {
		cum += h.buckets[i].Load()
		writeSample(w, name+"_bucket", join(labels, kv("le", strconv.FormatFloat(bound/1000, 'f', -1, 64))), cum)
	}
	cum += h.buckets[len(LatencyBucketsMs)].Load()
	writeSample(w, name+"_bucket", join(labels, kv("le", "+Inf")), cum)
	w.WriteString(name + "_sum")
	writeLabels(w, labels)
	w.WriteString(strconv.FormatFloat(float64(h.sumUs.Load())/1e6, 'f', -1, 64))
	w.WriteByte('\n')
	writeSample(w, name+"_count", labels, h.count.Load())
}

func writeSample(w *bufio.Writer, name, labels string, v uint64) {
	w.WriteString(name)
	writeLabels(w, labels)
	w.WriteString(strconv.FormatUint(v, 10))
	w.WriteByte('\n')
}

func writeGauge(w *bufio.Writer, name, labels string, v int64) {
	w.WriteString(name)
	writeLabels(w, labels)
	w.WriteString(strconv.FormatInt(v, 10))
	w.WriteByte('\n')
}

func writeLabels(w *bufio.Writer, labels string) {
	if labels != "" {
		w.WriteByte('{')
		w.WriteString(labels)
		w.WriteByte('}')
	}
	w.WriteByte(' ')
}
