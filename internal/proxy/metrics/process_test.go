package metrics

import (
	"bytes"
	"os"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func processValues(t *testing.T, r *Registry) map[string]float64 {
	t.Helper()
	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatal(err)
	}
	v := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			v[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return v
}

// The process series report the process itself: its file descriptors
// follow what it opens.
func TestProcessSeries(t *testing.T) {
	r := NewRegistry()
	r.RegisterProcess()
	before := processValues(t, r)
	for _, name := range []string{"process_resident_memory_bytes", "process_max_fds", "process_cpu_seconds_total", "process_start_time_seconds", "go_goroutines"} {
		if before[name] <= 0 {
			t.Errorf("%s = %v; want a positive value", name, before[name])
		}
	}
	if before["process_resident_memory_bytes"] < 1<<20 {
		t.Errorf("resident memory %v bytes: not plausibly this process's", before["process_resident_memory_bytes"])
	}
	for range 10 {
		f, err := os.Open(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if after := processValues(t, r); after["process_open_fds"] != before["process_open_fds"]+10 {
		t.Errorf("open fds %v before and %v after opening 10 files", before["process_open_fds"], after["process_open_fds"])
	}
}
