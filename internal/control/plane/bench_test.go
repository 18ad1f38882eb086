package plane

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// BenchmarkRoutingStack measures, in one run, the CPU one request costs
// the whole process (client, client proxy, server proxy over mTLS, backend)
// with three client-side stacks, and reports each against the first:
//
//   - static: an --upstream port naming the server proxy and its identity
//     (no discovery, no balancing, no routes);
//
//   - discovered: the service by name, balanced per request (peak EWMA,
//     failure accrual);
//
//   - routed: the same through an HTTPRoute (a header match, a weighted
//     split over two backends, a retry policy with its budget).
//
//     go test -run XXX -bench RoutingStack -benchtime 20000x ./internal/control/plane/
func BenchmarkRoutingStack(b *testing.B) {
	p, api := startPlane(b)
	var serverID, serverApp, serverIn string
	for i, svc := range []string{"bench-a", "bench-b"} {
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
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		px, _ := proxy(b, p, api, svc, "--app-addr="+ln.Addr().String(), fmt.Sprintf("--workload=%s-%d", svc, i), "--service="+svc, "--service-port=8080="+port)
		if i == 0 {
			serverID, serverApp, serverIn = "spiffe://cluster.local/ns/default/sa/"+svc, ln.Addr().String(), px.InboundAddr.String()
		}
	}
	waitWorkloads(b, api, 2)
	apply(b, api, `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: bench-r, namespace: default}
spec: {ports: [{port: 8080, protocol: http}]}`, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench-r, namespace: default}
spec:
  parentRefs: [{kind: Service, name: bench-r}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "1"}]}]
    backendRefs: [{name: bench-b, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: bench-a, port: 8080, weight: 90}, {name: bench-b, port: 8080, weight: 10}]
    retry: {codes: [503], attempts: 2}`)
	_, serverPort, _ := net.SplitHostPort(serverIn)
	upstream := func(target string) string {
		local := testkit.FreeAddr(b)
		_, lport, _ := net.SplitHostPort(local)
		proxy(b, p, api, "client", "--upstream=up="+lport+":"+target, "--mesh-port="+serverPort)
		return "http://" + local + "/"
	}
	scenarios := []struct{ name, url string }{
		{"static", upstream(serverApp + "@" + serverID)},
		{"discovered", upstream("bench-a.default.svc.cluster.local:8080")},
		{"routed", upstream("bench-r.default.svc.cluster.local:8080")},
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	get := func(url string) {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %s %s", url, resp.Status, resp.Header.Get("l5d-proxy-error"))
		}
	}
	for _, s := range scenarios { // warm up: connections, discovery, routes
		for deadline := time.Now().Add(10 * time.Second); ; {
			resp, err := client.Get(s.url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: not answering 200 within 10s", s.name)
			}
		}
		for range 200 {
			get(s.url)
		}
	}
	b.ResetTimer()
	cpu := map[string]float64{}
	for _, s := range scenarios {
		before := cpuTime()
		var wg sync.WaitGroup
		per := max(b.N/8, 1)
		for range 8 {
			wg.Go(func() {
				for range per {
					get(s.url)
				}
			})
		}
		wg.Wait()
		cpu[s.name] = float64(cpuTime()-before) / float64(per*8)
	}
	b.StopTimer()
	for _, s := range scenarios {
		b.ReportMetric(cpu[s.name]/1e3, s.name+"-cpu-µs/req")
	}
	b.ReportMetric(cpu["discovered"]/cpu["static"], "discovered/static")
	b.ReportMetric(cpu["routed"]/cpu["static"], "routed/static")
}

// cpuTime is the process's user + system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
