package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

type fakeState struct {
	ready    bool
	shutdown int
}

func (f *fakeState) Ready() bool { return f.ready }
func (f *fakeState) Shutdown()   { f.shutdown++ }

func TestAdminEndpoints(t *testing.T) {
	reg := metrics.NewRegistry()
	reg.HTTP(metrics.Labels{Direction: "inbound"}).Request()
	st := &fakeState{}
	h := Handler(reg, st, nil)
	do := func(method, path, remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", "/ready", "10.0.0.1:1"); w.Code != 503 {
		t.Errorf("/ready before ready = %d", w.Code)
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
