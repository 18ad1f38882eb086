package web

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func serve(t *testing.T, api http.Handler, hosts ...string) string {
	t.Helper()
	ln, err := Listen(Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(api, ln.Addr(), hosts)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func get(t *testing.T, addr, path, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesPagesAndAPIToItsOwnHost(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path})
	})
	addr := serve(t, api, "mesh.example.com")
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"", "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "mesh.example.com:" + port} {
		resp, body := get(t, addr, "/", host)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<script type="module" src="/app.js">`) {
			t.Errorf("Host %q: GET / = %s %q", host, resp.Status, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("Host %q: Content-Security-Policy %q", host, csp)
		}
	}
	for _, f := range []string{"/app.js", "/style.css"} {
		if resp, _ := get(t, addr, f, ""); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %s", f, resp.Status)
		}
	}
	if resp, body := get(t, addr, "/v1/stat?kind=workload", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"/v1/stat"`) {
		t.Errorf("GET /v1/stat: %s %q, want the API's answer", resp.Status, body)
	}
}

func TestRefusesOtherHosts(t *testing.T) {
	called := false
	addr := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	_, port, _ := net.SplitHostPort(addr)
	// A DNS-rebinding page reaches the port by a name it controls.
	for _, host := range []string{"attacker.example:" + port, "attacker.example", "localhost:1", "127.0.0.2:" + port, "localhost.:" + port} {
		for _, path := range []string{"/", "/v1/stat"} {
			resp, body := get(t, addr, path, host)
			if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(body, "not one this dashboard serves") {
				t.Errorf("Host %q %s: %s %q, want 421", host, path, resp.Status, body)
			}
		}
	}
	if called {
		t.Error("the API answered a request for another host")
	}
}

func TestReadOnly(t *testing.T) {
	called := false
	addr := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(m, "http://"+addr+"/v1/resources", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %s, want 405", m, resp.Status)
		}
	}
	if called {
		t.Error("a request that is not a GET reached the API")
	}
}

func TestListenNeedsExposeBeyondLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "10.1.2.3:0", "example.com:0"} {
		if ln, err := Listen(Options{Addr: addr}); err == nil || !strings.Contains(err.Error(), "--web-expose") {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("Listen(%s) = %v; want a refusal naming --web-expose", addr, err)
		}
	}
	ln, err := Listen(Options{Addr: "0.0.0.0:0", Expose: true})
	if err != nil {
		t.Fatalf("Listen(0.0.0.0:0, expose): %v", err)
	}
	ln.Close()
	if _, err := Listen(Options{Addr: "no-port"}); err == nil {
		t.Error("Listen(no-port): no error")
	}
}

func TestAnyPortWhenTheDefaultIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := Listen(Options{Addr: taken.Addr().String()}); err == nil {
		t.Fatal("Listen on a taken port: no error")
	}
	ln, err := Listen(Options{Addr: taken.Addr().String(), AnyPort: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() == taken.Addr().String() {
		t.Errorf("listening on %s twice", ln.Addr())
	}
}
