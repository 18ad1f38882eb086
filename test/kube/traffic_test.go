package kube

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/metricsapi"
	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// deployDemo deploys the demo application (the same four programs as
// `trellis demo`) into namespace ns, annotated for injection: traffic →
// web → emoji (2 replicas) and voting, by their Services' DNS names, web
// with 2 replicas when webReplicas says so; trafficArgs are the traffic
// generator's flags. It returns once every Deployment is rolled out.
func deployDemo(t *testing.T, ns string, webReplicas int, trafficArgs ...string) {
	t.Helper()
	dropNamespaces(t, ns)
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  annotations: {trellis.dev/inject: enabled}\n", ns)
	for _, name := range []string{"web", "emoji", "voting", "traffic"} {
		proto := "grpc"
		if name == "web" || name == "traffic" {
			proto = "http"
		}
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: %s}\n", name, ns)
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  selector: {app: %s}\n  ports: [{port: 8080, appProtocol: %s}]\n", name, ns, name, proto)
	}
	addr := func(name string) string { return name + "." + ns + ".svc.cluster.local:8080" }
	b.WriteString(demoDeployment(ns, "emoji", "emoji", 2) + demoDeployment(ns, "voting", "voting", 1, "--fail-rate=0") +
		demoDeployment(ns, "web", "web", webReplicas, "--emoji-addr="+addr("emoji"), "--voting-addr="+addr("voting")) +
		demoDeployment(ns, "traffic", "traffic", 1, append([]string{"--web-url=http://" + addr("web")}, trafficArgs...)...))
	kubectl(t, b.String(), "apply", "-f", "-")
	for _, d := range []string{"emoji", "voting", "web", "traffic"} {
		kubectl(t, "", "-n", ns, "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
}

// demoDeployment is a Deployment (and its app label) name of one demo
// program, run as ServiceAccount program, with args.
func demoDeployment(ns, name, program string, replicas int, args ...string) string {
	return fmt.Sprintf(`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      serviceAccountName: %s
      containers:
      - name: app
        image: localhost/trellis:%s
        imagePullPolicy: Never
        args: [demo-app, %s, "--listen=0.0.0.0:8080"%s]
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
        # As Kubernetes advises for rolling updates: keep serving while the
        # Pod's endpoint leaves discovery, then stop.
        lifecycle: {preStop: {sleep: {seconds: 2}}}
`, name, ns, replicas, name, name, program, version, program, flags(args))
}

// The demo application in a namespace annotated for injection, meshed by
// the injector webhook: every hop through both proxies over mTLS with the
// ServiceAccounts' identities, endpoints from the destination service
// mirroring the cluster.
func TestDemoTrafficIsMutualTLS(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "emojivoto"); diagnose(t, "trellis") })
	deployDemo(t, "emojivoto", 1, "--rps=20")
	id := func(sa string) string { return "spiffe://cluster.local/ns/emojivoto/sa/" + sa }
	// web's proxy, scraped as Prometheus would: inbound from traffic, and
	// outbound to emoji and voting, all mutual TLS with the right peers.
	webIP := strings.TrimSpace(kubectl(t, "", "-n", "emojivoto", "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].status.podIP}"))
	deadline := time.Now().Add(60 * time.Second)
	for {
		in, out, plain := webTraffic(t, webIP, id)
		if plain > 0 {
			t.Fatalf("%v requests through web's proxy were not mutual TLS with the expected peer", plain)
		}
		if in["traffic"] >= 20 && out["emoji"] >= 10 && out["voting"] >= 1 {
			t.Logf("web's proxy: %v mTLS requests in from traffic; out: %v to emoji, %v to voting", in["traffic"], out["emoji"], out["voting"])
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60s web's proxy shows in %v, out %v", in, out)
		}
		time.Sleep(time.Second)
	}
}

// flags renders args as more items of a YAML flow sequence.
func flags(args []string) string {
	var b strings.Builder
	for _, a := range args {
		fmt.Fprintf(&b, ", %q", a)
	}
	return b.String()
}

// webTraffic sums web's proxy's request_total: inbound by client identity,
// outbound by server identity, and how many were not mTLS with a demo peer.
func webTraffic(t *testing.T, ip string, id func(string) string) (in, out map[string]float64, plain float64) {
	t.Helper()
	in, out = map[string]float64{}, map[string]float64{}
	fams := metricstest.Scrape(t, "http://"+ip+":4191/metrics")
	for _, m := range fams["request_total"].GetMetric() {
		l := metricstest.Labels(m)
		n := m.GetCounter().GetValue()
		switch {
		case l["direction"] == "inbound" && l["tls"] == "true" && l["client_id"] == id("traffic"):
			in["traffic"] += n
		case l["direction"] == "outbound" && l["tls"] == "true" && (l["server_id"] == id("emoji") || l["server_id"] == id("voting")):
			out[strings.TrimPrefix(l["server_id"], id(""))] += n
		default:
			plain += n
			t.Logf("unexpected series %v = %v", l, n)
		}
	}
	return in, out, plain
}

// A rolling restart of every server Deployment of the demo, under 100
// requests per second, loses no request: terminating Pods leave discovery
// and drain while new ones join, and a request a stopping Pod could not
// take goes to another (the Deployments follow Kubernetes' advice for
// rolling updates — readiness probes, a preStop pause — and the mesh must
// lose nothing more than that loses without it).
func TestRollingRestartLosesNoRequest(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "rollout") })
	deployDemo(t, "rollout", 2, "--rps=100", "--report-every=1s")
	// Steady first: a whole second of traffic, all of it answered.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if sent, ok := trafficSince(t, "rollout", time.Now().Add(-3*time.Second)); sent >= 100 && sent == ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the demo's traffic never became steady")
		}
		time.Sleep(time.Second)
	}
	start := time.Now()
	for _, d := range []string{"web", "emoji", "voting"} {
		kubectl(t, "", "-n", "rollout", "rollout", "restart", "deployment/"+d)
		kubectl(t, "", "-n", "rollout", "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	time.Sleep(3 * time.Second) // the last reports
	sent, ok := trafficSince(t, "rollout", start)
	t.Logf("during the restarts (%v): %d requests, %d answered 200", time.Since(start).Round(time.Second), sent, ok)
	if sent < int(50*time.Since(start).Seconds()) || ok != sent {
		t.Errorf("%d requests, %d failed", sent, sent-ok)
	}
}

// trafficSince sums the traffic generator's reports logged since t0:
// requests sent and answered 200.
func trafficSince(t *testing.T, ns string, t0 time.Time) (sent, ok int) {
	t.Helper()
	logs := kubectl(t, "", "-n", ns, "logs", "deployment/traffic", "-c", "app", "--since-time="+t0.UTC().Format(time.RFC3339))
	for _, line := range strings.Split(logs, "\n") {
		var n, k int
		if i := strings.Index(line, "traffic: "); i >= 0 {
			if _, err := fmt.Sscanf(line[i:], "traffic: %d requests, %d ok", &n, &k); err == nil {
				sent, ok = sent+n, ok+k
			}
		}
	}
	return sent, ok
}

// The CLI reads the cluster's mesh as it reads a local one: stat shows
// the demo's Deployments meshed, with traffic and their success rate;
// edges shows every hop secured with the ServiceAccounts' identities; tap
// streams web's live requests, and the dashboard draws the topology — all
// through the destination service's read-only API, port-forwarded by the
// API server. The metrics come from
// the destination service's embedded store, then, after `trellis upgrade
// --prometheus`, from the Prometheus it deploys.
func TestCLIReadsTheClusterMesh(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "cli"); diagnose(t, "trellis") })
	deployDemo(t, "cli", 1, "--rps=20")
	statShowsTheDemo(t, "cli")
	dashboardShowsTheDemo(t, "cli")

	kubectl(t, mustTrellis(t, controlPlaneFlags("upgrade", "--prometheus")...), "apply", "-f", "-")
	if out, err := trellis(t, "", "check", "--wait", "90s"); err != nil {
		t.Fatalf("check after upgrade --prometheus: %v\n%s", err, out)
	}
	args := kubectl(t, "", "-n", "trellis", "get", "deployment/trellis-destination", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	if !strings.Contains(args, "--prometheus-url=http://trellis-prometheus.trellis.svc.cluster.local:9090") {
		t.Fatalf("the destination service does not query the Prometheus: %s", args)
	}
	statShowsTheDemo(t, "cli")

	out, err := trellis(t, "", "tap", "deploy/web", "-n", "cli", "--duration", "5s", "--kubeconfig", kubeconfig)
	if err != nil || !strings.Contains(out, ":path=/api/") {
		t.Fatalf("tap deploy/web: %v\n%s", err, out)
	}
	t.Logf("tap, first lines:\n%s", strings.Join(strings.SplitN(out, "\n", 4)[:3], "\n"))
}

// statShowsTheDemo waits until stat and edges show the demo in ns meshed,
// serving and secured.
func statShowsTheDemo(t *testing.T, ns string) {
	t.Helper()
	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	start := time.Now()
	deadline := start.Add(90 * time.Second) // a few scrapes
	for {
		var rows []metricsapi.StatRow
		var edges []metricsapi.Edge
		problems := cliJSON(t, &rows, "stat", "-n", ns, "-t", "30s", "-o", "json")
		problems = append(problems, cliJSON(t, &edges, "edges", "-n", ns, "-t", "30s", "-o", "json")...)
		got := map[string]metricsapi.StatRow{}
		for _, r := range rows {
			got[r.Name] = r
		}
		for _, name := range []string{"web", "emoji", "voting"} {
			r := got[name]
			if r.Meshed == 0 || r.Meshed != r.Instances || r.RPS <= 0 || r.Success == nil || *r.Success < 0.99 {
				problems = append(problems, fmt.Sprintf("stat %s: %+v", name, r))
			}
		}
		want := map[string]bool{"traffic>web": true, "web>emoji": true, "web>voting": true}
		for _, e := range edges {
			if want[e.Src+">"+e.Dst] && e.Secured && e.ClientID == id(e.Src) && e.ServerID == id(e.Dst) {
				delete(want, e.Src+">"+e.Dst)
			}
		}
		if len(want) > 0 {
			problems = append(problems, fmt.Sprintf("edges lack %v: %+v", want, edges))
		}
		if len(problems) == 0 {
			w := got["web"]
			t.Logf("trellis stat after %v: web %d/%d meshed, success %.3f, %.1f rps, p99 %.1f ms", time.Since(start).Round(time.Second),
				w.Meshed, w.Instances, *w.Success, w.RPS, *w.LatencyP99)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CLI never showed the cluster's traffic: %s", strings.Join(problems, "; "))
		}
		time.Sleep(3 * time.Second)
	}
}

// cliJSON runs the CLI against the cluster with -o json and decodes its
// rows into v; it returns what went wrong.
func cliJSON(t *testing.T, v any, args ...string) []string {
	t.Helper()
	cmd := exec.Command(trellisBin, append(args, "--kubeconfig", kubeconfig)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return []string{fmt.Sprintf("trellis %s: %v: %s", strings.Join(args, " "), err, stderr.String())}
	}
	var res struct {
		Rows json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(out, &res); err != nil || json.Unmarshal(res.Rows, v) != nil {
		return []string{fmt.Sprintf("trellis %s: not rows of JSON: %v: %s", strings.Join(args, " "), err, out)}
	}
	return nil
}
