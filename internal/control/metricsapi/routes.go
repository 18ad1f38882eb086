package metricsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
)

// RoutesRequest asks for the routes of one service.
type RoutesRequest struct {
	Service, Namespace string
	// From, if set, counts only the requests of that resource.
	From   *Ref
	Window time.Duration
}

// DefaultRoute names the route of requests no HTTPRoute or GRPCRoute matched.
const DefaultRoute = "[default]"

// RouteRow is one route's metrics as its callers saw them (one request
// however many attempts it took), and what its policies did.
type RouteRow struct {
	Route   string `json:"route"`
	Kind    string `json:"kind,omitempty"`
	Service string `json:"service"`
	Golden
	// RetriesPerSec counts the retries and hedges sent; TimeoutsPerSec the
	// requests and attempts the route's timeouts ended.
	RetriesPerSec  float64 `json:"retriesPerSec"`
	TimeoutsPerSec float64 `json:"timeoutsPerSec"`
}

// Routes answers a RoutesRequest: a row per route attached to the service
// (HTTPRoute and GRPCRoute, listed without traffic too) and the default route.
func (a *API) Routes(ctx context.Context, req RoutesRequest) ([]RouteRow, error) {
	if req.Service == "" {
		return nil, invalid("a service is required")
	}
	if err := a.checkWindow(req.Window); err != nil {
		return nil, err
	}
	if err := checkNames(req.Service, req.Namespace, refName(req.From)); err != nil {
		return nil, err
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	at := a.now()
	sel := matchers{"direction": "outbound", "dst_service": req.Service, "dst_namespace": req.Namespace}
	if req.From != nil {
		sel[resourceLabels[req.From.Kind]] = req.From.Name
	}
	by := []string{"route_name", "route_kind"}
	gold, err := golden(ctx, a.Backend, "route_", sel, by, req.Window, at)
	if err != nil {
		return nil, err
	}
	win := promDuration(req.Window)
	retries, err := sumBy(ctx, a.Backend, fmt.Sprintf(`rate(route_retry_total{%s}[%s])`, sel, win), by, at)
	if err != nil {
		return nil, err
	}
	timeouts, err := sumBy(ctx, a.Backend, fmt.Sprintf(`rate(route_timeout_total{%s}[%s])`, sel, win), by, at)
	if err != nil {
		return nil, err
	}
	rows := map[string]*RouteRow{}
	row := func(name, kind string) *RouteRow {
		if name == "default" || name == "" {
			name, kind = DefaultRoute, ""
		}
		if rows[name] == nil {
			rows[name] = &RouteRow{Route: name, Kind: kind, Service: req.Service}
		}
		return rows[name]
	}
	attached, err := a.attachedRoutes(ctx, req.Namespace, req.Service)
	if err != nil {
		return nil, err
	}
	for name, kind := range attached {
		row(name, kind)
	}
	row(DefaultRoute, "")
	for k, g := range gold {
		v := k.values()
		row(v[0], v[1]).Golden = *g
	}
	for k, n := range retries {
		v := k.values()
		row(v[0], v[1]).RetriesPerSec = n
	}
	for k, n := range timeouts {
		v := k.values()
		row(v[0], v[1]).TimeoutsPerSec = n
	}
	out := make([]RouteRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { // the default route last
		if (out[i].Route == DefaultRoute) != (out[j].Route == DefaultRoute) {
			return out[j].Route == DefaultRoute
		}
		return out[i].Route < out[j].Route
	})
	return out, nil
}

// attachedRoutes are the HTTPRoutes and GRPCRoutes whose parentRefs name
// the service, as "namespace/name" (the proxies' route_name) → kind.
func (a *API) attachedRoutes(ctx context.Context, ns, service string) (map[string]string, error) {
	out := map[string]string{}
	for _, kind := range []string{resources.KindHTTPRoute, resources.KindGRPCRoute} {
		list, _, err := a.Store.List(ctx, kind, ns, nil)
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", kind, err)
		}
		for _, r := range list {
			if parentsName(r, service) {
				out[r.Metadata.Namespace+"/"+r.Metadata.Name] = kind
			}
		}
	}
	return out, nil
}

// parentsName reports whether a route's spec.parentRefs has service.
func parentsName(r store.Resource, service string) bool {
	var spec struct {
		ParentRefs []struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"parentRefs"`
	}
	if json.Unmarshal(r.Spec, &spec) != nil {
		return false
	}
	for _, p := range spec.ParentRefs {
		if p.Name == service && (p.Kind == "" || strings.EqualFold(p.Kind, "Service")) {
			return true
		}
	}
	return false
}
