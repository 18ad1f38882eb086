package metricsapi

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
)

// authzRate is the rate of requests and connections the authorization
// policies of the proxies sel matches let through (outcome allow) or
// denied (deny: UNAUTHORIZED), grouped by the labels in by. The
// authorization metrics carry no direction label: they are inbound.
func authzRate(ctx context.Context, b Backend, outcome string, sel matchers, by []string, w time.Duration, at time.Time) (map[groupKey]float64, error) {
	inbound := matchers{}
	for k, v := range sel {
		if k != "direction" {
			inbound[k] = v
		}
	}
	out := map[groupKey]float64{}
	for _, proto := range []string{"http", "tcp"} {
		r, err := sumBy(ctx, b, fmt.Sprintf(`rate(inbound_%s_authz_%s_total{%s}[%s])`, proto, outcome, inbound, promDuration(w)), by, at)
		if err != nil {
			return nil, err
		}
		for k, v := range r {
			out[k] += v
		}
	}
	return out, nil
}

// statServers answers a StatRequest of kind server: a row per Server
// (listed without traffic too) with the registered instances it selects,
// the requests and connections its authorizations allowed per second (RPS)
// and those they denied (UNAUTHORIZED). The proxies count no success or
// latency per Server: those stay empty.
func (a *API) statServers(ctx context.Context, req StatRequest) ([]StatRow, error) {
	if req.From != nil || req.To != nil {
		return nil, invalid("from and to do not apply to servers: a Server is what its own proxies received")
	}
	sel := matchers{"namespace": req.Namespace, "srv_kind": "server", "srv_name": req.Name}
	by := []string{"namespace", "srv_name"}
	at := a.at(req.At)
	allowed, err := authzRate(ctx, a.Backend, "allow", sel, by, req.Window, at)
	if err != nil {
		return nil, err
	}
	denied, err := authzRate(ctx, a.Backend, "deny", sel, by, req.Window, at)
	if err != nil {
		return nil, err
	}
	rows, row := statRows(KindServer)
	for k, v := range allowed {
		row(k).RPS = v
	}
	for k, v := range denied {
		row(k).UnauthorizedPerSec = v
	}
	servers, _, err := a.Store.List(ctx, resources.KindServer, req.Namespace, nil)
	if err != nil {
		return nil, fmt.Errorf("listing servers: %w", err)
	}
	wls, _, err := a.Store.List(ctx, resources.KindWorkload, req.Namespace, nil)
	if err != nil {
		return nil, fmt.Errorf("listing workloads: %w", err)
	}
	for _, s := range servers {
		var spec resources.ServerSpec
		if (req.Name != "" && s.Metadata.Name != req.Name) || resources.Decode(s.Spec, &spec) != nil {
			continue
		}
		r := row(groupKey(s.Metadata.Namespace + "\x00" + s.Metadata.Name))
		for _, w := range wls {
			if w.Metadata.Namespace == s.Metadata.Namespace && spec.Selects(w.Metadata.Labels) {
				r.Meshed++
				r.Instances++
			}
		}
	}
	return sortedRows(rows), nil
}

// AuthzRequest asks what the authorization policies of one workload's
// proxies decided.
type AuthzRequest struct {
	Workload, Namespace string
	Window              time.Duration
}

// AuthzRow is the rate of one decision of a workload's proxies: the
// requests and connections an authorization let through on a Server (or
// default policy) and route, or (Denied) those none allowed. An audit
// authorization (AuthzKind "audit") counts what the Server would deny.
type AuthzRow struct {
	ServerKind string  `json:"serverKind"` // server, or default (a default policy)
	Server     string  `json:"server"`
	Route      string  `json:"route,omitempty"`
	AuthzKind  string  `json:"authzKind,omitempty"` // authorizationpolicy, audit, default
	Authz      string  `json:"authz,omitempty"`
	Denied     bool    `json:"denied,omitempty"`
	PerSec     float64 `json:"perSec"`
}

// Authz answers an AuthzRequest, the rows sorted by server, route and
// authorization, denials last.
func (a *API) Authz(ctx context.Context, req AuthzRequest) ([]AuthzRow, error) {
	if req.Workload == "" {
		return nil, invalid("a workload is required")
	}
	if err := a.checkWindow(req.Window); err != nil {
		return nil, err
	}
	if err := checkNames(req.Workload, req.Namespace); err != nil {
		return nil, err
	}
	sel := matchers{"namespace": cmp.Or(req.Namespace, "default"), "workload": req.Workload}
	at := a.now()
	by := []string{"srv_kind", "srv_name", "route_name", "authz_kind", "authz_name"}
	allowed, err := authzRate(ctx, a.Backend, "allow", sel, by, req.Window, at)
	if err != nil {
		return nil, err
	}
	denied, err := authzRate(ctx, a.Backend, "deny", sel, by[:3], req.Window, at)
	if err != nil {
		return nil, err
	}
	var out []AuthzRow // decisions of the window: rows of older ones are left out
	for k, v := range allowed {
		if v == 0 {
			continue
		}
		l := k.values()
		out = append(out, AuthzRow{ServerKind: l[0], Server: l[1], Route: l[2], AuthzKind: l[3], Authz: l[4], PerSec: v})
	}
	for k, v := range denied {
		if v == 0 {
			continue
		}
		l := k.values()
		out = append(out, AuthzRow{ServerKind: l[0], Server: l[1], Route: l[2], Denied: true, PerSec: v})
	}
	slices.SortFunc(out, func(x, y AuthzRow) int {
		return cmp.Or(cmp.Compare(x.Server, y.Server), cmp.Compare(x.Route, y.Route), compareBool(x.Denied, y.Denied), cmp.Compare(x.Authz, y.Authz))
	})
	return out, nil
}

func compareBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}
