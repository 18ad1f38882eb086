package plane

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/control/resources"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// Two hostile proxies try to take web's traffic, as a compromised workload
// would: one with its own identity registers under web, one with web's own
// (stolen) join token re-points web-0 to itself. Both are refused and
// counted, and every request to web still reaches the real instance.
func TestServiceTrafficCannotBeHijacked(t *testing.T) {
	p, api := startPlane(t)
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	real := backend(t, "real", 0)
	realProxy, _ := proxy(t, p, api, "web", "--app-addr="+real, "--workload=web-0", "--service=web", "--service-port=8080="+port(real))
	waitWorkloads(t, api, 1)

	intruder := backend(t, "intruder", 0)
	proxy(t, p, api, "intruder", "--app-addr="+intruder, "--workload=intruder-0", "--service=web", "--service-port=8080="+port(intruder))
	stolen := backend(t, "stolen", 0)
	proxy(t, p, api, "web", "--app-addr="+stolen, "--workload=web-0", "--service=web", "--service-port=8080="+port(stolen))

	refusals := func() (service, owner float64) {
		resp, err := http.Get("http://" + p.Status().AdminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		fams, err := metricstest.Parse(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range fams["registry_register_refused_total"].GetMetric() {
			switch m.GetLabel()[0].GetValue() {
			case "service":
				service = m.GetCounter().GetValue()
			case "owner":
				owner = m.GetCounter().GetValue()
			}
		}
		return service, owner
	}
	deadline := time.Now().Add(10 * time.Second)
	for s, o := refusals(); s == 0 || o == 0; s, o = refusals() {
		if time.Now().After(deadline) {
			t.Fatalf("refusals counted: service %v, owner %v; want both attempts refused", s, o)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
	wls, err := api.List(context.Background(), resources.KindWorkload, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(wls) != 1 || wls[0].Metadata.Name != "web-0" {
		t.Fatalf("registered: %v; want web-0 alone", wls)
	}
	var spec resources.WorkloadSpec
	resources.Decode(wls[0].Spec, &spec)
	if want := realProxy.InboundAddr.(*net.TCPAddr).Port; spec.MeshPort != want {
		t.Fatalf("web-0 points at mesh port %d; the real proxy's is %d", spec.MeshPort, want)
	}

	local := testkit.FreeAddr(t)
	proxy(t, p, api, "client", "--upstream=web="+port(local)+":web.default.svc.cluster.local:8080")
	for range 100 {
		resp, err := http.Get("http://" + local + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(b), "real ") {
			t.Fatalf("a request to web reached %q", b)
		}
	}
}
