package metricsapi

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
)

// API answers the CLI's queries from a Backend, with the registry's
// workloads for what metrics cannot tell (instances, identities, routes).
type API struct {
	Backend Backend
	Store   Lister
	// ScrapeInterval is how often the store scrapes the proxies: windows
	// shorter than two of them are refused.
	ScrapeInterval time.Duration
	// Now is the evaluation time of queries (time.Now if nil).
	Now func() time.Time
}

// at is t, or now if t is zero.
func (a *API) at(t time.Time) time.Time {
	if t.IsZero() {
		return a.now()
	}
	return t
}

func (a *API) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// StatRequest asks for the golden metrics of resources.
type StatRequest struct {
	// Kind is namespace, service or workload.
	Kind string
	// Name, if set, selects one resource.
	Name string
	// Namespace selects the namespace; "" means all of them.
	Namespace string
	// From, To restrict the traffic to what the resource received from,
	// or sent to, another resource (outbound metrics of the sender).
	From, To *Ref
	Window   time.Duration
	// At is when the window ends (now if zero).
	At time.Time
	// goldenOnly leaves out what a series does not draw: TCP, denials
	// and the resources without traffic.
	goldenOnly bool
}

// StatRow is one resource's golden metrics.
type StatRow struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	// Meshed and Instances count the resource's registered instances that
	// run a proxy, and all of them.
	Meshed    int `json:"meshed"`
	Instances int `json:"instances"`
	Golden
	// UnauthorizedPerSec is the rate of requests and connections the
	// resource's proxies denied by policy (inbound rows only).
	UnauthorizedPerSec float64 `json:"unauthorizedPerSec"`
	// TCPConnections is the number of open inbound connections.
	TCPConnections   int     `json:"tcpConnections"`
	ReadBytesPerSec  float64 `json:"readBytesPerSec"`
	WriteBytesPerSec float64 `json:"writeBytesPerSec"`
}

// Stat answers a StatRequest: one row per resource, sorted by namespace
// and name; resources the registry knows are listed without traffic too
// (unless From or To restrict the rows to traffic).
func (a *API) Stat(ctx context.Context, req StatRequest) ([]StatRow, error) {
	label, ok := resourceLabels[req.Kind]
	if !ok && req.Kind != KindServer {
		return nil, invalid("unknown resource kind %q", req.Kind)
	}
	if req.From != nil && req.To != nil {
		return nil, invalid("from and to cannot be used together")
	}
	for _, r := range []*Ref{req.From, req.To} {
		if _, ok := resourceLabels[refKind(r)]; r != nil && !ok {
			return nil, invalid("from and to take a workload, service or namespace, not a %s", r.Kind)
		}
	}
	if err := a.checkWindow(req.Window); err != nil {
		return nil, err
	}
	if err := checkNames(req.Name, req.Namespace, refName(req.From), refName(req.To)); err != nil {
		return nil, err
	}
	if req.Kind == KindServer {
		return a.statServers(ctx, req)
	}
	if req.Kind == "namespace" && req.Name != "" {
		req.Namespace = req.Name
	}
	at := a.at(req.At)
	// sel selects the series; by groups them; names are the group labels
	// holding the row's namespace and name.
	sel := matchers{"direction": "inbound"}
	nsLabel, nameLabel := "namespace", label
	switch {
	case req.From != nil: // the sender's outbound metrics, by destination
		sel = matchers{"direction": "outbound", resourceLabels[req.From.Kind]: req.From.Name}
		nsLabel, nameLabel = "dst_namespace", "dst_"+label
		sel[nsLabel] = req.Namespace
		if req.Kind != "namespace" {
			sel[nameLabel] = req.Name
		}
	case req.To != nil: // the resource's outbound metrics, to the destination
		sel = matchers{"direction": "outbound", "dst_" + resourceLabels[req.To.Kind]: req.To.Name, "namespace": req.Namespace}
		if req.Kind != "namespace" {
			sel[label] = req.Name
		}
	default:
		sel["namespace"] = req.Namespace
		if req.Kind != "namespace" {
			sel[label] = req.Name
		}
	}
	by := []string{nsLabel, nameLabel}
	if req.Kind == "namespace" {
		by = []string{nsLabel}
	}
	gold, err := golden(ctx, a.Backend, "", sel, by, req.Window, at)
	if err != nil {
		return nil, err
	}
	rows, row := statRows(req.Kind)
	for k, g := range gold {
		if k.values()[len(by)-1] == "" {
			continue // traffic to something that is not this kind of resource
		}
		row(k).Golden = *g
	}
	if req.goldenOnly {
		return sortedRows(rows), nil
	}
	if req.From == nil && req.To == nil {
		tcpSel := sel.with("peer", "src").String()
		win := promDuration(req.Window)
		conns, err := sumBy(ctx, a.Backend, fmt.Sprintf(`tcp_open_connections{%s}`, tcpSel), by, at)
		if err != nil {
			return nil, err
		}
		read, err := sumBy(ctx, a.Backend, fmt.Sprintf(`rate(tcp_read_bytes_total{%s}[%s])`, tcpSel, win), by, at)
		if err != nil {
			return nil, err
		}
		written, err := sumBy(ctx, a.Backend, fmt.Sprintf(`rate(tcp_write_bytes_total{%s}[%s])`, tcpSel, win), by, at)
		if err != nil {
			return nil, err
		}
		for k, n := range conns {
			row(k).TCPConnections = int(n)
		}
		for k, n := range read {
			row(k).ReadBytesPerSec = n
		}
		for k, n := range written {
			row(k).WriteBytesPerSec = n
		}
		denied, err := authzRate(ctx, a.Backend, "deny", sel, by, req.Window, at)
		if err != nil {
			return nil, err
		}
		for k, n := range denied {
			row(k).UnauthorizedPerSec = n
		}
	}
	// Instances come from the registry: every registered workload runs a proxy.
	insts, err := a.instances(ctx, req)
	if err != nil {
		return nil, err
	}
	for k, n := range insts {
		if _, ok := rows[k]; ok || (req.From == nil && req.To == nil) {
			r := row(k)
			r.Meshed, r.Instances = n, n
		}
	}
	return sortedRows(rows), nil
}

// statRows are rows of kind, made by row on first use from their group
// labels: namespace, and name (a namespace's row is named by it).
func statRows(kind string) (rows map[groupKey]*StatRow, row func(groupKey) *StatRow) {
	rows = map[groupKey]*StatRow{}
	return rows, func(k groupKey) *StatRow {
		if rows[k] == nil {
			v := k.values()
			r := &StatRow{Namespace: v[0], Kind: kind, Name: v[0]}
			if len(v) > 1 {
				r.Name = v[1]
			}
			rows[k] = r
		}
		return rows[k]
	}
}

// sortedRows are the rows sorted by namespace and name.
func sortedRows(rows map[groupKey]*StatRow) []StatRow {
	out := make([]StatRow, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func refName(r *Ref) string {
	if r == nil {
		return ""
	}
	return r.Name
}

func refKind(r *Ref) string {
	if r == nil {
		return ""
	}
	return r.Kind
}

// instances counts the registered instances of each resource req selects.
func (a *API) instances(ctx context.Context, req StatRequest) (map[groupKey]int, error) {
	targets, err := Targets(ctx, a.Store)
	if err != nil {
		return nil, err
	}
	label := resourceLabels[req.Kind]
	out := map[groupKey]int{}
	for _, t := range targets {
		ns, name := t.Labels["namespace"], t.Labels[label]
		if (req.Namespace != "" && ns != req.Namespace) || (req.Name != "" && req.Kind != "namespace" && name != req.Name) || name == "" {
			continue
		}
		if req.Kind == "namespace" {
			out[groupKey(ns)]++
			continue
		}
		out[groupKey(ns+"\x00"+name)]++
	}
	return out, nil
}

// workloadIdentities maps namespace/workload to the identities of its
// registered instances.
func (a *API) workloadIdentities(ctx context.Context) (map[string]map[string]bool, error) {
	wls, _, err := a.Store.List(ctx, resources.KindWorkload, "", nil)
	if err != nil {
		return nil, fmt.Errorf("listing workloads: %w", err)
	}
	out := map[string]map[string]bool{}
	for _, w := range wls {
		var spec resources.WorkloadSpec
		if resources.Decode(w.Spec, &spec) != nil || spec.Identity == "" {
			continue
		}
		k := w.Metadata.Namespace + "/" + resources.WorkloadOf(w.Metadata)
		if out[k] == nil {
			out[k] = map[string]bool{}
		}
		out[k][spec.Identity] = true
	}
	return out, nil
}
