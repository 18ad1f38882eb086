package plane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/control/localapi"
	"github.com/trellis-mesh/trellis/internal/control/store"
	"github.com/trellis-mesh/trellis/internal/testkit"
)

// apply writes YAML documents through the local API, as `trellis apply` does.
func apply(t *testing.T, api *localapi.Client, docs ...string) {
	t.Helper()
	var items []store.Resource
	for _, d := range docs {
		b, err := yaml.YAMLToJSON([]byte(d))
		if err != nil {
			t.Fatal(err)
		}
		var r store.Resource
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		items = append(items, r)
	}
	if _, err := api.Apply(context.Background(), items); err != nil {
		t.Fatal(err)
	}
}

// instance registers an in-process backend as one workload of service svc.
func instance(t *testing.T, p *Plane, api *localapi.Client, svc, name string, h http.HandlerFunc) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	proxy(t, p, api, svc, "--app-addr="+ln.Addr().String(), "--workload="+name, "--service="+svc, "--service-port=8080="+port)
}

// client starts a client proxy with an upstream port for service and
// returns its address.
func client(t *testing.T, p *Plane, api *localapi.Client, service string) string {
	t.Helper()
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=up="+lport+":"+service+".default.svc.cluster.local:8080")
	return local
}

type reply struct {
	status int
	body   string
	header http.Header
}

func call(t *testing.T, c *http.Client, method, url string, header map[string]string) reply {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Error(err)
		return reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header}
}

const webService = `apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 8080, protocol: http}]}`

func webRoute(v1, v2 int) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{group: core, kind: Service, name: web, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: web-v2, port: 8080}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: web-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 200ms}
    backendRefs: [{name: web-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /app}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-routed, value: "yes"}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: x-route, value: web}]}
    backendRefs: [{name: web-v1, port: 8080, weight: %d}, {name: web-v2, port: 8080, weight: %d}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}`, v1, v2)
}

// HTTPRoute matching, a weighted split and its change, header modifiers,
// a redirect, a request timeout that cancels the backend, and 404 for
// requests no rule matches — through real proxies and the real control plane.
func TestHTTPRoutes(t *testing.T) {
	p, api := startPlane(t)
	var cancelled atomic.Int64
	for _, v := range []string{"v1", "v2"} {
		instance(t, p, api, "web-"+v, "web-"+v+"-0", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				select {
				case <-r.Context().Done():
					cancelled.Add(1)
					return
				case <-time.After(5 * time.Second):
				}
			}
			fmt.Fprintf(w, "%s %s", v, r.Header.Get("x-routed"))
		})
	}
	apply(t, api, webService, webRoute(90, 10))
	base := "http://" + client(t, p, api, "web")
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// The route reaches the proxy within a moment of being applied.
	deadline := time.Now().Add(5 * time.Second)
	for call(t, c, "GET", base+"/nothing", nil).status != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatal("the route never took effect")
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	if r := call(t, c, "GET", base+"/nothing", nil); r.header.Get("l5d-proxy-error") != "no route matches the request" {
		t.Errorf("404 without the mesh's reason: %v", r.header)
	}
	if r := call(t, c, "GET", base+"/other", map[string]string{"x-version": "v2"}); r.body != "v2 " {
		t.Errorf("header match: %q", r.body)
	}
	// A longer path prefix wins over a header match (Gateway API precedence).
	if r := call(t, c, "GET", base+"/app", map[string]string{"x-version": "v2"}); !strings.HasSuffix(r.body, " yes") {
		t.Errorf("precedence: %q", r.body)
	}
	if r := call(t, c, "GET", base+"/items/17", nil); r.body != "v2 " {
		t.Errorf("regex path match: %q", r.body)
	}
	if r := call(t, c, "GET", base+"/old?x=1", nil); r.status != 301 || r.header.Get("Location") != "http://"+strings.TrimPrefix(base, "http://")+"/new?x=1" {
		t.Errorf("redirect: %d %q", r.status, r.header.Get("Location"))
	}
	if r := call(t, c, "GET", base+"/app", nil); !strings.HasSuffix(r.body, " yes") || r.header.Get("x-route") != "web" {
		t.Errorf("header modifiers: body %q, headers %v", r.body, r.header)
	}
	start := time.Now()
	if r := call(t, c, "GET", base+"/slow", nil); r.status != http.StatusGatewayTimeout {
		t.Errorf("past the request timeout: %d %q", r.status, r.body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the 200ms timeout answered after %v", d)
	}
	for deadline := time.Now().Add(5 * time.Second); cancelled.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
	if cancelled.Load() == 0 {
		t.Error("the backend never saw the timed-out request cancelled")
	}

	// 10,000 requests split 90/10 land within 2 points.
	split := func(n int) (v2 float64, failed int) {
		var mu sync.Mutex
		var got, bad int
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range n / 8 {
					r := call(t, c, "GET", base+"/app", nil)
					mu.Lock()
					if r.status != 200 {
						bad++
					} else if strings.HasPrefix(r.body, "v2") {
						got++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return float64(got) / float64(n), bad
	}
	share, failed := split(10000)
	if math.Abs(share-0.10) > 0.02 || failed > 0 {
		t.Fatalf("90/10 split: v2 got %.1f%%, %d failed", 100*share, failed)
	}
	t.Logf("90/10 split over 10,000 requests: v2 got %.2f%%", 100*share)

	// New weights take effect within 1 s, without a failed request.
	var failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r := call(t, c, "GET", base+"/app", nil); r.status != 200 {
				failures.Add(1)
			}
		}
	})
	apply(t, api, webRoute(0, 100))
	changed := time.Now()
	for call(t, c, "GET", base+"/app", nil).body != "v2 yes" || !allV2(t, c, base) {
		if time.Since(changed) > time.Second {
			t.Fatal("new weights not in effect within 1s")
		}
	}
	t.Logf("new weights in effect %v after apply", time.Since(changed).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Errorf("%d requests failed while the weights changed", failures.Load())
	}
}

func allV2(t *testing.T, c *http.Client, base string) bool {
	for range 20 {
		if !strings.HasPrefix(call(t, c, "GET", base+"/app", nil).body, "v2") {
			return false
		}
	}
	return true
}

// A backend failing 20% of requests: with retries, clients see ≥ 99.9%
// success. One failing every request: the retry budget holds its load to
// 1.2 × the requests + 10/s, and clients get their errors fast.
func TestRetriesAndBudget(t *testing.T) {
	p, api := startPlane(t)
	var flakyHits, downHits atomic.Int64
	instance(t, p, api, "flaky", "flaky-0", func(w http.ResponseWriter, r *http.Request) {
		flakyHits.Add(1)
		if rand.IntN(5) == 0 {
			http.Error(w, "flaky", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	instance(t, p, api, "down", "down-0", func(w http.ResponseWriter, r *http.Request) {
		downHits.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	// As fast as the test can send, 20% failures need about 25% retries:
	// more than the default budget (20% + 10/s), so flaky's allows 50%.
	for svc, budget := range map[string]string{"flaky": "50%", "down": "20%"} {
		apply(t, api, fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: %s
  namespace: default
  annotations: {retry.trellis.dev/budget-ratio: "%s"}
spec:
  parentRefs: [{kind: Service, name: %s}]
  rules:
  - retry: {codes: [500, 503], attempts: 5}`, svc, budget, svc))
	}
	c := &http.Client{Timeout: 10 * time.Second}
	flaky := "http://" + client(t, p, api, "flaky")
	waitRouted(t, c, flaky, &flakyHits)

	const n = 4000
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range n / 4 {
				if call(t, c, "POST", flaky+"/", nil).status == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	rate := float64(ok.Load()) / n
	t.Logf("20%% failing backend with retries: %.2f%% success, %d backend requests for %d", 100*rate, flakyHits.Load(), n)
	if rate < 0.999 {
		t.Errorf("success %.3f%% with retries; want ≥ 99.9%%", 100*rate)
	}

	// 100 requests a second for 60 s to a backend failing them all.
	down := "http://" + client(t, p, api, "down")
	waitRouted(t, c, down, &downHits)
	downHits.Store(0)
	duration, rps := 60*time.Second, 100
	var sent atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	tick := time.NewTicker(time.Second / time.Duration(rps))
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		<-tick.C
		wg.Go(func() {
			sent.Add(1)
			start := time.Now()
			call(t, c, "GET", down+"/", nil)
			mu.Lock()
			latencies = append(latencies, time.Since(start))
			mu.Unlock()
		})
	}
	tick.Stop()
	wg.Wait()
	limit := 1.2*float64(sent.Load()) + 10*duration.Seconds()
	slices.Sort(latencies)
	p50, worst := latencies[len(latencies)/2], latencies[len(latencies)-1]
	t.Logf("100%% failing backend: %d requests sent, %d reached the backend (limit %.0f); answers p50 %v, slowest %v",
		sent.Load(), downHits.Load(), limit, p50, worst.Round(time.Millisecond))
	if float64(downHits.Load()) > limit {
		t.Errorf("the backend got %d requests for %d sent; the budget allows at most %.0f", downHits.Load(), sent.Load(), limit)
	}
	// Failure accrual ejects it; requests wait at most the 3 s fail-fast
	// time for an endpoint, then the service fails fast.
	if p50 > 100*time.Millisecond || worst > 4*time.Second {
		t.Errorf("errors came back in p50 %v, worst %v; want fast failures", p50, worst)
	}
}

// waitRouted waits until the route's retries are in effect: the backend
// has seen more requests than were sent.
func waitRouted(t *testing.T, c *http.Client, url string, hits *atomic.Int64) {
	t.Helper()
	start := hits.Load()
	deadline := time.Now().Add(5 * time.Second)
	for sent := int64(1); ; sent++ {
		call(t, c, "GET", url+"/", nil)
		if hits.Load()-start > sent {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no retries within 5s: the route did not take effect")
		}
	}
}
