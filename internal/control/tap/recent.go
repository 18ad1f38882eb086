package tap

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Explained is what one proxy decided for one recent request, as the JSON
// `trellis explain` reads.
type Explained struct {
	// Workload (the instance, web-0) and Namespace say whose proxy decided.
	Workload  string    `json:"workload"`
	Namespace string    `json:"namespace"`
	Time      time.Time `json:"time"`
	// Direction is "inbound" (the application received the request) or
	// "outbound" (it sent it).
	Direction string `json:"direction"`
	Method    string `json:"method"`
	Authority string `json:"authority"`
	Path      string `json:"path"`
	// Status is the response's, 0 for an inbound request the application
	// answered (the policy let it through).
	Status int `json:"status,omitempty"`
	// Outbound: the route and rule, the backend, the attempts, why none
	// was made, and the endpoints the request got ejected.
	Route     string    `json:"route,omitempty"`
	RouteKind string    `json:"routeKind,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Backend   string    `json:"backend,omitempty"`
	Attempts  []Attempt `json:"attempts,omitempty"`
	FailFast  string    `json:"failFast,omitempty"`
	Ejected   []string  `json:"ejected,omitempty"`
	// Inbound: the client and how the authorization policy decided.
	Client   string  `json:"client,omitempty"`
	ClientID string  `json:"clientId,omitempty"`
	Policy   *Policy `json:"policy,omitempty"`
}

// Policy is how an inbound request's authorization was decided.
type Policy struct {
	// Server is the Server of the port, or default:POLICY.
	Server string `json:"server"`
	// Route is the Server's route the request matched, if any.
	Route string `json:"route,omitempty"`
	// Authorization is what let it through: an AuthorizationPolicy,
	// audit, probe, or default:POLICY.
	Authorization string `json:"authorization,omitempty"`
	Allowed       bool   `json:"allowed"`
	// Reason is why it was denied (or would have been, under audit).
	Reason string `json:"reason,omitempty"`
	// RateLimit names the rate limit and scope that refused it (429).
	RateLimit string `json:"rateLimit,omitempty"`
}

// Attempt is one try of an outbound request.
type Attempt struct {
	Endpoint   string `json:"endpoint"`
	Status     int    `json:"status"`
	GRPCStatus int    `json:"grpcStatus,omitempty"`
	Why        string `json:"why,omitempty"`
}

// Recent asks every target for its recent decisions that req selects
// and merges them, newest first, at most req's limit (DefaultRecent if 0);
// the targets that could not answer are in errs, one line each.
func (c *Client) Recent(ctx context.Context, targets []Target, req *tapv1.RecentRequest) (out []Explained, errs []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.recent(ctx, t, req)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s/%s (%s): %v", t.Namespace, t.Workload, t.Addr, describe(err)))
				return
			}
			out = append(out, got...)
		}()
	}
	wg.Wait()
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	sort.Strings(errs)
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = DefaultRecent
	}
	return out[:min(len(out), limit)], errs
}

// DefaultRecent is how many decisions Recent returns when not told.
const DefaultRecent = 100

func (c *Client) recent(ctx context.Context, t Target, req *tapv1.RecentRequest) ([]Explained, error) {
	id, err := identity.Parse(t.Identity)
	if err != nil {
		return nil, err
	}
	cc, err := grpc.NewClient(t.Addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tlsConfig(id))))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	timeout := c.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := tapv1.NewTapClient(cc).Recent(ctx, req)
	if err != nil {
		return nil, err
	}
	out := make([]Explained, 0, len(resp.GetDecisions()))
	for _, d := range resp.GetDecisions() {
		e := Explained{Workload: t.Workload, Namespace: t.Namespace, Time: d.GetTime().AsTime(), Direction: d.GetDirection(),
			Method: d.GetMethod(), Authority: d.GetAuthority(), Path: d.GetPath(), Status: int(d.GetStatus()),
			Route: d.GetRoute(), RouteKind: d.GetRouteKind(), Rule: d.GetRule(), Backend: d.GetBackend(),
			FailFast: d.GetFailFast(), Ejected: d.GetEjected(), Client: d.GetClient(), ClientID: d.GetClientId()}
		if p := d.GetPolicy(); p != nil {
			e.Policy = &Policy{Server: p.GetServer(), Route: p.GetRoute(), Authorization: p.GetAuthorization(), Allowed: p.GetAllowed(),
				Reason: p.GetReason(), RateLimit: p.GetRateLimit()}
		}
		for _, a := range d.GetAttempts() {
			e.Attempts = append(e.Attempts, Attempt{Endpoint: a.GetEndpoint(), Status: int(a.GetStatus()), GRPCStatus: int(a.GetGrpcStatus()), Why: a.GetWhy()})
		}
		out = append(out, e)
	}
	return out, nil
}

// RecentHandler answers, as JSON {"decisions": [...], "errors": [...]},
// what the proxies resolve names decided for their recent requests that
// the query's filters select (those of ParseQuery, and limit). A resolve
// error is a 400 with its text, no proxies a 404.
func RecentHandler(c *Client, resolve Resolve) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targets, filter, err := resolve(r)
		var limit uint64
		if s := r.URL.Query().Get("limit"); err == nil && s != "" {
			if limit, err = strconv.ParseUint(s, 10, 16); err != nil {
				err = fmt.Errorf("limit %q: want a whole number up to 65535", s)
			}
		}
		if err != nil {
			http.Error(w, "explain: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(targets) == 0 {
			http.Error(w, "explain: no registered instance of the target has a tap port", http.StatusNotFound)
			return
		}
		decisions, errs := c.Recent(r.Context(), targets, &tapv1.RecentRequest{Filter: filter, Limit: uint32(limit)})
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"decisions": decisions, "errors": errs})
	})
}
