package kube

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/metricstest"
)

// The demo application (the same four programs as `trellis demo`) in a
// namespace annotated for injection, meshed by the injector webhook:
// traffic → web → emoji (2 replicas) and voting, by their Services' DNS
// names, every hop through both proxies over mTLS with the
// ServiceAccounts' identities, endpoints from the destination service
// mirroring the cluster.
func TestDemoTrafficIsMutualTLS(t *testing.T) {
	needCluster(t)
	identityService(t)
	t.Cleanup(func() { diagnose(t, "emojivoto"); diagnose(t, "trellis") })
	var svcs strings.Builder
	svcs.WriteString("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: emojivoto\n  annotations: {trellis.dev/inject: enabled}\n")
	for _, name := range []string{"web", "emoji", "voting", "traffic"} {
		proto := "grpc"
		if name == "web" || name == "traffic" {
			proto = "http"
		}
		fmt.Fprintf(&svcs, "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: %s, namespace: emojivoto}\n", name)
		fmt.Fprintf(&svcs, "---\napiVersion: v1\nkind: Service\nmetadata: {name: %s, namespace: emojivoto}\nspec:\n  selector: {app: %s}\n  ports: [{port: 8080, appProtocol: %s}]\n", name, name, proto)
	}
	addr := func(name string) string { return name + ".emojivoto.svc.cluster.local:8080" }
	deployment := func(name string, replicas int, args ...string) string {
		return fmt.Sprintf(`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: emojivoto}
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
`, name, replicas, name, name, name, version, name, flags(args))
	}
	kubectl(t, svcs.String()+deployment("emoji", 2)+deployment("voting", 1, "--fail-rate=0")+
		deployment("web", 1, "--emoji-addr="+addr("emoji"), "--voting-addr="+addr("voting"))+
		deployment("traffic", 1, "--web-url=http://"+addr("web"), "--rps=20"), "apply", "-f", "-")
	for _, d := range []string{"emoji", "voting", "web", "traffic"} {
		kubectl(t, "", "-n", "emojivoto", "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
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
	resp, err := http.Get("http://" + ip + ":4191/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := metricstest.Parse(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range fams["request_total"].GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
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
