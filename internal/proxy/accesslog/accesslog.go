// Package accesslog writes the proxy's HTTP access log: one line per request
// that transits a stack, in Apache or JSON format, as Linkerd's
// LINKERD2_PROXY_ACCESS_LOG does.
//
// The request path never waits on the log's writer: a finished request's
// line is formatted into a pooled buffer and handed to a bounded queue that
// one goroutine drains into a buffered writer, flushed whenever the queue
// runs empty (so lines batch under load and appear at once otherwise). When
// the writer falls behind and the queue is full, lines are dropped and
// counted (access_log_dropped_total) instead of slowing requests down — a
// mutex around a buffered writer would be cheaper per line but would make
// every request wait on a slow stderr.
//
// Apache format, one line per request (a "-" for an empty field):
//
//	CLIENT_ADDR CLIENT_ID - [02/Jan/2006:15:04:05 +0000] "METHOD URI VERSION" STATUS RESPONSE_BYTES "REFERER" "USER_AGENT" DURATION_US DIRECTION
//
// JSON format, one object per line with these keys in this order (trace_id
// only when the request is traced):
//
//	timestamp (RFC 3339, UTC), direction, client.addr, client.id, host,
//	method, uri, version, user_agent, referer, status, response_bytes,
//	total_ns, trace_id
package accesslog

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// The formats of the access log.
const (
	Apache = "apache"
	JSON   = "json"
)

// DefaultQueue is how many lines may wait for the writer before new ones
// are dropped.
const DefaultQueue = 4096

// Options configure a Logger.
type Options struct {
	// Format is Apache or JSON.
	Format string
	// Out receives the lines; nil is os.Stderr.
	Out io.Writer
	// Queue bounds the lines waiting for Out; 0 is DefaultQueue.
	Queue int
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Logger is a running access log.
type Logger struct {
	json    bool
	now     func() time.Time
	lines   chan *[]byte
	pool    sync.Pool
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	err     error // the first write error, owned by the writer goroutine until done
}

// New starts an access log writing to o.Out.
func New(o Options) (*Logger, error) {
	if o.Format != Apache && o.Format != JSON {
		return nil, fmt.Errorf("access log format %q: must be %s or %s", o.Format, Apache, JSON)
	}
	if o.Out == nil {
		o.Out = os.Stderr
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	l := &Logger{
		json: o.Format == JSON, now: o.Now,
		lines: make(chan *[]byte, o.Queue), stop: make(chan struct{}), done: make(chan struct{}),
	}
	l.pool.New = func() any { b := make([]byte, 0, 512); return &b }
	go l.write(bufio.NewWriterSize(o.Out, 64<<10))
	return l, nil
}

// RegisterMetrics exports the count of dropped lines.
func (l *Logger) RegisterMetrics(reg *metrics.Registry) {
	reg.Counter("access_log_dropped_total", "Access log lines dropped because the log's writer fell behind.", func() float64 {
		return float64(l.dropped.Load())
	})
}

// Dropped is how many lines were dropped because the queue was full.
func (l *Logger) Dropped() uint64 { return l.dropped.Load() }

// Close writes and flushes the lines queued so far and stops the writer.
// Lines of requests that finish later are dropped. It returns the first
// error writing to Out, if any.
func (l *Logger) Close() error {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	return l.err
}

// enqueue hands a formatted line to the writer, or drops it if the queue is
// full.
func (l *Logger) enqueue(b *[]byte) {
	select {
	case l.lines <- b:
	default:
		l.dropped.Add(1)
		l.pool.Put(b)
	}
}

// write is the writer goroutine: it copies lines to w, flushing whenever
// the queue is empty, until Close.
func (l *Logger) write(w *bufio.Writer) {
	defer close(l.done)
	put := func(b *[]byte) {
		if _, err := w.Write(*b); err != nil && l.err == nil {
			l.err = err
		}
		*b = (*b)[:0]
		l.pool.Put(b)
	}
	flush := func() {
		if err := w.Flush(); err != nil && l.err == nil {
			l.err = err
		}
	}
	for {
		select {
		case b := <-l.lines:
			put(b)
			for more := true; more; {
				select {
				case b := <-l.lines:
					put(b)
				default:
					more = false
				}
			}
			flush()
		case <-l.stop:
			for {
				select {
				case b := <-l.lines:
					put(b)
				default:
					flush()
					return
				}
			}
		}
	}
}
