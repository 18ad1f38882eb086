package kube

import (
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// inboundRequests sums the inbound request_total of the proxies of the
// Pods labelled app=name in ns.
func inboundRequests(t *testing.T, ns, name string) float64 {
	t.Helper()
	ips := strings.Fields(kubectl(t, "", "-n", ns, "get", "pods", "-l", "app="+name, "--field-selector=status.phase=Running",
		"-o", "jsonpath={.items[*].status.podIP}"))
	total := 0.0
	for _, ip := range ips {
		total += metricstest.Scrape(t, "http://"+ip+":4191/metrics").Sum("request_total", map[string]string{"direction": "inbound"})
	}
	return total
}

// waitCondition waits until the route's Trellis status has condition
// typ with status and reason.
func waitCondition(t *testing.T, ns, kindName, typ, status, reason string) {
	t.Helper()
	path := `jsonpath={.status.parents[?(@.controllerName=="trellis.dev/mesh")].conditions[?(@.type=="` + typ + `")]}`
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := kubectl(t, "", "-n", ns, "get", kindName, "-o", path)
		if strings.Contains(out, `"status":"`+status+`"`) && strings.Contains(out, `"reason":"`+reason+`"`) {
			t.Logf("%s %s: %s", kindName, typ, out)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never had %s=%s (%s): %s", kindName, typ, status, reason, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Gateway API routes in the cluster steer meshed traffic as in local
// mode, and carry Trellis's status: an HTTPRoute on web sends every
// request to a canary Deployment; a GRPCRoute's retries hide the voting
// service's failures; a route to a Service that does not exist says so.
func TestGatewayRoutesInTheCluster(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "routes") })
	ns := "routes"
	deployDemo(t, ns, 1, "--rps=50", "--report-every=1s")
	kubectl(t, "apiVersion: v1\nkind: Service\nmetadata: {name: web-canary, namespace: routes}\nspec:\n  selector: {app: web-canary}\n  ports: [{port: 8080, appProtocol: http}]\n"+
		demoDeployment(ns, "web-canary", "web", 1, "--emoji-addr=emoji.routes.svc.cluster.local:8080", "--voting-addr=voting.routes.svc.cluster.local:8080"),
		"apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/web-canary", "--timeout=120s")

	t.Run("HTTPRoute split", func(t *testing.T) {
		kubectl(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-canary, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 8080}]
  rules: [{backendRefs: [{name: web-canary, port: 8080, weight: 1}]}]
`, "apply", "-f", "-")
		waitCondition(t, ns, "httproute/web-canary", "Accepted", "True", "Accepted")
		waitCondition(t, ns, "httproute/web-canary", "ResolvedRefs", "True", "ResolvedRefs")
		// Once the proxies have the route, web gets nothing and the canary
		// everything.
		deadline := time.Now().Add(30 * time.Second)
		for {
			web, canary := inboundRequests(t, ns, "web"), inboundRequests(t, ns, "web-canary")
			time.Sleep(2 * time.Second)
			dWeb, dCanary := inboundRequests(t, ns, "web")-web, inboundRequests(t, ns, "web-canary")-canary
			if dWeb == 0 && dCanary >= 50 {
				t.Logf("over 2 s: web %v requests, web-canary %v", dWeb, dCanary)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the split never took: over 2 s web got %v requests, web-canary %v", dWeb, dCanary)
			}
		}
	})

	t.Run("GRPCRoute retries", func(t *testing.T) {
		// voting fails a fifth of the votes; half of traffic's requests vote.
		kubectl(t, "", "-n", ns, "patch", "deployment", "voting", "--type=json",
			"-p", `[{"op":"replace","path":"/spec/template/spec/containers/0/args/3","value":"--fail-rate=0.2"}]`)
		kubectl(t, "", "-n", ns, "rollout", "status", "deployment/voting", "--timeout=120s")
		// Five seconds of traffic (~250 requests, a tenth failing): fewer
		// than 3 % failing would be chance once in tens of thousands.
		time.Sleep(6 * time.Second)
		sent, ok := trafficSince(t, ns, time.Now().Add(-5*time.Second))
		t.Logf("without a route: %d of %d requests answered 200", ok, sent)
		if sent == 0 || float64(ok)/float64(sent) > 0.97 {
			t.Fatalf("the failing voting service barely shows: %d of %d", ok, sent)
		}
		kubectl(t, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: voting
  namespace: routes
  annotations: {retry.trellis.dev/grpc: unavailable, retry.trellis.dev/limit: "5", retry.trellis.dev/budget-ratio: "100%"}
spec:
  parentRefs: [{group: "", kind: Service, name: voting, port: 8080}]
  rules: [{}]
`, "apply", "-f", "-")
		waitCondition(t, ns, "grpcroute/voting", "Accepted", "True", "Accepted")
		time.Sleep(6 * time.Second) // the proxies take the route (in ~1 s; more on a loaded machine)
		from := time.Now()
		time.Sleep(5 * time.Second)
		sent, ok = trafficSince(t, ns, from)
		t.Logf("with retries: %d of %d requests answered 200", ok, sent)
		// A vote fails for good only when all six attempts fail: 0.2^6 =
		// 6.4e-5 per vote, so ~1 run in 100 sees one such vote among its
		// ~150. Without retries a tenth of the requests fail; with them at
		// most 1 % may.
		if sent < 100 || (sent-ok)*100 > sent {
			t.Errorf("with retries %d of %d requests failed", sent-ok, sent)
		}
		// trellis routes shows the route with its retries, read from the
		// cluster's mesh.
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(3 * time.Second) {
			var rows []metricsapi.RouteRow
			problems := cliJSON(t, &rows, "routes", "voting", "-n", ns, "-t", "30s", "-o", "json")
			for _, r := range rows {
				if r.Route == ns+"/voting" && r.Kind == "GRPCRoute" && r.RetriesPerSec > 0 && r.RPS > 0 {
					t.Logf("trellis routes voting: %s %s %.1f rps, %.1f retries/s", r.Kind, r.Route, r.RPS, r.RetriesPerSec)
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("trellis routes never showed the GRPCRoute's retries: %v %+v", problems, rows)
			}
		}
	})

	t.Run("status names what is wrong", func(t *testing.T) {
		kubectl(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nowhere, namespace: routes}
spec:
  parentRefs: [{group: "", kind: Service, name: emoji, port: 8080}]
  rules: [{backendRefs: [{name: missing, port: 8080}]}]
`, "apply", "-f", "-")
		waitCondition(t, ns, "httproute/nowhere", "ResolvedRefs", "False", "BackendNotFound")
	})
}
