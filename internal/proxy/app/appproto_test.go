package app_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshtest"
	"github.com/trellis-mesh/trellis/internal/proxy/config"
)

// serveOnly serves h over HTTP/1.1 only, or over h2c only.
func serveOnly(t *testing.T, h2 bool, h http.HandlerFunc) string {
	var p http.Protocols
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	srv := &http.Server{Handler: h, Protocols: &p}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// echoVersion answers with the protocol it was spoken to in, the request
// body, and a trailer.
func echoVersion(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Trailer", "X-Sum")
	w.Header().Set("X-Proto", r.Proto)
	io.WriteString(w, "got:"+string(body))
	w.Header().Set("X-Sum", "trailer-"+r.Trailer.Get("X-Req-Sum"))
}

func client(h2 bool) *http.Client {
	var p http.Protocols
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
}

// A request reaches the application in the HTTP version the application
// speaks, whatever the client's: an HTTP/2 client reaches an
// HTTP/1.1-only application (learned by asking it), and an HTTP/1.1
// client an h2c-only one whose port is declared http2 — bodies, request
// and response trailers intact.
func TestApplicationProtocolFollowsTheApplication(t *testing.T) {
	ids := meshtest.StartIdentity(t, time.Hour)
	for _, tc := range []struct {
		name             string
		clientH2, appH2  bool
		declare, wantApp string
	}{
		{"h2 client, HTTP/1.1 app", true, false, "", "HTTP/1.1"},
		{"h2 client, HTTP/1.1 app declared http", true, false, "http", "HTTP/1.1"},
		{"HTTP/1.1 client, h2c app declared http2", false, true, "http2", "HTTP/2.0"},
		{"h2 client, h2c app", true, true, "", "HTTP/2.0"},
		{"HTTP/1.1 client, HTTP/1.1 app", false, false, "", "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := serveOnly(t, tc.appH2, echoVersion)
			entry, _, _, _ := meshPairWith(t, ids, app, func(c *config.Config) {
				if tc.declare != "" {
					c.ServicePorts = []config.ServicePort{{Port: 8080, TargetPort: port(app), Protocol: tc.declare}}
				}
			})
			for range 3 { // the first request may wait for the answer; the rest use it
				req, _ := http.NewRequest("POST", "http://"+entry+"/", io.NopCloser(strings.NewReader("hello")))
				req.Trailer = http.Header{"X-Req-Sum": {"42"}}
				resp, err := client(tc.clientH2).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(body) != "got:hello" || resp.Header.Get("X-Proto") != tc.wantApp {
					t.Fatalf("%d %q, the app saw %q (want %s): %s", resp.StatusCode, body, resp.Header.Get("X-Proto"), tc.wantApp, resp.Header.Get("L5d-Proxy-Error"))
				}
				if got := resp.Trailer.Get("X-Sum"); got != "trailer-42" {
					t.Errorf("trailer X-Sum = %q, want trailer-42 (request trailer relayed, response trailer back)", got)
				}
			}
		})
	}
}
