package tap_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	tapv1 "github.com/trellis-mesh/trellis/api/tap/v1"
	"github.com/trellis-mesh/trellis/internal/control/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/explain"
	proxytap "github.com/trellis-mesh/trellis/internal/proxy/tap"
	"github.com/trellis-mesh/trellis/internal/proxy/tap/taptest"
)

// Recent asks each proxy's tap server for its recent decisions over mTLS,
// merges them newest first with the filter applied on each proxy, and
// names the proxies it could not ask.
func TestRecentMergesProxies(t *testing.T) {
	p := taptest.NewPKI(t)
	t0 := time.Now()
	start := func(workload string) (tap.Target, *explain.Journal) {
		id := taptest.ID(t, "default", workload)
		j := &explain.Journal{}
		addr := taptest.StartServer(t, p, proxytap.NewHub(proxytap.HubConfig{Identity: id.String(), Decisions: j}), id, taptest.ControlPlane)
		return tap.Target{Addr: addr, Workload: workload + "-0", Namespace: "default", Identity: id.String()}, j
	}
	web, webJ := start("web")
	emoji, emojiJ := start("emoji")
	webJ.Outbound.Record(&explain.Decision{Time: t0, Direction: "outbound", Method: "POST", Authority: "emoji:8080", Path: "/emoji.Emoji/List",
		Route: "default/list", RouteKind: "GRPCRoute", Rule: "0", Backend: "emoji", Status: 200,
		Attempts: []explain.Attempt{{Endpoint: "10.0.0.7:4143", Status: 200, GRPC: 14}, {Endpoint: "10.0.0.8:4143", Status: 200, Why: "retry"}}})
	emojiJ.Inbound.Record(&explain.Inbound{Time: t0.Add(time.Millisecond), Method: "POST", Authority: "emoji:8080",
		Path: "/emoji.Emoji/List", Status: 403, Client: netip.MustParseAddrPort("10.0.0.9:5000"), ClientID: "spiffe://cluster.local/ns/default/sa/traffic",
		Policy: explain.Policy{Server: "emoji-grpc", Reason: "no authorization policy of Server emoji-grpc allows the client"}})
	emojiJ.Inbound.Record(&explain.Inbound{Time: t0.Add(2 * time.Millisecond), Method: "GET", Authority: "emoji:8080",
		Path: "/healthz", Policy: explain.Policy{Server: "deny", Default: true, Allowed: true, Authorization: "probe", AuthorizationKind: "default"}})
	gone := tap.Target{Addr: deadAddr(t), Workload: "gone-0", Namespace: "default", Identity: taptest.ID(t, "default", "gone").String()}

	c := client(t, p)
	got, errs := c.Recent(context.Background(), []tap.Target{web, emoji, gone}, &tapv1.RecentRequest{Filter: &tapv1.ObserveRequest{PathPrefix: "/emoji."}})
	if len(errs) != 1 || !strings.Contains(errs[0], "default/gone-0") {
		t.Errorf("errors %q, want one naming default/gone-0", errs)
	}
	if len(got) != 2 {
		t.Fatalf("decisions %+v, want emoji's inbound and web's outbound", got)
	}
	in, out := got[0], got[1]
	if in.Workload != "emoji-0" || in.Direction != "inbound" || in.Status != 403 || in.Client != "10.0.0.9:5000" || in.Policy == nil ||
		in.Policy.Allowed || in.Policy.Server != "emoji-grpc" || !strings.Contains(in.Policy.Reason, "allows the client") {
		t.Errorf("first (newest) = %+v, policy %+v; want emoji-0's denial", in, in.Policy)
	}
	if out.Workload != "web-0" || out.Route != "default/list" || out.Backend != "emoji" || len(out.Attempts) != 2 ||
		out.Attempts[0].GRPCStatus != 14 || out.Attempts[1].Why != "retry" || !out.Time.Equal(t0) {
		t.Errorf("second = %+v; want web-0's outbound call with its two attempts", out)
	}

	// The handler: JSON of the same, a probe's policy named as such.
	srv := httptest.NewServer(tap.RecentHandler(c, func(*http.Request) ([]tap.Target, *tapv1.ObserveRequest, error) {
		return []tap.Target{emoji}, &tapv1.ObserveRequest{Direction: "inbound"}, nil
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Decisions []tap.Explained
		Errors    []string
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	if len(res.Decisions) != 1 || res.Decisions[0].Policy == nil || res.Decisions[0].Policy.Server != "default:deny" ||
		res.Decisions[0].Policy.Authorization != "probe" || !res.Decisions[0].Policy.Allowed {
		t.Errorf("handler with limit=1: %+v; want the probe allowed by the default policy deny", res.Decisions)
	}
	if resp, err := http.Get(srv.URL + "?limit=x"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("limit=x: %v, %v; want 400", resp.StatusCode, err)
	}
}
