package metricsapi

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// Certificate is when one instance's proxy certificate expires, as its
// proxy last reported (identity_cert_expiration_timestamp_seconds).
type Certificate struct {
	Namespace string    `json:"namespace"`
	Instance  string    `json:"instance"`
	Expires   time.Time `json:"expires"`
}

// Certificates lists the instances' certificate expiries in namespace (""
// for all), sorted by namespace and instance.
func (a *API) Certificates(ctx context.Context, namespace string) ([]Certificate, error) {
	if err := checkNames(namespace); err != nil {
		return nil, err
	}
	by := []string{"namespace", "pod"}
	exp, err := sumBy(ctx, a.Backend, fmt.Sprintf(`max by (namespace, pod) (identity_cert_expiration_timestamp_seconds{%s})`, matchers{"namespace": namespace}), by, a.now())
	if err != nil {
		return nil, err
	}
	out := []Certificate{}
	for k, v := range exp {
		if v <= 0 {
			continue // no certificate yet
		}
		vals := k.values()
		out = append(out, Certificate{Namespace: vals[0], Instance: vals[1], Expires: time.Unix(int64(v), 0).UTC()})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Instance < out[j].Instance
	})
	return out, nil
}
