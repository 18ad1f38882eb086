package plane

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/testkit"
)

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// A request that reached no application — the instance's proxy could not
// connect to its application (as while a Pod shuts down, before discovery
// drops it), or the instance itself could not be connected to — is sent
// to another instance, whatever its method and with its body; the client
// sees only the answer, without the proxies' mark.
func TestUnprocessedRequestsGoToAnotherInstance(t *testing.T) {
	p, api := startPlane(t)
	var apps [2]*http.Server
	for i := range apps {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		apps[i] = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "echo-%d %s %s", i, r.Method, body)
		})}
		go apps[i].Serve(ln)
		t.Cleanup(func() { apps[i].Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, "echo", "--app-addr="+ln.Addr().String(), fmt.Sprintf("--workload=echo-%d", i), "--service=echo", "--service-port=8080="+port)
	}
	waitWorkloads(t, api, 2)
	// echo-0's application is gone; its proxy still runs and is registered.
	apps[0].Close()
	// And an instance without a proxy that cannot be connected to.
	apply(t, api, `apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: echo-2, namespace: default}
spec: {service: echo, address: 127.0.0.1, ports: [{port: 8080, targetPort: `+closedPort(t)+`}]}`)
	waitWorkloads(t, api, 3)

	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	// (A streamed body goes again only when it was read whole before the
	// answer came, which the test cannot count on.)
	for n := range 60 {
		body := strings.Repeat("x", n*100)
		var req *http.Request
		if n%2 == 0 {
			req, _ = http.NewRequest(http.MethodGet, "http://"+local+"/", nil)
		} else {
			req, _ = http.NewRequest(http.MethodPost, "http://"+local+"/", strings.NewReader(body))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "echo-1 " + req.Method + " "; resp.StatusCode != http.StatusOK || !bytes.Equal(got, []byte(want+map[bool]string{true: "", false: body}[req.Method == http.MethodGet])) {
			t.Fatalf("request %d: %d %q (%s)", n, resp.StatusCode, got, resp.Header.Get("l5d-proxy-error"))
		}
		if v := resp.Header.Get("Trellis-Proxy-Unprocessed"); v != "" {
			t.Fatalf("the proxies' mark reached the client: %q", v)
		}
	}
}

// An application cannot have a request it processed sent again by
// marking its answer as the proxies do: the mark is dropped at its proxy.
func TestApplicationCannotForgeTheUnprocessedMark(t *testing.T) {
	p, api := startPlane(t)
	var hits atomic.Int64
	for i := range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Trellis-Proxy-Unprocessed", "1")
			w.Header().Set("L5d-Proxy-Error", "connection refused")
			http.Error(w, "forged", http.StatusBadGateway)
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		proxy(t, p, api, "echo", "--app-addr="+ln.Addr().String(), fmt.Sprintf("--workload=echo-%d", i), "--service=echo", "--service-port=8080="+port)
	}
	waitWorkloads(t, api, 2)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	for n := range 10 {
		resp, err := http.Post("http://"+local+"/", "text/plain", strings.NewReader("once"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || hits.Load() != int64(n+1) {
			t.Fatalf("request %d: %d, the applications saw %d requests", n, resp.StatusCode, hits.Load())
		}
	}
}

// A request that the only instance could not take waits for another one
// to appear — as a single replica's new Pod joins in a rolling update —
// rather than failing at once.
func TestUnprocessedRequestWaitsForAnotherInstance(t *testing.T) {
	p, api := startPlane(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	old := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "old") })}
	go old.Serve(ln)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	proxy(t, p, api, "echo", "--app-addr="+ln.Addr().String(), "--workload=echo-0", "--service=echo", "--service-port=8080="+port)
	waitWorkloads(t, api, 1)
	local := testkit.FreeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	proxy(t, p, api, "client", "--upstream=echo="+lport+":echo.default.svc.cluster.local:8080")
	get := func() (int, string) {
		resp, err := http.Post("http://"+local+"/", "text/plain", strings.NewReader("vote"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != http.StatusOK || body != "old" {
		t.Fatalf("before: %d %q", code, body)
	}
	old.Close() // the old instance's application stops; its proxy stays registered
	// Past the moment in which the inbound proxy reuses its pooled
	// connection to the application unchecked (trustIdle, 1 ms): a
	// connection the application closed within it fails the request as
	// any HTTP client's would, a race of every server shutdown.
	time.Sleep(10 * time.Millisecond)
	nl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "new") })}
	go srv.Serve(nl)
	t.Cleanup(func() { srv.Close() })
	_, nport, _ := net.SplitHostPort(nl.Addr().String())
	go func() {
		time.Sleep(300 * time.Millisecond)
		apply(t, api, `apiVersion: trellis.dev/v1alpha1
kind: Workload
metadata: {name: echo-1, namespace: default}
spec: {service: echo, address: 127.0.0.1, ports: [{port: 8080, targetPort: `+nport+`}]}`)
	}()
	if code, body := get(); code != http.StatusOK || body != "new" {
		t.Fatalf("during the switch: %d %q", code, body)
	}
}
