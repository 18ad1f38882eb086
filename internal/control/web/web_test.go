package web

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
)

// serve starts a dashboard in front of api and returns it and a client
// holding its cookie.
func serve(t *testing.T, api http.Handler, hosts ...string) (*Server, *http.Client) {
	t.Helper()
	s, err := Start(Options{Addr: "127.0.0.1:0", Hosts: hosts}, api)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.RawQuery != "" {
		t.Fatalf("GET %s: %s, ended at %s; want the page, the token gone from the address", s.URL(), resp.Status, resp.Request.URL)
	}
	return s, c
}

func get(t *testing.T, c *http.Client, addr, path, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
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
	s, c := serve(t, api, "mesh.example.com")
	addr := s.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	for _, host := range []string{"", "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "mesh.example.com:" + port} {
		resp, body := get(t, c, addr, "/", host)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<script type="module" src="/app.js">`) {
			t.Errorf("Host %q: GET / = %s %q", host, resp.Status, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("Host %q: Content-Security-Policy %q", host, csp)
		}
	}
	for _, f := range []string{"/app.js", "/style.css"} {
		if resp, _ := get(t, c, addr, f, ""); resp.StatusCode != http.StatusOK || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: %s", f, resp.Status)
		}
	}
	if resp, body := get(t, c, addr, "/v1/stat?kind=workload", ""); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"/v1/stat"`) {
		t.Errorf("GET /v1/stat: %s %q, want the API's answer", resp.Status, body)
	}
}

func TestTheAPINeedsTheToken(t *testing.T) {
	called := 0
	s, _ := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called++ }))
	addr := s.Addr().String()
	// Another local user, or another site's page, has no cookie.
	if resp, _ := get(t, http.DefaultClient, addr, "/v1/stat", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/stat without the cookie: %s, want 401", resp.Status)
	}
	jar, _ := cookiejar.New(nil)
	guess := &http.Client{Jar: jar}
	if resp, _ := get(t, guess, addr, "/?token=guess", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /?token=guess: %s, want 401", resp.Status)
	}
	if resp, _ := get(t, guess, addr, "/v1/stat", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v1/stat after a wrong token: %s, want 401", resp.Status)
	}
	// The pages themselves hold nothing of the mesh.
	if resp, _ := get(t, http.DefaultClient, addr, "/app.js", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /app.js without the cookie: %s", resp.Status)
	}
	if called != 0 {
		t.Errorf("the API answered %d requests without the token", called)
	}
	resp, err := http.DefaultClient.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var ck *http.Cookie
	for _, c := range resp.Request.Response.Cookies() {
		ck = c
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Errorf("the token's cookie: %+v, want HttpOnly, SameSite=Strict, Path=/", ck)
	}
}

func TestRefusesOtherHosts(t *testing.T) {
	called := false
	s, c := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	addr := s.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	// A DNS-rebinding page reaches the port by a name it controls.
	for _, host := range []string{"attacker.example:" + port, "attacker.example", "localhost:1", "127.0.0.2:" + port, "localhost.:" + port} {
		for _, path := range []string{"/", "/v1/stat"} {
			resp, body := get(t, c, addr, path, host)
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
	s, c := serve(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(m, "http://"+s.Addr().String()+"/v1/resources", strings.NewReader("{}"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET" {
			t.Errorf("%s: %s, want 405", m, resp.Status)
		}
	}
	if called {
		t.Error("a request that is not a GET reached the API")
	}
}

func TestListenNeedsExposeBeyondLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "[::]:0", ":0", "10.1.2.3:0", "example.com:0"} {
		if s, err := Start(Options{Addr: addr}, nil); err == nil || !strings.Contains(err.Error(), "--web-expose") {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%s) = %v; want a refusal naming --web-expose", addr, err)
		}
	}
	s, err := Start(Options{Addr: "0.0.0.0:0", Expose: true}, nil)
	if err != nil {
		t.Fatalf("Start(0.0.0.0:0, expose): %v", err)
	}
	defer s.Close()
	// A wildcard listener's URL names loopback, which it answers to.
	if u := s.URL(); !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Errorf("URL of a dashboard on 0.0.0.0: %s, want it on 127.0.0.1", u)
	}
	if _, err := Start(Options{Addr: "no-port"}, nil); err == nil {
		t.Error("Listen(no-port): no error")
	}
}

func TestAnyPortWhenTheDefaultIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if _, err := Start(Options{Addr: taken.Addr().String()}, nil); err == nil {
		t.Fatal("Start on a taken port: no error")
	}
	s, err := Start(Options{Addr: taken.Addr().String(), AnyPort: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Addr().String() == taken.Addr().String() {
		t.Errorf("listening on %s twice", s.Addr())
	}
}
