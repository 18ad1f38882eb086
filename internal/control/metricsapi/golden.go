package metricsapi

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// Golden are a group's golden metrics over a window.
type Golden struct {
	// Success is the share of responses that succeeded, nil without any.
	Success *float64 `json:"success"`
	RPS     float64  `json:"rps"`
	// Latencies in milliseconds (response head), nil without responses.
	LatencyP50 *float64 `json:"latencyP50Ms"`
	LatencyP95 *float64 `json:"latencyP95Ms"`
	LatencyP99 *float64 `json:"latencyP99Ms"`
}

// groupKey identifies one result row by the values of its group labels.
type groupKey string

func keyOf(m model.Metric, by []string) groupKey {
	parts := make([]string, len(by))
	for i, l := range by {
		parts[i] = string(m[model.LabelName(l)])
	}
	return groupKey(strings.Join(parts, "\x00"))
}

func (k groupKey) values() []string { return strings.Split(string(k), "\x00") }

// golden queries the golden metrics of prefix (""/"route_") series
// matching sel, grouped by the labels in by.
func golden(ctx context.Context, b Backend, prefix string, sel matchers, by []string, w time.Duration, at time.Time) (map[groupKey]*Golden, error) {
	group := strings.Join(by, ", ")
	win := promDuration(w)
	out := map[groupKey]*Golden{}
	row := func(k groupKey) *Golden {
		if out[k] == nil {
			out[k] = &Golden{}
		}
		return out[k]
	}
	total, err := b.Query(ctx, fmt.Sprintf(`sum by (%s) (rate(%sresponse_total{%s}[%s]))`, group, prefix, sel, win), at)
	if err != nil {
		return nil, err
	}
	for _, s := range total {
		row(keyOf(s.Metric, by)).RPS = float64(s.Value)
	}
	ok, err := b.Query(ctx, fmt.Sprintf(`sum by (%s) (rate(%sresponse_total{%s}[%s]))`, group, prefix, sel.with("classification", "success"), win), at)
	if err != nil {
		return nil, err
	}
	succ := map[groupKey]float64{}
	for _, s := range ok {
		succ[keyOf(s.Metric, by)] = float64(s.Value)
	}
	for k, g := range out {
		if g.RPS > 0 {
			v := succ[k] / g.RPS
			g.Success = &v
		}
	}
	for _, q := range []struct {
		quantile float64
		set      func(*Golden, *float64)
	}{
		{0.5, func(g *Golden, v *float64) { g.LatencyP50 = v }},
		{0.95, func(g *Golden, v *float64) { g.LatencyP95 = v }},
		{0.99, func(g *Golden, v *float64) { g.LatencyP99 = v }},
	} {
		lat, err := b.Query(ctx, fmt.Sprintf(`1000 * histogram_quantile(%g, sum by (le, %s) (rate(%sresponse_latency_seconds_bucket{%s}[%s])))`, q.quantile, group, prefix, sel, win), at)
		if err != nil {
			return nil, err
		}
		for _, s := range lat {
			if v := float64(s.Value); !math.IsNaN(v) && !math.IsInf(v, 0) {
				if g := out[keyOf(s.Metric, by)]; g != nil && g.RPS > 0 {
					q.set(g, &v)
				}
			}
		}
	}
	return out, nil
}

// sumBy runs `sum by (by) (expr)` and returns the values by group.
func sumBy(ctx context.Context, b Backend, expr string, by []string, at time.Time) (map[groupKey]float64, error) {
	v, err := b.Query(ctx, fmt.Sprintf(`sum by (%s) (%s)`, strings.Join(by, ", "), expr), at)
	if err != nil {
		return nil, err
	}
	out := map[groupKey]float64{}
	for _, s := range v {
		out[keyOf(s.Metric, by)] = float64(s.Value)
	}
	return out, nil
}
