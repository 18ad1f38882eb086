package metricsapi

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// EdgesRequest asks for the calling pairs among workloads.
type EdgesRequest struct {
	// Namespace keeps the edges with either end in it; "" keeps all.
	Namespace string
	Window    time.Duration
}

// Edge is one pair of workloads that talked over the window.
type Edge struct {
	Src          string `json:"src"`
	SrcNamespace string `json:"srcNamespace"`
	Dst          string `json:"dst"`
	DstNamespace string `json:"dstNamespace"`
	// Secured is true when every request went over mutual TLS.
	Secured bool `json:"secured"`
	// ClientID is the identity the destination's proxy saw the source
	// present; ServerID the one the source's proxy verified.
	ClientID    string `json:"clientId"`
	ServerID    string `json:"serverId"`
	NoTLSReason string `json:"noTlsReason,omitempty"`
	// Golden is what the source's proxy saw of the edge's requests.
	Golden
}

// Edges lists the workload pairs with HTTP traffic over the window, from
// the sources' outbound metrics, with the identities each side proved.
func (a *API) Edges(ctx context.Context, req EdgesRequest) ([]Edge, error) {
	if err := a.checkWindow(req.Window); err != nil {
		return nil, err
	}
	if err := checkNames(req.Namespace); err != nil {
		return nil, err
	}
	at := a.now()
	win := promDuration(req.Window)
	by := []string{"namespace", "workload", "dst_namespace", "dst_workload", "tls", "server_id", "no_tls_reason"}
	out, err := sumBy(ctx, a.Backend, fmt.Sprintf(`increase(request_total{direction="outbound",dst_workload!=""}[%s])`, win), by, at)
	if err != nil {
		return nil, err
	}
	// What the destinations saw: client identities by destination.
	in, err := sumBy(ctx, a.Backend, fmt.Sprintf(`increase(request_total{direction="inbound",client_id!=""}[%s])`, win), []string{"namespace", "workload", "client_id"}, at)
	if err != nil {
		return nil, err
	}
	seen := map[string]map[string]bool{} // dst ns/workload → client ids
	for k, n := range in {
		if n <= 0 {
			continue
		}
		v := k.values()
		if seen[v[0]+"/"+v[1]] == nil {
			seen[v[0]+"/"+v[1]] = map[string]bool{}
		}
		seen[v[0]+"/"+v[1]][v[2]] = true
	}
	ids, err := a.workloadIdentities(ctx)
	if err != nil {
		return nil, err
	}
	gold, err := golden(ctx, a.Backend, "", matchers{"direction": "outbound"}, by[:4], req.Window, at)
	if err != nil {
		return nil, err
	}
	edges := map[string]*Edge{}
	for k, n := range out {
		if n <= 0 {
			continue
		}
		v := k.values()
		e := &Edge{SrcNamespace: v[0], Src: v[1], DstNamespace: v[2], Dst: v[3], Secured: v[4] == "true", ServerID: v[5], NoTLSReason: v[6]}
		if g := gold[groupKey(strings.Join(v[:4], "\x00"))]; g != nil {
			e.Golden = *g
		}
		if req.Namespace != "" && e.SrcNamespace != req.Namespace && e.DstNamespace != req.Namespace {
			continue
		}
		for id := range ids[e.SrcNamespace+"/"+e.Src] {
			if seen[e.DstNamespace+"/"+e.Dst][id] {
				e.ClientID = id
			}
		}
		key := e.SrcNamespace + "/" + e.Src + ">" + e.DstNamespace + "/" + e.Dst
		if prev, ok := edges[key]; ok { // some requests secured, some not
			prev.Secured = prev.Secured && e.Secured
			prev.ServerID = max(prev.ServerID, e.ServerID)
			if prev.NoTLSReason == "" {
				prev.NoTLSReason = e.NoTLSReason
			}
			continue
		}
		edges[key] = e
	}
	list := make([]Edge, 0, len(edges))
	for _, e := range edges {
		list = append(list, *e)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		if a.SrcNamespace+"/"+a.Src != b.SrcNamespace+"/"+b.Src {
			return a.SrcNamespace+"/"+a.Src < b.SrcNamespace+"/"+b.Src
		}
		return a.DstNamespace+"/"+a.Dst < b.DstNamespace+"/"+b.Dst
	})
	return list, nil
}
