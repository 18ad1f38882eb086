// Package metricstest reads Prometheus text exposition in tests with
// Prometheus's own parser, so a test that passes also proves the output
// parses.
package metricstest

import (
	"io"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families are parsed metric families by name.
type Families map[string]*dto.MetricFamily

// Parse parses the text exposition format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Scrape reads and parses the metrics at url, failing t if it cannot.
func Scrape(t testing.TB, url string) Families {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := Parse(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return fams
}

// Labels are a sample's labels by name.
func Labels(m *dto.Metric) map[string]string {
	labels := map[string]string{}
	for _, l := range m.Label {
		labels[l.GetName()] = l.GetValue()
	}
	return labels
}

// Sum adds up the samples of family whose labels include every one of
// want: counter and gauge values, histogram sample counts.
func (f Families) Sum(family string, want map[string]string) float64 {
	var total float64
	fam, ok := f[family]
	if !ok {
		return 0
	}
metric:
	for _, m := range fam.Metric {
		labels := Labels(m)
		for k, v := range want {
			if labels[k] != v {
				continue metric
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		}
	}
	return total
}
