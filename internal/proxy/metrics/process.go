package metrics

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// started approximates the process's start: this package is initialised
// before main runs.
var started = time.Now()

// RegisterProcess adds the standard process and Go runtime series
// (process_resident_memory_bytes, process_open_fds, process_max_fds,
// process_cpu_seconds_total, process_start_time_seconds, go_goroutines),
// so a proxy's memory, file descriptors and goroutines are visible to
// Prometheus like any exporter's. Each is read from /proc or the runtime
// at scrape time; a value the system cannot give is left out.
func (r *Registry) RegisterProcess() {
	r.Gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
		func() float64 { return float64(started.UnixNano()) / 1e9 })
	r.Counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", func() float64 {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
			return 0
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	})
	r.Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", residentBytes)
	r.Gauge("process_open_fds", "Number of open file descriptors.", func() float64 {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return 0
		}
		return float64(len(ents) - 1) // without the directory's own
	})
	r.Gauge("process_max_fds", "Maximum number of open file descriptors.", func() float64 {
		var l syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
			return 0
		}
		return float64(l.Cur)
	})
	r.Gauge("go_goroutines", "Number of goroutines that currently exist.", func() float64 { return float64(runtime.NumGoroutine()) })
}

// residentBytes reads the resident set from /proc/self/statm (in pages).
func residentBytes() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseFloat(f[1], 64)
	if err != nil {
		return 0
	}
	return pages * float64(os.Getpagesize())
}
