package metricsapi

import (
	"context"
	"time"

	"github.com/prometheus/common/model"
)

// Backend answers PromQL instant queries.
type Backend interface {
	// Query evaluates q at t.
	Query(ctx context.Context, q string, t time.Time) (model.Vector, error)
}
