package plane

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// BenchmarkAuthorization measures, in one run, the CPU one request costs
// the whole process (client, client proxy, server proxy over mTLS,
// backend) to a workload no Server selects (the default policy decides)
// and to one whose Server has 20 HTTPRoutes and 100 AuthorizationPolicies
// — the request matching the last route in precedence and allowed by the
// last policy tried — and reports the second against the first. The two
// are measured in alternating rounds.
//
//	go test -run XXX -bench Authorization -benchtime 20000x ./internal/control/plane/
func BenchmarkAuthorization(b *testing.B) {
	p, api := startPlane(b)
	ports := map[string]string{}
	for _, svc := range []string{"open", "guarded"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "2")
			io.WriteString(w, "ok")
		})}
		go srv.Serve(ln)
		b.Cleanup(func() { srv.Close() })
		_, port := splitPort(ln.Addr().String())
		ports[svc] = port
		proxy(b, p, api, svc, "--app-addr="+ln.Addr().String(), "--workload="+svc+"-0", "--service="+svc, "--service-port=8080="+port, "--workload-label=app="+svc)
	}
	waitWorkloads(b, api, 2)
	docs := []string{fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: Server\nmetadata: {name: guarded, namespace: default}\n"+
		"spec: {podSelector: {matchLabels: {app: guarded}}, port: %s}\n", ports["guarded"])}
	for i := range 20 {
		docs = append(docs, fmt.Sprintf("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r%02d, namespace: default}\n"+
			"spec:\n  parentRefs: [{group: policy.trellis.dev, kind: Server, name: guarded}]\n"+
			"  rules: [{matches: [{method: GET, path: {type: PathPrefix, value: /p%02d}}]}]\n", i, i))
	}
	for i := range 100 {
		target := fmt.Sprintf("{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r%02d}", i%20)
		id, name := fmt.Sprintf("spiffe://cluster.local/ns/default/sa/someone-%d", i), fmt.Sprintf("a%03d", i)
		if i == 99 {
			target, id, name = "{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r00}", "spiffe://cluster.local/ns/default/sa/client", "zz-client"
		}
		docs = append(docs,
			fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: MeshTLSAuthentication\nmetadata: {name: %s, namespace: default}\nspec: {identities: ['%s']}\n", name, id),
			fmt.Sprintf("apiVersion: policy.trellis.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: default}\n"+
				"spec: {targetRef: %s, requiredAuthenticationRefs: [{group: policy.trellis.dev, kind: MeshTLSAuthentication, name: %s}]}\n", name, target, name))
	}
	apply(b, api, docs...)
	url := map[string]string{}
	for _, svc := range []string{"open", "guarded"} {
		local := testkit.FreeAddr(b)
		_, lport := splitPort(local)
		proxy(b, p, api, "client", "--upstream=up="+lport+":"+svc+".default.svc.cluster.local:8080")
		// /p00 matches the shortest prefix of all: the last route tried.
		url[svc] = "http://" + local + "/p00/x"
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(u string) error {
		resp, err := client.Get(u)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s %s", u, resp.Status, resp.Header.Get("l5d-proxy-error"))
		}
		return nil
	}
	for svc, u := range url { // warm up; the policy in force
		for deadline := time.Now().Add(10 * time.Second); get(u) != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: %v", svc, get(u))
			}
		}
		for range 200 {
			if err := get(u); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	cpu, n := map[string]int64{}, map[string]int{}
	const rounds = 4
	for range rounds {
		for _, svc := range []string{"open", "guarded"} {
			before := cpuTime()
			var wg sync.WaitGroup
			per := max(b.N/rounds/8, 1)
			for range 8 {
				wg.Go(func() {
					for range per {
						if err := get(url[svc]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			cpu[svc] += cpuTime() - before
			n[svc] += per * 8
		}
	}
	b.StopTimer()
	per := func(svc string) float64 { return float64(cpu[svc]) / float64(n[svc]) }
	b.ReportMetric(per("open")/1e3, "open-cpu-µs/req")
	b.ReportMetric(per("guarded")/1e3, "guarded-cpu-µs/req")
	b.ReportMetric(per("guarded")/per("open"), "guarded/open")
}

func splitPort(addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}
