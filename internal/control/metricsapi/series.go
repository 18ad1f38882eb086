package metricsapi

import (
	"context"
	"time"
)

// SeriesRequest asks for golden metrics over time: Stat's rows evaluated
// at Points times, Step apart, the last now.
type SeriesRequest struct {
	StatRequest
	Points int
	Step   time.Duration
}

// MaxSeriesPoints bounds a SeriesRequest (each point is a Stat).
const MaxSeriesPoints = 60

// Series is one resource's golden metrics at each of SeriesReply's times;
// a value is nil where the resource had no traffic (and a latency where it
// had no responses), and a resource without traffic in the whole span has
// no Series.
type Series struct {
	Namespace string     `json:"namespace"`
	Kind      string     `json:"kind"`
	Name      string     `json:"name"`
	Success   []*float64 `json:"success"`
	RPS       []*float64 `json:"rps"`
	P50       []*float64 `json:"latencyP50Ms"`
	P95       []*float64 `json:"latencyP95Ms"`
	P99       []*float64 `json:"latencyP99Ms"`
}

// SeriesReply holds the times (Unix milliseconds) and every resource's
// series, in Stat's order.
type SeriesReply struct {
	Times  []int64  `json:"times"`
	Series []Series `json:"series"`
}

// Series answers a SeriesRequest.
func (a *API) Series(ctx context.Context, req SeriesRequest) (SeriesReply, error) {
	if req.Points < 2 || req.Points > MaxSeriesPoints {
		return SeriesReply{}, invalid("points %d: must be between 2 and %d", req.Points, MaxSeriesPoints)
	}
	if req.Step < a.ScrapeInterval || req.Step > time.Hour {
		return SeriesReply{}, invalid("step %v: must be between the scrape interval (%v) and 1h", req.Step, a.ScrapeInterval)
	}
	end := a.at(req.At)
	reply := SeriesReply{Times: make([]int64, req.Points)}
	index := map[[2]string]int{}
	for i := range req.Points {
		r := req.StatRequest
		r.goldenOnly = true
		r.At = end.Add(-time.Duration(req.Points-1-i) * req.Step)
		reply.Times[i] = r.At.UnixMilli()
		rows, err := a.Stat(ctx, r)
		if err != nil {
			return SeriesReply{}, err
		}
		for _, row := range rows {
			k := [2]string{row.Namespace, row.Name}
			j, ok := index[k]
			if !ok {
				j = len(reply.Series)
				index[k] = j
				n := req.Points
				reply.Series = append(reply.Series, Series{Namespace: row.Namespace, Kind: row.Kind, Name: row.Name,
					Success: make([]*float64, n), RPS: make([]*float64, n), P50: make([]*float64, n), P95: make([]*float64, n), P99: make([]*float64, n)})
			}
			s := &reply.Series[j]
			rps := row.RPS
			s.Success[i], s.RPS[i], s.P50[i], s.P95[i], s.P99[i] = row.Success, &rps, row.LatencyP50, row.LatencyP95, row.LatencyP99
		}
	}
	return reply, nil
}
