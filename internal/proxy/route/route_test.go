package route

import (
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	destinationv1 "github.com/trellis-mesh/trellis/api/destination/v1"
)

func path(kind destinationv1.PathMatch_Kind, v string) *destinationv1.PathMatch {
	return &destinationv1.PathMatch{Kind: kind, Value: v}
}

func TestMatch(t *testing.T) {
	p := &destinationv1.Profile{
		Rules: []*destinationv1.RouteRule{{Name: "exact"}, {Name: "header"}, {Name: "regex"}, {Name: "prefix"}, {Name: "query"}, {Name: "grpc"}},
		Matches: []*destinationv1.RouteMatch{
			{Rule: 0, Path: path(destinationv1.PathMatch_EXACT, "/login")},
			{Rule: 1, Path: path(destinationv1.PathMatch_PREFIX, "/"), Headers: []*destinationv1.ValueMatch{{Name: "x-canary", Value: "true"}}},
			{Rule: 2, Path: path(destinationv1.PathMatch_REGEX, `/users/[0-9]+`), Method: "GET"},
			{Rule: 3, Path: path(destinationv1.PathMatch_PREFIX, "/api")},
			{Rule: 4, Path: path(destinationv1.PathMatch_PREFIX, "/"), QueryParams: []*destinationv1.ValueMatch{{Name: "v", Value: "b.*", Regex: true}}},
			{Rule: 5, Path: path(destinationv1.PathMatch_EXACT, "/pkg.Svc/Get"), Method: "POST"},
		},
	}
	table := Compile(p, nil)
	for _, tc := range []struct {
		method, url string
		header      map[string]string
		want        string
	}{
		{"GET", "/login", nil, "exact"},
		{"GET", "/login/x", nil, ""},
		{"GET", "/anything", map[string]string{"X-Canary": "true"}, "header"},
		{"GET", "/anything", map[string]string{"X-Canary": "false"}, ""},
		{"GET", "/users/42", nil, "regex"},
		{"POST", "/users/42", nil, ""},
		{"GET", "/users/42/x", nil, ""},
		{"GET", "/api", nil, "prefix"},
		{"GET", "/api/v1", nil, "prefix"},
		{"GET", "/apix", nil, ""},
		{"GET", "/x?v=beta", nil, "query"},
		{"GET", "/x?v=alpha", nil, ""},
		{"POST", "/pkg.Svc/Get", nil, "grpc"},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		for k, v := range tc.header {
			r.Header.Set(k, v)
		}
		rule, _ := table.Match(r)
		got := ""
		if rule != nil {
			got = rule.Name
		}
		if got != tc.want {
			t.Errorf("%s %s %v: rule %q, want %q", tc.method, tc.url, tc.header, got, tc.want)
		}
	}
	if Compile(&destinationv1.Profile{}, nil) != nil {
		t.Error("a profile without matches has a table")
	}
}

// A 90/10 split lands within a point of its weights.
func TestBackendSplit(t *testing.T) {
	rule := compileRule(&destinationv1.RouteRule{Backends: []*destinationv1.WeightedBackend{{Authority: "a", Weight: 90}, {Authority: "b", Weight: 10}, {Authority: "c", Weight: 0}}}, nil)
	counts := map[string]int{}
	const n = 100_000
	for range n {
		a, ok := rule.Backend()
		if !ok {
			t.Fatal("no backend")
		}
		counts[a]++
	}
	if share := float64(counts["b"]) / n; math.Abs(share-0.10) > 0.01 || counts["c"] != 0 {
		t.Errorf("split %v; want 90/10/0", counts)
	}
	if _, ok := compileRule(&destinationv1.RouteRule{Backends: []*destinationv1.WeightedBackend{{Authority: "a"}}}, nil).Backend(); ok {
		t.Error("only zero weights picked a backend")
	}
	if a, ok := compileRule(&destinationv1.RouteRule{}, nil).Backend(); a != "" || !ok {
		t.Error("no backends should mean the service itself")
	}
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// The budget starts empty and never allows more than ratio × requests +
// minPerSecond × elapsed time; idle, it saves up at most a window's worth.
func TestBudget(t *testing.T) {
	c := &clock{now: time.Unix(1_000_000, 0)}
	b := NewBudget(0.2, 10, 10*time.Second, c.Now)
	if b.Withdraw() {
		t.Fatal("a new budget allowed a retry")
	}
	// Idle for a minute: the minimum saves up, capped at one window (10/s × 10 s).
	c.Advance(time.Minute)
	got := 0
	for b.Withdraw() {
		got++
	}
	if got != 100 {
		t.Fatalf("an idle budget allowed %d retries; want 100", got)
	}
	// 1,000 requests a second for 30 s, every one failing and retried as
	// far as the budget allows: 20% of the requests plus 10/s.
	retries := 0
	for range 30 {
		for range 100 {
			for range 10 {
				b.Deposit()
				if b.Withdraw() {
					retries++
				}
			}
			c.Advance(10 * time.Millisecond)
		}
	}
	if max := 0.2*30000 + 10*30; float64(retries) > max || float64(retries) < 0.95*max {
		t.Errorf("%d retries for 30,000 failing requests over 30 s; want about %v and never more", retries, max)
	}
}

func TestPolicy(t *testing.T) {
	p := newPolicy(&destinationv1.Retry{Attempts: 2, HttpCodes: []uint32{429}, GatewayErrors: true, GrpcCodes: []uint32{14},
		PerTryTimeout: durationpb.New(time.Second)}, nil)
	for _, tc := range []struct {
		status, grpc int
		want         bool
	}{{429, -1, true}, {502, -1, true}, {500, -1, false}, {200, 14, true}, {200, 13, false}, {200, -1, false}} {
		if got := p.Retryable(tc.status, tc.grpc); got != tc.want {
			t.Errorf("Retryable(%d, %d) = %v", tc.status, tc.grpc, got)
		}
	}
	h := http.Header{}
	h.Set(HeaderRetryLimit, "5")
	h.Set(HeaderRetryHTTP, "5xx")
	if q := p.FromRequest(h); q.Attempts != 2 || q.Retryable(500, -1) || h.Get(HeaderRetryLimit) != "" {
		t.Errorf("headers were honoured (or kept) on a route that does not allow them: %+v %v", q, h)
	}
	p.FromHeaders = true
	h.Set(HeaderRetryLimit, "5")
	h.Set(HeaderRetryHTTP, "5xx")
	h.Set(HeaderRetryTimeout, "50ms")
	if q := p.FromRequest(h); q.Attempts != 5 || !q.Retryable(500, -1) || q.PerTry != 50*time.Millisecond || h.Get(HeaderRetryHTTP) != "" {
		t.Errorf("per-request retry headers: %+v, headers left %v", q, h)
	}
}

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]string{
		"/":                  "/",
		"/a/b":               "/a/b",
		"/a/b/":              "/a/b/",
		"*":                  "*",
		"/public/../admin":   "/admin",
		"//admin":            "/admin",
		"/a/./b":             "/a/b",
		"/a/b/..":            "/a/",
		"/a/b/.":             "/a/b/",
		"/../../etc":         "/etc",
		"/a//b//":            "/a/b/",
		"/public/..;/admin":  "/admin",
		"/public\\..\\admin": "/admin",
		"/.well-known/x":     "/.well-known/x",
		"/a;b/c":             "/a;b/c",
	} {
		if got := CleanPath(p); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", p, got, want)
		}
	}
}
