package admin

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

type fakeState struct {
	ready    bool
	shutdown int
}

func (f *fakeState) NotReady() string {
	if !f.ready {
		return "starting"
	}
	return ""
}
func (f *fakeState) Shutdown() { f.shutdown++ }

func TestAdminEndpoints(t *testing.T) {
	reg := metrics.NewRegistry()
	reg.HTTP(metrics.Labels{Direction: "inbound"}).Request()
	st := &fakeState{}
	h := Handler(reg, st, nil, nil)
	do := func(method, path, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", "/ready", "10.0.0.1:1"); w.Code != 503 || !strings.Contains(w.Body.String(), "not ready: starting") {
		t.Errorf("/ready before ready = %d %q", w.Code, w.Body)
	}
	st.ready = true
	if w := do("GET", "/ready", "10.0.0.1:1"); w.Code != 200 {
		t.Errorf("/ready = %d", w.Code)
	}
	if w := do("GET", "/live", "10.0.0.1:1"); w.Code != 200 {
		t.Errorf("/live = %d", w.Code)
	}
	if w := do("GET", "/metrics", "10.0.0.1:1"); w.Code != 200 || !strings.Contains(w.Body.String(), `request_total{direction="inbound"} 1`) {
		t.Errorf("/metrics = %d %q", w.Code, w.Body.String())
	}
	if w := do("POST", "/shutdown", "10.0.0.1:1"); w.Code != http.StatusForbidden || st.shutdown != 0 {
		t.Errorf("remote /shutdown = %d, shutdowns %d; want 403 and none", w.Code, st.shutdown)
	}
	if w := do("GET", "/shutdown", "127.0.0.1:1"); w.Code != http.StatusMethodNotAllowed || st.shutdown != 0 {
		t.Errorf("GET /shutdown = %d", w.Code)
	}
	if w := do("POST", "/shutdown", "[::1]:1"); w.Code != 200 || st.shutdown != 1 {
		t.Errorf("loopback POST /shutdown = %d, shutdowns %d", w.Code, st.shutdown)
	}
}

// /probe/tcp/PORT answers whether the application listens on PORT (one of
// those it was given), over a real admin server and a real application
// port that opens and closes.
func TestTCPProbe(t *testing.T) {
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, ps, _ := net.SplitHostPort(app.Addr().String())
	port, _ := strconv.Atoi(ps)
	srv := httptest.NewServer(Handler(metrics.NewRegistry(), &fakeState{}, nil, map[uint16]bool{uint16(port): true}))
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get("/probe/tcp/" + ps); c != http.StatusOK {
		t.Errorf("listening port: %d", c)
	}
	app.Close()
	if c := get("/probe/tcp/" + ps); c != http.StatusServiceUnavailable {
		t.Errorf("closed port: %d", c)
	}
	for _, p := range []string{"22", "x", "70000"} {
		if c := get("/probe/tcp/" + p); c != http.StatusNotFound {
			t.Errorf("/probe/tcp/%s: %d; want 404", p, c)
		}
	}
}
