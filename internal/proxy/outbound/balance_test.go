package outbound

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
)

// endpoint is how a test endpoint answers: its status, after delay.
type endpoint struct {
	status int
	delay  time.Duration
}

// balancedTo is the balance stage in front of endpoints that answer as
// eps says for their address, counting the requests each one got.
func balancedTo(eps map[string]endpoint, got map[string]int) balanced {
	return balanced{
		b: &balancer{classes: balance.DefaultFailures(), maxPending: DefaultMaxPending},
		next: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			addr := httpproxy.Target(r.Context())
			got[addr]++
			time.Sleep(eps[addr].delay)
			w.WriteHeader(eps[addr].status)
		}),
	}
}

// untried makes a new endpoint look fast, so that every endpoint is tried.
const untried = time.Microsecond

func TestBalancePrefersTheFasterEndpoint(t *testing.T) {
	svc := discover.Static("web:80", nil, balance.Config{DefaultRTT: untried}, "10.0.0.1:8080", "10.0.0.2:8080")
	got := map[string]int{}
	// 50 ms slower: a scheduling stall on the fast one (a loaded machine)
	// must not look like its latency.
	s := balancedTo(map[string]endpoint{"10.0.0.1:8080": {200, 0}, "10.0.0.2:8080": {200, 50 * time.Millisecond}}, got)
	for range 100 {
		w := httptest.NewRecorder()
		s.send(w, httptest.NewRequest("GET", "http://web:80/", nil), svc)
		if w.Code != 200 {
			t.Fatalf("status %d, want 200", w.Code)
		}
	}
	if got["10.0.0.2:8080"] == 0 || got["10.0.0.2:8080"] > 10 {
		t.Errorf("requests per endpoint %v: want the slow one tried, and sent at most 10 of 100", got)
	}
}

func TestBalanceEjectsAFailingEndpoint(t *testing.T) {
	cfg := balance.Config{DefaultRTT: untried, Accrual: balance.Accrual{Mode: "consecutive", Consecutive: 3, BackoffMin: time.Hour, BackoffMax: time.Hour}}
	svc := discover.Static("web:80", nil, cfg, "10.0.0.1:8080", "10.0.0.2:8080")
	got := map[string]int{}
	// The failing endpoint answers at once: by latency alone it would win
	// (by 20 ms, more than a loaded machine's stalls).
	s := balancedTo(map[string]endpoint{"10.0.0.1:8080": {200, 20 * time.Millisecond}, "10.0.0.2:8080": {503, 0}}, got)
	for range 50 {
		s.send(httptest.NewRecorder(), httptest.NewRequest("GET", "http://web:80/", nil), svc)
	}
	if got["10.0.0.2:8080"] != 3 {
		t.Errorf("the failing endpoint got %d requests, want 3 (ejected after 3 failures in a row)", got["10.0.0.2:8080"])
	}
}

func TestBalanceSendsTrafficOutsideTheMeshAsAddressed(t *testing.T) {
	got := map[string]int{}
	s := balancedTo(map[string]endpoint{"192.0.2.1:80": {200, 0}}, got)
	r := httptest.NewRequest("GET", "http://example.test/", nil)
	r = r.WithContext(httpproxy.WithTarget(r.Context(), "192.0.2.1:80", "", ""))
	s.send(httptest.NewRecorder(), r, nil)
	if got["192.0.2.1:80"] != 1 {
		t.Errorf("requests %v: want the one request sent to its own address", got)
	}
}
