package plane

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// registeredClient starts a client proxy that is itself a registered
// instance (so the metrics API scrapes it), with an upstream port for
// service; it returns the upstream address and the proxy's admin address.
func registeredClient(t *testing.T, p *Plane, api *localapi.Client, name, service string) (addr, admin string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, appPort, _ := net.SplitHostPort(ln.Addr().String())
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	px, _ := proxy(t, p, api, name, "--app-addr="+ln.Addr().String(), "--workload="+name+"-0", "--service="+name, "--service-port=8080="+appPort,
		"--upstream=up="+lport+":"+service+".default.svc.cluster.local:8080")
	return local, px.AdminAddr.String()
}

// Routes count what their policies did — retries and timeouts — and the
// metrics API reports them per route from the embedded store; every
// family a proxy exposes passes promtool's lint.
func TestRouteMetricsAndPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool is not installed (apt-get install prometheus; .ci/run installs it)")
	}
	p, api := startPlane(t, "--metrics-scrape-interval=1s")
	var n atomic.Int64
	instance(t, p, api, "flaky", "flaky-0", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
			}
			return
		}
		if n.Add(1)%3 == 0 {
			http.Error(w, "flaky", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	apply(t, api, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: flaky, namespace: default, annotations: {retry.trellis.dev/budget-ratio: "100%"}}
spec:
  parentRefs: [{kind: Service, name: flaky}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 50ms}
    backendRefs: [{name: flaky, port: 8080}]
  - retry: {codes: [500], attempts: 3}
    backendRefs: [{name: flaky, port: 8080}]`)
	addr, clientAdmin := registeredClient(t, p, api, "client", "flaky")
	c := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + addr
	waitRouted(t, c, base, &n)
	// The store must have seen the series before the traffic to count it
	// (a counter's first sample is its start): one request of each kind,
	// then two scrapes.
	call(t, c, "GET", base+"/", nil)
	call(t, c, "GET", base+"/slow", nil)
	time.Sleep(2500 * time.Millisecond)
	const sent, slow = 300, 5 // with the first, fewer timeouts in a row than eject the instance
	for range sent {
		if r := call(t, c, "GET", base+"/", nil); r.status != 200 {
			t.Fatalf("GET / = %d %q: retries should hide every failure", r.status, r.body)
		}
	}
	for range slow {
		if r := call(t, c, "GET", base+"/slow", nil); r.status != http.StatusGatewayTimeout {
			t.Fatalf("GET /slow = %d %q, want 504 from the route timeout", r.status, r.body)
		}
	}

	// The metrics API reports the route once scrapes after the traffic are in.
	check := func(rows []metricsapi.RouteRow) []string {
		if len(rows) != 2 || rows[0].RPS == 0 {
			return []string{fmt.Sprintf("routes = %+v, want default/flaky with traffic and the default route", rows)}
		}
		var problems []string
		r := rows[0]
		if r.Route != "default/flaky" || r.Kind != "HTTPRoute" || rows[1].Route != metricsapi.DefaultRoute {
			problems = append(problems, fmt.Sprintf("routes = %+v, want default/flaky (HTTPRoute) and the default route", rows))
		}
		// Every third backend response fails and is retried: about one
		// retry per two requests; the timeouts are slow of sent+slow.
		if share := r.RetriesPerSec / r.RPS; share < 0.35 || share > 0.65 {
			problems = append(problems, fmt.Sprintf("retries per request = %.2f, want about 0.5", share))
		}
		if share, want := r.TimeoutsPerSec/r.RPS, float64(slow+1)/(sent+slow+2); share < want*0.7 || share > want*1.3 {
			problems = append(problems, fmt.Sprintf("timeouts per request = %.3f, want about %.3f", share, want))
		}
		if want := float64(sent+1) / (sent + slow + 2); r.Success == nil || *r.Success < want-0.01 || *r.Success > want+0.01 {
			problems = append(problems, fmt.Sprintf("route success = %v, want about %.3f (only the timeouts fail)", deref(r.Success), want))
		}
		return problems
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var res struct {
			Rows []metricsapi.RouteRow `json:"rows"`
		}
		err := api.Query(context.Background(), "/v1/routes?service=flaky&namespace=default&window=1m", &res)
		problems := check(res.Rows)
		if err == nil && len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("routes of flaky (%v):\n%s", err, strings.Join(problems, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// promtool lints what both proxies expose.
	for name, admin := range map[string]string{"client": clientAdmin, "flaky": adminOf(t, api, "flaky-0")} {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, family := range []string{"request_total", "response_latency_seconds_bucket", "tcp_open_connections"} {
			if !bytes.Contains(body, []byte(family)) {
				t.Errorf("%s proxy exposes no %s", name, family)
			}
		}
		if name == "client" && !bytes.Contains(body, []byte(`route_retry_total{direction="outbound"`)) {
			t.Errorf("client proxy exposes no route_retry_total")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("promtool check metrics on the %s proxy: %v\n%s", name, err, out)
		}
	}
}

// adminOf is the admin address a registered instance's proxy gave.
func adminOf(t *testing.T, api *localapi.Client, instance string) string {
	t.Helper()
	w, err := api.Get(context.Background(), store.Key{Kind: resources.KindWorkload, Namespace: "default", Name: instance})
	if err != nil {
		t.Fatal(err)
	}
	var spec resources.WorkloadSpec
	if err := resources.Decode(w.Spec, &spec); err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(spec.Address, strconv.Itoa(spec.AdminPort))
}

func deref(v *float64) any {
	if v == nil {
		return "none"
	}
	return *v
}
