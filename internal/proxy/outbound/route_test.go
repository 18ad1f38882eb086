package outbound

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
	"github.com/trellis-mesh/trellis/internal/metricstest"
	"github.com/trellis-mesh/trellis/internal/proxy/balance"
	"github.com/trellis-mesh/trellis/internal/proxy/discover"
	"github.com/trellis-mesh/trellis/internal/proxy/httpproxy"
	"github.com/trellis-mesh/trellis/internal/proxy/metrics"
)

// fixed is discovery with a fixed set of services.
type fixed map[string]*discover.Service

func (f fixed) Resolve(_ context.Context, authority string) *discover.Service { return f[authority] }

// routed serves a request addressed to authority through the route stage
// over svcs; next stands for the balance stage and what follows, and sees
// the backend service the stage chose.
func routed(t *testing.T, svcs fixed, next func(w http.ResponseWriter, r *http.Request, backend *discover.Service), method, authority, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	return routedWith(t, nil, svcs, next, method, authority, path, body)
}

// routedWith is routed, the route stage counting in reg.
func routedWith(t *testing.T, reg *metrics.Registry, svcs fixed, next func(w http.ResponseWriter, r *http.Request, backend *discover.Service), method, authority, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	h := newRouter(svcs, sendFunc(next), reg, nil)
	r := httptest.NewRequest(method, "http://"+authority+path, strings.NewReader(body))
	r = r.WithContext(httpproxy.WithTarget(r.Context(), authority, "", ""))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// sendFunc stands for the balance stage.
type sendFunc func(w http.ResponseWriter, r *http.Request, svc *discover.Service)

func (f sendFunc) send(w http.ResponseWriter, r *http.Request, svc *discover.Service) { f(w, r, svc) }

func prefix(p string) *destinationv1.PathMatch {
	return &destinationv1.PathMatch{Kind: destinationv1.PathMatch_PREFIX, Value: p}
}

func static(authority string, p *destinationv1.Profile) *discover.Service {
	return discover.Static(authority, p, balance.Config{}, "10.0.0.1:8080")
}

func TestRouteMatchesRulesToBackends(t *testing.T) {
	svcs := fixed{
		"web:80": static("web:80", &destinationv1.Profile{
			Rules: []*destinationv1.RouteRule{
				{Route: "default/api", Kind: "HTTPRoute", Backends: []*destinationv1.WeightedBackend{{Authority: "api:80", Weight: 1}}},
				{Route: "default/old", Kind: "HTTPRoute", Redirect: &destinationv1.Redirect{Path: "/new", StatusCode: 301}},
				{Route: "default/rest", Kind: "HTTPRoute"},
			},
			Matches: []*destinationv1.RouteMatch{
				{Rule: 0, Path: prefix("/api")},
				{Rule: 1, Path: &destinationv1.PathMatch{Kind: destinationv1.PathMatch_EXACT, Value: "/old"}},
				{Rule: 2, Path: prefix("/static"), Method: "GET"},
			},
		}),
		"api:80": static("api:80", &destinationv1.Profile{}),
	}
	saw := ""
	next := func(w http.ResponseWriter, r *http.Request, backend *discover.Service) {
		saw = "?"
		if backend == svcs["api:80"] {
			saw = "api"
		} else if backend == svcs["web:80"] {
			saw = "web"
		}
		io.WriteString(w, "ok")
	}
	for _, tc := range []struct {
		method, path string
		status       int
		backend      string
		location     string
	}{
		{"GET", "/api/list", 200, "api", ""},
		{"POST", "/api", 200, "api", ""},
		{"GET", "/static/x.css", 200, "web", ""},
		{"POST", "/static/x.css", 404, "", ""}, // a route matches the method too
		{"GET", "/nothing", 404, "", ""},
		{"GET", "/old", 301, "", "http://web:80/new"},
	} {
		saw = ""
		w := routed(t, svcs, next, tc.method, "web:80", tc.path, "")
		if w.Code != tc.status || saw != tc.backend || w.Header().Get("Location") != tc.location {
			t.Errorf("%s %s: %d to %q (Location %q); want %d to %q (Location %q)", tc.method, tc.path, w.Code, saw, w.Header().Get("Location"), tc.status, tc.backend, tc.location)
		}
	}
	// A service without routes is sent as addressed.
	saw = ""
	if w := routed(t, svcs, next, "GET", "api:80", "/anything", ""); w.Code != 200 || saw != "api" {
		t.Errorf("a service without routes: %d to %q", w.Code, saw)
	}
}

func retrying(attempts uint32, budget float64) fixed {
	return fixed{"web:80": static("web:80", &destinationv1.Profile{
		Rules: []*destinationv1.RouteRule{{Route: "default/web", Kind: "HTTPRoute", Retry: &destinationv1.Retry{
			Attempts: attempts, ServerErrors: true,
			Budget: &destinationv1.RetryBudget{Ratio: budget, MinPerSecond: 1, Ttl: durationpb.New(10 * time.Second)},
		}}},
		Matches: []*destinationv1.RouteMatch{{Rule: 0, Path: prefix("/")}},
	})}
}

func TestRouteRetriesWithReplayedBody(t *testing.T) {
	var calls atomic.Int32
	var bodies sync.Map
	failTwice := func(w http.ResponseWriter, r *http.Request, _ *discover.Service) {
		n := calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		bodies.Store(n, string(b))
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "third time")
	}
	// A ratio of 3: the request's deposit pays for its retries.
	w := routed(t, retrying(3, 3), failTwice, "POST", "web:80", "/vote", "yes")
	if w.Code != 200 || w.Body.String() != "third time" || calls.Load() != 3 {
		t.Fatalf("with 3 retries: %d %q after %d calls; want 200 on the third", w.Code, w.Body.String(), calls.Load())
	}
	for i := int32(1); i <= 3; i++ {
		if b, _ := bodies.Load(i); b != "yes" {
			t.Errorf("attempt %d got body %q, want the request's", i, b)
		}
	}

	calls.Store(0)
	reg := metrics.NewRegistry()
	w = routedWith(t, reg, retrying(1, 3), failTwice, "POST", "web:80", "/vote", "yes")
	if w.Code != http.StatusServiceUnavailable || calls.Load() != 2 {
		t.Errorf("with 1 retry: %d after %d calls; want the second failure", w.Code, calls.Load())
	}
	var text strings.Builder
	reg.WriteText(&text)
	fams, err := metricstest.Parse(strings.NewReader(text.String()))
	if err != nil {
		t.Fatal(err)
	}
	if n := fams.Sum("route_retry_total", map[string]string{"route_name": "default/web"}); n != 1 {
		t.Errorf("route_retry_total of the route: %v, want 1\n%s", n, text.String())
	}
}

func TestRouteRetryBudget(t *testing.T) {
	// A budget of 0 % plus 1 a second, starting empty: 20 failing requests
	// in a moment earn next to no retries.
	svcs := retrying(3, 0)
	var calls atomic.Int32
	fail := func(w http.ResponseWriter, r *http.Request, _ *discover.Service) {
		calls.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}
	for range 20 {
		routed(t, svcs, fail, "GET", "web:80", "/", "")
	}
	if n := calls.Load(); n < 20 || n > 20+2 {
		t.Errorf("20 failing requests made %d calls; the budget allows a retry or two at most", n)
	}
}

func TestRouteHedgesASlowRequest(t *testing.T) {
	svcs := fixed{"web:80": static("web:80", &destinationv1.Profile{
		Rules: []*destinationv1.RouteRule{{Route: "default/web", Kind: "HTTPRoute", Hedge: &destinationv1.Hedge{Delay: durationpb.New(20 * time.Millisecond)},
			Retry: &destinationv1.Retry{Budget: &destinationv1.RetryBudget{Ratio: 1, MinPerSecond: 10, Ttl: durationpb.New(10 * time.Second)}}}},
		Matches: []*destinationv1.RouteMatch{{Rule: 0, Path: prefix("/")}},
	})}
	var calls atomic.Int32
	slowFirst := func(w http.ResponseWriter, r *http.Request, _ *discover.Service) {
		if calls.Add(1) == 1 {
			select {
			case <-r.Context().Done(): // the hedge won: this racer is cancelled
				return
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, "fast")
	}
	start := time.Now()
	w := routed(t, svcs, slowFirst, "GET", "web:80", "/", "")
	if w.Code != 200 || w.Body.String() != "fast" || calls.Load() != 2 {
		t.Fatalf("hedged: %d %q after %d calls", w.Code, w.Body.String(), calls.Load())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the hedge answered after %v: the slow racer held the request", d)
	}
}

func TestRouteRequestTimeout(t *testing.T) {
	svcs := fixed{"web:80": static("web:80", &destinationv1.Profile{
		Rules:   []*destinationv1.RouteRule{{Route: "default/web", Kind: "HTTPRoute", RequestTimeout: durationpb.New(50 * time.Millisecond)}},
		Matches: []*destinationv1.RouteMatch{{Rule: 0, Path: prefix("/")}},
	})}
	hang := func(w http.ResponseWriter, r *http.Request, _ *discover.Service) { <-r.Context().Done() }
	if w := routed(t, svcs, hang, "GET", "web:80", "/", ""); w.Code != http.StatusGatewayTimeout {
		t.Errorf("a request past its route's timeout: %d, want 504", w.Code)
	}
}
